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

from engine.errors import HTTPError, ScriptError
from engine.http.keys import METRICS, REQUEST_ID
from engine.http.response import error_response
from engine.http.script_errors import classify, log_script_error

log = logging.getLogger("engine.http")

_PREFIX = os.urandom(4).hex()
_counter = itertools.count(1)
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

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
    """The JSON error for `exc`; re-raises what is not an error to answer (a vanished client, a redirect).
    Counted by status for /metrics."""
    return error_for(request.app, request.method, request.path, rid, exc)


def error_for(app: web.Application, method: str, path: str, rid: str, exc: Exception) -> web.Response:
    """`error_to_response` for a request known by its method and path (lean_route.py has no aiohttp request)."""
    response = _error_to_response(method, path, rid, exc)
    app[METRICS].http_errors[response.status] += 1
    return response


def _error_to_response(method: str, path: str, rid: str, exc: Exception) -> web.Response:
    if isinstance(exc, HTTPError):
        return error_response(exc.status, exc.code, exc.message, rid, exc.headers)
    if isinstance(exc, ScriptError):
        status, code, message = classify(exc)
        log_script_error(f"{method} {path}", rid, exc)
        return error_response(status, code, f"{message} (request id {rid})", rid)
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, _STATUS_CODES.get(exc.status, "http_error"), exc.reason, rid, headers)
    if isinstance(exc, ConnectionResetError):  # the client left mid-answer: nothing to say, nothing to log
        return web.Response(status=499, reason="Client Closed Request")
    if isinstance(exc, web.HTTPException):
        raise exc
    log.error("internal error on %s %s (request %s)", method, path, rid, exc_info=exc)
    return error_response(500, "internal_error", f"internal server error (request id {rid})", rid)

