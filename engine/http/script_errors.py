"""What a client is told when a script fails, and what the log gets: one table for every caller
(routes, GraphQL resolvers, stream hooks). It imports nothing of the server, so anything may use it."""

from __future__ import annotations

import logging
import time

from engine.errors import (
    ScriptBadResponse,
    ScriptBusy,
    ScriptError,
    ScriptGone,
    ScriptMemoryError,
    ScriptTimeout,
)

log = logging.getLogger("engine.http")

# ScriptError subclass -> (status, code, what the client is told). The details go to the log only.
_SCRIPT_ERRORS: list[tuple[type[ScriptError], int, str, str]] = [
    (ScriptTimeout, 504, "script_timeout", "the script ran past its time limit"),
    (ScriptMemoryError, 500, "script_memory", "the script ran past its memory limit"),
    (ScriptBadResponse, 500, "bad_response", "the script returned an invalid response"),
    (ScriptGone, 503, "script_unavailable", "the script was reloaded or removed; retry"),
    (ScriptBusy, 503, "script_busy", "the script has too many calls waiting (limits.max_pending_calls); retry"),
    (ScriptError, 500, "script_error", "the script failed while handling this request"),
]


def classify(e: ScriptError) -> tuple[int, str, str]:
    """(status, code, what the client is told) for a script's failure."""
    for cls, status, code, message in _SCRIPT_ERRORS:
        if isinstance(e, cls):
            return status, code, message
    raise AssertionError("unreachable: ScriptError is the last row")


SHED_LOG_SECONDS = 5.0  # a script's 503s (busy, reloading) are logged at most once this often


class _Shedding:
    """When a script turns calls away (busy, or being replaced), any client can make that happen
    per request: a line every SHED_LOG_SECONDS per script and kind, saying how many went unlogged."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # (script, kind) -> (logged at, since)

    def log(self, what: str, rid: str, e: ScriptError) -> None:
        key = (e.script, type(e).__name__)
        now = time.monotonic()
        at, skipped = self._last.get(key, (-SHED_LOG_SECONDS, 0))
        if now - at < SHED_LOG_SECONDS:
            self._last[key] = (at, skipped + 1)
            return
        if len(self._last) > 10_000:  # bounded, whatever names come and go
            self._last.clear()
        self._last[key] = (now, 0)
        more = f" ({skipped} more like it since the last such line)" if skipped else ""
        log.warning("%s (request %s): %s%s", what, rid, e.describe(), more)


_shedding = _Shedding()


def log_script_error(what: str, rid: str, e: ScriptError) -> None:
    if isinstance(e, ScriptBusy | ScriptGone):  # load shed, not a failure of the script's code
        _shedding.log(what, rid, e)
        return
    log.error("%s (request %s): %s", what, rid, e.describe())
    if e.stack:
        log.error("%s stack (request %s):\n%s", e.script, rid, e.stack)
