"""A reader whose connection closes under it, before its handler notices, costs nobody else an event.

uvloop (the server's default loop) refuses a write to a closed transport with an exception; the
fan-out must treat that reader as gone and go on to the next. Run against a real `python -m engine`
process, since the tests' own loop is asyncio's."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from test_cli import Server

HOT = """
let n = 0;
registerWebStream("/r/{room}", { onConnect(conn) { return undefined; } });
setInterval(() => { for (let i = 0; i < 50; i++) sendStreamMessageToPath("/r/hot", String(++n)); }, 4);
"""


async def _open(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A reader of a stream with hooks: aiohttp serves it, so it stays in the channel until its
    handler is cancelled, a loop turn after its connection closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await reader.readuntil(b"event: connected")
    return reader, writer


async def _read_ids(port: int, stop: asyncio.Event) -> list[int]:
    reader, writer = await _open(port, "/r/hot")
    buf = b""
    while not stop.is_set():
        try:
            buf += await asyncio.wait_for(reader.read(65536), 0.2)
        except TimeoutError:
            continue
    writer.close()
    return [int(x) for x in re.findall(rb"id: [0-9a-f]+-(\d+)", buf)]


async def _come_and_go(port: int, times: int) -> None:
    for i in range(times):
        _, writer = await _open(port, "/r/hot")
        writer.transport.abort()
        await asyncio.sleep(0.001 * (i % 7))


def test_readers_that_vanish_mid_fanout_cost_the_others_nothing(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "hot.js").write_text(HOT)
    server = Server(["--port", "0", "--scripts", str(scripts)], cwd=tmp_path)
    try:
        port = int(server.wait_line(r"serving on http://\S+:(\d+)").group(1))

        async def run() -> list[list[int]]:
            stop = asyncio.Event()
            readers = [asyncio.ensure_future(_read_ids(port, stop)) for _ in range(6)]
            await asyncio.gather(*(_come_and_go(port, 300) for _ in range(4)))
            stop.set()
            return await asyncio.gather(*readers)

        for ids in asyncio.run(run()):
            assert len(ids) > 100
            assert ids == list(range(ids[0], ids[0] + len(ids)))  # no gap
        code, _ = server.stop()
        assert code == 0
        log = server.proc.stderr.read()  # type: ignore[union-attr]
        assert "could not be applied" not in log and "RuntimeError" not in log
    finally:
        server.kill()
