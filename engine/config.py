"""One frozen `Config`: defaults, then `config.yaml`, then `ENGINE_*` env vars, then CLI flags.

The dataclass fields below are the single table of settings: their defaults, their one line of help
and their bounds. `config.yaml`'s comments and the README's table are generated from it (and a test
keeps them in step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine import rules
from engine.errors import ConfigError

ENV_PREFIX = "ENGINE_"


def setting(default: Any, help: str, *, min: float | None = None, choices: tuple[str, ...] = ()) -> Any:
    """A config field: its default, one line of help, and what values it accepts."""
    return field(default=default, metadata={"help": help, "min": min, "choices": choices})


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(3000, "TCP port to listen on (0 picks a free one)", min=0)
    shutdown_seconds: float = setting(1.0, "on SIGINT/SIGTERM, how long open connections get to close", min=0)
    loop: str = setting("uvloop", "event loop: uvloop (faster) or asyncio (the standard library's)",
                        choices=("uvloop", "asyncio"))
    header_timeout_seconds: float = setting(10.0, "how long a new connection may take to send its first request head "
                                            "(408 and closed beyond)", min=0.01)
    body_timeout_seconds: float = setting(30.0, "how long a request body may take to arrive in full (408 beyond)",
                                          min=0.01)
    keepalive_seconds: float = setting(30.0, "how long an idle keep-alive connection stays open; it also bounds a "
                                       "slow request head after the first", min=0.01)
    workers: int = setting(1, "processes serving the same port (SO_REUSEPORT); more than 1 needs broker.url",
                           min=1)
    lean_routes: bool = setting(True, "serve plain GETs of JS routes below aiohttp, on a keep-alive protocol of the "
                                "engine's own (anything else on the connection goes to aiohttp)")


@dataclass(frozen=True)
class ScriptsConfig:
    dir: str = setting("scripts", "folder of user .js scripts (relative to the working directory)")
    watch: bool = setting(True, "load, reload and unload scripts as their files change")
    debounce_ms: int = setting(20, "how long the watcher gathers a burst of file changes into one (webpack's "
                               "aggregateTimeout is 20 too)", min=1)
    max_count: int = setting(1000, "scripts the admin API and privileged scripts may create in all (files put in "
                             "the folder by hand always load)", min=1)
    privileged: tuple[str, ...] = setting((), "scripts that may manage scripts and assets (listScripts, upsertScript, "
                                          "upsertAsset, ...): a YAML list, or names separated by commas")


@dataclass(frozen=True)
class AssetsConfig:
    dir: str = setting("", "folder of static files served at their paths, which privileged scripts manage; empty: "
                       "`assets` beside the scripts folder")
    max_bytes: int = setting(4194304, "largest asset upsertAsset may write; larger files put there by hand are "
                             "served, and listed, but fetchAsset refuses them", min=1)
    max_total_bytes: int = setting(33554432, "bytes of assets privileged scripts hold for fetchAsset (each "
                                   "privileged script's memory limit grows by twice this); upsertAsset refuses "
                                   "to write past it", min=0)
    max_count: int = setting(1000, "assets upsertAsset may create in all", min=1)


@dataclass(frozen=True)
class LimitsConfig:
    script_time_ms: int = setting(1000, "CPU time one script call may use before it is interrupted", min=1)
    script_memory_mb: int = setting(64, "memory one script's QuickJS context may hold", min=1)
    handler_timeout_ms: int = setting(30000, "how long a handler's returned Promise may stay pending", min=1)
    max_body_bytes: int = setting(1048576, "largest request body accepted (413 beyond)", min=1)
    stream_response_seconds: float = setting(3600.0, "how long a streaming response (a handler that yields) may "
                                             "run in all; each step has handler_timeout_ms", min=0.01)
    stream_low_water_bytes: int = setting(65536, "a streaming response's generator is asked for its next value "
                                          "only while the client has less than this unsent", min=1)
    max_message_bytes: int = setting(1048576, "largest stream message a script may send (it throws beyond)", min=1)
    max_response_bytes: int = setting(8388608, "largest response body or GraphQL resolver value a script may "
                                      "hand back (a 500 beyond)", min=1)
    max_commands_per_call: int = setting(50000, "host calls (logs, sends, registrations) one script call may make; "
                                         "the next one throws", min=1)
    max_pending_calls: int = setting(1000, "calls waiting on one script at once (requests, resolvers); "
                                     "503 beyond", min=1)
    graphql_max_tokens: int = setting(10000, "largest GraphQL document accepted, in tokens (parsing and "
                                      "validating run on the event loop)", min=1)
    graphql_max_query_bytes: int = setting(65536, "largest GraphQL document accepted, in bytes", min=1)
    graphql_max_fields: int = setting(1000, "field selections one GraphQL operation may make, aliases counted and "
                                      "fragments expanded (checked before validation)", min=1)
    graphql_max_result_fields: int = setting(100000, "fields one GraphQL result may hold, list items counted; "
                                             "an error beyond", min=1)
    graphql_subscription_fields: int = setting(200000, "field selections all live subscriptions may hold together "
                                               "(each distinct query once; a parsed query is ~1 KB a field); "
                                               "503 beyond", min=1)
    graphql_timeout_ms: int = setting(30000, "how long one GraphQL request may run, resolvers included", min=1)
    graphql_ws_init_seconds: float = setting(3.0, "how long a GraphQL WebSocket may wait before its connection_init "
                                             "(closed with 4408 beyond)", min=0.01)
    graphql_ws_operations: int = setting(100, "operations (subscriptions, queries, mutations) one GraphQL WebSocket "
                                         "may have under way at once; an error for the next", min=1)


@dataclass(frozen=True)
class StreamsConfig:
    heartbeat_seconds: float = setting(15.0, "how often a `: ping` comment goes to every stream reader", min=0.01)
    history: int = setting(1000, "events each stream keeps for readers that reconnect with Last-Event-ID", min=0)
    history_bytes: int = setting(1048576, "bytes of events each stream keeps (the oldest go first); at most "
                                 "streams.max_buffer_bytes, or a reader resuming from far back is cut as slow", min=0)
    total_history_bytes: int = setting(134217728, "bytes of events all streams keep together (the oldest anywhere "
                                       "go first)", min=0)
    max_buffer_bytes: int = setting(1048576, "unsent bytes after which a slow reader is disconnected", min=1)
    fanout_slice: int = setting(1024, "readers a channel's events are written to in one turn of the event loop; "
                                "a channel with more goes on at the next turns, so other work is not held up "
                                "behind one large fan-out", min=1)
    max_connections: int = setting(10000, "stream readers at once, across all streams (503 beyond)", min=1)
    max_channels: int = setting(100000, "channels at once, plain streams and each live path of a pattern together "
                                "(beyond: 503 to a reader, an error in the sender's log)", min=1)
    history_ttl_seconds: float = setting(300.0, "how long a pattern's channel nobody reads lives after its last "
                                         "message (or its last reader); then it goes, history and all", min=0)
    max_client_messages: int = setting(16, "messages from one connection waiting for its stream's onMessage "
                                       "(429 beyond)", min=1)
    poll_timeout_seconds: float = setting(30.0, "how long a long-poll waits for an event before it answers an "
                                          "empty batch", min=0.01)
    poll_grace_seconds: float = setting(30.0, "how long a long-poll connection lives between two polls; then it "
                                        "counts as gone (its onDisconnect runs)", min=0.01)
    retry_ms: int = setting(2000, "the `retry:` reconnection delay sent to every reader", min=0)
    cors_origin: str = setting("*", "Access-Control-Allow-Origin on streams; empty for none")
    lean_readers: bool = setting(True, "serve a fresh connection's stream reader below aiohttp (a few KB each)")


@dataclass(frozen=True)
class BrokerConfig:
    url: str = setting("", "redis://host:port/db to share channels, history and connections with other engine "
                       "processes through Redis; empty: this process alone, in memory")
    prefix: str = setting("rt", "what every Redis key and pub/sub channel of this engine starts with (several "
                          "clusters may share one Redis)")
    start_degraded: bool = setting(False, "start even when Redis is unreachable (serving this process's readers "
                                   "alone until it is back); off: exit with an error")
    history_ttl_seconds: float = setting(86400.0, "how long a channel's history and numbering live in Redis "
                                         "after its last message", min=1)
    connect_timeout_seconds: float = setting(2.0, "how long one attempt to reach Redis may take", min=0.01)
    mirror_idle_seconds: float = setting(120.0, "how long this process keeps following a channel none of its "
                                         "readers reads any more (every message of it costs the process)", min=0.01)


@dataclass(frozen=True)
class LogsConfig:
    level: str = setting("info", "server log level", choices=("debug", "info", "warning", "error"))
    script_lines: int = setting(500, "recent log lines kept per script (listLogs, admin API)", min=1)
    access: bool = setting(False, "log one line per HTTP request")


@dataclass(frozen=True)
class AdminConfig:
    token: str = setting("", "bearer token for the admin API under /_engine/; empty: loopback clients only")


@dataclass(frozen=True)
class MetricsConfig:
    token: str = setting("", "bearer token for /metrics (a Prometheus scrape config's bearer_token); empty: the "
                         "admin API's rule (admin.token, or loopback clients only)")


@dataclass(frozen=True)
class AuthConfig:
    jwt_secret: str = setting("", "HS256 secret that stream tokens are signed with; empty: none accepted that way")
    jwt_public_key: str = setting("", "RS256 or ES256 public key for stream tokens: PEM text, or the path of a PEM "
                                  "file; empty: none accepted that way")
    audience: str = setting("", "the `aud` a token must carry; empty: not checked")
    issuer: str = setting("", "the `iss` a token must carry; empty: not checked")
    cookie: str = setting("token", "the cookie a stream token may come in (besides `Authorization: Bearer` and "
                          "`?token=`)")


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    scripts: ScriptsConfig = field(default_factory=ScriptsConfig)
    assets: AssetsConfig = field(default_factory=AssetsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)

    @property
    def scripts_dir(self) -> Path:
        return Path(self.scripts.dir)

    @property
    def assets_dir(self) -> Path:
        return Path(self.assets.dir) if self.assets.dir else self.scripts_dir.parent / "assets"


@dataclass(frozen=True)
class Setting:
    """One row of the settings table, derived from the dataclasses above."""

    key: str  # "section.name"
    default: Any
    type: type
    help: str
    min: float | None
    choices: tuple[str, ...]

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").upper()


def settings() -> Iterator[Setting]:
    """Every setting, in declaration order."""
    for section in dataclasses.fields(Config):
        section_cls = section.default_factory  # type: ignore[misc]
        for f in dataclasses.fields(section_cls):  # type: ignore[arg-type]
            yield Setting(
                key=f"{section.name}.{f.name}",
                default=f.default,
                type=_TYPES[f.type] if isinstance(f.type, str) else f.type,  # type: ignore[index]
                help=f.metadata["help"],
                min=f.metadata["min"],
                choices=f.metadata["choices"],
            )


_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "tuple[str, ...]": tuple}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(s: Setting, value: Any, source: str) -> Any:
    """Turn a raw value (YAML scalar or env/CLI string) into the setting's type, or say why not."""
    where = f"config key '{s.key}' (from {source})"
    try:
        if s.type is bool:
            if isinstance(value, bool):
                out: Any = value
            elif str(value).lower() in _TRUE | _FALSE:
                out = str(value).lower() in _TRUE
            else:
                raise ValueError
        elif s.type is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif s.type is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        elif s.type is tuple:  # a list of names: YAML's list, or "a.js, b.js" from env or the command line
            items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
                raise ValueError
            out = tuple(v for v in items if v)
        else:
            if value is None or isinstance(value, (dict, list)):
                raise ValueError
            out = str(value)
    except (TypeError, ValueError):
        expected = "a list of names" if s.type is tuple else s.type.__name__
        raise ConfigError(f"{where}: expected {expected}, got {value!r}") from None
    if s.min is not None and out < s.min:
        raise ConfigError(f"{where}: must be at least {s.min:g}, got {out!r}")
    if s.choices and out not in s.choices:
        raise ConfigError(f"{where}: must be one of {', '.join(s.choices)}, got {out!r}")
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"config key '{section}' in {path}: must be a mapping of settings")
        for name, value in values.items():
            flat[f"{section}.{name}"] = value
    return flat


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve the one Config. `path` None means `config.yaml` in the working directory, if present."""
    known = {s.key: s for s in settings()}
    layers: list[tuple[str, dict[str, Any]]] = []

    if path is None:
        default = Path("config.yaml")
        if default.is_file():
            layers.append((str(default), _read_yaml(default)))
    else:
        layers.append((str(path), _read_yaml(path)))
    for source, values in layers:
        for key in values:
            if key not in known:
                raise ConfigError(f"config key '{key}' (from {source}): unknown setting")

    env = env or {}
    env_values = {s.key: env[s.env_var] for s in known.values() if s.env_var in env}
    unknown_env = [
        k for k in env if k.startswith(ENV_PREFIX) and k not in {s.env_var for s in known.values()}
    ]
    if unknown_env:
        raise ConfigError(f"environment variable {unknown_env[0]}: unknown setting")
    layers.append(("environment", env_values))
    layers.append(("command line", {k: v for k, v in (overrides or {}).items() if v is not None}))

    resolved: dict[str, Any] = {}
    for source, values in layers:
        for key, value in values.items():
            resolved[key] = _coerce(known[key], value, source)

    sections: dict[str, Any] = {}
    for section in dataclasses.fields(Config):
        cls = section.default_factory  # type: ignore[misc]
        kwargs = {
            f.name: resolved[f"{section.name}.{f.name}"]
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f"{section.name}.{f.name}" in resolved
        }
        sections[section.name] = cls(**kwargs)  # type: ignore[operator]
    config = Config(**sections)
    _check_together(config)
    return config


def _check_together(config: Config) -> None:
    """Settings that are wrong only in each other's company."""
    url = config.broker.url
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"broker.url: must be a redis://, rediss:// or unix:// URL, got {url!r}")
    for name in config.scripts.privileged:
        problem = rules.script_name_problem(name)
        if problem:
            raise ConfigError(f"scripts.privileged: {problem}")
    if config.server.workers > 1 and not url:
        raise ConfigError(f"server.workers is {config.server.workers}: several processes share their channels "
                          "through Redis, so broker.url (ENGINE_BROKER_URL) must be set")


def render_yaml() -> str:
    """`config.yaml` with every key at its default and its help as a comment."""
    lines = ["# rtengine configuration: every key, its default, and what it does.",
             "# Each key can be overridden by an ENGINE_<SECTION>_<KEY> environment variable.", ""]
    current = None
    for s in settings():
        section, name = s.key.split(".")
        if section != current:
            if current is not None:
                lines.append("")
            lines.append(f"{section}:")
            current = section
        lines.append(f"  # {s.help} ({s.env_var})")
        lines.append(f"  {name}: {yaml.safe_dump(s.default, default_flow_style=True).splitlines()[0]}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m engine.config > config.yaml
    print(render_yaml(), end="")
