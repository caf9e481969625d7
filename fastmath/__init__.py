"""fastmath: fine-tune open LLMs for grade-school math on one GPU, and prove what training did."""

__version__ = "0.1.0"
