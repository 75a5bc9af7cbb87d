"""What a stream's connection hooks are asked, and when.

`onConnect` runs before a reader's response starts, so it can refuse with a plain 403, and may give
the reader a first event of its own. `onMessage` runs per message a client POSTs, in the order they
came, at most `streams.max_client_messages` waiting per connection. `onDisconnect` is owed once to
every connection its stream's hooks took in, whatever ended it (the client left, it was too slow,
the script closed it or dropped its stream, the token expired, the server stopped): owed calls queue
per script version and run on it, and a version that is being replaced waits for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from engine.auth import Claims, Verifier
from engine.broker.base import Broker
from engine.errors import ScriptError, ScriptGone
from engine.sandbox.context import HookAnswer, ScriptContext
from engine.streams.event import WS, WS_V1, Event, notice
from engine.streams.registry import Connection, Stream, StreamRegistry

log = logging.getLogger("engine.streams")
TRANSPORT_OF = {WS: "websocket", WS_V1: "websocket"}  # conn.transport by wire format, where they differ
DISCONNECT_BATCH = 16  # onDisconnect calls one script version runs at once
ErrorSink = Callable[[ScriptContext, ScriptError, str], None]


@dataclass(frozen=True, slots=True)
class Hooks:
    """A stream's connection handlers: the script version that registered them, and their indexes."""

    target: ScriptContext
    connect: int | None
    message: int | None
    disconnect: int | None


@dataclass(eq=False, slots=True)
class ConnInfo:
    """What is kept for a connection of a stream with hooks or auth (plain readers have none)."""

    id: str
    conn: str  # {id, path, params, query, transport, user} as JSON: what every hook is given
    stream: Stream
    authenticated: bool  # it came with a valid token
    pending: int = 0  # its messages waiting for onMessage
    ended: bool = False  # its onDisconnect is queued (or was not owed)
    expiry: asyncio.TimerHandle | None = None  # its token's `exp`


@dataclass(frozen=True, slots=True)
class Accepted:
    info: ConnInfo
    first: tuple[Event, ...]  # `connected`, then onConnect's own event, then what it sent this reader
    cursor: str | None  # where the channel stood before onConnect ran: what it sent, the reader gets


class Refused(Exception):
    """onConnect said no (returned false, or threw: the thrown message is the reason, and an Error's
    `status`, 400 to 499, the answer's status instead of 403)."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.status = status


class Busy(Exception):
    """The script version is too far behind on the onDisconnect calls it owes to take on more."""


class NoHandler(Exception):
    """The stream takes no messages (no onMessage)."""


class TooManyMessages(Exception):
    """The connection already has `max_client_messages` messages waiting."""


def answer_event(answer: HookAnswer) -> Event:
    """A hook's value as an event for one reader. A value's JSON is checked before an envelope
    embeds it (what the sandbox hands over is untrusted); one that is not JSON goes as a string."""
    assert answer.text is not None
    is_json = answer.json
    if is_json:
        try:
            json.loads(answer.text)
        except (ValueError, RecursionError):
            is_json = False
    return Event(answer.text, None, None, is_json)


class ConnectionHooks:
    def __init__(self, registry: StreamRegistry, broker: Broker, verifier: Verifier, max_client_messages: int,
                 on_error: ErrorSink) -> None:
        self.registry = registry
        self.broker = broker
        self.verifier = verifier
        self.max_client_messages = max_client_messages
        self.on_error = on_error
        self._owed: dict[ScriptContext, deque[tuple[int, str, str]]] = {}
        self._drains: set[asyncio.Task[None]] = set()
        registry.on_detach = self._detached

    async def connect(self, stream: Stream, path: str, params: dict[str, str], cid: str, raw_query: str,
                      transport: str, user: Claims | None) -> Accepted:
        """Ask onConnect (if the stream has one) about a reader of channel `path` not yet attached (its
        channel is made only once it is accepted). Raises Refused, or the ScriptError of a hook that
        failed. A reader whose client leaves while onConnect runs is still owed its onDisconnect if
        onConnect then says yes. What the script sends to the connection while onConnect runs is
        held for it; a closeConnection then refuses it (onDisconnect gets the reason)."""
        info = ConnInfo(cid, json.dumps({"id": cid, "path": path, "params": params, "query": raw_query,
                                         "transport": transport, "user": None if user is None else user.values}),
                        stream, user is not None)
        hooks = stream.hooks
        first: list[Event] = []
        cursor = None
        if hooks is not None:
            if len(self._owed.get(hooks.target, ())) >= self.registry.max_connections:
                raise Busy(f"the script owes {self.registry.max_connections} onDisconnect calls still; retry later")
            first.append(notice("connected", {"id": cid, "path": path, "params": params}))
            if hooks.connect is not None:
                cursor = self.broker.cursor(path)
                self.registry.expect(cid, stream.owner)
                task = asyncio.ensure_future(hooks.target.hook(hooks.connect, "onConnect", info.conn, "null"))
                try:
                    answer = await asyncio.shield(task)
                except asyncio.CancelledError:
                    task.add_done_callback(lambda t: self._late(t, info, "the client went away"))
                    raise
                except ScriptError as e:
                    if type(e) is ScriptError:  # a throw: the script's own refusal, in its own words
                        raise Refused(e.message.removeprefix("Error: ")[:200], e.status or 403) from None
                    raise
                finally:
                    held = self.registry.unexpect(cid)
                if answer.refused:
                    raise Refused("the stream's onConnect refused this connection")
                if answer.text is not None and not (answer.json and answer.text == "true"):
                    first.append(answer_event(answer))
                first.extend(held.events)
                if held.closed is not None:  # closeConnection while onConnect ran: accepted, then ended
                    self.release(info, held.closed)
                    raise Refused(held.closed)
        if user is not None:
            left = self.verifier.seconds_left(user)
            if left is not None:
                info.expiry = asyncio.get_running_loop().call_later(max(left, 0), self._expired, info)
        return Accepted(info, tuple(first), cursor)

    def release(self, info: ConnInfo, reason: str) -> None:
        """A reader accepted here is done: its onDisconnect is owed now if the registry never had it
        (its client left before it attached); otherwise the registry's detach already saw to it."""
        if info.expiry is not None:
            info.expiry.cancel()
        self._owe(info, reason)

    async def message(self, conn: Connection, text: str, as_json: bool) -> HookAnswer:
        """A client's message to its connection's onMessage. Raises NoHandler, TooManyMessages, or the
        ScriptError of the handler (that message fails; the connection stays)."""
        hooks = conn.channel.stream.hooks
        if hooks is None or hooks.message is None:
            raise NoHandler(f"the stream at {conn.channel.path} takes no messages (it has no onMessage)")
        info = conn.info
        if info is None:  # it connected before its stream had hooks (a reload added them)
            info = conn.info = ConnInfo(conn.id, json.dumps({
                "id": conn.id, "path": conn.channel.path, "params": conn.channel.params, "query": "",
                "transport": TRANSPORT_OF.get(conn.fmt, conn.fmt), "user": None}), conn.channel.stream, False)
        if info.pending >= self.max_client_messages:
            raise TooManyMessages(f"connection {conn.id} already has {info.pending} messages waiting "
                                  "(streams.max_client_messages); retry once they are answered")
        info.pending += 1
        try:
            return await hooks.target.hook(hooks.message, "onMessage", info.conn, json.dumps(text), as_json)
        finally:
            info.pending -= 1

    async def settle(self, timeout: float) -> None:
        """Wait (up to `timeout`) for every owed onDisconnect: shutdown calls this before scripts close."""
        if self._drains:
            await asyncio.wait(list(self._drains), timeout=timeout)

    # ---- owed onDisconnects ------------------------------------------------------------------

    def _detached(self, conn: Connection, reason: str) -> None:
        if isinstance(conn.info, ConnInfo):
            self.release(conn.info, reason)

    def _late(self, task: asyncio.Future[HookAnswer], info: ConnInfo, reason: str) -> None:
        """onConnect finished after its client left: if it said yes, onDisconnect is owed."""
        if not task.cancelled() and task.exception() is None and not task.result().refused:
            self._owe(info, reason)

    def _expired(self, info: ConnInfo) -> None:
        info.expiry = None
        self.broker.close(info.id, "the token expired")

    def _owe(self, info: ConnInfo, reason: str) -> None:
        if info.ended:
            return
        info.ended = True
        hooks = info.stream.hooks
        if hooks is None or hooks.disconnect is None:
            return
        ctx = hooks.target
        if ctx.closed:
            log.warning("%s: onDisconnect for %s not run: the script version that owes it has closed",
                        ctx.name, info.id)
            return
        queue = self._owed.get(ctx)
        if queue is None:
            queue = self._owed[ctx] = deque()
            # Held from now, not from when the task first runs: a version retiring in between would
            # otherwise see nothing in flight and close with the call owed.
            task = asyncio.get_running_loop().create_task(self._drain(ctx, queue, ctx.hold()))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        queue.append((hooks.disconnect, info.conn, json.dumps(reason)))

    async def _drain(self, ctx: ScriptContext, queue: deque[tuple[int, str, str]],
                     release: Callable[[], None]) -> None:
        """Run a version's owed onDisconnects, a few at a time; it stays open until they are done."""
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(DISCONNECT_BATCH, len(queue)))]
                results = await asyncio.gather(*(ctx.hook(i, "onDisconnect", c, a, owed=True)
                                                 for i, c, a in batch), return_exceptions=True)
                for r in results:
                    if isinstance(r, ScriptGone):
                        if queue:
                            log.warning("%s: %d onDisconnect calls not run: the version that owed them "
                                        "closed first", ctx.name, len(queue))
                        queue.clear()
                    elif isinstance(r, ScriptError):
                        self.on_error(ctx, r, "onDisconnect")
                    elif isinstance(r, BaseException):
                        log.error("onDisconnect of %s failed inside the engine: %r", ctx.name, r)
        finally:
            self._owed.pop(ctx, None)
            release()

