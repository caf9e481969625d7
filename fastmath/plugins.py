"""Stages and strategies from outside the package: Python entry points, read once per process.

A distribution declares, in its own packaging metadata (`pyproject.toml`):

    [project.entry-points."fastmath.stages"]
    kto = "my_package.kto:STAGE"            # a `fastmath.stages.Stage`
    [project.entry-points."fastmath.strategies"]
    plan_and_solve = "my_package.pas:STRATEGY"   # a `fastmath.eval.strategies.Strategy`

An entry point's name is known without importing its module (the recipe checks `eval.strategies`
names against it before torch loads); the object is imported only when it is used.
"""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

from fastmath.errors import FastmathError

STAGES = "fastmath.stages"
STRATEGIES = "fastmath.strategies"


@functools.cache
def entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    """`{name: entry point}` of the installed distributions in `group`."""
    return {ep.name: ep for ep in metadata.entry_points(group=group)}


def names(group: str) -> tuple[str, ...]:
    return tuple(entry_points(group))


def load(group: str, name: str, kind: type) -> Any:
    """The object entry point `name` of `group` points at, checked to be a `kind`."""
    ep = entry_points(group)[name]
    try:
        obj = ep.load()
    except Exception as e:  # a plugin's own import error: name the plugin, not fastmath
        raise FastmathError(f"plugin {name!r} ({ep.value}, {group}) fails to import: {type(e).__name__}: {e}") from None
    if not isinstance(obj, kind) or getattr(obj, "name", None) != name:
        raise FastmathError(f"plugin {name!r} ({ep.value}) must be a {kind.__name__} named {name!r}")
    return obj
