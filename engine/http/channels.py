"""A channel path over HTTP, where aiohttp serves it: `GET` a reader (the front leaves to aiohttp
every reader whose stream checks a token or asks a script), `POST` with `X-Connection-Id` a client's
message to its connection's `onMessage`, and `OPTIONS` for browsers on another origin.

Every refusal is the engine's JSON error shape, before any event: 401 (and `WWW-Authenticate`) for
a missing or bad token, 403 for a token that does not cover the channel or an onConnect that says
no, 503 past `streams.max_connections` or `streams.max_channels`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from aiohttp import web

from engine import rules
from engine.auth import SECRET_PARAMS, Claims, Forbidden, Unauthorized, Verifier
from engine.connections import Busy, NoHandler, Refused, TooManyMessages
from engine.errors import HTTPError, ScriptError
from engine.http.keys import AUTH, BROKER, CONFIG, HOOKS, POLLERS, STREAMS
from engine.http.request import read_body
from engine.http.script_errors import classify, log_script_error
from engine.streams.event import NDJSON, POLL, SSE, WS, WS_V1, Event
from engine.streams.registry import NEEDS_TOKEN_REASON, Channel, Connection, Stream
from engine.streams.sse import channels_full, check_room, last_event_id, open_channel, serve_sse
from engine.transports.negotiate import WEBSOCKET, choose
from engine.transports.poll import farewell_answer, first_poll, poll_again
from engine.transports.websocket import handshake_problem, serve_ws
from engine.transports.websocket import refuse as refuse_ws

_JSON_TYPES = ("application/json", "text/json")
_ALLOW = "GET, POST, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-Connection-Id, X-Request-Id"


def _query_for_scripts(request: web.Request) -> str:
    """The raw query less any token in it: a script sees `conn.user`, never the token itself."""
    raw = request.rel_url.raw_query_string
    if not raw:
        return raw
    return "&".join(p for p in raw.split("&") if unquote_plus(p.partition("=")[0]).lower() not in SECRET_PARAMS)


def _user(request: web.Request, stream: Stream, path: str, websocket: bool) -> Claims | None:
    """The verified claims of the reader's token (None when the stream does not need one and none
    came). A token that came and does not verify is refused even where none is needed. A WebSocket
    from a page of another site does not get to use the cookie: browsers send it along, and no CORS
    stands between that page and what the socket reads (cross-site WebSocket hijacking)."""
    verifier: Verifier = request.app[AUTH]
    cookies = request.cookies if not websocket or _same_site(request) else {}
    token = verifier.token_from(request.headers, request.query, cookies)
    try:
        if token is None:
            if stream.auth:
                raise Unauthorized("this stream needs a token: `Authorization: Bearer <jwt>`, `?token=<jwt>` "
                                   f"or the `{verifier.cookie}` cookie")
            return None
        claims = verifier.verify(token)
        if not verifier.may_read(claims, path):
            raise Forbidden(f"the token's channels claim does not cover {path}")
        return claims
    except Unauthorized as e:
        desc = str(e).replace('"', "'").encode("ascii", "replace").decode()  # a header: ASCII, no quotes
        challenge = f'Bearer realm="rtengine", error="invalid_token", error_description="{desc}"'
        raise HTTPError(401, "unauthorized", str(e), {"WWW-Authenticate": challenge}) from None
    except Forbidden as e:
        raise HTTPError(403, "forbidden", str(e)) from None


def _same_site(request: web.Request) -> bool:
    """No Origin (not a browser), the server's own origin, or the one `streams.cors_origin` names."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    allowed = request.app[CONFIG].streams.cors_origin
    return urlsplit(origin).netloc.lower() == request.host.lower() or (allowed not in ("", "*") and origin == allowed)


@dataclass(slots=True)
class Admitted:
    """A reader let in (a token checked, onConnect asked where the stream has them), to attach."""

    channel: Channel
    cid: str
    first: tuple[Event, ...] = ()
    info: Any = None
    resume_from: str | None = None
    on_attached: Callable[[], None] | None = None


async def read_channel(request: web.Request, stream: Stream, rid: str) -> web.StreamResponse:
    """A reader of a channel, over the transport it asked for (negotiate.py). A WebSocket refused
    before it was accepted is accepted to be closed with a code saying why: browsers see no status."""
    kind = choose(request.headers.get("Upgrade"), request.headers.get("Accept"), request.query.get("transport"))
    if kind is None:
        raise HTTPError(400, "bad_transport", "?transport= must be sse, ndjson or poll (or ask for a WebSocket with "
                        "Upgrade: websocket)")
    if kind == POLL and (again := await _poll_again(request, rid)) is not None:
        return again
    if kind == WEBSOCKET and (problem := handshake_problem(request)) is not None:
        raise problem
    try:
        return await _admit_and_serve(request, stream, rid, kind)
    except (HTTPError, ScriptError) as e:
        if kind != WEBSOCKET:
            raise
        if isinstance(e, ScriptError):  # onConnect failed: logged as a route's failure is
            log_script_error(f"onConnect on {request.path}", rid, e)
            status, code, message = classify(e)
            e = HTTPError(status, code, message)
        return await refuse_ws(request, e, request.app[CONFIG].streams.heartbeat_seconds)


async def _poll_again(request: web.Request, rid: str) -> web.StreamResponse | None:
    """The next poll of a poller this server holds (or held: its last answer); None for a new one."""
    cid = request.query.get("connectionId") or request.headers.get("X-Connection-Id")
    if not cid:
        return None
    if rules.connection_id_problem(cid):
        raise HTTPError(400, "bad_connection_id", "connectionId is not a connection id (it comes from the last "
                        "poll's answer)")
    pollers = request.app[POLLERS]
    conn = request.app[STREAMS].connections.get(cid)
    if conn is not None and conn.fmt == POLL:
        if conn.channel.path != request.path:
            raise _wrong_channel(conn, request.path)
        return await poll_again(request, conn, pollers, rid)
    if conn is not None:
        raise HTTPError(409, "not_a_poller", f"connection {cid} reads over {conn.fmt}, not by long-poll")
    farewell = pollers.take_farewell(cid, request.path)
    if farewell is not None:
        return farewell_answer(farewell, cid, pollers.config, rid)
    return None  # gone (its grace passed): a new poller, resuming from the client's id


def last_poll(request: web.Request, rid: str) -> web.Response | None:
    """A poll of a path no stream has any more: the last answer of its poller, if the server kept one
    (its stream was removed while it was between polls)."""
    if "transport=poll" not in request.rel_url.raw_query_string:  # every route GET passes here: no parse
        return None
    cid = request.query.get("connectionId") or request.headers.get("X-Connection-Id")
    if not cid or request.query.get("transport") != "poll":
        return None
    pollers = request.app[POLLERS]
    farewell = pollers.take_farewell(cid, request.path)
    return None if farewell is None else farewell_answer(farewell, cid, pollers.config, rid)


def _wrong_channel(conn: Connection, path: str) -> HTTPError:
    return HTTPError(403, "wrong_channel", f"connection {conn.id} reads {conn.channel.path}, not {path}")


async def _admit_and_serve(request: web.Request, stream: Stream, rid: str, kind: str) -> web.StreamResponse:
    app = request.app
    registry = app[STREAMS]
    path = request.path
    check_room(registry)
    try:
        # its history and live events here (up to the reader's id), before anything reads it
        await registry.broker.ready(path, last_event_id(request))
        return await _admit(request, stream, rid, kind)
    finally:
        if path not in registry.channels:  # refused, or gone: the broker keeps nothing for it either
            registry.broker.forget(path)


async def _admit(request: web.Request, stream: Stream, rid: str, kind: str) -> web.StreamResponse:
    app = request.app
    registry = app[STREAMS]
    path = request.path
    if stream.plain:
        return await _serve(request, kind, Admitted(open_channel(registry, path), registry.new_id()), rid)
    query = _query_for_scripts(request)
    if len(query) > rules.MAX_CONN_QUERY:
        raise HTTPError(414, "query_too_long", f"a query of more than {rules.MAX_CONN_QUERY} characters (a token "
                        "aside); the connection keeps it (conn.query) as long as it reads")
    if not registry.room_for(path):  # before a script is asked
        raise channels_full(registry)
    found = registry.match(path)
    assert found is not None
    user = _user(request, stream, path, kind == WEBSOCKET) if stream.auth or stream.hooks is not None else None
    cid = registry.new_id()
    hooks = app[HOOKS]
    # The version whose hooks take this reader stays up until it is attached (or its onDisconnect is
    # queued): a reload in between must not close it under the reader it accepted.
    unhold = stream.hooks.target.hold() if stream.hooks is not None else _nothing
    try:
        accepted = await hooks.connect(stream, path, found[1], cid, query, kind, user)
    except BaseException as e:
        unhold()
        if isinstance(e, Refused):
            raise HTTPError(e.status, "refused", f"the stream refused this connection: {e}") from None
        if isinstance(e, Busy):
            raise HTTPError(503, "script_busy", str(e)) from None
        raise
    ended = "the client went away"
    try:
        # Made only now: a reader refused makes no channel. The stream may have gone or changed
        # while onConnect ran (a reload): then this reader is not attached to what replaced it.
        found = registry.match(path)
        if found is None or found[0] is not stream or (stream.auth and user is None):
            ended = "the stream was removed" if found is None or found[0] is not stream else NEEDS_TOKEN_REASON
            raise HTTPError(503, "stream_changed", f"the stream at {path} changed while this reader was being "
                            "connected; retry")
        admitted = Admitted(open_channel(registry, path), cid, accepted.first, accepted.info, accepted.cursor, unhold)
        return await _serve(request, kind, admitted, rid)
    finally:
        hooks.release(accepted.info, ended)
        unhold()


async def _serve(request: web.Request, kind: str, a: Admitted, rid: str) -> web.StreamResponse:
    """Serve an admitted reader. A channel made for it that it never came to read (the client left,
    the server was full) goes with it rather than waiting out its idle time: no request can leave
    channels behind."""
    try:
        return await _serve_on(request, kind, a, rid)
    finally:
        request.app[STREAMS].drop_if_unused(a.channel)


async def _serve_on(request: web.Request, kind: str, a: Admitted, rid: str) -> web.StreamResponse:
    app = request.app
    registry, config = app[STREAMS], app[CONFIG].streams
    if kind == WEBSOCKET:
        return await serve_ws(request, a.channel, registry, app[HOOKS], config.heartbeat_seconds,
                              app[CONFIG].limits.max_body_bytes, config.retry_ms, rid, a.cid, a.first, a.info,
                              a.resume_from, a.on_attached)
    if kind == POLL:
        return await first_poll(request, a.channel, app[POLLERS], rid, a.cid, a.first, a.info, a.resume_from,
                                a.on_attached)
    return await serve_sse(request, a.channel, registry, config, rid, first=a.first, info=a.info,
                           resume_from=a.resume_from, connection_id=a.cid, on_attached=a.on_attached,
                           fmt=NDJSON if kind == NDJSON else SSE)


def _nothing() -> None:
    pass


async def post_message(request: web.Request, cid: str, rid: str) -> web.Response:
    """`POST <channel path>` with `X-Connection-Id`: the body is one message to that connection's
    onMessage; what it returns is the response."""
    app = request.app
    registry = app[STREAMS]
    if rules.connection_id_problem(cid):
        raise HTTPError(400, "bad_connection_id", "X-Connection-Id is not a connection id (it comes from the "
                        "stream's `connected` event or its X-Connection-Id response header)")
    broker = app[BROKER]
    here = registry.connections.get(cid)
    if here is not None:
        _check_target(here, request.path)
    elif broker.is_here(cid):
        raise _unknown(cid)
    body = await read_body(request, app[CONFIG].limits.max_body_bytes)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "bad_message", "a message must be UTF-8 text") from None
    content_type = request.content_type if "Content-Type" in request.headers else ""
    as_json = content_type in _JSON_TYPES or content_type.endswith("+json") or not content_type
    if here is None:  # another process holds it: its onMessage runs there
        timeout = app[CONFIG].limits.handler_timeout_ms / 1000 + 1
        answer = await broker.forward_message(cid, request.path, text, as_json, timeout)
    else:
        answer = await message_here(app, cid, request.path, text, as_json)
    headers = _cors(request)
    if "error" in answer:
        raise HTTPError(answer["status"], answer["error"], answer["message"],
                        {"Allow": "GET"} if answer["status"] == 405 else None)
    if answer.get("text") is None:
        return web.Response(status=204, headers=headers)
    headers["Content-Type"] = "application/json" if answer.get("json") else "text/plain; charset=utf-8"
    # as a route's body: a lone surrogate in a text reply becomes U+FFFD, not an encoding error
    return web.Response(body=answer["text"].encode("utf-8", "replace"), headers=headers)


async def message_here(app: web.Application, cid: str, path: str, text: str, as_json: bool) -> dict[str, Any]:
    """A client's message to a connection of this process, wherever it was posted: its onMessage's
    answer as {"text", "json"}, or {"status", "error", "message"} for what the client got wrong."""
    try:
        conn = app[STREAMS].connections.get(cid)
        if conn is None or conn.ended:  # it went while the body arrived
            raise _unknown(cid)
        _check_target(conn, path)
        try:
            answer = await app[HOOKS].message(conn, text, as_json)
        except NoHandler as e:
            raise HTTPError(405, "no_message_handler", str(e)) from None
        except TooManyMessages as e:
            raise HTTPError(429, "too_many_messages", str(e)) from None
    except HTTPError as e:
        return {"status": e.status, "error": e.code, "message": e.message}
    return {"status": 200, "text": answer.text, "json": answer.json}


def set_message_handler(app: web.Application) -> None:
    """Messages other processes forward to this one's connections (a broker across processes)."""
    async def handle(cid: str, path: str, text: str, as_json: bool) -> dict[str, Any]:
        return await message_here(app, cid, path, text, as_json)
    app[BROKER].on_message = handle


def _unknown(cid: str) -> HTTPError:
    return HTTPError(404, "unknown_connection", f"no connection {cid} is open (it ended, or was never this "
                     "server's)")


def _check_target(conn: Connection, path: str) -> None:
    if conn.channel.path != path:
        raise _wrong_channel(conn, path)
    if conn.fmt in (WS, WS_V1):
        raise HTTPError(409, "wrong_transport", f"connection {conn.id} is a WebSocket: its messages go over the socket")


def preflight(request: web.Request) -> web.Response:
    """OPTIONS on a channel path: what a browser on another origin asks before a POST with headers."""
    headers = {"Allow": _ALLOW, **_cors(request)}
    if "Access-Control-Allow-Origin" in headers:
        headers["Access-Control-Allow-Methods"] = _ALLOW
        headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
        headers["Access-Control-Max-Age"] = "600"
    return web.Response(status=204, headers=headers)


def _cors(request: web.Request) -> dict[str, str]:
    origin = request.app[CONFIG].streams.cors_origin
    return {"Access-Control-Allow-Origin": origin} if origin else {}

