"""Timers run on the script's thread, survive between calls, and fail alone; logs from console.*."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import MakeClient, wait_for


async def state(client) -> dict:
    return await (await client.get("/timers/state")).json()


async def test_timeout_set_at_load_fires_and_cleared_one_does_not(engine_client: MakeClient) -> None:
    client = await engine_client("api_timers.js")
    await wait_for(lambda: _has(client, "load-timeout"), what="the load-time setTimeout")
    assert "cancelled-should-not-run" not in (await state(client))["fired"]


async def _has(client, tag: str) -> bool:
    return tag in (await state(client))["fired"]


async def test_interval_ticks_until_cleared(engine_client: MakeClient) -> None:
    client = await engine_client("api_timers.js")
    assert await (await client.get("/timers/start", params={"every": "10"})).text() == "started"

    async def ticked() -> bool:
        return (await state(client))["ticks"] >= 5

    await wait_for(ticked, what="five interval ticks")
    stopped = (await (await client.get("/timers/stop")).json())["ticks"]
    # once cleared it never runs again: ask after a later timer of our own has fired
    await client.get("/timers/throwing")
    await wait_for(lambda: _has(client, "after-throw"), what="a later timer")
    assert (await state(client))["ticks"] == stopped


async def test_a_throwing_timer_is_logged_and_others_run(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await engine_client("api_timers.js")
    await client.get("/timers/throwing")
    await wait_for(lambda: _has(client, "after-throw"), what="the timer after the throwing one")
    assert any("timer" in r.getMessage() and "Error: timer exploded" in r.getMessage() for r in caplog.records)


async def test_an_interval_that_loops_is_cleared_after_the_time_limit(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await engine_client("api_timers.js", script_time_ms=200)
    await client.get("/timers/looping-interval")
    await wait_for(lambda: any("was cleared: its callback ran past the time limit" in r.getMessage()
                               for r in caplog.records), what="the interval to be cleared")
    assert any("a timer failed: api_timers.js" in r.getMessage() for r in caplog.records)
    # the script still answers, and the looping interval is gone
    assert (await client.get("/timers/state")).status == 200


async def test_bad_timer_arguments_throw(engine_client: MakeClient) -> None:
    client = await engine_client("api_timers.js")
    resp = await client.get("/timers/bad")
    assert resp.status == 400
    assert (await resp.json())["error"] == "setTimeout: the callback must be a function, got \"code string\""


async def test_handler_awaiting_a_timer(engine_client: MakeClient) -> None:
    client = await engine_client("api_response.js")
    assert await (await client.get("/r/promise", params={"x": "1"})).text() == "resolved 1"


async def test_console_levels_reach_the_server_log_and_list_logs(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="engine.script")
    client = await engine_client("api_console.js")
    lines = await (await client.get("/console")).json()
    assert lines[0] == 'log 1 true null undefined {"a":[1,2]}'
    assert lines[1:4] == ["info line", "debug line", "warn line"]
    assert lines[4].startswith("error line TypeError: bad type")
    assert lines[5] == "cyclic [object Object]"
    assert len(lines[6]) < 17000 and lines[6].endswith("... (truncated)")
    levels = {r.getMessage(): r.levelno for r in caplog.records if r.name == "engine.script"}
    assert levels["[api_console.js] info line"] == logging.INFO
    assert levels["[api_console.js] debug line"] == logging.DEBUG
    assert levels["[api_console.js] warn line"] == logging.WARNING
    assert any(m.startswith("[api_console.js] error line TypeError") and lvl == logging.ERROR
               for m, lvl in levels.items())


LOCAL_TIMERS = """
const errors = [];
for (const [name, call] of [["setLocalTimeout", () => setLocalTimeout("code string", 5)],
                            ["setLocalInterval", () => setLocalInterval({}, 5)],
                            ["setLocalInterval", () => setLocalInterval(() => {}, "soon")]]) {
  try { call(); errors.push(name + ": accepted"); } catch (e) { errors.push(e.message); }
}
let ticks = 0;
const id = setLocalInterval(() => { ticks++; if (ticks === 3) clearInterval(id); }, 1);  // at least 4 ms
register("/local", () => ({ body: { errors: errors, ticks: ticks } }));
"""


async def test_local_timers_check_their_arguments_as_the_others_do(engine_client: MakeClient) -> None:
    client = await engine_client(extra={"local.js": LOCAL_TIMERS})

    async def state() -> Any:
        body = await (await client.get("/local")).json()
        return body if body["ticks"] == 3 else None
    body = await wait_for(state, what="the local interval to tick three times and stop")
    assert body["errors"][0] == 'setLocalTimeout: the callback must be a function, got "code string"'
    assert body["errors"][1].startswith("setLocalInterval: the callback must be a function")
    assert body["errors"][2] == "setLocalInterval: accepted"  # a bad delay is 0, as for setInterval (then 4 ms)
