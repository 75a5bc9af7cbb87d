"""One script's QuickJS context on its own thread: load, handle requests, fire timers, settle Promises.

Every call goes through the prelude's dispatcher (`__rt`), which returns one JSON envelope:
`{o: outcome, c: commands, s: settled promises, t: next timer due (epoch ms)}`. Commands go to the
`sink` before the caller sees the outcome, so a message a handler sends is queued before its HTTP
response leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import quickjs

from engine.config import LimitsConfig
from engine.errors import ScriptBadResponse, ScriptError, ScriptGone, ScriptMemoryError, ScriptTimeout
from engine.sandbox.host_api import HOST_NAMES
from engine.sandbox.worker import Worker, resolve_all

PRELUDE = files("engine.sandbox").joinpath("prelude.js").read_text(encoding="utf-8")
SDL_READER = files("engine.graphql").joinpath("sdl.js").read_text(encoding="utf-8")
_UNCHANGED: Any = object()
UNDEFINED: Any = type("Undefined", (), {"__repr__": lambda self: "UNDEFINED"})()  # a resolver returned undefined
_LINE = re.compile(r"<input>:(\d+)")
# Engine size limits that a memory bomb hits before the byte limit: reported as memory failures.
_SIZE_LIMITS = ("InternalError: string too long", "RangeError: invalid array length")
# The prelude's dispatcher frames close every stack; they are the engine's, not the script's.
_DISPATCH_FRAME = re.compile(r"^\s*at (handle|resolve|fire|apply|drain) \((<input>:\d+(:\d+)?|native)\)$")

Commands = list[dict[str, Any]]
Sink = Callable[["ScriptContext", Commands], None]
ErrorSink = Callable[["ScriptContext", ScriptError, str], None]


@dataclass(slots=True)
class Envelope:
    """What one dispatch into JS produced."""

    out: dict[str, Any] | None = None
    commands: Commands = field(default_factory=list)
    settled: list[dict[str, Any]] = field(default_factory=list)
    next_timer: Any = _UNCHANGED  # epoch ms, None for no timers, or _UNCHANGED
    error: ScriptError | None = None
    deferred: bool = False  # a load's envelope: applied by the caller, only if the load is accepted


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
        self._worker = Worker(f"js:{name}", self._loop, self._t_teardown, self._t_after_batch, self._delivered)
        self._ctx: Any = None
        self._rt: dict[str, Any] = {}
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._next_due: float | None = None
        self._firing = False
        self._active = False
        self._closed = False
        self._inflight = 0  # handler and resolver calls not yet answered
        self._idle: asyncio.Event | None = None  # set when _inflight drops to 0, while retiring

    # ---- loop side -----------------------------------------------------------------------

    async def start(self, setup: dict[str, Any]) -> None:
        """Create the context on its thread and install the host API.

        `setup`: `logs` (earlier lines for listLogs), `logMax`, `maxMessageBytes`, and what other
        scripts own (`claims`, `streamClaims`, `gqlFields`, `gqlTypes`), so register calls can throw at once.
        """
        env = await self._worker.submit(self._t_start, json.dumps(setup))
        if env.error:
            raise env.error

    async def set_claims(self, claims: dict[str, Any]) -> None:
        """What other scripts own changed (the same keys as in `start`'s setup)."""
        await self._submit(self._t_call, "setClaims", json.dumps(claims))

    async def load(self, source: str) -> Envelope:
        """Run the script's top level. The envelope is not applied: the caller decides (atomic swap)."""
        return await self._submit(self._t_load, source)

    def activate(self, envelope: Envelope) -> None:
        """The load was accepted: start its timers."""
        self._active = True
        if envelope.next_timer is not _UNCHANGED:
            self._next_due = envelope.next_timer
        self._schedule()

    async def handle(self, handler: int, request: tuple[Any, ...]) -> dict[str, Any]:
        """Call a route handler with the request's pieces (see `engine.http.request.js_request`).

        Returns the response record `{s, b, t, h}` or raises a ScriptError.
        """
        return self._response(await self._call("handle", "handler", handler, *request))

    async def resolve(self, resolver: int, args: dict[str, Any], context: dict[str, Any]) -> Any:
        """Call a GraphQL resolver. Returns its JSON value (UNDEFINED for undefined) or raises a ScriptError."""
        out = await self._call("resolve", "resolver", resolver, json.dumps(args), json.dumps(context))
        if "j" in out:
            return json.loads(out["j"])
        if "bad" in out:
            raise ScriptBadResponse(self.name, out["bad"])
        if "e" in out:
            return self._raise_js(out["e"])
        return UNDEFINED

    async def _call(self, dispatcher: str, what: str, *args: Any) -> dict[str, Any]:
        """One call into JS, waiting for its Promise (within `handler_timeout_ms`) if it returned one."""
        self._inflight += 1
        try:
            return await self._call_once(dispatcher, what, *args)
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

    async def _call_once(self, dispatcher: str, what: str, *args: Any) -> dict[str, Any]:
        env = await self._submit(self._t_call, dispatcher, *args)
        if env.error:
            raise env.error
        out = env.out or {}
        promise = out.get("p")
        if promise is not None:
            fut = self._pending[promise]  # created when the envelope was delivered
            try:
                async with asyncio.timeout(self._limits.handler_timeout_ms / 1000):
                    out = await fut
            except TimeoutError:
                raise ScriptTimeout(
                    self.name,
                    f"the {what}'s Promise did not settle within {self._limits.handler_timeout_ms} ms",
                ) from None
            finally:
                self._pending.pop(promise, None)
        return out

    async def retire(self) -> None:
        """A newer version replaced this one: its intervals stop at once; calls already running here
        (and the one-shot timers their Promises wait on) finish on this version, within
        `handler_timeout_ms`; then the context closes."""
        try:
            if not self._closed:
                await self._submit(self._t_call, "retire")
                if self._inflight:
                    self._idle = asyncio.Event()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._idle.wait(), self._limits.handler_timeout_ms / 1000)
        except ScriptError:
            pass  # it is going away regardless
        finally:
            await self.close()

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
    def inflight(self) -> int:
        """Handler and resolver calls made and not yet answered."""
        return self._inflight

    @property
    def closed(self) -> bool:
        return self._closed

    def _submit(self, fn: Callable[..., Envelope], *args: Any) -> asyncio.Future[Envelope]:
        if self._worker.stopped:
            raise ScriptGone(self.name, "the script was reloaded or removed")
        return self._worker.submit(fn, *args)

    def _delivered(self, results: list[Any], jobs: Envelope | None) -> None:
        """A batch came back: apply its envelopes in the order JS produced them, then wake the callers.

        So commands land in call order, and before any handler's response is built.
        """
        try:
            for _, ok, env in results:
                if ok and isinstance(env, Envelope) and not env.deferred:
                    if env.out and "p" in env.out:
                        self._pending[env.out["p"]] = self._loop.create_future()
                    self._after(env)
            if jobs is not None:
                if jobs.error is not None:
                    self._on_error(self, jobs.error, "a Promise job")
                self._after(jobs)
        finally:  # whatever applying did, nobody is left waiting
            resolve_all(results)

    def _after(self, env: Envelope) -> None:
        """Apply what a dispatch produced: commands to the sink, settled Promises, the timer schedule."""
        if env.commands:
            self._sink(self, env.commands)
        for item in env.settled:
            fut = self._pending.get(item["id"])
            if fut is not None and not fut.done():
                fut.set_result(item["o"])
        if env.next_timer is not _UNCHANGED:
            self._next_due = env.next_timer
            self._schedule()

    def _response(self, out: dict[str, Any]) -> dict[str, Any]:
        if "r" in out:
            return out["r"]  # type: ignore[no-any-return]
        if "bad" in out:
            raise ScriptBadResponse(self.name, out["bad"])
        return self._raise_js(out["e"])

    def _raise_js(self, info: dict[str, Any]) -> Any:
        """An error JS caught (a throw in a handler, a rejected Promise), as the engine's error."""
        stack, where = self._stack(info.get("st", ""))
        raise self._error(info["m"], stack, where)

    def _error(self, first: str, stack: str, where: str) -> ScriptError:
        """The one place that reads QuickJS's error text: time limit, memory limit, or the script's own."""
        if first.startswith("InternalError: interrupted"):
            limit = self._limits.script_time_ms
            return ScriptTimeout(self.name, f"ran past the time limit of {limit} ms", stack, where)
        # QuickJS throws null when it cannot even allocate the "out of memory" error.
        if first.startswith("InternalError: out of memory") or first == "null":
            return self._memory_error(stack, where)
        if first.startswith(_SIZE_LIMITS):
            return self._memory_error(stack, where, first)
        return ScriptError(self.name, first or "unknown error", stack, where)

    def _stack(self, raw: str) -> tuple[str, str]:
        """The script's frames (named after it), and "name.js:line" of the innermost one with a line."""
        lines = [line for line in raw.strip().split("\n") if line.strip()]
        while lines and _DISPATCH_FRAME.match(lines[-1]):
            lines.pop()
        stack = "\n".join(lines)
        m = _LINE.search(stack)
        return stack.replace("<input>", self.name), f"{self.name}:{m.group(1)}" if m else ""

    def _memory_error(self, stack: str, where: str, detail: str = "") -> ScriptMemoryError:
        limit = self._limits.script_memory_mb
        message = f"ran past the memory limit of {limit} MB" + (f" ({detail})" if detail else "")
        return ScriptMemoryError(self.name, message, stack, where)

    def _schedule(self) -> None:
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
        self._worker.submit(self._t_call, "fire").add_done_callback(self._fired)

    def _fired(self, fut: asyncio.Future[Envelope]) -> None:
        """The timer dispatch's envelope was applied on delivery; report its failure, plan the next."""
        self._firing = False
        if self._closed or fut.cancelled():
            return
        env = fut.result()
        if env.error:
            self._on_error(self, env.error, "a timer")
        self._schedule()

    # ---- thread side: everything below runs on the worker thread -------------------------

    def _t_start(self, setup: str) -> Envelope:
        ctx = quickjs.Context()
        ctx.set_memory_limit(self._limits.script_memory_mb * 1024 * 1024)
        ctx.set_time_limit(self._limits.script_time_ms / 1000)
        ctx.eval(PRELUDE)(json.dumps(HOST_NAMES), ctx.eval(SDL_READER))
        self._ctx = ctx
        names = ("setup", "setClaims", "drain", "handle", "resolve", "fire", "retire")
        self._rt = {name: ctx.eval(f"__rt.{name}") for name in names}
        env = self._t_call("setup", setup)
        env.deferred = True
        return env

    def _t_teardown(self) -> None:
        # JS objects must die on the thread that made them.
        self._rt = {}
        self._ctx = None

    def _t_load(self, source: str) -> Envelope:
        """The top level, and the Promise jobs it queued: all part of the load's one transaction."""
        env = self._t_guarded(lambda: (self._ctx.eval(source), self._t_pump()))
        assert env is not None
        env.deferred = True
        return env

    def _t_after_batch(self) -> Envelope | None:
        """Run the Promise jobs the batch's calls queued, once per batch rather than once per call."""
        if self._ctx is None:
            return None
        return self._t_guarded(self._t_pump)

    def _t_guarded(self, run: Callable[[], Any]) -> Envelope | None:
        """`run`, then drain what it queued; None if `run` returned False (nothing ran). Failures become
        the envelope's error, with whatever was queued before them."""
        try:
            if run() is False:
                return None
            return self._parse(self._rt["drain"](""))
        except quickjs.JSException as e:
            return self._t_failed(self._classify(e))
        except ScriptError as e:  # Promise jobs past the time limit
            return self._t_failed(e)

    def _t_call(self, name: str, *args: Any) -> Envelope:
        try:
            return self._parse(self._rt[name](*args))
        except quickjs.JSException as e:
            return self._t_failed(self._classify(e))

    def _t_pump(self) -> bool:
        """Run queued Promise jobs; bounded, since a job may queue another forever."""
        deadline = time.monotonic() + self._limits.script_time_ms / 1000
        ran = False
        while self._ctx.execute_pending_job():
            ran = True
            if time.monotonic() > deadline:
                raise ScriptTimeout(self.name, "Promise jobs kept running past the time limit")
        return ran

    def _t_failed(self, error: ScriptError) -> Envelope:
        """After an uncatchable failure (top-level throw, time or memory limit): collect what is queued."""
        self._ctx.gc()
        try:
            env = self._parse(self._rt["drain"]("timeout" if isinstance(error, ScriptTimeout) else ""))
        except quickjs.JSException:
            env = Envelope()
        env.error = error
        return env

    def _classify(self, exc: quickjs.JSException) -> ScriptError:
        """An error JS could not catch (interrupts, top-level throws) as the engine's error."""
        first, _, rest = str(exc).strip().partition("\n")
        stack, where = self._stack(rest)
        return self._error(first, stack, where)

    @staticmethod
    def _parse(raw: str) -> Envelope:
        if raw[0] == "R":  # the prelude's fast path for a plain response and nothing else
            status, content_type, body = raw[1:].split("\n", 2)
            return Envelope(out={"r": {"s": int(status), "t": content_type, "b": body}})
        data = json.loads(raw)
        return Envelope(
            out=data.get("o"),
            commands=data.get("c", []),
            settled=data.get("s", []),
            next_timer=data.get("t", _UNCHANGED),
        )
