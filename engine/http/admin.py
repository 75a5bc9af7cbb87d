"""The admin API under `/_engine/`: scripts (list, read, create or replace, delete, logs) and the
live log, behind `admin.token` (a bearer token), or loopback clients only when no token is set.

The scripts folder stays the single source of truth: a PUT writes the file, then loads it as if
it had been saved; a DELETE removes the file, then unloads it.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from pathlib import PurePosixPath

from aiohttp import web
from aiohttp.typedefs import Handler

from engine.errors import HTTPError
from engine.http.keys import CONFIG, LOGS, REQUEST_ID, SCRIPTS, STREAMS
from engine.http.request import read_body
from engine.streams.sse import serve_sse

MAX_NAME = 255


def is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def _token(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.query.get("token", "")  # for EventSource, which cannot send headers


def admin_only(handler: Handler) -> Handler:
    """Refuse the request unless it carries the admin token (or, with none set, comes from loopback)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        token = request.app[CONFIG].admin.token
        if token:
            if not hmac.compare_digest(_token(request).encode(), token.encode()):
                raise HTTPError(401, "unauthorized", "the admin API needs the admin token: "
                                "Authorization: Bearer <admin.token> (or ?token=)", {"WWW-Authenticate": "Bearer"})
        elif not is_loopback(request.remote):
            raise HTTPError(403, "forbidden", "with no admin.token set, the admin API answers loopback clients only")
        return await handler(request)

    return guarded


def script_name(raw: str) -> str:
    """A script's name as the API takes it: a relative `.js` path inside the scripts folder."""
    path = PurePosixPath(raw)
    if (not raw or len(raw) > MAX_NAME or "\\" in raw or "\0" in raw or path.is_absolute()
            or path.as_posix() != raw or path.suffix != ".js"
            or any(part in ("", ".", "..") or part.startswith(".") for part in path.parts)):
        raise HTTPError(400, "bad_name", f"{raw!r} is not a script name: a relative path ending in .js, inside "
                        "the scripts folder (no '..', no absolute path, no hidden parts)")
    return raw


async def list_scripts(request: web.Request) -> web.Response:
    scripts = request.app[SCRIPTS]
    return web.json_response({"scripts": [scripts.records[n].describe() for n in sorted(scripts.records)]})


async def read_script(request: web.Request) -> web.Response:
    name = script_name(request.match_info["name"])
    try:
        source = (request.app[SCRIPTS].folder / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HTTPError(404, "not_found", f"no script named {name}") from None
    return web.Response(text=source, content_type="text/javascript", charset="utf-8")


async def write_script(request: web.Request) -> web.Response:
    """Create or replace a script; 201 or 200 once loaded, 422 (file written, old version serving) if
    it failed to load."""
    name = script_name(request.match_info["name"])
    body = await read_body(request, request.app[CONFIG].limits.max_body_bytes)
    try:
        source = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "bad_source", "the script must be UTF-8 text") from None
    scripts = request.app[SCRIPTS]
    existed = (scripts.folder / name).exists()
    record = await scripts.save(name, source)
    if record.last_error is not None:
        return web.json_response({"error": {"code": "script_failed", "message": record.last_error,
                                            "request_id": request[REQUEST_ID]}, "script": record.describe()},
                                 status=422)
    return web.json_response({"script": record.describe()}, status=200 if existed else 201)


async def delete_script(request: web.Request) -> web.Response:
    name = script_name(request.match_info["name"])
    if not await request.app[SCRIPTS].delete(name):
        raise HTTPError(404, "not_found", f"no script named {name}")
    return web.Response(status=204)


async def script_logs(request: web.Request) -> web.Response:
    name = script_name(request.match_info["name"])
    record = request.app[SCRIPTS].records.get(name)
    if record is None:
        raise HTTPError(404, "not_found", f"no script named {name}")
    return web.json_response({"name": name, "lines": list(record.logs)})


async def follow_logs(request: web.Request) -> web.StreamResponse:
    """Every log line as it happens, as SSE (`?script=name` for one script's)."""
    script = request.query.get("script")
    stream = request.app[LOGS].stream(script_name(script) if script else None)
    app = request.app
    return await serve_sse(request, stream, app[STREAMS], app[CONFIG].streams, request[REQUEST_ID])


def add_routes(app: web.Application, wrap: Callable[[Handler], Handler]) -> None:
    """The admin routes, each behind `admin_only` and then `wrap` (the JSON error wrapper)."""
    r = app.router
    r.add_get("/_engine/scripts", wrap(admin_only(list_scripts)))
    r.add_get(r"/_engine/scripts/{name:.+\.js}/logs", wrap(admin_only(script_logs)))
    r.add_get("/_engine/scripts/{name:.+}", wrap(admin_only(read_script)))
    r.add_put("/_engine/scripts/{name:.+}", wrap(admin_only(write_script)))
    r.add_delete("/_engine/scripts/{name:.+}", wrap(admin_only(delete_script)))
    r.add_get("/_engine/logs", wrap(admin_only(follow_logs)))
