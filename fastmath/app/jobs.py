"""Commands the app starts: the exact command line, the process, and finding it again later.

A job is `python -m fastmath <command> ...`, the command a user would type, started as its own
process in its own session so that it outlives the page, the browser and the app. Its output is
appended to `<run>/train.log` (runs.LOG), and `<outputs>/.jobs/<name>.json` records its pid and
command line, so a page reload or an app restart finds it again. A pid alone could have been
reused by another program since: a job counts as alive only while /proc/<pid>/cmdline is still
its command line. Stop is Ctrl-C (SIGINT to its process group), as in a terminal: the trainer
finishes the step under way, saves a checkpoint of it, marks the run `stopped` and ends; `--resume`
continues it from that checkpoint. A command that ends before it made its run (a model that is not
there, a recipe this machine cannot run) leaves no run folder: its log moves to `.jobs/<name>/`.

No Streamlit here: the Train page draws what these functions return.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastmath import cli, config, export, resources, runs, stages
from fastmath.errors import FastmathError
from fastmath.io import atomic_write_json

JOBS = ".jobs"
# Stages that train a run of their own (and so can be resumed); the others write into an existing run.
TRAINING = frozenset(name for name, c in cli.COMMANDS.items() if c.resumable)
# Keys the app sets itself: runs go to the app's outputs directory, under a name picked before the start.
APP_KEYS = ("training.output_dir", "training.run_name")
# After Ctrl-C, how long a job may take to stop before SIGTERM, then SIGKILL: a trainer first finishes
# its step (a 7B GRPO step samples its group: minutes on one GPU) and saves a checkpoint of it.
GRACE_S = 180.0
ENDED = ("finished", "failed", "stopped", "crashed", "ended")

# Processes this app process started, kept to collect their exit status (and to leave no zombies).
_children: dict[int, subprocess.Popen] = {}


def commands() -> list[str]:
    """Commands the Train page can start: every stage, and eval."""
    return [*stages.registry(), "eval"]


def has_gpu() -> bool:
    """Whether this machine has a CUDA GPU, as `make install` decides it (nvidia-smi), without importing torch."""
    return shutil.which("nvidia-smi") is not None


def default_recipe(command: str) -> str | None:
    """The recipe the Train form starts from: the command's own, or on a machine without a GPU the
    tiny recipe of the same stage (`qwen2.5-7b-dpo` -> `tiny-dpo`, the quickstart's), which a CPU
    trains in minutes."""
    shipped = cli.COMMANDS[command].recipe
    tiny = f"tiny-{shipped.rpartition('-')[2]}" if shipped else None
    return tiny if not has_gpu() and tiny in resources.recipe_names() else shipped


GPU_WARNING = (
    "This recipe loads {model} in 4-bit for a GPU, and this machine has none: on the CPU it runs through "
    "bitsandbytes' slow fallback, if the model fits in memory at all. The tiny recipes (tiny-sft, tiny-dpo, "
    "tiny-grpo) are the ones made for a CPU."
)


def needs_gpu(values: dict[str, Any]) -> bool:
    """Whether the form's values start a GPU recipe (a 4-bit model) on a machine without a GPU: a
    warning before Start (`GPU_WARNING`), not a refusal."""
    return not has_gpu() and bool(values.get("model.load_in_4bit"))


def recipes(cwd: Path) -> dict[str, str]:
    """`{label: RECIPE argument}`: the shipped recipes by name, then the working folder's `recipes/*.yaml`
    that are not those same files (a checkout's recipes/ links to the shipped ones)."""
    found = {name: name for name in resources.recipe_names()}
    shipped = {resources.recipe_path(name).resolve() for name in found}
    for path in sorted((cwd / "recipes").glob("*.yaml")):
        if path.resolve() not in shipped:
            found[f"recipes/{path.name}"] = f"recipes/{path.name}"
    return found


@dataclass(frozen=True)
class Field:
    """One recipe key as a form field: its widget kind follows its type."""

    name: str
    kind: str  # bool, int, float, choice (one of choices), choices (several), list (text a,b), run (a name), text
    help: str
    nullable: bool = False
    choices: tuple[str, ...] = ()


def _kind(name: str, hint: Any, choices: tuple[str, ...]) -> tuple[str, bool]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    nullable = len(args) < len(typing.get_args(hint))
    base = args[0] if nullable else hint
    if name.endswith(".sft_run"):
        return "run", nullable
    if typing.get_origin(base) is list:
        return ("choices" if choices else "list"), nullable
    if choices:
        return "choice", nullable
    return {bool: "bool", int: "int", float: "float"}.get(base, "text"), nullable


def fields(command: str) -> list[Field]:
    """Every key the command's stage reads, with its help text and allowed values (config metadata)."""
    out = []
    for name, f, hint in config.keys(config.stage_sections(command), command):
        if name in APP_KEYS:
            continue
        choices = config.choices(f)  # a callable's (strategy names, with plugins') computed once
        kind, nullable = _kind(name, hint, choices)
        extra = f" ({f.metadata['range']})" if f.metadata["range"] else ""
        out.append(Field(name, kind, f.metadata["help"] + extra, nullable, choices))
    return out


def defaults(command: str, recipe: str | None) -> dict[str, Any]:
    """Each key's value in the recipe (with the command's own defaults): what the form starts from."""
    loaded = config.load_recipe(resources.recipe_path(recipe) if recipe else None, cli.COMMANDS[command].defaults)
    out = {}
    for f in fields(command):
        section, _, key = f.name.partition(".")
        out[f.name] = getattr(getattr(loaded, section), key)
    return out


@dataclass(frozen=True)
class Plan:
    """A command checked and ready to start: its exact argv, and the run whose log gets its output."""

    command: str
    argv: tuple[str, ...]
    run: Path

    @property
    def shell(self) -> str:
        """The command line as a user would type it: shell-quoted, a word holding single quotes (YAML's
        `'123'`, `['a, b', c]`) in double quotes rather than shlex's `'"'"'` splices."""
        return " ".join(map(_quote, self.argv))


def _quote(word: str) -> str:
    if "'" in word and not any(c in word for c in '"$`\\!'):
        return f'"{word}"'
    return shlex.quote(word)


def _fastmath(*args: str) -> list[str]:
    return [sys.executable, "-m", "fastmath", *args]


def key_text(value: Any) -> str:
    """A key's value as a person types it: a list of plain words as `a,b` (the command line splits a
    list at commas), anything else as YAML writes it on one line."""
    plain = isinstance(value, list) and value
    if plain and all(isinstance(v, str) and "," not in v and config.value_text(v) == v for v in value):
        return ",".join(value)
    return config.value_text(value)


def plan(
    outputs: Path,
    command: str,
    recipe: str | None = None,
    overrides: dict[str, Any] | None = None,
    flags: tuple[str, ...] = (),
    stamp: str | None = None,
) -> Plan:
    """`python -m fastmath COMMAND [RECIPE] [FLAGS] key=value ...`, checked exactly as the command will
    check it (`cli.prepare`: every key's type and range, the schedule, the run it continues), so a
    mistake is a message before anything starts. A training stage gets its run's name now
    (`runs.new_name`, from `stamp`), so the page knows where the run will be before it exists."""
    head = _fastmath(command, *([recipe] if recipe else []), *flags)
    keys = [f"{k}={key_text(v)}" for k, v in (overrides or {}).items()]
    keys.append(f"training.output_dir={outputs}")
    inv = cli.prepare(cli.COMMANDS[command], head[4:] + keys)
    assert inv.recipe is not None
    if command in TRAINING:
        name = runs.new_name(command, inv.recipe.model.name, stamp)
        keys.append(f"training.run_name={name}")
        run = outputs / name
    else:  # eval and pairs write into the run they read (a base model's evals into base-<model>/)
        run = inv.parent or runs.base_run_dir(outputs, inv.recipe.model.name)
    return Plan(command, tuple(head + keys), run.resolve())


def resume_plan(outputs: Path, name: str) -> Plan:
    """`python -m fastmath STAGE --resume RUN`: a stopped, failed or crashed training run, continued
    from its last checkpoint exactly as recorded."""
    run = outputs / name
    stage = runs.read(run).get("stage")
    if stage not in TRAINING:
        raise FastmathError(f"{name} is not a training run ({stage or 'no stage'}); only {', '.join(TRAINING)} resume")
    argv = _fastmath(stage, "--resume", str(run))
    cli.prepare(cli.COMMANDS[stage], argv[4:])
    return Plan(stage, tuple(argv), run.resolve())


def export_plan(outputs: Path, name: str, fmt: str, quant: str | None = None) -> Plan:
    """`python -m fastmath export RUN --format FMT --quant Q`, checked as the command checks it; with
    `--force` where that export exists already (the button then says it replaces it)."""
    run = outputs / name
    quant = quant or export.DEFAULT_QUANT[fmt]
    force = ["--force"] if (runs.export_dir(run, fmt, quant) / runs.EXPORT_JSON).is_file() else []
    argv = _fastmath("export", str(run.resolve()), "--format", fmt, "--quant", quant, *force)
    cli.prepare(cli.COMMANDS["export"], argv[4:])
    return Plan("export", tuple(argv), run.resolve())


def exported_files(outputs: Path, name: str, fmt: str, quant: str | None = None) -> list[dict[str, Any]]:
    """The files an export wrote (in `runs.export_dir`), with their sizes, from its export.json ([] until
    it is complete)."""
    folder = runs.export_dir(outputs / name, fmt, quant or export.DEFAULT_QUANT[fmt])
    try:
        files = json.loads((folder / runs.EXPORT_JSON).read_text(encoding="utf-8"))["files"]
        return [{"file": f, "size": export.human_size(n)} for f, n in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


@dataclass
class Job:
    """A started command, as `<outputs>/.jobs/<name>.json` records it."""

    name: str
    command: str
    argv: list[str]
    pid: int
    run: str  # the run directory whose train.log gets the output
    started: str
    stop_requested: str | None = None
    returncode: int | None = None  # known when this app process saw it end
    state: str = field(default="", compare=False)  # worked out on load: running, stopping or one of ENDED

    @property
    def run_name(self) -> str:
        return Path(self.run).name


def _path(outputs: Path, name: str) -> Path:
    return outputs / JOBS / f"{name}.json"


def _save(outputs: Path, job: Job) -> None:
    atomic_write_json(_path(outputs, job.name), {k: v for k, v in dataclasses.asdict(job).items() if k != "state"})


def _child_env() -> dict[str, str]:
    """The app's environment with the app's own fastmath first on the path, its output unbuffered
    (the log is read while it grows)."""
    return {**resources.child_env(), "PYTHONUNBUFFERED": "1"}


def start(outputs: Path, plan: Plan, cwd: Path) -> Job:
    """Start the planned command in `cwd` as its own session, its output appended to the run's log."""
    busy = [j for j in load(outputs) if j.run == str(plan.run) and j.state in ("running", "stopping")]
    if busy:
        raise FastmathError(f"{plan.run.name} already has a command running ({busy[0].command}); stop it first")
    plan.run.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(plan.run / runs.LOG, "ab") as log:
        log.write(f"\n$ {plan.shell}\n# started by the app at {runs.now()} in {cwd}\n".encode())
        log.flush()
        process = subprocess.Popen(
            plan.argv, cwd=cwd, env=_child_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    _children[process.pid] = process
    job = Job(f"{stamp}-{process.pid}", plan.command, list(plan.argv), process.pid, str(plan.run), runs.now())
    _save(outputs, job)
    job.state = "running"
    return job


def _alive(job: Job) -> bool:
    """Whether the job's process still runs: its pid exists with the job's own command line (a pid
    is reused once its process is gone; a process that ended but was not yet reaped has no command line)."""
    if job.returncode is not None:
        return False
    try:
        cmdline = Path(f"/proc/{job.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cmdline.split(b"\0")[:-1] == [a.encode() for a in job.argv]


def _reap(outputs: Path, job: Job) -> None:
    """Record the exit status of a process this app started, once it has ended."""
    process = _children.get(job.pid)
    if process is None or job.returncode is not None or (process.poll() is None and _alive(job)):
        return
    with contextlib.suppress(subprocess.TimeoutExpired):  # an ending process loses its command line first
        process.wait(timeout=5)
    if process.returncode is None:
        return
    del _children[job.pid]
    job.returncode = process.returncode
    _save(outputs, job)


def _state(job: Job, newest: bool) -> str:
    """running or stopping while alive; once ended, how: from the exit status when this app process
    saw it, else (it ended while no app watched) from its run's run.json, for the newest job of a
    training run: a run.json still saying `running` means the process died without saying so."""
    if _alive(job):
        return "stopping" if job.stop_requested else "running"
    status = runs.read(job.run).get("status") if job.command in TRAINING and newest else None
    if job.returncode is not None:
        if job.returncode == 0:
            return "stalled" if status == "stalled" else "finished"  # a GRPO run that stopped stalled exits 0
        return "stopped" if job.stop_requested or job.returncode == 130 else "failed"
    if status in (None, "running"):
        return "stopped" if job.stop_requested else "crashed" if status else "ended"
    return status


def _clear_unstarted(outputs: Path, job: Job) -> None:
    """A command that ended before it made its run (no run.json) leaves no run folder behind, which
    no page would list: the folder's log moves to `.jobs/<name>/` (`log_folder`) and the folder goes."""
    run = Path(job.run)
    if _alive(job) or not run.is_dir() or (run / runs.RUN_JSON).exists():
        return
    if any(p.name != runs.LOG for p in run.iterdir()):
        return  # something else in it: not the app's to remove
    with contextlib.suppress(OSError):  # another session of the app got there first
        (outputs / JOBS / job.name).mkdir(parents=True, exist_ok=True)
        os.replace(run / runs.LOG, outputs / JOBS / job.name / runs.LOG)
        run.rmdir()


def log_folder(outputs: Path, job: Job) -> Path:
    """The folder whose train.log holds the job's output: its run's, or the job's own where the command
    ended before it made its run."""
    own = outputs / JOBS / job.name
    return own if (own / runs.LOG).is_file() else Path(job.run)


def started_its_run(job: Job) -> bool:
    """Whether the job's run exists (a command that failed before it made it left none)."""
    return (Path(job.run) / runs.RUN_JSON).is_file()


def load(outputs: Path) -> list[Job]:
    """Every job the app started in `outputs`, newest first, each with its state."""
    jobs = []
    for path in (outputs / JOBS).glob("*.json") if (outputs / JOBS).is_dir() else ():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            jobs.append(Job(**{k: data[k] for k in data if k in Job.__dataclass_fields__}))
        except (OSError, ValueError, TypeError):
            continue  # a job file being written, or not one of ours: not a job to show
    jobs.sort(key=lambda j: (j.started, j.name), reverse=True)
    seen: set[str] = set()
    for job in jobs:
        _reap(outputs, job)
        job.state = _state(job, newest=job.run not in seen)
        if job.state not in ("running", "stopping"):
            _clear_unstarted(outputs, job)
        seen.add(job.run)
    return jobs


def resumable(outputs: Path, job: Job) -> bool:
    """A training job that ended unfinished after it made its run, and its run's newest (else a later
    one continued it)."""
    if job.command not in TRAINING or job.state not in ("stopped", "failed", "crashed") or not started_its_run(job):
        return False
    return next(j for j in load(outputs) if j.run == job.run).name == job.name


def stop(outputs: Path, job: Job, grace_s: float = GRACE_S) -> None:
    """Ctrl-C to the job's process group; SIGTERM and then SIGKILL follow if it has not ended within
    `grace_s` each (a training run killed that way is then marked stopped on its behalf)."""
    if not _alive(job):
        return
    job.stop_requested = runs.now()
    _save(outputs, job)
    os.killpg(job.pid, signal.SIGINT)
    threading.Thread(target=_escalate, args=(outputs, job, grace_s), name=f"stop-{job.pid}", daemon=True).start()


def _ended_within(outputs: Path, job: Job, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _reap(outputs, job)
        if not _alive(job):
            return True
        time.sleep(0.2)
    return False


def _escalate(outputs: Path, job: Job, grace_s: float) -> None:
    if _ended_within(outputs, job, grace_s):
        return  # Ctrl-C did it: a trainer marks its own run stopped
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, sig)
        if _ended_within(outputs, job, grace_s):
            break
    if job.command in TRAINING and runs.read(job.run).get("status") == "running":
        runs.fail(Path(job.run), KeyboardInterrupt())  # killed before it could mark the run itself
