"""The outputs directory as tables: what the app shows, as pure functions over files (no Streamlit).

Every path is built from a name that a directory listing returned, and names are checked
against that listing before use: a URL, a widget or a crafted session cannot steer the app
into reading anything outside the outputs directory.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fastmath import config, runs, stages
from fastmath.errors import FastmathError
from fastmath.grading import numbers_equal, outcome, truncate_at_new_question
from fastmath.hub import looks_like_path

# Run, dataset and strategy names as fastmath writes them: no separators, no leading dot.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# How a problem went, one kind each; the last three are the errors the breakdown counts.
KINDS = ("correct", "wrong number", "no answer", "truncated")
ERROR_KINDS = KINDS[1:]
# What a table shows where there is no value: never None, NaN or an empty cell.
MISSING = "—"
# A number as the model writes it, for highlighting: `18`, `$1,000.50`, `-3/4`, `１８`.
_NUMBER_TEXT = re.compile(r"-?(?:[$¥￥€£]\s?)?[0-9０-９][0-9０-９,，]*(?:\.[0-9]+)?(?:/[0-9]+)?")


def _child(parent: Path, name: str, names: Iterable[str], what: str) -> Path:
    """`parent/name`, only for a name that the listing of `parent` holds."""
    if not NAME.fullmatch(name) or name not in set(names):
        raise FastmathError(f"no {what} named {name!r} in {parent}")
    return parent / name


def run_names(root: Path) -> list[str]:
    """Runs in the outputs directory, oldest first."""
    return [p.name for p in runs.list_runs(root) if NAME.fullmatch(p.name)]


def run_dir(root: Path, name: str) -> Path:
    return _child(root, name, run_names(root), "run")


class DamagedFile(FastmathError):
    """A run's file that cannot be read: the view reading it says so (`damage`), in the interface's words."""

    def __init__(self, run: Path, damage: Damage, error: str) -> None:
        super().__init__(f"{run / damage.file} cannot be read: {error}")
        self.damage = damage


def _read_json(run: Path, file: str) -> dict[str, Any]:
    """A JSON object, or {} when the file is absent (a run still training has no summary yet)."""
    path = run / file
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedFile(run, Damage(file, "unreadable"), str(e)) from None
    return data if isinstance(data, dict) else {}


def summary(run: Path) -> dict[str, Any]:
    return _read_json(run, runs.SUMMARY)


def recipe(run: Path) -> dict[str, Any]:
    """The resolved recipe as nested sections; {} for a run without one (a base-model eval)."""
    path = run / runs.RECIPE
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise FastmathError(f"{path} is not valid YAML: {e}") from None
    return data if isinstance(data, dict) else {}


def read_lines(run: Path, file: str) -> tuple[list[dict[str, Any]], Damage | None]:
    """The rows of a JSON-lines file of `run` ([] when absent) and what is wrong with it: a last
    line cut off mid-row (a writer that stopped) is returned as damage, the rows before it kept;
    a line in the middle that is not JSON raises, naming the file and the line."""
    path = run / file
    if not path.is_file():
        return [], None
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise DamagedFile(run, Damage(file, "unreadable"), str(e)) from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):  # no newline after it: the file ends mid-row
                return rows, Damage(file, "cut off", number)
            raise DamagedFile(run, Damage(file, "unreadable", number), e.msg) from None
    return rows, None


def metrics(run: Path) -> pd.DataFrame:
    """One row per logging step, indexed by step (empty when nothing was logged); a last row cut
    off is left out (`read_run` marks a run whose file ends so once it is no longer written)."""
    frame = pd.DataFrame(read_lines(run, runs.METRICS)[0])
    return frame.set_index("step") if "step" in frame else frame


def datasets(run: Path) -> list[str]:
    """Datasets the run was evaluated on (`eval/<dataset>/`)."""
    root = run / runs.EVAL
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME.fullmatch(p.name))


def _eval_folder(run: Path, dataset: str) -> Path:
    return _child(run / runs.EVAL, dataset, datasets(run), "evaluated dataset")


def eval_summary(run: Path, dataset: str) -> dict[str, dict[str, Any]]:
    """`{strategy: figures}` from `eval/<dataset>/summary.json`, in the order the eval ran them."""
    _eval_folder(run, dataset)  # a dataset the listing holds
    figures = _read_json(run, f"{runs.EVAL}/{dataset}/{runs.SUMMARY}")
    return {k: v for k, v in figures.items() if isinstance(v, dict)}


def strategies(run: Path, dataset: str) -> list[str]:
    """Strategies with per-problem results for `dataset`: summary order first, then the rest
    (all in name order when the summary cannot be read: the results stay reachable)."""
    found = {p.stem for p in _eval_folder(run, dataset).glob("*.jsonl") if NAME.fullmatch(p.stem)}
    try:
        ordered = [s for s in eval_summary(run, dataset) if s in found]
    except FastmathError:
        ordered = []
    return ordered + sorted(found - set(ordered))


def problems(run: Path, dataset: str, strategy: str) -> tuple[list[dict[str, Any]], Damage | None]:
    """The per-problem records of one eval, each with its `kind` added, and what is wrong with the
    file: a last line cut off, or fewer problems than its summary counted (`incomplete`)."""
    if strategy not in strategies(run, dataset):
        raise FastmathError(f"{run.name} has no {dataset} results for strategy {strategy!r}")
    rows, damage = read_lines(run, f"{runs.EVAL}/{dataset}/{strategy}.jsonl")
    return [{**row, "kind": problem_kind(row)} for row in rows], damage or _short(run, dataset, strategy, len(rows))


def _short(run: Path, dataset: str, strategy: str, rows: int) -> Damage | None:
    """An eval file holding fewer problems than its summary says were measured."""
    try:
        n = eval_summary(run, dataset).get(strategy, {}).get("n")
    except FastmathError:
        return None  # the summary's own damage is reported where it is read
    return _incomplete(f"{runs.EVAL}/{dataset}/{strategy}.jsonl", rows, n)


def _incomplete(file: str, rows: int, n: Any) -> Damage | None:
    return Damage(file, "incomplete", rows=rows, of=n) if isinstance(n, int) and rows < n else None


def problem_kind(row: dict[str, Any]) -> str:
    """One of KINDS: an answer cut off at the token limit counts as truncated, not as wrong."""
    if row.get("outcome") == "correct":
        return "correct"
    if row.get("finish_reason") == "length":
        return "truncated"
    return "no answer" if row.get("outcome") == "none" else "wrong number"


def filter_problems(rows: list[dict[str, Any]], kinds: Iterable[str], text: str = "") -> list[dict[str, Any]]:
    """Rows of the chosen kinds whose id, question, gold or completion contains `text` (any case)."""
    wanted, needle = set(kinds), text.strip().casefold()

    def matches(row: dict[str, Any]) -> bool:
        haystack = " ".join(str(row.get(k, "")) for k in ("id", "question", "gold", "completion"))
        return needle in haystack.casefold()

    return [r for r in rows if r["kind"] in wanted and (not needle or matches(r))]


def error_breakdown(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many problems went wrong in each way (ERROR_KINDS), zeros included."""
    counts = Counter(r["kind"] for r in rows)
    return {kind: counts[kind] for kind in ERROR_KINDS}


SOLVE_OUTCOMES = {"correct": "right", "wrong": "wrong", "none": "no answer"}


def solve_outcome(pred: str | None, gold: str | None) -> str:
    """How an answer on the Solve page went: `right` or `wrong` against an expected answer, `no answer`
    without a number, else just `answer` (nothing to check it against, so neither right nor wrong)."""
    if gold is None:
        return "answer" if pred is not None else "no answer"
    return SOLVE_OUTCOMES[outcome(pred, gold)]


def answer_span(completion: str, pred: str | None) -> tuple[int, int] | None:
    """Where the extracted answer sits in the completion: the last number with its value that the
    grader read (text after an invented next question is ignored, as the grader ignores it)."""
    if pred is None:
        return None
    graded = truncate_at_new_question(completion)
    spans = [m.span() for m in _NUMBER_TEXT.finditer(graded) if numbers_equal(m.group(), pred)]
    return spans[-1] if spans else None


def _percent(value: Any) -> float | None:
    return round(100 * value, 2) if isinstance(value, (int, float)) else None


def model_label(name: Any) -> Any:
    """A local model directory by its folder name, a hub id as it is: long paths hide the table."""
    return Path(name.rstrip("/")).name if isinstance(name, str) and looks_like_path(name) else name


@dataclass(frozen=True)
class Damage:
    """What is wrong with one file of a run: `unreadable` (not JSON), `cut off` (its last line ends
    mid-row: a writer stopped) or `incomplete` (fewer problems than its summary counted)."""

    file: str  # relative to the run: `summary.json`, `eval/gsm8k/cot.jsonl`
    what: str
    line: int | None = None
    rows: int | None = None
    of: int | None = None


@dataclass
class RunFiles:
    """What one run's files say, read once. A file that cannot be read, or ends cut off once the
    run is no longer writing it, is named in `broken` instead of raising: it marks its run and the
    view that reads it, and the rest of the table (and of the run) still shows."""

    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    evals: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (dataset, strategy) -> figures
    broken: list[Damage] = field(default_factory=list)
    status: str = MISSING  # run.json's, or `crashed` when the process writing it is gone (runs.status)

    @property
    def state(self) -> str:
        """The status a table shows: `broken` when a file cannot be read, else `incomplete` when
        one is cut short, else the run's own."""
        if any(d.what == "unreadable" for d in self.broken):
            return "broken"
        return "incomplete" if self.broken else self.status

    def damaged(self, file: str) -> Damage | None:
        return next((d for d in self.broken if d.file == file), None)


def _tail_damage(run: Path, file: str) -> Damage | None:
    """A JSON-lines file whose last line is cut off (only that line parsed: every table reads every run)."""
    path = run / file
    if not path.is_file() or path.stat().st_size == 0:
        return None
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return None
    last = data[data.rfind(b"\n") + 1 :]
    try:
        json.loads(last)
    except ValueError:
        return Damage(file, "cut off", data.count(b"\n") + 1)
    return None


def read_run(root: Path, name: str) -> RunFiles:
    run, files = run_dir(root, name), RunFiles(name)
    for attribute, path in (("meta", runs.RUN_JSON), ("summary", runs.SUMMARY)):
        try:
            setattr(files, attribute, _read_json(run, path))
        except DamagedFile as e:
            files.broken.append(e.damage)
    files.status = runs.status(run, files.meta) or MISSING
    writing = files.status in ("running", "stopping")
    for dataset in datasets(run):
        try:
            figures = eval_summary(run, dataset)
        except DamagedFile as e:
            files.broken.append(e.damage)
            figures = {}
        files.evals.update({(dataset, strategy): f for strategy, f in figures.items()})
        for results in sorted((run / runs.EVAL / dataset).glob("*.jsonl")):  # per-problem files, whole once written
            file, n = f"{runs.EVAL}/{dataset}/{results.name}", figures.get(results.stem, {}).get("n")
            damage = _tail_damage(run, file) or _incomplete(file, results.read_bytes().count(b"\n"), n)
            files.broken += [damage] if damage else []
    if not writing:
        files.broken += [d for d in [_tail_damage(run, runs.METRICS)] if d]
    return files


def eval_label(dataset: str, strategy: str) -> str:
    return f"{dataset} · {strategy}"


def accuracy_text(figures: dict[str, Any]) -> str:
    """`62.5% (41.0–80.2)`: the accuracy and its 95% interval, or — when the summary lacks them."""
    accuracy, interval = _percent(figures.get("accuracy")), _interval(figures)
    if accuracy is None:
        return MISSING
    if interval is None:
        return f"{accuracy:.1f}%"
    return f"{accuracy:.1f}% ({100 * interval[0]:.1f}–{100 * interval[1]:.1f})"


def number_text(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else MISSING


def runs_table(root: Path, say: Callable[[str], str] = str) -> pd.DataFrame:
    """Every run, oldest first: name, status, stage, final loss and trained tokens, accuracy (95%
    interval) on every eval, then where it comes from. `say` puts a status in the interface's words;
    a damaged run's status names its damaged files.

    Every cell is text, so nothing shows as None or NaN: a run not evaluated one way shows —.
    """
    rows = []
    for name in run_names(root):
        files = read_run(root, name)
        meta, final = files.meta, files.summary
        status = say(files.state)
        rows.append(
            {
                "run": name,
                "status": f"{status}: {', '.join(d.file for d in files.broken)}" if files.broken else status,
                "stage": meta.get("stage") or MISSING,
                "final loss": number_text(final.get("final_loss"), ".4f"),
                "trained tokens": number_text(final.get("trained_tokens"), ","),
                **{eval_label(*k): accuracy_text(f) for k, f in files.evals.items()},
                "base model": model_label(meta.get("base_model")) or MISSING,
                "parent": meta.get("parent") or MISSING,
                "started": str(meta.get("started") or MISSING).replace("T", " "),
            }
        )
    return pd.DataFrame(rows).fillna(MISSING)


def _gain(figures: dict[str, Any], other: dict[str, Any] | None, say: Callable[[str], str] = str) -> str:
    """Accuracy over another run's on the same eval, in percentage points; — unless both measured
    the same number of problems."""
    if not other or other.get("n") != figures.get("n") or not isinstance(other.get("accuracy"), (int, float)):
        return MISSING
    return say("{pp:+.1f} pp").format(pp=100 * (figures["accuracy"] - other["accuracy"]))


def _interval(figures: dict[str, Any]) -> tuple[float, float] | None:
    ci = figures.get("ci95")
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return ci[0], ci[1]
    return None


def _lead(key: tuple[str, str], best: RunFiles, others: list[RunFiles], say: Callable[[str], str]) -> str:
    """How the best run leads the next one on the same eval, and whether the lead can be trusted:
    a tie (the same accuracy: the newest run was picked), a lead inside overlapping 95% intervals
    (not significant), or a clear one; — when no other run was evaluated that way."""
    if not others:
        return MISSING
    top = best.evals[key]
    tied = [f.name for f in others if f.evals[key]["accuracy"] == top["accuracy"]]
    if tied:
        return say("tie with {runs}").format(runs=", ".join(tied))
    runner = max(reversed(others), key=lambda f: f.evals[key]["accuracy"])
    gap = say("{pp:+.1f} pp").format(pp=100 * (top["accuracy"] - runner.evals[key]["accuracy"]))
    mine, theirs = _interval(top), _interval(runner.evals[key])
    if mine and theirs and mine[0] <= theirs[1]:
        return say("{gap} over {run}: 95% intervals overlap, not significant").format(gap=gap, run=runner.name)
    return say("{gap} over {run}").format(gap=gap, run=runner.name)


def leaderboard(root: Path, say: Callable[[str], str] = str) -> pd.DataFrame:
    """The best run of every dataset · strategy, best first: its accuracy with the 95% interval,
    how it leads the next run (ties and overlapping intervals said so: `_lead`), and what it
    gained over its parent run and over the base model it was trained from."""
    every = {name: read_run(root, name) for name in run_names(root)}
    bases = {f.meta.get("base_model"): f for f in every.values() if f.meta.get("stage") == "base"}
    board: dict[tuple[str, str], list[RunFiles]] = {}
    for files in every.values():
        for key, figures in files.evals.items():
            if isinstance(figures.get("accuracy"), (int, float)):
                board.setdefault(key, []).append(files)
    rows = []
    for key, evaluated in board.items():
        # the highest accuracy; on a tie the one measured on more problems, then the newest
        best = max(reversed(evaluated), key=lambda f: (f.evals[key]["accuracy"], f.evals[key].get("n") or 0))
        figures = best.evals[key]
        parent = every.get(best.meta.get("parent") or "")
        base = bases.get(best.meta.get("base_model"))
        rows.append(
            {
                "dataset · strategy": eval_label(*key),
                "best run": best.name,
                "stage": best.meta.get("stage") or MISSING,
                "accuracy": accuracy_text(figures),
                "lead": _lead(key, best, [f for f in evaluated if f is not best], say),
                "n": number_text(figures.get("n"), "d"),
                "vs parent": _gain(figures, parent.evals.get(key) if parent else None, say),
                "vs base model": _gain(figures, base.evals.get(key) if base and base is not best else None, say),
                "runs": len(evaluated),
                "_accuracy": figures["accuracy"],
            }
        )
    if not rows:
        return pd.DataFrame()
    ranked = pd.DataFrame(rows).sort_values(["_accuracy", "dataset · strategy"], ascending=[False, True], kind="stable")
    return ranked.drop(columns="_accuracy").reset_index(drop=True)


def best_run(root: Path) -> str | None:
    """The leaderboard's top run (None before anything was evaluated)."""
    board = leaderboard(root)
    return None if board.empty else board["best run"].iloc[0]


def compare_default(root: Path) -> list[str]:
    """The two newest runs that trained (a base model has no recipe or curves to compare)."""
    names = run_names(root)
    trained = [name for name in names if runs.read(root / name).get("stage") != "base"]
    return (trained or names)[-2:]


def default_run(root: Path) -> str | None:
    """The run to show first: one training now, else the leaderboard's best, else the newest."""
    names = run_names(root)
    running = [n for n in names if runs.status(root / n) == "running"]
    if running:
        return running[-1]
    return best_run(root) or (names[-1] if names else None)


def _accuracy_cells(files: RunFiles, strategy: str | None = None) -> dict[str, str]:
    """Accuracy (95% interval) per `dataset · strategy` (per dataset, given one `strategy`), each
    task's groups after it (`cmath · cot · grade 3`)."""
    cells = {}
    for (dataset, used), figures in files.evals.items():
        if strategy is not None and used != strategy:
            continue
        label = dataset if strategy is not None else eval_label(dataset, used)
        cells[label] = accuracy_text(figures)
        groups, field = figures.get("groups"), figures.get("group_by") or "group"
        if isinstance(groups, dict):
            cells |= {f"{label} · {field} {g}": accuracy_text(f) for g, f in groups.items() if isinstance(f, dict)}
    return cells


def accuracy_matrix(root: Path, names: list[str]) -> pd.DataFrame:
    """Runs × (dataset · strategy), benchmarks side by side (CMATH per grade): accuracy with its
    95% interval; — where a run was not evaluated that way."""
    cells = {name: _accuracy_cells(read_run(root, name)) for name in names}
    return pd.DataFrame(cells).T.rename_axis("run").fillna(MISSING)


def benchmark_board(root: Path) -> pd.DataFrame:
    """Every run · strategy evaluated on two benchmarks or more (`fastmath suite`), the benchmarks
    side by side as columns (CMATH per grade): is a gain on one benchmark seen on the others?"""
    rows = []
    for name in run_names(root):
        files = read_run(root, name)
        for strategy in dict.fromkeys(used for _, used in files.evals):
            if len([dataset for dataset, used in files.evals if used == strategy]) >= 2:
                rows.append({"run": name, "strategy": strategy, **_accuracy_cells(files, strategy)})
    return pd.DataFrame(rows).fillna(MISSING) if rows else pd.DataFrame()


def eval_table(run: Path) -> pd.DataFrame:
    """One row per dataset × strategy: accuracy with its 95% interval and the error rates (%)."""
    rows = []
    for dataset in datasets(run):
        for strategy, f in eval_summary(run, dataset).items():
            low, high = (f.get("ci95") or [None, None])[:2]
            rows.append(
                {
                    "dataset": dataset,
                    "strategy": strategy,
                    "n": f.get("n"),
                    "accuracy %": _percent(f.get("accuracy")),
                    "95% CI low": _percent(low),
                    "95% CI high": _percent(high),
                    "no answer %": _percent(f.get("no_answer_rate")),
                    "truncated %": _percent(f.get("truncation_rate")),
                    "tokens": f.get("tokens"),
                    "problems/s": f.get("problems_per_s"),
                }
            )
    return pd.DataFrame(rows)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def stage_keys(stage: str | None) -> set[str]:
    """The recipe keys a stage reads (none for a base model, which has no recipe)."""
    if stage is None or stage not in stages.registry():
        return set()
    return {name for name, _, _ in config.keys(config.stage_sections(stage), stage)}


def recipe_diff(recipes: dict[str, tuple[str | None, dict[str, Any]]], say: Callable[[str], str] = str) -> pd.DataFrame:
    """`section.key` × run for `{run: (stage, recipe)}`: only keys some run's stage reads, only where
    the values differ (the run's own name is not a setting); `not used` (in `say`'s words) where a
    run's stage does not read it."""
    flat = {
        name: {k: v for k, v in _flatten(tree).items() if k in stage_keys(stage)}
        for name, (stage, tree) in recipes.items()
    }
    keys = sorted({k for f in flat.values() for k in f} - {"training.run_name"})
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat.values()}) > 1]
    columns = {
        name: [config.value_text(f[k]) if k in f else say("not used") for k in differing] for name, f in flat.items()
    }
    return pd.DataFrame(columns, index=pd.Index(differing, name="recipe key"))


def metric_series(frame: pd.DataFrame, columns: Iterable[str], label: str = "series") -> pd.DataFrame:
    """Long rows (step, `label`, value) of the `columns` (names or regular expressions) that
    `frame` holds, every logged point kept: a row without one metric does not drop the others."""
    names = [c for c in frame.columns if any(re.fullmatch(pattern, str(c)) for pattern in columns)]
    long = frame[names].reset_index().melt(id_vars="step", var_name=label, value_name="value") if names else None
    if long is None:
        return pd.DataFrame(columns=["step", label, "value"])
    return long.dropna(subset=["value"]).reset_index(drop=True)


def metric_groups(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The stages' metric groups (`stages.metric_groups`) that `frame` has columns for, each as `metric_series`."""
    if "step" not in frame.index.names:
        return {}
    groups = {title: metric_series(frame, columns) for title, columns in stages.metric_groups().items()}
    return {title: long for title, long in groups.items() if not long.empty}


def loss_curves(root: Path, names: list[str]) -> tuple[pd.DataFrame, list[tuple[str, Damage]]]:
    """Training loss by step, long rows (step, run, value): each run keeps every point it logged,
    whatever its logging interval (runs without a logged loss are left out); and the runs whose
    metrics cannot be read, with what is wrong (those runs left out, the others drawn)."""
    curves, unreadable = [], []
    for name in names:
        try:
            frame = metrics(run_dir(root, name))
        except DamagedFile as e:
            unreadable.append((name, e.damage))
            continue
        if "loss" in frame:
            curves.append(metric_series(frame, ["loss"], "run").assign(run=name))
    empty = pd.DataFrame(columns=["step", "run", "value"])
    return (pd.concat(curves, ignore_index=True) if curves else empty), unreadable


@dataclass(frozen=True)
class Progress:
    """Where a training run stands, from its metrics rows: what the live view shows."""

    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    peak_memory_gb: float | None = None
    seconds_left: float | None = None


def _last(frame: pd.DataFrame, column: str) -> Any:
    if column not in frame:
        return None
    values = frame[column].dropna()
    return values.iloc[-1].item() if len(values) else None


def progress(frame: pd.DataFrame) -> Progress:
    """Step of total, latest loss, tokens/s and memory, and the time left at the recent pace: the
    median steps/s over the last ten logging intervals (a resume's pause is one interval, not the pace)."""
    if frame.empty or "step" not in frame.index.names:
        return Progress()
    step, max_steps = int(frame.index[-1]), _last(frame, "max_steps")
    seconds_left = None
    if "time" in frame and max_steps:
        timed = frame["time"].dropna()
        steps, times = timed.index.to_series().diff().iloc[1:], timed.diff().iloc[1:]
        rates = [s / t for s, t in zip(steps, times, strict=True) if s > 0 and t > 0][-10:]
        if rates:
            seconds_left = max(0, max_steps - step) / statistics.median(rates)
    return Progress(
        step=step,
        max_steps=int(max_steps) if max_steps else None,
        loss=_last(frame, "loss"),
        tokens_per_s=_last(frame, "tokens_per_s"),
        peak_memory_gb=_last(frame, "peak_memory_gb"),
        seconds_left=seconds_left,
    )


def duration_text(seconds: float | None, say: Callable[[str], str] = str) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min` (in `say`'s words); — when unknown."""
    if seconds is None:
        return MISSING
    s = round(seconds)
    if s < 60:
        return say("{s} s").format(s=s)
    if s < 3600:
        return say("{m} min {s:02d} s").format(m=s // 60, s=s % 60)
    return say("{h} h {m:02d} min").format(h=s // 3600, m=s % 3600 // 60)


def log_tail(run: Path, lines: int = 40) -> str:
    """The end of the run's log (the command the app started printed there), progress bars as
    their latest state: a terminal redraws a line on each carriage return, a file keeps them all."""
    path = run / runs.LOG
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 64_000))
        text = f.read().decode("utf-8", errors="replace")
    shown = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")]
    return "\n".join(shown[-lines:]).strip("\n")


def finished_runs(outputs: Path, stage: str | None = None) -> list[str]:
    """Finished runs (of a stage), newest first: what a key naming a run (`dpo.sft_run`) can take."""
    return [p.name for p in reversed(runs.list_runs(outputs, stage)) if runs.is_finished(p) and NAME.fullmatch(p.name)]


BASE_TARGET = "base model: "  # eval_targets' label of a base model, drawn in the interface's language


def eval_targets(outputs: Path) -> dict[str, tuple[str, ...]]:
    """What `eval` can evaluate, as its flags: each finished run with an adapter (newest first),
    then each base model the runs were trained or evaluated on (`--model`)."""
    targets: dict[str, tuple[str, ...]] = {}
    for name in finished_runs(outputs):
        if (outputs / name / runs.ADAPTER).is_file():
            targets[name] = ("--lora", name)
    for run in reversed(runs.list_runs(outputs)):
        model = runs.read(run).get("base_model")
        if isinstance(model, str) and model:
            label = f"{BASE_TARGET}{model_label(model)}"
            targets.setdefault(label, ("--model", model))
    return targets


def adapter_runs(root: Path) -> list[str]:
    """Runs that saved a LoRA adapter, the ones the Solve page and the terminal solver can load."""
    return [name for name in run_names(root) if (root / name / runs.ADAPTER).is_file()]


def base_models(root: Path) -> list[str]:
    """Base models the runs were trained or evaluated on, newest run's first."""
    seen = [runs.read(root / name).get("base_model") for name in reversed(run_names(root))]
    return list(dict.fromkeys(m for m in seen if isinstance(m, str) and m))
