"""`GET /health`: is the server up, and how are its scripts."""

from __future__ import annotations

import time

from aiohttp import web

from engine import __version__
from engine.http.keys import BROKER, SCRIPTS, STARTED


async def health(request: web.Request) -> web.Response:
    scripts = request.app[SCRIPTS]
    failed = sorted(r.name for r in scripts.records.values() if r.status == "failed")
    broker = request.app[BROKER]
    return web.json_response({
        "status": "ok" if broker.healthy else "degraded",
        "broker": broker.describe_state(),
        "version": __version__,
        "uptime_seconds": round(time.monotonic() - request.app[STARTED], 3),
        "scripts": {**scripts.counts(), "failed_names": failed},
    })
