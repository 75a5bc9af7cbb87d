"""A channel by long-poll: each `GET` answers at once with every event after the client's cursor,
or holds up to `streams.poll_timeout_seconds` for one, as `{"events": [{"id","event","data"}...],
"lastEventId", "connectionId"}`.

A poller is a connection like any other reader (an id, the stream's hooks), kept between its polls
in a `PollBox`: the fan-out writes into the box as it writes to a socket, so no event is lost
between two polls, and the box is bounded by `streams.max_buffer_bytes` as a socket's buffer is.
The next poll names the connection (`?connectionId=` or `X-Connection-Id`) and takes what the box
holds; a poll whose `lastEventId` is not where the last answer left off (that answer was lost) is
answered from the channel's history instead. A connection not polled for `streams.poll_grace_
seconds` is gone. When the server ends one between polls, its last events and the reason wait for
one more poll (bounded in number and bytes), so a client learns why.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from engine.config import StreamsConfig
from engine.streams.event import POLL, Event, notice
from engine.streams.registry import Channel, Connection, StreamRegistry
from engine.streams.sse import begin_reading, last_event_id

EVICTED = "too many long-poll connections between polls"
MAX_FAREWELLS = 10_000  # ended pollers whose last answer waits for them
MAX_FAREWELL_BYTES = 16 << 20  # what those answers hold together
_ID_START = b'{"id":"'


class PollBox:
    """A poller's transport: what the fan-out writes (envelopes, `POLL` frames) waits here."""

    __slots__ = ("items", "size", "cursor", "waiter", "last_seen", "closed", "reason")

    def __init__(self, cursor: str | None) -> None:
        self.items: list[bytes] = []
        self.size = 0
        self.cursor = cursor  # the id of the last event handed out (where the next poll starts)
        self.waiter: asyncio.Future[None] | None = None  # the poll holding on, if one is
        self.last_seen = time.monotonic()
        self.closed = False
        self.reason: str | None = None  # why the server ended it, once it has

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.items.append(data)
        self.size += len(data)
        self.wake()

    def get_write_buffer_size(self) -> int:
        return self.size

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True
        self.items, self.size = [], 0
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def take(self) -> list[bytes]:
        """Everything waiting, and the cursor moved past its numbered events."""
        items, self.items, self.size = self.items, [], 0
        for item in reversed(items):
            if item.startswith(_ID_START):
                self.cursor = item[len(_ID_START):item.index(b'"', len(_ID_START))].decode("ascii")
                break
        return items

    def replace_numbered(self, replay: list[bytes]) -> None:
        """The client missed an answer: what it gets next is the replay from its own id (numbered
        events), then what was sent to this connection alone."""
        direct = [i for i in self.items if not i.startswith(_ID_START)]
        self.items = replay + direct
        self.size = sum(len(i) for i in self.items)


def box_of(conn: Connection) -> PollBox:
    return cast(PollBox, conn.transport)


@dataclass(slots=True)
class Farewell:
    path: str
    items: list[bytes]
    size: int
    cursor: str | None
    reason: str
    at: float


class Pollers:
    """This process's long-poll connections between polls (oldest answer first), for their grace
    and their bound, and the last answers of ended ones.

    A poller holds a place in `streams.max_connections` without holding a socket, so one client
    could take every place with a burst of first polls. Pollers between polls may hold at most half
    of them: past that, the one waiting longest for its next poll goes (`EVICTED`); its client's
    next poll is a new connection that resumes from its cursor, so it loses no event."""

    def __init__(self, registry: StreamRegistry, config: StreamsConfig) -> None:
        self.registry = registry
        self.config = config
        self.idle: OrderedDict[Connection, None] = OrderedDict()
        self.max_idle = max(1, registry.max_connections // 2)
        self.farewells: OrderedDict[str, Farewell] = OrderedDict()
        self.farewell_bytes = 0

    def polling(self, conn: Connection) -> None:
        self.idle.pop(conn, None)

    def answered(self, conn: Connection) -> None:
        if conn.ended or box_of(conn).waiter is not None:  # ended, or a newer poll holds on
            return
        self.idle[conn] = None
        self.idle.move_to_end(conn)
        while len(self.idle) > self.max_idle:
            self.registry.detach(next(iter(self.idle)), EVICTED)

    def heartbeat(self) -> None:
        """Pollers not seen for `poll_grace_seconds` are gone; old farewells go too."""
        cutoff = time.monotonic() - self.config.poll_grace_seconds
        while self.idle:
            conn = next(iter(self.idle))
            if box_of(conn).last_seen >= cutoff:
                break
            self.registry.detach(conn)
        while self.farewells and next(iter(self.farewells.values())).at < cutoff:
            self._drop_oldest()

    def ended(self, conn: Connection, reason: str) -> None:
        """The server or the grace ended a poller: a poll under way answers now; else the answer waits."""
        self.idle.pop(conn, None)
        box = box_of(conn)
        box.reason = reason
        if box.waiter is not None:
            box.wake()
            return
        if reason in ("the client went away", "slow consumer", EVICTED):
            return  # nobody to tell, or a client that would not take what it was sent
        farewell = Farewell(conn.channel.path, box.items, box.size, box.cursor, reason, time.monotonic())
        self.farewells[conn.id] = farewell
        self.farewell_bytes += farewell.size
        while len(self.farewells) > MAX_FAREWELLS or self.farewell_bytes > MAX_FAREWELL_BYTES:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, farewell = self.farewells.popitem(last=False)
        self.farewell_bytes -= farewell.size

    def take_farewell(self, cid: str, path: str) -> Farewell | None:
        """The last answer of an ended poller of `path` (a poll naming it on another path takes nothing)."""
        farewell = self.farewells.get(cid)
        if farewell is None or farewell.path != path:
            return None
        del self.farewells[cid]
        self.farewell_bytes -= farewell.size
        return farewell


def poll_headers(config: StreamsConfig, request_id: str, cid: str) -> dict[str, str]:
    headers = {"Cache-Control": "no-cache", "X-Request-Id": request_id, "X-Connection-Id": cid}
    if config.cors_origin:
        headers["Access-Control-Allow-Origin"] = config.cors_origin
        headers["Access-Control-Expose-Headers"] = "X-Connection-Id"
    return headers


def answer(items: list[bytes], cursor: str | None, cid: str, headers: dict[str, str],
           closed: str | None = None) -> web.Response:
    tail = b"" if closed is None else b',"closed":' + json.dumps(closed).encode()
    body = (b'{"events":[' + b",".join(items) + b'],"lastEventId":' + json.dumps(cursor).encode()
            + b',"connectionId":"' + cid.encode() + b'"' + tail + b"}")
    return web.Response(body=body, content_type="application/json", charset="utf-8", headers=headers)


async def first_poll(
    request: web.Request, channel: Channel, pollers: Pollers, request_id: str, connection_id: str,
    first: tuple[Event, ...] = (), info: Any = None, resume_from: str | None = None,
    on_attached: Callable[[], None] | None = None,
) -> web.Response:
    """A new poller: attached (hooks already said yes), then answered as any poll is."""
    registry = pollers.registry
    given = last_event_id(request)
    start = given or resume_from
    box = PollBox(start if start is not None else registry.broker.cursor(channel.path))
    conn: Connection | None = None

    def on_end(reason: str) -> None:
        if conn is not None:
            pollers.ended(conn, reason)

    conn = begin_reading(registry, channel, box, start, 0, on_end, connection_id, first, info,  # type: ignore[arg-type]
                         implicit=given is None and resume_from is not None, fmt=POLL, preface=b"")
    if on_attached is not None:
        on_attached()
    return await _hold(request, conn, box, pollers, request_id)


async def poll_again(request: web.Request, conn: Connection, pollers: Pollers, request_id: str) -> web.Response:
    """A poller's next poll: what waits for it, or the replay from its id if it missed an answer."""
    box = box_of(conn)
    given = last_event_id(request)
    if given is not None and given != box.cursor:
        pollers.registry.flush(conn.channel)  # what is on its way to the box now: the replay replaces it
        replay = pollers.registry.broker.since(conn.channel.path, given)
        frames = [notice("reset", {"reason": replay.reset, "lastEventId": given}).frame(POLL)] if replay.reset else []
        box.replace_numbered(frames + [e.frame(POLL) for e in replay.events])
        box.cursor = given
    if box.waiter is not None:  # an earlier poll of this connection still holds: it answers now
        box.wake()
    return await _hold(request, conn, box, pollers, request_id)


async def _hold(request: web.Request, conn: Connection, box: PollBox, pollers: Pollers,
                request_id: str) -> web.Response:
    config = pollers.config
    headers = poll_headers(config, request_id, conn.id)
    pollers.polling(conn)
    try:
        if not box.items and not conn.ended:
            waiter = box.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(waiter, config.poll_timeout_seconds)
            except TimeoutError:
                pass
            finally:
                if box.waiter is waiter:
                    box.waiter = None
    finally:  # answered, or its client left mid-poll: between polls from now, its grace running
        box.last_seen = time.monotonic()
        pollers.answered(conn)
    items = box.take()
    return answer(items, box.cursor, conn.id, headers, box.reason)


def farewell_answer(farewell: Farewell, cid: str, config: StreamsConfig, request_id: str) -> web.Response:
    return answer(farewell.items, farewell.cursor, cid, poll_headers(config, request_id, cid), farewell.reason)

