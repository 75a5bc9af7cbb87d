"""Streaming handlers: a route that yields is written item by item (NDJSON, SSE or raw), slows down for
a slow client, cleans up when the client leaves, and ends with an error item when the script fails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, wait_for
from sse_client import SSEReader

from engine.http.keys import SCRIPTS, STREAMS

SCRIPT = "streaming.js"


async def state(client: TestClient) -> dict[str, Any]:
    return await (await client.get("/s/state")).json()  # type: ignore[no-any-return]


async def test_each_item_is_written_as_it_comes(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    resp = await client.get("/s/gated")
    assert resp.status == 200 and resp.content_type == "application/x-ndjson"
    # the first line arrives while the generator still waits: not at the end
    assert json.loads(await asyncio.wait_for(resp.content.readline(), 5)) == {"first": True}
    await client.get("/s/open")
    assert json.loads(await resp.content.readline()) == {"second": True}
    assert await resp.content.read() == b""


async def test_sse_raw_and_bytes(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    resp = await client.get("/s/sse", headers={"Accept": "text/event-stream"})
    assert resp.content_type == "text/event-stream"
    assert await resp.text() == ('retry: 500\nid: 1\nevent: tick\ndata: {"n":1}\n\n'
                                 "data: plain text\n\n" 'data: {"n":3}\n\n')
    resp = await client.get("/s/csv")
    assert resp.content_type == "text/csv" and resp.headers["Content-Disposition"].startswith("attachment")
    assert await resp.text() == "a,b\n0,0\n1,1\n2,4\n"
    resp = await client.get("/s/bytes")
    assert await resp.read() == bytes([0, 1, 2, 255, 128])


async def test_a_slow_client_slows_its_generator_and_a_gone_one_ends_it(engine_client: MakeClient,
                                                                       scripts_dir) -> None:
    """100,000 items of 1 KB to a client that stops reading: the generator stays just ahead of what
    was read (bounded by the server's low-water mark and the kernel's buffers), not 100 MB ahead;
    when the client leaves, its `finally` runs."""
    client = await engine_client(SCRIPT)
    log = SSEReader(await client.get("/s/log"))
    resp = await client.get("/s/many", params={"n": "100000", "pad": "1000"})
    for _ in range(100):
        await resp.content.readline()

    async def settled() -> bool:
        """Five round trips to the script in a row see the same count: the generator is parked.
        (Without backpressure it would only settle at 100,000.)"""
        samples = [(await state(client))["produced"] for _ in range(5)]
        return len(set(samples)) == 1

    await wait_for(settled, timeout=20, what="the generator to stop for the client")
    produced = (await state(client))["produced"]
    assert produced < 20_000, produced  # a few MB of socket buffers at most, not the 100 MB asked for
    resp.close()
    assert json.loads((await log.next()).data) == {"finally": True}
    await wait_for(lambda: _state_is(client, running=0, finals=1), what="the generator to end")
    assert client.app[STREAMS].connection_count == 1  # the log reader only


def _state_is(client: TestClient, **expected: int) -> Any:
    async def check() -> bool:
        s = await state(client)
        return all(s[k] == v for k, v in expected.items())
    return check()


@pytest.mark.parametrize(("path", "first", "code"), [
    ("/s/throws", [1], "script_error"),
    ("/s/throws-first", [], "script_error"),
    ("/s/spin", [], "script_timeout"),  # the 1 is taken in the same step as the spin, and goes with it
    ("/s/bad?kind=undefined", [], "bad_response"),
    ("/s/bad?kind=function", [], "bad_response"),
    ("/s/bad?kind=cycle", [], "bad_response"),
])
async def test_a_failing_generator_ends_with_an_error_item(engine_client: MakeClient, path: str, first: list[Any],
                                                           code: str) -> None:
    client = await engine_client(SCRIPT, script_time_ms=200)
    resp = await client.get(path)
    assert resp.status == 200
    lines = [json.loads(line) for line in (await asyncio.wait_for(resp.text(), 10)).splitlines()]
    assert lines[:-1] == first
    assert lines[-1]["error"]["code"] == code
    resp = await client.get(path, headers={"Accept": "text/event-stream"})
    assert "event: error\n" in await asyncio.wait_for(resp.text(), 10)


async def test_a_generator_that_never_yields_gets_heartbeats_then_times_out(engine_client: MakeClient,
                                                                          scripts_dir) -> None:
    config = make_config(scripts_dir, handler_timeout_ms=600)
    config = replace(config, streams=replace(config.streams, heartbeat_seconds=0.1))
    client = await engine_client(SCRIPT, config=config)
    resp = await client.get("/s/never")
    body = await asyncio.wait_for(resp.text(), 10)
    lines = body.split("\n")
    assert lines.count("") >= 3  # blank lines: NDJSON heartbeats while the step waited
    assert json.loads([line for line in lines if line][-1])["error"]["code"] == "script_timeout"


async def test_a_thousand_clients_that_vanish_leave_nothing_behind(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    sem = asyncio.Semaphore(100)

    async def one() -> None:
        async with sem:
            resp = await client.get("/s/many", params={"n": "1000000"})
            await resp.content.readline()
            resp.close()  # gone mid-stream

    await asyncio.gather(*(one() for _ in range(1000)))
    await wait_for(lambda: _state_is(client, running=0, finals=1000), timeout=30, what="every finally")
    assert client.app[STREAMS].connection_count == 0


async def test_streaming_responses_count_toward_max_connections(engine_client: MakeClient, scripts_dir) -> None:
    config = make_config(scripts_dir)
    client = await engine_client(SCRIPT, config=replace(config, streams=replace(config.streams, max_connections=1)))
    first = await client.get("/s/gated")
    await first.content.readline()
    second = await client.get("/s/many", params={"n": "3"})
    assert second.status == 503 and (await second.json())["error"]["code"] == "too_many_connections"
    await client.get("/s/open")
    await first.read()
    # the refused one was never started (a generator's body runs at its first next()), and is dropped
    assert (await state(client))["produced"] == 0
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the place to be given back")


EXAMPLES = Path(__file__).resolve().parent.parent / "scripts"


async def test_the_streaming_examples_write_as_they_go(engine_client: MakeClient, scripts_dir) -> None:
    config = make_config(EXAMPLES)
    client = await engine_client(config=config)
    resp = await client.get("/stream")  # seed 003: 100 items, 100 ms apart: the first come long before the last
    first = json.loads(await asyncio.wait_for(resp.content.readline(), 5))
    assert first["count"] == 0
    assert json.loads(await resp.content.readline())["count"] == 1
    resp.close()
    resp = await client.post("/process", json={"items": ["a", "b", "c", "d"]})
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [line["result"] for line in lines] == ["A", "B", "C", "D"]
    assert lines[-1]["progress"] == {"current": 4, "total": 4, "percentage": 100}
    resp = await client.get("/export/users.csv", params={"rows": "250"})
    assert resp.headers["Content-Disposition"] == "attachment; filename=users.csv"
    rows = (await resp.text()).splitlines()
    assert rows[0] == "id,name,email" and len(rows) == 251 and rows[-1] == "249,user249,user249@example.com"
    sse = SSEReader(await client.get("/counter", params={"every": "10"}))  # SSE whatever the Accept
    events = await sse.take(10)
    assert [(e.event, e.id, json.loads(e.data)["count"]) for e in events] == [("count", str(n), n) for n in
                                                                              range(1, 11)]
    await wait_for(lambda: _counting(client, 0), what="the counter's finally")
    # leaving early runs the `finally` too (seed 004's sse.done), at once: not when the counter's
    # 5-second sleep would have ended
    early = SSEReader(await client.get("/counter", params={"every": "5000"}))
    await early.next()
    assert (await (await client.get("/counter/open")).json())["counting"] == 1
    early.response.close()
    await wait_for(lambda: _counting(client, 0), timeout=2.5, what="the cleanup when the client left")


def _counting(client: TestClient, n: int) -> Any:
    async def check() -> bool:
        return (await (await client.get("/counter/open")).json())["counting"] == n  # type: ignore[no-any-return]
    return check()


async def test_a_reload_ends_open_streaming_responses_cleanly(engine_client: MakeClient, scripts_dir) -> None:
    client = await engine_client(SCRIPT, handler_timeout_ms=500)
    resp = await client.get("/s/gated")
    assert json.loads(await resp.content.readline()) == {"first": True}
    source = (scripts_dir / SCRIPT).read_text()
    record = await client.app[SCRIPTS].save(SCRIPT, source + "\n// saved again\n")
    assert record.status == "loaded"
    assert await asyncio.wait_for(resp.content.read(), 10) == b""  # ended, without an error item
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="its place to be given back")


async def test_a_response_runs_at_most_its_time_unless_the_handler_opts_into_more(engine_client: MakeClient,
                                                                                  scripts_dir) -> None:
    config = make_config(scripts_dir)
    client = await engine_client(SCRIPT, config=replace(config, limits=replace(config.limits,
                                                                              stream_response_seconds=0.3)))
    lines = (await asyncio.wait_for((await client.get("/s/slow")).text(), 10)).splitlines()
    assert 1 <= len(lines) - 1 < 20 and json.loads(lines[-1])["error"]["code"] == "stream_too_long"
    lines = (await asyncio.wait_for((await client.get("/s/slow-long")).text(), 10)).splitlines()
    assert [int(line) for line in lines] == list(range(20))  # maxSeconds: 10
    resp = await client.get("/s/bad-max")
    assert resp.status == 500 and (await resp.json())["error"]["code"] == "bad_response"


async def test_head_on_a_streaming_route_takes_no_value(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    resp = await client.head("/s/many", params={"n": "1000000000"})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/x-ndjson")
    assert (await state(client))["produced"] == 0


async def test_a_status_without_a_body_takes_no_value_and_keeps_the_connection_sound(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /s/no-content HTTP/1.1\r\nHost: x\r\n\r\nGET /s/state HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 204 ")
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # the next answer follows at once
    assert second.startswith(b"HTTP/1.1 200 ")
    writer.close()


async def test_an_iterator_nobody_takes_is_ended(engine_client: MakeClient) -> None:
    """The client left while the handler was still working: the iterator it returned later is not
    left registered in the script; its `finally` runs."""
    client = await engine_client(SCRIPT)
    pending = asyncio.ensure_future(client.get("/s/late"))
    await wait_for(lambda: _state_is(client, gated=1), what="the handler to wait")
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)
    await client.get("/s/open")
    await wait_for(lambda: _state_is(client, finals=1), what="the orphan's finally")


@pytest.mark.parametrize("path", ["/s/stuck", "/s/unsendable"])
async def test_a_step_that_fails_a_limit_still_ends_its_iterator(engine_client: MakeClient, path: str) -> None:
    client = await engine_client(SCRIPT, handler_timeout_ms=300)
    body = await asyncio.wait_for((await client.get(path)).text(), 10)
    assert json.loads(body.splitlines()[-1])["error"]["code"] in ("script_timeout", "bad_response")
    await wait_for(lambda: _state_is(client, finals=1), what="its finally")


async def test_an_http10_client_gets_the_end_of_the_body_by_the_connection_closing(engine_client: MakeClient) -> None:
    client = await engine_client(SCRIPT)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /s/csv HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)  # EOF comes with the body, not after a keep-alive wait
    assert data.endswith(b"a,b\n0,0\n1,1\n2,4\n")
    writer.close()


async def test_a_timer_the_generator_awaits_holds_nothing_of_the_engine(engine_client: MakeClient,
                                                                        scripts_dir) -> None:
    """The client leaves while its generator awaits a minute-long timer: its place is given back at
    once, the timer settles at once so the generator's `finally` runs now, and a reload retires the
    old version without waiting for the minute."""
    client = await engine_client(SCRIPT)
    before = (await (await client.get("/s/state")).json())["finals"]
    resp = await client.get("/s/sleepy")
    assert json.loads(await resp.content.readline()) == 1
    resp.close()
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the place to be given back")

    async def finished() -> bool:
        return (await (await client.get("/s/state")).json())["finals"] == before + 1  # type: ignore[no-any-return]
    await wait_for(finished, what="the generator's finally, long before its minute-long sleep ends")
    # the second of two sleeps is set in the first one's continuation: it wakes at once too
    resp = await client.get("/s/sleepier")
    assert json.loads(await resp.content.readline()) == 1
    resp.close()

    async def finished_too() -> bool:
        return (await (await client.get("/s/state")).json())["finals"] == before + 2  # type: ignore[no-any-return]
    await wait_for(finished_too, what="the finally of a generator asleep twice in a row")
    record = await client.app[SCRIPTS].save(SCRIPT, (scripts_dir / SCRIPT).read_text() + "\n// again\n")
    assert record.status == "loaded"
    await wait_for(lambda: client.app[SCRIPTS].background == 0, what="the old version to retire")



async def test_timers_a_generator_set_end_with_its_response_and_only_then(engine_client: MakeClient) -> None:
    """A generator's interval stops when its client leaves; a timer a generator that ended by
    itself left behind fires at its time, not early."""
    client = await engine_client(SCRIPT)

    def state_when(holds: Callable[[dict[str, Any]], bool]) -> Callable[[], Awaitable[Any]]:
        async def check() -> Any:
            state = await (await client.get("/s/state")).json()
            return state if holds(state) else None
        return check

    resp = await client.get("/s/ticking")
    await resp.content.readline()
    before = (await wait_for(state_when(lambda s: s["ticks"] > 3), what="the generator's interval"))["finals"]
    resp.close()
    await wait_for(state_when(lambda s: s["finals"] == before + 1), what="the generator's finally")
    assert await (await client.get("/s/probe")).text() == "probing"
    probed = await wait_for(state_when(lambda s: s["probe"] is not None), what="the probe's own timer")
    assert probed["probe"] == 0, "the interval ticked on after its response ended"

    assert json.loads(await (await client.get("/s/leaves-a-timer")).text()) == "done"
    late = (await wait_for(state_when(lambda s: s["late"] is not None), what="the timer it left"))["late"]
    assert late >= 295, f"a timer left by a generator that ended by itself fired early ({late} ms)"


async def test_a_left_generator_that_sleeps_in_a_loop_gets_its_sleeps_back(engine_client: MakeClient) -> None:
    """Waking a stopped generator's sleeps early is bounded: one that loops on a sleep without
    ever reaching a yield wakes early 100 times, then sleeps its 50 ms again, rather than spin."""
    client = await engine_client(SCRIPT)

    async def spins_when(holds: Callable[[dict[str, Any]], bool]) -> Any:
        state = await (await client.get("/s/state")).json()
        return state if holds(state) else None

    resp = await client.get("/s/spinner")
    assert json.loads(await resp.content.readline()) == 1
    resp.close()
    await wait_for(lambda: spins_when(lambda s: s["spins"] > 100), what="its early wakes")
    assert await (await client.get("/s/spin-rate")).text() == "measuring"
    rate = (await wait_for(lambda: spins_when(lambda s: s["spinRate"] is not None), what="500 ms of it"))["spinRate"]
    assert 5 <= rate <= 12, f"{rate} turns in 500 ms of a loop on a 50 ms sleep"
