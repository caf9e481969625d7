"""The hub check: fast failure with fixes, the cache when the hub is down, and nothing process-wide."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest

from fastmath import hub
from fastmath.errors import FastmathError

from .conftest import free_port


def cached_repo(cache: Path, repo_id: str) -> Path:
    """A model repo as the hub cache lays it out after one download."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    return snapshot


class _Hub(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 (the http.server name)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_dead_hub_falls_back_to_the_cache_and_changes_nothing_process_wide(monkeypatch, tmp_path):
    port = free_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    snapshot = cached_repo(tmp_path, "org/cached")
    assert Path(hub.resolve("org/cached")) == snapshot, "the cached copy, as a local directory"
    assert "HF_HUB_OFFLINE" not in os.environ, "a long-running app must not stay offline after one timeout"
    with pytest.raises(FastmathError, match="hub at http://127.0.0.1.* is unreachable"):
        hub.resolve("org/not-cached")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert hub.resolve("org/cached") == "org/cached", "the hub answers again: asked again, used again"
    finally:
        server.shutdown()
        server.server_close()
