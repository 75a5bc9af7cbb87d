"""Wiring and lifecycle: build the aiohttp application from one Config, serve it, stop it in order."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from engine.config import Config
from engine.http.dispatch import dispatch
from engine.http.health import health
from engine.http.keys import CONFIG, ROUTES, SCRIPTS, STARTED
from engine.http.middleware import json_errors
from engine.routes import RouteTable
from engine.scripts import ScriptManager

log = logging.getLogger("engine")


def build_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=config.limits.max_body_bytes)
    app[CONFIG] = config
    app[ROUTES] = RouteTable()
    app[SCRIPTS] = ScriptManager(config, app[ROUTES])
    app[STARTED] = time.monotonic()
    app.cleanup_ctx.append(_scripts)
    app.router.add_get("/health", json_errors(health))
    app.router.add_route("*", "/{tail:.*}", json_errors(dispatch))
    return app


async def _scripts(app: web.Application) -> AsyncIterator[None]:
    """Start-up: load every script. Shutdown (after connections close): dispose contexts, join threads."""
    scripts = app[SCRIPTS]
    if not scripts.folder.is_dir():
        log.warning("scripts folder %s does not exist: no scripts loaded", scripts.folder)
    await scripts.load_all()
    yield
    await scripts.close()


async def serve(config: Config, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then close connections, stop scripts and return."""
    app = build_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=config.server.shutdown_seconds,
        access_log=logging.getLogger("aiohttp.access") if config.logs.access else None,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        log.info("serving on %s", url)
        if on_ready:
            on_ready(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
    log.info("stopped")
