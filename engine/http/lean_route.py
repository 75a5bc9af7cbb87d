"""Plain GETs of JS routes served below aiohttp, on a small keep-alive protocol of their own.

A request to a JS route costs the script call, two thread crossings, and aiohttp's request and
response machinery, which alone is most of a plain aiohttp handler's time. A connection whose
requests are all simple (`GET`, HTTP/1.1, no body, an ASCII path with nothing to decode or
normalise, CRLF lines, no upgrade, a JS route's path that no stream has) is served here instead,
one request at a time, in order. The first request that is anything else, and everything after
it, goes to aiohttp with the bytes not yet answered, as `front.py` hands over a first request; so
does a handler that turned out to stream (its answer goes with it: `dispatch` serves it).

What a client sees is what aiohttp would send: the same status lines, headers, JSON errors, request
ids, keep-alive (`server.keepalive_seconds` between requests) and `Connection: close` handling.
`server.lean_routes: false` turns this off.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from engine import rules
from engine.http.access_log import lean_line
from engine.http.keys import CONFIG, ROUTES, STREAMS
from engine.http.middleware import error_for, new_request_id
from engine.http.request import js_request_parts
from engine.http.response import js_response
from engine.routes import Match

access_log = logging.getLogger("aiohttp.access")

MAX_HEAD = 8192  # a longer head is aiohttp's (with its own limits and errors)
MAX_PENDING = 2 * MAX_HEAD  # bytes a client may send ahead of its answers before we stop reading
HANDED_ANSWER_SECONDS = 5.0  # a streaming answer aiohttp never took is ended after this long
# A whole simple head in one pass: `GET`, a path of plain characters (no `%` to decode, no `#`), a
# plain query, HTTP/1.1, then header lines of a token, a colon and a value without controls.
_SIMPLE_HEAD = re.compile(
    rb"GET (/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*)(?:\?([\x21\x22\x24-\x7e]*))? HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*)\r\n")
# The headers that decide something here, and those aiohttp refuses to see twice (a 400 there: so it
# is aiohttp's to answer, and the script is never called).
_SPECIAL = re.compile(
    rb"^(content-length|transfer-encoding|expect|upgrade|connection|x-request-id|host|content-location|"
    rb"content-range|content-type|etag|max-forwards|server|user-agent):[ \t]*(.*?)[ \t]*\r$",
    re.IGNORECASE | re.MULTILINE)
_SINGLETONS = frozenset((b"content-length", b"content-location", b"content-range", b"content-type", b"etag",
                         b"host", b"max-forwards", b"server", b"transfer-encoding", b"user-agent"))
_LONE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")  # a line ending aiohttp judges, not this
MAX_HEADERS = 100  # header lines; aiohttp refuses more than 128
_NO_BODY = (204, 304)

NEED_MORE = object()  # the head is not complete yet
HAND_OVER = object()  # aiohttp's


def raw_target(raw: bytes) -> str:
    """The request target of a head this protocol read ("GET <target> HTTP/1.1")."""
    return raw[4 : raw.index(b" HTTP/1.1\r\n")].decode("ascii")


@dataclass(slots=True)
class RouteHead:
    """One simple request, read from the raw head. (Not frozen: a frozen dataclass's __init__ costs
    a microsecond more, and one is made per request.)"""

    path: str
    query: str  # raw, without the `?`
    headers: str  # the head's header lines ("Name: value\r\n"...), checked: the prelude splits them
    request_id: str | None
    close: bool  # the client said `Connection: close`
    end: int  # where the next request starts in the buffer


def read_route_head(buf: bytes | bytearray) -> RouteHead | object:
    """Is the start of `buf` a simple GET this protocol serves (a route of it or not: the caller matches)?
    Anything aiohttp would refuse (or might judge differently) is HAND_OVER: aiohttp answers it."""
    m = _SIMPLE_HEAD.match(buf)
    if m is None:
        whole = buf[:-1] if buf.endswith(b"\r") else buf  # a CR whose LF is still on its way is fine
        if (buf.find(b"\r\n\r\n") >= 0 or len(buf) > MAX_HEAD or not buf.startswith(b"GET /"[: len(buf)])
                or _LONE_CR_OR_LF.search(whole)):
            return HAND_OVER
        return NEED_MORE
    if m.end() > MAX_HEAD + 4:
        return HAND_OVER
    raw_path, query, block = m.group(1), m.group(2) or b"", m.group(3)
    if b"/." in raw_path or b"//" in raw_path or block.count(b"\r\n") > MAX_HEADERS:
        return HAND_OVER  # dot segments and empty ones are aiohttp's to normalise
    request_id = None
    close = False
    seen: set[bytes] = set()
    for name, value in _SPECIAL.findall(block):
        low = name.lower()
        if low in seen and low in _SINGLETONS:
            return HAND_OVER
        seen.add(low)
        if low == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if b"upgrade" in tokens:
                return HAND_OVER
            close = close or b"close" in tokens
        elif low == b"x-request-id":
            if request_id is None:  # the first, as aiohttp reads it
                request_id = value.decode("latin-1")
        elif low in (b"transfer-encoding", b"expect", b"upgrade") or (low == b"content-length" and value != b"0"):
            return HAND_OVER
    if b"host" not in seen:
        return HAND_OVER
    headers = block.decode("utf-8", "replace")  # split in JS, off the interpreter lock
    return RouteHead(raw_path.decode("ascii"), query.decode("ascii"), headers, request_id, close, m.end())


def route_of(app: web.Application, head: RouteHead) -> Match | None:
    """The JS route that takes this GET, if nothing before it would: the engine's own paths (aiohttp's
    router has them before the catch-all: a script's `/{a}` must not answer `/health`), a stream, a
    poller's farewell."""
    if (rules.is_reserved(head.path) or app[STREAMS].match(head.path) is not None
            or "transport=poll" in head.query):
        return None
    found = app[ROUTES].match("GET", head.path, head.path)
    return found if isinstance(found, Match) else None


class LeanRoutes:
    """The connections served here, so shutdown can close them (each after its answer)."""

    def __init__(self) -> None:
        self.open: set[LeanRoute] = set()
        # transport -> a streaming answer handed to aiohttp with its request (and that request's target)
        self.answers: dict[Any, tuple[dict[str, Any], Any, str, str]] = {}

    def claim(self, transport: Any, target: str) -> tuple[dict[str, Any], Any, str] | None:
        """The answer handed over with the request aiohttp now serves, if this is that request (a
        request aiohttp refused leaves an answer nobody takes: it is ended here, or when it times out)."""
        handed = self.answers.pop(transport, None)
        if handed is None:
            return None
        record, ctx, rid, handed_target = handed
        if handed_target != target:
            ctx.abandon(record)
            return None
        return record, ctx, rid  # the request line was GET <target>: aiohttp read the same one

    def close_all(self) -> None:
        for conn in list(self.open):
            conn.close_when_idle()


class LeanRoute(asyncio.Protocol):
    """A connection of simple JS route GETs: read a head, call the script, write the answer, repeat."""

    def __init__(self, app: web.Application, aiohttp: Any, routes: LeanRoutes) -> None:
        self._app = app
        self._aiohttp = aiohttp  # aiohttp's protocol factory, for the hand-over
        self._routes = routes
        self._config = app[CONFIG]
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._answer: asyncio.Future[Any] | None = None  # the JS call of the request being served
        self._idle: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None  # when the connection began waiting for a request
        self._writable = True
        self._closing = False  # shutdown: close once the answer under way is written
        self._peer = "-"

    def start(self, transport: asyncio.Transport, buf: bytes | bytearray, head: RouteHead) -> None:
        """Serve the connection from its first request on: `head`, read from `buf` already (front.py)."""
        self._transport = transport
        self._routes.open.add(self)
        if self._config.logs.access:
            peer = transport.get_extra_info("peername")
            self._peer = peer[0] if peer else "-"
        self._buf += buf
        self._take(head)

    # ---- asyncio.Protocol --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._answer is None:
            self._next()
        if len(self._buf) > MAX_PENDING and self._transport is not None:
            # Ahead of its answers by this much (one under way, or the client not reading them):
            # wait for them. `_next` reads again once it has taken what is here.
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # the client is done: close, and cancel an answer under way (as aiohttp does)

    def connection_lost(self, exc: Exception | None) -> None:
        self._routes.open.discard(self)
        self._stop_idle()
        if self._answer is not None:
            self._answer.cancel()  # the client left: as aiohttp's handler_cancellation does
        self._transport = None

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        if self._answer is None:
            self._next()

    # ---- serving -----------------------------------------------------------------------------

    def close_when_idle(self) -> None:
        self._closing = True
        if self._answer is None:
            self._finish()

    def _next(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing() or not self._writable:
            return
        if self._closing:
            self._finish()
            return
        if not self._buf:
            transport.resume_reading()
            self._wait_idle()
            return
        head = read_route_head(self._buf)
        if head is NEED_MORE:
            transport.resume_reading()
            self._wait_idle()  # a slow head is bounded like an idle connection, as aiohttp bounds it
            return
        if not isinstance(head, RouteHead):
            self._hand_over(bytes(self._buf))
            return
        self._take(head)

    def _take(self, head: RouteHead) -> None:
        """The request `head` (at the buffer's start) is served next: its JS call is made now, and
        `_answered` writes its answer (callbacks, no Task: this is the hot path)."""
        self._cancel_idle()
        raw = bytes(self._buf[: head.end])
        del self._buf[: head.end]
        match = route_of(self._app, head)  # matched with the call made at once: the current table
        if match is None:  # no JS route's: aiohttp's, from this request on
            self._hand_over(bytes(self._buf), raw)
            return
        rid = new_request_id(head.request_id)
        route = match.route
        try:
            answer = route.target.handle(route.handler, js_request_parts(
                "GET", head.path, head.query, head.headers, b"", "", match.params, None, raw_headers=True))
        except Exception as e:  # noqa: BLE001 - mapped as dispatch maps it
            self._write(error_for(self._app, "GET", head.path, rid, e), rid, head)
            self._next()
            return
        self._answer = answer
        answer.add_done_callback(lambda done: self._answered(done, head, raw, rid, route))

    def _answered(self, answer: asyncio.Future[dict[str, Any]], head: RouteHead, raw: bytes, rid: str,
                  route: Any) -> None:
        self._answer = None
        if answer.cancelled():  # the client left
            return
        try:
            record = answer.result()
            if "g" in record:  # it streams: aiohttp serves it, given this request again and its answer
                self._hand_answer(record, route.target, rid, raw)
                return
            content_type = record.get("t")
            if ("h" not in record and content_type is not None and record["s"] not in _NO_BODY
                    and content_type.isascii() and content_type.isprintable()):  # the common case, written directly
                self._write_plain(record["s"], content_type, record["b"].encode("utf-8", "replace"), rid, head)
                self._next()
                return
            response = js_response(route.owner, record)
        except Exception as e:  # noqa: BLE001 - mapped as dispatch maps it
            response = error_for(self._app, "GET", head.path, rid, e)
        self._write(response, rid, head)
        self._next()

    def _write_plain(self, status: int, content_type: str, body: bytes, rid: str, head: RouteHead) -> None:
        """A response of a status, a type and a body: what js_response then `_write` would send."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        close = head.close or self._closing
        data = b"".join((
            _STATUS_LINES.get(status) or f"HTTP/1.1 {status} {_reason(status)}\r\n".encode(),
            b"Content-Type: ", content_type.encode(), b"\r\nX-Request-Id: ", rid.encode("latin-1", "replace"),
            b"\r\nContent-Length: ", str(len(body)).encode(), _date_and_server(),
            b"\r\nConnection: close\r\n\r\n" if close else b"\r\n\r\n", body))
        transport.write(data)
        self._log(head, status, len(data))
        if close:
            self._finish()

    def _write(self, response: web.Response, rid: str, head: RouteHead) -> None:
        """Any response, as aiohttp writes it: its headers (the request id set as dispatch sets it),
        then Content-Length, and Date and Server unless the script gave its own."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        status = response.status
        body = b"" if status in _NO_BODY else (response.body or b"")
        assert isinstance(body, bytes)
        close = head.close or self._closing or response.keep_alive is False
        headers = response.headers
        headers["X-Request-Id"] = rid
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if status not in _NO_BODY:
            lines.append(f"Content-Length: {len(body)}")
        if "Date" not in headers:
            lines.append(f"Date: {_date()}")
        if "Server" not in headers:
            lines.append(f"Server: {SERVER_SOFTWARE}")
        if close:
            lines.append("Connection: close")
        data = "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body
        transport.write(data)
        self._log(head, status, len(data))
        if close:
            self._finish()

    def _log(self, head: RouteHead, status: int, size: int) -> None:
        if self._config.logs.access:
            target = f"{head.path}?{head.query}" if head.query else head.path
            access_log.info(lean_line(self._peer, "GET", target, status, size, head.headers))

    def _hand_over(self, buf: bytes, first: bytes = b"") -> None:
        """Everything from here on is aiohttp's, as if it had read `first`, then `buf`, itself."""
        transport = self._transport
        self._routes.open.discard(self)
        self._stop_idle()
        if transport is None or transport.is_closing():
            return
        self._transport = None
        handler = self._aiohttp()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if not self._writable:  # the transport told us, and will not tell it again
            handler.pause_writing()
        transport.resume_reading()
        if first:  # alone: aiohttp drops what it parsed of a read whose later bytes it refuses
            handler.data_received(first)
        if buf:
            handler.data_received(buf)

    def _hand_answer(self, record: dict[str, Any], target: Any, rid: str, raw: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            target.abandon(record)
            return
        answers = self._routes.answers
        answers[transport] = (record, target, rid, raw_target(raw))

        def unclaimed() -> None:  # aiohttp never got to it (the client went): end the generator
            if answers.get(transport, (None,))[0] is record:
                del answers[transport]
                target.abandon(record)

        asyncio.get_running_loop().call_later(HANDED_ANSWER_SECONDS, unclaimed)
        self._hand_over(bytes(self._buf), raw)

    def _wait_idle(self) -> None:
        """From now on the connection waits for a request: `server.keepalive_seconds` of that closes it.
        One timer per such period, looked at when it fires, rather than one made per request."""
        loop = asyncio.get_running_loop()
        if self._idle_since is None:
            self._idle_since = loop.time()
        if self._idle is None:
            self._idle = loop.call_at(self._idle_since + self._config.server.keepalive_seconds, self._idle_check)

    def _idle_check(self) -> None:
        self._idle = None
        if self._idle_since is None:  # busy: `_wait_idle` starts the next period
            return
        left = self._idle_since + self._config.server.keepalive_seconds - asyncio.get_running_loop().time()
        if left <= 0:
            self._finish()
        else:
            self._idle = asyncio.get_running_loop().call_later(left, self._idle_check)

    def _cancel_idle(self) -> None:
        self._idle_since = None

    def _stop_idle(self) -> None:
        self._idle_since = None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _finish(self) -> None:
        self._stop_idle()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


_REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {phrase}\r\n".encode() for code, phrase in _REASONS.items()}
_date_cache: list[Any] = [0, "", b""]


def _reason(status: int) -> str:
    return _REASONS.get(status, "")  # aiohttp's status line for a code without a phrase: "HTTP/1.1 299 "


def _date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        date = formatdate(now, usegmt=True)
        _date_cache[:] = [now, date, f"\r\nDate: {date}\r\nServer: {SERVER_SOFTWARE}".encode()]
    return _date_cache[1]  # type: ignore[no-any-return]


def _date_and_server() -> bytes:
    _date()
    return _date_cache[2]  # type: ignore[no-any-return]
