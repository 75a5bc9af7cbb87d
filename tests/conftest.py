"""Fixtures: a real engine app on a real local port, loaded with scripts from test_scripts/."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.app import build_app, server_options
from engine.config import Config, LimitsConfig, ScriptsConfig
from engine.http.front import EngineRunner

ROOT = Path(__file__).resolve().parent.parent
TEST_SCRIPTS = ROOT / "test_scripts"

MakeClient = Callable[..., Awaitable[TestClient]]


class EngineTestServer(TestServer):
    """A test server that accepts connections the way `python -m engine` does (through the front),
    with the runner options `serve` uses (`server_options`)."""

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app)  # TestServer itself would drop `options`
        self.options = options

    async def _make_runner(self, **kwargs: Any) -> EngineRunner:
        return EngineRunner(self.app, **{**kwargs, **self.options})


def make_config(scripts_dir: Path, **limits: Any) -> Config:
    config = Config(scripts=ScriptsConfig(dir=str(scripts_dir)))
    if limits:
        config = replace(config, limits=replace(LimitsConfig(), **limits))
    return config


@pytest.fixture
def scripts_dir(tmp_path: Path) -> Path:
    d = tmp_path / "scripts"
    d.mkdir()
    return d


@pytest.fixture
def engine_client(aiohttp_client: Any, scripts_dir: Path) -> MakeClient:
    """`await engine_client("a.js", "b.js", extra={"x.js": "source"}, script_time_ms=...)`: a live server."""

    async def make(*names: str, extra: dict[str, str] | None = None, config: Config | None = None,
                   **limits: Any) -> TestClient:
        for name in names:
            shutil.copy(TEST_SCRIPTS / name, scripts_dir / name)
        for name, source in (extra or {}).items():
            (scripts_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (scripts_dir / name).write_text(source, encoding="utf-8")
        cfg = config or make_config(scripts_dir, **limits)
        client: TestClient = await aiohttp_client(EngineTestServer(build_app(cfg), **server_options(cfg)))
        return client

    return make


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll `predicate` (sync or async) until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def stalled_client(host: str, port: int, request: bytes) -> socket.socket:
    """A client that sends `request` and never reads a byte, with a tiny receive window: a stalled reader."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    sock.send(request)
    return sock
