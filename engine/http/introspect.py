"""`GET /_engine/streams`: what each stream is doing."""

from __future__ import annotations

from aiohttp import web

from engine.http.keys import BROKER, STREAMS


async def streams_info(request: web.Request) -> web.Response:
    registry, broker = request.app[STREAMS], request.app[BROKER]
    streams = {}
    for path, s in sorted(registry.streams.items()):
        history, last_id = broker.describe(path)
        streams[path] = {"owner": s.owner, "connections": len(s.connections), "messages_sent": s.sent,
                         "history": history, "last_id": last_id}
    return web.json_response({
        "connections": registry.connection_count,
        "max_connections": registry.max_connections,
        "streams": streams,
    })
