"""Plain GETs of JS routes served below aiohttp (engine/http/lean_route.py), through real sockets: the
same bytes aiohttp would send, keep-alive and pipelining in order, and everything else on the
connection handed to aiohttp, including a handler that turned out to stream."""

from __future__ import annotations

import asyncio
import socket
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
register("/own-headers", () => ({ status: 299, body: "h",
                                   headers: { Date: "yesterday", Server: "mine", "X-Request-Id": "evil" } }));
let calls = 0;
register("/counted", () => { calls++; return String(calls); });
register("/calls", () => String(calls));
register("/gen-counted", () => { calls++; return (function* () { yield "c\n"; })(); });
register("/big", (req) => "x".repeat(Number(req.query.n)));
"""

CATCH_ALL = r"""
register("/{a}", (req) => "the script's " + req.path);
register("/{a}/{b}", (req) => "the script's " + req.path);
register("/{a}/{b}/{c}", (req) => "the script's " + req.path);
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
    get("/own-headers", "X-Request-Id: req-4"),
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


async def raw_exchange(client: TestClient, data: bytes) -> bytes:
    reader, writer = await connect(client)
    writer.write(data)
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return out


async def test_what_aiohttp_refuses_it_answers_and_no_script_runs(
        engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    for bad in (get("/counted", "Host: b"), b"GET /counted HTTP/1.1\r\n\r\n",  # two Hosts; none
                get("/counted", "User-Agent: a", "User-Agent: b"),
                get("/counted", *[f"X-{i}: y" for i in range(130)])):
        answer = await raw_exchange(client, bad)
        assert b" 400 " in answer.split(b"\r\n")[0], (bad[:60], answer[:80])
    assert (await exchange(client, get("/calls")))[0][2] == b"0"
    # A second head with bare line ends gets aiohttp's 400 at once, not a wait for keepalive_seconds.
    for second in (b"GET /hi HTTP/1.1\nHost: t\n\n", b"GET /hi HTTP/1.1\r\nHost: t\r\n\n",
                   b"GET /hi HTTP/1.1\r\nHost: t\r\n\r\r\n"):
        answer = await raw_exchange(client, get("/hi", "Connection: keep-alive") + second)
        assert answer.startswith(b"HTTP/1.1 200 OK") and b" 400 " in answer, answer
    # `Connection: closed` is no `close`.
    reader, writer = await connect(client)
    writer.write(get("/hi", "Connection: closed, x-close-y"))
    status, headers, _ = await response(reader)
    assert "connection" not in headers
    writer.write(get("/hi"))
    assert (await response(reader))[2] == b"hi you"
    writer.close()


async def test_the_engines_own_paths_are_never_a_scripts(engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    client = await engine_client(extra={"catch.js": CATCH_ALL}, config=config)
    assert (await exchange(client, get("/anything")))[0][2] == b"the script's /anything"
    for path, check in (("/health", b'"status"'), ("/_engine/console/console.js", b"function"),
                        ("/graphql", b"<!doctype html"), ("/metrics", b'"forbidden"')):  # Host `t` is no loopback
        status, _, body = (await exchange(client, get(path, "Accept: text/html")))[0]
        assert check in body.lower() and b"the script's" not in body, (path, status, body[:80])


async def test_a_client_that_does_not_read_holds_a_bounded_buffer(
        engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((client.host, client.port))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, get("/big?n=4000000"))  # an answer the client never reads
    routes = client.app[LEAN_ROUTES]
    await wait_for(lambda: routes.open and all(c._answer is None and not c._writable  # noqa: SLF001
                                               for c in routes.open), what="the answer written, writing paused")
    flood = get("/hi") * 2000
    try:
        for _ in range(200):  # up to 13 MB, until the kernels' buffers are full too (the send blocks)
            await asyncio.wait_for(loop.sock_sendall(sock, flood), 0.5)
    except TimeoutError:
        pass
    held = [len(conn._buf) for conn in client.app[LEAN_ROUTES].open]  # noqa: SLF001
    assert held and max(held) <= 2 * 8192 + 256 * 1024, held
    sock.close()


async def test_a_streaming_answer_goes_only_to_its_own_request(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    # A generator route, then bytes aiohttp refuses, in one read: the stream is served, then the 400.
    answer = await raw_exchange(client, get("/hi") + get("/gen?with=query") + b"\x01junk\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and b'"a\\n"' in answer and b" 400 " in answer, answer
    await wait_for(lambda: not client.app[LEAN_ROUTES].answers, what="no answer left behind")
    # Its handler runs once: aiohttp serves the answer it was handed, it does not call the script again.
    answer = await raw_exchange(client, get("/hi") + get("/gen-counted?q=1", "Connection: close"))
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and b'"c\\n"' in answer, answer
    assert (await exchange(client, get("/calls")))[0][2] == b"1"


ODD_TEXT = r"""
register("/nul", () => "a\u0000b");
register("/lone", () => "x\ud800y");
register("/pair", () => "x\ud83d\ude00y");
register("/type-nul", () => ({ body: "ok", contentType: "text/x\u0000y" }));
register("/type-lone", () => ({ body: "ok", contentType: "text/x\ud800" }));
"""


async def test_text_the_fast_path_cannot_carry_takes_the_checked_one(engine_client: MakeClient) -> None:
    """A plain answer goes to Python as C text unless it holds NUL or a lone surrogate (the prelude
    checks natively): those go as JSON, are read by the envelope's checks, and come out as the
    slow path always wrote them; a content type with either is refused there."""
    client = await engine_client(extra={"odd.js": ODD_TEXT})
    resp = await client.get("/nul")
    assert resp.status == 200 and await resp.read() == b"a\x00b"
    resp = await client.get("/lone")
    assert resp.status == 200 and await resp.read() == b"x?y"  # UTF-8 cannot carry it: replaced
    resp = await client.get("/pair")
    assert resp.status == 200 and await resp.text() == "x\U0001f600y"
    for path in ("/type-nul", "/type-lone"):
        resp = await client.get(path)
        assert resp.status == 500 and (await resp.json())["error"]["code"] == "bad_response", path
