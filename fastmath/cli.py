"""The command line: `python -m fastmath <command> [RECIPE] [section.key=value ...] [--flags]`.

One dialect for every command. A command that trains or evaluates takes a recipe (a YAML file
or a shipped recipe's name), `section.key=value` overrides, and flags that are aliases of recipe
keys (`--samples 50` is `eval.samples=50`), all checked by the same code in `config`; its
`--help` lists every key it reads with its type, default and meaning, from the recipe
dataclasses' metadata.

Order matters on the way in, and is kept here rather than by where modules put their imports:
1. parse and check everything the user typed, and find the run a command continues (its adapter,
   base model and system prompt come from there: `runs.model_settings`), all without importing
   torch, transformers or trl, so a typo fails in a fraction of a second;
2. resolve the model backend and, for Unsloth, import it, before anything imports trl or transformers;
3. only then import the command's module and run it.
A `FastmathError` anywhere is printed as one line and exits 2; a full disk is one line naming the
folder and exits 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastmath import config, log, resources, runs, stages, tasks, trackers
from fastmath.config import Recipe
from fastmath.errors import FastmathError
from fastmath.io import DiskFull, is_disk_full
from fastmath.stages import Option


@dataclass
class Invocation:
    """What a command runs with, everything already checked."""

    args: argparse.Namespace
    recipe: Recipe | None = None
    backend: str | None = None
    parent: Path | None = None  # the run whose adapter this command continues or loads
    resume: Path | None = None


def _continued(stage: stages.Stage) -> Callable[[Invocation], Path | None]:
    """How `stage` finds the run it continues: its recipe key naming one, else the newest finished
    run of its parent stage; none when its fresh key is set."""

    def parent(inv: Invocation) -> Path | None:
        assert inv.recipe is not None and stage.parent is not None
        if stage.fresh_key is not None and _value(inv.recipe, stage.fresh_key):
            return None
        named = _value(inv.recipe, stage.parent_key) if stage.parent_key else None
        return runs.parent_run(named, inv.recipe.training.output_dir, stage.parent)

    return parent


def _value(recipe: Recipe, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(recipe, section), name)


def _adapter_to_load(inv: Invocation) -> Path | None:
    """eval/prompts: --lora RUN, or the newest finished SFT run; none with --model alone."""
    lora, root = inv.args.lora, inv.recipe.training.output_dir  # type: ignore[union-attr]
    if lora is None and inv.args.model is not None:
        return None
    if lora in (None, "latest"):
        try:
            return runs.latest(root, "sft")
        except FastmathError:
            raise FastmathError(
                f"no finished SFT run in {root}/ to evaluate: pass --model M for a base model, "
                "or --lora RUN for an adapter (`make sft` trains one)"
            ) from None
    return runs.adapter_run(lora, root)


def _adapter_to_solve(inv: Invocation) -> Path | None:
    """solve: --lora RUN, or the newest finished run with an adapter; none with --model alone."""
    root = inv.recipe.training.output_dir  # type: ignore[union-attr]
    if inv.args.lora:
        return runs.adapter_run(inv.args.lora, root)
    if inv.args.model:
        return None
    finished = [p for p in runs.list_runs(root) if (p / runs.ADAPTER).is_file() and runs.is_finished(p)]
    if not finished:
        raise FastmathError(
            f"no finished run with an adapter in {root}/: pass --model (and --lora RUN), or train one with `make sft`"
        )
    return finished[-1]


@dataclass(frozen=True)
class Command:
    """One command: where it lives, what it reads, and how it finds the run it continues."""

    name: str
    target: str  # "module:function", imported only after the backend is active
    help: str
    stage: str | None = None  # recipe sections it reads (config.stage_sections); None: takes no recipe
    recipe: str | None = None  # shipped recipe used when none is given
    recipe_arg: bool = True  # takes a RECIPE argument (solve's positional is the question instead)
    loads_model: bool = False
    resumable: bool = False
    options: tuple[Option, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)  # recipe keys this command sets before overrides
    parent: Callable[[Invocation], Path | None] | None = None


RESUME = Option(("--resume",), "continue this run from its last checkpoint", kwargs={"metavar": "RUN_DIR"})
OUTPUT_DIR = Option(("--output-dir",), "where runs live", key="training.output_dir")
MODEL = Option(("--model",), "base model, hub id or local dir (default: the adapter run's)", key="model.name")
LORA = Option(("--lora",), "adapter: a run directory or a run name in --output-dir", kwargs={"metavar": "RUN"})
MAX_NEW = Option(("--max-new-tokens",), "longest answer in tokens", key="eval.max_new_tokens")
UNSAFE_HELP = "run pot without bubblewrap: model-written code then runs as you, held by an in-process guard only"
UNSAFE = Option(
    ("--unsafe-no-os-sandbox",),
    UNSAFE_HELP,
    key="eval.unsafe_no_os_sandbox",
    kwargs={"action": "store_const", "const": True, "metavar": None},
)
DATASET = Option(
    ("--dataset",),
    "tasks (gsm8k, svamp, cmath, ...), task .yaml files or data FILEs, comma-separated",
    key="eval.datasets",
)
EVAL_TAIL = (
    Option(("--samples",), "first N problems of each dataset", key="eval.samples"),
    Option(("--batch-size",), "prompts per batch (default: automatic)", key="eval.batch_size"),
    MAX_NEW,
    OUTPUT_DIR,
    Option(
        ("--data-dir",),
        "local benchmark copies (DIR/gsm8k/test.jsonl ...; default $FASTMATH_DATA_DIR)",
        kwargs={"type": Path},
    ),
    Option(("--fresh",), "redo problems already in the results files", kwargs={"action": "store_true"}),
    UNSAFE,
    *stages.FIELD_OPTIONS,
)
EVAL_OPTIONS = (
    MODEL,
    LORA,
    DATASET,
    Option(("--strategies",), "prompt strategies, comma-separated", key="eval.strategies"),
    *EVAL_TAIL,
)

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "tiny-model",
            "fastmath.tiny:main",
            "build a tiny Qwen2-architecture model and tokenizer, offline",
            options=(
                Option(("out_dir",), "directory to write the model to, e.g. models/tiny-qwen2"),
                Option(("--hidden-size",), "hidden size", kwargs={"type": int, "default": 128}),
                Option(("--layers",), "transformer layers", kwargs={"type": int, "default": 2}),
                Option(("--vocab-size",), "BPE vocabulary size", kwargs={"type": int, "default": 2048}),
                Option(("--seed",), "weight init seed", kwargs={"type": int, "default": 0}),
            ),
        ),
        Command(
            "eval",
            "fastmath.eval.evaluate:main",
            "evaluate a model/adapter on benchmark tasks or data files under prompt strategies",
            stage="eval",
            loads_model=True,
            options=EVAL_OPTIONS,
            parent=_adapter_to_load,
        ),
        Command(
            "prompts",
            "fastmath.eval.evaluate:main",
            "compare every prompt strategy in one table",
            stage="eval",
            loads_model=True,
            options=EVAL_OPTIONS,
            defaults={"eval.strategies": list(config.strategy_names())},
            parent=_adapter_to_load,
        ),
        Command(
            "suite",
            "fastmath.eval.suite:main",
            "every benchmark (or --dataset list) with one strategy: accuracy, 95% CI and n in one table",
            stage="eval",
            loads_model=True,
            options=(
                MODEL,
                LORA,
                DATASET,
                Option(("--strategy",), "prompt strategy", key="eval.strategies"),
                *EVAL_TAIL,
            ),
            defaults={"eval.datasets": tasks.names()},
            parent=_adapter_to_load,
        ),
        Command(
            "solve",
            "fastmath.eval.solve:main",
            "answer math problems in the terminal, streamed",
            stage="eval",
            loads_model=True,
            options=(
                Option(
                    ("question",), "answer this one problem and exit (default: ask in a loop)", kwargs={"nargs": "?"}
                ),
                MODEL,
                LORA,
                Option(("--strategy",), "prompt strategy", key="eval.strategies"),
                MAX_NEW,
                OUTPUT_DIR,
                UNSAFE,
            ),
            recipe_arg=False,
            defaults={"eval.strategies": ["zero_shot"]},
            parent=_adapter_to_solve,
        ),
        Command(
            "grade",
            "fastmath.commands:grade",
            "re-grade a JSONL file of completions",
            options=(
                Option(("input",), "JSONL: 'completion', 'answer' (number or '... #### N')", kwargs={"type": Path}),
                Option(("--output",), "graded JSONL (default: INPUT.graded.jsonl)", kwargs={"type": Path}),
            ),
        ),
        Command(
            "sandbox",
            "fastmath.commands:sandbox",
            "run a Python program exactly as program-of-thought does; print the result as JSON",
            options=(
                Option(("program",), "the .py file", kwargs={"type": Path}),
                Option(("--timeout",), "seconds", kwargs={"type": float, "default": 5.0}),
                Option(("--memory-mb",), "address-space limit", kwargs={"type": int, "default": 256}),
                Option(UNSAFE.flags, UNSAFE_HELP, kwargs={"action": "store_true"}),
            ),
        ),
        Command(
            "quickstart",
            "fastmath.quickstart:main",
            "tiny model -> SFT -> pairs -> DPO -> GRPO -> eval, offline on CPU",
            options=(
                Option(("--outputs",), "where the runs go", kwargs={"type": Path, "default": Path("outputs")}),
                Option(("--model",), "tiny model dir", kwargs={"type": Path, "default": Path("models/tiny-qwen2")}),
                Option(("--max-new-tokens",), "answer length", kwargs={"type": int, "default": 200}),
                Option(
                    ("--backend",),
                    "model.backend of every stage (default: the tiny recipes' hf)",
                    kwargs={"choices": ["auto", "unsloth", "hf"]},
                ),
            ),
        ),
        Command(
            "export",
            "fastmath.export:main",
            "a run's adapter merged into its base: 16-bit for transformers/vLLM, or GGUF (+ Ollama Modelfile)",
            options=(
                Option(("run",), "a run directory, or a run name in --output-dir", kwargs={"metavar": "RUN"}),
                Option(("--format",), "merged or gguf", kwargs={"required": True}),
                Option(("--quant",), "merged: bf16 (default), f16; gguf: f16 (default), bf16, q8_0, q4_k_m ..."),
                Option(("--output",), "folder to write (default <run>/exports/<format>-<quant>/)"),
                Option(
                    ("--pre-tokenizer",),
                    "declare the tokenizer's pre-tokenizer (qwen2) when llama.cpp's hash does not know it; checked",
                ),
                Option(("--force",), "replace an earlier export in the output folder", kwargs={"action": "store_true"}),
                Option(("--output-dir",), "where runs live", kwargs={"default": "outputs"}),
            ),
            parent=lambda inv: runs.adapter_run(inv.args.run, inv.args.output_dir),
        ),
        Command(
            "latest-run",
            "fastmath.runs:print_latest",
            "print the newest finished run directory of a stage",
            options=(
                Option(
                    ("stage",),
                    "a stage that trains: " + ", ".join(stages.training()),
                    kwargs={"choices": stages.training()},
                ),  # fmt: skip
                Option(("--output-dir",), "where runs live", kwargs={"default": "outputs"}),
            ),
        ),
    )
}


def _stage_command(stage: stages.Stage) -> Command:
    """A stage's command, from its record."""
    return Command(
        stage.name, stage.target, stage.help, stage=stage.name, recipe=stage.recipe, loads_model=True,
        resumable=stage.trains, options=stage.options, parent=_continued(stage) if stage.parent else None,
    )  # fmt: skip


# The stages' commands first (the registry's order), then the others.
COMMANDS = {**{s.name: _stage_command(s) for s in stages.registry().values()}, **COMMANDS}

# The seed project's flags, kept as aliases so old commands keep working.
SEED_ALIASES = {
    "--model_name": "model.name",
    "--output_dir": "training.output_dir",
    "--epochs": "training.num_epochs",
    "--batch_size": "training.batch_size",
    "--learning_rate": "training.learning_rate",
}


def usage() -> str:
    lines = ["usage: python -m fastmath <command> [args...]   (python -m fastmath <command> --help)", "", "commands:"]
    lines += [f"  {c.name:<11} {c.help}" for c in COMMANDS.values()]
    return "\n".join(lines)


def keys_help(command: Command) -> str:
    """Every recipe key the command reads: `section.key  type = default  meaning [allowed]`."""
    assert command.stage is not None
    lines = ["recipe keys (section.key=value; YAML values):"]
    for name, f, hint in config.keys(config.stage_sections(command.stage), command.stage):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        allowed = config.choices(f) or (f"{f.metadata['range']}" if f.metadata["range"] else "")
        extra = f" [{', '.join(allowed) if isinstance(allowed, tuple) else allowed}]" if allowed else ""
        shown = f"{config.type_name(hint)} = {config.value_text(default)}"
        lines.append(f"  {name}  ({shown})  {f.metadata['help']}{extra}")
    return "\n".join(lines)


def parser(command: Command) -> argparse.ArgumentParser:
    epilog = keys_help(command) if command.stage else None
    p = argparse.ArgumentParser(
        prog=f"python -m fastmath {command.name}",
        description=command.help,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    if command.stage and command.recipe_arg:
        default = f"default: {command.recipe}" if command.recipe else "default: none, the keys' defaults"
        p.add_argument("recipe", nargs="?", help=f"YAML file or shipped recipe name ({default})")
    if command.resumable:
        p.add_argument(*RESUME.flags, help=RESUME.help, **RESUME.kwargs)
    for option in command.options:
        kwargs: dict[str, Any] = {"metavar": option.key.split(".")[-1].upper()} if option.key else {}
        kwargs = {k: v for k, v in {**kwargs, **option.kwargs}.items() if v is not None}
        p.add_argument(*option.flags, help=option.help, **kwargs)
    return p


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`key=value` pairs and the seed's `--flag value` aliases; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    it = iter(args)
    for arg in it:
        if arg in SEED_ALIASES:
            raw = next(it, None)
            if raw is None:
                raise FastmathError(f"{arg} needs a value, e.g. {arg} 1")
            name = SEED_ALIASES[arg]
        elif "=" in arg and not arg.startswith("-"):
            name, raw = arg.split("=", 1)
        else:
            raise FastmathError(
                f"cannot read argument {arg!r}: use section.key=value (e.g. training.num_epochs=1), "
                "or see --help for the flags"
            )
        out[name] = yaml.safe_load(raw) if raw != "" else None
    return out


def _inherit(inv: Invocation, typed: dict[str, Any]) -> None:
    """Take the model, load settings and system prompt from the run being continued.

    An adapter fits only the base model it was trained on, and answers best to the prompt it was
    trained with; a DPO run also keeps its parent's LoRA shape. Keys typed on the command line
    still win, except the base model of a run that continues training.
    """
    assert inv.recipe is not None and inv.parent is not None
    trained = runs.saved_recipe(inv.parent) if (inv.parent / runs.RECIPE).is_file() else None
    inv.recipe.model = runs.model_settings(inv.parent)
    if trained is not None:
        inv.recipe.data.system_prompt = trained.data.system_prompt
        inv.recipe.lora = trained.lora
    keep = {k: v for k, v in typed.items() if k.startswith(("model.", "data.system_prompt", "lora."))}
    if inv.args.command in stages.registry():  # a stage continues training the parent's adapter
        keep = {k: v for k, v in keep.items() if k not in ("model.name", "lora.r", "lora.alpha")}
    for name, value in keep.items():
        config.apply(inv.recipe, name, value)


def prepare(command: Command, argv: list[str]) -> Invocation:
    """Step 1: parse and check the command line, find the run it continues; no heavy imports."""
    args, rest = parser(command).parse_known_args(argv)
    if command.stage is None:
        if rest:
            raise FastmathError(f"unexpected arguments {' '.join(rest)}; see python -m fastmath {command.name} --help")
        inv = Invocation(args)
        inv.parent = command.parent(inv) if command.parent is not None else None
        return inv
    args.recipe = getattr(args, "recipe", None)
    if args.recipe and "=" in args.recipe:  # `sft key=value` with no recipe file
        rest.insert(0, args.recipe)
        args.recipe = None
    typed = parse_overrides(rest)
    for option in command.options:
        value = getattr(args, _dest(option)) if option.key else None
        if option.key is not None and value is not None:
            typed[option.key] = _flag_value(option, value)
    return _resolve(command, args, typed)


def invocation(name: str, recipe: str | None = None, overrides: dict[str, Any] | None = None, **options) -> Invocation:
    """What `python -m fastmath NAME [RECIPE] [key=value ...]` would run with, for programs (bench)."""
    command = COMMANDS[name]
    args = parser(command).parse_args([])
    args.recipe = recipe
    for option, value in options.items():
        setattr(args, option, value)
    return _resolve(command, args, dict(overrides or {}))


def _resolve(command: Command, args: argparse.Namespace, typed: dict[str, Any]) -> Invocation:
    """The recipe (given, shipped default, or the run being resumed) with the typed keys, checked,
    and the run the command continues, whose model settings it takes."""
    args.command = command.name
    inv = Invocation(args)
    if getattr(args, "resume", None):
        if typed or args.recipe:
            raise FastmathError("--resume continues a run exactly as recorded; drop the recipe and key=value overrides")
        inv.resume = runs.find(args.resume, ".")
        inv.recipe = runs.saved_recipe(inv.resume)
    else:
        name = args.recipe or command.recipe
        inv.recipe = config.load_recipe(resources.recipe_path(name) if name else None, {**command.defaults, **typed})
    config.validate(inv.recipe, command.stage)  # type: ignore[arg-type]
    if command.stage in stages.training():  # a training stage: its trackers must be able to log
        trackers.check(inv.recipe.training.report_to, inv.recipe.training.output_dir)
    if command.parent is not None:
        inv.parent = command.parent(inv)
        if inv.parent is not None:
            _inherit(inv, typed)
    return inv


def execute(command: Command, inv: Invocation) -> int:
    """Steps 2 and 3: the backend (Unsloth imported first), then the command's own module."""
    if command.loads_model:
        from fastmath.models import ready_backend

        inv.backend = ready_backend(inv.recipe.model)  # type: ignore[union-attr]
    module, _, function = command.target.partition(":")
    return getattr(importlib.import_module(module), function)(inv) or 0


def _dest(option: Option) -> str:
    return option.flags[-1].lstrip("-").replace("-", "_")


def _flag_value(option: Option, raw: str) -> Any:
    """A flag's text as its recipe key's value (`--samples 50` -> 50, `--strategy cot` -> [cot])."""
    value = yaml.safe_load(raw) if isinstance(raw, str) else raw
    return str(raw) if option.key in ("model.name", "training.output_dir") else value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    log.setup()
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    try:
        return execute(command, prepare(command, rest))
    except DiskFull as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except FastmathError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a full disk under a library's own write (torch's checkpoints, safetensors)
        if not is_disk_full(e):
            raise
        folder = Path(e.filename).parent if isinstance(e, OSError) and e.filename else Path.cwd()
        print(f"error: {DiskFull(folder, None)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
