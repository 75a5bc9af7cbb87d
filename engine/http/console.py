"""The console at `/_engine/`: a page (and its files) anyone may load, and the JSON and streams it
reads, guarded like the admin API (the page asks for the admin token when one is set).

- `GET /_engine/` and `GET /_engine/console/<file>`: the page, its script and style, and the
  CodeMirror files vendored into the package (engine/console/; no CDN: it works offline);
- `GET /_engine/overview`: scripts (with what each registered and its latest loads), streams, totals;
- `GET /_engine/live`: the totals and each stream's figures as SSE, once a second, while followed;
- `GET /_engine/connections`: readers (id, stream, transport, user, age, bytes queued), at most
  `?limit=` (500 by default, 5,000 at most); `DELETE /_engine/connections/<id>` closes one;
- `POST /_engine/publish` `{"path", "data", "event"}`: a message to a channel, as a script sends it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from importlib.resources import files
from typing import Any

from aiohttp import web

from engine import __version__, rules
from engine.connections import TRANSPORT_OF
from engine.errors import HTTPError
from engine.http.introspect import by_transport
from engine.http.keys import BROKER, CONFIG, GRAPHQL, REQUEST_ID, ROUTES, SCRIPTS, STARTED, STREAMS, SUBSCRIPTIONS
from engine.http.request import read_body
from engine.streams.registry import TooManyChannels
from engine.streams.sse import sse_headers
from engine.streams.wire import encode_event

CONSOLE = files("engine.console")
# The files the page may load, and their types: nothing else under engine/console/ is served.
FILES = {"console.js": "text/javascript", "console.css": "text/css", "codemirror.js": "text/javascript",
         "codemirror.css": "text/css", "javascript.js": "text/javascript", "LICENSE-codemirror": "text/plain"}
LIVE_EVERY = 1.0  # seconds between two snapshots on /_engine/live
MAX_LISTED = 5000
SAMPLED = 2000  # channels of one pattern a snapshot counts over


NO_FRAMING = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}


async def page(request: web.Request) -> web.Response:
    """The console page; no other site may frame it (a click there would be the operator's)."""
    return web.Response(text=CONSOLE.joinpath("index.html").read_text(encoding="utf-8"), content_type="text/html",
                        charset="utf-8", headers={"Cache-Control": "no-cache", **NO_FRAMING})


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = FILES.get(name)
    if kind is None:
        raise HTTPError(404, "not_found", f"the console has no file {name[:80]!r}")
    folder = CONSOLE.joinpath("vendor") if name in ("codemirror.js", "codemirror.css", "javascript.js",
                                                    "LICENSE-codemirror") else CONSOLE
    return web.Response(body=folder.joinpath(name).read_bytes(), content_type=kind,
                        headers={"Cache-Control": "max-age=3600"})


def _totals(app: web.Application) -> dict[str, Any]:
    registry, broker, scripts = app[STREAMS], app[BROKER], app[SCRIPTS]
    failing = scripts.failing()
    return {
        "version": __version__,
        "uptime_seconds": round(time.monotonic() - app[STARTED], 1),
        "connections": registry.connection_count,
        "max_connections": registry.max_connections,
        "channels": len(registry.channels),
        "subscriptions": app[SUBSCRIPTIONS].count,
        "messages": registry.messages,
        "delivered": registry.delivered,
        "bytes_sent": registry.bytes_sent,
        "slow_cut": registry.slow_cut,
        "scripts": scripts.counts(),
        "failing": failing,
        "broker": broker.describe_state(),
        "healthy": broker.healthy and not failing,
    }


def _streams(app: web.Application) -> list[dict[str, Any]]:
    """Each stream's figures. A pattern with more than SAMPLED live channels is counted over the
    first SAMPLED of them (`sampled` says so): a snapshot a second must not walk 100,000 channels."""
    registry, broker = app[STREAMS], app[BROKER]
    out = []
    for path, s in sorted(registry.streams.items()):
        total = len(s.channels)
        channels = list(itertools.islice(s.channels.values(), SAMPLED))
        by: dict[str, int] = {}
        for c in channels:
            for name, n in by_transport(c.by_format()).items():
                by[name] = by.get(name, 0) + n
        history = sum(broker.describe(c.path)[0] for c in channels[:100])
        out.append({"path": path, "owner": s.owner, "pattern": s.pattern, "hooks": s.hooks is not None,
                    "auth": s.auth, "channels": total, "sampled": len(channels) if total > SAMPLED else None,
                    "connections": sum(c.count for c in channels),
                    "by_transport": by, "messages": sum(c.sent for c in channels), "history": history,
                    "live": [c.path for c in channels[:50]] if s.pattern else []})
    return out


async def overview(request: web.Request) -> web.Response:
    app = request.app
    routes: dict[str, list[str]] = {}
    for r in app[ROUTES].routes():
        routes.setdefault(r.owner, []).append(f"{r.method} {r.path}")
    streams: dict[str, list[str]] = {}
    for path, s in app[STREAMS].streams.items():
        streams.setdefault(s.owner, []).append(path)
    fields: dict[str, list[str]] = {}
    for key, reg in app[GRAPHQL].fields.items():
        fields.setdefault(reg.owner, []).append(key)
    scripts = []
    for name, record in sorted(app[SCRIPTS].records.items()):
        scripts.append({**record.describe(), "loads": record.loads, "failures": record.failures,
                        "history": list(record.history), "routes": sorted(routes.get(name, [])),
                        "streams": sorted(streams.get(name, [])), "graphql": sorted(fields.get(name, []))})
    return web.json_response({"totals": _totals(app), "scripts": scripts, "streams": _streams(app)})


async def live(request: web.Request) -> web.StreamResponse:
    """What the console's figures show, as an event a second (`event: stats`), for as long as it reads."""
    app = request.app
    response = web.StreamResponse(headers=sse_headers(app[CONFIG].streams, request[REQUEST_ID]))
    await response.prepare(request)
    while True:
        data = json.dumps({"totals": _totals(app), "streams": _streams(app), "at": time.time()})
        await response.write(encode_event(data, event="stats"))
        await asyncio.sleep(LIVE_EVERY)


async def connections(request: web.Request) -> web.Response:
    registry = request.app[STREAMS]
    try:
        limit = min(max(int(request.query.get("limit", "500")), 1), MAX_LISTED)
    except ValueError:
        raise HTTPError(400, "bad_limit", "limit must be a whole number") from None
    now = time.time()
    listed: list[dict[str, Any]] = []
    for conn in registry.connections.values():
        if len(listed) >= limit:
            break
        user = None
        if conn.info is not None:
            try:
                user = json.loads(conn.info.conn).get("user")
            except (ValueError, AttributeError):
                user = None
        listed.append({"id": conn.id, "path": conn.channel.path, "stream": conn.channel.stream.path,
                       "transport": TRANSPORT_OF.get(conn.fmt, conn.fmt), "format": conn.fmt, "user": user,
                       "age_seconds": max(0, int(now - conn.started)) if conn.started else None,
                       "queued_bytes": conn.transport.get_write_buffer_size()})
    return web.json_response({"total": len(registry.connections), "connections": listed})


async def close_connection(request: web.Request) -> web.Response:
    cid = request.match_info["id"]
    if rules.connection_id_problem(cid):
        raise HTTPError(400, "bad_connection_id", "not a connection id")
    if not request.app[BROKER].close(cid, "closed by the operator"):
        raise HTTPError(404, "unknown_connection", f"no connection {cid} is open")
    return web.json_response({"closed": cid})


async def publish(request: web.Request) -> web.Response:
    """A message to one channel, as `sendStreamMessageToPath` sends it (the same checks)."""
    app = request.app
    if request.content_type != "application/json":
        # A page of another site can POST text/plain or a form here without asking first; JSON it
        # cannot send without a preflight, which the admin API does not answer.
        raise HTTPError(415, "unsupported_media_type", "send the message as Content-Type: application/json")
    body = await read_body(request, app[CONFIG].limits.max_body_bytes)
    try:
        msg = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HTTPError(400, "bad_request", "the body must be JSON: {\"path\", \"data\", \"event\"}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("path"), str):
        raise HTTPError(400, "bad_request", "`path` must be the channel's path")
    path, data, event = msg["path"], msg.get("data"), msg.get("event")
    if event is not None:
        problem = rules.event_problem(event) if isinstance(event, str) else "`event` must be a string"
        if problem:
            raise HTTPError(400, "bad_event", problem)
    is_json = not isinstance(data, str)
    text = data if isinstance(data, str) else json.dumps(data)
    if len(text.encode("utf-8", "surrogatepass")) > app[CONFIG].limits.max_message_bytes:
        raise HTTPError(413, "too_large", "the message is larger than limits.max_message_bytes")
    try:
        channel = app[STREAMS].open(path)
    except TooManyChannels as e:
        raise HTTPError(503, "too_many_channels", str(e)) from None
    if channel is None:
        raise HTTPError(404, "no_stream", f"no stream has the channel {path[:200]}")
    app[BROKER].publish(channel.path, text, event, is_json)
    return web.json_response({"published": channel.path})


def add_routes(app: web.Application, guard: Any, wrap: Any) -> None:
    r = app.router
    r.add_get("/_engine/", wrap(page))
    r.add_get("/_engine", wrap(page))
    r.add_get("/_engine/console/{name}", wrap(asset))
    r.add_get("/_engine/overview", wrap(guard(overview)))
    r.add_get("/_engine/live", wrap(guard(live)))
    r.add_get("/_engine/connections", wrap(guard(connections)))
    r.add_delete("/_engine/connections/{id}", wrap(guard(close_connection)))
    r.add_post("/_engine/publish", wrap(guard(publish)))
