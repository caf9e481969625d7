"""Run directories: every path and file of `outputs/<run>/`, in one place.

    run.json        stage, base model, parent run, start time, status (running | finished | failed | stopped
                    | stalled), error, trackers (references to reopen the tracker runs), and the process
                    writing it (pid, host, boot, start): `status` tells a run whose process died without
                    a word (kill -9, OOM) as `crashed`, whoever started it
    recipe.yaml     the keys the stage read, as it ran (config.Recipe.to_dict(stage))
    metrics.jsonl   one line per logging step
    summary.json    final figures, written once at the end
    README.md       the model card (`card`), rewritten after training and after each evaluation
    train.log       what the command printed, when the app started it
    adapter_*       the PEFT adapter (+ tokenizer files); checkpoint-N/ while training
    pairs.jsonl     preference pairs mined from an SFT run (+ .samples.jsonl, .summary.json)
    eval/<dataset>/<strategy>.jsonl, <strategy>.settings.json, summary.json, comparison.md
    exports/<format>-<quant>/  a merged model or a GGUF file (+ Modelfile), and export.json

Base models get a run too (`base-<model>/`, stage `base`), so their evaluations sit beside the
trained runs'. Paths inside run files are absolute, so a run resolves from any working directory;
a parent is named by its folder, which lies beside the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import socket
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from fastmath.config import ModelConfig, Recipe, absolute, load_recipe, save_recipe
from fastmath.errors import FastmathError
from fastmath.io import DiskFull, atomic_write_json, is_disk_full
from fastmath.log import log

RUN_JSON = "run.json"
RECIPE = "recipe.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOG = "train.log"
ADAPTER = "adapter_config.json"
PAIRS = "pairs.jsonl"
EVAL = "eval"
EXPORTS = "exports"
EXPORT_JSON = "export.json"

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "unsloth")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def hardware() -> str:
    """What a run trains on, for its summary and model card: the GPUs, else the CPU and its cores."""
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return ", ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names))
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def read(run: str | Path) -> dict[str, Any]:
    """run.json as a dict; {} when it is missing or unreadable (the app marks such a run, it does not fail)."""
    try:
        data = json.loads((Path(run) / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _update(run: Path, **fields: Any) -> None:
    atomic_write_json(run / RUN_JSON, {**read(run), **fields})


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux): with the pid, it names one process,
    since a pid is reused only by a process that starts later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name may hold spaces


def this_process() -> dict[str, Any]:
    """What run.json records of the process that writes the run."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "boot": _boot_id(), "start": _start_ticks(pid)}


def _process_gone(process: dict[str, Any]) -> bool:
    """Whether the recorded process has surely ended: it ran on this machine since its last boot, and
    no process with its pid and start time exists now. Another machine's process cannot be seen."""
    if process.get("host") != socket.gethostname() or process.get("boot") != _boot_id() or "pid" not in process:
        return False
    if process.get("start") is None:  # no /proc: whether the pid exists at all
        try:
            os.kill(process["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return _start_ticks(process["pid"]) != process["start"]


def status(run: str | Path, meta: dict[str, Any] | None = None) -> str | None:
    """A run's status: run.json's, except `crashed` for one recorded as running whose process is gone."""
    meta = read(run) if meta is None else meta
    recorded = meta.get("status")
    if recorded == "running" and isinstance(meta.get("process"), dict) and _process_gone(meta["process"]):
        return "crashed"
    return recorded


def note(run: Path, **fields: Any) -> None:
    """Add fields to run.json (tracker references, ...), keeping the rest."""
    _update(run, **fields)


def read_summary(run: Path) -> dict[str, Any]:
    """summary.json as a dict; {} before the run finished (it is written whole, atomically)."""
    path = Path(run) / SUMMARY
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def list_runs(root: str | Path, stage: str | None = None) -> list[Path]:
    """Run directories under `root`, oldest first, optionally of one stage."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / RUN_JSON).is_file()]
    runs = [p for p in runs if stage is None or read(p).get("stage") == stage]
    return sorted(runs, key=lambda p: (str(read(p).get("started", "")), p.name))


def is_finished(run: Path) -> bool:
    return read(run).get("status") == "finished"


def latest(root: str | Path, stage: str) -> Path:
    """The newest finished run of `stage` (failed and running ones never count)."""
    runs = [p for p in list_runs(root, stage) if is_finished(p)]
    if not runs:
        raise FastmathError(f"no finished {stage} run in {root}/; run `make {stage}` first or name a run")
    return runs[-1]


def find(name: str, root: str | Path) -> Path:
    """A run named by its path, or by its folder name under `root`."""
    run = Path(name).expanduser()
    if not (run / RUN_JSON).is_file() and (Path(root) / name / RUN_JSON).is_file():
        run = Path(root) / name
    if not run.is_dir():
        raise FastmathError(f"no run {name!r}: give a run directory, or a run name in {root}/")
    return run


def adapter_run(name: str, root: str | Path) -> Path:
    """A finished run that holds an adapter (an SFT, DPO or GRPO run)."""
    run = find(name, root)
    if not (run / ADAPTER).is_file():
        raise FastmathError(f"{run} holds no adapter ({ADAPTER}); name a finished SFT, DPO or GRPO run")
    if read(run) and not is_finished(run):
        raise FastmathError(f"{run} has not finished (status {read(run).get('status')!r}); name a finished run")
    return run


def parent_run(name: str | None, root: str | Path, stage: str = "sft") -> Path:
    """The run a stage continues: `name`, or the newest finished run of `stage`."""
    return adapter_run(name, root) if name else adapter_run(str(latest(root, stage)), root)


def model_settings(run: Path) -> ModelConfig:
    """The base model and load settings that go with a run's adapter: the ones it trained with.

    From the run's recipe.yaml when it has one, else from run.json (a base-model run) or from the
    adapter's own config. Every command that loads an adapter asks here, so none can disagree.
    """
    if (run / RECIPE).is_file():
        return load_recipe(run / RECIPE).model
    name = read(run).get("base_model")
    if not name and (run / ADAPTER).is_file():
        name = json.loads((run / ADAPTER).read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not name:
        raise FastmathError(f"{run}: neither recipe.yaml nor run.json names its base model; pass --model")
    return ModelConfig(name=name)


def new_name(stage: str, model: str, stamp: str | None = None) -> str:
    """`<stage>-<model folder>-<timestamp>`: a run's folder name unless training.run_name says otherwise
    (the app picks one this way before it starts a command, so it knows where the run will be)."""
    return f"{stage}-{slug(Path(model.rstrip('/')).name)}-{stamp or time.strftime('%Y%m%d-%H%M%S')}"


def slug(text: str) -> str:
    """A folder-safe form of a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower()


def create(recipe: Recipe, stage: str, parent: Path | None = None) -> Path:
    """A fresh run directory with run.json and recipe.yaml (written by the main process only).

    Under `accelerate launch` every process must agree on the directory, so the main process picks
    the timestamped name and broadcasts it.
    """
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()
    name = [recipe.training.run_name or new_name(stage, recipe.model.name)]
    if state.num_processes > 1:
        broadcast_object_list(name)
    recipe.training.run_name = name[0]
    run = Path(recipe.training.output_dir) / name[0]
    if state.is_main_process:
        if (run / RUN_JSON).exists():
            raise FastmathError(
                f"run directory {run} already exists; pick another training.run_name, "
                f"or continue it with --resume {run}"
            )
        run.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, run / RECIPE, stage)
        parent_name = parent.name if parent is not None else None
        atomic_write_json(
            run / RUN_JSON,
            {
                "stage": stage,
                "base_model": recipe.model.name,
                "parent": parent_name,
                "started": now(),
                "status": "running",
                "process": this_process(),
            },
        )
    state.wait_for_everyone()
    return run


def base_run_dir(root: Path, model: str) -> Path:
    """`<root>/base-<model>/`, where a base model's evaluations go (nothing is written)."""
    return root / f"base-{slug(Path(absolute(model).rstrip('/')).name)}"


def base_run(root: Path, model: str) -> Path:
    """The base model's run (`base_run_dir`), its run.json written on first use."""
    run = base_run_dir(root, model)
    if not (run / RUN_JSON).is_file():
        atomic_write_json(
            run / RUN_JSON, {"stage": "base", "base_model": absolute(model), "status": "finished", "started": now()}
        )
    return run


def resume(run: Path) -> None:
    """Mark a run that continues from its checkpoint as running again, by this process."""
    _update(run, status="running", error=None, process=this_process())


def finish(run: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(run / SUMMARY, summary)
    _update(run, status="finished", finished=now(), error=None)
    log.info(f"run finished: {run}")


def fail(run: Path, error: BaseException) -> None:
    """Mark a run that stopped with an error (or was interrupted): it is never taken as a finished run."""
    status = "stopped" if isinstance(error, KeyboardInterrupt) else "failed"
    reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
    _update(run, status=status, error=reason[:2000], ended=now())


def stall(run: Path, reason: str) -> None:
    """Mark a run that ended early because it learned nothing (`train.health`): never taken as finished."""
    _update(run, status="stalled", error=reason[:2000])


@contextlib.contextmanager
def marking_failure(run: Path):
    """Run a stage's training; if it raises (or is interrupted), mark the run before re-raising.

    A full disk becomes one line (`io.DiskFull`) naming the folder and about the space a checkpoint
    needs; the half-written checkpoint is removed first (it cannot be resumed from), so that run.json
    can still say `failed`. Where even that does not fit, `status` finds the run crashed by its pid.
    """
    try:
        yield
    except BaseException as e:
        if is_disk_full(e) and not isinstance(e, DiskFull):
            error: BaseException = DiskFull(run, _checkpoint_size(run))
            _remove_torn_checkpoints(run)
        else:
            error = e
        with contextlib.suppress(OSError, FastmathError):
            fail(run, error)
        if error is e:
            raise
        raise error from None


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _checkpoint_size(run: Path) -> int | None:
    """About what one checkpoint takes: the newest complete one's size, else the torn one's (a lower bound)."""
    done = last_checkpoint(run)
    torn = [p for p in run.glob("checkpoint-*") if p.is_dir()]
    return _size(done) if done else max((_size(p) for p in torn), default=None)


def _remove_torn_checkpoints(run: Path) -> None:
    for folder in run.glob("checkpoint-*"):
        if folder.is_dir() and not (folder / CHECKPOINT_DONE).is_file():
            shutil.rmtree(folder, ignore_errors=True)


CHECKPOINT_DONE = "trainer_state.json"  # transformers writes it last: a checkpoint without it is half-saved


def last_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint. Ctrl-C during a save leaves a folder that cannot be resumed
    from; resuming from the one before loses a few steps, not the run."""
    checkpoints = [
        p for p in run.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / CHECKPOINT_DONE).is_file()
    ]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)


def saved_recipe(run: Path) -> Recipe:
    """The recipe a run recorded (for --resume: it continues exactly as recorded)."""
    if not (run / RECIPE).is_file():
        raise FastmathError(f"--resume {run}: not a run directory (no {RECIPE} in it)")
    return load_recipe(run / RECIPE)


def eval_dir(run: Path, dataset: str) -> Path:
    return run / EVAL / dataset


def export_dir(run: Path, fmt: str, quant: str) -> Path:
    """Where `python -m fastmath export` writes a run's export by default."""
    return run / EXPORTS / f"{fmt}-{quant}"


def export_dirs(run: Path) -> list[Path]:
    """The run's finished exports (a directory counts once its export.json is written, last), by name."""
    return sorted(p.parent for p in (run / EXPORTS).glob(f"*/{EXPORT_JSON}"))


def print_latest(inv) -> int:
    """`python -m fastmath latest-run STAGE`: for scripts and the Makefile."""
    print(latest(inv.args.output_dir, inv.args.stage))
    return 0


def system_prompt(run: Path) -> str | None:
    """The system prompt a run's adapter was trained with (None: the built-in one)."""
    return saved_recipe(run).data.system_prompt if (run / RECIPE).is_file() else None
