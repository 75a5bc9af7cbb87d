"""Real parts for the scale-out tests: a `redis-server` (Debian's) on a free loopback port, engine
processes (`python -m engine`) on the Redis broker, and a TCP proxy that can cut one engine off
from Redis while the others keep it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Redis:
    port: int
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed (Debian's redis-server package; .ci/run installs it)"
        # appendonly with fsync always: a restart finds what was published before it
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (RESP), its raw reply."""
        parts = [f"*{len(args)}\r\n".encode()] + [f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args]
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"".join(parts))
            return s.recv(1 << 16)


@dataclass
class Engine:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_engine(scripts: Path, broker_url: str, folder: Path, **env: str) -> Engine:
    port = free_port()
    log = folder / f"engine-{port}.log"
    environ = {**os.environ, "ENGINE_BROKER_URL": broker_url, "ENGINE_SCRIPTS_WATCH": "false", **env}
    with log.open("wb") as out:  # the child has its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "engine", "--port", str(port), "--scripts", str(scripts)],
                                cwd=folder, env=environ, stdout=out, stderr=subprocess.STDOUT)
    return Engine(port, log, proc)


def wait_up(engines: list[Engine], timeout: float = 20) -> None:
    """Block until every engine's /health answers `ok` (for sync, module-wide fixtures)."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    for engine in engines:
        while True:
            assert engine.proc.poll() is None, f"the engine exited: {engine.log.read_text()[-2000:]}"
            with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(engine.url + "/health",
                                                                                   timeout=2) as r:
                if json.load(r)["status"] == "ok":
                    break
            assert time.monotonic() < deadline, f"{engine.url} did not come up: {engine.log.read_text()[-2000:]}"
            time.sleep(0.05)


async def wait_healthy(session: aiohttp.ClientSession, engine: Engine, status: str = "ok",
                       timeout: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        assert engine.proc.poll() is None, f"the engine exited: {engine.log.read_text()[-2000:]}"
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(engine.url + "/health") as r:
                body = await r.json()
                if body["status"] == status:
                    return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{engine.url} never said {status}: {engine.log.read_text()[-2000:]}"
        await asyncio.sleep(0.02)


@dataclass
class Proxy:
    """A TCP proxy in front of Redis for one engine: `cut()` drops its connections and refuses new
    ones (Redis is unreachable for that engine alone), `mend()` lets it through again."""

    target: int
    port: int = field(default_factory=free_port)
    _server: asyncio.Server | None = None
    _links: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._links):
            w.transport.abort()
        self._links.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_w))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._links.discard(writer)
        self._links.discard(up_w)
