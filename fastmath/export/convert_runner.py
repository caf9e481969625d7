"""Run llama.cpp's convert_hf_to_gguf.py, unmodified, with one explicit and checked extension.

    python -m fastmath.export.convert_runner --converter-dir DIR [--pre-tokenizer qwen2] --report FILE \
        -- MODEL_DIR --outtype f16 --outfile OUT.gguf

It runs in a subprocess of its own (`fastmath.export.converter.convert`): the converter must import
its own gguf-py, which is newer than PyPI's `gguf` of the same version number, and that copy must
never reach the main process, where transformers reads GGUF files through PyPI's.

The extension: llama.cpp names the pre-tokenizer by a hash over token ids, which a home-trained
vocabulary never matches. A declared `--pre-tokenizer` is used only when the converter's own table
does not know the hash, and only after `pretokenizer.check` passes on both the tokenizer the
converter loaded and the tokenizer.json on disk. A known hash always wins; a known hash that names
another pre-tokenizer than the declared one is an error. The report says which happened.
"""

from __future__ import annotations

import argparse
import ast
import json
import runpy
import sys
from pathlib import Path

from fastmath.errors import FastmathError
from fastmath.export import pretokenizer


def _check_text(base_module) -> str:
    """The converter's own `chktxt` (a local of TextModel.get_vocab_base_pre), read from its source."""
    tree = ast.parse(Path(base_module.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "get_vocab_base_pre":
            for assign in ast.walk(node):
                if isinstance(assign, ast.Assign) and getattr(assign.targets[0], "id", None) == "chktxt":
                    return ast.literal_eval(assign.value)
    raise FastmathError(f"chktxt not found in {base_module.__file__}: the converter's layout changed")


def declare_pre_tokenizer(declared: str | None, report: dict) -> None:
    """Wrap the converter's TextModel.get_vocab_base_pre as the module docstring says; fill `report`."""
    from conversion import base  # the converter's package, from --converter-dir

    original = base.TextModel.get_vocab_base_pre
    chktxt = _check_text(base)

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            known = original(self, tokenizer)
        except NotImplementedError:
            if declared is None:
                raise FastmathError(
                    "llama.cpp does not recognise this tokenizer's pre-tokenizer (its hash covers the vocabulary, "
                    "so a home-trained one is never known); if it splits text like Qwen2's, declare it with "
                    "--pre-tokenizer qwen2 (checked against Qwen2's before it is used)"
                ) from None
            # What the converter hashed (transformers' tokenizer for the directory) ...
            pretokenizer.check(json.loads(tokenizer.backend_tokenizer.to_str()), declared, chktxt)
            # ... and the file other runtimes read as it is.
            on_disk = Path(self.dir_model) / "tokenizer.json"
            if on_disk.is_file():
                pretokenizer.check(json.loads(on_disk.read_text(encoding="utf-8")), declared, chktxt)
            base.logger.warning(
                f"fastmath: tokenizer hash unknown to llama.cpp; pre-tokenizer declared {declared!r} and checked "
                f"against {declared}'s tokenizer.json: tokenizer.ggml.pre = {declared!r}"
            )
            report.update(pre_tokenizer=declared, declared=True)
            return declared
        if declared is not None and known != declared:
            raise FastmathError(f"llama.cpp recognises this tokenizer as {known!r}, not the declared {declared!r}")
        report.update(pre_tokenizer=known, declared=False)
        return known

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmath.export.convert_runner")
    parser.add_argument("--converter-dir", required=True, type=Path)
    parser.add_argument("--pre-tokenizer", choices=pretokenizer.DECLARABLE)
    parser.add_argument("--report", required=True, type=Path)
    args, rest = parser.parse_known_args(argv)
    script = args.converter_dir / "convert_hf_to_gguf.py"
    # The converter puts its gguf-py on sys.path itself; do it before importing `conversion` too, so an
    # installed PyPI gguf is never picked up.
    sys.path[:0] = [str(args.converter_dir), str(args.converter_dir / "gguf-py")]
    report: dict = {}
    try:
        declare_pre_tokenizer(args.pre_tokenizer, report)
        sys.argv = [str(script), *(rest[1:] if rest[:1] == ["--"] else rest)]
        runpy.run_path(str(script), run_name="__main__")
    except FastmathError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.report.write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
