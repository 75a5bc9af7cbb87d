"""What a client is told when a script fails, and what the log gets: one table for every caller
(routes, GraphQL resolvers, stream hooks). It imports nothing of the server, so anything may use it."""

from __future__ import annotations

import logging

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


def log_script_error(what: str, rid: str, e: ScriptError) -> None:
    log.error("%s (request %s): %s", what, rid, e.describe())
    if e.stack:
        log.error("%s stack (request %s):\n%s", e.script, rid, e.stack)
