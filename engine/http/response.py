"""JS handler results turned into aiohttp responses, and the one JSON error shape."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from engine.errors import ScriptBadResponse

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# What aiohttp's header writer refuses (controls but tab, and DEL: it would drop the connection
# mid-response), and lone surrogates (which it drops, or fails to encode): caught before, as a 500.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
# Framing is the server's job: a script cannot set these.
_FRAMING = {"content-length", "transfer-encoding", "connection"}
_NO_BODY = {204, 304}


def js_response(script: str, record: dict[str, Any]) -> web.Response:
    """`{s, b, t, h}` from the prelude (already type-checked there) as a response; bad headers raise."""
    status: int = record["s"]
    content_type = record.get("t")
    if content_type is not None and (bad := _BAD_VALUE.search(content_type)):
        raise ScriptBadResponse(script, f"contentType contains {_describe(bad.group())}")
    if "h" not in record and content_type is not None and status not in _NO_BODY:  # the common case
        return web.Response(status=status, body=record["b"].encode("utf-8", "replace"),
                            headers={"Content-Type": content_type})
    headers = checked_headers(script, record)
    if content_type is not None:
        headers["Content-Type"] = content_type
    elif "Content-Type" not in headers:
        headers["Content-Type"] = "text/plain; charset=utf-8"
    body = b"" if status in _NO_BODY else record.get("b", "").encode("utf-8", "replace")
    return web.Response(status=status, body=body, headers=headers)


def checked_headers(script: str, record: dict[str, Any]) -> CIMultiDict[str]:
    """A handler's headers as HTTP can carry them (bad ones raise); framing is the server's."""
    headers: CIMultiDict[str] = CIMultiDict()
    content_type = record.get("t")
    if content_type is not None and (bad := _BAD_VALUE.search(content_type)):
        raise ScriptBadResponse(script, f"contentType contains {_describe(bad.group())}")
    for name, value in record.get("h", {}).items():
        if not _TOKEN.match(name):
            raise ScriptBadResponse(script, f"header name {name!r} is not a valid HTTP token")
        if bad := _BAD_VALUE.search(value):
            raise ScriptBadResponse(script, f"header {name} contains {_describe(bad.group())}")
        if name.lower() not in _FRAMING:
            headers.add(name, value)
    return headers


def _describe(char: str) -> str:
    if char in "\r\n":
        return "a line break"
    what = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"{what} (U+{ord(char):04X}), which HTTP headers cannot carry"


def error_response(
    status: int, code: str, message: str, request_id: str, headers: dict[str, str] | None = None,
    graphql: bool = False,
) -> web.Response:
    """The engine's one error shape; `graphql` adds the standard `errors` list for GraphQL clients."""
    body: dict[str, object] = {"error": {"code": code, "message": message, "request_id": request_id}}
    if graphql:
        body["errors"] = [{"message": message}]
    response = web.json_response(body, status=status, headers=headers)
    if headers and headers.get("Connection", "").lower() == "close":
        response.force_close()  # so aiohttp does close it (a 408 leaves the connection mid-request)
    return response
