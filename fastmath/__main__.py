"""`python -m fastmath <command> ...`: dispatch to a command module, imported only when chosen.

Lazy imports keep `grade` and `--help` fast, and let the training commands import Unsloth
before trl/transformers when they run on the GPU path.
"""

from __future__ import annotations

import importlib
import sys

from fastmath.errors import FastmathError

# command -> (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "tiny-model": ("fastmath.tiny", "build a tiny Qwen2-architecture model and tokenizer, offline"),
    "sft": ("fastmath.sft", "supervised fine-tuning (LoRA/QLoRA) from a recipe"),
    "dpo": ("fastmath.dpo", "DPO alignment of an SFT run's adapter"),
    "pairs": ("fastmath.pairs", "mine preference pairs from an SFT model's own solutions"),
    "eval": ("fastmath.evaluate", "evaluate a model/adapter on GSM8K or MGSM under prompt strategies"),
    "prompts": ("fastmath.evaluate", "compare every prompt strategy in one table"),
    "grade": ("fastmath.grading", "re-grade a JSONL file of completions"),
    "solve": ("fastmath.solve", "answer math problems in the terminal"),
    "quickstart": ("fastmath.quickstart", "tiny model -> SFT -> pairs -> DPO -> eval, offline on CPU"),
    "latest-run": ("fastmath.rundir", "print the newest run directory of a stage"),
}


def usage() -> str:
    lines = ["usage: python -m fastmath <command> [args...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(rest) if name != "prompts" else module.main_prompts(rest)
    except FastmathError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
