"""The engine's log as live SSE streams for the admin API: every line, and each script's own.

A logging handler on the `engine` logger turns each record into one JSON event on a private
stream of the registry (`/_engine/logs`, and `/_engine/logs/<script>` once someone follows that
script), so following the log costs what any stream reader costs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import UTC, datetime

from engine.streams.registry import Stream, StreamRegistry

ALL = "/_engine/logs"


class LogStream(logging.Handler):
    def __init__(self, registry: StreamRegistry, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.registry = registry
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self._publishing = False

    def stream(self, script: str | None = None) -> Stream:
        """The stream of every line, or of one script's lines."""
        return self.registry.private_stream(ALL if script is None else f"{ALL}/{script}")

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
            self.registry.publish(self.stream(), data)
            per_script = self.registry.private.get(f"{ALL}/{script}") if script else None
            if per_script is not None:
                self.registry.publish(per_script, data)
        finally:
            self._publishing = False
