"""The catch-all handler: a stream reader, or match a registered route, build `req`, run the script, answer."""

from __future__ import annotations

import asyncio

from aiohttp import web

from engine.errors import HTTPError
from engine.http.assets import serve_asset
from engine.http.channels import last_poll, post_message, preflight, read_channel
from engine.http.keys import ASSETS, CONFIG, LEAN_ROUTES, REQUEST_ID, ROUTES, STREAMS
from engine.http.landing import landing
from engine.http.middleware import error_to_response, new_request_id
from engine.http.request import form_json, js_request, parse_off_loop, read_body
from engine.http.response import js_response
from engine.http.streaming import serve_stream
from engine.routes import Match, RouteTable


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
    """Every path but the engine's own: a stream reader, or a script's route. Errors become JSON here
    rather than in a `json_errors` wrapper: one coroutine frame less on the hottest path."""
    rid = new_request_id(request.headers.get("X-Request-Id"))
    request[REQUEST_ID] = rid
    try:
        app = request.app
        method = request.method
        if app[LEAN_ROUTES].answers and (handed := app[LEAN_ROUTES].claim(request.transport, request.raw_path)):
            # lean_route.py called the handler, which streams, and handed its connection over with it
            record, target, rid = handed
            request[REQUEST_ID] = rid
            return await serve_stream(request, target, record, rid, app[CONFIG], app[STREAMS])
        if method == "GET":
            found = app[STREAMS].match(request.path)
            if found is not None:  # streams are looked up before routes
                return await read_channel(request, found[0], rid)
            if (farewell := last_poll(request, rid)) is not None:
                return farewell
        elif method == "POST" and "X-Connection-Id" in request.headers and app[STREAMS].match(request.path):
            response = await post_message(request, request.headers["X-Connection-Id"], rid)
            response.headers["X-Request-Id"] = rid
            return response
        elif method == "HEAD" and app[STREAMS].match(request.path):
            raise HTTPError(405, "method_not_allowed", f"HEAD is not allowed on the stream {request.path}; allowed: "
                            "GET, POST, OPTIONS", {"Allow": "GET, POST, OPTIONS"})
        elif method == "OPTIONS" and app[STREAMS].match(request.path):
            response = preflight(request)
            response.headers["X-Request-Id"] = rid
            return response
        table = app[ROUTES]
        try:
            match = _resolve(table, request)  # 404/405 before reading any body
        except HTTPError as e:
            # An asset (where no route answers GET), or the landing page at `/`.
            if e.status in (404, 405) and method in ("GET", "HEAD"):
                served = await serve_asset(request, app[ASSETS])
                if served is None and request.path == "/" and e.status == 404:
                    served = landing(request)
                if served is not None:
                    served.headers["X-Request-Id"] = rid
                    return served
            if method == "POST" and e.status in (404, 405) and app[STREAMS].match(request.path):
                raise HTTPError(400, "missing_connection_id",
                                f"a POST to the stream {request.path} is a message from one of its connections: "
                                "send X-Connection-Id (from its `connected` event or X-Connection-Id header)"
                                ) from None
            raise
        form = None  # parsed on the spot by js_request, unless parsing it here and now would hold the loop
        if request.body_exists:
            body = await read_body(request, app[CONFIG].limits.max_body_bytes)
            content_type = request.content_type
            if parse_off_loop(content_type, body):  # before the last match: a thread hop is an await
                form = await asyncio.to_thread(form_json, content_type, request.headers.get("Content-Type", ""), body)
            # Match again: a reload may have swapped the table while the body arrived. From here
            # to the submit there is no await, so the call lands on the version that matched.
            match = _resolve(table, request)
        else:
            body = b""
        record = await match.route.target.handle(match.route.handler, js_request(request, body, match.params, form))
        if "g" in record:  # the handler returned an iterator: its values are written as they come
            return await serve_stream(request, match.route.target, record, rid, app[CONFIG], app[STREAMS])
        response = js_response(match.route.owner, record)
    except _Options as o:
        response = web.Response(status=204, headers={"Allow": o.allow})
    except Exception as e:  # noqa: BLE001 - mapped, or re-raised, by error_to_response
        response = error_to_response(request, rid, e)
    response.headers["X-Request-Id"] = rid
    return response
