"""The first thing every connection meets: its first request decides who serves it.

A fresh connection whose first request is a plain `GET <stream path>` (the common case: EventSource
and `curl -N` open one) becomes a `LeanReader` below aiohttp, a few KB per idle reader. Anything else,
or anything this conservative reader of request heads is unsure of, is handed to aiohttp with the
bytes read so far once its head is complete, and aiohttp serves that connection from then on as if it
had read them itself. A connection that has not sent a complete head within
`server.header_timeout_seconds` gets a 408 and is closed; from the hand-over on, aiohttp's keep-alive
timer (`server.keepalive_seconds`) bounds every later wait for a request head.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from engine.http.keys import CONFIG, LEAN_ROUTES, LEAN_SOCKETS, STREAMS
from engine.http.lean_route import LeanRoute, RouteHead, read_route_head, route_of
from engine.http.middleware import new_request_id
from engine.streams.lean_reader import LeanReader
from engine.streams.registry import StreamRegistry
from engine.streams.sse import sse_head
from engine.transports.lean_socket import LeanSocket, handshake_head, valid_key, wants
from engine.transports.negotiate import SSE, choose

access_log = logging.getLogger("aiohttp.access")

MAX_HEAD = 8192  # a longer head goes to aiohttp, which has its own limits and errors
MAX_METHOD = 32  # a first "word" longer than this is no request line: aiohttp answers it at once
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HANDS_TO_AIOHTTP = (b"content-length", b"transfer-encoding", b"expect")
_WS_HEADERS = (b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-protocol")
_PREFIX = b"GET /"


@dataclass(frozen=True, slots=True)
class StreamRequest:
    path: str
    last_event_id: str | None
    request_id: str | None
    ws_key: str | None = None  # a WebSocket handshake's key: the reader is a lean socket
    ws_protocols: str | None = None


NEED_MORE = object()  # the head is not complete yet
HAND_OVER = object()  # aiohttp serves this connection


def read_head(buf: bytes | bytearray, streams: StreamRegistry) -> StreamRequest | object:
    """Is `buf` the start of a connection whose first request is a plain GET of a stream?"""
    if not buf.startswith(_PREFIX[: len(buf)]):
        return HAND_OVER
    line_end = buf.find(b"\r\n")
    if line_end < 0:
        return HAND_OVER if len(buf) > MAX_HEAD else NEED_MORE
    parts = buf[:line_end].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return HAND_OVER
    raw_path, _, query = parts[1].partition(b"?")
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return HAND_OVER
    head_end = buf.find(b"\r\n\r\n", line_end)
    if head_end < 0:  # matched once the head is whole: a head sent a byte at a time costs one match
        return HAND_OVER if len(buf) > MAX_HEAD else NEED_MORE
    if head_end + 4 != len(buf) or head_end > MAX_HEAD:  # pipelined bytes, or too long
        return HAND_OVER
    # "%" forms of a path are left to aiohttp's decoding; aiohttp answers 404s, routes and 503s, and
    # serves streams whose readers need a token checked or a script asked.
    found = streams.match(path)
    if found is None or not found[0].plain or streams.full() or (
            path not in streams.channels and len(streams.channels) >= streams.max_channels) or (
            not streams.broker.is_ready(path)):  # its first reader here waits for the broker: aiohttp's
        return HAND_OVER
    last_event_id = request_id = accept = None
    ws: dict[bytes, str] = {}
    for line in buf[line_end + 2 : head_end].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TOKEN.issuperset(name):  # also rejects obs-fold lines
            return HAND_OVER
        name, value = name.lower(), value.strip()
        if name in _HANDS_TO_AIOHTTP and not (name == b"content-length" and value == b"0"):
            return HAND_OVER
        if name == b"last-event-id":
            last_event_id = value.decode("latin-1")
        elif name == b"x-request-id":
            request_id = value.decode("latin-1")
        elif name == b"accept":
            accept = value.decode("latin-1")
        elif name in _WS_HEADERS:
            ws[bytes(name)] = value.decode("latin-1")
    params = parse_qs(query.decode("latin-1"), keep_blank_values=True) if query else {}
    if b"upgrade" in ws:  # a WebSocket handshake, well formed, or aiohttp's to answer
        key = ws.get(b"sec-websocket-key", "")
        if (ws[b"upgrade"].lower() != "websocket" or "upgrade" not in ws.get(b"connection", "").lower()
                or ws.get(b"sec-websocket-version") != "13" or not valid_key(key)):
            return HAND_OVER
        return StreamRequest(path, last_event_id or params.get("lastEventId", [None])[0] or None, request_id, key,
                             ws.get(b"sec-websocket-protocol"))
    if choose(None, accept, params.get("transport", [None])[0]) != SSE:  # NDJSON and long-poll: aiohttp's
        return HAND_OVER
    if not last_event_id:
        last_event_id = params.get("lastEventId", [None])[0]
    return StreamRequest(path, last_event_id or None, request_id)


def head_ended(buf: bytes | bytearray, start: int = 0) -> bool:
    """Is a request head (ended by an empty line) in `buf`, at or after `start`? Bare LFs count too:
    whether to accept them is aiohttp's call, not a reason to keep the connection waiting."""
    return buf.find(b"\r\n\r\n", start) >= 0 or buf.find(b"\n\n", start) >= 0


def not_a_request(buf: bytes | bytearray) -> bool:
    """Bytes that cannot start a request line (a TLS hello, binary junk): aiohttp's 400 is due now."""
    method, space, _ = buf.lstrip(b"\r\n")[: MAX_METHOD + 1].partition(b" ")  # empty lines may come first
    return not _TOKEN.issuperset(method) or (not space and len(method) > MAX_METHOD)


def head_timeout_response(seconds: float, request_id: str, date: str) -> bytes:
    """The 408 for a connection whose first head is late, in the engine's JSON error shape."""
    body = json.dumps({"error": {
        "code": "header_timeout",
        "message": f"no complete request head within {seconds:g} s (server.header_timeout_seconds)",
        "request_id": request_id,
    }}).encode()
    head = ["HTTP/1.1 408 Request Timeout", "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(body)}", "Connection: close", f"X-Request-Id: {request_id}",
            f"Date: {date}", f"Server: {SERVER_SOFTWARE}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class FrontProtocol(asyncio.Protocol):
    """Reads a connection's first request head, then gives the connection away for good."""

    __slots__ = ("_aiohttp", "_app", "_config", "_streams", "_sockets", "_transport", "_buf", "_lean", "_timer")

    def __init__(self, aiohttp: Callable[[], asyncio.Protocol], app: web.Application) -> None:
        self._aiohttp = aiohttp
        self._app = app
        self._config = config = app[CONFIG]
        self._streams = app[STREAMS]
        self._sockets = app[LEAN_SOCKETS]
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()  # the head so far, when it came in more than one piece
        self._lean = config.streams.lean_readers  # could this still become a lean reader?
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(
            self._config.server.header_timeout_seconds, self._timed_out)

    def data_received(self, data: bytes) -> None:
        held = self._buf
        start = max(len(held) - 3, 0)  # where an empty line completed by `data` can begin
        if held:
            held += data
            buf: bytes | bytearray = held
        else:
            buf = data
        if self._lean:
            found = read_head(buf, self._streams)
            if isinstance(found, StreamRequest):
                self._done()
                self._serve_stream(found)
                return
            if found is HAND_OVER:
                # Its head may have ended in an earlier piece: with bare LFs, which read_head waits past.
                self._lean, start = False, 0
        # Whatever else it is, it stays here until its head is complete: a slow head is the
        # header timeout's to cut, not something aiohttp would wait for without bound.
        if not (head_ended(buf, start) or len(buf) > MAX_HEAD or (not self._lean and not_a_request(buf))):
            if buf is data:
                held += data
            return
        self._done()
        if self._config.server.lean_routes and self._serve_routes(buf):
            return
        self._hand_over(bytes(buf))

    def eof_received(self) -> bool | None:
        buf = bytes(self._buf)
        self._done()
        handler = self._hand_over(buf)
        return handler.eof_received() if handler is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    def _done(self) -> None:
        """The head phase is over: no timer, no buffer."""
        self._buf = bytearray()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        seconds = self._config.server.header_timeout_seconds
        transport.write(head_timeout_response(seconds, new_request_id(None), email.utils.formatdate(usegmt=True)))
        transport.close()
        if self._config.logs.access:
            peer = transport.get_extra_info("peername")
            access_log.info('%s "-" 408 (no complete request head within %g s)', peer[0] if peer else "-", seconds)

    def _serve_routes(self, buf: bytes | bytearray) -> bool:
        """A plain GET of a JS route: served by a `LeanRoute`, with whatever follows on the connection."""
        head = read_route_head(buf)
        if not isinstance(head, RouteHead) or route_of(self._app, head) is None:
            return False
        transport = self._transport
        if transport is None or transport.is_closing():
            return True
        conn = LeanRoute(self._app, self._aiohttp, self._app[LEAN_ROUTES])
        transport.set_protocol(conn)
        conn.start(transport, buf, head)
        return True

    def _hand_over(self, buf: bytes) -> asyncio.Protocol | None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return None
        handler = self._aiohttp()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if buf:
            handler.data_received(buf)
        return handler

    def _serve_stream(self, req: StreamRequest) -> None:
        transport = self._transport
        assert transport is not None
        rid = new_request_id(req.request_id)
        s = self._config.streams
        channel = self._streams.open(req.path)  # read_head found its stream, and room for it, this turn
        assert channel is not None
        cid = self._streams.new_id()
        date = email.utils.formatdate(usegmt=True)
        log_line = None
        if self._config.logs.access:
            peer = transport.get_extra_info("peername")
            # The path only: a query (a `?token=`, say) never reaches the log from here.
            status = "101 websocket" if req.ws_key else "200 stream"
            log_line = f'{peer[0] if peer else "-"} "GET {req.path} HTTP/1.1" {status}'
        if req.ws_key is not None:
            subprotocol = wants(req.ws_protocols)
            head = handshake_head(req.ws_key, subprotocol, cid, rid, date, SERVER_SOFTWARE)
            sock = LeanSocket(self._streams, self._sockets, self._config.limits.max_body_bytes, log_line)
            transport.set_protocol(sock)
            sock.start(transport, channel, head, subprotocol is not None, req.last_event_id, cid)
            return
        head = sse_head(s, rid, date, cid)
        reader = LeanReader(self._streams, log_line)
        transport.set_protocol(reader)
        reader.start(transport, channel, head, req.last_event_id, s.retry_ms, cid)


class EngineRunner(web.AppRunner):
    """An AppRunner whose sites accept connections through `FrontProtocol`: the header timeout always,
    lean readers when `streams.lean_readers` is on."""

    @property
    def web_server(self) -> web.Server | None:
        """aiohttp's own protocol factory (its `connections` are the ones aiohttp serves)."""
        return super().server

    @property
    def server(self) -> Any:
        """What the sites call for each new connection."""
        inner = self.web_server
        return None if inner is None else partial(FrontProtocol, inner, self.app)
