"""The engine's error tree; `engine.http.middleware` turns these into JSON responses."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(EngineError):
    """A configuration value is missing or wrong; the message names the key."""


class ScriptError(EngineError):
    """A script failed: a throw, a syntax error, a bad value handed to the host."""

    def __init__(self, script: str, message: str, stack: str = "", location: str = "") -> None:
        super().__init__(message)
        self.script = script
        self.message = message
        self.stack = stack
        self.location = location  # "name.js:12" when the engine could tell
        self.status: int | None = None  # a 4xx the script's Error carried (`status`), for a refusal

    def describe(self) -> str:
        """One line for logs: where, then what."""
        where = self.location or self.script
        return f"{where}: {self.message}"


class ScriptTimeout(ScriptError):
    """A call ran past `limits.script_time_ms` (or a pending Promise past `limits.handler_timeout_ms`)."""


class ScriptMemoryError(ScriptError):
    """A call ran past `limits.script_memory_mb`."""


class RouteConflict(EngineError):
    """Two scripts claim the same route or stream path."""


class HTTPError(EngineError):
    """An error that becomes a JSON response with this status and code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class ScriptBadResponse(ScriptError):
    """A handler returned something that is not a response (nothing, a number, a bad status...)."""


class ScriptGone(ScriptError):
    """The script's context was closed (reloaded or deleted) before the call could run."""


class ScriptBusy(ScriptError):
    """`limits.max_pending_calls` calls already wait on the script: this one is refused at once."""


class ScriptBadCommand(ScriptError):
    """What the script's JS handed back is not what the prelude makes (a tampered built-in): the call
    that produced it fails, and nothing it asked for is applied."""


class BrokerUnavailable(EngineError):
    """The broker could not reach what it needs (Redis) at start, and may not start without it."""
