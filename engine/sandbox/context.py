"""One script's QuickJS context on its own thread: load, handle requests, fire timers, settle Promises.

Every call goes through the prelude's dispatcher (`__rt`), which returns one JSON envelope:
`{o: outcome, c: commands, s: settled promises, t: next timer due (epoch ms)}`. Commands go to the
`sink` before the caller sees the outcome, so a message a handler sends is queued before its HTTP
response leaves.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib.resources import files
from typing import Any

import quickjs

from engine.config import LimitsConfig
from engine.errors import ScriptBadResponse, ScriptError, ScriptGone, ScriptMemoryError, ScriptTimeout
from engine.sandbox.host_api import HOST_NAMES
from engine.sandbox.worker import Worker

PRELUDE = files("engine.sandbox").joinpath("prelude.js").read_text(encoding="utf-8")
_UNCHANGED: Any = object()
_LINE = re.compile(r"<input>:(\d+)")
# The prelude's dispatcher frames close every stack; they are the engine's, not the script's.
_DISPATCH_FRAME = re.compile(r"^\s*at (handle|fire|apply|drain) \((<input>:\d+|native)\)$")

Commands = list[dict[str, Any]]
Sink = Callable[["ScriptContext", Commands], None]
ErrorSink = Callable[["ScriptContext", ScriptError, str], None]


@dataclass
class Envelope:
    """What one dispatch into JS produced."""

    out: dict[str, Any] | None = None
    commands: Commands = field(default_factory=list)
    settled: list[dict[str, Any]] = field(default_factory=list)
    next_timer: Any = _UNCHANGED  # epoch ms, None for no timers, or _UNCHANGED
    error: ScriptError | None = None

    def merge(self, later: Envelope) -> None:
        self.commands += later.commands
        self.settled += later.settled
        if later.next_timer is not _UNCHANGED:
            self.next_timer = later.next_timer


class ScriptContext:
    """A QuickJS context owned by one thread. All JS runs there; the loop only awaits results."""

    def __init__(
        self,
        name: str,
        limits: LimitsConfig,
        sink: Sink,
        on_error: ErrorSink,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.name = name
        self._limits = limits
        self._sink = sink
        self._on_error = on_error
        self._loop = loop or asyncio.get_running_loop()
        self._worker = Worker(f"js:{name}", self._loop, self._t_teardown)
        self._ctx: Any = None
        self._rt: dict[str, Any] = {}
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._next_due: float | None = None
        self._firing = False
        self._active = False
        self._closed = False

    # ---- loop side -----------------------------------------------------------------------

    async def start(self, logs: list[str], log_max: int, claims: dict[str, str]) -> None:
        """Create the context on its thread and install the host API."""
        setup = json.dumps({"logs": logs, "logMax": log_max, "claims": claims})
        env = await self._worker.submit(partial(self._t_start, setup))
        if env.error:
            raise env.error

    async def load(self, source: str) -> Envelope:
        """Run the script's top level. The envelope is not applied: the caller decides (atomic swap)."""
        return await self._submit(partial(self._t_load, source))

    def activate(self, envelope: Envelope) -> None:
        """The load was accepted: start its timers."""
        self._active = True
        self._update_timers(envelope.next_timer)

    async def set_claims(self, claims: dict[str, str]) -> None:
        """Tell the script which routes other scripts own, so `register` can throw at the call."""
        await self._submit(partial(self._t_plain, "setClaims", json.dumps(claims)))

    async def handle(self, handler: int, request: tuple[Any, ...]) -> dict[str, Any]:
        """Call a route handler with the request's pieces (see `engine.http.request.js_request`).

        Returns the response record `{s, b, t, h}` or raises a ScriptError.
        """
        env = await self._submit(partial(self._t_call, "handle", handler, *request))
        out = env.out or {}
        promise = out.get("p")
        if promise is not None:
            self._pending[promise] = self._loop.create_future()
        self._after(env)
        if env.error:
            raise env.error
        if promise is not None:
            try:
                async with asyncio.timeout(self._limits.handler_timeout_ms / 1000):
                    out = await self._pending[promise]
            except TimeoutError:
                raise ScriptTimeout(
                    self.name,
                    f"the handler's Promise did not settle within {self._limits.handler_timeout_ms} ms",
                ) from None
            finally:
                self._pending.pop(promise, None)
        return self._response(out)

    async def close(self) -> None:
        """Stop timers, fail what still waits on this context, let queued calls finish, end the thread."""
        self._closed = True
        self._active = False
        if self._timer:
            self._timer.cancel()
            self._timer = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ScriptGone(self.name, "the script was reloaded or removed"))
        await self._worker.stop()

    @property
    def closed(self) -> bool:
        return self._closed

    def _submit(self, fn: Callable[[], Envelope]) -> asyncio.Future[Envelope]:
        if self._worker.stopped:
            raise ScriptGone(self.name, "the script was reloaded or removed")
        return self._worker.submit(fn)

    def _after(self, env: Envelope) -> None:
        """Apply what a dispatch produced: commands to the sink, settled Promises, the timer schedule."""
        if env.commands:
            self._sink(self, env.commands)
        for item in env.settled:
            fut = self._pending.get(item["id"])
            if fut is not None and not fut.done():
                fut.set_result(item["o"])
        self._update_timers(env.next_timer)

    def _response(self, out: dict[str, Any]) -> dict[str, Any]:
        if "r" in out:
            return out["r"]  # type: ignore[no-any-return]
        if "bad" in out:
            raise ScriptBadResponse(self.name, out["bad"])
        return self._raise_js(out["e"])

    def _raise_js(self, info: dict[str, Any]) -> Any:
        stack, where = self._stack(info.get("st", ""))
        if info.get("oom"):
            raise self._memory_error(stack, where)
        raise ScriptError(self.name, info["m"], stack, where)

    def _stack(self, raw: str) -> tuple[str, str]:
        """The script's frames (named after it), and "name.js:line" of the innermost one with a line."""
        lines = [line for line in raw.strip().split("\n") if line.strip()]
        while lines and _DISPATCH_FRAME.match(lines[-1]):
            lines.pop()
        stack = "\n".join(lines)
        m = _LINE.search(stack)
        return stack.replace("<input>", self.name), f"{self.name}:{m.group(1)}" if m else ""

    def _memory_error(self, stack: str, where: str) -> ScriptMemoryError:
        limit = self._limits.script_memory_mb
        return ScriptMemoryError(self.name, f"ran past the memory limit of {limit} MB", stack, where)

    def _update_timers(self, due: Any) -> None:
        if due is not _UNCHANGED:
            self._next_due = due
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if self._next_due is None or not self._active or self._firing:
            return
        delay = max(0.0, self._next_due / 1000 - time.time()) + 0.001
        self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._closed or self._worker.stopped:
            return
        self._firing = True
        self._worker.submit(partial(self._t_call, "fire")).add_done_callback(self._fired)

    def _fired(self, fut: asyncio.Future[Envelope]) -> None:
        self._firing = False
        if self._closed or fut.cancelled():
            return
        env = fut.result()
        if env.error:
            self._on_error(self, env.error, "a timer")
        self._after(env)

    # ---- thread side: everything below runs on the worker thread -------------------------

    def _t_start(self, setup: str) -> Envelope:
        ctx = quickjs.Context()
        ctx.set_memory_limit(self._limits.script_memory_mb * 1024 * 1024)
        ctx.set_time_limit(self._limits.script_time_ms / 1000)
        ctx.eval(PRELUDE)(json.dumps(HOST_NAMES))
        self._ctx = ctx
        self._rt = {name: ctx.eval(f"__rt.{name}") for name in ("setup", "setClaims", "drain", "handle", "fire")}
        return self._t_call("setup", setup)

    def _t_teardown(self) -> None:
        # JS objects must die on the thread that made them.
        self._rt = {}
        self._ctx = None

    def _t_load(self, source: str) -> Envelope:
        try:
            self._ctx.eval(source)
        except quickjs.JSException as e:
            return self._t_failed(e)
        return self._t_call("drain", "")

    def _t_plain(self, name: str, *args: Any) -> Envelope:
        self._rt[name](*args)
        return Envelope()

    def _t_call(self, name: str, *args: Any) -> Envelope:
        try:
            env = self._parse(self._rt[name](*args))
            if self._t_pump():
                env.merge(self._parse(self._rt["drain"]("")))
        except quickjs.JSException as e:
            return self._t_failed(e)
        except ScriptError as e:
            failed = self._t_failed(None)
            failed.error = e
            return failed
        return env

    def _t_pump(self) -> bool:
        """Run queued Promise jobs; bounded, since a job may queue another forever."""
        deadline = time.monotonic() + self._limits.script_time_ms / 1000
        ran = False
        while self._ctx.execute_pending_job():
            ran = True
            if time.monotonic() > deadline:
                raise ScriptTimeout(self.name, "Promise jobs kept running past the time limit")
        return ran

    def _t_failed(self, exc: quickjs.JSException | None) -> Envelope:
        """An uncatchable failure (throw at top level, time limit, memory): classify it, then drain."""
        error = self._classify(exc) if exc is not None else ScriptError(self.name, "failed")
        self._ctx.gc()
        try:
            env = self._parse(self._rt["drain"]("timeout" if isinstance(error, ScriptTimeout) else ""))
        except quickjs.JSException:
            env = Envelope()
        env.error = error
        return env

    def _classify(self, exc: quickjs.JSException) -> ScriptError:
        first, _, rest = str(exc).strip().partition("\n")
        stack, where = self._stack(rest)
        if first.startswith("InternalError: interrupted"):
            limit = self._limits.script_time_ms
            return ScriptTimeout(self.name, f"ran past the time limit of {limit} ms", stack, where)
        if first.startswith("InternalError: out of memory") or first == "null":
            return self._memory_error(stack, where)
        return ScriptError(self.name, first or "unknown error", stack, where)

    @staticmethod
    def _parse(raw: str) -> Envelope:
        data = json.loads(raw)
        return Envelope(
            out=data.get("o"),
            commands=data.get("c", []),
            settled=data.get("s", []),
            next_timer=data.get("t", _UNCHANGED),
        )
