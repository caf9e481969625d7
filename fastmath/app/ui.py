"""What the app's pages share: the outputs directory, choices that survive page switches, tables
and charts drawn one way, completions in a bounded box with their answer marked, views that
refresh themselves while a run trains, the cached model, and errors shown as messages."""

from __future__ import annotations

import functools
import html
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from fastmath import config
from fastmath.app import i18n, tables
from fastmath.app.help_zh import HELP_ZH
from fastmath.app.i18n import t
from fastmath.errors import FastmathError

OUTPUTS_KEY = "fastmath_outputs"
PAGES = Path(__file__).resolve().parent / "pages"
REFRESH_S = 2.0  # how often a view of a running run redraws itself
POINTS_UP_TO = 300  # a curve with more logged points is drawn as a line alone
WHOLE_STEPS = {"format": "d", "tickMinStep": 1}  # a step axis has no step 2.5
LEGEND_ROW_PX = 22  # one legend entry below a chart
ROW_PX, SCROLLBAR_PX = 35, 16  # st.dataframe's row height; a sideways scrollbar drawn over its last row
PALETTE = "tableau10"  # lines told apart at a glance (Streamlit's own starts with two blues)
LOG_SPREAD = 10  # a positive curve spanning this factor or more is drawn on a log axis
# Metric names as the charts' legends show them (`rewards/<function>/mean`: that reward function's mean).
SERIES = {
    "rewards/chosen": "chosen",
    "rewards/rejected": "rejected",
    "rewards/margins": "margin (chosen − rejected)",
    "rewards/accuracies": "chosen above rejected",
    "reward": "mean reward",
}
# The app's own look: a row of figures wraps onto more rows where it is narrow (at least 8rem a figure),
# and a figure wraps rather than being cut off with an ellipsis, at any width.
STYLE = """<style>
[data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"] [data-testid="stMetric"]) { flex-wrap: wrap; }
[data-testid="stColumn"]:has([data-testid="stMetric"]) { min-width: 8rem; }
[data-testid="stMetricValue"] { font-size: 1.75rem; }
[data-testid="stMetricValue"], [data-testid="stMetricValue"] *, [data-testid="stMetricLabel"] * {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  overflow-wrap: anywhere;
}
</style>"""
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
    return st.selectbox(t(label), options, key=widget, on_change=_remember, args=(key,), **kwargs)


def choose_many(label: str, options: Sequence[Any], key: str, default: Sequence[Any] = (), **kwargs: Any) -> list:
    """A multiselect whose choices are kept across pages."""
    widget = _restore(key, options, [v for v in default if v in options])
    kwargs.setdefault("format_func", t)
    return st.multiselect(t(label), options, key=widget, on_change=_remember, args=(key,), **kwargs)


def open_run(name: str) -> None:
    """Show one run on the Run page (its choice kept as `choose` keeps it)."""
    st.session_state["run"] = name
    st.switch_page(page("run"))


def table(frame: pd.DataFrame, column_config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """`st.dataframe` with its column titles in the interface's language and, without an index,
    its first column (the run's name) pinned so it stays in view while the table scrolls sideways;
    tall enough for its last row to stay clear of the sideways scrollbar."""
    index = frame.index.name
    shown = frame.rename(columns=t).rename_axis(index=t(index) if isinstance(index, str) else index)
    config = {t(k): v for k, v in (column_config or {}).items()}
    kwargs.setdefault("hide_index", True)
    if len(shown) <= 10:  # Streamlit's own height fits ten rows exactly, the scrollbar over the last
        kwargs.setdefault("height", ROW_PX * (len(shown) + 1) + 3 + SCROLLBAR_PX)
    if kwargs["hide_index"] and len(shown.columns):
        config.setdefault(shown.columns[0], st.column_config.Column(pinned=True))
    return st.dataframe(shown, column_config=config, **kwargs)


def series_name(metric: str) -> str:
    """A logged metric as a legend names it, in the interface's language."""
    function = re.fullmatch(r"rewards/(.+)/mean", metric)
    if function:
        return t("{function} (mean)").format(function=function.group(1))
    return t(SERIES.get(metric, metric))


def line_chart(long: pd.DataFrame, series: str, y_title: str, height: int = 280, log_if_spread: bool = False) -> None:
    """Long rows (step, `series`, value) as lines on a shared step axis: every logged point drawn
    (marked, while few), each series' full name in the legend, which gets room of its own
    (Streamlit fits the whole chart, legend included, into `height`). With `log_if_spread`, a positive
    curve that spans a factor of `LOG_SPREAD` or more (a loss falling from 20 to 0.02) is drawn on a
    log axis, so its first points do not flatten the rest."""
    names = long[series].nunique()
    several = names > 1
    height += LEGEND_ROW_PX * names if several else 0
    values = long["value"].astype(float)
    log = log_if_spread and bool(len(values)) and values.min() > 0 and values.max() >= LOG_SPREAD * values.min()
    scale = {"type": "log"} if log else {"zero": False}
    spec: dict[str, Any] = {
        "mark": {"type": "line", "point": len(long) <= POINTS_UP_TO, "tooltip": True},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": t("step"), "axis": WHOLE_STEPS},
            "y": {
                "field": "value",
                "type": "quantitative",
                "title": f"{y_title} ({t('log scale')})" if log else y_title,
                "scale": scale,
            },
        },
        "height": height,
    }
    if several:
        legend = {"orient": "bottom", "direction": "vertical", "labelLimit": 0, "title": None}
        spec["encoding"]["color"] = {"field": series, "type": "nominal", "legend": legend, "scale": {"scheme": PALETTE}}
    st.vega_lite_chart(long, spec, width="stretch")


def curves(frame: pd.DataFrame) -> None:
    """The run's metric groups (stages.metric_groups()) that it logged, one chart each, their
    series under readable names."""
    for title, long in tables.metric_groups(frame).items():
        st.subheader(t(title))
        named = long.assign(series=long["series"].map(series_name))
        line_chart(named, "series", t(title), log_if_spread=title == "Loss")


def damage_text(damage: tables.Damage) -> str:
    """What is wrong with a run's file, in the interface's language, naming the file (and line)."""
    if damage.what == "cut off":
        return t("{file} ends cut off at line {line}: it is incomplete").format(file=damage.file, line=damage.line)
    if damage.what == "incomplete":
        text = t("{file} holds {rows} of the {of} problems its summary counted: it is incomplete")
        return text.format(file=damage.file, rows=damage.rows, of=damage.of)
    if damage.line is not None:
        return t("{file} line {line} cannot be read (not valid JSON)").format(file=damage.file, line=damage.line)
    return t("{file} cannot be read (not valid JSON)").format(file=damage.file)


def progress(run: Path, status: str) -> None:
    """Where a run stands: step of total, loss, tokens/s, time left and memory, from its metrics."""
    now = tables.progress(tables.metrics(run))
    cols = st.columns(6)
    cols[0].metric(t("Status"), t(status))
    step = f"{now.step} / {now.max_steps}" if now.step is not None and now.max_steps else tables.MISSING
    cols[1].metric(t("Step"), step)
    cols[2].metric(t("Loss"), tables.number_text(now.loss, ".4f"))
    cols[3].metric(t("Tokens/s"), tables.number_text(now.tokens_per_s, ",.0f"))
    cols[4].metric(t("Time left"), tables.duration_text(now.seconds_left, t) if status == "running" else tables.MISSING)
    memory = tables.number_text(now.peak_memory_gb, ".2f")
    cols[5].metric(t("Peak memory"), f"{memory} GB" if memory != tables.MISSING else memory)
    if now.step is not None and now.max_steps:
        st.progress(min(1.0, now.step / now.max_steps))
    if status == "running":
        st.caption(t("Live: this view refreshes every {s:g} s while the run trains.").format(s=REFRESH_S))


@functools.cache
def _ranges() -> dict[str, str]:
    """Each recipe key's allowed numbers as a formula (`>= 1`, `[0, 1)`), the same in any language."""
    every = config.keys(tuple(config.sections()))
    return {name: str(f.metadata["range"]).removeprefix("in ") for name, f, _ in every if f.metadata["range"]}


def key_help(field: Any) -> str:
    """A recipe key's tooltip: its help in the interface's language (`help_zh.HELP_ZH` in 中文)."""
    zh = HELP_ZH.get(field.name) if i18n.chinese() else None
    if zh is None:
        return field.help
    return f"{zh}（{_ranges()[field.name]}）" if field.name in _ranges() else zh


def key_input(field: Any, default: Any, key: str, runs: Sequence[str] = ()) -> Any:
    """One recipe key as a widget of its type (jobs.Field), its help text the recipe's own; returns
    the value typed, as the key's type (empty text is null where the key allows it). A key that
    names a run (`dpo.sft_run`) picks from `runs`."""
    common = {"help": key_help(field), "key": key, "persist_state": "session"}
    if field.kind == "bool":
        return st.checkbox(field.name, value=default, **common)
    if field.kind in ("int", "float"):
        number = {"step": 1, "format": "%d"} if field.kind == "int" else {"step": None, "format": "%g"}
        return st.number_input(field.name, value=default, placeholder="null", **number, **common)
    if field.kind == "choice":
        options = [*([None] if field.nullable else []), *field.choices]
        return st.selectbox(field.name, options, index=options.index(default), **common)
    if field.kind == "choices":
        return st.multiselect(field.name, field.choices, default=default, **common)
    if field.kind == "run":
        options = [None, *runs] if default is None or default in runs else [None, default, *runs]
        none = t("(the newest finished one)")
        return st.selectbox(field.name, options, format_func=lambda o: none if o is None else o, **common)
    shown = ", ".join(default) if field.kind == "list" else ("" if default is None else str(default))
    text = st.text_input(field.name, value=shown, placeholder="null" if field.nullable else "", **common)
    if field.kind == "list":
        return [v.strip() for v in text.split(",") if v.strip()]
    return None if field.nullable and not text.strip() else text


def live(draw: Callable[[], bool], running: bool, key: str, every: float = REFRESH_S) -> None:
    """Draw a view, and while `running` redraw it every `every` seconds without reloading the page
    (`st.fragment`). `draw` returns whether it is still running; when that turns false the whole
    page is drawn once more, and the new view no longer refreshes."""

    @st.fragment(run_every=every if running else None)
    def view() -> None:
        with errors_as_messages():
            still = draw()
        if running and not still:
            st.rerun()

    with st.container(key=key):
        view()


def highlighted(completion: str, pred: str | None, writing: bool = False) -> str:
    """The completion as HTML in a box of bounded height that scrolls (a degenerate answer of
    hundreds of blank lines stays a box), its text kept as written, the extracted answer marked."""
    span = tables.answer_span(completion, pred) if not writing else None
    if span is None:
        body = html.escape(completion)
    else:
        start, end = span
        before, answer, after = completion[:start], completion[start:end], completion[end:]
        body = f"{html.escape(before)}<mark>{html.escape(answer)}</mark>{html.escape(after)}"
    body += " ▌" if writing else ""
    style = "white-space: pre-wrap; max-height: 24em; overflow-y: auto; padding: 0.5em; border: 1px solid #ddd"
    return f'<div class="fastmath-completion" style="{style}; border-radius: 0.5em">{body}</div>'


def show_completion(completion: str, pred: str | None, writing: bool = False) -> None:
    st.html(highlighted(completion, pred, writing) if completion or writing else f"<em>{t('(empty completion)')}</em>")


class Writing:
    """A solution written on its own thread, so the page is free to redraw it as it grows and to
    offer the one Stop button meanwhile (the page's script is never busy waiting on the model)."""

    def __init__(self, solution: Any, gold: str | None) -> None:
        self.solution, self.gold = solution, gold
        self.error: str | None = None
        self._thread = threading.Thread(target=self._write, name="fastmath-app-solve", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        try:
            for _ in self.solution:
                pass
        except FastmathError as e:
            self.error = str(e)
        except Exception as e:
            log.exception("solving failed")
            self.error = f"{type(e).__name__}: {e}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self.solution.stop()


def cached_model(base: str, adapter: str | None):
    """(model, tokenizer, system prompt), loaded once and shared by every session of the app (`_load`),
    the wait said in the interface's language."""
    with st.spinner(t("Loading the model (once per model and adapter)…")):
        return _load(base, adapter)


@st.cache_resource(max_entries=2, show_spinner=False)
def _load(base: str, adapter: str | None):
    """What `cached_model` returns, loaded once per base model and adapter.

    As on the command line: the adapter's run says which base model, load settings and system
    prompt go with it, and the backend is resolved (Unsloth imported) before anything loads.
    """
    from fastmath import runs
    from fastmath.config import ModelConfig
    from fastmath.models import ready_backend

    run = Path(adapter) if adapter else None
    cfg = runs.model_settings(run) if run else ModelConfig(name=base)
    backend = ready_backend(cfg)
    from fastmath.models import load_for_inference

    model, tokenizer = load_for_inference(cfg, adapter, backend)
    return model, tokenizer, runs.system_prompt(run) if run else None


@contextmanager
def errors_as_messages() -> Iterator[None]:
    """A page that fails shows what went wrong as a message, never a traceback."""
    try:
        yield
    except tables.DamagedFile as e:
        st.error(damage_text(e.damage))
    except FastmathError as e:
        st.error(str(e))
    except Exception as e:
        log.exception("page failed")  # the traceback goes to the server's log
        st.error(f"{t('Something went wrong')}: {type(e).__name__}: {e}")
