"""`GET /metrics`: Prometheus's text format (see engine/metrics.py for what is in it)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from engine.http.keys import METRICS


async def metrics(request: web.Request) -> web.Response:
    """Text format 0.0.4: what every Prometheus version since 2.0 reads."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
