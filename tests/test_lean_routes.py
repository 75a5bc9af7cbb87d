"""Plain GETs of JS routes served below aiohttp (engine/http/lean_route.py), through real sockets: the
same bytes aiohttp would send, keep-alive and pipelining in order, and everything else on the
connection handed to aiohttp, including a handler that turned out to stream."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, wait_for
from test_front import aiohttp_handlers, connect, read_head

from engine.http.keys import LEAN_ROUTES, SCRIPTS

ROUTES = r"""
register("/hi", (req) => "hi " + (req.query.name || "you"));
register("/json", (req) => ({ body: { headers: req.headers, params: req.params, query: req.query } }));
register("/users/{id}", (req) => ({ status: 201, body: "user " + req.params.id, headers: { "X-Mine": "yes" } }));
register("/empty", () => ({ status: 204 }));
register("/throws", () => { throw new Error("boom"); });
register("/bad-header", () => ({ body: "x", headers: { "X-Bad": "a\nb" } }));
register("/slow", async () => { await new Promise((r) => setTimeout(r, 300)); return "slow"; });
register("/post", (req) => "posted " + req.body, "POST");
register("/gen", () => (function* () { yield "a\n"; yield "b\n"; })());
register("/agen", async function* () { yield "x\n"; });
"""


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: t", *extra]) + "\r\n\r\n").encode()


async def response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    status, headers = await read_head(reader)
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    elif headers.get("transfer-encoding") == "chunked":
        body = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    else:
        body = b""
    return status, headers, body


async def start(engine_client: MakeClient, scripts_dir: Path, lean: bool = True, **server: Any) -> TestClient:
    config = make_config(scripts_dir)
    config = replace(config, server=replace(config.server, lean_routes=lean, **server))
    return await engine_client(extra={"routes.js": ROUTES}, config=config)


async def exchange(client: TestClient, *requests: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    reader, writer = await connect(client)
    out = []
    for request in requests:
        writer.write(request)
        out.append(await response(reader))
    writer.close()
    return out


CASES = [
    get("/hi?name=ann"), get("/json?a=1&a=2&b=%20x", "X-Thing: one", "X-Thing: two", "Accept: */*"),
    get("/users/42"), get("/empty"), get("/throws", "X-Request-Id: req-1"), get("/bad-header", "X-Request-Id: req-2"),
    get("/nope", "X-Request-Id: req-3"),
    get("/hi", "Connection: close"),
]


async def test_the_same_answers_as_aiohttp(engine_client: MakeClient, scripts_dir: Path, tmp_path: Path) -> None:
    lean = await start(engine_client, scripts_dir)
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    (plain_dir / "routes.js").write_text(ROUTES)
    plain = await start(engine_client, plain_dir, lean=False)
    for request in CASES:
        (a_status, a_headers, a_body), = await exchange(lean, request)
        (b_status, b_headers, b_body), = await exchange(plain, request)
        for h in (a_headers, b_headers):
            h.pop("date")
            if "x-request-id" in h and h["x-request-id"] != "req-1":
                h["x-request-id"] = "(made)"
        a_text, b_text = a_body.decode(), b_body.decode()
        if request == get("/throws", "X-Request-Id: req-1") or request == get("/bad-header"):
            a_text, b_text = a_text.split("request_id")[0], b_text.split("request_id")[0]
            a_headers.pop("content-length"), b_headers.pop("content-length")
        assert (a_status, a_headers, a_text) == (b_status, b_headers, b_text), request
    assert lean.app[LEAN_ROUTES].open == set()  # each closed with its client


async def test_keep_alive_and_pipelining_in_order(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    reader, writer = await connect(client)
    for i in range(3):  # one after another on one connection
        writer.write(get(f"/hi?name={i}"))
        assert (await response(reader))[2] == f"hi {i}".encode()
    assert len(client.app[LEAN_ROUTES].open) == 1 and aiohttp_handlers(client) == 0
    # 200 at once, a slow one among them: answered in the order asked.
    writer.write(b"".join(get("/slow") if i == 5 else get(f"/hi?name={i}") for i in range(200)))
    for i in range(200):
        assert (await response(reader))[2] == (b"slow" if i == 5 else f"hi {i}".encode())
    writer.close()
    await wait_for(lambda: not client.app[LEAN_ROUTES].open, what="the connection gone")


async def test_anything_else_goes_to_aiohttp_with_the_rest_of_the_connection(
        engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    post = b"POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody"
    answers = await exchange(client, get("/hi"), post, get("/hi?name=after"), get("/a/../hi"))
    assert [a[2] for a in answers[:3]] == [b"hi you", b"posted body", b"hi after"]
    assert answers[3][0].startswith("HTTP/1.1 404")  # a dot segment is aiohttp's: it takes it as it is
    # Pipelined: the GET is answered here, then the POST and what follows by aiohttp, in order.
    reader, writer = await connect(client)
    writer.write(get("/hi?name=1") + post + get("/hi?name=2") + get("/hi%20x"))
    got = [await response(reader) for _ in range(4)]
    assert [g[2] for g in got[:3]] == [b"hi 1", b"posted body", b"hi 2"] and got[3][0].startswith("HTTP/1.1 404")
    writer.close()


async def test_a_handler_that_streams_is_served_by_aiohttp(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    reader, writer = await connect(client)
    # The first on a lean connection, then one on aiohttp's; strings go out as NDJSON lines.
    for path, body in (("/gen", b'"a\\n"\n"b\\n"\n'), ("/agen", b'"x\\n"\n')):
        writer.write(get(path))
        status, headers, raw = await response(reader)
        assert status == "HTTP/1.1 200 OK" and headers["transfer-encoding"] == "chunked", (path, headers)
        assert b"".join(raw.split(b"\r\n")[1::2]) == body, raw
    writer.write(get("/hi"))
    assert (await response(reader))[2] == b"hi you"
    writer.close()
    assert not client.app[LEAN_ROUTES].answers


async def test_idle_connections_close_after_keepalive_seconds(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir, keepalive_seconds=0.2)
    reader, writer = await connect(client)
    writer.write(get("/hi"))
    await response(reader)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()
    # A head that never ends is bounded the same way.
    reader, writer = await connect(client)
    writer.write(get("/hi") + b"GET /hi HTTP/1.1\r\nHost: t\r\n")
    await response(reader)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_client_that_leaves_mid_call_frees_it(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    ctx = client.app[SCRIPTS].records["routes.js"].context
    assert ctx is not None
    reader, writer = await connect(client)
    writer.write(get("/hi") + get("/slow"))
    await response(reader)
    await wait_for(lambda: ctx.inflight == 1, what="the slow call under way")
    writer.close()
    await wait_for(lambda: ctx.inflight == 0 and not client.app[LEAN_ROUTES].open, what="the call given up")
    assert (await exchange(client, get("/hi")))[0][2] == b"hi you"


async def test_malformed_heads_get_aiohttps_answer(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    for bad in (b"GET /hi HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", b"GET /hi HTTP/1.1\r\nBad Name: x\r\n\r\n"):
        reader, writer = await connect(client)
        writer.write(get("/hi") + bad)
        assert (await response(reader))[2] == b"hi you"
        status, _, _ = await response(reader)
        assert " 400 " in status, (bad, status)  # aiohttp answers a head it cannot parse as HTTP/1.0
        writer.close()


async def test_shutdown_closes_lean_connections(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    reader, writer = await connect(client)
    writer.write(get("/hi"))
    await response(reader)
    client.app[LEAN_ROUTES].close_all()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
