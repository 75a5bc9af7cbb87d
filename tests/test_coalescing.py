"""Coalesced fan-out: what a script publishes to a channel in one pass of the loop reaches each
reader in one write at the pass's end (microseconds later, not a timer), on every transport,
complete, in order, with its ids; a reader attaching in the middle of a pass gets the held messages
in its replay and never twice; a message to one reader keeps its place behind them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from conftest import MakeClient, make_config
from sse_client import SSEReader
from transports_client import Poller, ndjson, ws_json

from engine.broker.memory import MemoryBroker
from engine.http.keys import STREAMS
from engine.streams.event import Event
from engine.streams.registry import MAX_BACKLOG, Channel, StreamRegistry, StreamSpec

SCRIPT = "transports.js"
V1 = ("rtengine.v1",)
N = 1000



def _channel(fanout_slice: int = 1024, max_buffer_bytes: int = 1 << 20,
             max_connections: int = 100) -> tuple[MemoryBroker, StreamRegistry, Channel]:
    """A registry on a memory broker with one stream, `/p`, and its channel open: for in-process readers."""
    broker = MemoryBroker(10, 1 << 20, 1 << 30)
    registry = StreamRegistry(broker, max_buffer_bytes, max_connections, fanout_slice=fanout_slice)
    registry.replace("a.js", [StreamSpec("/p")])
    channel = registry.open("/p")
    assert channel is not None
    return broker, registry, channel


async def test_a_burst_of_a_thousand_arrives_complete_and_in_order_on_every_transport(
        engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, poll_timeout_seconds=0.2))
    client = await engine_client(SCRIPT, config=config)
    registry = client.app[STREAMS]
    sse = SSEReader(await client.get("/plain"))  # lean
    nd = await ndjson(client, "/plain")
    raw = await client.ws_connect("/plain")  # lean socket
    v1 = await client.ws_connect("/plain", protocols=V1)
    poller = Poller(client, "/plain")
    assert await poller.poll() == []  # a connection now (an empty answer after poll_timeout_seconds)
    hooked = SSEReader(await client.get("/t/burst"))  # served by aiohttp, with hooks
    hooked_ws = await client.ws_connect("/t/burst")
    assert (await hooked.next()).event == "connected"
    await hooked.next()  # onConnect's hello
    assert await ws_json(hooked_ws) == {"hello": "websocket"}
    readers = 7
    writes_before = registry.writes

    for path in ("/plain", "/t/burst"):
        assert await (await client.get("/ctl/send", params={"path": path, "n": str(N)})).text() == "ok"
    expected = list(range(N))
    got_sse = await sse.take(N)
    assert [json.loads(e.data)["n"] for e in got_sse] == expected
    ids = [int(e.id.split("-")[1]) for e in got_sse]  # type: ignore[union-attr]
    assert ids == list(range(ids[0], ids[0] + N))
    assert [json.loads(e.data)["n"] for e in await hooked.take(N)] == expected
    lines = await nd.take(N)
    assert [line["data"]["n"] for line in lines] == expected and [line["id"] for line in lines] == \
        [e.id for e in got_sse]
    assert [(await ws_json(raw))["n"] for _ in range(N)] == expected
    envelopes = [await ws_json(v1) for _ in range(N)]
    assert [e["data"]["n"] for e in envelopes] == expected and [e["id"] for e in envelopes] == [e.id for e in got_sse]
    assert [(await ws_json(hooked_ws))["n"] for _ in range(N)] == expected
    polled = await poller.collect(N)
    assert [e["data"]["n"] for e in polled] == expected and [e["id"] for e in polled] == [e.id for e in got_sse]
    # coalesced: each reader got its thousand in a few writes (a poller's box takes one per event)
    assert registry.writes - writes_before <= (readers - 1) * 4 + N, registry.writes - writes_before
    for ws in (raw, v1, hooked_ws):
        await ws.close()


async def test_a_reader_attaching_mid_pass_gets_what_is_held_once() -> None:
    """In one pass: three messages (held for the pass's end), then a reader resuming after the
    first. Its replay has the other two; the pass's end must not write them to it again."""
    broker, registry, channel = _channel()
    early, late = _Sink(), _Sink()
    registry.attach(channel, early, None, lambda reason: None)
    for text in ("one", "two", "three"):
        broker.publish("/p", text)
    assert early.events() == []  # held for the pass's end
    first_id = f"{broker.epoch}-1"
    _, replay = registry.attach(channel, late, first_id, lambda reason: None)
    assert [e.data for e in replay.events] == ["two", "three"]
    assert early.events() == ["one", "two", "three"]  # held messages went out before the replay was taken
    await asyncio.sleep(0)  # the pass ends
    await asyncio.sleep(0)
    assert early.events() == ["one", "two", "three"] and late.events() == []


class _Sink:
    """A transport that keeps what is written to it (an in-process reader of the registry)."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass

    def events(self) -> list[Any]:
        return [line[6:].decode() for line in self.data.split(b"\n") if line.startswith(b"data: ")]


async def test_a_message_to_one_reader_keeps_its_place_behind_a_held_burst() -> None:
    """A script sends two messages to a channel, then one to a reader of it, in one pass: the reader
    gets them in that order, though the two were held back for the pass's end."""
    broker, registry, channel = _channel()
    sink = _Sink()
    conn, _ = registry.attach(channel, sink, None, lambda reason: None)
    broker.publish("/p", "one")
    broker.publish("/p", "two")
    assert broker.send_to(conn.id, "just for you")
    assert sink.events() == ["one", "two", "just for you"]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sink.events() == ["one", "two", "just for you"]


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_fan_out_wider_than_a_slice_goes_on_over_turns_in_order() -> None:
    """`streams.fanout_slice` readers per turn of the loop: the rest of a channel's readers get an
    event on later turns. Later events queue behind it; a message to one reader, a close and a
    reader resuming mid-fan-out each keep their order, and nobody gets an event twice."""
    broker, registry, channel = _channel(fanout_slice=2)
    sinks = [_Sink() for _ in range(7)]
    conns = [registry.attach(channel, sink, None, lambda reason: None)[0] for sink in sinks]
    broker.publish("/p", "a")
    await asyncio.sleep(0)  # the pass ends: its first slice is written
    assert sorted(len(s.events()) for s in sinks) == [0, 0, 0, 0, 0, 1, 1]
    broker.publish("/p", "b")  # behind what is left of "a"
    await asyncio.sleep(0)
    written = [s.events() for s in sinks]
    assert all(w in ([], ["a"], ["a", "b"]) for w in written) and ["a"] in written, written
    last = next(i for i, s in enumerate(sinks) if s.events() == [])
    assert broker.send_to(conns[last].id, "solo")  # finishes the fan-out first
    assert sinks[last].events() == ["a", "b", "solo"]
    assert all(s.events()[:2] == ["a", "b"] for s in sinks)
    broker.publish("/p", "c")
    await asyncio.sleep(0)
    closing = next(i for i, s in enumerate(sinks) if s.events()[-1] != "c" and i != last)
    assert broker.close(conns[closing].id, "bye")  # "c" first, then the notice, then nothing
    late = _Sink()
    _, replay = registry.attach(channel, late, f"{broker.epoch}-1", lambda reason: None)
    assert [e.data for e in replay.events] == ["b", "c"]
    broker.publish("/p", "d")
    await _turns(10)
    for i, sink in enumerate(sinks):
        if i == closing:
            assert sink.events()[:3] == ["a", "b", "c"] and "d" not in sink.events()
        else:
            assert sink.events() == ["a", "b", *(["solo"] if i == last else []), "c", "d"], (i, sink.events())
    assert late.events() == ["d"]  # its replay went out by the caller, the live "d" once
    assert channel.backlog is None


async def test_sliced_fan_out_over_real_readers_is_complete_and_in_order(
        engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, fanout_slice=3))
    client = await engine_client(SCRIPT, config=config)
    readers = [SSEReader(await client.get("/plain")) for _ in range(10)]
    v1 = await client.ws_connect("/plain", protocols=V1)
    for _ in range(5):  # one by one, each its own fan-out
        assert await (await client.get("/ctl/send", params={"path": "/plain", "n": "1"})).text() == "ok"
    assert await (await client.get("/ctl/send", params={"path": "/plain", "n": "200"})).text() == "ok"
    expected = [0] * 5 + list(range(200))
    ids = None
    for reader in readers:
        got = await reader.take(205)
        assert [json.loads(e.data)["n"] for e in got] == expected
        mine = [e.id for e in got]
        assert ids is None or mine == ids
        ids = mine
    assert [(await ws_json(v1))["data"]["n"] for _ in range(205)] == expected
    assert client.app[STREAMS].channels["/plain"].backlog is None
    await v1.close()


async def test_a_channel_sent_faster_than_its_slices_go_out_keeps_a_bounded_backlog() -> None:
    """Fan-outs pile up behind a wide channel's only while MAX_BACKLOG pieces wait: past that, the
    rest is written at once (the loop waits, as it did before slicing), in order, nothing lost."""
    _, registry, channel = _channel(fanout_slice=1)
    sinks = [_Sink() for _ in range(3)]
    for sink in sinks:
        registry.attach(channel, sink, None, lambda reason: None)
    most = 0
    for n in range(10 * MAX_BACKLOG):  # no turn of the loop in between
        registry.deliver("/p", Event(str(n), f"e-{n}", None))
        most = max(most, len(channel.backlog or ()))
    assert most == MAX_BACKLOG
    await _turns(MAX_BACKLOG * 3 + 3)
    assert all(s.events() == [str(n) for n in range(10 * MAX_BACKLOG)] for s in sinks)
    assert channel.backlog is None


async def test_a_channel_has_one_turn_asked_for_at_a_time() -> None:
    """A fan-out finished early (a reply to one reader writes it all first) leaves its asked-for turn
    pending; fan-outs started after it must not ask for more: a turn writes `fanout_slice` readers."""
    _, registry, channel = _channel(fanout_slice=10, max_buffer_bytes=1 << 30, max_connections=10_000)
    conns = [registry.attach(channel, _Sink(), None, lambda reason: None)[0] for _ in range(100)]
    for n in range(20):  # one pass: a fan-out, then a reply to one reader (which finishes it), again and again
        registry.deliver("/p", Event(str(n), f"e-{n}", None))
        registry.write_to(conns[0], b"data: solo\n\n")
    registry.deliver("/p", Event("last", "e-last", None))
    for _ in range(9):
        before = registry.delivered
        await asyncio.sleep(0)
        assert registry.delivered - before == 10
    await _turns(3)
    assert channel.backlog is None
