"""A WebSocket reader of a plain stream served on its own small protocol, below aiohttp, as a lean
SSE reader is: an idle socket is then its transport, this object and its registry entries (about as
much as an SSE reader), not aiohttp's request, handler task, parser and timers (~19 KB).

A plain stream takes no messages, so the protocol reads only what the WebSocket protocol needs:
pings (answered), pongs (the socket is alive), close (answered); any data frame closes the socket
with 1003. `LeanSockets` pings every socket each heartbeat and closes one that answered nothing since
the last. The front (`engine.http.front`) decides which connections come here: a fresh connection
whose first request is a well-formed handshake for a plain stream; everything else is aiohttp's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct

from aiohttp import WSCloseCode

from engine.streams.event import WS, WS_V1
from engine.streams.registry import Channel, Connection, StreamRegistry
from engine.streams.sse import begin_reading
from engine.streams.wire import ws_frame
from engine.transports.websocket import CLOSE_CODES, SUBPROTOCOL, SocketTransport, close_reason

access_log = logging.getLogger("aiohttp.access")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PING = ws_frame(b"", 0x9)
_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA
MAX_CONTROL_FRAMES = 64  # in one read: pings and pongs beyond this are a flood, not a heartbeat
_KNOWN = frozenset((0x0, 0x1, 0x2, _CLOSE, _PING, _PONG))
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))
_WHY: dict[int, str] = {WSCloseCode.UNSUPPORTED_DATA: "this stream takes no messages (it has no onMessage)",
        WSCloseCode.MESSAGE_TOO_BIG: "message too big"}


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def handshake_head(key: str, subprotocol: str | None, connection_id: str, request_id: str, date: str,
                   server: str) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Accept: {accept_key(key)}"]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    lines += [f"X-Connection-Id: {connection_id}", f"X-Request-Id: {request_id}", f"Date: {date}", f"Server: {server}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def close_frame(code: int, reason: str = "") -> bytes:
    return ws_frame(struct.pack("!H", code) + close_reason(reason), _CLOSE)


class LeanSockets:
    """This process's lean sockets, for their heartbeat."""

    def __init__(self) -> None:
        self.live: set[LeanSocket] = set()

    def heartbeat(self) -> None:
        for sock in list(self.live):
            sock.beat()


class LeanSocket(asyncio.Protocol):
    """Owns a connection whose first request was a WebSocket handshake for a plain stream."""

    __slots__ = ("_registry", "_sockets", "_conn", "_transport", "_buf", "_max", "_heard", "_log_line")

    def __init__(self, registry: StreamRegistry, sockets: LeanSockets, max_message: int, log_line: str | None) -> None:
        self._registry = registry
        self._sockets = sockets
        self._conn: Connection | None = None
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._max = max_message
        self._heard = True  # anything from the client since the last ping
        self._log_line = log_line

    def start(self, transport: asyncio.Transport, channel: Channel, head: bytes, envelopes: bool,
              last_event_id: str | None, connection_id: str) -> None:
        self._transport = transport
        transport.write(head)
        # The socket is its own `on_end` (__call__); SocketTransport lets a cut's close frame go out.
        self._conn = begin_reading(self._registry, channel, SocketTransport(transport), last_event_id, 0, self,  # type: ignore[arg-type]
                                   connection_id, fmt=WS_V1 if envelopes else WS, preface=b"")
        if not self._conn.ended:
            self._sockets.live.add(self)

    def beat(self) -> None:
        t = self._transport
        if t is None or t.is_closing():
            return
        if not self._heard:  # nothing since the last ping, not even a pong
            self._end(WSCloseCode.GOING_AWAY, "no answer to pings")
            return
        self._heard = False
        t.write(PING)

    def data_received(self, data: bytes) -> None:
        """Read frames by offset (no copy per frame); the pongs a chunk asks for go out in one write,
        and none once the client leaves more than streams.max_buffer_bytes of them unread."""
        self._heard = True
        buf = self._buf + data if self._buf else data
        pos = frames = 0
        pongs: list[bytes] = []
        while True:
            frame = _parse(buf, pos, self._max)
            if frame is None:
                break
            if isinstance(frame, int):  # the code to close with
                self._answer(pongs)
                self._end(frame, _WHY.get(frame, "protocol error"))
                return
            opcode, payload, pos = frame
            frames += 1
            if frames > MAX_CONTROL_FRAMES:  # no client needs this many at once: a flood
                self._end(WSCloseCode.POLICY_VIOLATION, "too many control frames at once")
                return
            if opcode == _PING:
                pongs.append(ws_frame(payload, _PONG))
            elif opcode == _CLOSE:
                self._answer(pongs)
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0
                self._end(WSCloseCode.OK if code in _VALID_CLOSE or 3000 <= code <= 4999 else
                          WSCloseCode.PROTOCOL_ERROR, "")
                return
        if not self._answer(pongs):
            return
        self._buf = bytes(buf[pos:])

    def _answer(self, pongs: list[bytes]) -> bool:
        t = self._transport
        if not pongs or t is None or t.is_closing():
            return True
        if t.get_write_buffer_size() > self._registry.max_buffer_bytes:  # it pings and never reads
            self._drop()
            t.abort()
            return False
        t.write(b"".join(pongs))
        return True

    def _end(self, code: int, reason: str) -> None:
        t = self._transport
        if t is not None and not t.is_closing():
            t.write(close_frame(code, reason))
            t.close()
        self._drop()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop()

    def _drop(self) -> None:
        self._sockets.live.discard(self)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._registry.detach(conn)

    def __call__(self, reason: str) -> None:
        """The server dropped the reader (stream removed, shutdown, closeConnection, slow consumer)."""
        self._sockets.live.discard(self)
        self._conn = None
        t = self._transport
        if t is not None and not t.is_closing():
            t.write(close_frame(CLOSE_CODES.get(reason, WSCloseCode.OK), reason))
            t.close()
        if self._log_line is not None:
            access_log.info("%s (%s)", self._log_line, reason)


def _parse(buf: bytes, pos: int, limit: int) -> tuple[int, bytes, int] | int | None:
    """One whole client frame at `pos` in `buf`: (opcode, unmasked payload, where the next begins);
    None if it is not all here yet; a close code if it cannot be taken (unmasked, reserved bits or
    opcodes, too big, or a data frame: a plain stream takes no messages, so one is refused at its
    header, unread)."""
    if len(buf) - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    opcode, n = b0 & 0x0F, b1 & 0x7F
    if b0 & 0x70 or not b1 & 0x80 or opcode not in _KNOWN:  # no extensions agreed; a client must mask
        return int(WSCloseCode.PROTOCOL_ERROR)
    if opcode < _CLOSE:
        if n == 126 and len(buf) - pos >= 4:
            n = struct.unpack_from("!H", buf, pos + 2)[0]
        elif n == 127 and len(buf) - pos >= 10:
            n = struct.unpack_from("!Q", buf, pos + 2)[0]
        elif n >= 126:
            return None  # its length is not all here yet
        return int(WSCloseCode.MESSAGE_TOO_BIG) if n > limit else int(WSCloseCode.UNSUPPORTED_DATA)
    if n > 125 or not b0 & 0x80:  # a control frame is short and whole (RFC 6455 5.5)
        return int(WSCloseCode.PROTOCOL_ERROR)
    if len(buf) - pos < 6 + n:
        return None
    mask = buf[pos + 2:pos + 6]
    payload = bytes(b ^ mask[i & 3] for i, b in enumerate(buf[pos + 6:pos + 6 + n]))
    return opcode, payload, pos + 6 + n


def wants(protocols: str | None) -> str | None:
    """The subprotocol to answer with: rtengine.v1 when the client offers it."""
    if protocols and SUBPROTOCOL in (p.strip() for p in protocols.split(",")):
        return SUBPROTOCOL
    return None
