"""Request ids on every response, and every error turned into the one JSON shape, in one place.

`json_errors` wraps the engine's own routes; the catch-all `dispatch` calls `error_to_response`
itself (one coroutine frame less on the hot path). Neither is an aiohttp middleware: middlewares
cost a `functools.update_wrapper` per request.
"""

from __future__ import annotations

import itertools
import logging
import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from engine.errors import (
    HTTPError,
    ScriptBadResponse,
    ScriptBusy,
    ScriptError,
    ScriptGone,
    ScriptMemoryError,
    ScriptTimeout,
)
from engine.http.keys import REQUEST_ID
from engine.http.response import error_response

log = logging.getLogger("engine.http")

_PREFIX = os.urandom(4).hex()
_counter = itertools.count(1)
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# ScriptError subclass -> (status, code, what the client is told). The details go to the log only.
_SCRIPT_ERRORS: list[tuple[type[ScriptError], int, str, str]] = [
    (ScriptTimeout, 504, "script_timeout", "the script ran past its time limit"),
    (ScriptMemoryError, 500, "script_memory", "the script ran past its memory limit"),
    (ScriptBadResponse, 500, "bad_response", "the script returned an invalid response"),
    (ScriptGone, 503, "script_unavailable", "the script was reloaded or removed; retry"),
    (ScriptBusy, 503, "script_busy", "the script has too many calls waiting (limits.max_pending_calls); retry"),
    (ScriptError, 500, "script_error", "the script failed while handling this request"),
]

_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def new_request_id(incoming: str | None) -> str:
    """Keep a caller's sane X-Request-Id (tracing through proxies); otherwise make one."""
    if incoming and _VALID_ID.match(incoming):
        return incoming
    return f"{_PREFIX}-{next(_counter)}"


def json_errors(handler: Handler) -> Handler:
    """Wrap a route handler: give the request its id, stamp it on the response, map errors to JSON."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        rid = new_request_id(request.headers.get("X-Request-Id"))
        request[REQUEST_ID] = rid
        try:
            response = await handler(request)
        except Exception as e:  # noqa: BLE001 - mapped, or re-raised, by error_to_response
            response = error_to_response(request, rid, e)
        if not response.prepared:  # a streaming handler stamps its own before it starts sending
            response.headers["X-Request-Id"] = rid
        return response

    return wrapped


def error_to_response(request: web.Request, rid: str, exc: Exception) -> web.Response:
    """The JSON error for `exc`; re-raises what is not an error to answer (a vanished client, a redirect)."""
    if isinstance(exc, HTTPError):
        return error_response(exc.status, exc.code, exc.message, rid, exc.headers)
    if isinstance(exc, ScriptError):
        return _script_error(request, rid, exc)
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, _STATUS_CODES.get(exc.status, "http_error"), exc.reason, rid, headers)
    if isinstance(exc, (web.HTTPException, ConnectionResetError)):
        raise exc
    log.error("internal error on %s %s (request %s)", request.method, request.path, rid, exc_info=exc)
    return error_response(500, "internal_error", f"internal server error (request id {rid})", rid)


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


def _script_error(request: web.Request, rid: str, e: ScriptError) -> web.Response:
    status, code, message = classify(e)
    log_script_error(f"{request.method} {request.path}", rid, e)
    return error_response(status, code, f"{message} (request id {rid})", rid)
