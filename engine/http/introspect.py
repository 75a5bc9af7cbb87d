"""`GET /_engine/streams`: what each stream, and each live channel of a pattern, is doing."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.broker.base import Broker
from engine.connections import TRANSPORT_OF
from engine.http.keys import BROKER, STREAMS
from engine.streams.registry import Channel

SHOWN_CHANNELS = 1000  # per pattern: the rest are counted, not listed


def _channel(broker: Broker, channel: Channel) -> dict[str, Any]:
    history, last_id = broker.describe(channel.path)
    return {"connections": channel.count, "by_transport": by_transport(channel.by_format()),
            "messages_sent": channel.sent, "history": history, "last_id": last_id}


def by_transport(formats: dict[str, int]) -> dict[str, int]:
    """Readers by transport (`websocket` counts both of its wire formats)."""
    out: dict[str, int] = {}
    for fmt, n in formats.items():
        name = TRANSPORT_OF.get(fmt, fmt)
        out[name] = out.get(name, 0) + n
    return out


async def streams_info(request: web.Request) -> web.Response:
    registry, broker = request.app[STREAMS], request.app[BROKER]
    streams: dict[str, Any] = {}
    for path, s in sorted(registry.streams.items()):
        entry: dict[str, Any] = {"owner": s.owner, "hooks": s.hooks is not None, "auth": s.auth}
        if s.pattern:
            channels = list(s.channels.values())
            totals: dict[str, int] = {}
            for c in channels:
                for name, n in by_transport(c.by_format()).items():
                    totals[name] = totals.get(name, 0) + n
            entry.update(connections=sum(c.count for c in channels), by_transport=totals,
                         messages_sent=sum(c.sent for c in channels), channel_count=len(channels),
                         channels={c.path: _channel(broker, c) for c in channels[:SHOWN_CHANNELS]})
        else:
            entry.update(_channel(broker, s.channels[path]))
        streams[path] = entry
    return web.json_response({
        "connections": registry.connection_count,
        "max_connections": registry.max_connections,
        "channels": len(registry.channels),
        "max_channels": registry.max_channels,
        "streams": streams,
    })
