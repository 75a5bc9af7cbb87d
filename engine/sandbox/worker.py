"""A single dedicated thread that runs submitted callables in order and resolves asyncio futures.

A QuickJS context must live and die on one thread, so every script gets one of these. Cross-thread
hand-offs cost far more than a JS call (tens of microseconds against a few), so both directions are
batched: calls submitted in one loop iteration travel as one queue item, and everything the thread
finished before it next looks at its queue goes back in one `call_soon_threadsafe` (sooner when
calls are slow: no finished result waits more than a couple of milliseconds for its batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = object()
_HOLD = 0.002  # seconds a finished result may wait for the rest of its batch before it is sent back
Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
Result = tuple["asyncio.Future[Any]", bool, Any]


def resolve_all(results: list[Result], extra: Any = None) -> None:
    """The default delivery: settle each future with what its callable returned or raised."""
    for fut, ok, value in results:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class Worker:
    """Runs callables on its own thread, in submission order; `teardown` runs last, on that thread.

    `after_batch` (on the thread) runs once after each batch; its result travels back with the
    batch's results to `deliver` (on the loop), which must settle the futures.
    """

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        teardown: Callable[[], None],
        after_batch: Callable[[], Any] | None = None,
        deliver: Callable[[list[Result], Any], None] = resolve_all,
    ) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._batch: list[Job] = []
        self._teardown = teardown
        self._after_batch = after_batch
        self._deliver = deliver
        self._stopped = False
        self._done: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(*args)` for the thread (sent at the end of this loop iteration); resolves on the loop."""
        if self._stopped:
            raise RuntimeError("worker is stopped")
        fut: asyncio.Future[T] = self._loop.create_future()
        if not self._batch:
            self._loop.call_soon(self._flush)
        self._batch.append((fn, args, fut))
        return fut

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        self._queue.put(batch)

    async def stop(self) -> None:
        """Let queued work finish, run the teardown on the thread, and wait for the thread to end."""
        if not self._stopped:
            self._stopped = True
            if self._batch:
                self._flush()
            self._queue.put(_STOP)
        await asyncio.shield(self._done)
        self._thread.join()

    def _run(self) -> None:
        get, get_nowait, call_soon = self._queue.get, self._queue.get_nowait, self._loop.call_soon_threadsafe
        stop = False
        try:
            while not stop:
                item = get()
                results: list[Result] = []
                since = monotonic()
                while True:
                    if item is _STOP:
                        stop = True
                        break
                    for fn, args, fut in item:
                        if fut.cancelled():  # its caller is gone (a client left): do not run it
                            continue
                        try:
                            results.append((fut, True, fn(*args)))
                        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                            results.append((fut, False, e))
                        if monotonic() - since > _HOLD:  # slow calls: send back what is done so far
                            call_soon(self._deliver, results, None)
                            results, since = [], monotonic()
                    try:
                        item = get_nowait()
                    except queue.Empty:
                        break
                if results:
                    extra = self._after_batch() if self._after_batch is not None else None
                    call_soon(self._deliver, results, extra)
        finally:
            try:
                self._teardown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                    call_soon(resolve_all, [(self._done, True, None)])
