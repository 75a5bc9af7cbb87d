"""Runaway scripts: an infinite loop or a memory bomb fails that call only; everything else serves."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid

import pytest
from conftest import TEST_SCRIPTS, MakeClient, wait_for
from sse_client import SSEReader

from engine.http.keys import SCRIPTS, STREAMS


async def test_infinite_loop_is_a_504_and_the_script_keeps_serving(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await engine_client("limits.js", script_time_ms=300)
    resp = await client.get("/limits/loop")
    assert resp.status == 504
    err = (await resp.json())["error"]
    assert err["code"] == "script_timeout"
    lines = [r.getMessage() for r in caplog.records if err["request_id"] in r.getMessage()]
    assert any("limits.js:3: ran past the time limit of 300 ms" in m for m in lines), lines
    assert (await (await client.get("/limits/calls")).json()) == {"calls": 1}  # same context, state kept


@pytest.mark.parametrize("path", ["/limits/bomb", "/limits/string-bomb"])
async def test_memory_bomb_is_a_500_and_the_script_keeps_serving(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    client = await engine_client("limits.js", script_memory_mb=16)
    resp = await client.get(path)
    assert resp.status == 500
    err = (await resp.json())["error"]
    assert err["code"] == "script_memory"
    assert any("ran past the memory limit of 16 MB" in r.getMessage() for r in caplog.records)
    for _ in range(3):  # the context stays usable, again and again
        assert (await (await client.get("/limits/calls")).json())["calls"] >= 1
        assert (await client.get(path)).status == 500


async def test_repeated_memory_bombs_never_bring_the_server_down(engine_client: MakeClient) -> None:
    """Out-of-memory again and again, caught by the script or not: the process survives and serves."""
    client = await engine_client("limits.js", "other.js", script_memory_mb=16)
    for _ in range(15):
        for path in ("/limits/bomb", "/limits/string-bomb", "/limits/bomb-caught"):
            resp = await client.get(path)
            assert resp.status in (200, 500), path  # a caught OOM may answer; an uncaught one is a 500
        assert (await client.get("/other")).status == 200
    assert (await (await client.get("/limits/calls")).json())["calls"] == 45


async def test_stack_overflow_is_a_500(engine_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    client = await engine_client("limits.js")
    resp = await client.get("/limits/stack")
    assert resp.status == 500
    assert any("RangeError: Maximum call stack size exceeded" in r.getMessage() for r in caplog.records)


async def test_promise_job_loop_is_stopped(engine_client: MakeClient) -> None:
    client = await engine_client("limits.js", script_time_ms=200, handler_timeout_ms=3000)
    resp = await client.get("/limits/promise-loop")
    assert resp.status in (500, 504)
    assert (await client.get("/limits/calls")).status == 200


@pytest.mark.parametrize("path", ["/limits/spin-after-await", "/limits/spin-after-then", "/limits/promise-loop"])
async def test_a_handler_whose_promise_spins_answers_when_it_is_interrupted(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """QuickJS drops a Promise job it interrupts, so the handler's Promise would never settle: the
    engine fails it at the interrupt. With a 2-minute handler_timeout_ms, an answer at all (before
    the test's own timeout) shows it did not wait for that."""
    client = await engine_client("limits.js", "other.js", script_time_ms=200, handler_timeout_ms=120_000)
    resp = await client.get(path)
    assert resp.status == 504 and (await resp.json())["error"]["code"] == "script_timeout"
    assert any("limits.js" in r.getMessage() and "ran past the time limit of 200 ms" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert (await client.get("/limits/calls")).status == 200  # the script keeps serving
    assert (await client.get("/other")).status == 200


async def test_commands_per_call_are_capped(engine_client: MakeClient) -> None:
    client = await engine_client("limits.js", max_commands_per_call=1000)
    assert await (await client.get("/limits/logs", params={"n": "1000"})).text() == "logged 1000"
    resp = await client.get("/limits/logs", params={"n": "1001"})
    assert resp.status == 500  # the 1001st writeLog threw, uncaught
    record = client.app[SCRIPTS].records["limits.js"]
    assert sum(1 for line in record.logs if line.startswith("line ")) <= 500  # logs.script_lines
    assert (await client.get("/limits/calls")).status == 200


async def test_a_huge_batch_of_commands_is_applied_in_order_in_slices(engine_client: MakeClient) -> None:
    """20,000 messages from one call reach the reader complete and in order, before the call's
    response, and other work on the event loop runs between slices of them: a task that looks at
    the stream on every turn of the loop sees it part-way through the batch, not only before and
    after (the stall itself is measured by bench/stall_bench.py, not here)."""
    client = await engine_client("limits.js")
    resp = await client.get("/limits/stream")
    reader = SSEReader(resp)
    stream = client.app[STREAMS].channels["/limits/stream"]
    seen: set[int] = set()
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.add(stream.sent)
            await asyncio.sleep(0)

    task = asyncio.create_task(watch())
    answer = await client.get("/limits/sends", params={"n": "20000"})
    done.set()
    await task
    assert await answer.text() == "sent 20000"
    assert stream.sent == 20000  # all applied before the response
    events = await reader.take(20000)
    assert [e.data for e in events] == [str(i) for i in range(1, 20001)]
    assert len([n for n in seen if 0 < n < 20000]) >= 2, sorted(seen)
    resp.close()


async def test_other_scripts_serve_while_one_loops(engine_client: MakeClient) -> None:
    """The loop runs on its own thread: the event loop and every other script keep answering."""
    # The budget is process CPU time (see README), so leave room for this test's own busy loop.
    client = await engine_client("limits.js", "other.js", script_time_ms=5000)
    looping = asyncio.create_task(client.get("/limits/busy", params={"ms": "500"}))
    await asyncio.sleep(0)  # let the request go out
    answered_while_busy = 0
    while not looping.done():
        resp = await client.get("/other")
        assert resp.status == 200
        answered_while_busy += 1
    assert (await looping).status == 200
    assert answered_while_busy >= 5


async def test_load_that_loops_fails_on_the_time_limit(engine_client: MakeClient) -> None:
    client = await engine_client("bad_load_loop.js", "other.js", script_time_ms=300)
    record = client.app[SCRIPTS].records["bad_load_loop.js"]
    assert record.status == "failed" and "ran past the time limit of 300 ms" in record.last_error
    assert (await client.get("/load-loop")).status == 404
    assert (await client.get("/other")).status == 200


async def test_load_that_allocates_fails_on_the_memory_limit(engine_client: MakeClient) -> None:
    client = await engine_client("bad_load_bomb.js", "other.js", script_memory_mb=16)
    record = client.app[SCRIPTS].records["bad_load_bomb.js"]
    assert record.status == "failed" and "ran past the memory limit of 16 MB" in record.last_error
    assert (await client.get("/other")).status == 200


async def test_failed_loads_leave_no_thread_behind(engine_client: MakeClient) -> None:
    before = {t.name for t in threading.enumerate()}
    client = await engine_client("bad_syntax.js", "bad_throw_at_load.js", "bad_load_loop.js", "other.js",
                                 script_time_ms=200)
    js_threads = sorted(t.name for t in threading.enumerate() if t.name.startswith("js:") and t.name not in before)
    assert js_threads == ["js:other.js"]
    await client.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("js:")]


async def test_many_requests_in_parallel(engine_client: MakeClient) -> None:
    client = await engine_client("api_response.js")
    resps = await asyncio.gather(*(client.get("/r/promise", params={"x": str(i)}) for i in range(200)))
    assert [await r.text() for r in resps] == [f"resolved {i}" for i in range(200)]


def test_logging_is_quiet_for_passing_calls(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_calls_waiting_on_one_script_are_bounded(engine_client: MakeClient,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    name = f"limits-{uuid.uuid4().hex[:8]}.js"  # its own name: the log's once-per-5-s memory is per script
    client = await engine_client("other.js", extra={name: (TEST_SCRIPTS / "limits.js").read_text()},
                                 max_pending_calls=3)
    ctx = client.app[SCRIPTS].records[name].context
    waiting = [asyncio.create_task(client.get("/limits/hold")) for _ in range(3)]
    await wait_for(lambda: ctx.inflight == 3, what="three calls waiting on the script")
    busy = await client.get("/limits/hold")
    assert busy.status == 503
    body = await busy.json()
    assert body["error"]["code"] == "script_busy" and "max_pending_calls" in body["error"]["message"]
    # any client can make a script busy: a flood of 503s is one log line (a warning), not one each
    for _ in range(50):
        assert (await client.get("/limits/hold")).status == 503
    lines = [r for r in caplog.records if "calls already wait" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert (await client.get("/other")).status == 200  # other scripts are not affected
    await wait_for(lambda: ctx.inflight == 3, what="the refused call to leave no trace")
    # The held calls go away with their clients; then the script takes calls again.
    for task in waiting:
        task.cancel()
    await wait_for(lambda: ctx.inflight == 0, what="the waiting calls to go away with their clients")
    assert await (await client.get("/limits/release")).text() == "ok"
    assert await (await client.get("/limits/hold")).text() == "released"


RESPONSES = """
register("/big/text", (req) => "x".repeat(Number(req.query.n)));
register("/big/json", (req) => ({ body: { s: "é".repeat(Number(req.query.n)) } }));
registerGraphQLQuery("big", "type Query { big(n: Int!): String }", (args) => "x".repeat(args.n));
"""


async def test_responses_and_resolver_values_are_bounded(engine_client: MakeClient) -> None:
    client = await engine_client("other.js", extra={"big.js": RESPONSES}, max_response_bytes=1000)
    assert len(await (await client.get("/big/text", params={"n": "1000"})).text()) == 1000
    for path, n in (("/big/text", "1001"), ("/big/json", "500")):  # 500 x 2 bytes of UTF-8, with quotes: over
        resp = await client.get(path, params={"n": n})
        assert resp.status == 500 and (await resp.json())["error"]["code"] == "bad_response", path
    ok = await (await client.post("/graphql", json={"query": "{ big(n: 900) }"})).json()
    assert len(ok["data"]["big"]) == 900
    over = await (await client.post("/graphql", json={"query": "{ big(n: 2000) }"})).json()
    assert over["data"] == {"big": None} and over["errors"][0]["extensions"]["code"] == "BAD_RESPONSE"
    assert (await client.get("/other")).status == 200


HEADERS = """
register("/h/many", (req) => {
  const h = {};
  for (let i = 0; i < Number(req.query.n); i++) h["X-H" + i] = "v";
  return { body: "ok", headers: h };
});
register("/h/long", (req) => ({ body: "ok", headers: { "X-Long": "v".repeat(Number(req.query.n)) } }));
"""


async def test_response_headers_are_bounded(engine_client: MakeClient) -> None:
    client = await engine_client(extra={"h.js": HEADERS})
    assert (await client.get("/h/many", params={"n": "100"})).headers["X-H99"] == "v"
    assert len((await client.get("/h/long", params={"n": "8000"})).headers["X-Long"]) == 8000
    for path, n in (("/h/many", "101"), ("/h/long", "8200"), ("/h/many", "200000")):
        resp = await client.get(path, params={"n": n})
        assert resp.status == 500 and (await resp.json())["error"]["code"] == "bad_response", (path, n)
