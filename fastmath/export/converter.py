"""llama.cpp's own HF-to-GGUF converter at a pinned release, kept in a cache, run as a subprocess.

Where it comes from: llama.cpp publishes no Python package of its converter, but the sdist of
llama-cpp-python vendors llama.cpp whole, so PyPI (which this project can always reach) carries
it. One pinned sdist, checked by sha256 (pip's `--require-hashes`, then again here), gives
`convert_hf_to_gguf.py`, its `conversion/` package and the matching `gguf-py`. Only those 115
files (2 MB) are kept, in

    $FASTMATH_CACHE or $XDG_CACHE_HOME/fastmath or ~/.cache/fastmath / llama.cpp-<version>/

fetched by `make install` (`python -m fastmath.export.converter`) or on the first GGUF export,
never at import. MANIFEST.json (written last) lists every file's sha256; each use re-checks them.

K-quants (q4_k_m ...) are llama.cpp's quantizer, not its converter: they are made from an f16 GGUF
through libllama's `llama_model_quantize` when llama-cpp-python is installed (the same code as the
`llama-quantize` tool, which a Python install does not ship).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from fastmath.errors import FastmathError
from fastmath.log import log
from fastmath.resources import cache_dir, child_env

LLAMA_CPP_PYTHON = "0.3.36"
SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"  # vendor/llama.cpp in that sdist
MANIFEST = "MANIFEST.json"
_VENDOR = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
_FILES = ("convert_hf_to_gguf.py", "LICENSE", "gguf-py/LICENSE")
_DIRS = ("conversion/", "gguf-py/gguf/")

# The one import of the converter that fastmath itself does not need. Qwen2 is BPE, yet its set_vocab
# imports sentencepiece first and falls back to BPE only when the *file* is missing.
CONVERTER_EXTRA = "sentencepiece"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(dest: Path) -> Path:
    """The pinned sdist, by pip: `--require-hashes` checks it before pip even builds its metadata."""
    requirement = dest / "requirement.txt"
    requirement.write_text(f"llama-cpp-python=={LLAMA_CPP_PYTHON} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes"]
    proc = subprocess.run([*cmd, "-r", str(requirement), "-d", str(dest), "--quiet"], capture_output=True, text=True)
    if proc.returncode != 0 or not (dest / SDIST).is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise FastmathError(
            f"could not download llama-cpp-python {LLAMA_CPP_PYTHON}'s sdist with pip ({last}); check that PyPI "
            f"is reachable, or download {SDIST} elsewhere and run: python -m fastmath.export.converter --sdist FILE"
        )
    return dest / SDIST


def _extract(sdist: Path, out: Path) -> dict[str, str]:
    """The converter's files from the sdist into `out`; their sha256 by relative path."""
    files = {}
    with tarfile.open(sdist) as tar:
        for member in tar:
            rel = member.name.removeprefix(_VENDOR)
            if member.isfile() and member.name.startswith(_VENDOR) and (rel in _FILES or rel.startswith(_DIRS)):
                member.name = rel
                tar.extract(member, out, filter="data")  # no absolute paths, links or devices
                files[rel] = sha256(out / rel)
    if "convert_hf_to_gguf.py" not in files:
        raise FastmathError(f"{sdist} holds no vendor/llama.cpp/convert_hf_to_gguf.py; is it llama-cpp-python's?")
    return files


def _verified(target: Path) -> bool:
    """Whether `target` is a whole converter: its manifest is there and every file still matches it."""
    try:
        manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
        changed = [rel for rel, digest in manifest["files"].items() if sha256(target / rel) != digest]
    except (OSError, ValueError, KeyError):
        return False
    if changed:
        log.warning(f"the llama.cpp converter in {target} was modified ({changed[0]}); fetching it again")
    return not changed


def fetch(cache: Path | None = None, sdist: Path | None = None) -> Path:
    """The converter's folder in the cache, downloaded (or taken from `sdist`) and extracted once.

    Extraction goes to a temporary folder renamed into place, so a killed fetch leaves no half
    converter behind and two fetches at once both end with a whole one.
    """
    target = (cache or cache_dir()) / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if _verified(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"fetching llama.cpp's converter (llama-cpp-python {LLAMA_CPP_PYTHON} sdist) into {target}")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        source = sdist or _download(Path(tmp))
        if (got := sha256(source)) != SDIST_SHA256:
            raise FastmathError(f"{source} has sha256 {got}, not llama-cpp-python {LLAMA_CPP_PYTHON}'s {SDIST_SHA256}")
        out = Path(tmp) / "llama.cpp"
        files = _extract(source, out)
        (out / MANIFEST).write_text(json.dumps({**provenance(), "files": files}, indent=1))
        if target.exists():  # a half-made or modified copy: moved aside, it goes with the temporary folder
            target.rename(Path(tmp) / "stale")
        try:
            out.rename(target)
        except OSError:  # another fetch finished first
            if not _verified(target):
                raise
    return target


def provenance() -> dict[str, str]:
    """What export.json records about the converter."""
    return {"llama_cpp_python": LLAMA_CPP_PYTHON, "sdist_sha256": SDIST_SHA256, "llama_cpp_commit": LLAMA_CPP_COMMIT}


def check_imports() -> None:
    """The converter's extra import, checked before a long merge rather than after it."""
    if importlib.util.find_spec(CONVERTER_EXTRA) is None:
        raise FastmathError(f"llama.cpp's converter needs {CONVERTER_EXTRA}: pip install -r requirements.txt")


def convert(converter: Path, model_dir: Path, out: Path, outtype: str, pre_tokenizer: str | None) -> dict:
    """One GGUF file from a Hugging Face model directory; returns the runner's report (the pre-tokenizer).

    convert.log (the converter's output) is left beside `out`.
    """
    report, log_path = out.with_suffix(".report.json"), out.parent / "convert.log"
    cmd = [sys.executable, "-m", "fastmath.export.convert_runner", "--converter-dir", str(converter)]
    cmd += ["--report", str(report), *(["--pre-tokenizer", pre_tokenizer] if pre_tokenizer else [])]
    cmd += ["--", str(model_dir), "--outtype", outtype, "--outfile", str(out)]
    env = {k: v for k, v in child_env().items() if k != "NO_LOCAL_GGUF"}  # the converter needs its own gguf-py
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with open(log_path, "w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    if proc.returncode != 0:
        ours = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        reason = ours[-1] if ours else f"{(lines or ['no output'])[-1].strip()} (exit {proc.returncode})"
        raise FastmathError(f"llama.cpp's converter failed: {reason}")
    result = json.loads(report.read_text(encoding="utf-8"))
    report.unlink()
    return result


def quantizer() -> dict[str, str] | None:
    """What makes K-quants here (None: nothing; llama-cpp-python is not installed)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    return {"llama_cpp_python": metadata.version("llama_cpp_python")}


def quantize(source: Path, out: Path, quant: str) -> None:
    """A K-quant GGUF from an f16 one, by libllama's llama_model_quantize (what llama-quantize runs)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise FastmathError(f"llama.cpp could not quantize {source.name} to {quant}")


def main(argv: list[str] | None = None) -> int:
    """`python -m fastmath.export.converter [--sdist FILE]`: fetch the converter now (make install does)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fastmath.export.converter", description=main.__doc__)
    parser.add_argument("--sdist", type=Path, help=f"a local {SDIST} instead of downloading it")
    args = parser.parse_args(argv)
    try:
        print(fetch(sdist=args.sdist))
    except FastmathError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
