"""Scale-out through Redis: several engine processes (real `python -m engine`) on a real
`redis-server` share every channel, resume anywhere, reach each other's connections, and keep
serving when Redis goes away."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from cluster import Engine, Proxy, Redis, free_port, start_engine, wait_healthy, wait_up
from conftest import TEST_SCRIPTS, wait_for
from sse_client import SSEReader


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    server = Redis(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def _scripts(folder: Path) -> Path:
    scripts = folder / "scripts"
    scripts.mkdir(exist_ok=True)
    shutil.copy(TEST_SCRIPTS / "cluster.js", scripts / "cluster.js")
    return scripts


@pytest.fixture(scope="module")
def three(redis: Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Engine]]:
    folder = tmp_path_factory.mktemp("three")
    scripts = _scripts(folder)
    engines = [start_engine(scripts, redis.url, folder, ENGINE_STREAMS_HISTORY="50",
                            ENGINE_STREAMS_HEARTBEAT_SECONDS="600") for _ in range(3)]
    try:
        wait_up(engines)
        yield engines
    finally:
        for e in engines:
            e.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


async def _read(session: aiohttp.ClientSession, url: str, last_id: str | None = None) -> SSEReader:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    resp = await session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_read=30))
    assert resp.status == 200, await resp.text()
    return SSEReader(resp)


async def _get(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def test_a_message_published_on_one_process_reaches_readers_on_all(
        three: list[Engine], session: aiohttp.ClientSession) -> None:
    readers = [await _read(session, e.url + "/rooms/everyone") for e in three]
    for r in readers:
        assert (await r.next()).event == "connected"
        await r.next()  # the welcome
    sent = await _get(session, three[0].url + "/pub?n=5&path=/rooms/everyone")
    got = [await r.take(5) for r in readers]
    assert [[json.loads(e.data)["i"] for e in events] for events in got] == [list(range(5))] * 3
    ids = [[e.id for e in events] for events in got]
    assert ids[0] == ids[1] == ids[2], "every process gives a message the same id"
    assert all(json.loads(e.data)["from"] == sent["process"] for events in got for e in events)
    for r in readers:
        r.response.close()


async def test_a_reader_resumes_on_another_process(three: list[Engine], session: aiohttp.ClientSession) -> None:
    first = await _read(session, three[0].url + "/feed")
    await _get(session, three[2].url + "/pub?n=4")
    events = await first.take(4)
    first.response.close()
    # process 2 never had a reader of /feed: it loads the channel from Redis for this one
    again = await _read(session, three[1].url + "/feed", last_id=events[1].id)
    assert [e.id for e in await again.take(2)] == [events[2].id, events[3].id]
    # an id another process gave out a moment ago, ahead of what reached this one: it waits for it
    sent = await _get(session, three[0].url + "/pub?n=1")
    ahead = await _read(session, three[0].url + "/feed", last_id=events[3].id)
    newest = await ahead.next()
    ahead.response.close()
    await _get(session, three[0].url + "/pub?n=1")
    caught_up = await _read(session, three[1].url + "/feed", last_id=newest.id)
    after = await caught_up.next()
    assert after.event is None and json.loads(after.data)["from"] == sent["process"] and after.id != newest.id
    caught_up.response.close()
    live = await again.next()
    assert json.loads(live.data)["i"] == 0 and live.id != events[3].id
    again.response.close()
    # an id from a channel's earlier life (another epoch) or past the history: a reset, then all there is
    epoch = events[0].id.split("-")[0]
    for stale, why in ((epoch[::-1] + "-1", "unknown event id"), ("garbage\u00e9", "unknown event id"),
                       (epoch + "-99999999", "ahead of this stream")):  # this one after waiting 2 s for it
        r = await _read(session, three[2].url + "/feed", last_id=stale)
        reset = await r.next()
        assert reset.event == "reset" and why in json.loads(reset.data)["reason"]
        r.response.close()
    watcher = await _read(session, three[2].url + "/feed")
    await _get(session, three[0].url + "/pub?n=60")  # the history keeps 50
    assert json.loads((await watcher.take(60))[-1].data)["i"] == 59  # process 3 has them all
    watcher.response.close()
    r = await _read(session, three[2].url + "/feed", last_id=events[1].id)
    reset = await r.next()
    assert reset.event == "reset" and "left the history" in json.loads(reset.data)["reason"]
    assert len(await r.take(50)) == 50
    r.response.close()


async def test_connection_messages_reach_whichever_process_holds_the_connection(
        three: list[Engine], session: aiohttp.ClientSession) -> None:
    reader = await _read(session, three[1].url + "/rooms/lobby")
    connected = await reader.next()
    cid = json.loads(connected.data)["id"]
    welcome = json.loads((await reader.next()).data)
    # sendToConnection from another process
    assert await (await session.get(three[0].url + "/to", params={"id": cid, "text": "psst"})).text() == "ok"
    dm = await reader.next()
    assert dm.event == "dm" and json.loads(dm.data)["dm"] == "psst"
    # a client's message posted to another process runs onMessage where the connection is, and
    # the answer comes back to the poster
    async with session.post(three[2].url + "/rooms/lobby", json="whereami", headers={"X-Connection-Id": cid}) as r:
        assert r.status == 200, await r.text()
        assert await r.json() == {"process": welcome["process"], "id": cid}
    async with session.post(three[0].url + "/rooms/other", json="x", headers={"X-Connection-Id": cid}) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "wrong_channel"
    # an id its process does not have, and one of a process that does not exist: 404 at once
    for gone in (cid.split(".")[0] + ".AAAAAAAAAAAAAAAA", "0badf00d.AAAAAAAAAAAAAAAA"):
        async with session.post(three[0].url + "/rooms/lobby", json="x", headers={"X-Connection-Id": gone},
                                timeout=aiohttp.ClientTimeout(total=3)) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_connection"
    # closeConnection from a third process
    assert await (await session.get(three[2].url + "/kick", params={"id": cid, "reason": "bye"})).text() == "ok"
    close = await reader.next()
    assert close.event == "close" and json.loads(close.data)["reason"] == "bye"
    with pytest.raises(EOFError):
        await reader.next()


class _Tally(asyncio.Protocol):
    """A raw reader of one SSE response: a hash of every byte after the head, and a count of the
    events in it; done once `expected` events came. Byte-identical streams mean the same events
    with the same ids in the same order (one of them is parsed in full to say which)."""

    def __init__(self, expected: int, keep: bool) -> None:
        self.expected = expected
        self.hash = hashlib.sha256()
        self.events = -1  # the `retry:` preface ends like an event
        self.kept = bytearray() if keep else None
        self.done = asyncio.get_running_loop().create_future()
        self._head = b""
        self._last = b""

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            data, self._head = self._head[end + 4:], None  # type: ignore[assignment]
        self.hash.update(data)
        if self.kept is not None:
            self.kept += data
        self.events += (self._last + data[:1]).count(b"\n\n") + data.count(b"\n\n")
        self._last = data[-1:]
        if self.events >= self.expected and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(EOFError(f"the stream ended after {self.events} events"))


async def test_a_thousand_readers_over_three_processes_get_a_burst_of_ten_thousand_in_order(
        three: list[Engine], session: aiohttp.ClientSession) -> None:
    n_readers, n_events = 1000, 10_000
    loop = asyncio.get_running_loop()
    tallies: list[_Tally] = []
    transports: list[asyncio.BaseTransport] = []
    try:
        for i in range(n_readers):
            transport, tally = await loop.create_connection(lambda i=i: _Tally(n_events, keep=i == 0), "127.0.0.1",
                                                            three[i % 3].port)
            # HTTP/1.0: the body unchunked, so equal events are equal bytes
            transport.write(b"GET /burst HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
            tallies.append(tally)
            transports.append(transport)
        for _ in range(n_events // 1000):
            await _get(session, three[0].url + "/pub?n=1000&path=/burst")
        await asyncio.wait_for(asyncio.gather(*[t.done for t in tallies]), 120)
    finally:
        for transport in transports:
            transport.close()
    assert tallies[0].kept is not None
    first = bytes(tallies[0].kept)
    numbers = [int(m) for m in re.findall(rb'\ndata: \{"i":(\d+),', first)]
    assert numbers == list(range(1000)) * (n_events // 1000), "the first reader missed or reordered an event"
    ids = [int(m) for m in re.findall(rb"\nid: [0-9a-f]+-(\d+)\n", b"\n" + first)]
    assert ids == list(range(ids[0], ids[0] + n_events)), "its ids are not consecutive"
    assert len({t.hash.hexdigest() for t in tallies}) == 1, "a reader's stream differs from the first one's"
    assert all(t.events == n_events for t in tallies)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(free_port(), tmp_path / "redis")
    server.folder.mkdir()
    server.start()
    yield server
    server.stop()


async def _two(session: aiohttp.ClientSession, scripts: Path, urls: list[str], folder: Path) -> list[Engine]:
    """Two engines; waited for without blocking the loop (the proxy runs on it)."""
    engines = [start_engine(scripts, url, folder, ENGINE_STREAMS_HISTORY="50", ENGINE_STREAMS_HEARTBEAT_SECONDS="600")
               for url in urls]
    for e in engines:
        await wait_healthy(session, e)
    return engines


def _said(engine: Engine, text: str) -> int:
    return engine.log.read_text().count(text)


async def test_redis_killed_and_restarted_mid_stream(own_redis: Redis, tmp_path: Path,
                                                     session: aiohttp.ClientSession) -> None:
    engines = await _two(session, _scripts(tmp_path), [own_redis.url] * 2, tmp_path)
    a, b = engines
    try:
        reader = await _read(session, a.url + "/feed")
        await _get(session, b.url + "/pub?n=3")
        before = await reader.take(3)
        own_redis.stop()
        health = await wait_healthy(session, a, "degraded")
        assert health["broker"]["state"] == "degraded"  # type: ignore[index]
        # this process's own messages still reach its readers, with ids of its own
        await _get(session, a.url + "/pub?n=2")
        local = await reader.take(2)
        assert [json.loads(e.data)["i"] for e in local] == [0, 1]
        assert local[0].id.split("-")[0] != before[0].id.split("-")[0]
        # back, with what it had kept (appendonly): numbering goes on where it was, nothing to reset
        own_redis.start()
        await wait_healthy(session, a)
        await wait_healthy(session, b)
        await _get(session, b.url + "/pub?n=2")
        after = await reader.take(2)
        assert [json.loads(e.data)["i"] for e in after] == [0, 1]
        assert [int(e.id.split("-")[1]) for e in after] == [4, 5]
        assert after[0].id.split("-")[0] == before[0].id.split("-")[0]
        assert _said(a, "is unreachable") == 1, "the outage is said once"
        # back empty (its data lost): the channel's numbering starts over, and readers are told
        own_redis.stop()
        await wait_healthy(session, a, "degraded")
        for f in own_redis.folder.iterdir():
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        own_redis.start()
        await wait_healthy(session, a)
        await _get(session, b.url + "/pub?n=1")
        events = [await reader.next(), await reader.next()]
        assert events[0].event == "reset" and "reset" in json.loads(events[0].data)["reason"]
        assert json.loads(events[1].data)["i"] == 0 and events[1].id.endswith("-1")
        reader.response.close()
    finally:
        for e in engines:
            e.stop()


async def test_a_process_cut_off_from_redis_gets_what_it_missed_or_a_reset(
        own_redis: Redis, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    proxy = Proxy(own_redis.port)
    await proxy.mend()
    engines = await _two(session, _scripts(tmp_path), [proxy.url, own_redis.url], tmp_path)
    a, b = engines
    try:
        reader = await _read(session, a.url + "/feed")
        await _get(session, b.url + "/pub?n=1")
        first = await reader.next()
        # cut off while the other process publishes: once back, its readers get the gap, in order
        await proxy.cut()
        await wait_healthy(session, a, "degraded")
        await _get(session, b.url + "/pub?n=5")
        await proxy.mend()
        await wait_healthy(session, a)
        missed = await reader.take(5)
        assert [json.loads(e.data)["i"] for e in missed] == list(range(5))
        assert [e.id for e in missed] == [first.id[:-1] + str(n) for n in range(2, 7)]
        # more missed than the history holds (50): a reset, then what the history has
        await proxy.cut()
        await wait_healthy(session, a, "degraded")
        await _get(session, b.url + "/pub?n=60")
        await proxy.mend()
        await wait_healthy(session, a)
        reset = await reader.next()
        assert reset.event == "reset" and "left the history" in json.loads(reset.data)["reason"]
        await _get(session, b.url + "/pub?n=1")
        assert json.loads((await reader.next()).data) == {"i": 0, "from": json.loads(missed[0].data)["from"]}
        reader.response.close()
    finally:
        for e in engines:
            e.stop()
        await proxy.cut()


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_an_unreachable_redis_at_start_is_an_error_unless_asked_to_start_anyway(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    done = _run("--port", str(free_port()), "--scripts", str(_scripts(tmp_path)),
                "--broker-url", f"redis://127.0.0.1:{port}")
    assert done.returncode == 1
    assert f"Redis at 127.0.0.1:{port} is unreachable" in done.stderr and "broker.start_degraded" in done.stderr
    bad = _run("--broker-url", "http://127.0.0.1:1")
    assert bad.returncode == 2 and "redis://" in bad.stderr


async def test_starting_degraded_then_healthy_once_redis_comes(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    server = Redis(free_port(), tmp_path)
    engine = start_engine(_scripts(tmp_path), server.url, tmp_path, ENGINE_BROKER_START_DEGRADED="true")
    try:
        await wait_healthy(session, engine, "degraded")
        reader = await _read(session, engine.url + "/feed")
        await _get(session, engine.url + "/pub?n=1")
        assert json.loads((await reader.next()).data)["i"] == 0
        server.start()
        await wait_healthy(session, engine)
        await _get(session, engine.url + "/pub?n=1")
        assert (await reader.next()).id.endswith("-1")  # numbered by Redis now
        reader.response.close()
    finally:
        engine.stop()
        server.stop()


def test_workers_need_the_redis_broker() -> None:
    done = _run("--workers", "2", "--port", str(free_port()))
    assert done.returncode == 2 and "broker.url" in done.stderr


async def test_workers_serve_one_port_together(redis: Redis, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    port = free_port()
    log = tmp_path / "workers.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "--workers", "2", "--port", str(port), "--scripts",
                                 str(_scripts(tmp_path)), "--broker-url", redis.url], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        seen: set[str] = set()
        deadline = asyncio.get_running_loop().time() + 20
        while len(seen) < 2:
            assert proc.poll() is None, log.read_text()
            assert asyncio.get_running_loop().time() < deadline, f"one process only: {seen} {log.read_text()}"
            try:  # a new connection each time: the kernel spreads them over the two
                async with aiohttp.ClientSession() as fresh, fresh.get(f"http://127.0.0.1:{port}/who") as r:
                    seen.add((await r.json())["process"])
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        assert log.read_text().count("serving on") == 2
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert log.read_text().count("stopped") == 2


async def _ticks(session: aiohttp.ClientSession, engine: Engine, n: int) -> list[dict[str, object]]:
    reader = await _read(session, engine.url + "/ticks")
    try:
        return [json.loads(e.data) for e in await reader.take(n)]
    finally:
        reader.response.close()


async def test_a_scripts_top_level_timer_runs_once_in_the_cluster(
        three: list[Engine], session: aiohttp.ClientSession) -> None:
    ticks = await _ticks(session, three[1], 15)
    assert len({t["process"] for t in ticks}) == 1, "the ticker ran on more than one process"
    numbers = [t["tick"] for t in ticks]
    assert numbers == list(range(numbers[0], numbers[0] + 15)), "a tick is missing or repeated"
    leader = ticks[0]["process"]
    states = [await _get(session, e.url + "/health") for e in three]
    assert sum(bool(s["broker"]["runs_cluster_timers"]) for s in states) == 1  # type: ignore[index]
    for e in three:  # setLocalInterval runs everywhere; a top-level loop on a sleep only where elected
        local = await _get(session, e.url + "/local-ticks")
        looped = await _get(session, e.url + "/looped")
        assert local["localTicks"] > 0
        assert (looped["looped"] > 0) == (looped["process"] == leader), looped


async def test_another_process_takes_the_timers_over_when_the_elected_one_goes(
        own_redis: Redis, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    engines = await _two(session, _scripts(tmp_path), [own_redis.url] * 2, tmp_path)
    try:
        first = (await _ticks(session, engines[0], 3))[0]["process"]
        by_process = {(await _get(session, e.url + "/who"))["process"]: e for e in engines}
        leader, other = by_process[first], next(e for e in engines if e is not by_process[first])
        assert (await _get(session, other.url + "/looped"))["looped"] == 0  # parked where not elected
        leader.proc.kill()  # no goodbye: the lease runs out (3 s) and the other process takes it
        leader.proc.wait()
        ticks = await asyncio.wait_for(_ticks(session, other, 3), 10)
        assert {t["process"] for t in ticks} == {(await _get(session, other.url + "/who"))["process"]}
        assert (await _get(session, other.url + "/looped"))["looped"] > 0, "the parked loop did not go on"
    finally:
        for e in engines:
            e.stop()


async def test_a_message_redis_refuses_is_logged_and_nothing_else_stops(
        three: list[Engine], redis: Redis, session: aiohttp.ClientSession) -> None:
    """Someone else's key where a channel's should be (a string, not a hash): that message is
    refused and said in the log; the broker stays up and the next channel's messages go through."""
    assert redis.command("SET", "rt:c:/rooms/taken:meta", "not a hash").startswith(b"+OK")
    await _get(session, three[0].url + "/pub?n=1&path=/rooms/taken")
    reader = await _read(session, three[1].url + "/rooms/fine")
    await reader.take(2)  # connected, welcome
    await _get(session, three[0].url + "/pub?n=1&path=/rooms/fine")
    assert json.loads((await reader.next()).data)["i"] == 0
    reader.response.close()
    assert "Redis refused a message to /rooms/taken" in three[0].log.read_text()
    assert (await _get(session, three[0].url + "/health"))["status"] == "ok"


async def test_a_process_stops_following_a_channel_its_readers_left(own_redis: Redis, tmp_path: Path,
                                                                    session: aiohttp.ClientSession) -> None:
    """A plain stream's channel stays, but its mirror goes once nobody here has read it for
    broker.mirror_idle_seconds; a reader who comes later gets it back, history and all."""
    engine = start_engine(_scripts(tmp_path), own_redis.url, tmp_path, ENGINE_BROKER_MIRROR_IDLE_SECONDS="0.3")
    try:
        await wait_healthy(session, engine)
        reader = await _read(session, engine.url + "/feed")
        await _get(session, engine.url + "/pub?n=2")
        first = await reader.take(2)
        assert (await _get(session, engine.url + "/health"))["broker"]["channels_mirrored"] == 1  # type: ignore[index]
        reader.response.close()

        async def unmirrored() -> bool:
            return (await _get(session, engine.url + "/health"))["broker"]["channels_mirrored"] == 0  # type: ignore[index]
        await wait_for(unmirrored, what="the mirror to go")
        again = await _read(session, engine.url + "/feed", last_id=first[0].id)
        assert (await again.next()).id == first[1].id  # loaded back from Redis
        await _get(session, engine.url + "/pub?n=1")
        assert json.loads((await again.next()).data)["i"] == 0
        again.response.close()
    finally:
        engine.stop()


async def test_hundreds_of_readers_of_new_channels_at_once_do_not_read_as_an_outage(
        three: list[Engine], session: aiohttp.ClientSession) -> None:
    """Each new channel is loaded from Redis: 300 readers of 300 new channels at once wait for the
    broker's connections and loads in turn, rather than failing as if Redis had gone."""
    resps = await asyncio.gather(*[session.get(three[0].url + f"/rooms/crowd{i}") for i in range(300)])
    assert all(r.status == 200 for r in resps)
    health = await _get(session, three[0].url + "/health")
    assert health["status"] == "ok", health
    await _get(session, three[1].url + "/pub?n=1&path=/rooms/crowd299")
    last = SSEReader(resps[-1])
    assert (await last.next()).event == "connected"
    await last.next()  # welcome
    assert json.loads((await last.next()).data)["i"] == 0
    for r in resps:
        r.close()


async def test_a_channel_path_that_is_not_valid_text_does_not_stop_publishing(
        three: list[Engine], session: aiohttp.ClientSession) -> None:
    """A path with a lone surrogate (JS strings may hold one) is a channel like any other; the
    process's publishing goes on after it."""
    async with session.post(three[0].url + "/_engine/publish", data=b'{"path": "/rooms/\\ud800", "data": "odd"}',
                            headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200, await r.text()
    reader = await _read(session, three[0].url + "/rooms/after")
    await reader.take(2)
    await _get(session, three[0].url + "/pub?n=1&path=/rooms/after")
    assert json.loads((await reader.next()).data)["i"] == 0
    assert "could not be sent" not in three[0].log.read_text()
    reader.response.close()


async def test_messages_on_the_engines_channel_names_that_are_not_its_own_are_dropped(
        three: list[Engine], redis: Redis, session: aiohttp.ClientSession) -> None:
    """Anyone with Redis can PUBLISH on the engine's channel names: what is not the engine's own
    format is dropped with a warning, and the channel and the node go on."""
    reader = await _read(session, three[2].url + "/rooms/garbage")
    await reader.take(2)
    node = (await _get(session, three[2].url + "/health"))["broker"]["node"]  # type: ignore[index]
    for channel, data in (("rt:m:/rooms/garbage", "no newlines"), ("rt:m:/rooms/garbage", "zz\n1\n\nt\nx"),
                          ("rt:m:/rooms/garbage", "ab\nnot a number\n\nt\nx"), (f"rt:n:{node}", "not json"),
                          (f"rt:n:{node}", '{"op": "to", "id": 5, "data": []}'), (f"rt:n:{node}", '{"op": "msg"}')):
        assert redis.command("PUBLISH", channel, data).startswith(b":")
    await _get(session, three[0].url + "/pub?n=1&path=/rooms/garbage")
    assert json.loads((await reader.next()).data)["i"] == 0
    log = three[2].log.read_text()
    assert "a malformed message on /rooms/garbage was dropped" in log
    assert "a malformed message on this node's channel was dropped" in log
    assert "Traceback" not in log
    reader.response.close()
