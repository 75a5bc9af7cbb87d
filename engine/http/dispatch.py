"""The catch-all handler: match a registered route, build `req`, run the script, map its answer."""

from __future__ import annotations

from aiohttp import web

from engine.errors import HTTPError
from engine.http.keys import CONFIG, REQUEST_ID, ROUTES, STREAMS
from engine.http.request import js_request, read_body
from engine.http.response import js_response
from engine.routes import Match, RouteTable
from engine.streams.sse import serve_sse


def _resolve(table: RouteTable, request: web.Request) -> Match:
    found = table.match(request.method, request.path, request.rel_url.raw_path if table.has_patterns else None)
    if isinstance(found, Match):
        return found
    if found is None:
        raise HTTPError(404, "not_found", f"nothing is registered at {request.path}")
    allow = ", ".join([*found, "OPTIONS"])
    if request.method == "OPTIONS":
        raise _Options(allow)
    raise HTTPError(405, "method_not_allowed",
                    f"{request.method} is not allowed on {request.path}; allowed: {allow}", {"Allow": allow})


class _Options(Exception):
    def __init__(self, allow: str) -> None:
        self.allow = allow


async def dispatch(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        stream = request.app[STREAMS].streams.get(request.path)
        if stream is not None:  # streams are exact paths, looked up before routes
            app = request.app
            return await serve_sse(request, stream, app[STREAMS], app[CONFIG].streams, request[REQUEST_ID])
    table = request.app[ROUTES]
    try:
        match = _resolve(table, request)  # 404/405 before reading any body
        if request.body_exists:
            body = await read_body(request, request.app[CONFIG].limits.max_body_bytes)
            # Match again: a reload may have swapped the table while the body arrived. From here
            # to the submit there is no await, so the call lands on the version that matched.
            match = _resolve(table, request)
        else:
            body = b""
    except _Options as o:
        return web.Response(status=204, headers={"Allow": o.allow})
    record = await match.route.target.handle(match.route.handler, js_request(request, body, match.params))
    return js_response(match.route.owner, record)
