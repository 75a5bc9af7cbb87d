"""The engine's log as live SSE streams for the admin API: every line, and each script's own.

A logging handler on the `engine` logger turns each record into one JSON event on a private
stream of the registry (`/_engine/logs`, and `/_engine/logs/<script>` while someone follows that
script), so following the log costs what any stream reader costs. A script's stream goes, history
and all, with its last reader: names followed once cost nothing after.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from engine.broker.base import Broker
from engine.streams.registry import Channel, StreamRegistry

ALL = "/_engine/logs"


class LogStream(logging.Handler):
    def __init__(self, registry: StreamRegistry, broker: Broker, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.registry = registry
        self.broker = broker
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self._publishing = False
        self._following: dict[str, int] = {}  # a script's stream path -> readers being served from it

    def stream(self, script: str | None = None) -> Channel:
        """The stream of every line, or of one script's lines."""
        return self.registry.private_stream(ALL if script is None else f"{ALL}/{script}")

    @contextmanager
    def following(self, script: str | None) -> Iterator[Channel]:
        """The stream to serve one reader from, for as long as it is served. Readers are counted from
        here, not from the stream's connections: a reader not attached yet (its head still being
        sent) must keep the stream it was given alive."""
        if script is None:
            yield self.stream()
            return
        path = f"{ALL}/{script}"
        self._following[path] = self._following.get(path, 0) + 1
        try:
            yield self.registry.private_stream(path)
        finally:
            left = self._following.pop(path) - 1
            if left:
                self._following[path] = left
            else:  # the broker numbers a freed path's next stream past its old ids: a resume is a reset
                self.registry.drop_private(path)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            script = getattr(record, "script", None)
            data = json.dumps({
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "script": script,
                "message": record.getMessage(),
            })
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)
            return
        if threading.get_ident() == self._loop_thread:
            self._publish(script, data)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._publish, script, data)

    def _publish(self, script: str | None, data: str) -> None:
        if self._publishing:  # a line logged while publishing (a slow follower cut off): not echoed
            return
        self._publishing = True
        try:
            self.broker.publish(ALL, data, None, True)
            if script and f"{ALL}/{script}" in self.registry.private:
                self.broker.publish(f"{ALL}/{script}", data, None, True)
        finally:
            self._publishing = False
