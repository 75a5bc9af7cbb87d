"""aiohttp's access log with the value of every `token` (and `access_token`) query parameter redacted."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from urllib.parse import unquote_plus

from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

REDACTED = "[redacted]"
SECRET_PARAMS = frozenset({"token", "access_token"})
_SEPARATED = re.compile(r"([&;])")  # split keeping the separators: pairs and separators alternate
_QUERY = re.compile(r"\?([^\s#]*)")  # a URL's query, in a request line or a Referer


def _redact_pair(pair: str) -> str:
    name, eq, _ = pair.partition("=")
    # Names compared as the server reads them (decoded: `%74oken` is `token` too), in any case.
    if eq and unquote_plus(name).strip().lower() in SECRET_PARAMS:
        return f"{name}={REDACTED}"
    return pair


def _redact_query(match: re.Match[str]) -> str:
    return "?" + "".join(_redact_pair(part) for part in _SEPARATED.split(match.group(1)))


def redact(text: str) -> str:
    """`text` with the value of every secret query parameter of every URL in it replaced."""
    return _QUERY.sub(_redact_query, text) if "?" in text else text


class RedactingAccessLogger(AccessLogger):
    """`AccessLogger` whose every field (the request line, a Referer) goes through `redact`.

    aiohttp looks its `_format_*` methods up on `AccessLogger` itself, so the fields are redacted
    where they are gathered, once formatted.
    """

    def _format_line(
        self, request: BaseRequest, response: StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        return [(key, redact(value) if isinstance(value, str) else value)
                for key, value in super()._format_line(request, response, time)]


def lean_line(peer: str, method: str, target: str, status: int, size: int, headers: str) -> str:
    """The line aiohttp's default format (`%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"`) gives,
    redacted the same way, for a request served below aiohttp (`headers`: its "Name: value" lines)."""
    named: dict[str, str] = {}
    for line in headers.split("\r\n"):
        name, _, value = line.partition(":")
        named.setdefault(name.lower(), value.strip(" \t"))
    when = time.strftime("[%d/%b/%Y:%H:%M:%S %z]")
    return (f'{peer} {when} "{redact(f"{method} {target} HTTP/1.1")}" {status} {size} '
            f'"{redact(named.get("referer", "-"))}" "{redact(named.get("user-agent", "-"))}"')
