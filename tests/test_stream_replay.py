"""A replay larger than a reader can take is cut at once, on both reader paths; a reader that reads gets its replay."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, stalled_client, wait_for
from sse_client import SSEReader

from engine.config import Config
from engine.http.keys import BROKER, STREAMS

MAX_BUFFER = 256 * 1024
HISTORY = 8 << 20  # well past what the kernel takes at once on loopback (about 3 MB): the rest stays unsent


@pytest.fixture(params=[True, False], ids=["lean", "aiohttp"])
def engine_client(request: pytest.FixtureRequest, engine_client: MakeClient, scripts_dir) -> MakeClient:
    """Readers below aiohttp (the default) and readers served by aiohttp; a small max_buffer_bytes."""

    async def make(*names: str, **kwargs: Any) -> TestClient:
        cfg: Config = make_config(scripts_dir)
        cfg = replace(cfg, streams=replace(cfg.streams, lean_readers=request.param, max_buffer_bytes=MAX_BUFFER,
                                                    history_bytes=HISTORY))
        return await engine_client(*names, config=cfg, **kwargs)

    return make


async def closed_by_server(sock: socket.socket) -> bool:
    """Read what the server sent until it closes the connection (EOF or reset)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            if not await loop.sock_recv(sock, 65536):
                return True
        except ConnectionResetError:
            return True


@pytest.mark.parametrize("request_line", [b"GET /s/a HTTP/1.1", b"GET /s/a HTTP/1.0"])
async def test_a_reader_that_cannot_take_its_replay_is_cut_at_once(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture, request_line: bytes
) -> None:
    """A reader with a tiny receive window that never reads asks for 4 MB of history (an unusable
    id, or an old one): more than max_buffer_bytes is left unsent, so it is cut before any publish."""
    client = await engine_client("api_streams.js")
    registry, broker = client.app[STREAMS], client.app[BROKER]
    epoch = broker.epoch
    await client.get("/s/big", params={"paths": "/s/a", "n": "80", "kb": "50"})
    assert len(broker.channels["/s/a"].history) == 80  # 4 MB (8 MB counted: its SSE frames and its data), all kept
    for last_id in (b"garbage", b"%s-1" % epoch.encode()):
        caplog.clear()
        sock = await stalled_client(client.host, client.port,
                                    request_line + b"\r\nHost: x\r\nLast-Event-ID: %s\r\n\r\n" % last_id)
        try:
            await wait_for(lambda: any("unsent after its replay" in r.getMessage() for r in caplog.records),
                           what="the reader to be cut")
            assert registry.connection_count == 0
            assert await asyncio.wait_for(closed_by_server(sock), 10)
        finally:
            sock.close()
    assert not registry.channels["/s/a"].connections

    # A reader that reads, resuming with a replay within the bound, gets it, then live events.
    resp = await client.get("/s/a", headers={"Last-Event-ID": f"{epoch}-76"})
    reader = SSEReader(resp)
    assert [e.data.rstrip(".") for e in await reader.take(4)] == ["77", "78", "79", "80"]
    await client.get("/s/burst", params={"n": "1"})
    assert (await reader.next()).data == "1"
    assert registry.connection_count == 1
    resp.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
