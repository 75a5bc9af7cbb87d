"""`GET /_engine/streams`: what each stream is doing."""

from __future__ import annotations

from aiohttp import web

from engine.http.keys import STREAMS


async def streams_info(request: web.Request) -> web.Response:
    registry = request.app[STREAMS]
    return web.json_response({
        "connections": registry.connection_count,
        "max_connections": registry.max_connections,
        "streams": {
            path: {"owner": s.owner, "connections": len(s.connections), "messages_sent": s.sent,
                   "history": len(s.history), "last_id": f"{registry.epoch}-{s.seq}" if s.seq else None}
            for path, s in sorted(registry.streams.items())
        },
    })
