"""`GET /health`: is the server up, and how are its scripts."""

from __future__ import annotations

import time

from aiohttp import web

from engine import __version__
from engine.http.keys import BROKER, SCRIPTS, STARTED


async def health(request: web.Request) -> web.Response:
    """`degraded` while the broker cannot reach the other processes, or a script's latest save did
    not load (an older version may still serve it: `failing_names` says which)."""
    scripts = request.app[SCRIPTS]
    failed = sorted(r.name for r in scripts.records.values() if r.status == "failed")
    failing = scripts.failing()
    broker = request.app[BROKER]
    return web.json_response({
        "status": "ok" if broker.healthy and not failing else "degraded",
        "broker": broker.describe_state(),
        "version": __version__,
        "uptime_seconds": round(time.monotonic() - request.app[STARTED], 3),
        "scripts": {**scripts.counts(), "failed_names": failed, "failing_names": failing},
    })
