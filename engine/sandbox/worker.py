"""A single dedicated thread that runs submitted callables in order and resolves asyncio futures.

A QuickJS context must live and die on one thread, so every script gets one of these. It is leaner
than run_in_executor: one queue put in, one call_soon_threadsafe out.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = object()


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class Worker:
    """Runs callables on its own thread; `teardown` runs last, on that same thread."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, teardown: Callable[[], None]) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._teardown = teardown
        self._stopped = False
        self._done: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Queue `fn` for the thread; the returned future resolves on the loop."""
        if self._stopped:
            raise RuntimeError("worker is stopped")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fn, fut))
        return fut

    async def stop(self) -> None:
        """Let queued work finish, run the teardown on the thread, and wait for the thread to end."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(_STOP)
        await asyncio.shield(self._done)
        self._thread.join()

    def _run(self) -> None:
        call_soon = self._loop.call_soon_threadsafe
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                fn, fut = item
                try:
                    result = fn()
                except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                    call_soon(_resolve, fut, False, e)
                else:
                    call_soon(_resolve, fut, True, result)
        finally:
            try:
                self._teardown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                    call_soon(_resolve, self._done, True, None)
