"""Scale-out through Redis: several engine processes (real `python -m engine`) on a real
`redis-server` share every channel, resume anywhere, reach each other's connections, and keep
serving when Redis goes away."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from cluster import Engine, Redis, free_port, start_engine, wait_up
from conftest import TEST_SCRIPTS
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
    for stale in (events[0].id.split("-")[0][::-1] + "-1",):
        r = await _read(session, three[2].url + "/feed", last_id=stale)
        reset = await r.next()
        assert reset.event == "reset" and "unknown event id" in json.loads(reset.data)["reason"]
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
    gone = cid.split(".")[0] + ".AAAAAAAAAAAAAAAA"
    async with session.post(three[0].url + "/rooms/lobby", json="x", headers={"X-Connection-Id": gone}) as r:
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
