"""A stream reader served on its own small protocol, below aiohttp: no request, task or parser kept.

An idle reader is then a transport, this object and its registry entry, a few KB instead of the
~12 KB that aiohttp's per-request objects and suspended coroutines hold. `engine.http.front` decides
which connections come here.
"""

from __future__ import annotations

import asyncio
import logging

from engine.streams.registry import Channel, Connection, StreamRegistry
from engine.streams.sse import begin_reading

access_log = logging.getLogger("aiohttp.access")
_LAST_CHUNK = b"0\r\n\r\n"


class LeanReader(asyncio.Protocol):
    """Owns a connection whose only request was `GET <stream path>` and whose head is already sent."""

    __slots__ = ("_registry", "_conn", "_transport", "_log_line")

    def __init__(self, registry: StreamRegistry, log_line: str | None) -> None:
        self._registry = registry
        self._conn: Connection | None = None
        self._transport: asyncio.Transport | None = None
        self._log_line = log_line  # the access-log line, when access logging is on

    def start(
        self, transport: asyncio.Transport, channel: Channel, head: bytes, last_event_id: str | None, retry_ms: int,
        connection_id: str,
    ) -> None:
        self._transport = transport
        transport.write(head)
        # The reader is its own `on_end` (__call__): no bound method kept per reader.
        self._conn = begin_reading(self._registry, channel, transport, last_event_id, retry_ms, self, connection_id)

    def data_received(self, data: bytes) -> None:
        """A reader has nothing more to say: anything it sends is dropped."""

    def eof_received(self) -> bool | None:
        return None  # the client closed its side: close ours too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._registry.detach(self._conn)
            self._conn = None

    def __call__(self, reason: str) -> None:
        """The server dropped the reader (stream removed, shutdown, slow consumer): end the response."""
        t = self._transport
        if t is not None and not t.is_closing():
            t.write(_LAST_CHUNK)
            t.close()
        if self._log_line is not None:
            access_log.info("%s (%s)", self._log_line, reason)
