"""The front: a fresh connection's stream reader is served below aiohttp; everything else reaches aiohttp intact.

Raw sockets, so each test controls exactly which bytes arrive on which connection.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, wait_for

from engine.http.keys import STREAMS
from engine.streams.registry import CONNECTION_ID

STREAM_GET = b"GET /s/a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"


def aiohttp_handlers(client: TestClient) -> int:
    """Connections aiohttp itself is serving (a lean reader is not one of them)."""
    server = client.server.runner.web_server  # type: ignore[union-attr]
    return len(server.connections)


async def connect(client: TestClient) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(client.host, client.port)


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = raw.decode("latin-1").split("\r\n")[:-2]
    return status, {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), 5)


async def test_fresh_reader_is_served_below_aiohttp(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    reader, writer = await connect(client)
    writer.write(STREAM_GET)
    status, headers = await read_head(reader)
    assert status == "HTTP/1.1 200 OK"
    assert headers["transfer-encoding"] == "chunked" and headers["x-request-id"] and headers["date"]
    await read_until(reader, b"retry: 2000\n\n\r\n")
    assert client.app[STREAMS].connection_count == 1
    assert aiohttp_handlers(client) == 0  # no aiohttp protocol, parser, request or task holds it
    await client.post("/s/send", data="hello")
    assert b"data: hello\n" in await read_until(reader, b"\n\n\r\n")
    writer.close()
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the reader to be removed")


async def test_both_paths_send_the_same_headers(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    lean_reader, lean_writer = await connect(client)
    lean_writer.write(STREAM_GET)
    _, lean = await read_head(lean_reader)
    await read_until(lean_reader, b"retry: 2000\n\n\r\n")
    # A second request on a kept-alive connection is aiohttp's to serve.
    r2, w2 = await connect(client)
    w2.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    _, health = await read_head(r2)
    await asyncio.wait_for(r2.readexactly(int(health["content-length"])), 5)
    w2.write(STREAM_GET)
    status, served = await read_head(r2)
    assert status == "HTTP/1.1 200 OK"
    await read_until(r2, b"retry: 2000\n\n\r\n")
    assert aiohttp_handlers(client) == 1 and client.app[STREAMS].connection_count == 2
    ids = []
    for h in (lean, served):
        h.pop("date"), h.pop("x-request-id")
        ids.append(h.pop("x-connection-id"))
    assert lean == served
    assert all(CONNECTION_ID.fullmatch(i) for i in ids) and ids[0] != ids[1]
    await client.post("/s/send", data="both")
    for r in (lean_reader, r2):
        assert b"data: both\n" in await read_until(r, b"\n\n\r\n")
    lean_writer.close()
    w2.close()


async def test_a_head_that_arrives_byte_by_byte(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    reader, writer = await connect(client)
    head = b"GET /s/a?lastEventId=nope HTTP/1.1\r\nHost: x\r\nX-Request-Id: trace-7\r\n\r\n"
    for i in range(len(head)):
        writer.write(head[i:i + 1])
        await writer.drain()
    status, headers = await read_head(reader)
    assert status == "HTTP/1.1 200 OK" and headers["x-request-id"] == "trace-7"
    assert b"event: reset" in await read_until(reader, b"event: reset\n")  # the query id was read
    assert aiohttp_handlers(client) == 0
    writer.close()


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /s/send HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", "200 OK"),
    (b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", "404 Not Found"),
    (b"GET /s/a HTTP/1.0\r\nHost: x\r\n\r\n", "200 OK"),  # no chunking in HTTP/1.0: aiohttp's job
    (b"GET /s/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "200 OK"),
    (b"GET /s/a HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n", "400 Bad Request"),
    (b"GET /s/a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", "400 Bad Request"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n", "400 Bad Request"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "400 Bad Request"),  # no request line can start so
    (b"\r\nPOST /s/send HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", "200 OK"),  # an empty line first
    (b"GET /s/a HTTP/1.1\nHost: x\n\n", "400 Bad Request"),  # bare LFs: aiohttp's call, made at once
    (b"GET /s/a HTTP/1.1\r\nHost: x\n\n", "400 Bad Request"),
], ids=["post", "404", "http-1.0", "chunked-get", "obs-fold", "huge-head", "tls-hello", "tls-hello-alone",
        "leading-crlf", "bare-lf", "bare-lf-end"])
async def test_everything_else_reaches_aiohttp_intact(
    engine_client: MakeClient, request_bytes: bytes, status: str
) -> None:
    client = await engine_client("api_streams.js")
    reader, writer = await connect(client)
    writer.write(request_bytes)
    got, _ = await read_head(reader)
    writer.close()
    assert got.split(" ", 1)[1] == status


async def test_pipelined_requests_after_a_stream_get_go_to_aiohttp(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    reader, writer = await connect(client)
    writer.write(STREAM_GET + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _ = await read_head(reader)
    assert status == "HTTP/1.1 200 OK"
    await read_until(reader, b"retry: 2000\n\n\r\n")
    assert aiohttp_handlers(client) == 1
    writer.close()


async def test_a_client_that_leaves_mid_head_leaves_nothing(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    reader, writer = await connect(client)
    writer.write(b"GET /s/a HTTP/1.1\r\nHost:")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    ok = await client.get("/health")  # the server is fine, and nothing was attached
    assert ok.status == 200 and client.app[STREAMS].connection_count == 0
    assert aiohttp_handlers(client) == 1  # only the test client's own connection


async def test_shutdown_ends_lean_readers_with_the_last_chunk(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    reader, writer = await connect(client)
    writer.write(STREAM_GET)
    await read_head(reader)
    await read_until(reader, b"retry: 2000\n\n\r\n")
    client.app[STREAMS].close_all()
    assert await asyncio.wait_for(reader.read(), 5) == b"0\r\n\r\n"  # the chunked end, then EOF
    writer.close()


async def test_lean_readers_are_access_logged_when_asked(
    engine_client: MakeClient, scripts_dir, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(scripts_dir)
    config = replace(config, logs=replace(config.logs, access=True))
    client = await engine_client("api_streams.js", config=config)
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    reader, writer = await connect(client)
    writer.write(STREAM_GET)
    await read_head(reader)
    writer.close()
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the reader to be removed")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any('"GET /s/a HTTP/1.1" 200 stream (the client went away)' in line for line in lines), lines
