"""A channel over WebSocket: aiohttp does the handshake, reads the client's frames and answers pings;
the fan-out writes frames built once per message straight to the socket, as it does for SSE.

Without a subprotocol a text frame is a message's data as sent (seed 000 clients `JSON.parse(event.
data)`); with `rtengine.v1` it is the envelope `{"id", "event", "data"}`, a client resumes with
`?lastEventId=`, and a message `{"id": n, "data": ...}` is answered `{"replyTo": n, "data": ...}`.
Close codes say why a socket ends (`CLOSE_CODES`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from engine.connections import ConnectionHooks, NoHandler, TooManyMessages, answer_event
from engine.errors import HTTPError, ScriptError
from engine.http.script_errors import classify, log_script_error
from engine.streams.event import WS, WS_V1, Event
from engine.streams.registry import Channel, Connection, StreamRegistry
from engine.streams.sse import begin_reading, last_event_id
from engine.streams.wire import ws_frame

log = logging.getLogger("engine.streams")

SUBPROTOCOL = "rtengine.v1"
SLOW_CONSUMER = 4413  # its unsent frames passed streams.max_buffer_bytes
TOO_MANY_MESSAGES = 4429
UNAUTHORIZED, FORBIDDEN = 4401, 4403
CUT_GRACE = 5.0  # seconds a cut socket's close frame may take to leave before the socket is dropped

# Why the server ended a reader -> the close code that says so.
CLOSE_CODES = {
    "the server is shutting down": WSCloseCode.GOING_AWAY,
    "the stream was removed": WSCloseCode.GOING_AWAY,
    "slow consumer": SLOW_CONSUMER,
    "the token expired": UNAUTHORIZED,
    "the stream now needs a token": UNAUTHORIZED,
}
# An HTTP refusal before the socket was accepted -> its close code (a browser never sees the status).
REFUSALS = {401: UNAUTHORIZED, 403: FORBIDDEN, 414: WSCloseCode.POLICY_VIOLATION,
            429: TOO_MANY_MESSAGES, 503: WSCloseCode.TRY_AGAIN_LATER}
_MAX_REPLY_ID = 64  # characters of a string message id echoed back in replyTo


class SocketTransport:
    """The socket as the fan-out sees it. Writes go straight to asyncio's transport (its own bound
    methods: no Python frame added per write). A cut slow consumer's close frame (4413) is queued
    behind what it has not read: it gets CUT_GRACE seconds to take it, then the socket is dropped."""

    __slots__ = ("write", "get_write_buffer_size", "is_closing", "_transport", "_grace")

    def __init__(self, transport: asyncio.Transport, grace: float = CUT_GRACE) -> None:
        self.write = transport.write
        self.get_write_buffer_size = transport.get_write_buffer_size
        self.is_closing = transport.is_closing
        self._transport = transport
        self._grace = grace  # 0: dropped at once, unsent frames and all

    def abort(self) -> None:
        if self._grace:
            asyncio.get_running_loop().call_later(self._grace, self._transport.abort)
        else:
            self._transport.abort()


def handshake_problem(request: web.Request) -> HTTPError | None:
    """A handshake aiohttp would refuse (bad version, key, method): a 400 before any script is asked."""
    ready = web.WebSocketResponse(protocols=(SUBPROTOCOL,)).can_prepare(request)
    if ready.ok:
        return None
    return HTTPError(400, "bad_websocket_handshake", "not a WebSocket handshake this server accepts "
                     "(Sec-WebSocket-Version 13 and a 16-byte Sec-WebSocket-Key are needed)")


def _socket(heartbeat: float, max_message: int) -> web.WebSocketResponse:
    return web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=heartbeat, max_msg_size=max_message,
                                 compress=False)


async def refuse(request: web.Request, error: HTTPError, heartbeat: float) -> web.WebSocketResponse:
    """Accept the socket only to close it with a code and the reason: a browser's WebSocket cannot
    read an HTTP status, only a close frame."""
    ws = _socket(heartbeat, 1024)
    await ws.prepare(request)
    code = REFUSALS.get(error.status, WSCloseCode.POLICY_VIOLATION)
    if error.code == "refused":
        code = WSCloseCode.POLICY_VIOLATION
    elif error.status >= 500 and error.status != 503:
        code = WSCloseCode.INTERNAL_ERROR
    await ws.close(code=code, message=close_reason(error.message))
    return ws


def close_reason(text: str) -> bytes:
    """A close frame's reason: at most 123 bytes of UTF-8, cut on a character."""
    return text.encode("utf-8", "replace")[:123].decode("utf-8", "ignore").encode("utf-8")


async def serve_ws(
    request: web.Request, channel: Channel, registry: StreamRegistry, hooks: ConnectionHooks, heartbeat: float,
    max_message: int, retry_ms: int, request_id: str, connection_id: str, first: tuple[Event, ...] = (),
    info: Any = None, resume_from: str | None = None, on_attached: Callable[[], None] | None = None,
) -> web.WebSocketResponse:
    """Serve one socket until it or the server ends it; its frames go to the stream's onMessage."""
    ws = _socket(heartbeat, max_message)
    ws.headers["X-Connection-Id"] = connection_id
    await ws.prepare(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        return ws
    fmt = WS_V1 if ws.ws_protocol == SUBPROTOCOL else WS
    ended: list[str] = []

    def on_end(reason: str) -> None:
        """The server dropped the reader: say why in the close frame."""
        if not ended:
            ended.append(reason)
            if not ws.closed:  # whatever the reason says: a detached socket must not stay open
                code = CLOSE_CODES.get(reason, WSCloseCode.OK)
                asyncio.ensure_future(ws.close(code=code, message=close_reason(reason)))

    sock = SocketTransport(transport)  # type: ignore[arg-type]
    given = last_event_id(request)
    conn = begin_reading(registry, channel, sock, given or resume_from, retry_ms, on_end, connection_id, first,
                         info, implicit=given is None and resume_from is not None, fmt=fmt, preface=b"")
    if on_attached is not None:
        on_attached()
    tasks: set[asyncio.Task[None]] = set()
    try:
        async for msg in ws:
            if conn.ended:
                break
            if msg.type == WSMsgType.TEXT:
                # Counted here, before anything is made for it: a client cannot queue work unbounded.
                if len(tasks) >= hooks.max_client_messages:
                    await ws.close(code=TOO_MANY_MESSAGES, message=close_reason(
                        f"more than {hooks.max_client_messages} messages waiting (streams.max_client_messages)"))
                    break
                unpacked = _unpack(msg.data) if fmt == WS_V1 else (None, msg.data)
                if unpacked is None:  # answered here: a bad frame costs no task
                    _send(conn, registry, {"replyTo": None, "error": {"code": "bad_message", "message": _BAD}})
                else:
                    msg_id, text = unpacked
                    task = asyncio.ensure_future(_message(ws, conn, registry, hooks, fmt, msg_id, text, request_id))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.sleep(0)  # frames queued up are read one per turn of the loop, not in one go
            elif msg.type == WSMsgType.BINARY:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text frames only")
                break
            elif msg.type == WSMsgType.ERROR:
                break
        if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
            log.info("a WebSocket reader of %s sent a message over %d bytes: closed", channel.path, max_message)
    finally:
        registry.detach(conn)
    return ws


_BAD = 'a message is {"id": <number or string>, "data": <any JSON>} with the rtengine.v1 subprotocol'


def _unpack(text: str) -> tuple[Any, str] | None:
    """An rtengine.v1 frame's (id, data as JSON text), or None if it is not one."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, dict) or "data" not in frame:
        return None
    msg_id = frame.get("id")
    if not (msg_id is None or (isinstance(msg_id, (int, float)) and not isinstance(msg_id, bool))
            or (isinstance(msg_id, str) and len(msg_id) <= _MAX_REPLY_ID)):
        msg_id = None
    return msg_id, json.dumps(frame["data"])


async def _message(ws: web.WebSocketResponse, conn: Connection, registry: StreamRegistry, hooks: ConnectionHooks,
                   fmt: str, msg_id: Any, text: str, request_id: str) -> None:
    """One client message to onMessage (the data of an rtengine.v1 frame, or a raw frame, parsed when
    it is JSON); its reply, or error, goes back to this socket only."""
    try:
        answer = await hooks.message(conn, text, True)
    except NoHandler as e:  # as a lean socket of a plain stream answers any data frame
        await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=close_reason(str(e)))
        return
    except TooManyMessages as e:
        await ws.close(code=TOO_MANY_MESSAGES, message=close_reason(str(e)))
        return
    except ScriptError as e:
        log_script_error(f"onMessage on {conn.channel.path}", request_id, e)
        if fmt == WS_V1:
            _, code, message = classify(e)
            _send(conn, registry, {"replyTo": msg_id, "error": {"code": code, "message": message}})
        return
    if answer.text is None or conn.ended:
        return
    # A reply counts toward the socket's unsent bytes as events do: a client that sends and never
    # reads is cut as a slow consumer.
    if fmt == WS:
        registry.write_to(conn, ws_frame(answer.text.encode("utf-8", "replace")))
        return
    reply = answer_event(answer)  # its JSON checked before it is embedded
    data = reply.data if reply.json else json.dumps(reply.data)
    registry.write_to(conn, ws_frame(f'{{"replyTo":{json.dumps(msg_id)},"data":{data}}}'.encode("utf-8", "replace")))


def _send(conn: Connection, registry: StreamRegistry, body: dict[str, Any]) -> None:
    if not conn.ended:
        registry.write_to(conn, ws_frame(json.dumps(body).encode("utf-8", "replace")))
