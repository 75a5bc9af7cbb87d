"""The admin API under `/_engine/`: scripts (list, read, create or replace, delete, logs) and the
live log, behind `admin.token` (a bearer token), or loopback clients only when no token is set.

Without a token, a loopback client must also name the loopback in its Host header: a web page whose
own name was pointed at 127.0.0.1 (DNS rebinding) reaches this server from loopback, but its browser
sends that name, not `localhost`. The live log sends no CORS header, so no other site can read it.

The scripts folder stays the single source of truth: a PUT writes the file, then loads it as if
it had been saved; a DELETE removes the file, then unloads it.

It is also the boundary: a name is checked as text (`script_name`), then as a place, symlinks
followed (`script_path`), so nothing outside the folder is read, written or deleted through it.
A file the file system will not read or write is a 422 that says why, never a 500.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from engine import rules
from engine.config import Config
from engine.errors import HTTPError
from engine.folders import inside, why
from engine.http.keys import CONFIG, LOGS, REQUEST_ID, SCRIPTS, STREAMS
from engine.http.request import read_body
from engine.streams.sse import serve_sse


def is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


_PORT = re.compile(r"(?::[0-9]*)?")
_SHOWN_HOST = 80  # characters of a refused Host header quoted back


def is_loopback_host(host: str | None) -> bool:
    """Does a Host header name the loopback: `localhost`, any `*.localhost` (RFC 6761 keeps them on
    the loopback), a loopback address (`127.0.0.1`, `[::1]`), with or without a port?"""
    if not host:
        return False
    host = host.lower()
    if host.startswith("["):  # an IPv6 literal
        name, bracket, port = host[1:].partition("]")
        if not bracket:
            return False
    else:
        name, colon, port = host.partition(":")
        port = colon + port
    if not _PORT.fullmatch(port):
        return False
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


def _token(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.query.get("token", "")  # for EventSource, which cannot send headers


def admin_problem(request: web.Request, own_token: Callable[[Config], str] | None = None) -> HTTPError | None:
    """Why the request may not use the admin API (None if it may): it must carry the admin token or,
    with none set, come from loopback. `own_token`: the endpoint's own token setting; when set, it is
    the token asked for instead."""
    config = request.app[CONFIG]
    own = own_token(config) if own_token is not None else ""
    token = own or config.admin.token
    if token:
        if not hmac.compare_digest(_token(request).encode("utf-8", "surrogateescape"), token.encode()):
            needed = "its token" if own else "the admin token: Authorization: Bearer <admin.token> (or ?token=)"
            return HTTPError(401, "unauthorized", f"{request.path} needs {needed}", {"WWW-Authenticate": "Bearer"})
    elif not is_loopback(request.remote):
        return HTTPError(403, "forbidden", "with no admin.token set, the admin API answers loopback clients only")
    elif not is_loopback_host(request.headers.get("Host")):
        return _foreign_host(request.headers.get("Host"))
    return None


def admin_only(handler: Handler, own_token: Callable[[Config], str] | None = None) -> Handler:
    """Refuse the request unless `admin_problem` finds nothing wrong with it."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        problem = admin_problem(request, own_token)
        if problem is not None:
            raise problem
        return await handler(request)

    return guarded


def _foreign_host(host: str | None) -> HTTPError:
    shown = "no Host header" if host is None else f"Host {host[:_SHOWN_HOST]!r}"
    return HTTPError(403, "forbidden", "with no admin.token set, the admin API answers only requests whose Host "
                     f"names the loopback (localhost, *.localhost, 127.0.0.1, [::1]), and this one came with {shown}: "
                     "a web page whose name points at this machine (DNS rebinding) must not reach it. "
                     "Set admin.token to use it under other names")


def script_name(raw: str) -> str:
    """A script's name as the API takes it: a relative `.js` path inside the scripts folder."""
    problem = rules.script_name_problem(raw)
    if problem:
        raise HTTPError(400, "bad_name", problem)
    return raw


def script_path(folder: Path, raw: str) -> tuple[str, Path]:
    """The name, checked, and its file; refused if, symlinks followed, the file would be outside the folder."""
    name = script_name(raw)
    if not inside(folder, name):
        raise HTTPError(400, "bad_name", f"{name!r} leaves the scripts folder (through a symbolic link); "
                        "the admin API only reads and writes files inside it")
    return name, folder / name


async def list_scripts(request: web.Request) -> web.Response:
    scripts = request.app[SCRIPTS]
    return web.json_response({"scripts": [scripts.records[n].describe() for n in sorted(scripts.records)]})


async def read_script(request: web.Request) -> web.Response:
    name, path = script_path(request.app[SCRIPTS].folder, request.match_info["name"])
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):  # a folder, or a file's "child"
        raise HTTPError(404, "not_found", f"no script named {name}") from None
    except OSError as e:
        raise HTTPError(422, "unreadable", f"{name} cannot be read: {why(e)}") from None
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as e:  # put there by hand: the engine cannot load it either
        raise HTTPError(422, "not_utf8", f"{name} is not UTF-8 text (byte {data[e.start]:#04x} at offset "
                        f"{e.start}); replace it with a PUT of UTF-8 text") from None
    return web.Response(text=source, content_type="text/javascript", charset="utf-8")


async def write_script(request: web.Request) -> web.Response:
    """Create or replace a script; 201 or 200 once loaded, 422 (file written, old version serving) if
    it failed to load."""
    scripts = request.app[SCRIPTS]
    name, path = script_path(scripts.folder, request.match_info["name"])
    body = await read_body(request, request.app[CONFIG].limits.max_body_bytes)
    try:
        source = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "bad_source", "the script must be UTF-8 text") from None
    if (full := scripts.no_room_for(name)) is not None:
        raise HTTPError(422, "too_many_scripts", f"{name} cannot be created: {full}")
    try:
        existed = path.exists()
        record = await scripts.save(name, source)
    except OSError as e:  # nothing was loaded, and save leaves no temp file behind
        raise HTTPError(422, "cannot_write", f"{name} cannot be written: {why(e)}") from None
    if record.last_error is not None:
        return web.json_response({"error": {"code": "script_failed", "message": record.last_error,
                                            "request_id": request[REQUEST_ID]}, "script": record.describe()},
                                 status=422)
    return web.json_response({"script": record.describe()}, status=200 if existed else 201)


async def delete_script(request: web.Request) -> web.Response:
    scripts = request.app[SCRIPTS]
    name, _ = script_path(scripts.folder, request.match_info["name"])
    try:
        deleted = await scripts.delete(name)
    except (NotADirectoryError, IsADirectoryError):  # a folder is no script, nor is a file's "child"
        deleted = False
    except OSError as e:
        raise HTTPError(422, "cannot_delete", f"{name} cannot be deleted: {why(e)}") from None
    if not deleted:
        raise HTTPError(404, "not_found", f"no script named {name}")
    return web.Response(status=204)


async def script_logs(request: web.Request) -> web.Response:
    name, _ = script_path(request.app[SCRIPTS].folder, request.match_info["name"])
    record = request.app[SCRIPTS].records.get(name)
    if record is None:
        raise HTTPError(404, "not_found", f"no script named {name}")
    return web.json_response({"name": name, "lines": list(record.logs)})


async def follow_logs(request: web.Request) -> web.StreamResponse:
    """Every log line as it happens, as SSE (`?script=name` for one script's, 404 for a script the
    engine does not know: each name followed costs a stream while it is followed)."""
    app = request.app
    script = request.query.get("script")
    name = None
    if script:
        name, _ = script_path(app[SCRIPTS].folder, script)
        if name not in app[SCRIPTS].records:
            raise HTTPError(404, "not_found", f"no script named {name}")
    with app[LOGS].following(name) as channel:
        return await serve_sse(request, channel, app[STREAMS], app[CONFIG].streams, request[REQUEST_ID], cors=False)


def add_routes(app: web.Application, wrap: Callable[[Handler], Handler]) -> None:
    """The admin routes, each behind `admin_only` and then `wrap` (the JSON error wrapper)."""
    r = app.router
    r.add_get("/_engine/scripts", wrap(admin_only(list_scripts)))
    r.add_get(r"/_engine/scripts/{name:.+\.js}/logs", wrap(admin_only(script_logs)))
    r.add_get("/_engine/scripts/{name:.+}", wrap(admin_only(read_script)))
    r.add_put("/_engine/scripts/{name:.+}", wrap(admin_only(write_script)))
    r.add_delete("/_engine/scripts/{name:.+}", wrap(admin_only(delete_script)))
    r.add_get("/_engine/logs", wrap(admin_only(follow_logs)))
