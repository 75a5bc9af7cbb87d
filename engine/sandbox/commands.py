"""What a script asks the engine to do, as typed records, each checked here before anything applies it.

The prelude checks the same rules in JS for a good error at the call; a command that reaches Python
breaking them was forged (a tampered built-in, a bug), and fails the call that produced it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine import rules
from engine.config import LimitsConfig

_HANDLER_MAX = 2**31


class Malformed(Exception):
    """What a script handed back is not what the prelude makes; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Log:
    level: str
    msg: str


@dataclass(slots=True)
class AddRoute:
    method: str
    path: str
    handler: int
    route: Any = field(default=None, compare=False)  # the engine's route for it, once a check made one


@dataclass(slots=True)
class AddStream:
    path: str
    connect: int | None = None  # handler indexes of its hooks
    message: int | None = None
    disconnect: int | None = None
    auth: bool = False
    checked: Any = field(default=None, compare=False)  # what a check off the loop found, and when


@dataclass(frozen=True, slots=True)
class Send:
    data: str
    event: str | None
    paths: tuple[str, ...] | None  # None: every broadcast stream
    json: bool = False  # `data` is a JSON value's text (checked), not a string


@dataclass(slots=True)
class AddField:
    kind: str  # query | mutation | subscription
    name: str
    sdl: str
    handler: int
    types: dict[str, dict[str, str]]  # the non-root types the fragment declares, as JS read them
    document: Any = field(default=None, compare=False)  # the parsed SDL, once a check has parsed it


@dataclass(frozen=True, slots=True)
class SendTo:
    connection: str
    data: str
    event: str | None
    json: bool = False


@dataclass(frozen=True, slots=True)
class Close:
    connection: str
    reason: str


@dataclass(frozen=True, slots=True)
class SendSubscription:
    name: str
    data: str
    json: bool  # data is JSON text of a non-string value


@dataclass(frozen=True, slots=True)
class PutScript:
    name: str
    source: str


@dataclass(frozen=True, slots=True)
class DeleteScript:
    name: str


@dataclass(frozen=True, slots=True)
class PutAsset:
    path: str
    data: bytes
    content_type: str | None  # None: guessed from the path


@dataclass(frozen=True, slots=True)
class DeleteAsset:
    path: str


Command = (Log | AddRoute | AddStream | Send | SendTo | Close | AddField | SendSubscription
           | PutScript | DeleteScript | PutAsset | DeleteAsset)
REGISTRATIONS = (AddRoute, AddStream, AddField)
MANAGEMENT = (PutScript, DeleteScript, PutAsset, DeleteAsset)  # privileged scripts' only (context.py checks)
# A check the engine adds to these, run on the script's thread like them, with the script's context
# and the command: it raises Malformed, and may attach what it worked out (a parsed SDL, a route).
Check = Callable[[Any, Command], None]


class _Reader:
    """Reads one raw command (a dict from JSON), saying precisely what is wrong with it."""

    def __init__(self, raw: Any, index: int) -> None:
        if not isinstance(raw, dict):
            raise Malformed(f"command {index} is not an object")
        self.raw = raw
        self.where = f"command {index} ({str(raw.get('op'))[:20]})"

    def fail(self, why: str) -> Malformed:
        return Malformed(f"{self.where}: {why}")

    def text(self, key: str, optional: bool = False) -> Any:
        value = self.raw.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.fail(f"{key} must be a string")
        return value

    def index(self, key: str) -> int:
        value = self.raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _HANDLER_MAX:
            raise self.fail(f"{key} must be a handler index")
        return value

    def hook(self, key: str) -> int | None:
        """A hook's handler index, or None (-1, or left out) when the script gave none."""
        return None if self.raw.get(key, -1) == -1 else self.index(key)

    def flag(self, key: str) -> bool:
        value = self.raw.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{key} must be true or false")
        return value

    def json_flag(self, data: str) -> bool:
        """`json: true` says `data` is a JSON value's text: envelopes embed it as it is, so it is
        parsed here, on the script's thread, to be sure it is one value and nothing more."""
        flag = self.raw.get("json", False)
        if not isinstance(flag, bool):
            raise self.fail("json must be true or false")
        if flag:
            try:
                json.loads(data)
            except (ValueError, RecursionError):
                raise self.fail("data is not JSON, yet json is true") from None
        return flag

    def event(self) -> str | None:
        event = self.text("event", optional=True)
        if event is not None:
            self.check(rules.event_problem(event))
        return event

    def check(self, problem: str | None) -> None:
        if problem:
            raise self.fail(problem)


def size_problem(data: str, limit: int, what: str = "the message",
                 setting: str = "limits.max_message_bytes") -> str | None:
    """Over `limit` bytes in UTF-8 (as the prelude counts: a lone surrogate is 3 bytes)?"""
    if len(data) * 4 <= limit:
        return None
    size = len(data) if len(data) > limit else len(data.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return None
    return f"{what} is at least {size} bytes; the limit is {limit} ({setting})"


def _types(r: _Reader) -> dict[str, dict[str, str]]:
    raw = r.raw.get("types")
    if not isinstance(raw, dict):
        raise r.fail("types must be an object")
    out: dict[str, dict[str, str]] = {}
    for name, t in raw.items():
        r.check(rules.graphql_name_problem(name))
        if not isinstance(t, dict) or not isinstance(t.get("kind"), str) or not isinstance(t.get("text"), str):
            raise r.fail(f"types.{name} must be {{kind, text}}")
        out[name] = {"kind": t["kind"], "text": t["text"]}
    return out


def read_command(raw: Any, index: int, limits: LimitsConfig) -> Command:
    """One raw command as a typed record, or Malformed saying why it cannot be one."""
    r = _Reader(raw, index)
    op = raw.get("op")
    if op == "log":
        level = r.text("level")
        if level not in rules.LOG_LEVELS:
            raise r.fail(f"level must be one of {', '.join(rules.LOG_LEVELS)}")
        msg = r.text("msg")
        if len(msg) > rules.MAX_LOG_LINE + 20:  # the prelude's own "... (truncated)" mark fits
            msg = msg[: rules.MAX_LOG_LINE] + "... (truncated)"
        return Log(level, msg)
    if op == "send":
        data = r.text("data")
        r.check(size_problem(data, limits.max_message_bytes))
        event = r.event()
        paths = raw.get("paths")
        if paths is not None:
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise r.fail("paths must be a list of strings")
            for p in paths:
                if rules.is_reserved(p):
                    raise r.fail(f"{p[:60]!r} is reserved by the engine; it cannot be sent to")
                r.check(rules.stream_problem(p))
            paths = tuple(dict.fromkeys(paths))  # each stream once, in order
        return Send(data, event, paths, r.json_flag(data))
    if op == "sendto":
        connection = r.text("id")
        r.check(rules.connection_id_problem(connection))
        data = r.text("data")
        r.check(size_problem(data, limits.max_message_bytes))
        return SendTo(connection, data, r.event(), r.json_flag(data))
    if op == "close":
        connection = r.text("id")
        r.check(rules.connection_id_problem(connection))
        reason = r.text("reason")
        if len(reason) > rules.MAX_REASON:
            raise r.fail(f"reason is longer than {rules.MAX_REASON} characters")
        return Close(connection, reason)
    if op == "route":
        method = r.text("method")
        if method not in rules.METHODS:
            raise r.fail(f"method must be one of {', '.join(rules.METHODS)}")
        path = r.text("path")
        r.check(rules.route_problem(path))
        return AddRoute(method, path, r.index("handler"))
    if op == "stream":
        path = r.text("path")
        r.check(rules.stream_problem(path))
        return AddStream(path, r.hook("connect"), r.hook("message"), r.hook("disconnect"), r.flag("auth"))
    if op == "gql":
        kind = r.text("kind")
        if kind not in ("query", "mutation", "subscription"):
            raise r.fail("kind must be query, mutation or subscription")
        name = r.text("name")
        r.check(rules.graphql_name_problem(name))
        sdl = r.text("sdl")
        if len(sdl) > rules.MAX_SDL_CHARS:
            raise r.fail(f"sdl is longer than {rules.MAX_SDL_CHARS} characters")
        return AddField(kind, name, sdl, r.index("handler"), _types(r))
    if op == "gqlsend":
        name = r.text("name")
        r.check(rules.graphql_name_problem(name))
        data = r.text("data")
        r.check(size_problem(data, limits.max_message_bytes))
        as_json = raw.get("json")
        if not isinstance(as_json, bool):
            raise r.fail("json must be true or false")
        return SendSubscription(name, data, as_json)
    if op == "putscript":
        name = r.text("name")
        r.check(rules.script_name_problem(name))
        source = r.text("source")
        r.check(size_problem(source, limits.max_body_bytes, "the source", "limits.max_body_bytes"))
        return PutScript(name, source)
    if op == "delscript":
        name = r.text("name")
        r.check(rules.script_name_problem(name))
        return DeleteScript(name)
    if op == "putasset":
        path = r.text("path")
        r.check(rules.asset_path_problem(path))
        content_type = r.text("type", optional=True)
        if content_type is not None:
            r.check(rules.content_type_problem(content_type))
        text, b64 = r.text("text", optional=True), r.text("b64", optional=True)
        if (text is None) == (b64 is None):
            raise r.fail("give the content as text or b64, one of them")
        try:
            data = text.encode("utf-8") if text is not None else base64.b64decode(b64, validate=True)
        except UnicodeEncodeError:
            raise r.fail("text holds a lone surrogate") from None
        except ValueError:
            raise r.fail("b64 is not base64") from None
        return PutAsset(path, data, content_type)
    if op == "delasset":
        path = r.text("path")
        r.check(rules.asset_path_problem(path))
        return DeleteAsset(path)
    raise r.fail("unknown command")
