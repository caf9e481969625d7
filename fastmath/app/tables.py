"""The outputs directory as tables: what the app shows, as pure functions over files (no Streamlit).

Every path is built from a name that a directory listing returned, and names are checked
against that listing before use: a URL, a widget or a crafted session cannot steer the app
into reading anything outside the outputs directory.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fastmath import runs
from fastmath.errors import FastmathError
from fastmath.grading import numbers_equal, truncate_at_new_question
from fastmath.hub import looks_like_path
from fastmath.io import read_jsonl

# Run, dataset and strategy names as fastmath writes them: no separators, no leading dot.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# How a problem went, one kind each; the last three are the errors the breakdown counts.
KINDS = ("correct", "wrong number", "no answer", "truncated")
ERROR_KINDS = KINDS[1:]
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


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object, or {} when the file is absent (a run still training has no summary yet)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FastmathError(f"{path} is not valid JSON: {e}") from None
    return data if isinstance(data, dict) else {}


def summary(run: Path) -> dict[str, Any]:
    return _read_json(run / "summary.json")


def recipe(run: Path) -> dict[str, Any]:
    """The resolved recipe as nested sections; {} for a run without one (a base-model eval)."""
    path = run / "recipe.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise FastmathError(f"{path} is not valid YAML: {e}") from None
    return data if isinstance(data, dict) else {}


def metrics(run: Path) -> pd.DataFrame:
    """One row per logging step, indexed by step (empty when nothing was logged)."""
    path = run / "metrics.jsonl"
    rows = list(read_jsonl(path)) if path.is_file() else []
    frame = pd.DataFrame(rows)
    return frame.set_index("step") if "step" in frame else frame


def datasets(run: Path) -> list[str]:
    """Datasets the run was evaluated on (`eval/<dataset>/`)."""
    root = run / "eval"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME.fullmatch(p.name))


def _eval_folder(run: Path, dataset: str) -> Path:
    return _child(run / "eval", dataset, datasets(run), "evaluated dataset")


def eval_summary(run: Path, dataset: str) -> dict[str, dict[str, Any]]:
    """`{strategy: figures}` from `eval/<dataset>/summary.json`, in the order the eval ran them."""
    return {k: v for k, v in _read_json(_eval_folder(run, dataset) / "summary.json").items() if isinstance(v, dict)}


def strategies(run: Path, dataset: str) -> list[str]:
    """Strategies with per-problem results for `dataset`: summary order first, then the rest."""
    found = {p.stem for p in _eval_folder(run, dataset).glob("*.jsonl") if NAME.fullmatch(p.stem)}
    ordered = [s for s in eval_summary(run, dataset) if s in found]
    return ordered + sorted(found - set(ordered))


def problems(run: Path, dataset: str, strategy: str) -> list[dict[str, Any]]:
    """The per-problem records of one eval, each with its `kind` added."""
    if strategy not in strategies(run, dataset):
        raise FastmathError(f"{run.name} has no {dataset} results for strategy {strategy!r}")
    path = _eval_folder(run, dataset) / f"{strategy}.jsonl"
    return [{**row, "kind": problem_kind(row)} for row in read_jsonl(path)]


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


def accuracy_columns(run: Path) -> dict[str, float | None]:
    """`{"<dataset> · <strategy>": accuracy in %}` over every eval of the run."""
    return {
        f"{dataset} · {strategy}": _percent(figures.get("accuracy"))
        for dataset in datasets(run)
        for strategy, figures in eval_summary(run, dataset).items()
    }


def model_label(name: Any) -> Any:
    """A local model directory by its folder name, a hub id as it is: long paths hide the table."""
    return Path(name.rstrip("/")).name if isinstance(name, str) and looks_like_path(name) else name


def runs_table(root: Path) -> pd.DataFrame:
    """Every run: what it is, how training ended, and its accuracy on every eval (%), oldest first."""
    rows = []
    for name in run_names(root):
        run = root / name
        meta, final = runs.read(run), summary(run)
        rows.append(
            {
                "run": name,
                "stage": meta.get("stage"),
                "base model": model_label(meta.get("base_model")),
                "parent": meta.get("parent"),
                "started": meta.get("started"),
                "status": meta.get("status"),
                "final loss": final.get("final_loss"),
                "trained tokens": final.get("trained_tokens"),
                **accuracy_columns(run),
            }
        )
    return pd.DataFrame(rows)


def accuracy_matrix(root: Path, names: list[str]) -> pd.DataFrame:
    """Runs × (dataset · strategy) accuracy in %; blank where a run was not evaluated that way."""
    return pd.DataFrame({name: accuracy_columns(run_dir(root, name)) for name in names}).T.rename_axis("run")


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


def recipe_diff(recipes: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """`section.key` × run, only the settings whose values differ (the run's own name is not one)."""
    flat = {name: _flatten(r) for name, r in recipes.items()}
    keys = sorted({k for f in flat.values() for k in f} - {"training.run_name"})
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat.values()}) > 1]
    columns = {
        name: [json.dumps(f[k], ensure_ascii=False) if k in f else "—" for k in differing] for name, f in flat.items()
    }
    return pd.DataFrame(columns, index=pd.Index(differing, name="recipe key"))


def loss_curves(root: Path, names: list[str]) -> pd.DataFrame:
    """Training loss by step, one column per run (runs without a logged loss are left out)."""
    curves = {}
    for name in names:
        frame = metrics(run_dir(root, name))
        if "loss" in frame:
            curves[name] = frame["loss"].dropna()
    return pd.DataFrame(curves).rename_axis("step")


def adapter_runs(root: Path) -> list[str]:
    """Runs that saved a LoRA adapter, the ones the Solve page and the terminal solver can load."""
    return [name for name in run_names(root) if (root / name / "adapter_config.json").is_file()]


def base_models(root: Path) -> list[str]:
    """Base models the runs were trained or evaluated on, newest run's first."""
    seen = [runs.read(root / name).get("base_model") for name in reversed(run_names(root))]
    return list(dict.fromkeys(m for m in seen if isinstance(m, str) and m))
