"""The stream registry: stream paths and patterns, their owners, their channels, this node's readers.

A registration is a `Stream`: a plain path, or a pattern such as `/rooms/{room}`. Each concrete path
that matches one is a `Channel` with its own readers (ids and history are the broker's). A plain
stream has one channel for as long as it is registered; a pattern's channels come when first read
or sent to, and go `history_ttl` seconds after their last message once nobody reads them, so
`max_channels` bounds a map that readers and senders could otherwise grow without end.

It knows nothing of aiohttp: a connection is anything with an asyncio-transport-like `write`. The
broker hands each event, framed once, to `deliver`, which writes the same bytes to every reader's
transport without a task switch; a reader whose unsent bytes pass `max_buffer_bytes` is cut off
instead of slowing anyone else. The registry never knows which broker runs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from engine import rules
from engine.broker.base import Broker, Replay
from engine.errors import RouteConflict
from engine.routes import Match, Route, RouteTable, pattern_key
from engine.streams.event import NDJSON, POLL, SSE, Event, notice
from engine.streams.wire import chunk, encode_comment

log = logging.getLogger("engine.streams")

PING = chunk(encode_comment("ping"))
PINGS = {SSE: PING, NDJSON: chunk(b"\n")}  # a heartbeat in each format that has one of its own
CONNECTION_ID = re.compile(rules.CONNECTION_ID)
NEEDS_TOKEN_REASON = "the stream now needs a token"
NEEDS_TOKEN = notice("close", {"reason": NEEDS_TOKEN_REASON})
SWEEP_BATCH = 500  # idle channels freed in one step of the loop: 100,000 expiring at once is 200 steps


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...


class TooManyChannels(Exception):
    """A new channel would pass `streams.max_channels`."""


@dataclass(eq=False, slots=True)
class Held:
    """What a script sent to, or did with, a connection its onConnect has not answered for yet."""

    owner: str  # the script whose stream it is: no other may address it
    events: list[Event] = field(default_factory=list)
    size: int = 0
    closed: str | None = None  # closeConnection's reason


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What a script asks for when it registers a stream: the path, its hooks (opaque here), auth."""

    path: str
    hooks: Any = None
    auth: bool = False


@dataclass(eq=False)
class Stream:
    """One registration: a plain path (one channel) or a pattern (a channel per concrete path)."""

    path: str
    owner: str
    broadcast: bool = True  # reached by sendStreamMessage without a path (GraphQL's are not)
    pattern: bool = False
    hooks: Any = None  # the script's connection handlers, for whoever serves them
    auth: bool = False  # readers need a valid token
    channels: dict[str, Channel] = field(default_factory=dict)

    @property
    def plain(self) -> bool:
        """Readers need nothing but attaching: no token to check, no script to ask."""
        return self.hooks is None and not self.auth


@dataclass(eq=False)
class Channel:
    path: str  # concrete: "/rooms/general"
    stream: Stream
    params: dict[str, str]
    sent: int = 0  # events delivered to it on this node
    groups: dict[str, set[Connection]] = field(default_factory=dict)  # its readers by wire format
    count: int = 0  # its readers
    # A fan-out under way (more readers than one turn of the loop writes): what is left, in order.
    backlog: deque[Slice] | None = None
    turn_asked: bool = False  # a `call_soon` for the backlog's next slice is pending

    @property
    def connections(self) -> list[Connection]:
        """Every reader, whatever its format (a copy: safe to detach while walking it)."""
        return [c for g in self.groups.values() for c in g]

    def by_format(self) -> dict[str, int]:
        return {fmt: len(g) for fmt, g in self.groups.items()}


@dataclass(eq=False, slots=True)
class Connection:
    """One reader of one channel. `on_end` is told once, with the reason, when the reader is dropped."""

    channel: Channel
    transport: Transport
    on_end: Callable[[str], None]
    id: str
    fmt: str = SSE  # what its transport carries: every event is framed once per format
    ended: bool = False
    info: Any = None  # what the hooks' server keeps for a connection its stream's onConnect accepted
    started: int = 0  # epoch second it attached (one int shared by a second's readers: see `_stamp`)

    def end(self, reason: str) -> None:
        if not self.ended:
            self.ended = True
            self.on_end(reason)


@dataclass(slots=True)
class Slice:
    """Writes still to be made to some of a channel's readers (those from `start` on), in order."""

    readers: list[Connection]
    writes: list[bytes]  # one (events joined), or a poller's: one per event, as its box takes them
    events: int  # events each write carries
    start: int = 0


MAX_BACKLOG = 16  # pieces of a channel's fan-out that may wait for later turns of the loop


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
    """Write `framed` to every reader's transport, no await; return those now over `limit` unsent
    bytes, and those whose connection has closed under them (uvloop refuses a write to a closed
    transport; a reader whose handler has not noticed yet must not cost the others their event)."""
    slow = []
    for reader in readers:
        t = reader.transport
        try:
            t.write(framed)
        except (RuntimeError, OSError):
            slow.append(reader)
            continue
        if t.get_write_buffer_size() > limit:
            slow.append(reader)
    return slow


def write_one(transport: Transport, framed: bytes) -> bool:
    """One write that a closed connection cannot turn into an exception: False if it was closed."""
    try:
        transport.write(framed)
    except (RuntimeError, OSError):
        return False
    return True


class _Shapes:
    """A trie of every registered stream's segments (`None` for a parameter), to find another
    script's stream that some concrete path would match together with a new one."""

    __slots__ = ("literal", "param", "end")

    def __init__(self) -> None:
        self.literal: dict[str, _Shapes] = {}
        self.param: _Shapes | None = None
        self.end: Stream | None = None

    def insert(self, segments: list[str | None], stream: Stream) -> None:
        node = self
        for seg in segments:
            if seg is None:
                if node.param is None:
                    node.param = _Shapes()
                node = node.param
            else:
                node = node.literal.setdefault(seg, _Shapes())
        node.end = stream

    def remove(self, segments: list[str | None]) -> None:
        trail: list[tuple[_Shapes, str | None]] = []
        node: _Shapes | None = self
        for seg in segments:
            assert node is not None
            trail.append((node, seg))
            node = node.param if seg is None else node.literal.get(seg)
            if node is None:
                return
        assert node is not None
        node.end = None
        for parent, seg in reversed(trail):  # drop the branch's nodes that now lead nowhere
            child = parent.param if seg is None else parent.literal[seg]
            if child is None or child.end is not None or child.literal or child.param is not None:
                break
            if seg is None:
                parent.param = None
            else:
                del parent.literal[seg]

    def overlapping(self, segments: list[str | None], owner: str) -> Stream | None:
        """A stream not of `owner` that shares a concrete path with `segments`. Safe to run on
        another thread while the loop changes the trie: each step reads one node at once (the
        answer may then be stale, which the registry's version tells)."""
        stack: list[tuple[_Shapes, int]] = [(self, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == len(segments):
                end = node.end
                if end is not None and end.owner != owner:
                    return end
                continue
            seg = segments[depth]
            param = node.param
            if param is not None:
                stack.append((param, depth + 1))
            if seg is None:
                stack.extend((child, depth + 1) for child in list(node.literal.values()))
            else:
                child = node.literal.get(seg)
                if child is not None:
                    stack.append((child, depth + 1))
        return None


def _segments(path: str) -> list[str | None]:
    return [None if seg.startswith("{") else seg for seg in path.split("/")[1:]]


class StreamRegistry:
    """Every stream path and pattern, who owns it, its live channels, and who is reading them."""

    def __init__(self, broker: Broker, max_buffer_bytes: int, max_connections: int, max_channels: int = 100_000,
                 history_ttl: float = 300.0, clock: Callable[[], float] = time.monotonic,
                 fanout_slice: int = 1024) -> None:
        self.broker = broker
        self.fanout_slice = fanout_slice  # readers written per turn of the loop (see `_fan`)
        self.max_buffer_bytes = max_buffer_bytes
        self.max_connections = max_connections
        self.max_channels = max_channels
        self.history_ttl = history_ttl
        self.clock = clock
        self.node = secrets.token_hex(4)  # this process, in every connection id it gives out
        self.streams: dict[str, Stream] = {}  # by the path as registered
        self.channels: dict[str, Channel] = {}  # by concrete path; counted against max_channels
        self.private: dict[str, Channel] = {}  # the engine's own (admin) streams: not served by path lookup
        self.connections: dict[str, Connection] = {}  # by id
        self.held: dict[str, Held] = {}  # connections whose onConnect is running, by id
        self.connection_count = 0  # readers here and GraphQL subscriptions (the hub counts its own in)
        self.on_detach: Callable[[Connection, str], None] | None = None  # for connections with `info`
        self._by_key: dict[str, Stream] = {}  # "/rooms/{}" -> its stream: parameter names do not matter
        self._shapes = _Shapes()
        self.version = 0  # bumped by every registration or removal: an overlap check older than it is redone
        self._table = RouteTable()  # matches concrete paths to patterns
        self._read: set[Channel] = set()  # channels with at least one reader
        self._idle: OrderedDict[Channel, float] = OrderedDict()  # pattern channels nobody reads, oldest first
        # Since start, for /metrics (plain integers: the fan-out pays no lock and no label lookup).
        self.messages = 0  # events delivered to channels here
        self.delivered = 0  # events written to readers, one per reader
        self.bytes_sent = 0
        self.writes = 0  # writes to readers' transports: fewer than `delivered` when bursts coalesce
        self.slow_cut = 0
        self._second = 0
        broker.subscribe(self)

    # ---- ownership -------------------------------------------------------------------------

    def claims(self, exclude: str | None) -> dict[str, str]:
        """Stream path (as registered) -> owner, for streams not owned by `exclude`."""
        return {p: s.owner for p, s in self.streams.items() if s.owner != exclude}

    def owner_of(self, path: str) -> str | None:
        """Who registered `path`, or a pattern of its shape (parameter names aside)."""
        stream = self._by_key.get(pattern_key(path))
        return stream.owner if stream is not None else None

    def conflicts(self, owner: str, paths: Iterable[str]) -> list[str]:
        """Why `owner` cannot have these streams: a shape another script has, or one shape twice."""
        problems = []
        asked: dict[str, str] = {}
        for p in paths:
            key = pattern_key(p)
            taken = self._by_key.get(key)
            if taken is not None and taken.owner != owner:
                problems.append(f"stream {p} is already registered by script {taken.owner}"
                                + ("" if taken.path == p else f" (as {taken.path})"))
            elif asked.get(key, p) != p:
                problems.append(f"stream {p} is already registered by this script (as {asked[key]})")
            asked.setdefault(key, p)
        return problems

    def overlaps(self, owner: str, paths: Iterable[str]) -> list[str]:
        """Why `owner` cannot have these streams: another script's stream shares a concrete path
        with one (`/inbox/alice` inside `/inbox/{user}`), so one would take the other's channel.
        Its cost is a walk of the streams a path could meet; it may run off the loop (see version)."""
        problems = []
        for p in paths:
            other = self._shapes.overlapping(_segments(p), owner)
            if other is not None and pattern_key(other.path) != pattern_key(p):  # one shape: `conflicts` says so
                problems.append(f"stream {p} overlaps stream {other.path} of script {other.owner}: a channel "
                                "path would belong to both")
        return problems

    def replace(self, owner: str, specs: list[StreamSpec]) -> None:
        """Give `owner` exactly these streams. Kept paths keep their channels, readers, ids and
        history (and take the new hooks); dropped ones close their readers cleanly. Raises
        RouteConflict (changing nothing) if one is taken."""
        problems = self.conflicts(owner, [s.path for s in specs])
        if problems:
            raise RouteConflict("; ".join(problems))
        wanted = {s.path for s in specs}
        for path, stream in list(self.streams.items()):
            if stream.owner == owner and path not in wanted:
                self._remove(stream)
        for spec in specs:
            kept = self.streams.get(spec.path)
            if kept is None:
                self._make(owner, spec)
            else:
                if spec.auth and not kept.auth:
                    self._drop_anonymous(kept)
                kept.hooks, kept.auth = spec.hooks, spec.auth
        self._table.replace(owner, [Route("GET", s.path, owner, self.streams[s.path], 0) for s in specs
                                    if self.streams[s.path].pattern])

    def add(self, owner: str, spec: StreamSpec) -> None:
        """One more stream for `owner` (a registration after its load): O(1), whatever else exists."""
        problems = self.conflicts(owner, [spec.path])
        mine = self._by_key.get(pattern_key(spec.path))
        if mine is not None and mine.path != spec.path:
            problems.append(f"stream {spec.path} is already registered by this script (as {mine.path})")
        if problems:
            raise RouteConflict("; ".join(problems))
        if spec.path not in self.streams:
            stream = self._make(owner, spec)
            if stream.pattern:
                self._table.add(Route("GET", spec.path, owner, stream, 0))

    def _make(self, owner: str, spec: StreamSpec) -> Stream:
        pattern = "{" in spec.path
        stream = Stream(spec.path, owner, broadcast=not spec.path.startswith(rules.ENGINE_STREAMS), pattern=pattern,
                        hooks=spec.hooks, auth=spec.auth)
        self.streams[spec.path] = stream
        self._by_key[pattern_key(spec.path)] = stream
        self._shapes.insert(_segments(spec.path), stream)
        self.version += 1
        if not pattern:  # its one channel, for as long as it is registered (not counted as made on demand)
            self.channels[spec.path] = stream.channels[spec.path] = Channel(spec.path, stream, {})
        return stream

    def _drop_anonymous(self, stream: Stream) -> None:
        """A reload made `stream` need a token: readers that came without one may not read on."""
        for channel in list(stream.channels.values()):
            for conn in [c for c in channel.connections if not getattr(c.info, "authenticated", False)]:
                write_one(conn.transport, NEEDS_TOKEN.frame(conn.fmt))
                self.detach(conn, NEEDS_TOKEN_REASON)

    def _remove(self, stream: Stream) -> None:
        del self.streams[stream.path]
        del self._by_key[pattern_key(stream.path)]
        self._shapes.remove(_segments(stream.path))
        self.version += 1
        for channel in list(stream.channels.values()):
            self._free(channel, "the stream was removed")

    def private_stream(self, path: str) -> Channel:
        """A stream of the engine's own, which only its handler serves (after its own checks)."""
        channel = self.private.get(path)
        if channel is None:
            channel = self.private[path] = Channel(path, Stream(path, "engine", broadcast=False), {})
        return channel

    def drop_private(self, path: str) -> None:
        """An engine stream nobody reads any more: gone, history and all."""
        channel = self.private.pop(path, None)
        if channel is not None:
            for conn in list(channel.connections):
                self.detach(conn, "the stream was removed")
            self.broker.forget(path)

    # ---- channels ----------------------------------------------------------------------------

    def match(self, path: str) -> tuple[Stream, dict[str, str]] | None:
        """The stream a concrete path belongs to, and its parameters; None if no stream has it (or
        it is no channel path at all: `%`, braces, `*`, empty segments)."""
        channel = self.channels.get(path)
        if channel is not None:
            return channel.stream, channel.params
        if not self._table.has_patterns or rules.channel_problem(path):
            return None
        found = self._table.match("GET", path)
        if not isinstance(found, Match):
            return None
        return found.route.target, found.params

    def room_for(self, path: str) -> bool:
        """Could `open(path)` have its channel (it exists, or one more fits)?"""
        return path in self.channels or len(self.channels) < self.max_channels

    def open(self, path: str) -> Channel | None:
        """The channel at `path`, made if need be; None if no stream has it. Raises TooManyChannels.
        An idle channel opened counts as used now: it is not freed under whoever opened it."""
        channel = self.channels.get(path)
        if channel is not None:
            if channel in self._idle:
                self._idle.move_to_end(channel)
                self._idle[channel] = self.clock()
            return channel
        found = self.match(path)
        if found is None:
            return None
        stream, params = found
        if len(self.channels) >= self.max_channels:
            raise TooManyChannels(f"{self.max_channels} channels are open (streams.max_channels)")
        channel = self.channels[path] = stream.channels[path] = Channel(path, stream, params)
        self._idle[channel] = self.clock()
        return channel

    def broadcast_channels(self) -> list[Channel]:
        """What `sendStreamMessage(data)` reaches: every channel of every broadcast stream, now."""
        return [c for s in self.streams.values() if s.broadcast for c in s.channels.values()]

    def drop_if_unused(self, channel: Channel) -> None:
        """Free a pattern's channel that has no reader and nothing kept (one made for a reader who
        never came to read)."""
        if (channel.stream.pattern and not channel.count and self.live(channel)
                and not self.broker.describe(channel.path)[0]):
            self._free(channel, "empty")

    def live(self, channel: Channel) -> bool:
        """Is `channel` still the one served at its path (not freed, not replaced, since it was found)?"""
        return self.channels.get(channel.path) is channel

    def sweep(self) -> int:
        """Free the pattern channels nobody has read or sent to for `history_ttl` seconds, at most
        SWEEP_BATCH of them; when there are more, the rest go in later steps of the loop, so that
        freeing many never holds it up."""
        cutoff = self.clock() - self.history_ttl
        freed = 0
        while self._idle and freed < SWEEP_BATCH:
            channel, since = next(iter(self._idle.items()))
            if since > cutoff:
                return freed
            self._free(channel, "idle")
            freed += 1
        if freed == SWEEP_BATCH:
            asyncio.get_running_loop().call_soon(self.sweep)
        return freed

    def _free(self, channel: Channel, reason: str) -> None:
        self._idle.pop(channel, None)
        self.channels.pop(channel.path, None)
        channel.stream.channels.pop(channel.path, None)
        for conn in list(channel.connections):
            self.detach(conn, reason)
        self.broker.forget(channel.path)

    # ---- readers -----------------------------------------------------------------------------

    def full(self) -> bool:
        return self.connection_count >= self.max_connections

    def _stamp(self) -> int:
        """The epoch second, as one int object for all who ask within it: a reader keeps a pointer,
        not an int of its own."""
        now = int(time.time())
        if now != self._second:
            self._second = now
        return self._second

    def new_id(self) -> str:
        """A connection id: this node, then 96 random bits, so an id is no one else's to guess."""
        return f"{self.node}.{secrets.token_urlsafe(12)}"

    def attach(
        self, channel: Channel, transport: Transport, last_event_id: str | None, on_end: Callable[[str], None],
        connection_id: str | None = None, info: Any = None, fmt: str = SSE,
    ) -> tuple[Connection, Replay]:
        """Add a reader. Write the returned replay before any await, so no live event slips in between."""
        replay = self.broker.since(channel.path, last_event_id)
        conn = Connection(channel, transport, on_end, connection_id or self.new_id(), fmt, info=info,
                          started=self._stamp())
        group = channel.groups.get(fmt)
        if group is None:
            group = channel.groups[fmt] = set()
        group.add(conn)
        channel.count += 1
        self.connections[conn.id] = conn
        self._read.add(channel)
        self._idle.pop(channel, None)
        self.connection_count += 1
        return conn, replay

    def detach(self, conn: Connection, reason: str = "the client went away") -> None:
        channel = conn.channel
        group = channel.groups.get(conn.fmt)
        if group is not None and conn in group:
            group.discard(conn)
            if not group:
                del channel.groups[conn.fmt]
            channel.count -= 1
            del self.connections[conn.id]
            self.connection_count -= 1
            if not channel.count:
                self._read.discard(channel)
                self.broker.unwatched(channel.path)
                if channel.stream.pattern and self.channels.get(channel.path) is channel:
                    if self.broker.describe(channel.path)[0]:
                        self._idle[channel] = self.clock()  # its history lives on for late joiners, a while
                    else:
                        self._free(channel, "empty")  # nothing to keep: a reader's visit leaves nothing
            if conn.info is not None and self.on_detach is not None:
                self.on_detach(conn, reason)
        conn.end(reason)

    # ---- fan-out (what the broker calls) -------------------------------------------------------

    def deliver(self, path: str, event: Event) -> None:
        """One event, framed once per format, for every reader of channel `path` here."""
        channel = self._delivered_to(path, 1)
        if channel is not None:
            self._write_all(channel, event)

    def _delivered_to(self, path: str, n: int) -> Channel | None:
        """The channel at `path` that `n` events are for (counted, and its idle time reset), or None."""
        channel = self.channels.get(path) or self.private.get(path)
        if channel is not None:
            channel.sent += n
            self.messages += n
            if channel in self._idle:
                self._idle.move_to_end(channel)
                self._idle[channel] = self.clock()
        return channel

    def readers(self, path: str) -> int:
        channel = self.channels.get(path) or self.private.get(path)
        return channel.count if channel is not None else 0

    def deliver_many(self, path: str, events: list[Event]) -> None:
        """Several events of channel `path`, in order: each reader gets them in one write (a
        poller, whose box takes one event per write, one by one)."""
        channel = self._delivered_to(path, len(events))
        if channel is None:
            return
        work = [Slice(list(group), [ev.frame(fmt) for ev in events], 1) if fmt == POLL
                else Slice(list(group), [b"".join([ev.frame(fmt) for ev in events])], len(events))
                for fmt, group in list(channel.groups.items())]
        self._fan(channel, work)

    def expect(self, connection: str, owner: str) -> None:
        """A connection whose onConnect runs now: what its script sends it meanwhile is held."""
        self.held[connection] = Held(owner)

    def unexpect(self, connection: str) -> Held:
        return self.held.pop(connection)

    def deliver_to(self, connection: str, event: Event, owner: str | None = None) -> bool:
        """One event for one reader only, if it is here (and on a stream of `owner`, when given)."""
        conn = self.connections.get(connection)
        if conn is None:
            held = self.held.get(connection)
            if held is None or (owner is not None and held.owner != owner):
                return False
            held.size += event.size
            if held.size > self.max_buffer_bytes:
                held.closed = held.closed or "slow consumer"
            else:
                held.events.append(event)
            return True
        if owner is not None and conn.channel.stream.owner != owner:
            return False
        self.write_to(conn, event.frame(conn.fmt))
        return True

    def write_to(self, conn: Connection, framed: bytes) -> None:
        """Bytes for one reader (an event of its own, a reply): cut it if they leave it too far behind.
        What its channel was sent before goes first (the broker may hold a burst back)."""
        self.flush(conn.channel)
        self._count(1, len(framed))
        if not write_one(conn.transport, framed) or conn.transport.get_write_buffer_size() > self.max_buffer_bytes:
            self._cut(conn)

    def close_connection(self, connection: str, event: Event, reason: str, owner: str | None = None) -> bool:
        """Send `event` (the notice), then end the reader, if it is here (and on a stream of `owner`)."""
        conn = self.connections.get(connection)
        if conn is None:
            held = self.held.get(connection)
            if held is None or (owner is not None and held.owner != owner):
                return False
            held.closed = held.closed or reason
            return True
        if owner is not None and conn.channel.stream.owner != owner:
            return False
        self.flush(conn.channel)
        write_one(conn.transport, event.frame(conn.fmt))
        self.detach(conn, reason)
        return True

    def _write_all(self, channel: Channel, event: Event) -> None:
        groups = channel.groups
        if channel.backlog is None and len(groups) == 1 and SSE in groups:  # the common case, kept lean
            group = groups[SSE]
            if len(group) <= self.fanout_slice:
                slow = write_all(group, event.sse, self.max_buffer_bytes)
                self._count(len(group), len(group) * len(event.sse))
                for conn in slow:
                    self._cut(conn)
                return
        self._fan(channel, [Slice(list(g), [event.frame(fmt)], 1) for fmt, g in list(groups.items())])

    def _fan(self, channel: Channel, work: list[Slice]) -> None:
        """Write `work` to its readers, `fanout_slice` of them per turn of the loop: a channel with
        more readers than that goes on at the next turn (a `call_soon`), so what else the loop has
        to do (requests, a reload) is not held up behind one large fan-out. Later events of the
        channel queue behind what is left; anything that must follow them (a reply to one reader,
        a close, a poller's replay) writes it all first (`flush`), and so does a fan-out that would
        leave more than MAX_BACKLOG pieces waiting (a channel sent more, faster, than its slices go out)."""
        if channel.backlog is not None:
            if len(channel.backlog) + len(work) <= MAX_BACKLOG:
                channel.backlog.extend(work)
                return
            self.finish(channel)  # too far behind: the loop waits for it, and what waits stays bounded
        channel.backlog = deque(work)
        self._write_slice(channel, self.fanout_slice)

    def _next_turn(self, channel: Channel) -> None:
        channel.turn_asked = False
        self._write_slice(channel, self.fanout_slice)

    def _write_slice(self, channel: Channel, budget: int) -> None:
        """Up to `budget` readers' worth of the channel's backlog; the next turn is asked for if some is
        left (one `call_soon` pending per channel at most)."""
        backlog = channel.backlog
        while backlog and budget > 0:
            piece = backlog[0]
            end = min(len(piece.readers), piece.start + budget)
            # Readers may have ended since the fan-out began (closed, or cut as slow just now): skipped.
            readers = [c for c in piece.readers[piece.start:end] if not c.ended]
            slow: list[Connection] = []
            for framed in piece.writes:
                slow += write_all(readers, framed, self.max_buffer_bytes)
                self._count(len(readers) * piece.events, len(readers) * len(framed), len(readers))
            budget -= end - piece.start
            if end < len(piece.readers):
                piece.start = end
            else:
                backlog.popleft()
            for conn in dict.fromkeys(slow):  # cut before the next piece: none is written to it
                self._cut(conn)
        if not backlog:
            channel.backlog = None
        elif not channel.turn_asked:
            channel.turn_asked = True
            asyncio.get_running_loop().call_soon(self._next_turn, channel)

    def finish(self, channel: Channel) -> None:
        """Write what is left of `channel`'s fan-out now: what comes next must reach its readers after it."""
        while channel.backlog:
            self._write_slice(channel, 1 << 62)

    def flush(self, channel: Channel) -> None:
        """Everything `channel` was sent so far, written now: what the broker holds for this pass of the
        loop, then what is left of its fan-out. For what must reach one of its readers after it."""
        self.broker.settle(channel.path)
        self.finish(channel)

    def _count(self, events: int, size: int, writes: int | None = None) -> None:
        self.delivered += events
        self.bytes_sent += size
        self.writes += events if writes is None else writes

    def _cut(self, conn: Connection) -> None:
        if conn.transport.is_closing():  # it went away; its handler has not noticed yet
            self.detach(conn)
            return
        log.warning("closed a slow reader of %s: more than %d bytes unsent", conn.channel.path, self.max_buffer_bytes)
        self.slow_cut += 1
        self.detach(conn, "slow consumer")
        conn.transport.abort()  # drop its buffer now: memory stays bounded

    def heartbeat(self) -> None:
        """A `: ping` to every reader; readers whose connection is gone are removed; idle channels
        past their time are freed. Only channels with readers are visited: a script may hold many
        streams nobody reads."""
        for channel in list(self._read):
            for conn in [c for c in channel.connections if c.transport.is_closing()]:
                self.detach(conn)
            for fmt, group in list(channel.groups.items()):
                ping = PINGS.get(fmt)
                if ping is not None:
                    for conn in write_all(group, ping, self.max_buffer_bytes):
                        self._cut(conn)
        self.sweep()

    def close_all(self, reason: str = "the server is shutting down") -> None:
        for channel in [*self.channels.values(), *self.private.values()]:
            self.finish(channel)
            for conn in list(channel.connections):
                self.detach(conn, reason)
