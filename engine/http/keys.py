"""Typed keys for what the aiohttp application and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from engine.assets import AssetStore
from engine.auth import Verifier
from engine.broker.base import Broker
from engine.config import Config
from engine.metrics import Metrics
from engine.routes import RouteTable
from engine.streams.registry import StreamRegistry

if TYPE_CHECKING:
    from engine.connections import ConnectionHooks
    from engine.graphql.runner import GraphQLRunner
    from engine.graphql.schema import GraphQLRegistry
    from engine.graphql.subscriptions import SubscriptionHub
    from engine.http.lean_route import LeanRoutes
    from engine.logstream import LogStream
    from engine.management import Management
    from engine.scripts import ScriptManager
    from engine.transports.lean_socket import LeanSockets
    from engine.transports.poll import Pollers
    from engine.watcher import ScriptWatcher

CONFIG = web.AppKey("config", Config)
BROKER = web.AppKey("broker", Broker)
ROUTES = web.AppKey("routes", RouteTable)
STREAMS = web.AppKey("streams", StreamRegistry)
AUTH = web.AppKey("auth", Verifier)
HOOKS: web.AppKey[ConnectionHooks] = web.AppKey("hooks")
POLLERS: web.AppKey[Pollers] = web.AppKey("pollers")
LEAN_SOCKETS: web.AppKey[LeanSockets] = web.AppKey("lean_sockets")
LEAN_ROUTES: web.AppKey[LeanRoutes] = web.AppKey("lean_routes")
SCRIPTS: web.AppKey[ScriptManager] = web.AppKey("scripts")
GRAPHQL: web.AppKey[GraphQLRegistry] = web.AppKey("graphql")
SUBSCRIPTIONS: web.AppKey[SubscriptionHub] = web.AppKey("subscriptions")
WATCHER: web.AppKey[ScriptWatcher] = web.AppKey("watcher")
LOGS: web.AppKey[LogStream] = web.AppKey("logs")
ASSETS = web.AppKey("assets", AssetStore)
MANAGEMENT: web.AppKey[Management] = web.AppKey("management")
STARTED = web.AppKey("started", float)
METRICS = web.AppKey("metrics", Metrics)
GRAPHQL_RUNNER: web.AppKey[GraphQLRunner] = web.AppKey("graphql_runner")
REQUEST_ID = web.RequestKey("request_id", str)
