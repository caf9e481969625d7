"""What the app's pages share: the outputs directory, choices that survive page switches,
completions with their answer highlighted, the cached model, and errors shown as messages."""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import streamlit as st

from fastmath.app.tables import answer_span
from fastmath.errors import FastmathError

OUTPUTS_KEY = "fastmath_outputs"
PAGES = Path(__file__).resolve().parent / "pages"
log = logging.getLogger("fastmath.app")


def outputs() -> Path:
    """The outputs directory `app.py` resolved for this session."""
    return Path(st.session_state[OUTPUTS_KEY])


def page(name: str) -> Path:
    """The script of one page, for `st.Page` and `st.switch_page`."""
    return PAGES / f"{name}.py"


def _remember(key: str) -> None:
    st.session_state[key] = st.session_state[f"_{key}"]


def _restore(key: str, options: Sequence[Any], default: Any) -> str:
    """The widget key for a choice kept under `key`: Streamlit forgets the state of a widget on
    a page not drawn, so each choice is copied to a plain key and put back from it. A kept value
    that is no longer an option (a run deleted since) falls back to `default`."""
    kept = st.session_state.get(key, default)
    if isinstance(kept, list):
        kept = [v for v in kept if v in options]
    elif kept not in options:
        kept = default
    st.session_state[f"_{key}"] = kept
    return f"_{key}"


def choose(label: str, options: Sequence[Any], key: str, default: Any = None, **kwargs: Any) -> Any:
    """A selectbox whose choice is kept across pages (the first option unless `default`)."""
    default = default if default in options else (options[0] if options else None)
    widget = _restore(key, options, default)
    return st.selectbox(label, options, key=widget, on_change=_remember, args=(key,), **kwargs)


def choose_many(label: str, options: Sequence[Any], key: str, default: Sequence[Any] = (), **kwargs: Any) -> list:
    """A multiselect whose choices are kept across pages."""
    widget = _restore(key, options, [v for v in default if v in options])
    return st.multiselect(label, options, key=widget, on_change=_remember, args=(key,), **kwargs)


def highlighted(completion: str, pred: str | None) -> str:
    """The completion as HTML, its text kept as written, the extracted answer marked."""
    span = answer_span(completion, pred)
    if span is None:
        body = html.escape(completion)
    else:
        start, end = span
        before, answer, after = completion[:start], completion[start:end], completion[end:]
        body = f"{html.escape(before)}<mark>{html.escape(answer)}</mark>{html.escape(after)}"
    return f'<div class="fastmath-completion" style="white-space: pre-wrap">{body}</div>'


def show_completion(completion: str, pred: str | None) -> None:
    st.html(highlighted(completion, pred) if completion else "<em>(empty completion)</em>")


@st.cache_resource(max_entries=2, show_spinner="Loading the model (once per model and adapter)…")
def cached_model(base: str, adapter: str | None):
    """(model, tokenizer, system prompt), loaded once and shared by every session of the app.

    As on the command line: the adapter's run says which base model, load settings and system
    prompt go with it, and the backend is resolved (Unsloth imported) before anything loads.
    """
    from fastmath import runs
    from fastmath.config import ModelConfig
    from fastmath.models import activate, resolve_backend

    run = Path(adapter) if adapter else None
    cfg = runs.model_settings(run) if run else ModelConfig(name=base)
    backend = resolve_backend(cfg)
    activate(backend)
    from fastmath.models import load_for_inference

    model, tokenizer = load_for_inference(cfg, adapter, backend)
    return model, tokenizer, runs.system_prompt(run) if run else None


@contextmanager
def errors_as_messages() -> Iterator[None]:
    """A page that fails shows what went wrong as a message, never a traceback."""
    try:
        yield
    except FastmathError as e:
        st.error(str(e))
    except Exception as e:
        log.exception("page failed")  # the traceback goes to the server's log
        st.error(f"Something went wrong: {type(e).__name__}: {e}")
