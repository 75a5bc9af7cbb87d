"""Wiring and lifecycle: build the aiohttp application from one Config, serve it, stop it in order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from engine.assets import AssetStore
from engine.auth import Verifier
from engine.broker.base import Broker
from engine.broker.memory import MemoryBroker
from engine.config import Config
from engine.connections import ConnectionHooks
from engine.graphql.execute import call_resolver
from engine.graphql.http import graphql, graphql_sse, preflight
from engine.graphql.runner import GraphQLRunner
from engine.graphql.schema import GraphQLRegistry
from engine.graphql.subscriptions import SubscriptionHub
from engine.http import admin, console
from engine.http.access_log import RedactingAccessLogger
from engine.http.admin import admin_only
from engine.http.channels import set_message_handler
from engine.http.dispatch import dispatch
from engine.http.front import EngineRunner
from engine.http.health import health
from engine.http.introspect import streams_info
from engine.http.keys import (
    ASSETS,
    AUTH,
    BROKER,
    CONFIG,
    GRAPHQL,
    GRAPHQL_RUNNER,
    HOOKS,
    LEAN_ROUTES,
    LEAN_SOCKETS,
    LOGS,
    MANAGEMENT,
    METRICS,
    POLLERS,
    ROUTES,
    SCRIPTS,
    STARTED,
    STREAMS,
    SUBSCRIPTIONS,
    WATCHER,
)
from engine.http.lean_route import LeanRoutes
from engine.http.metrics import metrics as metrics_page
from engine.http.middleware import json_errors
from engine.logstream import LogStream
from engine.management import Management
from engine.metrics import Metrics
from engine.routes import RouteTable
from engine.scripts import ScriptManager
from engine.streams.registry import StreamRegistry
from engine.streams.sse import heartbeat
from engine.transports.lean_socket import LeanSockets
from engine.transports.poll import Pollers
from engine.watcher import ScriptWatcher

log = logging.getLogger("engine")


SWITCH_INTERVAL = 0.001  # seconds


def server_options(config: Config) -> dict[str, Any]:
    """The runner options the app relies on, for `serve` and the tests alike."""
    return {
        # A client that disconnects cancels its handler at once, which is how a stream reader that
        # goes away is noticed (the heartbeat is the backstop).
        "handler_cancellation": True,
        # aiohttp closes a connection that waits this long for its next request head (from the
        # hand-over, then from each response): idle keep-alive and slow later heads alike.
        "keepalive_timeout": config.server.keepalive_seconds,
        # After a response, aiohttp reads and drops the rest of an unread body for this long:
        # a body that keeps trickling in is the body timeout's business too.
        "lingering_time": config.server.body_timeout_seconds,
        "access_log": logging.getLogger("aiohttp.access") if config.logs.access else None,
        "access_log_class": RedactingAccessLogger,  # no `?token=` in the log
    }


def build_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=config.limits.max_body_bytes)
    app[CONFIG] = config
    app[ROUTES] = RouteTable()
    s = config.streams
    app[BROKER] = broker = make_broker(config)
    app[STREAMS] = StreamRegistry(broker, s.max_buffer_bytes, s.max_connections, s.max_channels,
                                  s.history_ttl_seconds, fanout_slice=s.fanout_slice)
    app[SUBSCRIPTIONS] = hub = SubscriptionHub(app[STREAMS], config.limits.graphql_max_result_fields,
                                               config.limits.graphql_subscription_fields,
                                               config.limits.max_response_bytes)
    app[GRAPHQL] = GraphQLRegistry(call_resolver, on_change=hub.schema_changed)
    app[METRICS] = metrics = Metrics()
    app[SCRIPTS] = scripts = ScriptManager(config, app[ROUTES], app[STREAMS], broker, app[GRAPHQL], hub,
                                           metrics.observe_call)
    metrics.watch(app[STREAMS], hub, scripts, broker)
    app[ASSETS] = AssetStore(config.assets_dir, config.assets)
    app[MANAGEMENT] = scripts.management = Management(config, scripts, app[ASSETS])
    app[AUTH] = verifier = Verifier(config.auth)
    app[HOOKS] = ConnectionHooks(app[STREAMS], broker, verifier, s.max_client_messages, scripts.background_error)
    app[POLLERS] = Pollers(app[STREAMS], s)
    app[LEAN_SOCKETS] = LeanSockets()
    app[LEAN_ROUTES] = LeanRoutes()
    app[STARTED] = time.monotonic()
    app.cleanup_ctx.append(_broker)
    app.cleanup_ctx.append(_log_stream)
    app.cleanup_ctx.append(_graphql_runner)
    app.cleanup_ctx.append(_scripts)
    app.cleanup_ctx.append(_management)
    app.cleanup_ctx.append(_heartbeat)
    if config.scripts.watch:
        app.cleanup_ctx.append(_watch)
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/health", json_errors(health))
    app.router.add_get("/_engine/streams", json_errors(admin_only(streams_info)))
    app.router.add_get("/metrics", json_errors(admin_only(metrics_page, lambda c: c.metrics.token)))
    admin.add_routes(app, json_errors)
    console.add_routes(app, admin_only, json_errors)
    for path, handler in (("/graphql", graphql), ("/graphql/sse", graphql_sse)):
        app.router.add_route("GET", path, json_errors(handler))
        app.router.add_route("POST", path, json_errors(handler))
        app.router.add_route("OPTIONS", path, json_errors(preflight))
    # Any character: `.` alone would miss a decoded newline (`%0a`), leaving aiohttp's text 404.
    app.router.add_route("*", r"/{tail:[\s\S]*}", dispatch)
    return app


def make_broker(config: Config) -> Broker:
    """`broker.url` set: Redis, shared with every process on it; else this process's memory."""
    s, b = config.streams, config.broker
    if not b.url:
        return MemoryBroker(s.history, s.history_bytes, s.total_history_bytes)
    from engine.broker.redis import RedisBroker  # redis-py is only loaded when it is used

    return RedisBroker(b.url, b.prefix, s.history, s.history_bytes, s.total_history_bytes, b.history_ttl_seconds,
                       b.connect_timeout_seconds, b.mirror_idle_seconds)


async def _broker(app: web.Application) -> AsyncIterator[None]:
    """Connect the broker before any script runs (a script may publish as it loads); disconnect last."""
    broker = app[BROKER]
    await broker.start(must_connect=not app[CONFIG].broker.start_degraded)
    set_message_handler(app)
    yield
    await broker.stop()


async def _log_stream(app: web.Application) -> AsyncIterator[None]:
    """The engine's log as live streams (the admin API's /_engine/logs), for as long as the app runs."""
    handler = LogStream(app[STREAMS], app[BROKER], asyncio.get_running_loop())
    app[LOGS] = handler
    logger = logging.getLogger("engine")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


async def _graphql_runner(app: web.Application) -> AsyncIterator[None]:
    """GraphQL's threads (parsing, validating, executing), off the event loop, for as long as the app runs."""
    runner = app[GRAPHQL_RUNNER] = GraphQLRunner(app[CONFIG].limits)
    app[SUBSCRIPTIONS].runner = runner
    yield
    await runner.close()


async def _scripts(app: web.Application) -> AsyncIterator[None]:
    """Start-up: load every script. Shutdown (after connections close): dispose contexts, join threads."""
    scripts = app[SCRIPTS]
    if not scripts.folder.is_dir():  # the one warning about it: the watcher only waits for it, quietly
        then = "; they load once it is created" if app[CONFIG].scripts.watch else ""
        log.warning("scripts folder %s does not exist: no scripts loaded%s", scripts.folder, then)
    await scripts.load_all()
    # What start-up built (modules, the engine's tables, the first scripts) lives as long as the
    # server: kept out of the collector's way, a full collection no longer walks it (a pause of tens
    # of milliseconds on the loop otherwise, since the collector holds the interpreter lock).
    gc.freeze()
    yield
    await scripts.close()


async def _management(app: web.Application) -> AsyncIterator[None]:
    """Privileged scripts' writes, and their view of the assets folder (followed while scripts.watch is
    on); stopped before the scripts are."""
    management = app[MANAGEMENT]
    follow = None
    if management.names and app[CONFIG].scripts.watch:
        follow = asyncio.create_task(management.follow())
    yield
    await management.close()
    if follow is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow, 2)


async def _watch(app: web.Application) -> AsyncIterator[None]:
    """Reload scripts as their files change, from start-up (after the first load) to shutdown."""
    watcher = ScriptWatcher(app[SCRIPTS], app[CONFIG].scripts.debounce_ms)
    app[WATCHER] = watcher
    log.info("watching %s: a saved script reloads", app[SCRIPTS].folder.resolve())
    task = asyncio.create_task(watcher.run())
    yield
    watcher.stop()
    try:
        await asyncio.wait_for(task, 2)
    except TimeoutError:
        log.warning("the scripts watcher did not stop in time")


async def _heartbeat(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(heartbeat([app[STREAMS], app[SUBSCRIPTIONS], app[POLLERS], app[LEAN_SOCKETS]],
                                       app[CONFIG].streams.heartbeat_seconds))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_streams(app: web.Application) -> None:
    """First step of shutdown: end every stream reader, so their handlers return and the server can
    close; the onDisconnect this owes scripts runs before they close."""
    app[STREAMS].close_all()
    app[SUBSCRIPTIONS].close_all()
    app[LEAN_ROUTES].close_all()
    await app[HOOKS].settle(app[CONFIG].limits.handler_timeout_ms / 1000)


def raise_open_file_limit(wanted: int) -> None:
    """Each stream reader holds a socket: lift the soft RLIMIT_NOFILE (often 1,024) toward the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open-file limit is %d, below streams.max_connections plus headroom (%d)", target, wanted)


def check_port(config: Config) -> None:
    """Bind the address and let it go again: OSError now, rather than after every script loaded."""
    host, port = config.server.host, config.server.port
    if not port:
        return
    for family, kind, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE):
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if config.server.workers > 1:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)


async def serve(config: Config, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then close connections, stop scripts and return."""
    raise_open_file_limit(config.streams.max_connections + 1024)
    # Scripts' and GraphQL's threads hold the interpreter lock while they parse and check; the loop
    # waits for it whenever it comes back from a system call. A thread that holds it is asked to let
    # go after this long (5 ms by default): the longest the loop waits each time.
    sys.setswitchinterval(SWITCH_INTERVAL)
    check_port(config)  # before any script loads: a port in use is said at once
    app = build_app(config)
    runner = EngineRunner(
        app,
        **server_options(config),
        handle_signals=False,
        shutdown_timeout=config.server.shutdown_seconds,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port, reuse_port=config.server.workers > 1)
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
