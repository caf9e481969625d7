"""Experiment trackers beside metrics.jsonl: MLflow, Weights & Biases and Trackio.

TensorBoard goes through transformers' own callback (`report_to=["tensorboard"]`, `train/trainer`).
The other three are driven here through their own clients rather than transformers' callbacks,
for two reasons: each must get exactly the row fastmath writes to metrics.jsonl (tokens/s and peak
memory included, which transformers' callbacks never see), and a later `python -m fastmath eval`,
a separate process, must log into the same tracker run, reopened by the reference run.json keeps
under `trackers` (transformers' callbacks always start a new run).

Offline by default, and never hanging: MLflow writes to $MLFLOW_TRACKING_URI, else to a SQLite
file `<output_dir>/mlflow.db`; W&B runs offline (files under the run directory, `wandb sync`
uploads them) unless $WANDB_MODE=online; Trackio logs to its local database ($TRACKIO_DIR) unless
$TRACKIO_SPACE_ID or $TRACKIO_SERVER_URL names a server. A missing package, or a server that does
not answer within a few seconds, stops the command before its run starts (`check`).

Only the main process logs (the trainer calls `open_for_training` on rank 0 alone). This module
imports no tracker, torch or transformers at import time: `cli` checks recipes with it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Literal, Protocol, cast
from urllib.parse import urlparse

import yaml

from fastmath import runs
from fastmath.errors import FastmathError
from fastmath.io import exclusive
from fastmath.log import log

PROJECT = "fastmath"  # MLflow experiment, W&B project, Trackio project
TRACKERS = ("mlflow", "wandb", "trackio")
# What each tracker imports, and what to install for it (the pins of requirements.txt).
MODULES = {"mlflow": ("mlflow", "sqlalchemy", "alembic"), "wandb": ("wandb",), "trackio": ("trackio",)}
INSTALL = {
    "mlflow": "pip install mlflow-skinny==3.18.0 sqlalchemy==2.1.9 alembic==1.20.1",
    "wandb": "pip install wandb==0.31.0",
    "trackio": "pip install trackio",
}
SERVER_TIMEOUT_S = 3.0
OFFLINE = {
    "mlflow": "unset MLFLOW_TRACKING_URI to log to a local SQLite file",
    "wandb": "set WANDB_MODE=offline and `wandb sync` later",
    "trackio": "unset TRACKIO_SPACE_ID and TRACKIO_SERVER_URL to log locally",
}


class Tracker(Protocol):
    """One open tracker run; `ref` is what run.json keeps to reopen it."""

    ref: dict[str, Any]

    def resume(self) -> None: ...

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self, failed: bool = False) -> None: ...


def chosen(report_to: list[str]) -> list[str]:
    """The trackers of `training.report_to` that this module drives (not tensorboard)."""
    return [name for name in report_to if name in TRACKERS]


def mlflow_uri(output_dir: str) -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store in the outputs folder (MLflow's file store is retired)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


WandbMode = Literal["online", "offline", "disabled", "shared"]


def wandb_mode() -> WandbMode:
    """$WANDB_MODE (W&B checks its value), offline when unset: nothing leaves the machine unasked."""
    return cast(WandbMode, os.environ.get("WANDB_MODE") or "offline")


def server(name: str, output_dir: str) -> str | None:
    """The URL a tracker would reach over the network, or None when it writes local files only."""
    if name == "mlflow":
        uri = mlflow_uri(output_dir)
        return uri if urlparse(uri).scheme in ("http", "https") else None
    if name == "wandb":
        online = wandb_mode() in ("online", "run")
        return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai") if online else None
    if os.environ.get("TRACKIO_SPACE_ID"):
        return "https://huggingface.co"
    return os.environ.get("TRACKIO_SERVER_URL") or None


def reachable(url: str, timeout: float = SERVER_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host and port opens within `timeout` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _unusable(name: str, url: str | None) -> str | None:
    """Why a tracker cannot log right now (its fix included), or None; `url`: the server it would reach."""
    missing = [m for m in MODULES[name] if importlib.util.find_spec(m) is None]
    if missing:
        return f"{name} needs {', '.join(missing)}, which is not installed: {INSTALL[name]}"
    if url and not reachable(url):
        return f"{name}'s server {url} does not answer within {SERVER_TIMEOUT_S:g} s: {OFFLINE[name]}"
    return None


def check(report_to: list[str], output_dir: str) -> None:
    """Refuse, before a run starts, a report_to that cannot log: packages missing, server unreachable."""
    if "none" in report_to and len(report_to) > 1:
        raise FastmathError(f"training.report_to={','.join(report_to)}: `none` cannot be combined with trackers")
    for name in chosen(report_to):
        problem = _unusable(name, server(name, output_dir))
        if problem:
            raise FastmathError(f"training.report_to lists {problem} (or drop {name} from training.report_to)")


def _params(run_dir: Path) -> dict[str, str]:
    """The run's resolved recipe (recipe.yaml), flattened to `section.key`: value text."""
    tree = yaml.safe_load((run_dir / runs.RECIPE).read_text(encoding="utf-8")) or {}
    return {f"{s}.{k}": str(v) for s, body in tree.items() for k, v in body.items()}


# --- the three clients ---------------------------------------------------------------------------


class MLflow:
    """An MLflow run through `MlflowClient` (no global active run), reopened by tracking URI and run id."""

    def __init__(self, ref: dict[str, Any]):
        from mlflow.tracking import MlflowClient

        self.ref, self.client = ref, MlflowClient(ref["tracking_uri"])

    @classmethod
    def start(cls, run_dir: Path, output_dir: str) -> MLflow:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = mlflow_uri(output_dir)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(PROJECT)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(PROJECT)
        run = client.create_run(experiment_id, run_name=run_dir.name, tags={"fastmath.run_dir": str(run_dir)})
        params = [Param(k, v[:6000]) for k, v in _params(run_dir).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run.info.run_id, params=params[i : i + 100])
        return cls({"tracking_uri": uri, "run_id": run.info.run_id})

    def resume(self) -> None:
        self.client.update_run(self.ref["run_id"], status="RUNNING")

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        rows = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        for i in range(0, len(rows), 1000):
            self.client.log_batch(self.ref["run_id"], metrics=rows[i : i + 1000])

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.ref["run_id"], status="FAILED" if failed else "FINISHED")


class WandB:
    """A W&B run (offline unless $WANDB_MODE says otherwise), its files under `<run>/wandb/`;
    reopened by id with resume="allow"."""

    def __init__(self, ref: dict[str, Any], config: dict[str, str] | None = None):
        import wandb

        self.ref = ref
        self.run = wandb.init(
            project=ref["project"], id=ref["id"], name=ref["name"], dir=ref["dir"], mode=wandb_mode(),
            resume="allow", config=config, settings=wandb.Settings(console="off", silent=True),
        )  # fmt: skip

    @classmethod
    def start(cls, run_dir: Path, output_dir: str) -> WandB:

        folder = os.environ.get("WANDB_DIR") or str(run_dir)
        ref = {"project": os.environ.get("WANDB_PROJECT", PROJECT), "id": uuid.uuid4().hex[:12],
               "name": run_dir.name, "dir": folder}  # fmt: skip
        return cls(ref, _params(run_dir))

    def resume(self) -> None:
        """Reopened in `__init__` already."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)
        # W&B names an offline segment's folder by its start second: a segment reopened within the same
        # second (the next evaluation) would write into this one's folder. Closing ends that second.
        time.sleep(1 - time.time() % 1)


class Trackio:
    """A Trackio run in its local database (or the Space/server its variables name), reopened by name."""

    def __init__(self, ref: dict[str, Any], config: dict[str, str] | None = None, resume: str = "must"):
        import trackio

        self.ref, self.trackio = ref, trackio
        self.run = trackio.init(
            project=ref["project"], name=ref["name"], config=config, resume=resume, embed=False,
            auto_log_gpu=False, auto_log_cpu=False,
        )  # fmt: skip

    @classmethod
    def start(cls, run_dir: Path, output_dir: str) -> Trackio:
        return cls({"project": PROJECT, "name": run_dir.name}, _params(run_dir), resume="allow")

    def resume(self) -> None:
        """Reopened in `__init__` already."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self, failed: bool = False) -> None:
        self.trackio.finish()


CLIENTS: dict[str, Any] = {"mlflow": MLflow, "wandb": WandB, "trackio": Trackio}


# --- what the trainer and the evaluation call ----------------------------------------------------


class Trackers:
    """The open trackers of one run: log a metrics row to each; closed (marked failed on an error) on exit.

    Empty until `open_for_training` (the main process only), so every process can log rows to it.
    """

    def __init__(self) -> None:
        self.opened: dict[str, Tracker] = {}

    def open_for_training(self, run_dir: Path) -> None:
        """The recipe's trackers: started (their references noted in run.json), or reopened when the run resumes."""
        recipe = runs.saved_recipe(run_dir)
        recorded = runs.read(run_dir).get("trackers") or {}
        for name in chosen(recipe.training.report_to):
            if name in recorded:
                self.opened[name] = CLIENTS[name](recorded[name])
                self.opened[name].resume()
            else:
                self.opened[name] = CLIENTS[name].start(run_dir, recipe.training.output_dir)
            log.info(f"{name}: logging run {run_dir.name} ({_where(name, self.opened[name].ref)})")
        if self.opened:
            runs.note(run_dir, trackers={**recorded, **{name: t.ref for name, t in self.opened.items()}})

    def log(self, row: dict[str, Any]) -> None:
        """One metrics.jsonl row, at its step: every number but the step itself."""
        metrics = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        for tracker in self.opened.values():
            tracker.log(metrics, int(row.get("step", 0)))

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        for tracker in self.opened.values():
            tracker.close(failed=kind is not None)


def _where(name: str, ref: dict[str, Any]) -> str:
    if name == "mlflow":
        return f"{ref['tracking_uri']}, run id {ref['run_id']}"
    if name == "wandb":
        return f"{wandb_mode()}, {ref['dir']}/wandb, id {ref['id']}"
    return f"project {ref['project']}, run {ref['name']}"


def log_evaluation(run_dir: Path, dataset: str, summaries: dict[str, dict[str, Any]]) -> None:
    """An evaluation's figures, logged into each tracker run the training recorded in run.json, at the
    run's last step. The results are on disk already, so a tracker that cannot log only warns."""
    recorded = runs.read(run_dir).get("trackers") or {}
    if not recorded:
        return
    step = int(runs.read_summary(run_dir).get("steps") or 0)
    metrics: dict[str, float] = {}
    for strategy, s in summaries.items():
        prefix = f"eval/{dataset}/{strategy}"
        metrics |= {f"{prefix}/accuracy": s["accuracy"], f"{prefix}/ci95_low": s["ci95"][0]}
        metrics |= {f"{prefix}/ci95_high": s["ci95"][1], f"{prefix}/n": s["n"]}
    with exclusive(run_dir / "trackers", "the run's trackers", wait=True):  # concurrent evaluations: in turn
        for name, ref in recorded.items():
            url = ref["tracking_uri"] if name == "mlflow" else server(name, str(run_dir.parent))
            problem = _unusable(name, url if url and urlparse(url).scheme in ("http", "https") else None)
            if problem:
                log.warning(f"this evaluation is saved, but not logged to {name}: {problem}")
                continue
            tracker = CLIENTS[name](ref)
            try:
                tracker.log(metrics, step)
            finally:
                tracker.close()
            log.info(f"{name}: logged {dataset} ({', '.join(summaries)}) into run {run_dir.name}")
