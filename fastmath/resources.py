"""Files shipped inside the package: the recipes and the sample problems.

They are package data, read through `importlib.resources`, so `pip install .` works from any
folder: `python -m fastmath sft tiny-sft` finds the shipped recipe, and a recipe names a shipped
file as `fastmath:samples/sample_english_math.json`. In a checkout, `recipes/` and `data/` are
links to the same folders, so `make sft RECIPE=recipes/tiny-sft.yaml` keeps working.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from fastmath.errors import FastmathError

SCHEME = "fastmath:"  # a file shipped in the package: `fastmath:samples/x.json`


def package_dir() -> Path:
    """The installed package's folder (fastmath is always installed unzipped)."""
    return Path(str(files("fastmath")))


def child_env() -> dict[str, str]:
    """This process's environment for a Python child that must import this same fastmath (the
    app's jobs, the GGUF converter's runner): the folder holding the package first on PYTHONPATH,
    so a checkout's code is run even where another copy is installed."""
    root = str(package_dir().resolve().parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def recipes_dir() -> Path:
    return package_dir() / "recipes"


def recipe_names() -> list[str]:
    """Shipped recipes, by the name the command line takes (`tiny-sft`)."""
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """A recipe file: `name` as a path if one exists there, else the shipped recipe of that name.

    `tiny-sft`, `tiny-sft.yaml` and `recipes/tiny-sft.yaml` all name the shipped recipe, so the
    checkout's spelling works from any folder.
    """
    path = Path(name).expanduser()
    if path.exists():
        return path
    stem = path.name.removesuffix(".yaml")  # not Path.stem: `qwen2.5-7b-sft` has a dot of its own
    shipped = recipes_dir() / f"{stem}.yaml"
    if str(path.parent) in (".", "recipes") and shipped.is_file():
        return shipped
    raise FastmathError(
        f"recipe {name!r} not found: give a YAML file, or one of the shipped recipes: {', '.join(recipe_names())}"
    )


def resolve(source: str) -> str:
    """`fastmath:<file>` as a real path; any other source (a path, a hub id) as it is."""
    if not source.startswith(SCHEME):
        return source
    path = package_dir() / source[len(SCHEME) :]
    if not path.is_file():
        raise FastmathError(f"{source!r} is not a file shipped with fastmath (looked in {path.parent})")
    return str(path)


def sample(name: str) -> Path:
    """One of the shipped sample files (`sample_english_math.json`)."""
    return Path(resolve(f"{SCHEME}samples/{name}"))


def cache_dir() -> Path:
    """Where fastmath keeps what it fetches or compiles once (llama.cpp's converter, Unsloth's
    compiled kernels): $FASTMATH_CACHE, else $XDG_CACHE_HOME/fastmath, else ~/.cache/fastmath."""
    if os.environ.get("FASTMATH_CACHE"):
        return Path(os.environ["FASTMATH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "fastmath"
