"""The stream registry: paths and their owners, connections, event ids, bounded history, fan-out.

It knows nothing of aiohttp: a connection is anything with an asyncio-transport-like `write`. A
message is encoded and framed once per stream, then written to every connection's transport
without a task switch; a connection whose unsent bytes pass `max_buffer_bytes` is cut off instead
of slowing anyone else.

Event ids are `<epoch>-<n>`: `n` counts per stream, `epoch` is this process's start, so an id from
before a restart is recognised as unknown rather than mistaken for a different event.

History is bounded three ways: events per stream, bytes per stream, and bytes across every stream,
the oldest event anywhere going first. Replay only ever starts after an id still held, so a reader
whose id has been evicted is told (`reset`) rather than silently missing what went.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from engine.errors import RouteConflict
from engine.rules import ENGINE_STREAMS
from engine.streams.wire import chunk, encode_comment, encode_event

log = logging.getLogger("engine.streams")

PING = chunk(encode_comment("ping"))
_EVENT_ID = re.compile(r"([0-9a-f]{1,16})-([0-9]{1,19})")
_SHOWN_ID = 80  # characters of a client's unusable Last-Event-ID quoted back in the reset notice


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...


@dataclass(eq=False, slots=True)
class Connection:
    """One reader of one stream. `on_end` is told once, with the reason, when the reader is dropped."""

    stream: Stream
    transport: Transport
    on_end: Callable[[str], None]
    ended: bool = False

    def end(self, reason: str) -> None:
        if not self.ended:
            self.ended = True
            self.on_end(reason)


@dataclass(frozen=True)
class Replay:
    """What a (re)connecting reader gets before live events: a reset notice, then history."""

    reset: str | None  # why the given id could not be resumed from, or None
    events: list[bytes]


@dataclass(eq=False)
class Stream:
    path: str
    owner: str
    broadcast: bool = True  # reached by sendStreamMessage without a path (GraphQL's are not)
    seq: int = 0
    sent: int = 0
    history: deque[tuple[int, bytes, int]] = field(default_factory=deque)  # (seq, framed, order key)
    history_bytes: int = 0
    connections: set[Connection] = field(default_factory=set)


def ender(fut: asyncio.Future[str]) -> Callable[[str], None]:
    """An `on_end` that settles `fut` with the reason, once: what a handler awaiting its reader waits on."""
    def on_end(reason: str) -> None:
        if not fut.done():
            fut.set_result(reason)
    return on_end


class Reader(Protocol):
    @property
    def transport(self) -> Transport: ...


R = TypeVar("R", bound=Reader)


def write_all(readers: Iterable[R], framed: bytes, limit: int) -> list[R]:
    """Write `framed` to every reader's transport, no await; return those now over `limit` unsent bytes."""
    slow = []
    for reader in readers:
        t = reader.transport
        t.write(framed)
        if t.get_write_buffer_size() > limit:
            slow.append(reader)
    return slow


class StreamRegistry:
    """Every stream path, who owns it, and who is reading it."""

    def __init__(self, history: int, max_buffer_bytes: int, max_connections: int,
                 history_bytes: int = 1 << 20, total_history_bytes: int = 128 << 20) -> None:
        self.history = history
        self.history_bytes = history_bytes
        self.total_history_bytes = total_history_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self.max_connections = max_connections
        self.epoch = format(time.time_ns() // 1_000_000, "x")
        self.streams: dict[str, Stream] = {}
        self.private: dict[str, Stream] = {}  # the engine's own (admin) streams: not served by path lookup
        self.connection_count = 0
        self.kept_bytes = 0  # history held by every stream together
        self._read: set[Stream] = set()  # streams with at least one reader
        self._order: OrderedDict[int, Stream] = OrderedDict()  # every kept event, oldest first
        self._next_key = 0

    # ---- ownership -------------------------------------------------------------------------

    def claims(self, exclude: str | None) -> dict[str, str]:
        """Stream path -> owner, for streams not owned by `exclude`."""
        return {p: s.owner for p, s in self.streams.items() if s.owner != exclude}

    def conflicts(self, owner: str, paths: list[str]) -> list[str]:
        return [f"stream {p} is already registered by script {self.streams[p].owner}"
                for p in paths if p in self.streams and self.streams[p].owner != owner]

    def replace(self, owner: str, paths: list[str]) -> None:
        """Give `owner` exactly these stream paths. Kept paths keep their readers, ids and history;
        dropped ones close their readers cleanly. Raises RouteConflict (changing nothing) if taken."""
        problems = self.conflicts(owner, paths)
        if problems:
            raise RouteConflict("; ".join(problems))
        wanted = set(paths)
        for path, stream in list(self.streams.items()):
            if stream.owner == owner and path not in wanted:
                del self.streams[path]
                self._forget(stream)
                for conn in list(stream.connections):
                    self.detach(conn, "the stream was removed")
        for path in paths:
            if path not in self.streams:
                self.streams[path] = Stream(path, owner, broadcast=not path.startswith(ENGINE_STREAMS))

    def add(self, owner: str, path: str) -> None:
        """One more stream path for `owner` (a registration after its load): O(1), whatever else exists."""
        problems = self.conflicts(owner, [path])
        if problems:
            raise RouteConflict("; ".join(problems))
        if path not in self.streams:
            self.streams[path] = Stream(path, owner, broadcast=not path.startswith(ENGINE_STREAMS))

    def private_stream(self, path: str) -> Stream:
        """A stream of the engine's own, which only its handler serves (after its own checks)."""
        stream = self.private.get(path)
        if stream is None:
            stream = self.private[path] = Stream(path, "engine", broadcast=False)
        return stream

    # ---- readers -----------------------------------------------------------------------------

    def full(self) -> bool:
        return self.connection_count >= self.max_connections

    def attach(
        self, stream: Stream, transport: Transport, last_event_id: str | None, on_end: Callable[[str], None]
    ) -> tuple[Connection, Replay]:
        """Add a reader. Write the returned replay before any await, so no live event slips in between."""
        replay = self._since(stream, last_event_id)
        conn = Connection(stream, transport, on_end)
        stream.connections.add(conn)
        self._read.add(stream)
        self.connection_count += 1
        return conn, replay

    def detach(self, conn: Connection, reason: str = "the client went away") -> None:
        if conn in conn.stream.connections:
            conn.stream.connections.discard(conn)
            self.connection_count -= 1
            if not conn.stream.connections:
                self._read.discard(conn.stream)
        conn.end(reason)

    def _since(self, stream: Stream, last_event_id: str | None) -> Replay:
        """What a reader resuming after `last_event_id` gets. Whatever the client sent, this answers:
        an id that is not one of ours is a `reset`, never an error."""
        if last_event_id is None:
            return Replay(None, [])
        events = [framed for _, framed, _ in stream.history]
        shown = repr(last_event_id[:_SHOWN_ID]) + ("..." if len(last_event_id) > _SHOWN_ID else "")
        m = _EVENT_ID.fullmatch(last_event_id)
        if m is None or m.group(1) != self.epoch:
            return Replay(f"unknown event id {shown} (from another server run?)", events)
        seq = int(m.group(2))
        oldest = stream.history[0][0] if stream.history else stream.seq + 1
        if seq > stream.seq:
            return Replay(f"event id {shown} is ahead of this stream", events)
        if seq + 1 < oldest:
            return Replay(f"event id {shown} has left the history (it holds the last {len(events)} events; "
                          "streams.history, streams.history_bytes, streams.total_history_bytes)", events)
        return Replay(None, [framed for s, framed, _ in stream.history if s > seq])

    # ---- fan-out -----------------------------------------------------------------------------

    def targets(self, paths: tuple[str, ...] | list[str] | None) -> list[Stream]:
        """The streams a send reaches: every broadcast stream, or those of `paths` that exist."""
        if paths is None:
            return [s for s in self.streams.values() if s.broadcast]
        return [self.streams[p] for p in paths if p in self.streams]

    def publish(self, stream: Stream, data: str, event: str | None = None) -> None:
        """Number, encode and frame the event once; keep it in history; write it to every reader."""
        stream.seq += 1
        framed = chunk(encode_event(data, f"{self.epoch}-{stream.seq}", event))
        self._keep(stream, framed)
        stream.sent += 1
        self._write_all(stream, framed)

    def _keep(self, stream: Stream, framed: bytes) -> None:
        """Add the event to history, then drop the oldest until every bound holds again. An event too
        large to keep takes the stream's older history with it, so no replay can skip over it."""
        key = self._next_key
        self._next_key += 1
        stream.history.append((stream.seq, framed, key))
        stream.history_bytes += len(framed)
        self.kept_bytes += len(framed)
        self._order[key] = stream
        while stream.history and (len(stream.history) > self.history or stream.history_bytes > self.history_bytes):
            self._evict(stream)
        while self.kept_bytes > self.total_history_bytes:
            self._evict(next(iter(self._order.values())))

    def _evict(self, stream: Stream) -> None:
        _, framed, key = stream.history.popleft()
        stream.history_bytes -= len(framed)
        self.kept_bytes -= len(framed)
        del self._order[key]

    def _forget(self, stream: Stream) -> None:
        while stream.history:
            self._evict(stream)

    def _write_all(self, stream: Stream, framed: bytes) -> None:
        for conn in write_all(stream.connections, framed, self.max_buffer_bytes):
            log.warning("closed a slow reader of %s: more than %d bytes unsent", stream.path, self.max_buffer_bytes)
            self.detach(conn, "slow consumer")
            conn.transport.abort()  # drop its buffer now: memory stays bounded

    def heartbeat(self) -> None:
        """A `: ping` to every reader; readers whose connection is gone are removed. Only streams
        with readers are visited: a script may hold many streams nobody reads."""
        for stream in list(self._read):
            for conn in [c for c in stream.connections if c.transport.is_closing()]:
                self.detach(conn)
            self._write_all(stream, PING)

    def close_all(self, reason: str = "the server is shutting down") -> None:
        for stream in [*self.streams.values(), *self.private.values()]:
            for conn in list(stream.connections):
                self.detach(conn, reason)
