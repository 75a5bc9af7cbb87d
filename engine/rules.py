"""The rules a script's registrations and messages follow: checked in JS for a good error at the call,
and again in Python, where they are the boundary (the prelude gets its patterns from here).

Each check returns why a value is refused, or None.
"""

from __future__ import annotations

import re

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Paths the engine serves itself; no script may register or send to them.
RESERVED = (r"^/graphql", r"^/health(/|$)", r"^/metrics(/|$)", r"^/_engine(/|$)")
RESERVED_TEXT = "/graphql*, /health, /metrics, /_engine/*"
# Whitespace (JS's \s, spelled out so both languages mean the same), control characters, '?' and '#'.
# (A backslash too: browsers read a link to `/\\host/x` as one to another site.)
BAD_PATH_CHARS = ("[\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200f\\u2028-\\u202f\\u205f\\u2066-\\u2069\\u3000\\ufeff"
                  "?#\\\\]")  # spaces, controls, and the bidirectional marks that make a name read other than it is
# What a script's name may not hold: what would break a log line or make the name read other than it
# is (plain spaces are fine in a file name).
BAD_NAME_CHARS = "[\\x00-\\x1f\\x7f-\\x9f\\u200e\\u200f\\u2028-\\u202e\\u2066-\\u2069\\ufeff\\\\]"
ROUTE_PATH_MAX = 1024
STREAM_PATH_MAX = 200
# An SSE event name goes on its own `event:` line: short, and nothing that could start another field.
EVENT_NAME = "^[A-Za-z0-9_.:-]{1,64}$"
ENGINE_EVENTS = ("connected", "close", "reset")  # the engine's own events: no script may send one
GRAPHQL_NAME = "^[_A-Za-z][_0-9A-Za-z]*$"
GRAPHQL_NAME_MAX = 128
MAX_LOG_LINE = 16384  # characters; a longer line is cut, and says so
MAX_SDL_CHARS = 65536  # one registerGraphQL* fragment (graphql-core parses it on the event loop)
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_HEADERS = 100  # response headers a handler may set
MAX_HEADER_CHARS = 8192  # one header's name and value together (what clients read as one line)
ENGINE_STREAMS = "/graphql/"  # GraphQL subscriptions' streams: sendSubscriptionMessage only
CONNECTION_ID = "^[0-9a-f]{8}\\.[A-Za-z0-9_-]{16}$"  # this node, then 96 random bits
MAX_REASON = 200  # characters of a closeConnection reason
MAX_NAME = 255  # characters in a script's name, or an asset's path, as a whole
MAX_PART_BYTES = 255  # bytes (UTF-8) in one part of it: NAME_MAX on the file systems the engine runs on
CONTENT_TYPE = r'[\w.+-]+/[\w.+-]+([ \t]*;[ \t]*[\w.+-]+=("[ !#-~]*"|[\w.+-]+))*'  # a media type, as a header holds it
MAX_CONTENT_TYPE = 200
MAX_CONN_QUERY = 2048  # characters of query a hooked stream's reader may bring: its `conn` is kept while it reads

_RESERVED = re.compile("|".join(RESERVED))  # each anchored at the start
_BAD_PATH = re.compile(BAD_PATH_CHARS)
_BAD_NAME = re.compile(BAD_NAME_CHARS)
_EVENT = re.compile(EVENT_NAME)
_GRAPHQL_NAME = re.compile(GRAPHQL_NAME)
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_NOT_IN_CHANNEL = re.compile(r"[%{}*]")
_CONNECTION_ID = re.compile(CONNECTION_ID)
_CONTENT_TYPE = re.compile(CONTENT_TYPE, re.ASCII)


def for_js() -> dict[str, object]:
    """The patterns and bounds the prelude checks with, so both sides apply the same rules."""
    return {"methods": METHODS, "reserved": RESERVED, "reservedText": RESERVED_TEXT, "badPathChars": BAD_PATH_CHARS,
            "routePathMax": ROUTE_PATH_MAX, "streamPathMax": STREAM_PATH_MAX, "eventName": EVENT_NAME,
            "graphqlName": GRAPHQL_NAME, "graphqlNameMax": GRAPHQL_NAME_MAX, "maxLogLine": MAX_LOG_LINE,
            "maxSdlChars": MAX_SDL_CHARS, "engineStreams": ENGINE_STREAMS, "maxHeaders": MAX_HEADERS,
            "maxHeaderChars": MAX_HEADER_CHARS, "connectionId": CONNECTION_ID, "maxReason": MAX_REASON,
            "engineEvents": ENGINE_EVENTS, "maxName": MAX_NAME, "maxPartBytes": MAX_PART_BYTES,
            "badNameChars": BAD_NAME_CHARS,
            "contentType": f"^(?:{CONTENT_TYPE})$", "maxContentType": MAX_CONTENT_TYPE}


def is_reserved(path: str) -> bool:
    return _RESERVED.match(path) is not None


def path_text_problem(path: str, max_length: int) -> str | None:
    """The rules every path follows, routes and streams alike."""
    if not path or path[0] != "/":
        return f"path must be a non-empty string starting with '/', got {path[:60]!r}"
    if len(path) > max_length:
        return f"path is longer than {max_length} characters"
    if _BAD_PATH.search(path):
        return f"path must not contain whitespace, control characters, '?', '#' or '\\', got {path[:60]!r}"
    if is_reserved(path):
        return f"{path} is reserved by the engine ({RESERVED_TEXT})"
    return None


def route_problem(path: str, max_length: int = ROUTE_PATH_MAX) -> str | None:
    """A route path: the text rules, then `{name}` segments and one trailing `*`."""
    problem = path_text_problem(path, max_length)
    if problem:
        return problem
    segments = path.split("/")[1:]
    names: set[str] = set()
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "" and not last:
            return f"path has an empty segment ('//'): {path}"
        if seg == "*":
            if not last:
                return f"'*' may only be the last segment: {path}"
        elif "{" in seg or "}" in seg:
            m = _PARAM.match(seg)
            if not m:
                return f"a parameter must be a whole segment like {{name}}, got '{seg}' in {path}"
            if m.group(1) in names:
                return f"parameter {{{m.group(1)}}} appears twice in {path}"
            names.add(m.group(1))
        elif "*" in seg:
            return f"'*' must be a whole last segment ('/prefix/*'), got '{seg}' in {path}"
    return None


def stream_problem(path: str) -> str | None:
    """A stream path as registered: a plain path, or a pattern of `{name}` segments (no `*`)."""
    problem = route_problem(path, STREAM_PATH_MAX)
    if problem:
        return problem
    if path.endswith("/*"):
        return f"a stream path cannot end in '/*' (a pattern takes {{name}} segments): {path}"
    if "%" in path:
        return f"a stream path must not contain '%' (give it as it reads, not encoded): {path[:60]}"
    return None


def channel_problem(path: str) -> str | None:
    """A concrete channel path (what a reader asks for, what a send names): no pattern syntax, no
    '%' (it would be read twice), no empty segment."""
    problem = path_text_problem(path, STREAM_PATH_MAX)
    if problem:
        return problem
    if _NOT_IN_CHANNEL.search(path):
        return f"a channel path must not contain '%', '{{', '}}' or '*', got {path[:60]!r}"
    if "//" in path:
        return f"path has an empty segment ('//'): {path[:60]}"
    return None


def event_problem(name: str) -> str | None:
    if name in ENGINE_EVENTS:
        own = ", ".join(ENGINE_EVENTS)
        return f"event name {name!r} is the engine's own ({own}): a client could not tell them apart"
    if _EVENT.match(name) and "\n" not in name:  # `$` also matches before a final newline
        return None
    return f"event name must be 1 to 64 of A-Z a-z 0-9 _ . : -, got {name[:60]!r}"


def graphql_name_problem(name: str) -> str | None:
    if (len(name) <= GRAPHQL_NAME_MAX and _GRAPHQL_NAME.match(name) and "\n" not in name
            and not name.startswith("__")):
        return None
    return f"a GraphQL name must be letters, digits and _ (not starting with a digit or __), got {name[:60]!r}"


def connection_id_problem(value: str) -> str | None:
    if _CONNECTION_ID.fullmatch(value):
        return None
    return f"not a connection id: {value[:40]!r}"


def _parts_problem(raw: str, parts: list[str], what: str) -> str | None:
    """The file-system side of a name: no '.', '..' or hidden part, each part within NAME_MAX."""
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return f"{raw[:80]!r} is not {what}: no empty, '.' or '..' part, nothing hidden (starting with '.')"
    try:
        longest = max(len(part.encode("utf-8")) for part in parts)
    except UnicodeEncodeError:  # a lone surrogate: no file can be named that
        return f"{raw[:80]!r} is not {what}: it is not valid Unicode"
    if longest > MAX_PART_BYTES:
        return (f"{raw[:80]!r} is not {what}: a part of it is {longest} bytes in UTF-8, over the file system's "
                f"limit of {MAX_PART_BYTES}")
    return None


def script_name_problem(raw: str) -> str | None:
    """A script's name: a relative `.js` path inside the scripts folder."""
    what = "a script name (a relative path ending in .js, inside the scripts folder)"
    if not raw or len(raw) > MAX_NAME or raw.startswith("/") or not raw.endswith(".js"):
        return f"{raw[:80]!r} is not {what}"
    if _BAD_NAME.search(raw):
        return f"{raw[:80]!r} is not {what}: no control characters, line breaks, bidirectional marks or '\\'"
    return _parts_problem(raw, raw.split("/"), what)


def asset_path_problem(path: str) -> str | None:
    """An asset's path: where it is served, and its file under the assets folder."""
    what = "an asset path (like /img/logo.png)"
    problem = path_text_problem(path, MAX_NAME)
    if problem:
        return f"not {what}: {problem}"
    if "%" in path:
        return f"{path[:80]!r} is not {what}: give it as it reads, not %-encoded"
    return _parts_problem(path, path[1:].split("/"), what)


def content_type_problem(value: str) -> str | None:
    """A media type an asset is served with (it becomes a header: nothing but the type)."""
    if len(value) <= MAX_CONTENT_TYPE and _CONTENT_TYPE.fullmatch(value):
        return None
    return f"the content type must be a media type like text/css or image/png, got {value[:60]!r}"
