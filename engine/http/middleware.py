"""Request ids on every response, and every error turned into the one JSON shape, in one place."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from engine.errors import (
    HTTPError,
    ScriptBadResponse,
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
    (ScriptError, 500, "script_error", "the script failed while handling this request"),
]

_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def new_request_id(incoming: str | None) -> str:
    """Keep a caller's sane X-Request-Id (tracing through proxies); otherwise make one."""
    if incoming and _VALID_ID.match(incoming):
        return incoming
    return f"{_PREFIX}-{next(_counter)}"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = new_request_id(request.headers.get("X-Request-Id"))
    request[REQUEST_ID] = rid
    try:
        return await handler(request)
    except HTTPError as e:
        return error_response(e.status, e.code, e.message, rid, e.headers)
    except ScriptError as e:
        for cls, status, code, message in _SCRIPT_ERRORS:
            if isinstance(e, cls):
                log.error("%s %s (request %s): %s", request.method, request.path, rid, e.describe())
                if e.stack:
                    log.error("%s stack (request %s):\n%s", e.script, rid, e.stack)
                return error_response(status, code, f"{message} (request id {rid})", rid)
        raise  # unreachable: ScriptError is the last row
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        code = _STATUS_CODES.get(e.status, "http_error")
        return error_response(e.status, code, e.reason, rid, headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("internal error on %s %s (request %s)", request.method, request.path, rid)
        return error_response(500, "internal_error", f"internal server error (request id {rid})", rid)


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streaming ones too, carries its request id."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers["X-Request-Id"] = rid
