"""The stream registry: paths and their owners, connections, event ids, bounded history, fan-out.

It knows nothing of aiohttp: a connection is anything with an asyncio-transport-like `write`. A
message is encoded and framed once per stream, then written to every connection's transport
without a task switch; a connection whose unsent bytes pass `max_buffer_bytes` is cut off instead
of slowing anyone else.

Event ids are `<epoch>-<n>`: `n` counts per stream, `epoch` is this process's start, so an id from
before a restart is recognised as unknown rather than mistaken for a different event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from engine.errors import RouteConflict
from engine.streams.wire import chunk, encode_comment, encode_event

log = logging.getLogger("engine.streams")

PING = chunk(encode_comment("ping"))
# Streams under /graphql/ are GraphQL subscriptions' (scripts cannot register such paths): sent to
# by sendSubscriptionMessage only, never by a sendStreamMessage to every stream.
ENGINE_STREAMS = "/graphql/"


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
    history: deque[tuple[int, bytes]]
    broadcast: bool = True  # reached by sendStreamMessage without a path
    seq: int = 0
    sent: int = 0
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

    def __init__(self, history: int, max_buffer_bytes: int, max_connections: int) -> None:
        self.history = history
        self.max_buffer_bytes = max_buffer_bytes
        self.max_connections = max_connections
        self.epoch = format(time.time_ns() // 1_000_000, "x")
        self.streams: dict[str, Stream] = {}
        self.private: dict[str, Stream] = {}  # the engine's own (admin) streams: not served by path lookup
        self.connection_count = 0

    # ---- ownership -------------------------------------------------------------------------

    def claims(self, exclude: str) -> dict[str, str]:
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
                for conn in list(stream.connections):
                    self.detach(conn, "the stream was removed")
        for path in paths:
            if path not in self.streams:
                broadcast = not path.startswith(ENGINE_STREAMS)
                self.streams[path] = Stream(path, owner, deque(maxlen=self.history), broadcast)

    def private_stream(self, path: str) -> Stream:
        """A stream of the engine's own, which only its handler serves (after its own checks)."""
        stream = self.private.get(path)
        if stream is None:
            stream = self.private[path] = Stream(path, "engine", deque(maxlen=self.history), broadcast=False)
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
        self.connection_count += 1
        return conn, replay

    def detach(self, conn: Connection, reason: str = "the client went away") -> None:
        if conn in conn.stream.connections:
            conn.stream.connections.discard(conn)
            self.connection_count -= 1
        conn.end(reason)

    def _since(self, stream: Stream, last_event_id: str | None) -> Replay:
        if last_event_id is None:
            return Replay(None, [])
        epoch, _, n = last_event_id.rpartition("-")
        events = [framed for _, framed in stream.history]
        if epoch != self.epoch or not n.isdigit():
            return Replay(f"unknown event id {last_event_id!r} (from another server run?)", events)
        seq = int(n)
        oldest = stream.history[0][0] if stream.history else stream.seq + 1
        if seq > stream.seq:
            return Replay(f"event id {last_event_id!r} is ahead of this stream", events)
        if seq + 1 < oldest:
            return Replay(f"event id {last_event_id!r} has left the history ({self.history} events)", events)
        return Replay(None, [framed for s, framed in stream.history if s > seq])

    # ---- fan-out -----------------------------------------------------------------------------

    def targets(self, paths: list[str] | None) -> list[Stream]:
        if paths is None:
            return [s for s in self.streams.values() if s.broadcast]
        return [self.streams[p] for p in paths if p in self.streams]

    def publish(self, stream: Stream, data: str, event: str | None = None) -> None:
        """Number, encode and frame the event once; keep it in history; write it to every reader."""
        stream.seq += 1
        framed = chunk(encode_event(data, f"{self.epoch}-{stream.seq}", event))
        stream.history.append((stream.seq, framed))
        stream.sent += 1
        self._write_all(stream, framed)

    def _write_all(self, stream: Stream, framed: bytes) -> None:
        for conn in write_all(stream.connections, framed, self.max_buffer_bytes):
            log.warning("closed a slow reader of %s: more than %d bytes unsent", stream.path, self.max_buffer_bytes)
            self.detach(conn, "slow consumer")
            conn.transport.abort()  # drop its buffer now: memory stays bounded

    def heartbeat(self) -> None:
        """A `: ping` to every reader; readers whose connection is gone are removed."""
        for stream in [*self.streams.values(), *self.private.values()]:
            for conn in [c for c in stream.connections if c.transport.is_closing()]:
                self.detach(conn)
            self._write_all(stream, PING)

    def close_all(self, reason: str = "the server is shutting down") -> None:
        for stream in [*self.streams.values(), *self.private.values()]:
            for conn in list(stream.connections):
                self.detach(conn, reason)
