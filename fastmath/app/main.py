"""The app's entry: where the outputs directory is, and the pages, each run with errors shown as messages."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

import streamlit as st

from fastmath.app import i18n, ui
from fastmath.app.i18n import t
from fastmath.errors import FastmathError

ENV_VAR = "FASTMATH_OUTPUTS"


def outputs_dir(argv: list[str], environ: Mapping[str, str]) -> Path:
    """`--outputs DIR` after `--`, else $FASTMATH_OUTPUTS, else ./outputs; it must exist."""
    parser = argparse.ArgumentParser(
        prog="streamlit run app.py --", add_help=False, allow_abbrev=False, exit_on_error=False
    )
    parser.add_argument("--outputs", default=environ.get(ENV_VAR, "outputs"))
    try:
        args, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise FastmathError(f"app arguments: {e}; use `streamlit run app.py -- --outputs DIR`") from None
    if unknown:
        raise FastmathError(f"unknown app arguments {' '.join(unknown)}; use `streamlit run app.py -- --outputs DIR`")
    path = Path(args.outputs).expanduser().resolve()
    if not path.is_dir():
        raise FastmathError(
            f"outputs directory {path} not found: train a run first (`make quickstart`), "
            f"or point the app at one with `streamlit run app.py -- --outputs DIR` or {ENV_VAR}=DIR"
        )
    return path


def main(argv: list[str]) -> None:
    # An emoji icon: a `:material/…:` page icon is fetched from fonts.gstatic.com (nothing may be fetched from
    # outside: the app runs offline); the navigation's icons come from Streamlit's own bundled font.
    st.set_page_config(page_title="fastmath", page_icon="🧮", layout="wide")
    st.html(ui.STYLE)
    i18n.switch()
    try:
        st.session_state[ui.OUTPUTS_KEY] = str(outputs_dir(argv, os.environ))
    except FastmathError as e:
        st.error(str(e))
        st.stop()
    page = st.navigation(
        [
            st.Page(ui.page("runs"), title=t("Runs"), icon=":material/table_rows:", default=True),
            st.Page(ui.page("run"), title=t("Run"), icon=":material/monitoring:"),
            st.Page(ui.page("train"), title=t("Train"), icon=":material/model_training:"),
            st.Page(ui.page("compare"), title=t("Compare"), icon=":material/compare_arrows:"),
            st.Page(ui.page("problems"), title=t("Problems"), icon=":material/search:"),
            st.Page(ui.page("solve"), title=t("Solve"), icon=":material/edit_note:"),
        ]
    )
    st.sidebar.caption(f"{t('outputs')}: `{ui.outputs().name}`", help=str(ui.outputs()))
    with ui.errors_as_messages():
        page.run()
