"""Slow and idle connections are closed (server.header_timeout_seconds, body_timeout_seconds,
keepalive_seconds) while everyone else, stream readers included, keeps being served.

Raw sockets: each attacker controls exactly which bytes arrive, and when.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, wait_for
from test_front import STREAM_GET, connect, read_head, read_until

from engine.config import Config
from engine.http.keys import STREAMS

TIMEOUT = 0.3  # every server timeout in these tests
PACE = 0.05  # a dripping attacker sends its next byte after this long without hearing anything
CLOSED_WITHIN = 10.0  # generous: the server must have closed each attacker by then
PER_KIND = 60


def with_timeouts(config: Config, seconds: float = TIMEOUT) -> Config:
    return replace(config, server=replace(config.server, header_timeout_seconds=seconds,
                                          body_timeout_seconds=seconds, keepalive_seconds=seconds))


async def open_attacker(client: TestClient, first: bytes) -> socket.socket:
    """A connection that has sent `first`. Attackers connect one after the other: all at once, they
    would overflow the listen backlog (aiohttp's is 128) and test the kernel's SYN retries instead."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (client.host, client.port))
        if first:
            await loop.sock_sendall(sock, first)
    except BaseException:
        sock.close()
        raise
    return sock


async def until_closed(sock: socket.socket, drip: bytes = b"") -> bytes:
    """`drip` a byte at a time, PACE apart, and return every byte the server sends until it closes the
    connection (an AssertionError if it has not within CLOSED_WITHIN). Closes `sock`."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    deadline = loop.time() + CLOSED_WITHIN
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"the server left the connection open; it sent {bytes(got)!r}")
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), min(PACE, left) if drip else left)
            except TimeoutError:
                if drip:
                    try:
                        sock.send(drip[:1])
                        drip = drip[1:]
                    except OSError:  # closed under us: what it sent before is still to read
                        drip = b""
                continue
            except ConnectionResetError:  # a close while our bytes were unread: what came before counts
                return bytes(got)
            if not data:
                return bytes(got)
            got += data
    finally:
        sock.close()


def responses(data: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """The (status line, headers, body) of each whole response in `data` (bodies by Content-Length)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"not a whole response: {data!r}"
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        size = int(headers.get("content-length", "0"))
        assert len(rest) >= size, f"a cut body: {data!r}"
        out.append((status, headers, rest[:size]))
        data = rest[size:]
    return out


def assert_408(data: bytes, code: str) -> None:
    [(status, headers, body)] = responses(data)
    assert status == "HTTP/1.1 408 Request Timeout", data
    assert headers["content-type"].startswith("application/json") and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == code and error["request_id"] == headers["x-request-id"]
    assert "timeout_seconds" in error["message"]


def assert_one_ok_response(data: bytes) -> None:
    [(status, _, body)] = responses(data)
    assert status == "HTTP/1.1 200 OK" and json.loads(body)["status"] == "ok"


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
PADDING = b"X-Pad: " + b"p" * 1000  # longer than any of them can drip before its timeout

KINDS = {  # kind -> (what it sends at once, what it drips, what the server must answer before closing)
    "silent": (b"", b"", "header_timeout"),
    "slow-stream-head": (b"", STREAM_GET[:-2] + PADDING, "header_timeout"),
    "slow-post-head": (b"", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n" + PADDING, "header_timeout"),
    "slow-body": (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"b" * 1000, "body_timeout"),
    "idle-keep-alive": (HEALTH, b"", None),
    "slow-second-head": (HEALTH, b"GET /health HTTP/1.1\r\nHost: x\r\n" + PADDING, None),
}


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "no-lean"])
async def test_slow_and_idle_connections_are_closed_while_others_are_served(
    engine_client: MakeClient, scripts_dir, lean: bool
) -> None:
    config = with_timeouts(make_config(scripts_dir))
    config = replace(config, streams=replace(config.streams, lean_readers=lean))
    client = await engine_client("api_request.js", "api_streams.js", config=config)
    # Stream readers opened before the attack, so they outlive every timeout: one on a fresh
    # connection (lean, when on) and one on a connection that served a request first (aiohttp's).
    fresh_r, fresh_w = await connect(client)
    fresh_w.write(STREAM_GET)
    await read_head(fresh_r)
    await read_until(fresh_r, b"retry: 2000\n\n\r\n")
    second_r, second_w = await connect(client)
    second_w.write(HEALTH)
    _, health = await read_head(second_r)
    await asyncio.wait_for(second_r.readexactly(int(health["content-length"])), 5)
    second_w.write(STREAM_GET)
    status, _ = await read_head(second_r)
    assert status == "HTTP/1.1 200 OK"
    await read_until(second_r, b"retry: 2000\n\n\r\n")
    readers = [fresh_r, second_r]

    attacks: dict[str, list[asyncio.Task[bytes]]] = {kind: [] for kind in KINDS}
    try:
        for kind, (first, drip, _) in KINDS.items():
            for _ in range(PER_KIND):
                attacks[kind].append(asyncio.create_task(until_closed(await open_attacker(client, first), drip)))
        # A normal client, meanwhile: its requests are answered, its events delivered.
        for i in range(10):
            resp = await client.post("/echo", json={"i": i})
            assert resp.status == 200 and (await resp.json())["json"] == {"i": i}
            assert (await client.get(f"/s/burst?n={i + 1}")).status == 200
            for r in readers:
                await read_until(r, f"data: {i + 1}\n\n\r\n".encode())
        for kind, tasks in attacks.items():
            for data in await asyncio.gather(*tasks):
                code = KINDS[kind][2]
                if code is not None:
                    assert_408(data, code)
                else:
                    assert_one_ok_response(data)  # closed quietly once idle for keepalive_seconds
    finally:
        for tasks in attacks.values():
            for t in tasks:
                t.cancel()
        await asyncio.gather(*(t for tasks in attacks.values() for t in tasks), return_exceptions=True)

    # Every attacker is gone, long after the readers came: they are still served.
    assert client.app[STREAMS].connection_count == 2
    assert (await client.get("/s/burst?n=1")).status == 200
    for r in readers:
        await read_until(r, b"data: 1\n\n\r\n")
    fresh_w.close()
    second_w.close()
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the readers to be removed")


async def test_a_head_sent_in_time_is_served(engine_client: MakeClient, scripts_dir) -> None:
    """The header timeout runs from the connection's start to its first complete head, no further:
    a request sent in pieces within it, and a body sent within the body timeout, are served."""
    client = await engine_client("api_request.js", config=with_timeouts(make_config(scripts_dir), 5.0))
    reader, writer = await connect(client)
    for piece in (b"POST /echo HTTP/1.1\r\n", b"Host: x\r\nContent-Length: 4\r\n", b"\r\n", b"bo", b"dy"):
        writer.write(piece)
        await writer.drain()
    status, headers = await read_head(reader)
    assert status == "HTTP/1.1 200 OK"
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    assert json.loads(body)["body"] == "body"
    writer.close()
    await writer.wait_closed()


async def test_late_heads_are_access_logged(engine_client: MakeClient, scripts_dir, caplog) -> None:
    config = with_timeouts(make_config(scripts_dir))
    config = replace(config, logs=replace(config.logs, access=True))
    client = await engine_client(config=config)
    caplog.set_level("INFO", logger="aiohttp.access")
    assert_408(await until_closed(await open_attacker(client, b"")), "header_timeout")
    assert any('"-" 408 (no complete request head within 0.3 s)' in r.getMessage() for r in caplog.records)
