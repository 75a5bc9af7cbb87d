"""Applying one script's work on the event loop, in order, in slices that let everyone else run.

What a script call produced (its commands, then waking its caller) arrives as a generator of steps.
Most of it is small and applies at once, inline; once a batch has used `budget` seconds of the
loop, the rest waits for the next turn of the loop, behind a task, and so does everything the
script sends after it, so its order is kept. A step may also be an awaitable (work that yields by
itself, such as a large GraphQL execution), which the applier awaits before the next step.

Closing drops what is left; a generator closed before it started runs no `finally`, so whoever
waits on the work must be woken by its owner too (the script context does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Generator
from typing import Any

log = logging.getLogger("engine.scripts")

Steps = Generator[Awaitable[Any] | None, None, None]


class _Then:
    """`first` (an awaitable a step produced), then the rest of the steps; closing closes both."""

    def __init__(self, first: Awaitable[Any], rest: Steps) -> None:
        self._first: Awaitable[Any] | None = first
        self._rest = rest

    def __iter__(self) -> _Then:
        return self

    def __next__(self) -> Awaitable[Any] | None:
        first, self._first = self._first, None
        return first if first is not None else next(self._rest)

    def close(self) -> None:
        if asyncio.iscoroutine(self._first):
            self._first.close()  # never awaited: say so to nobody
        self._first = None
        self._rest.close()


Work = Steps | _Then


class Applier:
    """One script's work queue: applied inline while it is cheap, in slices once it is not."""

    def __init__(self, name: str, budget: float = 0.005) -> None:
        self.name = name
        self.budget = budget
        self._backlog: deque[tuple[Work, int]] = deque()  # and the size of what each came with
        self.waiting_bytes = 0  # of what waits in the backlog: the script's owner keeps it bounded
        self._task: asyncio.Task[None] | None = None
        self._inline = False
        self._closed = False

    @property
    def idle(self) -> bool:
        return self._task is None and not self._backlog and not self._inline

    def run(self, steps: Steps, size: int = 0) -> None:
        """Apply `steps` (what came with `size` bytes): at once if nothing of this script is waiting,
        otherwise after what is."""
        if self._closed:
            steps.close()
            return
        if not self.idle:
            self._wait(steps, size)
            return
        self._inline = True
        try:
            rest = self._apply_inline(steps)
        finally:
            self._inline = False
        if rest is not None:
            self._wait(rest, size, first=True)

    def _wait(self, work: Work, size: int, first: bool = False) -> None:
        if first:
            self._backlog.appendleft((work, size))
        else:
            self._backlog.append((work, size))
        self.waiting_bytes += size
        self._start()

    def _apply_inline(self, steps: Steps) -> Work | None:
        """Run steps until the budget is spent or a step must be awaited; return what is left."""
        deadline = time.perf_counter() + self.budget
        try:
            for step in steps:
                if step is not None:
                    return _Then(step, steps)
                if time.perf_counter() > deadline:
                    return steps
        except Exception:  # noqa: BLE001 - one broken step must not stop this script's later work
            log.exception("%s: applying its commands failed", self.name)
        return None

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._backlog:
                steps, size = self._backlog[0]
                started = time.perf_counter()
                try:
                    for step in steps:
                        if step is not None:
                            await step
                            started = time.perf_counter()
                        elif time.perf_counter() - started > self.budget:
                            await asyncio.sleep(0)  # let the loop breathe
                            started = time.perf_counter()
                except Exception:  # noqa: BLE001 - as above
                    log.exception("%s: applying its commands failed", self.name)
                self._backlog.popleft()
                self.waiting_bytes -= size
                steps.close()
        finally:
            self._task = None

    async def close(self) -> None:
        """Stop applying; what was still waiting is closed."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._backlog:
            self._backlog.popleft()[0].close()
        self.waiting_bytes = 0
