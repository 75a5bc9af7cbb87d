"""`GET <stream path>` as Server-Sent Events: headers, `retry:`, replay from Last-Event-ID, then live.

Most readers are served by `engine.streams.lean_reader` (see `engine.http.front`); this aiohttp
handler serves the rest (a stream requested on a connection that already served a request, or a
request the front leaves to aiohttp). Either way events reach the socket from the registry's
fan-out, never through a coroutine. Events are stored framed as HTTP/1.1 chunks; an HTTP/1.0 reader
(no chunking there) gets them through `PlainBody`, and its response ends with the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from engine.config import StreamsConfig
from engine.errors import HTTPError
from engine.streams.event import NDJSON, SSE, Event, notice
from engine.streams.registry import Channel, Connection, StreamRegistry, TooManyChannels, Transport, ender
from engine.streams.wire import chunk, encode_retry

log = logging.getLogger("engine.streams")


def sse_head(config: StreamsConfig, request_id: str, date: str, connection_id: str) -> bytes:
    """The whole response head, for readers served below aiohttp: the same headers as `sse_headers`."""
    lines = ["HTTP/1.1 200 OK",
             *(f"{k}: {v}" for k, v in sse_headers(config, request_id, connection_id=connection_id).items()),
             "Transfer-Encoding: chunked", f"Date: {date}", f"Server: {SERVER_SOFTWARE}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def sse_headers(config: StreamsConfig, request_id: str, cors: bool = True,
                connection_id: str | None = None, content_type: str = "text/event-stream; charset=utf-8",
                ) -> dict[str, str]:
    """`cors=False` for the engine's own streams (the live log): no other site may read those."""
    headers = {
        "Content-Type": content_type,
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Request-Id": request_id,
    }
    if connection_id is not None:
        headers["X-Connection-Id"] = connection_id
    if cors and config.cors_origin:
        headers["Access-Control-Allow-Origin"] = config.cors_origin
        if connection_id is not None:
            headers["Access-Control-Expose-Headers"] = "X-Connection-Id"
    return headers


class PlainBody:
    """A transport for an HTTP/1.0 reader: the chunk framing is taken off what the fan-out writes.

    Only 1.0 readers pay for it: HTTP/1.1 readers keep their bare transport, and the same framed
    bytes go to all of them.
    """

    __slots__ = ("_transport",)

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        self._transport.write(unchunk(data))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def abort(self) -> None:
        self._transport.abort()


def unchunk(framed: bytes) -> bytes:
    """The payloads of one or more whole HTTP/1.1 chunks (`wire.chunk`), the last chunk dropped."""
    out = []
    pos = 0
    while pos < len(framed):
        line_end = framed.index(b"\r\n", pos)
        size = int(framed[pos:line_end], 16)
        start = line_end + 2
        out.append(framed[start:start + size])
        pos = start + size + 2
    return b"".join(out)


def body_transport(request: web.Request) -> Transport | None:
    """Where a streaming handler writes framed events for `request`: its transport, unchunked for HTTP/1.0."""
    transport = request.transport
    if transport is None or request.version >= (1, 1):
        return transport
    return PlainBody(transport)


def begin_reading(
    registry: StreamRegistry,
    channel: Channel,
    transport: Transport,
    last_event_id: str | None,
    retry_ms: int,
    on_end: Callable[[str], None],
    connection_id: str,
    first: tuple[Event, ...] = (),
    info: Any = None,
    implicit: bool = False,
    fmt: str = SSE,
    preface: bytes | None = None,
) -> Connection:
    """Attach a reader whose response head is sent: `retry:`, what goes to this reader first (its
    `connected` event and onConnect's, framed), a `reset` notice if its id cannot be resumed from,
    the replay. No await from attach to the last replayed event, so no live event can slip in
    between: the reader sees history then live, with no gap and no duplicate.

    A replay can be the whole history (any unusable id asks for it): if more than `max_buffer_bytes`
    of it is left unsent, the reader is cut at once, as a publish cuts a slow reader, rather than
    holding that memory until the next publish looks.

    `implicit`: the id is the engine's own (where the channel stood when onConnect began), not the
    client's: if it cannot be resumed from, the reader starts live, as a fresh reader does.

    `fmt`: the reader's wire format (every transport starts this way); `preface`: what goes before
    anything else (SSE's `retry:` when None)."""
    conn, replay = registry.attach(channel, transport, last_event_id, on_end, connection_id, info, fmt)
    transport.write(chunk(encode_retry(retry_ms)) if preface is None else preface)
    for ev in first:
        transport.write(ev.frame(fmt))
    events = replay.events
    if replay.reset is not None:
        if implicit:
            events = []
        else:
            transport.write(notice("reset", {"reason": replay.reset, "lastEventId": last_event_id}).frame(fmt))
    for ev in events:
        transport.write(ev.frame(fmt))
    if transport.get_write_buffer_size() > registry.max_buffer_bytes:
        log.warning("closed a slow reader of %s: more than %d bytes unsent after its replay",
                    channel.path, registry.max_buffer_bytes)
        registry.detach(conn, "slow consumer")
        transport.abort()  # drop its buffer now: memory stays bounded
    return conn


def check_room(registry: StreamRegistry) -> None:
    """503 unless one more reader fits."""
    if registry.full():
        raise HTTPError(503, "too_many_connections",
                        f"the server already has {registry.max_connections} stream readers "
                        "(streams.max_connections); retry later")


def channels_full(registry: StreamRegistry) -> HTTPError:
    return HTTPError(503, "too_many_channels",
                     f"{registry.max_channels} channels are open (streams.max_channels); retry later")


def open_channel(registry: StreamRegistry, path: str) -> Channel:
    """The channel a reader asked for, made if need be: 404 if no stream has it, 503 past max_channels."""
    try:
        channel = registry.open(path)
    except TooManyChannels:
        raise channels_full(registry) from None
    if channel is None:
        raise HTTPError(404, "not_found", f"nothing is registered at {path}")
    return channel


def last_event_id(request: web.Request) -> str | None:
    return request.headers.get("Last-Event-ID") or request.query.get("lastEventId") or None


async def serve_sse(
    request: web.Request, channel: Channel, registry: StreamRegistry, config: StreamsConfig, request_id: str,
    cors: bool = True, first: tuple[Event, ...] = (), info: Any = None, resume_from: str | None = None,
    connection_id: str | None = None, on_attached: Callable[[], None] | None = None, fmt: str = SSE,
) -> web.StreamResponse:
    """Serve one reader until it or the server ends it. `resume_from`: where to replay from when the
    client gave no id (a reader whose onConnect ran gets what was sent while it ran). `fmt` NDJSON
    serves the same events as JSON lines (`{"id","event","data"}`), blank lines as heartbeats."""
    check_room(registry)
    cid = connection_id or registry.new_id()
    content_type = "application/x-ndjson; charset=utf-8" if fmt == NDJSON else "text/event-stream; charset=utf-8"
    response = web.StreamResponse(status=200, headers=sse_headers(config, request_id, cors, cid, content_type))
    try:
        await response.prepare(request)
    except ConnectionResetError:  # the client left before the head went: nothing to serve
        return response
    transport = body_transport(request)
    if transport is None or transport.is_closing():
        return response
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    given = last_event_id(request)
    conn = begin_reading(registry, channel, transport, given or resume_from, config.retry_ms, ender(ended), cid,
                         first, info, implicit=given is None and resume_from is not None, fmt=fmt,
                         preface=None if fmt == SSE else b"")
    if on_attached is not None:
        on_attached()
    try:
        await ended
    finally:
        registry.detach(conn)
    return response


class Pinged(Protocol):
    def heartbeat(self) -> None: ...


async def heartbeat(targets: list[Pinged], seconds: float) -> None:
    """Ping every reader every `seconds`, which also finds readers whose client is gone."""
    while True:
        await asyncio.sleep(seconds)
        for t in targets:
            t.heartbeat()
