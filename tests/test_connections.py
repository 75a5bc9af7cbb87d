"""Connections: ids, the hooks (onConnect, onMessage, onDisconnect), messages from clients over POST,
sendToConnection and closeConnection, and every bad thing a client or a hook can do."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, stalled_client, wait_for
from sse_client import SSEReader

from engine.http.keys import BROKER, SCRIPTS, STREAMS
from engine.streams.registry import CONNECTION_ID

ROOMS = "channels.js"


class Member:
    """A reader of a hooked channel: its id (from the header and the `connected` event, which agree)
    and its first event from onConnect."""

    def __init__(self, reader: SSEReader, cid: str, welcome: Any) -> None:
        self.reader, self.id, self.welcome = reader, cid, welcome

    async def next_json(self) -> Any:
        return json.loads((await self.reader.next()).data)


async def join(client: TestClient, path: str, params: dict[str, str] | None = None,
               headers: dict[str, str] | None = None, welcome: bool = True) -> Member:
    resp = await client.get(path, params=params, headers=headers)
    assert resp.status == 200, await resp.text()
    reader = SSEReader(resp)
    connected = await reader.next()
    assert connected.event == "connected" and connected.id is None
    info = json.loads(connected.data)
    assert info["id"] == resp.headers["X-Connection-Id"] and CONNECTION_ID.fullmatch(info["id"])
    first = json.loads((await reader.next()).data) if welcome else None
    return Member(reader, info["id"], first)


async def say(client: TestClient, path: str, member: Member | str, body: Any = None, *, data: str | bytes | None = None,
              content_type: str | None = "application/json") -> Any:
    cid = member if isinstance(member, str) else member.id
    headers = {"X-Connection-Id": cid}
    if content_type:
        headers["Content-Type"] = content_type
    return await client.post(path, data=data if data is not None else json.dumps(body), headers=headers)


async def seen(client: TestClient) -> dict[str, Any]:
    return await (await client.get("/ch/seen")).json()  # type: ignore[no-any-return]


async def test_onconnect_gives_the_reader_its_id_a_first_event_and_what_it_sent_meanwhile(
    engine_client: MakeClient,
) -> None:
    client = await engine_client(ROOMS)
    alice = await join(client, "/rooms/red", {"who": "alice"})
    assert alice.welcome == {"type": "welcome", "id": alice.id, "room": "red"}
    # the join message onConnect sent while the reader was not attached yet still reaches it
    assert await alice.next_json() == {"type": "join", "id": alice.id}
    connect = (await seen(client))["connects"][0]
    assert connect == {"id": alice.id, "path": "/rooms/red", "params": {"room": "red"}, "query": {"who": "alice"},
                       "transport": "sse", "user": None}
    bob = await join(client, "/rooms/red")
    assert await bob.next_json() == {"type": "join", "id": bob.id}
    assert await alice.next_json() == {"type": "join", "id": bob.id}
    assert alice.id != bob.id
    # the history holds the joins; a reader resuming from before them gets them again, with ids
    assert client.app[BROKER].describe("/rooms/red")[0] == 2


async def test_messages_from_clients_reach_onmessage_and_replies_come_back(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS)
    alice = await join(client, "/rooms/red")
    await alice.next_json()  # her join
    bob = await join(client, "/rooms/red")
    await bob.next_json()
    await alice.next_json()
    blue = await join(client, "/rooms/blue")
    await blue.next_json()
    resp = await say(client, "/rooms/red", alice, "hello")
    assert resp.status == 204
    for m in (alice, bob):
        assert await m.next_json() == {"type": "say", "from": alice.id, "text": "hello"}
    with pytest.raises(asyncio.TimeoutError):
        await blue.reader.next(timeout=0.2)  # another room hears nothing
    # a reply: JSON for a value, text for a string
    resp = await say(client, "/rooms/red", bob, "whoami")
    assert resp.status == 200 and resp.content_type == "application/json"
    assert await resp.json() == {"id": bob.id, "room": "red"}
    resp = await say(client, "/rooms/red", bob, {"echo": "plain"})
    assert resp.content_type == "text/plain" and await resp.text() == "plain"
    # a body that is not JSON arrives as text; a JSON one (application/json, */*+json) parsed
    await say(client, "/rooms/red", bob, data="not { json", content_type="text/plain")
    await say(client, "/rooms/red", bob, data='{"x": [1, 2]}', content_type="application/merge-patch+json")
    messages = [m["data"] for m in (await seen(client))["messages"] if m["id"] == bob.id]
    assert messages[-2:] == ["not { json", {"x": [1, 2]}]


async def test_messages_from_one_connection_reach_the_handler_in_order(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS, config=None)
    alice = await join(client, "/rooms/red")
    for i in range(30):  # one keep-alive connection, one after another
        assert (await say(client, "/rooms/red", alice, {"echo": str(i)})).status == 200
    results = await asyncio.gather(*(say(client, "/rooms/red", alice, {"wait": 1, "n": i}) for i in range(10)))
    assert {await r.text() for r in results} == {f"waited {i}" for i in range(10)}
    order = [m["data"]["echo"] for m in (await seen(client))["messages"] if isinstance(m["data"], dict)
             and "echo" in m["data"]]
    assert order == [str(i) for i in range(30)]


async def test_send_to_connection_reaches_one_reader_and_is_not_kept(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS)
    alice = await join(client, "/rooms/red")
    await alice.next_json()
    bob = await join(client, "/rooms/red")
    await bob.next_json()
    await alice.next_json()
    assert (await say(client, "/rooms/red", alice, "private")).status == 204
    dm = await alice.reader.next()
    assert (dm.data, dm.event, dm.id) == ("just you", "dm", None)
    await client.get("/ch/to", params={"id": bob.id, "data": "for bob"})
    assert (await bob.reader.next()).data == "for bob"
    with pytest.raises(asyncio.TimeoutError):
        await alice.reader.next(timeout=0.2)
    # nothing of it is in the history: resuming from the start replays the joins only
    epoch = client.app[BROKER].epoch
    again = SSEReader(await client.get("/feeds/none"))  # a plain reader elsewhere: no hooks involved
    again.response.close()
    replay = await join(client, "/rooms/red", {"quiet": "1"}, {"Last-Event-ID": f"{epoch}-0"}, welcome=False)
    datas = [json.loads((await replay.reader.next()).data)["type"] for _ in range(3)]
    assert datas == ["join", "join", "join"]  # alice's, bob's, its own: no dm, no "for bob"
    # a connection that has ended: the script's log says the message went nowhere
    alice.reader.response.close()
    await wait_for(lambda: alice.id not in client.app[STREAMS].connections, what="alice to go")
    await client.get("/ch/to", params={"id": alice.id})
    logs = await (await client.get("/_engine/scripts/channels.js/logs")).json()
    assert any(f"no connection {alice.id} of this script's streams is open" in line for line in logs["lines"])


async def test_close_connection_ends_the_reader_with_a_reason_and_runs_ondisconnect(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS)
    alice = await join(client, "/rooms/red")
    await alice.next_json()
    resp = await say(client, "/rooms/red", alice, "kick")
    assert await resp.text() == "bye"
    close = await alice.reader.next()
    assert close.event == "close" and json.loads(close.data) == {"reason": "kicked"}
    assert await alice.reader.ended()
    await wait_for(lambda: _disconnects(client, alice.id), what="onDisconnect")
    assert (await seen(client))["disconnects"] == [{"id": alice.id, "path": "/rooms/red", "reason": "kicked"}]
    resp = await say(client, "/rooms/red", alice, "hello")  # it is gone
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_connection"


def _disconnects(client: TestClient, cid: str) -> bool:
    async def check() -> bool:
        return any(d["id"] == cid for d in (await seen(client))["disconnects"])
    return check()  # type: ignore[return-value]


async def test_ondisconnect_runs_once_whatever_ended_the_connection(
    engine_client: MakeClient, scripts_dir, caplog: pytest.LogCaptureFixture,
) -> None:
    """The client went away, a slow consumer was cut, the stream was dropped by a reload: each
    connection onConnect accepted gets exactly one onDisconnect, with the reason, on the version
    that accepted it."""
    caplog.set_level(logging.INFO, logger="engine")
    client = await engine_client(ROOMS)
    gone = await join(client, "/rooms/red")
    watcher = await join(client, "/rooms/red")
    gone.reader.response.close()
    assert (await watcher.next_json())["type"] == "join"  # its own
    leave = await watcher.next_json()
    assert leave == {"type": "leave", "id": gone.id, "reason": "the client went away"}
    # a slow consumer: a raw socket that never reads, while a burst is sent
    sock = await stalled_client(client.host, client.port, b"GET /rooms/red HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        channel = client.app[STREAMS].channels["/rooms/red"]
        await wait_for(lambda: len(channel.connections) == 2, what="the stalled reader")
        slow_id = next(c.id for c in channel.connections if c.id != watcher.id)
        for _ in range(16):  # in rounds the watcher keeps up with; the stalled reader falls behind
            await client.get("/ch/burst", params={"path": "/rooms/red", "n": "3", "kb": "200"})
            assert len(await watcher.reader.take(3)) == 3
        await wait_for(lambda: _disconnects(client, slow_id), what="the slow reader's onDisconnect")
    finally:
        sock.close()
    # a reload that drops the pattern: the watcher's connection ends, and the old version says goodbye
    record = await client.app[SCRIPTS].save(ROOMS, 'register("/ch/seen", () => "reloaded");')
    assert record.status == "loaded"
    await watcher.reader.ended()
    await wait_for(lambda: client.app[SCRIPTS].background == 0, what="the old version to retire")
    lines = [r.getMessage() for r in caplog.records if "] left " in r.getMessage()]
    assert sorted(lines) == sorted([f"[channels.js] left {gone.id}: the client went away",
                                    f"[channels.js] left {slow_id}: slow consumer",
                                    f"[channels.js] left {watcher.id}: the stream was removed"])


async def test_ondisconnect_records_each_reason_once(engine_client: MakeClient, scripts_dir) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_buffer_bytes=64 * 1024))
    client = await engine_client(ROOMS, config=config)
    a = await join(client, "/rooms/red")
    b = await join(client, "/rooms/blue")
    c = await join(client, "/rooms/green")
    a.reader.response.close()
    await client.get("/ch/close", params={"id": b.id, "reason": "closed by test"})
    await wait_for(lambda: _disconnects(client, a.id), what="a's onDisconnect")
    await wait_for(lambda: _disconnects(client, b.id), what="b's onDisconnect")
    found = {d["id"]: d["reason"] for d in (await seen(client))["disconnects"]}
    assert found == {a.id: "the client went away", b.id: "closed by test"}
    assert c.id in client.app[STREAMS].connections
    counts = [d["id"] for d in (await seen(client))["disconnects"]]
    assert len(counts) == len(set(counts))


async def test_ondisconnect_runs_at_shutdown_before_the_script_closes(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    client = await engine_client(ROOMS)
    members = [await join(client, f"/rooms/r{i}") for i in range(20)]
    await client.close()
    lines = {r.getMessage() for r in caplog.records if "] left " in r.getMessage()}
    assert lines == {f"[channels.js] left {m.id}: the server is shutting down" for m in members}


async def test_onconnect_may_refuse_with_a_403_before_any_event(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS)
    resp = await client.get("/rooms/red", params={"deny": "1"})
    assert resp.status == 403
    body = await resp.json()
    assert body["error"]["code"] == "refused" and "onConnect refused" in body["error"]["message"]
    resp = await client.get("/rooms/red", params={"throw": "1"})
    assert resp.status == 403
    assert "room red is closed" in (await resp.json())["error"]["message"]
    assert not client.app[STREAMS].connections
    assert (await seen(client))["disconnects"] == []  # refused connections are owed nothing


async def test_hooks_past_their_limits_fail_alone(engine_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    client = await engine_client(ROOMS, script_time_ms=200)
    resp = await client.get("/rooms/red", params={"spin": "3000"})
    assert resp.status == 504 and (await resp.json())["error"]["code"] == "script_timeout"
    alice = await join(client, "/rooms/red")
    resp = await say(client, "/rooms/red", alice, "spin")
    assert resp.status == 504 and (await resp.json())["error"]["code"] == "script_timeout"
    resp = await say(client, "/rooms/red", alice, "throw")
    assert resp.status == 500 and (await resp.json())["error"]["code"] == "script_error"
    resp = await say(client, "/rooms/red", alice, {"echo": "still here"})
    assert await resp.text() == "still here"  # the connection and the script carry on
    # a throw in onDisconnect is logged, and the next one still runs
    leaver = await join(client, "/rooms/red", {"throwOnLeave": "1"})
    other = await join(client, "/rooms/blue")
    leaver.reader.response.close()
    other.reader.response.close()
    await wait_for(lambda: _disconnects(client, other.id), what="the next onDisconnect")
    logs = await (await client.get("/_engine/scripts/channels.js/logs")).json()
    assert any("onDisconnect failed" in line and "could not say goodbye" in line for line in logs["lines"])


async def test_a_client_that_leaves_while_onconnect_runs_is_still_said_goodbye_to(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS)
    resp_task = asyncio.ensure_future(client.get("/rooms/red", params={"wait": "300"}))
    await wait_for(lambda: _connects(client), what="onConnect to start")
    resp_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await resp_task
    await wait_for(lambda: _disconnects_any(client), timeout=5, what="the owed onDisconnect")
    assert not client.app[STREAMS].connections


def _connects(client: TestClient) -> Any:
    async def check() -> bool:
        return bool((await seen(client))["connects"])
    return check()


def _disconnects_any(client: TestClient) -> Any:
    async def check() -> bool:
        return bool((await seen(client))["disconnects"])
    return check()


@pytest.mark.parametrize(("cid", "status", "code"), [
    (None, 400, "missing_connection_id"),
    ("", 400, "bad_connection_id"),
    ("garbage", 400, "bad_connection_id"),
    ("0123abcd.AAAAAAAAAAAAAAA\u00e9", 400, "bad_connection_id"),
    ("0123abcd.AAAAAAAAAAAAAAAA", 404, "unknown_connection"),  # well formed: another server's, or gone
])
async def test_a_post_without_a_usable_connection_id_is_refused(engine_client: MakeClient, cid: str | None,
                                                                 status: int, code: str) -> None:
    client = await engine_client(ROOMS)
    headers = {"Content-Type": "application/json"}
    if cid is not None:
        headers["X-Connection-Id"] = cid.encode("utf-8").decode("latin-1")
    resp = await client.post("/rooms/red", data='"hi"', headers=headers)
    assert resp.status == status, await resp.text()
    assert (await resp.json())["error"]["code"] == code
    assert (await seen(client))["messages"] == []


async def test_a_connection_posts_only_to_its_own_channel_and_only_where_messages_are_taken(
    engine_client: MakeClient,
) -> None:
    client = await engine_client(ROOMS)
    red = await join(client, "/rooms/red")
    resp = await say(client, "/rooms/blue", red, "sneaky")
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "wrong_channel"
    feed = await client.get("/feeds/a")
    feed_id = feed.headers["X-Connection-Id"]
    resp = await say(client, "/feeds/a", feed_id, "hi")
    assert resp.status == 405 and (await resp.json())["error"]["code"] == "no_message_handler"
    resp = await client.post("/nope/x", data="hi", headers={"X-Connection-Id": red.id})
    assert resp.status == 404
    assert (await seen(client))["messages"] == []


async def test_a_huge_or_undecodable_message_is_refused(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS, max_body_bytes=1024)
    alice = await join(client, "/rooms/red")
    resp = await say(client, "/rooms/red", alice, data="x" * 2048, content_type="text/plain")
    assert resp.status == 413
    resp = await say(client, "/rooms/red", alice, data=b"\xff\xfe", content_type="text/plain")
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_message"
    assert (await say(client, "/rooms/red", alice, {"echo": "fine"})).status == 200
    # a reply no UTF-8 can carry (a lone surrogate, which JSON can spell): replaced, not a 500
    resp = await say(client, "/rooms/red", alice, {"echo": "a\ud800b"})
    assert resp.status == 200 and (await resp.text())[::2] == "ab"
    resp = await say(client, "/rooms/red", alice, {"echo": {"s": "a\ud800b"}})  # as JSON: escaped, kept
    assert resp.status == 200 and await resp.json() == {"s": "a\ud800b"}


async def test_a_message_storm_from_one_client_is_bounded_and_others_are_unaffected(
    engine_client: MakeClient, scripts_dir,
) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_client_messages=4))
    client = await engine_client(ROOMS, config=config)
    storm, calm = await join(client, "/rooms/red"), await join(client, "/rooms/red")
    results = await asyncio.gather(*(say(client, "/rooms/red", storm, {"wait": 300, "n": i}) for i in range(40)),
                                   say(client, "/rooms/red", calm, {"echo": "calm"}))
    statuses = [r.status for r in results[:-1]]
    assert statuses.count(200) == 4 and statuses.count(429) == 36
    refused = next(r for r in results[:-1] if r.status == 429)
    assert "streams.max_client_messages" in (await refused.json())["error"]["message"]
    assert results[-1].status == 200 and await results[-1].text() == "calm"
    # once answered, the storm's connection may speak again
    assert (await say(client, "/rooms/red", storm, {"echo": "again"})).status == 200


async def test_cross_origin_pages_can_post_messages(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS)
    resp = await client.options("/rooms/red", headers={"Origin": "https://app.example",
                                                       "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "x-connection-id"})
    assert resp.status == 204
    assert "X-Connection-Id" in resp.headers["Access-Control-Allow-Headers"]
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    alice = await join(client, "/rooms/red")
    resp = await say(client, "/rooms/red", alice, {"echo": "x"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert alice.reader.response.headers["Access-Control-Expose-Headers"] == "X-Connection-Id"


async def test_streams_without_hooks_send_no_new_events(engine_client: MakeClient) -> None:
    """Seed-002 clients: a stream with no hooks gets no `connected` event; the id is in a header only."""
    client = await engine_client(ROOMS)
    resp = await client.get("/feeds/a")
    assert CONNECTION_ID.fullmatch(resp.headers["X-Connection-Id"])
    reader = SSEReader(resp)
    await client.get("/ch/send", params={"path": "/feeds/a", "data": "first"})
    event = await reader.next()
    assert (event.data, event.event) == ("first", None)


async def test_what_onconnect_sends_to_its_own_reader_arrives_after_its_first_event(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS)
    alice = await join(client, "/rooms/red", {"dm": "1"})
    assert alice.welcome["type"] == "welcome"
    early = await alice.reader.next()
    assert (early.data, early.event, early.id) == ("early", "dm", None)
    assert await alice.next_json() == {"type": "join", "id": alice.id}


async def test_closeconnection_during_onconnect_refuses_it_and_says_goodbye(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS)
    resp = await client.get("/rooms/red", params={"closeSelf": "1"})
    assert resp.status == 403
    assert "not today" in (await resp.json())["error"]["message"]
    await wait_for(lambda: _disconnects_any(client), what="onDisconnect")
    [left] = (await seen(client))["disconnects"]
    assert left["reason"] == "not today"
    assert not client.app[STREAMS].connections and not client.app[STREAMS].held


async def test_a_refused_or_passing_reader_leaves_no_channel_behind(engine_client: MakeClient, scripts_dir) -> None:
    """max_channels cannot be used up by readers that are refused, or that come and go on a channel
    nobody has sent to: neither leaves a channel."""
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_channels=8))
    client = await engine_client(ROOMS, config=config)
    registry = client.app[STREAMS]
    for i in range(30):
        resp = await client.get(f"/rooms/r{i}", params={"deny": "1"})
        assert resp.status == 403
        resp = await client.get(f"/feeds/f{i}")
        assert resp.status == 200
        resp.close()
        await wait_for(lambda i=i: f"/feeds/f{i}" not in registry.channels, what="the passing reader's channel to go")
    assert not [p for p, c in registry.channels.items() if c.stream.pattern]
    alice = await join(client, "/rooms/fine")
    assert alice.welcome["room"] == "fine"


async def test_a_stream_removed_while_onconnect_runs_turns_the_reader_away(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    client = await engine_client(ROOMS)
    pending = asyncio.ensure_future(client.get("/rooms/red", params={"wait": "400"}))
    await wait_for(lambda: client.app[STREAMS].held, what="onConnect to start")
    record = await client.app[SCRIPTS].save(ROOMS, 'register("/ch/seen", () => "reloaded");')
    assert record.status == "loaded"
    resp = await pending
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "stream_changed"
    await wait_for(lambda: any("] left " in r.getMessage() for r in caplog.records), what="the owed onDisconnect")
    [line] = [r.getMessage() for r in caplog.records if "] left " in r.getMessage()]
    assert line.endswith(": the stream was removed")
    assert not client.app[STREAMS].connections and "/rooms/red" not in client.app[STREAMS].channels


async def test_owed_ondisconnect_calls_are_not_crowded_out_by_busy_clients(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture,
) -> None:
    """limits.max_pending_calls refuses clients' calls past it, never the onDisconnect a connection is owed."""
    caplog.set_level(logging.INFO, logger="engine")
    client = await engine_client(ROOMS, max_pending_calls=3)
    members = [await join(client, f"/rooms/r{i}") for i in range(6)]
    busy = [asyncio.ensure_future(say(client, "/rooms/r0", members[0], {"wait": 500, "n": i})) for i in range(3)]
    context = client.app[SCRIPTS].records[ROOMS].context
    await wait_for(lambda: context._inflight >= 3, what="the script to be busy")
    refused = await say(client, "/rooms/r1", members[1], {"echo": "x"})
    assert refused.status == 503 and (await refused.json())["error"]["code"] == "script_busy"
    for m in members[1:]:
        m.reader.response.close()
    assert [r.status for r in await asyncio.gather(*busy)] == [200, 200, 200]
    expected = {f"[channels.js] left {m.id}: the client went away" for m in members[1:]}
    await wait_for(lambda: expected <= {r.getMessage() for r in caplog.records}, what="every owed onDisconnect")


async def test_a_script_addresses_only_its_own_streams_connections(engine_client: MakeClient) -> None:
    other = """
register("/o/to", (req) => { sendToConnection(req.query.id, "from another script"); return "ok"; });
register("/o/close", (req) => { closeConnection(req.query.id, "hijacked"); return "ok"; });
"""
    client = await engine_client(ROOMS, extra={"other.js": other})
    alice = await join(client, "/rooms/red")
    await alice.next_json()
    await client.get("/o/to", params={"id": alice.id})
    await client.get("/o/close", params={"id": alice.id})
    await client.get("/ch/to", params={"id": alice.id, "data": "from the owner"})
    assert (await alice.reader.next()).data == "from the owner"  # nothing of other.js's came first
    assert alice.id in client.app[STREAMS].connections
    logs = await (await client.get("/_engine/scripts/other.js/logs")).json()
    assert sum(f"no connection {alice.id} of this script's streams" in line for line in logs["lines"]) == 2


async def test_a_hooked_streams_reader_brings_a_bounded_query(engine_client: MakeClient) -> None:
    client = await engine_client(ROOMS)
    resp = await client.get("/rooms/red", params={"pad": "x" * 3000})
    assert resp.status == 414 and (await resp.json())["error"]["code"] == "query_too_long"
    assert (await seen(client))["connects"] == []
    alice = await join(client, "/rooms/red", {"pad": "x" * 1000})
    assert alice.welcome["room"] == "red"


async def test_what_onconnect_sends_its_new_channel_arrives_whatever_is_freed_meanwhile(
    engine_client: MakeClient, scripts_dir,
) -> None:
    """A channel made by onConnect's own send numbers from wherever freed channels left the count:
    the reader's replay starts at the channel's start, not at a number taken before it existed."""
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, history_ttl_seconds=0.1, heartbeat_seconds=0.05))
    client = await engine_client(ROOMS, config=config)
    await client.get("/ch/send", params={"path": "/feeds/hist", "data": "h"})
    registry = client.app[STREAMS]
    pending = asyncio.ensure_future(join(client, "/rooms/fresh", {"waitThenJoin": "400"}))
    await wait_for(lambda: "/feeds/hist" not in registry.channels, what="the other channel to be freed")
    member = await pending
    assert member.welcome == {"type": "welcome", "late": True}
    assert await member.next_json() == {"type": "join", "id": member.id}


async def test_a_reload_that_adds_auth_while_onconnect_runs_turns_the_tokenless_reader_away(
    engine_client: MakeClient, scripts_dir,
) -> None:
    config = replace(make_config(scripts_dir), auth=replace(make_config(scripts_dir).auth, jwt_secret="s" * 32))
    client = await engine_client(ROOMS, config=config)
    pending = asyncio.ensure_future(client.get("/rooms/anon", params={"wait": "400"}))
    await wait_for(lambda: client.app[STREAMS].held, what="onConnect to start")
    opening = 'registerWebStream("/rooms/{room}", {'
    source = (scripts_dir / ROOMS).read_text().replace(opening, opening + ' auth: "required",')
    record = await client.app[SCRIPTS].save(ROOMS, source)
    assert record.status == "loaded", record.last_error
    resp = await pending
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "stream_changed"
    assert not client.app[STREAMS].connections
