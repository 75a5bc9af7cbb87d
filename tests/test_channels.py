"""Pattern streams and their channels: made on first read or send, each with its own ids, history
and readers, freed when idle, bounded in number; what scripts may send to them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, wait_for
from sse_client import SSEReader

from engine.broker.memory import MemoryBroker
from engine.errors import RouteConflict
from engine.graphql.schema import GraphQLRegistry
from engine.graphql.subscriptions import SubscriptionHub
from engine.http.keys import BROKER, SCRIPTS, STREAMS
from engine.outbox import Outbox
from engine.sandbox.commands import Send
from engine.streams.registry import SWEEP_BATCH, StreamRegistry, StreamSpec


async def read(client: TestClient, path: str, headers: dict[str, str] | None = None) -> SSEReader:
    resp = await client.get(path, headers=headers)
    assert resp.status == 200, await resp.text()
    return SSEReader(resp)


async def test_each_concrete_path_of_a_pattern_is_a_channel_of_its_own(engine_client: MakeClient) -> None:
    client = await engine_client("channels.js")
    a, b = await read(client, "/feeds/a"), await read(client, "/feeds/b")
    await client.get("/ch/send", params={"path": "/feeds/a", "data": "for a"})
    await client.get("/ch/send", params={"path": "/feeds/b", "data": "for b"})
    first_a, first_b = await a.next(), await b.next()
    assert (first_a.data, first_b.data) == ("for a", "for b")
    epoch = client.app[BROKER].epoch
    assert first_a.id == first_b.id == f"{epoch}-1"  # ids count per channel
    # sending to the pattern reaches every channel of it; a plain send reaches all of them too
    await client.get("/ch/broadcast", params={"path": "/feeds/{feed}", "data": "every feed"})
    await client.get("/ch/broadcast", params={"data": "everyone"})
    assert [e.data for e in await a.take(2)] == ["every feed", "everyone"]
    assert [e.data for e in await b.take(2)] == ["every feed", "everyone"]
    # each channel resumes from its own history
    resumed = await read(client, "/feeds/a", {"Last-Event-ID": first_a.id})
    assert [e.data for e in await resumed.take(2)] == ["every feed", "everyone"]
    registry = client.app[STREAMS]
    assert set(registry.streams["/feeds/{feed}"].channels) == {"/feeds/a", "/feeds/b"}


async def test_a_send_makes_its_channel_and_a_late_reader_gets_its_history(engine_client: MakeClient) -> None:
    client = await engine_client("channels.js")
    await client.get("/ch/send", params={"path": "/feeds/late", "data": "before anyone read"})
    assert "/feeds/late" in client.app[STREAMS].channels
    reader = await read(client, "/feeds/late", {"Last-Event-ID": f"{client.app[BROKER].epoch}-0"})
    assert (await reader.next()).data == "before anyone read"


async def test_the_lean_front_serves_plain_pattern_channels(engine_client: MakeClient) -> None:
    """A pattern with no hooks and no auth: its readers are lean like any plain stream's."""
    client = await engine_client("channels.js")
    reader_r, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /feeds/lean HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader_r.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"X-Connection-Id: " in head
    server = client.server.runner.web_server  # type: ignore[union-attr]
    assert not server.connections  # aiohttp never saw it
    await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the lean reader")
    await client.get("/ch/send", params={"path": "/feeds/lean", "data": "lean"})
    assert b"data: lean" in await asyncio.wait_for(reader_r.readuntil(b"data: lean"), 5)
    writer.close()


@pytest.mark.parametrize("path", ["/feeds/a%2Fb", "/feeds/", "/feeds/%7Bx%7D", "/feeds/100%25", "/feeds/a/b",
                                  "/feeds/a%2A", "/feeds//x", "/nope/x"])
async def test_malformed_and_non_matching_channel_paths_are_404(engine_client: MakeClient, path: str) -> None:
    client = await engine_client("channels.js")
    resp = await client.get(path)
    assert resp.status == 404, path
    assert (await resp.json())["error"]["code"] == "not_found"
    assert set(client.app[STREAMS].channels) == {"/rooms/lobby", "/me"}  # the plain streams: none was made


async def test_a_path_that_two_streams_of_one_script_match_goes_to_the_most_specific(
    engine_client: MakeClient,
) -> None:
    """/rooms/lobby is a plain stream and a concrete path of /rooms/{room}, both of channels.js: the
    plain one (more specific) has it, for a reader and a sender alike."""
    client = await engine_client("channels.js")
    lobby = await read(client, "/rooms/lobby")
    assert "X-Connection-Id" in lobby.response.headers
    await client.get("/ch/send", params={"path": "/rooms/lobby", "data": "to the lobby"})
    event = await lobby.next()
    assert (event.data, event.event) == ("to the lobby", None)  # no `connected` first: the plain stream has it
    registry = client.app[STREAMS]
    assert registry.channels["/rooms/lobby"].stream.path == "/rooms/lobby"
    assert registry.match("/rooms/other")[0].path == "/rooms/{room}"  # type: ignore[index]


@pytest.mark.parametrize(("first", "second", "overlap"), [
    ('registerWebStream("/inbox/{user}", {auth: "required"});', 'registerWebStream("/inbox/alice");',
     "stream /inbox/alice overlaps stream /inbox/{user} of script a.js"),
    ('registerWebStream("/inbox/alice");', 'registerWebStream("/inbox/{user}", {auth: "required"});',
     "stream /inbox/{user} overlaps stream /inbox/alice of script a.js"),
    ('registerWebStream("/x/{room}");', 'registerWebStream("/{kind}/general");',
     "stream /{kind}/general overlaps stream /x/{room} of script a.js"),
])
async def test_streams_of_two_scripts_may_not_share_a_channel_path(engine_client: MakeClient, first: str,
                                                                     second: str, overlap: str) -> None:
    """Otherwise one script could take the other's channel: a plain /inbox/alice beside another
    script's /inbox/{user} (auth required) would serve alice's channel to anyone."""
    client = await engine_client(extra={"a.js": first, "b.js": second})
    scripts = {s["name"]: s for s in (await (await client.get("/_engine/scripts")).json())["scripts"]}
    assert scripts["a.js"]["status"] == "loaded" and scripts["b.js"]["status"] == "failed"
    assert overlap in scripts["b.js"]["last_error"]
    # after the load too: a registration from a handler is refused, and the log says why
    later = second.replace("registerWebStream(", "register(\"/later\", () => { registerWebStream(")
    later = later.rstrip(";") + '; return "ok"; });'
    record = await client.app[SCRIPTS].save("b.js", later)
    assert record.status == "loaded"
    assert await (await client.get("/later")).text() == "ok"
    logs = await (await client.get("/_engine/scripts/b.js/logs")).json()
    assert any("registerWebStream refused" in line and overlap in line for line in logs["lines"])


async def test_patterns_of_one_shape_from_two_scripts_conflict(engine_client: MakeClient) -> None:
    client = await engine_client("channels.js", extra={"z.js": 'registerWebStream("/feeds/{id}");'})
    listing = await (await client.get("/_engine/scripts")).json()
    z = next(s for s in listing["scripts"] if s["name"] == "z.js")
    assert z["status"] == "failed"
    assert "/feeds/{id} is already registered by script channels.js (as /feeds/{feed})" in z["last_error"]


async def test_what_scripts_may_and_may_not_send_to(engine_client: MakeClient) -> None:
    client = await engine_client("channels.js")
    out = await (await client.get("/ch/errors")).json()
    expected = {
        "to-pattern": "give one channel's path",
        "to-encoded": "give one channel's path",
        "to-unknown": "no stream is registered at \"/nope/x\"",
        "to-deeper": "no stream is registered at \"/rooms/a/b\"",
        "to-empty-param": "no stream is registered at \"/rooms/\"",
        "to-channel": "ok",
        "path-unknown": "no stream is registered at \"/nope/x\"",
        "event-reserved": "options.event \"connected\" is the engine's own (connected, close, reset)",
        "event-reserved-to": "options.event \"reset\" is the engine's own",
        "conn-bad-id": "the id must be a connection's id",
        "conn-number-id": "the id must be a connection's id",
        "conn-path": "options.path does not apply",
        "conn-big": "limits.max_message_bytes",
        "close-reason-type": "the reason must be a string",
        "close-reason-long": "longer than 200 characters",
        "same-shape": "/rooms/{id} is already registered by this script (as /rooms/{room})",
        "star": "a stream path cannot end in '/*'",
        "percent": "must not contain '%'",
        "param-twice": "appears twice",
        "half-param": "a parameter must be a whole segment",
        "hook-type": "options.onConnect for /h1 must be a function or the name of one",
        "hook-name": "'noSuchFunction' for /h2 is not a function defined in this script",
        "auth-value": "options.auth must be \"required\" or left out",
        "options-again": "already registered by this script; give its options in the first call",
        "again": "ok",
        "get-route-shape": "/rooms/{x} is a stream",
    }
    for label, fragment in expected.items():
        assert fragment in out[label], (label, out[label])
    await wait_for(lambda: "/rooms/made-by-a-send" in client.app[STREAMS].channels, what="the channel a send made")


async def test_channels_are_bounded_and_idle_ones_are_freed(engine_client: MakeClient, scripts_dir) -> None:
    """Readers asking for 10,000 channels: past streams.max_channels each gets a 503 and none is
    made; a reader's leaving does not free a channel at once (its history lives on for late
    joiners), streams.history_ttl_seconds of idleness does."""
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_channels=40, history_ttl_seconds=600,
                                             heartbeat_seconds=0.05))
    client = await engine_client("channels.js", config=config)
    registry, broker = client.app[STREAMS], client.app[BROKER]
    opened = 0
    for i in range(60):
        resp = await client.get(f"/feeds/f{i}")
        if resp.status == 200:
            opened += 1
            await client.get("/ch/send", params={"path": f"/feeds/f{i}", "data": "kept"})
        else:
            assert resp.status == 503
            error = (await resp.json())["error"]
            assert error["code"] == "too_many_channels" and "streams.max_channels" in error["message"]
        resp.close()
    assert opened == 40 - len([c for c in registry.channels.values() if not c.stream.pattern])
    sem = asyncio.Semaphore(64)

    async def attempt(i: int) -> int:
        async with sem:
            resp = await client.get(f"/feeds/g{i}")
            resp.close()
            return resp.status

    statuses = await asyncio.gather(*(attempt(i) for i in range(10000)))
    assert set(statuses) == {503}
    assert len(registry.channels) == 40 and len(broker.channels) <= 40
    # a send to a new channel past the bound: refused, and the sender's log says so
    await client.get("/ch/send", params={"path": "/feeds/one-more", "data": "x"})
    logs = await (await client.get("/_engine/scripts/channels.js/logs")).json()
    assert any("was not sent" in line and "streams.max_channels" in line for line in logs["lines"])
    # idle channels go with their history; then there is room again (the setting, shortened now that
    # the storm is over, as if it had been this short all along)
    registry.history_ttl = 0.2
    await wait_for(lambda: len(registry.channels) < 5, what="idle channels to be freed")
    assert not [p for p in broker.channels if p.startswith("/feeds/")]
    resp = await client.get("/feeds/again")
    assert resp.status == 200
    resp.close()


async def test_a_freed_channel_made_again_resets_a_reader_resuming_from_before(engine_client: MakeClient,
                                                                                scripts_dir) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, history_ttl_seconds=0.2, heartbeat_seconds=0.05))
    client = await engine_client("channels.js", config=config)
    reader = await read(client, "/feeds/x")
    await client.get("/ch/send", params={"path": "/feeds/x", "data": "old"})
    old = await reader.next()
    reader.response.close()
    await wait_for(lambda: "/feeds/x" not in client.app[STREAMS].channels, what="the channel to be freed")
    await client.get("/ch/send", params={"path": "/feeds/x", "data": "new"})  # made again, numbered past the old
    resumed = await read(client, "/feeds/x", {"Last-Event-ID": old.id})  # type: ignore[arg-type]
    reset = await resumed.next()
    assert reset.event == "reset" and "has left the history" in json.loads(reset.data)["reason"]
    new = await resumed.next()
    assert new.data == "new" and new.id != old.id


async def test_engine_streams_lists_patterns_with_their_live_channels(engine_client: MakeClient) -> None:
    client = await engine_client("channels.js")
    a = await read(client, "/feeds/a")
    await client.get("/ch/send", params={"path": "/feeds/a", "data": "1"})
    await a.next()
    info = await (await client.get("/_engine/streams")).json()
    feeds = info["streams"]["/feeds/{feed}"]
    assert feeds["channel_count"] == 1 and feeds["connections"] == 1 and feeds["messages_sent"] == 1
    assert feeds["by_transport"] == {"sse": 1}
    assert feeds["channels"]["/feeds/a"] == {"connections": 1, "by_transport": {"sse": 1}, "messages_sent": 1,
                                             "history": 1, "last_id": f"{client.app[BROKER].epoch}-1"}
    assert info["streams"]["/rooms/{room}"]["hooks"] is True and info["streams"]["/inbox/{user}"]["auth"] is True
    assert info["streams"]["/rooms/lobby"]["connections"] == 0
    assert info["max_channels"] == 100000 and info["channels"] == len(client.app[STREAMS].channels)


def test_the_registry_refuses_one_shape_twice_from_one_script() -> None:
    """What the prelude refuses at the call, the registry refuses again (a forged command)."""
    registry = StreamRegistry(MemoryBroker(10, 1 << 20, 1 << 30), 1 << 20, 100)
    with pytest.raises(RouteConflict, match="already registered by this script"):
        registry.replace("a.js", [StreamSpec("/r/{x}"), StreamSpec("/r/{y}")])
    assert registry.streams == {}
    registry.replace("a.js", [StreamSpec("/r/{x}")])
    with pytest.raises(RouteConflict, match=r"\(as /r/\{x\}\)"):
        registry.add("a.js", StreamSpec("/r/{y}"))
    registry.replace("a.js", [StreamSpec("/r/{y}")])  # a reload may rename the parameter
    assert registry.match("/r/1") == (registry.streams["/r/{y}"], {"y": "1"})


def _outbox(max_channels: int = 100) -> tuple[Outbox, StreamRegistry, MemoryBroker, list[str]]:
    broker = MemoryBroker(10, 1 << 20, 1 << 30)
    registry = StreamRegistry(broker, 1 << 20, 100, max_channels=max_channels)
    lines: list[str] = []

    async def no_resolver(*args: object) -> None:
        raise AssertionError("no GraphQL here")

    outbox = Outbox(registry, broker, GraphQLRegistry(no_resolver),  # type: ignore[arg-type]
                    SubscriptionHub(registry, 100, 100), lambda script, level, line: lines.append(line))
    registry.replace("a.js", [StreamSpec("/f/{x}"), StreamSpec("/plain")])
    return outbox, registry, broker, lines


def test_a_channel_freed_while_a_send_is_under_way_is_skipped_not_written_to() -> None:
    """A send to a pattern's every channel hands the loop to others between two channels; one freed
    in between must not be written to (the broker would keep its history for a channel nobody has)."""
    outbox, registry, broker, _ = _outbox()
    channels = [registry.open(f"/f/{i}") for i in range(3)]
    steps = outbox.apply("a.js", Send("hello", None, ("/f/{x}",)))
    next(steps)  # the first channel has it
    registry._free(channels[1], "idle")  # the way sweep frees one, between two steps
    for _ in steps:
        pass
    assert sorted(broker.channels) == ["/f/0", "/f/2"]
    assert all(broker.describe(f"/f/{i}")[0] == 1 for i in (0, 2))


def test_a_send_to_several_paths_reaches_those_it_can_when_one_channel_cannot_be_made() -> None:
    outbox, registry, broker, lines = _outbox(max_channels=2)
    registry.open("/f/a")
    for _ in outbox.apply("a.js", Send("hello", None, ("/f/a", "/f/new", "/plain"))):
        pass
    assert broker.describe("/f/a")[0] == 1 and broker.describe("/plain")[0] == 1
    assert "/f/new" not in registry.channels and "/f/new" not in broker.channels
    assert len(lines) == 1 and "a message to /f/new was not sent" in lines[0] and "streams.max_channels" in lines[0]


async def test_many_idle_channels_are_freed_a_batch_per_step_of_the_loop() -> None:
    now = [0.0]
    broker = MemoryBroker(10, 1 << 20, 1 << 30)
    registry = StreamRegistry(broker, 1 << 20, 100, max_channels=10_000, history_ttl=60, clock=lambda: now[0])
    registry.replace("a.js", [StreamSpec("/f/{x}")])
    for i in range(1200):
        registry.open(f"/f/{i}")
    now[0] = 61.0
    assert registry.sweep() == SWEEP_BATCH
    assert len(registry.channels) == 1200 - SWEEP_BATCH  # the rest wait for the loop's next steps
    await wait_for(lambda: not registry.channels, what="the rest of the idle channels to go")


async def test_readers_turned_away_leave_no_channel_behind(engine_client: MakeClient, scripts_dir) -> None:
    """A full server answers 503 to new readers of a pattern: the channels opened for them go with them
    (they once stayed for streams.history_ttl_seconds, and filled streams.max_channels)."""
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_connections=2, max_channels=10))
    client = await engine_client("channels.js", config=config)
    held = [await read(client, "/feeds/held"), await read(client, "/feeds/held2")]
    for i in range(30):
        resp = await client.get(f"/feeds/n{i}", headers={"Accept": "text/event-stream"}, params={"v": "1.0"})
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "too_many_connections"
    assert not [p for p in client.app[STREAMS].channels if p.startswith("/feeds/n")]
    for r in held:
        r.response.close()
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the held readers to go")
    resp = await client.get("/feeds/after")
    assert resp.status == 200
    resp.close()


async def test_head_on_a_stream_says_which_methods_it_takes(engine_client: MakeClient) -> None:
    client = await engine_client("channels.js")
    resp = await client.head("/rooms/a")
    assert resp.status == 405 and resp.headers["Allow"] == "GET, POST, OPTIONS"
