"""Streams through a real server and a real SSE client: wire, replay, order, limits, lifecycle."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, stalled_client, wait_for
from sse_client import SSEReader

from engine.config import Config
from engine.http.keys import BROKER, SCRIPTS, STREAMS


@pytest.fixture(params=[True, False], ids=["lean", "aiohttp"])
def engine_client(request: pytest.FixtureRequest, engine_client: MakeClient, scripts_dir) -> MakeClient:
    """Every stream test runs twice: readers below aiohttp (the default) and readers served by aiohttp."""

    async def make(*names: str, config: Config | None = None, **kwargs: Any) -> TestClient:
        cfg = config or make_config(scripts_dir)
        cfg = replace(cfg, streams=replace(cfg.streams, lean_readers=request.param))
        return await engine_client(*names, config=cfg, **kwargs)

    return make


async def open_stream(client: TestClient, path: str, headers: dict[str, str] | None = None) -> SSEReader:
    resp = await client.get(path, headers=headers)
    assert resp.status == 200, await resp.text()
    return SSEReader(resp)


async def test_wire_format_and_headers(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    reader = await open_stream(client, "/s/a")
    h = reader.response.headers
    assert h["Content-Type"] == "text/event-stream; charset=utf-8"
    assert h["Cache-Control"] == "no-cache" and h["X-Accel-Buffering"] == "no"
    assert h["Access-Control-Allow-Origin"] == "*" and "X-Request-Id" in h
    assert "Content-Encoding" not in h
    first = await reader.readline()
    assert first == b"retry: 2000\n"  # the retry line comes first
    await client.post("/s/send", data="one\rtwo\r\nthree\nfour")
    await client.post("/s/send", params={"event": "tick"}, json={"n": 1})
    ev = await reader.next()
    assert ev.data == "one\ntwo\nthree\nfour" and ev.event is None and ev.id
    ev2 = await reader.next()
    assert ev2.event == "tick" and json.loads(ev2.data) == {"n": 1}
    assert ev2.id != ev.id


async def test_seed_era_scripts(engine_client: MakeClient) -> None:
    client = await engine_client("compat_streams.js")
    results = await (await client.get("/stream-results")).json()
    assert results["valid"] == results["second"] == results["again"] == "ok"
    expected = {
        "empty": "registerWebStream: path must be a non-empty string",
        "missing": "registerWebStream: path must be a non-empty string starting with '/', got undefined",
        "no-slash": "registerWebStream: path must start with '/'",
        "too-long": "longer than 200 characters",
        "space": "must not contain whitespace",
        "query": "'?'",
        "hash": "'#'",
        "control": "control characters",
        "number": "got number 42",
        "reserved": "is reserved by the engine",
        "bad-options": "options must be an object",
    }
    for label, fragment in expected.items():
        assert fragment in results[label], (label, results[label])
    # the message sent at load time is in both streams' history
    for path in ("/notifications", "/chat/room1"):
        reader = await open_stream(client, path, {"Last-Event-ID": f"{client.app[BROKER].epoch}-0"})
        assert json.loads((await reader.next()).data) == {"type": "loaded", "message": "sent at load time"}
    a = await open_stream(client, "/notifications")
    b = await open_stream(client, "/chat/room1")
    await client.post("/notify", params={"kind": "string", "n": "1"})
    await client.post("/notify", params={"kind": "object", "n": "2"})
    for reader in (a, b):
        got = [json.loads(e.data) for e in await reader.take(2)]
        assert got == [{"type": "string", "n": 1}, {"type": "object", "n": 2}]


async def test_narrowing_and_to_path(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    a, b = await open_stream(client, "/s/a"), await open_stream(client, "/s/b")
    await client.post("/s/send", params={"path": "/s/b"}, data="only b")
    await client.post("/s/to", params={"path": "/s/a", "event": "e"}, data="only a")
    await client.post("/s/send", params={"path": "/s/a,/s/b"}, data="both")
    assert [(e.data, e.event) for e in await a.take(2)] == [("only a", "e"), ("both", None)]
    assert [e.data for e in await b.take(2)] == ["only b", "both"]


async def test_bad_messages_throw_and_send_nothing(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    b = await open_stream(client, "/s/b")
    errors = await (await client.get("/s/errors")).json()
    assert "the limit is 1048576 (limits.max_message_bytes)" in errors["too-large"]
    assert "the limit is 1048576" in errors["too-large-utf8"]
    assert "must be a string or a JSON value, got undefined" in errors["undefined"]
    assert "got a function" in errors["function"]
    assert "could not be serialized to JSON" in errors["cyclic"]
    assert "could not be serialized to JSON" in errors["bigint"]
    assert errors["unknown-path"] == 'sendStreamMessage: no stream is registered at "/nope"'
    assert errors["unknown-in-list"] == 'sendStreamMessage: no stream is registered at "/nope"'
    assert "options.path must be a string or a list of strings" in errors["bad-path-type"]
    assert "options.event must be a name of 1 to 64 letters, digits, _ . : or -" in errors["bad-event"]
    assert "options.event" in errors["empty-event"]
    assert errors["to-unknown"] == 'sendStreamMessageToPath: no stream is registered at "/nope"'
    assert "path must be a non-empty string" in errors["to-bad"]
    assert errors["fits"] is None
    # of all those calls, only the one that fits was sent
    ev = await b.next()
    assert len(ev.data) == 500 * 1024
    assert client.app[STREAMS].channels["/s/b"].sent == 1


async def test_replay_after_reconnect_has_no_gap_and_no_duplicate(engine_client: MakeClient) -> None:
    """Messages keep flowing (a 5 ms timer) while readers drop and resume with Last-Event-ID."""
    client = await engine_client("api_streams.js")
    await client.get("/s/tick/start", params={"every": "5"})
    seen: list[int] = []
    last_id = None
    for round_ in range(6):
        headers = {"Last-Event-ID": last_id} if last_id else None
        reader = await open_stream(client, "/s/a", headers)
        events = await reader.take(15)
        seen += [int(e.data) for e in events]
        last_id = reader.last_id
        reader.response.close()  # drop the connection abruptly, mid-stream
        if round_ % 2:
            await asyncio.sleep(0.03)  # let events pile up while disconnected: they must come from history
    await client.get("/s/tick/stop")
    assert seen == list(range(seen[0], seen[0] + len(seen))), "gap or duplicate"
    # ?lastEventId= works as the header does
    reader = await open_stream(client, f"/s/a?lastEventId={last_id}")
    assert int((await reader.next()).data) == seen[-1] + 1


async def test_id_that_left_the_history_gets_a_reset_first(engine_client: MakeClient, scripts_dir) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, history=5))
    client = await engine_client("api_streams.js", config=config)
    reader = await open_stream(client, "/s/a")
    await client.get("/s/burst", params={"n": "3"})
    first = (await reader.take(3))[0]
    reader.response.close()
    await client.get("/s/burst", params={"n": "10"})  # 13 sent, history keeps the last 5
    resumed = await open_stream(client, "/s/a", {"Last-Event-ID": first.id})
    reset = await resumed.next()
    assert reset.event == "reset" and reset.id is None
    assert "has left the history (it holds the last 5 events" in json.loads(reset.data)["reason"]
    assert [e.data for e in await resumed.take(5)] == ["6", "7", "8", "9", "10"]
    # an id from another server run also resets; a malformed one too
    for bad in ("0-1", "garbage"):
        r = await open_stream(client, "/s/a", {"Last-Event-ID": bad})
        assert (await r.next()).event == "reset"


async def test_handler_message_is_queued_before_its_response(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    readers = [await open_stream(client, "/s/a") for _ in range(20)]
    resp = await client.get("/s/burst", params={"n": "50"})
    assert resp.status == 200
    # the response is back: every message must already be in every reader's socket buffer
    for reader in readers:
        events = await reader.take(50, timeout=2)
        assert [e.data for e in events] == [str(i) for i in range(1, 51)]


async def test_get_on_unknown_path_is_404_json(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    resp = await client.get("/s/c")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_max_connections_gives_503_at_once(engine_client: MakeClient, scripts_dir) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_connections=3))
    client = await engine_client("api_streams.js", config=config)
    readers = [await open_stream(client, "/s/a") for _ in range(3)]
    resp = await asyncio.wait_for(client.get("/s/b"), 2)
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "too_many_connections"
    readers[0].response.close()
    await wait_for(lambda: client.app[STREAMS].connection_count == 2, what="the closed reader to be removed")
    assert (await client.get("/s/b")).status == 200


async def test_slow_reader_is_cut_off_and_never_slows_the_others(
    engine_client: MakeClient, scripts_dir, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_buffer_bytes=64 * 1024))
    client = await engine_client("api_streams.js", config=config)
    registry = client.app[STREAMS]
    sock = await stalled_client(client.host, client.port,
                                b"GET /s/b HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    await wait_for(lambda: registry.connection_count == 1, what="the stalled reader to attach")
    fast = [await open_stream(client, "/s/b") for _ in range(50)]
    messages, payload = 400, "x" * 8000
    received = [0] * len(fast)

    async def consume(i: int, reader: SSEReader) -> None:
        for _ in range(messages):
            await reader.next(timeout=10)
            received[i] += 1

    consumers = [asyncio.create_task(consume(i, r)) for i, r in enumerate(fast)]
    for _ in range(messages):  # 3.2 MB to every reader
        await client.post("/s/to", params={"path": "/s/b"}, data=payload)
    await asyncio.gather(*consumers)
    assert received == [messages] * 50  # every fast reader got everything
    assert any("closed a slow reader of /s/b" in r.getMessage() for r in caplog.records)
    assert registry.connection_count == 50  # the stalled one is gone; its buffer was dropped
    for conn in registry.channels["/s/b"].connections:
        assert conn.transport.get_write_buffer_size() <= 64 * 1024 + 8200
    sock.close()


async def test_connect_disconnect_cycles_leave_nothing_behind(engine_client: MakeClient) -> None:
    """1,000 readers come and go: no reader stays registered, and tasks and objects do not grow.

    A plain ClientSession, not the test client: that one keeps every response it returned.
    """
    client = await engine_client("api_streams.js")
    registry = client.app[STREAMS]
    url = f"http://{client.host}:{client.port}/s/a"

    async with aiohttp.ClientSession() as session:
        async def cycle() -> None:
            reader = SSEReader(await session.get(url))
            await reader.readline()  # the retry line: the reader is attached
            reader.response.close()

        async def batch(n: int) -> int:
            for _ in range(n // 50):
                await asyncio.gather(*(cycle() for _ in range(50)))
            await wait_for(lambda: registry.connection_count == 0, what="every reader to be removed")
            await wait_for(lambda: len(asyncio.all_tasks()) <= tasks, what="handler tasks to finish")
            gc.collect()
            return len(gc.get_objects())

        tasks = len(asyncio.all_tasks())
        first = await batch(500)  # warms every cache and pool
        second = await batch(500)
    assert not registry.channels["/s/a"].connections
    assert second - first < 500, f"objects grew by {second - first} over 500 connections"


async def test_heartbeat_pings_and_finds_readers_that_left(engine_client: MakeClient, scripts_dir) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, heartbeat_seconds=0.05))
    client = await engine_client("api_streams.js", config=config)
    reader = await open_stream(client, "/s/a")
    assert await reader.readline() == b"retry: 2000\n"
    assert await reader.readline() == b"\n"
    assert await asyncio.wait_for(reader.readline(), 2) == b": ping\n"


async def test_engine_streams_introspection(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    await open_stream(client, "/s/a")
    await client.get("/s/burst", params={"n": "3"})
    info = await (await client.get("/_engine/streams")).json()
    a = info["streams"]["/s/a"]
    assert a["owner"] == "api_streams.js" and a["connections"] == 1
    assert a["messages_sent"] == 3 and a["history"] == 3 and a["last_id"].endswith("-3")
    assert info["streams"]["/s/b"]["messages_sent"] == 0 and info["connections"] == 1


async def test_stream_and_route_conflicts(engine_client: MakeClient) -> None:
    client = await engine_client(extra={
        "a.js": 'registerWebStream("/live"); register("/page", function () { return "page"; });',
        "b.js": 'registerWebStream("/live");',
        "c.js": 'registerWebStream("/page");',
        "d.js": 'register("/live", function () { return "x"; });',
        "e.js": ('let r = []; registerWebStream("/own");'
                 'try { register("/own", function () {}); } catch (e) { r.push(e.message); }'
                 'register("/own", function () { return "post ok"; }, "POST");'
                 'register("/e-reasons", function () { return { body: r }; });'),
    })
    records = client.app[SCRIPTS].records
    assert records["b.js"].last_error == "b.js:1: Error: registerWebStream: /live is already registered by script a.js"
    assert "/page is a GET route of script a.js; a path cannot be both" in records["c.js"].last_error
    assert "/live is a stream of script a.js; a path cannot be both" in records["d.js"].last_error
    reasons = await (await client.get("/e-reasons")).json()
    assert reasons == ["register: /own is a stream; a path cannot be both a stream and a GET route"]
    assert await (await client.post("/own")).text() == "post ok"


async def test_shutdown_closes_every_stream(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    readers = [await open_stream(client, "/s/a") for _ in range(5)]
    await asyncio.gather(*(r.readline() for r in readers))
    client.app[STREAMS].close_all()
    for reader in readers:
        assert await reader.ended()


def test_quiet(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]



async def test_scripts_see_streams_of_scripts_loaded_after_them(engine_client: MakeClient) -> None:
    """a.js loads before z.js registers /z: a.js must still be able to send there (claims are shared)."""
    client = await engine_client(extra={
        "a.js": 'register("/a/send", function () { sendStreamMessageToPath("/z", "from a"); return "ok"; });',
        "z.js": 'registerWebStream("/z");',
    })
    reader = await open_stream(client, "/z")
    resp = await client.get("/a/send")
    assert resp.status == 200, await resp.text()
    assert (await reader.next()).data == "from a"


async def test_history_is_bounded_in_bytes_per_stream_and_in_all(engine_client: MakeClient, scripts_dir) -> None:
    """5 streams of 1 KiB messages (each counted a little over 2 KiB: its SSE form and its data are
    both held): each stream keeps at most 16 KiB, all of them together 40 KiB, the oldest event
    anywhere going first; a reader whose id was evicted gets `reset`."""
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, history_bytes=16 * 1024, total_history_bytes=40 * 1024))
    client = await engine_client("api_streams.js", config=config)
    broker = client.app[BROKER]
    epoch = broker.epoch
    await client.get("/s/big", params={"paths": "/s/a", "n": "3", "kb": "1"})
    assert len(broker.channels["/s/a"].history) == 3
    # 20 more to /s/a: it keeps what fits in 16 KiB
    await client.get("/s/big", params={"paths": "/s/a", "n": "20", "kb": "1"})
    a = broker.channels["/s/a"]
    assert a.history_bytes <= 16 * 1024 and len(a.history) == 7
    resumed = await open_stream(client, "/s/a", {"Last-Event-ID": f"{epoch}-1"})
    reset = await resumed.next()
    assert reset.event == "reset" and "has left the history" in json.loads(reset.data)["reason"]
    kept = [e.data.rstrip(".") for e in await resumed.take(7)]
    assert kept == [str(i) for i in range(14, 21)]  # the newest 7 of the second burst, in order
    # a reader whose id is still held gets the rest with no gap
    tail = await open_stream(client, "/s/a", {"Last-Event-ID": f"{epoch}-21"})
    assert [e.data.rstrip(".") for e in await tail.take(2)] == ["19", "20"]
    # now the other streams: together they pass 20 KiB, and the oldest events anywhere go first
    await client.get("/s/big", params={"paths": "/s/b,/s/c1,/s/c2,/s/c3", "n": "4", "kb": "1"})
    assert broker.kept_bytes <= 40 * 1024
    assert sum(c.history_bytes for c in broker.channels.values()) == broker.kept_bytes
    assert len(a.history) < 7  # /s/a held the oldest events, so it gave them up first
    assert len(broker.channels["/s/c3"].history) == 4  # the newest stream kept all of its own
    # an event larger than a stream may hold is sent, and takes the older history with it
    big = await open_stream(client, "/s/b")
    await client.get("/s/big", params={"paths": "/s/b", "n": "1", "kb": "9"})
    assert (await big.next()).data.startswith("1.")
    assert len(broker.channels["/s/b"].history) == 0
    resumed_b = await open_stream(client, "/s/b", {"Last-Event-ID": f"{epoch}-1"})
    assert (await resumed_b.next()).event == "reset"  # never a silent skip over the event not kept


async def test_event_names_are_short_tokens(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    b = await open_stream(client, "/s/b")
    out = await (await client.get("/s/event-names")).json()
    assert out["64"] == out["colon"] == "sent"
    for label in ("65", "space", "unicode", "8MiB"):
        assert "options.event must be a name of 1 to 64 letters, digits, _ . : or -" in out[label], label
    assert [(e.data, e.event) for e in await b.take(2)] == [("64", "e" * 64), ("colon", "a:b.c-d_e")]


async def test_options_are_read_once(engine_client: MakeClient) -> None:
    """A getter cannot change an option after it was checked: the event goes out as checked,
    with no injected lines, and to the paths that were checked."""
    client = await engine_client("api_streams.js")
    a, b = await open_stream(client, "/s/a"), await open_stream(client, "/s/b")
    counts = await (await client.get("/s/getters")).json()
    assert counts == {"events": 1, "paths": 2}  # each getter read exactly once
    first, second = await a.take(2)
    assert (first.data, first.event) == ("via getters", "ok") and second.data == "via a list"
    assert first.id == f"{client.app[BROKER].epoch}-1"
    with pytest.raises(asyncio.TimeoutError):
        await b.next(timeout=0.2)  # /s/b was never asked for when the options were checked


@pytest.mark.parametrize("last_id", ["{epoch}-\u00b2", "{epoch}-" + "9" * 5000, "{epoch}-", "-1", "{epoch}--1",
                                     "{epoch}-1-2", "\u0661-1", "{epoch}-\u0661", "{epoch}-99999999999999999999"])
async def test_an_unusable_last_event_id_is_a_reset_never_an_error(engine_client: MakeClient, last_id: str) -> None:
    client = await engine_client("api_streams.js")
    await client.get("/s/burst", params={"n": "2"})
    reader = await open_stream(client, "/s/a", {"Last-Event-ID": last_id.format(epoch=client.app[BROKER].epoch)})
    reset = await reader.next()
    assert reset.event == "reset"
    reason = json.loads(reset.data)["reason"]
    assert len(reason) < 300  # a 5,000-digit id is not echoed whole
    assert [e.data for e in await reader.take(2)] == ["1", "2"]  # then the whole history
    await client.get("/s/burst", params={"n": "1"})
    assert (await reader.next()).data == "1"  # and live events: the reader is still connected
