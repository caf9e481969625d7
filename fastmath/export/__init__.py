"""`python -m fastmath export RUN --format merged|gguf [--quant Q] [--output DIR] [--force]`.

- merged: the base model with the run's adapter merged in, 16-bit (bf16 by default, or f16), with
  the base's tokenizer, chat template, generation_config and EOS ids: for transformers and vLLM.
- gguf: llama.cpp's own converter at a pinned release (`converter`) on an fp32 merge, in f16 (the
  default), bf16 or q8_0; K-quants when llama-cpp-python is installed. An Ollama `Modelfile`
  goes beside it (`modelfile`).

What can be checked first is, before anything is loaded or written: the run and its adapter, the
base model, the quant, the output folder, the converter, and the free space for the export at its
peak (the merged intermediate and the GGUF at once). The export is built in a hidden folder beside
the target and renamed into place when whole, so a later failure (the tokenizer's pre-tokenizer is
checked only by the converter, after the merge) or a kill leaves nothing behind that looks
finished. This module imports no torch: the app lists exports through it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastmath import card, runs
from fastmath.errors import FastmathError
from fastmath.export.pretokenizer import DECLARABLE
from fastmath.log import log

FORMATS = ("merged", "gguf")
CONVERTER_QUANTS = ("f16", "bf16", "q8_0")  # written by llama.cpp's convert_hf_to_gguf.py itself
K_QUANTS = ("q4_k_m", "q5_k_m", "q6_k")  # llama.cpp's quantizer, from an f16 GGUF
QUANTS = {"merged": ("bf16", "f16"), "gguf": (*CONVERTER_QUANTS, *K_QUANTS)}
DEFAULT_QUANT = {"merged": "bf16", "gguf": "f16"}
# Bytes per parameter of each precision; K-quants at most 8 bits (q6_k is 6.56, tensors kept finer included).
BYTES_PER_PARAM = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, **dict.fromkeys(K_QUANTS, 1.0)}


def human_size(n: float) -> str:
    """Bytes for people: 812 B, 1.4 MB, 15.2 GB."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def export_command(run: Path, fmt: str = "gguf", quant: str | None = None, **options: str | bool | None) -> str:
    """The command line that exports `run` (options: output, pre_tokenizer, force)."""
    words = ["python", "-m", "fastmath", "export", str(run), "--format", fmt, "--quant", quant or DEFAULT_QUANT[fmt]]
    for name, value in options.items():
        if value:
            words += [f"--{name.replace('_', '-')}", *([] if value is True else [str(value)])]
    return shlex.join(words)


def exports(run: Path) -> list[dict[str, str]]:
    """The run's finished exports, one row each (format, quant, size, made, folder), for the app."""
    rows = []
    for folder in runs.export_dirs(run):
        try:
            record = json.loads((folder / runs.EXPORT_JSON).read_text(encoding="utf-8"))
            size = human_size(sum(record["files"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not an export fastmath wrote whole
        rows.append(
            {
                "format": record.get("format"),
                "quant": record.get("quant"),
                "size": size,
                "made": record.get("date"),
                "folder": str(folder),
            }
        )
    return rows


def _check_choice(value: str, allowed: tuple[str, ...], flag: str, where: str = "") -> str:
    if value not in allowed:
        raise FastmathError(f"{flag} {value!r} is not supported{where}: use one of {', '.join(allowed)}")
    return value


def _check_quant(fmt: str, quant: str) -> None:
    _check_choice(quant, QUANTS[fmt], "--quant", f" for --format {fmt}")
    if quant in K_QUANTS:
        from fastmath.export.converter import quantizer

        if quantizer() is None:
            raise FastmathError(
                f"--quant {quant} needs llama.cpp's quantizer, which fastmath reaches through llama-cpp-python: "
                "pip install llama-cpp-python==0.3.36 (a long build), or use --quant q8_0"
            )


def _check_output(out: Path, force: bool) -> None:
    """An output folder must be new or empty, or (with --force) hold an earlier export, nothing else."""
    if out.exists() and not out.is_dir():
        raise FastmathError(f"--output {out} is a file; give a folder")
    if os.path.ismount(out):
        raise FastmathError(f"--output {out} is a mount point; give a folder inside it")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / runs.EXPORT_JSON).is_file():
        raise FastmathError(f"{out} is not empty and holds no fastmath export; give a new or empty folder as --output")
    if not force:
        raise FastmathError(f"{out} already holds an export; pass --force to replace it, or give another --output")


def peak_bytes(params: int, fmt: str, quant: str, base_files: int) -> int:
    """Disk an export needs at its peak: the merged model (fp32 when it is a GGUF's source), the f16 GGUF
    a K-quant is made from, the output, the base's small files (tokenizer ...) twice; 5% + 1 MB spare."""
    per_param = BYTES_PER_PARAM[quant]
    if fmt == "gguf":
        per_param += BYTES_PER_PARAM["f32"] + (BYTES_PER_PARAM["f16"] if quant in K_QUANTS else 0)
    return int((params * per_param + 2 * base_files) * 1.05) + 1_000_000


def check_space(out: Path, need: int) -> None:
    """Refuse an export that the disk under `out` cannot hold (checked before anything is written)."""
    existing = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if need > free:
        raise FastmathError(
            f"not enough disk space for this export in {existing}: it needs about {human_size(need)} at its peak, "
            f"{human_size(free)} is free; free some space or give --output on a larger disk"
        )


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A hidden folder beside `out` to build the export in, renamed onto `out` when the block succeeds.

    On any error it is removed (with a parent folder it had to create), so nothing half-made is left;
    an earlier export in `out` (--force) is replaced only at the end.
    """
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.is_dir() and any(out.iterdir()):
            out.rename(old)
        tmp.replace(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # innermost first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def main(inv) -> int:
    """Check everything, merge in fp32, write the format, record export.json (see the module docstring)."""
    from fastmath.export import converter, merge
    from fastmath.models import check_adapter

    args, run = inv.args, inv.parent
    fmt = _check_choice(args.format, FORMATS, "--format")
    quant = args.quant or DEFAULT_QUANT[fmt]
    _check_quant(fmt, quant)
    if args.pre_tokenizer is not None:
        _check_choice(args.pre_tokenizer, DECLARABLE, "--pre-tokenizer")
    out = Path(args.output).expanduser() if args.output else runs.export_dir(run, fmt, quant)
    _check_output(out, args.force)
    check_adapter(run)
    cfg = runs.model_settings(run)
    if fmt == "gguf":
        converter.check_imports()
        converter_dir = converter.fetch()
    try:
        base = merge.base_dir(cfg)
    except FastmathError as e:
        raise FastmathError(f"{run.name}'s base model: {e}") from None
    base_files = sum((base / f).stat().st_size for f in merge.BASE_FILES if (base / f).is_file())
    params = merge.parameter_count(base)
    if params is not None:
        check_space(out, peak_bytes(params, fmt, quant, base_files))

    started = time.monotonic()
    log.info(f"merging {run.name}'s adapter into {cfg.name} in fp32")
    model = merge.merged_model(run, base)
    if params is None:  # weights without safetensors headers: counted once loaded, still before writing
        params = model.num_parameters()
        check_space(out, peak_bytes(params, fmt, quant, base_files))
    record: dict[str, Any] = {"format": fmt, "quant": quant, "run": str(run), "base_model": cfg.name}
    with staging(out) as tmp:
        merge.save(model, base, tmp if fmt == "merged" else tmp / "merged", quant if fmt == "merged" else "f32")
        del model
        if fmt == "gguf":
            record.update(_gguf(tmp, run, quant, converter_dir, args.pre_tokenizer))
        card.write_export(tmp, run, record)
        record.update(
            files={p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()},
            parameters=params,
            seconds=round(time.monotonic() - started, 1),
            command=export_command(
                run, fmt, quant, output=args.output, pre_tokenizer=args.pre_tokenizer, force=args.force
            ),
            date=runs.now(),
            libraries=runs.library_versions(),
        )
        (tmp / runs.EXPORT_JSON).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info(f"exported {run.name} as {fmt} {quant} to {out} ({human_size(sum(record['files'].values()))})")
    return 0


def _gguf(tmp: Path, run: Path, quant: str, converter_dir: Path, pre_tokenizer: str | None) -> dict[str, Any]:
    """The GGUF (and Modelfile) from the fp32 merge in tmp/merged, which is then removed."""
    from fastmath.export import converter, modelfile

    merged, name = tmp / "merged", f"{run.name}-{quant}.gguf"
    record: dict[str, Any] = {"converter": converter.provenance()}
    if quant in K_QUANTS:
        f16 = tmp / f"{run.name}-f16.gguf"
        record["pre_tokenizer"] = converter.convert(converter_dir, merged, f16, "f16", pre_tokenizer)
        converter.quantize(f16, tmp / name, quant)
        f16.unlink()
        record["quantizer"] = converter.quantizer()
    else:
        record["pre_tokenizer"] = converter.convert(converter_dir, merged, tmp / name, quant, pre_tokenizer)
    if record["pre_tokenizer"]["declared"]:
        log.warning(
            f"llama.cpp does not know this tokenizer's hash; its pre-tokenizer was declared "
            f"{pre_tokenizer!r}, checked against {pre_tokenizer}'s and written as tokenizer.ggml.pre"
        )
    modelfile.write(tmp, name, merged, run)
    shutil.rmtree(merged)
    return record
