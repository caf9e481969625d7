"""fastmath's app: `streamlit run app.py` (or `make app`); `-- --outputs DIR` or FASTMATH_OUTPUTS=DIR."""

import sys

from fastmath.app.main import main

main(sys.argv[1:])
