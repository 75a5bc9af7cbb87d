"""One script's QuickJS context on its own thread: load, handle requests, fire timers, settle Promises.

Every call goes through the prelude's dispatcher, which returns one envelope (see `envelope.py`,
which reads it as untrusted input). Its commands go to the `sink`, through this script's `Applier`,
before the caller sees the outcome, so a message a handler sends is out before its HTTP response.

The prelude and the SDL reader are evaluated below as many blank lines as the script has, so any
stack frame past the script's last line is the engine's, and an error names the script's own line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import quickjs

from engine import rules
from engine.config import LimitsConfig
from engine.errors import (
    ScriptBadCommand,
    ScriptBadResponse,
    ScriptBusy,
    ScriptError,
    ScriptGone,
    ScriptMemoryError,
    ScriptTimeout,
)
from engine.sandbox.applier import Applier, Steps
from engine.sandbox.commands import MANAGEMENT, Check, Command, Malformed, size_problem
from engine.sandbox.envelope import UNCHANGED, Envelope, Outcome, parse_envelope, read_commands
from engine.sandbox.host_api import HOST_NAMES
from engine.sandbox.worker import Result, Worker, resolve_all

PRELUDE = files("engine.sandbox").joinpath("prelude.js").read_text(encoding="utf-8")
SDL_READER = files("engine.graphql").joinpath("sdl.js").read_text(encoding="utf-8")
PRELUDE_CONFIG = json.dumps({"hostNames": HOST_NAMES, "rules": rules.for_js()})
UNDEFINED: Any = type("Undefined", (), {"__repr__": lambda self: "UNDEFINED"})()  # a resolver returned undefined
_LINE = re.compile(r"<input>:(\d+)")
# Engine size limits that a memory bomb hits before the byte limit: reported as memory failures.
_SIZE_LIMITS = ("InternalError: string too long", "RangeError: invalid array length")
_MAX_DELAY = 3600.0  # a timer further out is looked at again then (call_later dislikes huge delays)
BACKLOG_BYTES = 64 << 20  # what one script may have waiting to be applied before it must wait
SWAMPED_RETRY = 0.01  # seconds a timer waits for the loop to catch up, before it looks again
FIRE_BUDGET = 0.01  # seconds one turn of the thread spends on due timers, a fire at a time

Sink = Callable[["ScriptContext", list[Command]], Steps]


@dataclass(frozen=True, slots=True)
class HookAnswer:
    """What a connection hook returned: a refusal (onConnect's false), a message, or nothing."""

    refused: bool = False
    text: str | None = None  # the message as it goes on the wire
    json: bool = False  # `text` is JSON of a non-string value
ErrorSink = Callable[["ScriptContext", ScriptError, str], None]


class _Call:
    """One call into JS under way (`ScriptContext._call`), settled by callbacks: its envelope back
    from the thread, then the Promise it returned (if it did), or its timeout, or its cancelling."""

    __slots__ = ("ctx", "dispatcher", "what", "then", "answer", "started", "sent", "waiter", "timer", "promise")

    def __init__(self, ctx: ScriptContext, dispatcher: str, what: str, then: Callable[[Outcome], Any] | None) -> None:
        self.ctx = ctx
        self.dispatcher = dispatcher
        self.what = what
        self.then = then
        self.answer: asyncio.Future[Any] = ctx._loop.create_future()
        self.started = time.perf_counter()
        self.sent: asyncio.Future[Envelope] | None = None  # once sent, it counts among the calls in flight
        self.waiter: asyncio.Future[Outcome | ScriptError] | None = None  # its Promise's settling
        self.timer: asyncio.TimerHandle | None = None
        self.promise = 0

    def on_sent(self, sent: asyncio.Future[Envelope]) -> None:
        """The call's envelope is back and applied (or the call was cancelled, or failed)."""
        if sent.cancelled():
            self.end()
            return
        error = sent.exception()
        if error is not None:
            self.end(error=error)
            return
        env = sent.result()
        if env.error is not None:
            self.end(error=env.error)
            return
        promise = env.pending
        if promise is None:
            self.end(out=env.out or {})
            return
        ctx = self.ctx
        if self.answer.done():  # cancelled meanwhile: nobody waits on the Promise
            ctx._pending.pop(promise, None)
            self.end()
            return
        waiter = ctx._pending.get(promise)  # made when the envelope was delivered, unless closed by then
        if waiter is None:
            self.end(error=ScriptGone(ctx.name, "the script was reloaded or removed"))
            return
        self.promise = promise
        self.waiter = waiter
        waiter.add_done_callback(self.on_settled)
        self.timer = ctx._loop.call_later(ctx._limits.handler_timeout_ms / 1000, self.on_timeout)

    def on_settled(self, waiter: asyncio.Future[Outcome | ScriptError]) -> None:
        if self.waiter is not waiter:  # the timeout came first (its settling was already on its way)
            return
        self.waiter = None
        self.ctx._pending.pop(self.promise, None)
        if self.timer is not None:
            self.timer.cancel()
        if waiter.cancelled():
            self.end()
            return
        error = waiter.exception()  # the context closed (ScriptGone) before the Promise settled
        if error is not None:
            self.end(error=error)
            return
        out = waiter.result()
        if isinstance(out, ScriptError):  # a Promise job of this call ran past a limit
            self.end(error=out)
        else:
            self.end(out=out)

    def on_timeout(self) -> None:
        """The Promise did not settle in time: its settling, if it ever comes, is an orphan's."""
        self.timer = None
        waiter, self.waiter = self.waiter, None
        if waiter is None:  # settled first
            return
        self.ctx._pending.pop(self.promise, None)
        if not waiter.done():
            waiter.remove_done_callback(self.on_settled)
            waiter.cancel()
        limit = self.ctx._limits.handler_timeout_ms
        self.end(error=ScriptTimeout(self.ctx.name, f"the {self.what}'s Promise did not settle within {limit} ms"))

    def on_answer(self, answer: asyncio.Future[Any]) -> None:
        """The caller cancelled (its client left): so is the call, where it stands."""
        if not answer.cancelled():
            return
        if self.sent is not None and not self.sent.done():
            self.sent.cancel()  # `on_sent` ends it
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.cancel()  # `on_settled` ends it
        # otherwise its result is on its way: `end` sees the answer cancelled

    def end(self, out: Outcome | None = None, error: BaseException | None = None) -> None:
        ctx, answer = self.ctx, self.answer
        if answer.done():  # cancelled: an answer nobody takes (a streaming one's iterator is ended)
            outcome = "cancelled"
            if out:
                ctx._orphan(out)
        elif error is not None:
            outcome = ("timeout" if isinstance(error, ScriptTimeout) else "busy" if isinstance(error, ScriptBusy)
                       else "failed")
            answer.set_exception(error)
        elif out is None:
            outcome = "cancelled"
            answer.cancel()
        else:
            outcome = "threw" if "e" in out else "ok"
            if self.then is None:
                answer.set_result(out)
            else:
                try:
                    answer.set_result(self.then(out))
                except ScriptError as e:
                    answer.set_exception(e)
        if self.sent is not None:  # (`end` runs once: each path to it is the only one left)
            ctx._inflight -= 1
            ctx._check_idle()
        if ctx._observe is not None:
            ctx._observe(ctx.name, self.dispatcher, outcome, time.perf_counter() - self.started)


class ScriptContext:
    """A QuickJS context owned by one thread. All JS runs there; the loop only awaits results."""

    def __init__(
        self,
        name: str,
        limits: LimitsConfig,
        sink: Sink,
        on_error: ErrorSink,
        check: Check | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        leader: Callable[[], bool] = lambda: True,
        observe: Callable[[str, str, str, float], None] | None = None,
        privileged: bool = False,
        extra_memory: int = 0,
    ) -> None:
        self.name = name
        self.privileged = privileged  # may manage scripts and assets (scripts.privileged)
        self._extra_memory = extra_memory  # bytes on top of limits.script_memory_mb (a privileged script's view)
        self._observe = observe  # (script, kind of call, outcome, seconds), as each call ends
        self._leader = leader  # does this process run the script's cluster timers (read on its thread)
        self._limits = limits
        self._sink = sink
        self._on_error = on_error
        self._check = check
        self._loop = loop or asyncio.get_running_loop()
        self._worker = Worker(f"js:{name}", self._loop, self._t_teardown, self._t_after_batch, self._delivered)
        self._applier = Applier(name)
        self._ctx: Any = None
        self._rt: Any = None  # the prelude's dispatcher: _rt("handle", ...) calls its `handle`
        self._lines = 0  # the script's line count: stack frames below it are the engine's
        self._pending: dict[int, asyncio.Future[Outcome | ScriptError]] = {}
        self._waiting: set[asyncio.Future[Any]] = set()  # callers whose results are being applied
        self._timer: asyncio.TimerHandle | None = None
        self._next_due: float | None = None
        self._firing = False
        self._active = False
        self._closed = False
        self._inflight = 0  # handler and resolver calls not yet answered
        self._idle: asyncio.Event | None = None  # set when _inflight drops to 0, while retiring
        self.retiring = asyncio.Event()  # a newer version replaced this one: streaming responses end
        self._orphans: set[asyncio.Task[None]] = set()  # stops of streaming responses nobody took
        self._streaming = 0  # streaming responses under way on this version

    # ---- loop side -----------------------------------------------------------------------

    async def start(self, setup: dict[str, Any], lines: int) -> None:
        """Create the context on its thread and install the host API, for a script of `lines` lines.

        `setup`: `name`, `logs` (earlier lines for listLogs), `logMax`, `maxMessageBytes`,
        `maxCommands`, and what the scripts own (`claims`, `streamClaims`, `gqlFields`, `gqlTypes`;
        the script skips its own), so register calls can throw at once.
        """
        self._lines = lines
        env = await self._worker.submit(self._t_start, json.dumps(setup))
        if env.error:
            raise env.error

    async def set_claims(self, claims: str) -> None:
        """What the scripts own changed: JSON of the same keys as in `start`'s setup."""
        await self._submit(self._t_call, "setClaims", claims)

    def manage(self, delta: str) -> asyncio.Future[Envelope]:
        """A privileged script's view of the scripts and assets changed: JSON of what changed
        (management.py). Calls run in the order they are made, so views stay in step."""
        return self._submit(self._t_call, "manage", delta)

    async def load(self, source: str) -> Envelope:
        """Run the script's top level. The envelope is not applied: the caller decides (atomic swap)."""
        return await self._submit(self._t_load, source)

    def apply(self, steps: Steps) -> None:
        """Apply work of this script's (its load's messages) in order with everything else it sends."""
        self._applier.run(steps)

    def activate(self, envelope: Envelope) -> None:
        """The load was accepted: start its timers."""
        self._active = True
        if envelope.next_timer is not UNCHANGED:
            self._next_due = envelope.next_timer
        self._schedule()

    def handle(self, handler: int, request: tuple[Any, ...]) -> asyncio.Future[dict[str, Any]]:
        """Call a route handler with the request's pieces (see `engine.http.request.js_request`): a
        future of the response record `{s, b, t, h}`, or of a ScriptError. A future, not a coroutine:
        the lean route path serves a request with callbacks alone."""
        return self._call("handle", "handler", handler, *request, then=self._response)

    async def step(self, generator: int, sse: bool, most: int, budget: int) -> list[Outcome]:
        """A streaming response's next values, as many as are ready (up to `most`, or `budget`
        characters): each `{d: 1}` at the end, or data as `t` (text), `j` (JSON) or `x` (bytes as
        latin-1) with SSE fields. A failure raises a ScriptError, after the values before it are
        returned: it comes as the last item, `{e}` or `{bad}`, which `failure` turns into the error."""
        # Owed, as an onDisconnect is: a response under way is not cut short by other clients' calls.
        out = await self._call("step", "generator", generator, 1 if sse else 0, most, budget, owed=True)
        if "e" in out:
            return self._raise_js(out["e"])  # type: ignore[no-any-return]
        return out["items"]  # type: ignore[no-any-return]

    def failure(self, item: Outcome) -> ScriptError:
        """The error a step's last item stands for (`e` or `bad`)."""
        if "bad" in item:
            return ScriptBadResponse(self.name, item["bad"])
        try:
            self._raise_js(item["e"])
        except ScriptError as e:
            return e
        raise AssertionError("unreachable")

    async def stop(self, generator: int) -> None:
        """End a streaming response early: its iterator's return() runs (its `finally`). Owed, as an
        onDisconnect is: a busy script still gets to clean up."""
        out = await self._call("stop", "generator", generator, owed=True)
        if "e" in out:
            self._raise_js(out["e"])

    async def resolve(self, resolver: int, args: dict[str, Any], context: dict[str, Any]) -> Any:
        """Call a GraphQL resolver. Returns its value as JSON text (UNDEFINED for undefined), for the
        caller to read where it runs (off the loop), or raises a ScriptError."""
        out = await self._call("resolve", "resolver", resolver, json.dumps(args), json.dumps(context))
        if "j" in out:
            return out["j"]
        if "bad" in out:
            raise ScriptBadResponse(self.name, out["bad"])
        if "e" in out:
            return self._raise_js(out["e"])
        return UNDEFINED

    async def hook(self, index: int, what: str, conn: str, arg: str, parse: bool = False,
                   owed: bool = False) -> HookAnswer:
        """Call a connection hook with `conn` and `arg`, both JSON text; with `parse`, `arg` is a string
        the hook gets parsed if it is JSON (a client's message). An `owed` call (onDisconnect) is not
        refused for the calls already waiting: clients cannot crowd it out (its own queue is bounded).
        Raises a ScriptError for a throw, a limit or a value that cannot be a message."""
        out = await self._call("hook", what, index, conn, arg, 1 if parse else 0, owed=owed)
        if "f" in out:
            return HookAnswer(refused=True)
        text = out.get("t", out.get("j"))
        if text is not None:
            problem = size_problem(text, self._limits.max_message_bytes, f"the {what}'s value")
            if problem:
                raise ScriptBadResponse(self.name, problem)
            return HookAnswer(text=text, json="j" in out)
        if "bad" in out:
            raise ScriptBadResponse(self.name, out["bad"])
        if "e" in out:
            return self._raise_js(out["e"])  # type: ignore[no-any-return]
        return HookAnswer()

    def _call(self, dispatcher: str, what: str, *args: Any, owed: bool = False,
              then: Callable[[Outcome], Any] | None = None) -> asyncio.Future[Any]:
        """One call into JS: a future of its outcome (or of `then(outcome)`), settled once the Promise
        it returned, if it did, settles (within `handler_timeout_ms`); its outcome and duration are
        told to `observe` (/metrics). Made of callbacks, not coroutines: a request then costs the
        loop no Task. Cancelling the future cancels the call (one still queued never runs).

        An `owed` call (onDisconnect, a streaming response's next step) is not refused for the calls
        already waiting: clients cannot crowd it out."""
        call = _Call(self, dispatcher, what, then)
        try:
            if not owed:
                self._admit()
            sent = self._submit(self._t_dispatch, dispatcher, *args)
        except ScriptError as e:
            call.end(error=e)
            return call.answer
        self._inflight += 1  # as `hold` does, without a closure made on every request
        call.sent = sent
        sent.add_done_callback(call.on_sent)
        call.answer.add_done_callback(call.on_answer)
        return call.answer

    def _admit(self) -> None:
        """Refuse a call (ScriptBusy) while too many wait on this script, or it is swamped."""
        if self._inflight >= self._limits.max_pending_calls:
            raise ScriptBusy(self.name, f"{self._inflight} calls already wait on this script "
                             "(limits.max_pending_calls)")
        if self.swamped:
            raise ScriptBusy(self.name, f"more than {BACKLOG_BYTES >> 20} MiB of what this script sent is "
                             "still being applied")

    def hold(self, counted: bool = True) -> Callable[[], None]:
        """Counts as one call in flight until the result is called (once or more): a retiring version
        waits for it before it closes (work owed to this version, such as connections' onDisconnect,
        is done on it). `counted=False` (a streaming response under way): the retiring version waits
        for it too, but it is not a call waiting, so it takes no place in `limits.max_pending_calls`."""
        if counted:
            self._inflight += 1
        else:
            self._streaming += 1
        let_go = False

        def release() -> None:
            nonlocal let_go
            if not let_go:
                let_go = True
                if counted:
                    self._inflight -= 1
                else:
                    self._streaming -= 1
                self._check_idle()
        return release

    def _check_idle(self) -> None:
        if self._inflight == 0 and self._streaming == 0 and self._idle is not None:
            self._idle.set()

    async def retire(self) -> None:
        """A newer version replaced this one: its intervals stop at once; calls already running here
        (and the one-shot timers their Promises wait on) finish on this version, within
        `handler_timeout_ms`; then the context closes."""
        self.retiring.set()
        try:
            if not self._closed:
                # Answered only once everything the script handed in before it is applied: nothing
                # it sent is dropped with it.
                await self._submit(self._t_call, "retire")
                if self._inflight or self._streaming:
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
        await self._applier.close()
        gone = ScriptGone(self.name, "the script was reloaded or removed")
        for fut in [*self._pending.values(), *self._waiting]:
            if not fut.done():
                fut.set_exception(gone)
        self._waiting.clear()
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

    def _delivered(self, results: list[Result], jobs: Envelope | None) -> None:
        """A batch came back: apply its envelopes in the order JS produced them, waking each caller
        once its own envelope is applied. So commands land in call order, and before any handler's
        response is built."""
        if self._closed:
            resolve_all(results)
            return
        size = jobs.size if jobs is not None else 0
        for fut, ok, env in results:
            self._waiting.add(fut)
            if ok and isinstance(env, Envelope):
                size += env.size
                if env.call and env.pending is not None:
                    self._pending[env.pending] = self._loop.create_future()
        self._applier.run(self._delivery(results, jobs), size)

    @property
    def swamped(self) -> bool:
        """Whether what this script sent and the loop has not applied yet passes BACKLOG_BYTES: its
        next calls are refused, its timers wait, until the loop catches up."""
        return self._applier.waiting_bytes > BACKLOG_BYTES

    def _delivery(self, results: list[Result], jobs: Envelope | None) -> Steps:
        try:
            for item in results:
                _, ok, env = item
                if ok and isinstance(env, Envelope) and not env.deferred:
                    yield from self._after(env)
                self._wake(item)
            if jobs is not None:
                if jobs.error is not None:
                    self._on_error(self, jobs.error, "a Promise job")
                yield from self._after(jobs)
        finally:  # whatever applying did, nobody is left waiting
            for item in results:
                self._wake(item)

    def _wake(self, item: Result) -> None:
        if item[0] in self._waiting:
            self._waiting.discard(item[0])
            fut, ok, env = item
            if fut.cancelled() and ok and isinstance(env, Envelope) and env.out:
                self._orphan(env.out)  # its caller left before the answer came
                if env.pending is not None:
                    self._pending.pop(env.pending, None)  # nobody waits on its Promise: it settles as an orphan
            resolve_all([item])

    def _after(self, env: Envelope) -> Steps:
        """Apply what a dispatch produced: commands to the sink, settled Promises, the timer schedule."""
        if env.commands:
            yield from self._sink(self, env.commands)
        if env.job_error is not None:
            self._on_error(self, env.job_error, "a Promise job")
        for promise, outcome in env.settled:
            fut = self._pending.get(promise)
            if fut is not None and not fut.done():
                fut.set_result(outcome)
            elif isinstance(outcome, dict):
                self._orphan(outcome)  # settled after its caller gave up (it left, or the time ran out)
        if env.next_timer is not UNCHANGED:
            self._next_due = env.next_timer
            self._schedule()

    def abandon(self, record: dict[str, Any]) -> None:
        """A handler's answer nobody will serve (its client went): a streaming one's iterator ends."""
        self._orphan({"r": record})

    def _orphan(self, out: Outcome) -> None:
        """An answer nobody takes: if it is a streaming response, its iterator is ended (its
        `finally` runs), or it would stay registered in the script for good."""
        gid = out.get("r", {}).get("g") if isinstance(out.get("r"), dict) else None
        if gid is not None and not self._closed:
            task = self._loop.create_task(self._stop_quietly(gid))
            self._orphans.add(task)
            task.add_done_callback(self._orphans.discard)

    async def _stop_quietly(self, gid: int) -> None:
        with contextlib.suppress(ScriptError):
            await self.stop(gid)

    def _response(self, out: Outcome) -> dict[str, Any]:
        if "r" in out:
            return out["r"]  # type: ignore[no-any-return]
        if "bad" in out:
            raise ScriptBadResponse(self.name, out["bad"])
        return self._raise_js(out["e"])

    def _raise_js(self, info: dict[str, Any]) -> Any:
        """An error JS caught (a throw in a handler, a rejected Promise), as the engine's error."""
        stack, where = self._stack(info.get("st", ""))
        error = self._error(info["m"], stack, where)
        error.status = info.get("s")
        raise error

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
        """The script's frames (named after it), and "name.js:line" of the innermost one with a line.

        Frames past the script's last line are the prelude's; native frames after the last of the
        script's are the dispatcher's way in."""
        frames = []
        for line in raw.strip().split("\n"):
            m = _LINE.search(line)
            if line.strip() and not (m and int(m.group(1)) > self._lines):
                frames.append(line)
        while frames and frames[-1].rstrip().endswith("(native)"):
            frames.pop()
        stack = "\n".join(frames)
        m = _LINE.search(stack)
        return stack.replace("<input>", self.name), f"{self.name}:{m.group(1)}" if m else ""

    def _memory_error(self, stack: str, where: str, detail: str = "") -> ScriptMemoryError:
        limit = self._limits.script_memory_mb + self._extra_memory // (1024 * 1024)
        message = f"ran past the memory limit of {limit} MB" + (f" ({detail})" if detail else "")
        return ScriptMemoryError(self.name, message, stack, where)

    def _schedule(self) -> None:
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if self._next_due is None or not self._active or self._firing:
            return
        delay = min(_MAX_DELAY, max(0.0, self._next_due / 1000 - time.time()) + 0.001)
        self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._closed or self._worker.stopped:
            return
        if self._next_due is not None and self._next_due / 1000 > time.time() + 0.001:
            self._schedule()  # woken early by the delay's cap: not due yet
            return
        if self.swamped:  # the loop has not caught up with what the timers sent: wait for it
            self._timer = self._loop.call_later(SWAMPED_RETRY, self._fire)
            return
        self._firing = True
        self._worker.submit(self._t_fire).add_done_callback(self._fired)

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
        ctx.set_memory_limit(self._limits.script_memory_mb * 1024 * 1024 + self._extra_memory)
        ctx.set_time_limit(self._limits.script_time_ms / 1000)
        pad = "\n" * self._lines
        try:
            self._rt = ctx.eval(pad + PRELUDE)(PRELUDE_CONFIG, ctx.eval(pad + SDL_READER))  # the dispatcher
        except quickjs.JSException as e:  # e.g. a memory limit too small for the engine's own JS
            return Envelope(error=ScriptError(self.name, f"the script's context could not start: {e}"))
        self._ctx = ctx
        env = self._t_call("setup", setup)
        env.deferred = True
        return env

    def _t_teardown(self) -> None:
        # JS objects must die on the thread that made them.
        self._rt = None
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
            return self._read(self._rt("drain", ""))
        except quickjs.JSException as e:
            return self._t_failed(self._classify(e))
        except ScriptError as e:  # Promise jobs past the time limit
            return self._t_failed(e)
        except Exception as e:  # noqa: BLE001 - the binding's own failure: this call failed
            return Envelope(error=ScriptBadCommand(self.name, f"the script's call could not be read back: {e}"))

    def _t_call(self, name: str, *args: Any) -> Envelope:
        try:
            raw = self._rt(name, *args)
        except quickjs.JSException as e:
            return self._t_failed(self._classify(e))
        except Exception as e:  # noqa: BLE001 - whatever the binding raised, the call failed
            return Envelope(error=ScriptBadCommand(self.name, f"the script's call could not be read back: {e}"))
        return self._read(raw)

    def _t_dispatch(self, name: str, *args: Any) -> Envelope:
        """A handler or resolver call, then the Promise jobs it queued. A job that runs past a limit
        fails this call's Promise at once: it would otherwise never settle (QuickJS drops a job it
        interrupts), and the caller would wait `handler_timeout_ms` for nothing.

        A call that answered at once (no Promise) leaves its jobs, if it queued any, to the pump after
        the batch: every call into QuickJS lets go of the interpreter lock, and taking it back from
        a busy event loop costs far more than the call (tens of microseconds), so a plain request
        is one crossing, not two."""
        env = self._t_call(name, *args)
        env.call = True
        if env.error is not None or env.pending is None:
            return env
        jobs = self._t_guarded(self._t_pump)
        if jobs is not None:
            _append(env, jobs)
            promise = env.pending
            if jobs.error is not None and promise is not None and all(p != promise for p, _ in env.settled):
                env.settled.append((promise, jobs.error))  # this call's own continuation: fail it now
            else:
                env.job_error = jobs.error  # someone else's (or nobody's): logged like any job's
        return env

    def _t_fire(self) -> Envelope:
        """The due timers. JS fires a streaming response's timer alone and returns, so the Promise
        jobs run right after it are that response's (a sleep's continuation, and what it sets); the
        `drain` after them always runs, to end that attribution. While timers due before this began
        are left: again, within FIRE_BUDGET seconds; the rest waits for the next scheduled fire (so
        does a timer set meanwhile, due at once: a 0 ms chain still yields the thread between turns)."""
        deadline = time.monotonic() + FIRE_BUDGET
        began = int(time.time() * 1000)
        env = Envelope()
        while True:
            one = self._t_call("fire", self._leader())
            _append(env, one)
            env.error = one.error
            if one.error is not None:
                return env
            jobs = self._t_guarded(lambda: self._t_pump() and None)  # None, not False: drained either way
            if jobs is not None:
                _append(env, jobs)
                env.job_error = env.job_error or jobs.error
            due = env.next_timer
            if not isinstance(due, (int, float)) or due >= began or time.monotonic() > deadline:
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

    def _t_failed(self, error: ScriptError) -> Envelope:
        """After an uncatchable failure (top-level throw, time or memory limit): collect what is queued."""
        self._ctx.gc()
        try:
            env = self._read(self._rt("drain", "timeout" if isinstance(error, ScriptTimeout) else ""))
        except Exception:  # noqa: BLE001 - the failure stands; what was queued is lost with it
            env = Envelope()
        if env.error is None:
            env.error = error
        return env

    def _classify(self, exc: quickjs.JSException) -> ScriptError:
        """An error JS could not catch (interrupts, top-level throws) as the engine's error."""
        first, _, rest = str(exc).strip().partition("\n")
        stack, where = self._stack(rest)
        return self._error(first, stack, where)

    def _read(self, raw: Any) -> Envelope:
        """What JS handed back, checked; a malformed result fails the call and applies nothing."""
        try:
            env = parse_envelope(raw, self._limits)
            for _ in range(env.more):  # a large envelope's commands come in pieces: one parse each
                piece = self._rt("more")
                env.commands += read_commands(piece, len(env.commands), self._limits)
                env.size += len(piece)
            if self._check is not None:
                for c in env.commands:
                    self._check(self, c)
            if not self.privileged and any(isinstance(c, MANAGEMENT) for c in env.commands):
                raise Malformed(f"{self.name} is not privileged: it may not manage scripts or assets")
            return env
        except Malformed as e:
            return Envelope(error=ScriptBadCommand(self.name, f"the engine refused what the script handed back: {e} "
                                                   "(was a built-in replaced?)"))


def _append(env: Envelope, later: Envelope) -> None:
    """What a later dispatch on the same turn of the thread (the Promise jobs after a call, the
    next fire) adds to `env`: its commands after env's, its settled Promises, its timer schedule."""
    env.commands += later.commands
    env.settled += later.settled
    env.size += later.size
    if later.next_timer is not UNCHANGED:
        env.next_timer = later.next_timer
