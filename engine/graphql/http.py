"""GraphQL over HTTP: `POST|GET /graphql` (JSON), the page a browser gets, and `/graphql/sse`.

`/graphql` follows the GraphQL over HTTP conventions for `application/json`: 200 with `errors` for
anything GraphQL itself rejects, 400 for a request that is not one (no JSON, no query), 405 for a
mutation over GET. `/graphql/sse` speaks the GraphQL over SSE protocol, distinct connections mode:
every operation's results are `next` events, then `complete`; validation errors are a `next` too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from aiohttp import web
from graphql import GraphQLSchema

from engine.errors import HTTPError
from engine.graphql.cost import Budget
from engine.graphql.execute import (
    GraphQLParams,
    Prepared,
    RequestContext,
    merged_headers,
    params_from_json,
    params_from_query,
)
from engine.graphql.schema import SubscribeRoot
from engine.graphql.subscriptions import COMPLETE, Full, Reservation, Subscriber, next_event
from engine.graphql.ws import graphql_ws, wants_graphql_ws
from engine.http.keys import CONFIG, GRAPHQL, GRAPHQL_RUNNER, METRICS, REQUEST_ID, SUBSCRIPTIONS
from engine.http.request import read_body
from engine.http.response import error_response
from engine.streams.registry import Transport, ender
from engine.streams.sse import body_transport, sse_headers

PAGE = files("engine.graphql").joinpath("page.html").read_text(encoding="utf-8")


def _json_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def _json(data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json", headers=headers)


def _request_error(e: HTTPError, rid: str) -> web.Response:
    """A request that is not a GraphQL request: the engine's error shape, plus `errors` for GraphQL clients."""
    return error_response(e.status, e.code, e.message, rid, e.headers, graphql=True)


async def _params(request: web.Request) -> GraphQLParams:
    if request.method == "POST":
        body = await read_body(request, request.app[CONFIG].limits.max_body_bytes)
        return params_from_json(body)
    return params_from_query(request.query)


def _context(request: web.Request, operation: str) -> RequestContext:
    limits = request.app[CONFIG].limits
    headers = merged_headers(request.headers.items())
    return RequestContext(request[REQUEST_ID], headers, operation,
                          Budget(limits.graphql_max_result_fields, max_bytes=limits.max_response_bytes),
                          limits.graphql_timeout_ms / 1000, asyncio.get_running_loop())


def _cors(request: web.Request, headers: dict[str, str]) -> dict[str, str]:
    origin = request.app[CONFIG].streams.cors_origin
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
    return headers


async def graphql(request: web.Request) -> web.StreamResponse:
    """`POST /graphql`, `GET /graphql?query=`; a browser's plain `GET /graphql` gets the page; a
    WebSocket there speaks graphql-transport-ws."""
    rid = request[REQUEST_ID]
    if request.method == "GET" and wants_graphql_ws(request):
        return await graphql_ws(request)
    if request.method == "GET" and "query" not in request.query:  # the page, whatever the Accept header
        return web.Response(text=PAGE, content_type="text/html", charset="utf-8")
    try:
        params = await _params(request)
    except HTTPError as e:  # not JSON, no query, too large
        return _request_error(e, rid)
    schema = request.app[GRAPHQL].schema
    runner = request.app[GRAPHQL_RUNNER]
    prepared = await runner.prepare(schema, params)
    headers = _cors(request, {})
    if prepared.errors:
        return _json(prepared.error_result(), headers=headers)
    if prepared.operation == "mutation" and request.method == "GET":
        return _request_error(HTTPError(405, "method_not_allowed", "mutations are not allowed over GET; use POST",
                                        {**headers, "Allow": "POST"}), rid)
    if prepared.operation == "subscription":
        message = "subscriptions are served over GraphQL over SSE: POST /graphql/sse (or GET /graphql/sse?query=)"
        return _request_error(HTTPError(400, "bad_request", message, headers), rid)
    request.app[METRICS].graphql[(prepared.operation, "http")] += 1
    body = await runner.execute_encoded(schema, prepared, params, _context(request, prepared.operation), _json_bytes)
    return web.Response(body=body, content_type="application/json", headers=headers)


async def graphql_sse(request: web.Request) -> web.StreamResponse:
    """`POST /graphql/sse` (and `GET ?query=&variables=`): results as `next` events, then `complete`."""
    rid = request[REQUEST_ID]
    try:
        params = await _params(request)
    except HTTPError as e:  # not JSON, no query, too large
        return _request_error(e, rid)
    app = request.app
    schema = app[GRAPHQL].schema
    runner = app[GRAPHQL_RUNNER]
    hub = app[SUBSCRIPTIONS]
    prepared = await runner.prepare(schema, params)
    if not prepared.errors:
        app[METRICS].graphql[(prepared.operation, "sse")] += 1
    reservation = None
    if prepared.operation == "subscription":  # its place is taken now, before any await
        try:
            reservation = hub.reserve(prepared.root_fields[0], params, prepared.selections)
        except Full as e:
            raise HTTPError(503, "too_many_connections", str(e)) from None
    try:
        response = web.StreamResponse(status=200, headers=sse_headers(app[CONFIG].streams, rid))  # CORS included
        await response.prepare(request)
        transport = body_transport(request)  # HTTP/1.0: the events' chunk framing comes off
        if transport is None or transport.is_closing():
            return response
        if prepared.errors:
            transport.write(next_event(prepared.error_result()) + COMPLETE)
            return response
        context = _context(request, prepared.operation)
        if reservation is None:
            framed = await runner.execute_encoded(schema, prepared, params, context, next_event)
            if not transport.is_closing():
                transport.write(framed + COMPLETE)
            return response
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        sub = await _subscribe(request, transport, schema, prepared, params, context, reservation, ender(ended))
        if sub is None:
            return response
        reservation = None  # the subscriber holds its place now
        # While it stays subscribed, hold nothing of the request but the group: each parsed query
        # is about a kilobyte a field, and subscribers of the same query share the group's.
        del prepared, params, context, schema
        try:
            await ended
        finally:
            hub.remove(sub)
        return response
    finally:
        if reservation is not None:
            hub.release(reservation)


async def _subscribe(request: web.Request, transport: Transport, schema: GraphQLSchema, prepared: Prepared,
                     params: GraphQLParams, context: RequestContext, reservation: Reservation,
                     on_end: Callable[[str], None]) -> Subscriber | None:
    """Run the subscription's resolver (its value, if any, is the first `next`), then subscribe, until
    the client leaves, the field goes away or the server stops; None if it ended at the first result."""
    root = SubscribeRoot()
    first = await request.app[GRAPHQL_RUNNER].execute(schema, prepared, params, context, root)
    if transport.is_closing():
        return None
    if first.get("errors"):  # the resolver failed: report it and complete, as graphql-sse does
        transport.write(next_event(first) + COMPLETE)
        return None
    if not root.undefined:
        transport.write(next_event(first))
    return request.app[SUBSCRIPTIONS].add(reservation, params, prepared.document, transport,  # type: ignore[arg-type]
                                          on_end)


async def preflight(request: web.Request) -> web.StreamResponse:
    """CORS preflight for the GraphQL endpoints (a cross-origin POST of JSON asks first)."""
    return web.Response(status=204, headers=_cors(request, {
        "Allow": "GET, POST, OPTIONS",
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Accept, Authorization, X-Request-Id",
    }))
