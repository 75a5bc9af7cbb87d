"""One channel over SSE, NDJSON, WebSocket (raw and rtengine.v1) and long-poll: the same events with
the same ids, the same hooks, the same bounds, and clean ends."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, stalled_client, wait_for
from sse_client import SSEReader
from transports_client import NDJSONReader, Poller, ndjson, ws_closed, ws_json

from engine.http.keys import BROKER, LEAN_SOCKETS, POLLERS, SCRIPTS, STREAMS
from engine.transports.poll import box_of

SCRIPT = "transports.js"
N = 1000  # sockets opened and dropped
V1 = ("rtengine.v1",)


def config_with(scripts_dir: Any, limits: dict[str, Any] | None = None, **streams: Any) -> Any:
    config = make_config(scripts_dir, **(limits or {}))
    return replace(config, streams=replace(config.streams, **streams))


async def seen(client: TestClient) -> dict[str, Any]:
    return await (await client.get("/ctl/seen")).json()  # type: ignore[no-any-return]


async def test_one_channel_over_every_transport_carries_the_same_events(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    sse = SSEReader(await client.get("/plain"))
    lines = await ndjson(client, "/plain")
    raw = await client.ws_connect("/plain")
    v1 = await client.ws_connect("/plain", protocols=V1)
    assert v1.protocol == "rtengine.v1" and raw.protocol is None
    poller = Poller(client, "/plain")
    first_poll = asyncio.ensure_future(poller.collect(5))
    await wait_for(lambda: client.app[STREAMS].connection_count == 5, what="five readers")
    await client.get("/ctl/send", params={"path": "/plain", "n": "3"})  # JSON values
    await client.get("/ctl/send", params={"path": "/plain", "n": "2", "from": "3", "text": "line\nbreak ",
                                          "event": "note"})
    sse_events = await sse.take(5)
    expected = [{"id": e.id, "event": e.event, "data": json.loads(e.data) if e.event is None else e.data}
                for e in sse_events]
    assert [e["data"] for e in expected] == [{"n": 0}, {"n": 1}, {"n": 2}, "line\nbreak 3", "line\nbreak 4"]
    assert await lines.take(5) == expected
    assert [await ws_json(v1) for _ in range(5)] == expected
    raw_frames = [(await raw.receive(timeout=5)).data for _ in range(5)]
    assert raw_frames == ['{"n":0}', '{"n":1}', '{"n":2}', "line\nbreak 3", "line\nbreak 4"]  # the data as sent
    assert await first_poll == expected
    info = await (await client.get("/_engine/streams")).json()
    assert info["streams"]["/plain"]["by_transport"] == {"sse": 1, "ndjson": 1, "websocket": 2, "poll": 1}
    await raw.close()
    await v1.close()


async def test_the_hooks_run_over_every_transport(engine_client: MakeClient, scripts_dir) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, poll_grace_seconds=0.3,
                                                            heartbeat_seconds=0.05))
    # SSE and NDJSON: the id in the `connected` event; messages by POST
    sse = SSEReader(await client.get("/t/a"))
    sse_id = json.loads((await sse.next()).data)["id"]
    assert json.loads((await sse.next()).data) == {"hello": "sse"}
    lines = await ndjson(client, "/t/a")
    connected, hello = await lines.take(2)
    assert (connected["event"], hello["data"]) == ("connected", {"hello": "ndjson"})
    nd_id = connected["data"]["id"]
    # a poller: the same two events in its first answer
    poller = Poller(client, "/t/a")
    events = await poller.poll()
    assert [e["event"] for e in events] == ["connected", None] and events[1]["data"] == {"hello": "poll"}
    assert events[0]["data"]["id"] == poller.connection_id
    # WebSocket: raw frames carry data only (no `connected`); v1 envelopes carry everything
    raw = await client.ws_connect("/t/a")
    assert await ws_json(raw) == {"hello": "websocket"}
    v1 = await client.ws_connect("/t/a", protocols=V1)
    v1_connected = await ws_json(v1)
    assert v1_connected["event"] == "connected" and (await ws_json(v1))["data"] == {"hello": "websocket"}
    # messages: each answered on its own transport, to that client only
    for cid in (sse_id, nd_id, poller.connection_id):
        resp = await client.post("/t/a", json="whoami", headers={"X-Connection-Id": cid})
        assert (await resp.json())["id"] == cid
    await v1.send_json({"id": 7, "data": "whoami"})
    assert await ws_json(v1) == {"replyTo": 7, "data": {"id": v1_connected["data"]["id"], "transport": "websocket"}}
    await raw.send_str(json.dumps({"echo": "plain text back"}))
    assert (await raw.receive(timeout=5)).data == "plain text back"
    await v1.send_json({"id": "x", "data": "throw"})
    reply = await ws_json(v1)
    assert reply["replyTo"] == "x" and reply["error"]["code"] == "script_error"
    # a message the others hear, in order, on every transport
    await v1.send_json({"data": "hi all"})
    said = {"from": v1_connected["data"]["id"], "text": "hi all"}
    assert json.loads((await sse.next()).data) == said
    assert (await lines.next())["data"] == said
    assert (await ws_json(raw)) == said
    assert [e["data"] for e in await poller.poll()] == [said]
    # every one ends, and onDisconnect says which transport it was
    sse.response.close()
    lines.response.close()
    await raw.close()
    await v1.close()
    await wait_for(lambda: _disconnected(client, 5), what="five onDisconnects (the poller's after its grace)")
    transports = sorted(d["transport"] for d in (await seen(client))["disconnects"])
    assert transports == ["ndjson", "poll", "sse", "websocket", "websocket"]


def _disconnected(client: TestClient, n: int) -> Any:
    async def check() -> bool:
        return len((await seen(client))["disconnects"]) >= n
    return check()


async def test_a_websocket_with_the_subprotocol_resumes_from_its_id(engine_client: MakeClient, scripts_dir) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, history=5))
    v1 = await client.ws_connect("/plain", protocols=V1)
    await client.get("/ctl/send", params={"path": "/plain", "n": "5"})
    got = [await ws_json(v1) for _ in range(5)]
    await v1.close()
    resumed = await client.ws_connect(f"/plain?lastEventId={got[1]['id']}", protocols=V1)
    assert [e["data"]["n"] for e in [await ws_json(resumed) for _ in range(3)]] == [2, 3, 4]
    await client.get("/ctl/send", params={"path": "/plain", "n": "1", "from": "5"})
    assert (await ws_json(resumed))["data"] == {"n": 5}  # then live: no gap, no duplicate
    await client.get("/ctl/send", params={"path": "/plain", "n": "5", "from": "6"})  # the first ids leave history
    late = await client.ws_connect(f"/plain?lastEventId={got[0]['id']}", protocols=V1)
    reset = await ws_json(late)
    assert reset["event"] == "reset" and "has left the history" in reset["data"]["reason"]
    assert [(await ws_json(late))["data"]["n"] for _ in range(5)] == [6, 7, 8, 9, 10]
    await resumed.close()
    await late.close()


async def test_a_long_poll_loses_nothing_while_events_pour_in(engine_client: MakeClient) -> None:
    """10,000 events published in bursts while a client polls in a loop: every id exactly once, in order."""
    client = await engine_client(SCRIPT)
    poller = Poller(client, "/plain")
    first = asyncio.ensure_future(poller.poll())
    await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the poller")

    async def publish() -> None:
        for burst in range(20):
            await client.get("/ctl/send", params={"path": "/plain", "n": "500", "from": str(burst * 500)})

    publisher = asyncio.ensure_future(publish())
    got = await first
    while len(got) < 10_000:
        got.extend(await poller.poll())
    await publisher
    assert [e["data"]["n"] for e in got] == list(range(10_000))
    ids = [e["id"] for e in got]
    assert len(set(ids)) == 10_000 and poller.cursor == ids[-1]


async def test_a_long_poll_answers_from_history_when_an_answer_was_lost(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    poller = Poller(client, "/plain")
    pending = asyncio.ensure_future(poller.poll())
    await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the poller")
    await client.get("/ctl/send", params={"path": "/plain", "n": "3"})
    got = await pending
    while len(got) < 3:
        got += await poller.poll()
    # the client never saw that answer: it polls again from its older cursor, and gets it all again
    poller.cursor = got[0]["id"]
    again = await poller.poll()
    assert [e["data"]["n"] for e in again] == [1, 2]
    assert poller.cursor == got[2]["id"]


async def test_a_long_poll_with_nothing_new_answers_an_empty_batch_with_the_same_cursor(
    engine_client: MakeClient, scripts_dir,
) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, poll_timeout_seconds=0.2))
    await client.get("/ctl/send", params={"path": "/plain", "n": "1"})
    poller = Poller(client, "/plain")
    poller.cursor = client.app[BROKER].describe("/plain")[1]
    assert await poller.poll() == []
    cursor = poller.cursor
    assert await poller.poll() == [] and poller.cursor == cursor


@pytest.mark.parametrize("kind", ["poll", "ndjson"])
async def test_an_unusable_or_forgotten_id_is_a_reset_on_poll_and_ndjson(engine_client: MakeClient, scripts_dir,
                                                                          kind: str) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, history=3))
    await client.get("/ctl/send", params={"path": "/plain", "n": "6"})
    epoch = client.app[BROKER].epoch
    for given in ("garbage", f"{epoch}-1"):
        if kind == "poll":
            poller = Poller(client, "/plain")
            poller.cursor = given
            events = await poller.poll()
        else:
            events = await (await ndjson(client, "/plain", headers={"Last-Event-ID": given})).take(4)
        assert events[0]["event"] == "reset" and events[0]["data"]["lastEventId"] == given
        assert [e["data"]["n"] for e in events[1:4]] == [3, 4, 5]  # what history still holds


async def test_every_transport_ends_cleanly_when_its_stream_goes(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    lines = await ndjson(client, "/t/r")
    await lines.take(2)
    ws = await client.ws_connect("/t/r")
    await ws_json(ws)
    poller = Poller(client, "/t/r")
    await poller.poll()
    waiting = asyncio.ensure_future(poller.poll())
    await wait_for(lambda: client.app[STREAMS].connection_count == 3, what="three readers")
    record = await client.app[SCRIPTS].save(SCRIPT, 'register("/ctl/seen", () => ({body: {}}));')
    assert record.status == "loaded"
    assert await ws_closed(ws) == (1001, "the stream was removed")
    assert await waiting == [] and poller.closed == "the stream was removed"
    with pytest.raises(EOFError):
        await lines.next()
    assert client.app[STREAMS].connection_count == 0


async def test_a_poller_closed_between_polls_learns_why_at_its_next_poll(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    poller = Poller(client, "/t/r")
    await poller.poll()
    await client.get("/ctl/close", params={"id": poller.connection_id, "reason": "kicked"})
    events = await poller.poll()
    assert events[-1]["event"] == "close" and events[-1]["data"] == {"reason": "kicked"}
    assert poller.closed == "kicked"
    old = poller.connection_id
    await poller.poll()  # polling on is a new connection, through onConnect again
    assert poller.connection_id != old


async def test_transports_count_toward_max_connections(engine_client: MakeClient, scripts_dir) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, max_connections=2))
    ws = await client.ws_connect("/plain")
    poller = Poller(client, "/plain")
    pending = asyncio.ensure_future(poller.poll())
    await wait_for(lambda: client.app[STREAMS].connection_count == 2, what="two readers")
    resp = await client.get("/plain", headers={"Accept": "application/x-ndjson"})
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "too_many_connections"
    third = await client.ws_connect("/plain")
    code, reason = await ws_closed(third)
    assert code == 1013 and "streams.max_connections" in reason
    await ws.close()
    await client.get("/ctl/send", params={"path": "/plain"})
    assert len(await pending) == 1


async def test_websocket_close_codes_say_why(engine_client: MakeClient, scripts_dir) -> None:
    config = config_with(scripts_dir, {"max_body_bytes": 1024, "script_time_ms": 200}, max_client_messages=2)
    config = replace(config, auth=replace(config.auth, jwt_secret="s" * 32))
    client = await engine_client(SCRIPT, config=config)
    refused = await client.ws_connect("/t/a?deny=1")
    code, reason = await ws_closed(refused)
    assert code == 1008 and "onConnect refused" in reason
    failed = await client.ws_connect("/t/a?spin=1")  # onConnect past its time limit
    code, reason = await ws_closed(failed)
    assert code == 1011 and "time limit" in reason
    secret = await client.ws_connect("/secret/x")
    code, reason = await ws_closed(secret)
    assert code == 4401 and "needs a token" in reason
    elsewhere = jwt.encode({"sub": "ada", "channels": ["/secret/y"]}, "s" * 32, algorithm="HS256")
    forbidden = await client.ws_connect("/secret/x", headers={"Authorization": f"Bearer {elsewhere}"})
    code, reason = await ws_closed(forbidden)
    assert code == 4403 and "does not cover /secret/x" in reason
    big = await client.ws_connect("/t/a")
    await ws_json(big)
    await big.send_str("x" * 2048)
    assert (await ws_closed(big))[0] == 1009
    binary = await client.ws_connect("/t/a")
    await ws_json(binary)
    await binary.send_bytes(b"\x00\x01")
    assert await ws_closed(binary) == (1003, "text frames only")
    storm = await client.ws_connect("/t/a")
    await ws_json(storm)
    for i in range(10):
        await storm.send_json({"wait": 300, "n": i})
    code, reason = await ws_closed(storm)
    assert code == 4429 and "streams.max_client_messages" in reason
    kicked = await client.ws_connect("/t/a")
    await ws_json(kicked)
    await kicked.send_str('"kick"')
    assert await ws_closed(kicked) == (1000, "kicked")
    # a POST naming a WebSocket's connection: its messages go over the socket
    v1 = await client.ws_connect("/t/a", protocols=V1)
    cid = (await ws_json(v1))["data"]["id"]
    resp = await client.post("/t/a", json="hi", headers={"X-Connection-Id": cid})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "wrong_transport"
    await v1.close()


@pytest.mark.parametrize(("headers", "what"), [
    ({"Sec-WebSocket-Version": "12", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, "bad version"),
    ({"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "short"}, "bad key"),
    ({"Sec-WebSocket-Version": "13"}, "no key"),
])
async def test_a_bad_websocket_handshake_is_a_400_before_any_script_is_asked(
    engine_client: MakeClient, headers: dict[str, str], what: str,
) -> None:
    client = await engine_client(SCRIPT)
    resp = await client.get("/t/a", headers={"Upgrade": "websocket", "Connection": "Upgrade", **headers})
    assert resp.status == 400, what
    assert (await resp.json())["error"]["code"] == "bad_websocket_handshake"
    assert (await seen(client))["connects"] == []


async def test_a_websocket_that_never_answers_pings_is_closed(engine_client: MakeClient, scripts_dir) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, heartbeat_seconds=0.1))
    silent = await client.ws_connect("/plain", autoping=False)
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the silent socket to be dropped")
    await silent.close()


async def test_a_stalled_websocket_is_cut_and_the_others_get_everything(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="engine")
    client = await engine_client(SCRIPT)
    watcher = await client.ws_connect("/plain")
    sock = await stalled_client(client.host, client.port, (
        b"GET /plain HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
    try:
        await wait_for(lambda: client.app[STREAMS].connection_count == 2, what="the stalled socket")
        for _ in range(16):
            await client.get("/ctl/burst", params={"path": "/plain", "n": "3", "kb": "200"})
            for _ in range(3):
                assert len((await watcher.receive(timeout=5)).data) == 200 * 1024
            if client.app[STREAMS].connection_count == 1:
                break
        assert client.app[STREAMS].connection_count == 1
        assert any("closed a slow reader of /plain" in r.getMessage() for r in caplog.records)
    finally:
        sock.close()
    await watcher.close()


async def test_a_thousand_sockets_opened_and_dropped_leave_nothing_behind(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    registry = client.app[STREAMS]
    sem = asyncio.Semaphore(100)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # the test client's pool holds 100

    async def one(i: int) -> None:
        async with sem:
            ws = await session.ws_connect(client.make_url(f"/t/r{i % 10}"))
            await ws_json(ws)
            ws._response.connection.transport.abort()  # type: ignore[union-attr]  # gone, no close frame

    try:
        await asyncio.gather(*(one(i) for i in range(N)))
    finally:
        await session.close()
    await wait_for(lambda: registry.connection_count == 0, timeout=20, what="every socket to be dropped")
    assert not registry.connections and not [c for c in registry.channels.values() if c.count]
    await wait_for(lambda: _disconnected(client, N), timeout=20, what="every onDisconnect")


async def test_every_transport_ends_cleanly_at_shutdown(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    async with aiohttp.ClientSession() as session:  # its own: the test client's closes with the server
        ws = await session.ws_connect(client.make_url("/t/a"))
        await ws_json(ws)
        resp = await session.get(client.make_url("/t/a"), headers={"Accept": "application/x-ndjson"})
        lines = NDJSONReader(resp)
        await lines.take(2)
        first = await (await session.get(client.make_url("/t/a"), params={"transport": "poll"})).json()
        waiting = asyncio.ensure_future(session.get(client.make_url("/t/a"), params={
            "transport": "poll", "connectionId": first["connectionId"], "lastEventId": first["lastEventId"]}))
        poller = client.app[STREAMS].connections[first["connectionId"]]
        await wait_for(lambda: box_of(poller).waiter is not None, what="the poll to be held")
        stopping = asyncio.ensure_future(client.close())
        assert await ws_closed(ws) == (1001, "the server is shutting down")
        assert (await (await waiting).json())["closed"] == "the server is shutting down"
        with pytest.raises((EOFError, aiohttp.ClientPayloadError)):
            await lines.next()
        await stopping


async def test_ndjson_heartbeats_are_blank_lines(engine_client: MakeClient, scripts_dir) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, heartbeat_seconds=0.05))
    lines = await ndjson(client, "/plain")
    await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the reader")
    next_line = asyncio.ensure_future(lines.next())
    await wait_for(lambda: lines.heartbeats >= 2, what="two heartbeats")
    await client.get("/ctl/send", params={"path": "/plain"})
    assert (await next_line)["data"] == {"n": 0}


async def test_a_plain_streams_websocket_is_served_lean_and_says_why_it_ends(engine_client: MakeClient,
                                                                             scripts_dir) -> None:
    """A fresh connection's handshake for a plain stream is served below aiohttp (a KB or two idle):
    the same frames, the same close codes."""
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, {"max_body_bytes": 1024}))
    lean = client.app[LEAN_SOCKETS].live
    talker = await client.ws_connect("/plain")
    big = await client.ws_connect("/plain")
    kicked = await client.ws_connect("/plain", protocols=V1)
    removed = await client.ws_connect("/plain")
    assert kicked.protocol == "rtengine.v1" and len(lean) == 4
    await talker.send_str("hello?")
    assert await ws_closed(talker) == (1003, "this stream takes no messages (it has no onMessage)")
    await big.send_str("x" * 2048)
    assert (await ws_closed(big))[0] == 1009
    cid = next(c.id for c in client.app[STREAMS].connections.values() if c.fmt == "ws.v1")
    await client.get("/ctl/close", params={"id": cid, "reason": "kicked"})
    close = await ws_json(kicked)
    assert close["event"] == "close" and close["data"] == {"reason": "kicked"}
    assert await ws_closed(kicked) == (1000, "kicked")
    record = await client.app[SCRIPTS].save(SCRIPT, 'register("/ctl/seen", () => ({body: {}}));')
    assert record.status == "loaded"
    assert await ws_closed(removed) == (1001, "the stream was removed")
    await wait_for(lambda: not lean and client.app[STREAMS].connection_count == 0, what="every socket to go")


async def test_a_lean_socket_that_pings_and_never_reads_is_dropped(engine_client: MakeClient, scripts_dir) -> None:
    """Every ping is answered with a pong: a client that sends pings and reads nothing would make the
    server hold its pongs without end. Past streams.max_buffer_bytes unsent, it is dropped."""
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, max_buffer_bytes=64 * 1024))
    sock = await stalled_client(client.host, client.port, (
        b"GET /plain HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
    try:
        await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the socket")
        ping = bytes((0x89, 0x80 | 125)) + b"\x00\x00\x00\x00" + b"p" * 125  # masked with zeros
        loop = asyncio.get_running_loop()
        for _ in range(40000):  # 5 MB of pings; the pongs back would be as much (past what the kernel holds)
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, ping), 2)
            except (OSError, TimeoutError):
                break
            if client.app[STREAMS].connection_count == 0:
                break
        await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the pinging socket to be dropped")
    finally:
        sock.close()


def masked_text(payload: bytes) -> bytes:
    """A client's text frame (masked with zeros: the bytes stay as they are)."""
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + b"\x00\x00\x00\x00" + payload


async def test_a_websocket_that_sends_and_never_reads_its_replies_is_cut(engine_client: MakeClient,
                                                                         scripts_dir) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, max_buffer_bytes=64 * 1024,
                                                            max_client_messages=1000))  # only the buffer may end it
    sock = await stalled_client(client.host, client.port, (
        b"GET /t/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
    try:
        await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the socket")
        echo = masked_text(json.dumps({"echo": "r" * 16000}).encode())
        loop = asyncio.get_running_loop()
        for _ in range(400):  # 6.4 MB of replies asked for, none read
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, echo), 2)
            except (OSError, TimeoutError):
                break
            if client.app[STREAMS].connection_count == 0:
                break
        await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the socket to be cut")
    finally:
        sock.close()


async def lean_handshake(client: TestClient) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /plain HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ") and b"X-Connection-Id: " in head
    return reader, writer


async def server_close_code(reader: asyncio.StreamReader) -> int:
    """Read server frames until its close frame; its code."""
    while True:
        b0, n = await asyncio.wait_for(reader.readexactly(2), 5)
        payload = await reader.readexactly(n & 0x7F)  # the server's frames here are all short
        if b0 & 0x0F == 0x8:
            return int.from_bytes(payload[:2], "big")


@pytest.mark.parametrize(("frames", "code"), [
    (bytes((0x89, 0x80)) + b"\x00" * 4, None),  # one ping: answered, nothing closed
    ((bytes((0x89, 0x80)) + b"\x00" * 4) * 1000, 1008),  # a flood of pings in one go
    (bytes((0x8B, 0x80)) + b"\x00" * 4, 1002),  # a reserved control opcode
    (bytes((0x83, 0x80)) + b"\x00" * 4, 1002),  # a reserved data opcode
    (bytes((0x81, 0x05)) + b"hello", 1002),  # unmasked
    (bytes((0x81, 0xFE)) + (2000).to_bytes(2, "big"), 1009),  # over limits.max_body_bytes
    (bytes((0x81, 0xFF)) + (100_000).to_bytes(8, "big"), 1009),
    (bytes((0x81, 0xFE)) + (500).to_bytes(2, "big"), 1003),  # within it, but the stream takes no messages
    (bytes((0x88, 0x82)) + b"\x00" * 4 + (999).to_bytes(2, "big"), 1002),  # a close code no one may send
])
async def test_a_lean_socket_answers_odd_frames_with_the_right_close(engine_client: MakeClient, scripts_dir,
                                                                    frames: bytes, code: int | None) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, {"max_body_bytes": 1024}))
    reader, writer = await lean_handshake(client)
    writer.write(frames)
    if code is None:
        b0, n = await asyncio.wait_for(reader.readexactly(2), 5)
        assert b0 == 0x8A and n == 0  # the pong
        assert client.app[STREAMS].connection_count == 1
    else:
        assert await server_close_code(reader) == code
        await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the socket to go")
    writer.close()


async def test_bad_envelopes_cost_no_task_and_count_toward_the_buffer(engine_client: MakeClient, scripts_dir) -> None:
    """rtengine.v1 frames that are not envelopes are answered at once; a client sending thousands and
    reading nothing is cut when the answers pass streams.max_buffer_bytes."""
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, max_buffer_bytes=64 * 1024))
    sock = await stalled_client(client.host, client.port, (
        b"GET /t/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Protocol: rtengine.v1\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
    try:
        await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the socket")
        loop = asyncio.get_running_loop()
        for _ in range(100):  # 100 x 500 frames that are not JSON
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, masked_text(b"x") * 500), 2)
            except (OSError, TimeoutError):
                break
            if client.app[STREAMS].connection_count == 0:
                break
        await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the socket to be cut")
        assert (await seen(client))["messages"] == []
    finally:
        sock.close()


async def test_a_socket_closed_by_its_script_is_closed_whatever_the_reason_says(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    ws = await client.ws_connect("/t/a", protocols=V1)
    cid = (await ws_json(ws))["data"]["id"]
    assert ws._response.headers["X-Connection-Id"] == cid  # type: ignore[union-attr]
    await ws_json(ws)
    await client.get("/ctl/close", params={"id": cid, "reason": "the client went away"})
    assert (await ws_json(ws))["event"] == "close"
    code, reason = await ws_closed(ws)
    assert reason == "the client went away" and code is not None


async def test_a_websocket_from_another_site_cannot_read_with_the_users_cookie(engine_client: MakeClient,
                                                                               scripts_dir) -> None:
    """Cross-site WebSocket hijacking: a page elsewhere opens a socket and the browser adds the
    cookie. SSE is safe behind CORS; a WebSocket has none, so the cookie only counts same-site."""
    config = config_with(scripts_dir)
    config = replace(config, auth=replace(config.auth, jwt_secret="s" * 32))
    client = await engine_client(SCRIPT, config=config)
    cookie = {"Cookie": f"{config.auth.cookie}=" + jwt.encode({"sub": "ada"}, "s" * 32, algorithm="HS256")}
    evil = await client.ws_connect("/secret/ada", headers={"Origin": "https://evil.example", **cookie})
    code, reason = await ws_closed(evil)
    assert code == 4401 and "needs a token" in reason
    own = f"http://{client.host}:{client.port}"
    mine = await client.ws_connect("/secret/ada", headers={"Origin": own, **cookie})
    await client.get("/ctl/send", params={"path": "/secret/ada"})
    assert await ws_json(mine) == {"n": 0}
    await mine.close()


async def test_a_poller_between_polls_when_its_stream_goes_learns_why(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    poller = Poller(client, "/t/gone")
    await poller.poll()
    record = await client.app[SCRIPTS].save(SCRIPT, 'register("/ctl/seen", () => ({body: {}}));')
    assert record.status == "loaded"
    assert await poller.poll() == [] and poller.closed == "the stream was removed"
    resp = await client.get("/t/gone", params={"transport": "poll", "connectionId": poller.connection_id})
    assert resp.status == 404  # told once; then the path is simply not there


async def test_the_lean_path_and_aiohttp_answer_alike(engine_client: MakeClient) -> None:
    """What the front serves itself and what it hands to aiohttp take the same request the same way."""
    client = await engine_client(SCRIPT)
    resp = await client.get("/plain", params={"transport": ""})  # a fresh connection: the front's
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_transport"
    await client.get("/ctl/send", params={"path": "/plain", "n": "3"})
    ids = [e.id for e in client.app[BROKER].since("/plain", f"{client.app[BROKER].epoch}-start").events]
    ws = await client.ws_connect("/plain", headers={"Last-Event-ID": ids[0]})  # a lean socket
    assert [json.loads((await ws.receive(timeout=5)).data)["n"] for _ in range(2)] == [1, 2]
    await ws.close()


async def test_pollers_between_polls_hold_at_most_half_the_places(engine_client: MakeClient, scripts_dir) -> None:
    """A burst of first polls (no socket held for any) cannot take every place: past half of
    streams.max_connections the poller waiting longest goes, and its next poll resumes losslessly."""
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, max_connections=10))
    registry = client.app[STREAMS]
    await client.get("/ctl/send", params={"path": "/plain"})
    for _ in range(30):  # first polls that each answer at once (their cursor is behind) and never poll again
        r = await client.get("/plain", params={"transport": "poll", "lastEventId": f"{client.app[BROKER].epoch}-0"})
        assert r.status == 200
    assert registry.connection_count == 5 and len(client.app[POLLERS].idle) == 5
    sse = await client.get("/plain")  # a reader of another kind still finds a place
    assert sse.status == 200
    sse.close()


async def test_a_poller_that_leaves_mid_poll_is_gone_after_its_grace(engine_client: MakeClient, scripts_dir) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, poll_grace_seconds=0.3,
                                                            heartbeat_seconds=0.05))
    pending = asyncio.ensure_future(client.get("/plain", params={"transport": "poll"}))
    await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the poll")
    conn = next(iter(client.app[STREAMS].connections.values()))
    await wait_for(lambda: box_of(conn).waiter is not None, what="the poll to be held")
    pending.cancel()  # the client goes away while its poll is held
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the poller's grace to pass")


async def test_a_poll_naming_a_connection_it_may_not_take_is_refused(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    resp = await client.get("/plain", params={"transport": "poll", "connectionId": "not an id"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_connection_id"
    poller = Poller(client, "/t/one")
    await poller.poll()
    resp = await client.get("/t/two", params={"transport": "poll", "connectionId": poller.connection_id})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "wrong_channel"
    ws = await client.ws_connect("/t/one", protocols=V1)
    ws_id = (await ws_json(ws))["data"]["id"]
    resp = await client.get("/t/one", params={"transport": "poll", "connectionId": ws_id})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "not_a_poller"
    await ws.close()


def frames_of(data: bytes) -> list[tuple[int, bytes]]:
    """The server's frames (unmasked) in `data`, as (opcode, payload)."""
    out, pos = [], 0
    while pos + 2 <= len(data):
        n, head = data[pos + 1] & 0x7F, 2
        if n == 126:
            n, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
        if pos + head + n > len(data):
            break
        out.append((data[pos] & 0x0F, data[pos + head:pos + head + n]))
        pos += head + n
    return out


@pytest.mark.parametrize("path", ["/plain", "/t/a"])  # a lean socket, and one aiohttp serves
async def test_a_slow_websocket_reader_learns_it_was_cut_as_a_slow_consumer(engine_client: MakeClient, scripts_dir,
                                                                            path: str) -> None:
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, max_buffer_bytes=64 * 1024))
    sock = await stalled_client(client.host, client.port, (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
    try:
        await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the socket")
        for _ in range(20):  # bursts the stalled reader cannot keep up with
            await client.get("/ctl/burst", params={"path": path, "n": "2", "kb": "200"})
            if client.app[STREAMS].connection_count == 0:
                break
        await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the cut")
        loop = asyncio.get_running_loop()
        data = bytearray()
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5):  # now it reads, fast
            data += chunk
        body = bytes(data[data.index(b"\r\n\r\n") + 4:])
        closes = [payload for opcode, payload in frames_of(body) if opcode == 0x8]
        assert closes and int.from_bytes(closes[-1][:2], "big") == 4413 and b"slow consumer" in closes[-1]
    finally:
        sock.close()


async def test_a_poller_resuming_during_a_sliced_fan_out_gets_each_event_once(
        engine_client: MakeClient, scripts_dir) -> None:
    """A poller polls again from an older cursor while its channel's fan-out is still under way
    (one reader a turn here): its replay comes from history, and what the fan-out had yet to put in
    its box must not come again after it."""
    client = await engine_client(SCRIPT, config=config_with(scripts_dir, poll_timeout_seconds=0.2, fanout_slice=1))
    registry = client.app[STREAMS]
    others = [Poller(client, "/plain") for _ in range(150)]  # readers ahead of it: turns the fan-out needs
    await asyncio.gather(*(p.poll() for p in others))
    poller = Poller(client, "/plain")
    assert await poller.poll() == []
    start = poller.cursor
    await client.get("/ctl/send", params={"path": "/plain", "n": "1"})
    assert len(await poller.collect(1)) == 1  # ... an answer its client never saw
    await client.get("/ctl/send", params={"path": "/plain", "n": "50"})
    assert registry.channels["/plain"].backlog, "the fan-out must still be under way for this test"
    poller.cursor = start
    got = await poller.collect(51)
    assert len(got) == 51 and len({e["id"] for e in got}) == 51
    assert await poller.poll() == []  # and nothing after: no event twice
