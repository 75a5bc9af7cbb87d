"""The applier on its own: order, slices, what waits is counted and freed, closing wakes nobody twice."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import wait_for

from engine.sandbox.applier import Applier, Steps


def steps(log: list[Any], name: str, n: int, gate: asyncio.Future[None] | None = None) -> Steps:
    for i in range(n):
        if gate is not None and i == 1:
            yield gate  # work that must be awaited: everything after it waits too
        log.append((name, i))
        yield None


async def test_work_applies_in_order_and_what_waits_is_counted_until_applied() -> None:
    applier = Applier("t.js")
    log: list[Any] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    applier.run(steps(log, "a", 3, gate), size=100)  # stops at the gate: the rest waits
    applier.run(steps(log, "b", 2), size=200)
    applier.run(steps(log, "c", 2), size=300)
    assert log == [("a", 0)]
    assert applier.waiting_bytes == 600 and not applier.idle
    gate.set_result(None)
    await wait_for(lambda: applier.idle, what="the backlog to drain")
    assert log == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]
    assert applier.waiting_bytes == 0
    applier.run(steps(log, "d", 1), size=400)  # idle again: applied at once, never counted
    assert log[-1] == ("d", 0) and applier.waiting_bytes == 0


async def test_closing_drops_what_waits_and_frees_its_count() -> None:
    applier = Applier("t.js")
    log: list[Any] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    applier.run(steps(log, "a", 3, gate), size=10)
    applier.run(steps(log, "b", 2), size=20)
    await applier.close()
    assert applier.waiting_bytes == 0 and log == [("a", 0)]
    applier.run(steps(log, "c", 1), size=30)  # closed: nothing more is applied
    assert log == [("a", 0)]
