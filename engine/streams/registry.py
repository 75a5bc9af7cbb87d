"""The stream registry: paths and their owners, this node's readers, and the fan-out to them.

It knows nothing of aiohttp: a connection is anything with an asyncio-transport-like `write`. Ids
and history are the broker's (engine/broker/): it hands each event, framed once, to `deliver`,
which writes the same bytes to every reader's transport without a task switch; a reader whose
unsent bytes pass `max_buffer_bytes` is cut off instead of slowing anyone else. The registry never
knows which broker runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from engine.broker.base import Broker, Replay
from engine.errors import RouteConflict
from engine.rules import ENGINE_STREAMS
from engine.streams.wire import chunk, encode_comment

log = logging.getLogger("engine.streams")

PING = chunk(encode_comment("ping"))


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


@dataclass(eq=False)
class Stream:
    path: str
    owner: str
    broadcast: bool = True  # reached by sendStreamMessage without a path (GraphQL's are not)
    sent: int = 0  # events delivered to it on this node
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

    def __init__(self, broker: Broker, max_buffer_bytes: int, max_connections: int) -> None:
        self.broker = broker
        self.max_buffer_bytes = max_buffer_bytes
        self.max_connections = max_connections
        self.streams: dict[str, Stream] = {}
        self.private: dict[str, Stream] = {}  # the engine's own (admin) streams: not served by path lookup
        self.connection_count = 0
        self._read: set[Stream] = set()  # streams with at least one reader
        broker.subscribe(self.deliver)

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
                self.broker.forget(path)
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

    def drop_private(self, path: str) -> None:
        """An engine stream nobody reads any more: gone, history and all."""
        stream = self.private.pop(path, None)
        if stream is not None:
            for conn in list(stream.connections):
                self.detach(conn, "the stream was removed")
            self.broker.forget(path)

    # ---- readers -----------------------------------------------------------------------------

    def full(self) -> bool:
        return self.connection_count >= self.max_connections

    def attach(
        self, stream: Stream, transport: Transport, last_event_id: str | None, on_end: Callable[[str], None]
    ) -> tuple[Connection, Replay]:
        """Add a reader. Write the returned replay before any await, so no live event slips in between."""
        replay = self.broker.since(stream.path, last_event_id)
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

    # ---- fan-out -----------------------------------------------------------------------------

    def targets(self, paths: tuple[str, ...] | list[str] | None) -> list[Stream]:
        """The streams a send reaches: every broadcast stream, or those of `paths` that exist."""
        if paths is None:
            return [s for s in self.streams.values() if s.broadcast]
        return [self.streams[p] for p in paths if p in self.streams]

    def deliver(self, path: str, framed: bytes) -> None:
        """What the broker hands over: one event, framed once, for every reader of `path` here."""
        stream = self.streams.get(path) or self.private.get(path)
        if stream is not None:
            stream.sent += 1
            self._write_all(stream, framed)

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
