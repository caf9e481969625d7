"""Resolve a model or dataset name to something loadable, failing fast when the hub is unreachable.

Why: from many networks (China especially) huggingface.co hangs rather than refuses, and the
libraries retry for minutes before a stack trace. We check once, in seconds, and say what to do.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from fastmath.errors import FastmathError
from fastmath.log import log
from fastmath.resources import SCHEME

PROBE_TIMEOUT_S = 5.0
REPROBE_AFTER_S = 600.0  # a hub that answered is trusted this long; one that did not is asked again next time
_answered: dict[tuple[str, str], float] = {}


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


DATA_SUFFIXES = (".json", ".jsonl", ".tsv", ".csv", ".parquet")


def looks_like_path(name: str) -> bool:
    """Hub ids are `org/name` (`Qwen/Qwen2.5-7B-Instruct` has a dot, so suffixes alone don't tell)."""
    return name.startswith((".", "/", "~", SCHEME)) or name.count("/") > 1 or name.endswith(DATA_SUFFIXES)


def _cached(repo_id: str, repo_type: str, revision: str | None) -> str | None:
    """The local snapshot folder of a repo in the hub cache, or None."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_files_only=True)
    except Exception:  # any failure here just means "not usable from the cache"
        return None


def _probe(repo_id: str, repo_type: str) -> str | None:
    """None if the hub answered (any HTTP status but 404), else the reason it did not."""
    url = f"{endpoint()}/api/{repo_type}s/{repo_id}"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise FastmathError(
                f"{repo_type} {repo_id!r} was not found on {endpoint()}: check the name, "
                "or give a local directory instead"
            ) from None
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))
    return None


def _unreachable(repo_id: str, repo_type: str, reason: str) -> FastmathError:
    local = f"models/{repo_id.split('/')[-1]}" if repo_type == "model" else f"datasets/{repo_id.split('/')[-1]}"
    type_flag = " --repo-type dataset" if repo_type == "dataset" else ""
    key = "model.name" if repo_type == "model" else "data.train"
    return FastmathError(
        f"cannot get {repo_type} {repo_id!r}: the hub at {endpoint()} is unreachable ({reason}).\n"
        f"  tried: {endpoint()} (HF_ENDPOINT), a local directory named {repo_id!r} (none), "
        "the offline cache (not there)\n"
        "  fixes:\n"
        "    - use a mirror:        export HF_ENDPOINT=https://hf-mirror.com\n"
        f"    - download, then point the recipe at it:\n"
        f"        hf download {repo_id}{type_flag} --local-dir {local}\n"
        f"        ... {key}={local}\n"
        "    - after one download, work from the cache: export HF_HUB_OFFLINE=1"
    )


def resolve(name: str, repo_type: str = "model", revision: str | None = None) -> str:
    """Something loadable for `name`: a local directory/file, a reachable hub id, or the cached snapshot.

    When the hub does not answer but the cache has the repo, the cached snapshot's folder is
    returned, so the loaders read it as a local directory: nothing process-wide changes, and the
    next call asks the hub again.
    """
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if looks_like_path(name):
        raise FastmathError(f"{repo_type} path {name!r} does not exist; check the path in the recipe")
    if offline():
        cached = _cached(name, repo_type, revision)
        if cached:
            return cached
        raise FastmathError(
            f"HF_HUB_OFFLINE is set but {repo_type} {name!r} is not in the cache; unset it to download, "
            "or give a local directory"
        )
    if time.monotonic() - _answered.get((name, repo_type), -REPROBE_AFTER_S) < REPROBE_AFTER_S:
        return name
    reason = _probe(name, repo_type)
    if reason is None:
        _answered[(name, repo_type)] = time.monotonic()
        return name
    cached = _cached(name, repo_type, revision)
    if cached:
        log.warning(f"hub unreachable ({reason}); using the cached copy of {name!r}")
        return cached
    raise _unreachable(name, repo_type, reason)
