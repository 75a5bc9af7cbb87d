"""An aiohttp request turned into the `req` object a JS handler receives (as JSON text)."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from engine.errors import HTTPError
from engine.http.keys import CONFIG

_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
_PARSER = email.parser.BytesParser(policy=email.policy.HTTP)

MAX_FORM_FIELDS = 1000  # fields (or multipart parts) one form body may hold: parsing costs per field
# Parsing a form larger than this, or a multipart body with more `--` lines than that, would hold the
# event loop for milliseconds (a multipart part costs ~0.1 ms): it runs on a thread instead.
OFF_LOOP_BYTES = 64 * 1024
OFF_LOOP_DASH_LINES = 32


def is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body; 413 as soon as we know it is over `limits.max_body_bytes`, 408 (and the
    connection closed) if it has not all arrived within `server.body_timeout_seconds`."""
    size = request.content_length
    if size is not None and size > max_bytes:
        raise _too_large(max_bytes, f"{size} bytes")
    seconds = request.app[CONFIG].server.body_timeout_seconds
    try:
        if request.content.is_eof():  # all of it is here already (the common case): no timer needed
            return await request.read()
        async with asyncio.timeout(seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_bytes, "larger than that") from None
    except TimeoutError:
        raise HTTPError(408, "body_timeout", f"the request body did not arrive in full within {seconds:g} s "
                        "(server.body_timeout_seconds)", {"Connection": "close"}) from None


def _too_large(limit: int, what: str) -> HTTPError:
    return HTTPError(413, "body_too_large",
                     f"the request body is {what}; the limit is {limit} bytes (limits.max_body_bytes)")


def _headers(full_content_type: str) -> bytes:
    return b"Content-Type: " + full_content_type.encode("latin-1", "replace") + b"\r\n\r\n"


def count_fields(content_type: str, full_content_type: str, body: bytes) -> int:
    """At most how many fields the form holds, counted without parsing it: the `&`s of a urlencoded
    body, the boundary's occurrences in a multipart one (every part starts with it; so does the end)."""
    if content_type == _FORM:
        return body.count(b"&") + 1
    if content_type == _MULTIPART:
        boundary = _PARSER.parsebytes(_headers(full_content_type), headersonly=True).get_boundary()
        if boundary:  # the parser reads the body as ASCII with surrogate escapes: the same bytes back
            return max(body.count(b"--" + boundary.encode("utf-8", "surrogateescape")) - 1, 0)
    return 0


def check_field_count(content_type: str, full_content_type: str, body: bytes) -> None:
    """413 for a form of more than `MAX_FORM_FIELDS` fields, before any of it is parsed."""
    n = count_fields(content_type, full_content_type, body)
    if n > MAX_FORM_FIELDS:
        raise HTTPError(413, "too_many_fields", f"the {content_type} body holds more than {MAX_FORM_FIELDS} "
                        f"fields ({n} counted); a form may hold at most {MAX_FORM_FIELDS}")


def parse_form(content_type: str, full_content_type: str, body: bytes) -> dict[str, str]:
    """Form fields as strings (first value of a repeated name wins); 413 for more than `MAX_FORM_FIELDS`
    fields, 400 for a broken multipart body."""
    check_field_count(content_type, full_content_type, body)
    fields: dict[str, str] = {}
    if content_type == _FORM:
        for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            fields.setdefault(k, v)
    elif content_type == _MULTIPART:
        msg = _PARSER.parsebytes(_headers(full_content_type) + body)
        if not msg.is_multipart() or msg.defects or not msg.get_boundary():
            problem = "; ".join(type(d).__name__ for d in msg.defects) or "no boundary or no parts"
            raise HTTPError(400, "bad_form", f"the multipart/form-data body is malformed ({problem})")
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str):
                raise HTTPError(400, "bad_form", "a multipart/form-data part has no name")
            payload = part.get_payload(decode=True)
            value = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
            fields.setdefault(name, value)
    return fields


def form_json(content_type: str, full_content_type: str, body: bytes) -> str:
    """`req.form` as JSON text, "" when the body is no form: safe to run on a thread (no request object)."""
    if content_type not in (_FORM, _MULTIPART):
        return ""
    return json.dumps(parse_form(content_type, full_content_type, body))


def parse_off_loop(content_type: str, body: bytes) -> bool:
    """Would parsing this form hold the event loop too long? Lines starting with `--` bound a
    multipart body's parts, nested ones included, whatever their boundaries."""
    if content_type == _MULTIPART:
        return len(body) > OFF_LOOP_BYTES or body.count(b"\n--") + body.count(b"\r--") > OFF_LOOP_DASH_LINES
    return content_type == _FORM and len(body) > OFF_LOOP_BYTES


# Flags for the prelude's `handle`: strings reach JS as C strings, so NUL needs JSON around it.
PATH_IS_JSON, BODY_IS_JSON, PARSE_JSON, RAW_HEADERS = 1, 2, 4, 8


def js_request(
    request: web.Request, body: bytes, params: dict[str, str], form: str | None = None
) -> tuple[Any, ...]:
    """The arguments of the prelude's `handle` for an aiohttp request (see `js_request_parts`)."""
    headers = b"\n".join(chain.from_iterable(request.raw_headers)).decode("utf-8", "replace")
    return js_request_parts(request.method, request.path, request.rel_url.raw_query_string, headers, body,
                            request.content_type if body else "", params, form,
                            request.headers.get("Content-Type", "") if body else "")


def js_request_parts(
    method: str, path: str, query: str, headers: str, body: bytes, content_type: str, params: dict[str, str],
    form: str | None, full_content_type: str = "", raw_headers: bool = False,
) -> tuple[Any, ...]:
    """The arguments of the prelude's `handle`: `req` in raw pieces, assembled in JS (off the GIL).

    Headers travel as one newline-separated string (HTTP forbids newlines inside them), the query
    string still encoded; `flags` says which pieces are JSON-encoded and whether to set `req.json`.
    `form` is `form_json`'s answer when the caller already has it (parsed on a thread), else parsed here.
    `raw_headers`: `headers` are the head's "Name: value" CRLF lines instead (lean_route.py checked them).
    """
    flags = RAW_HEADERS if raw_headers else 0
    if "\x00" in path:
        path, flags = json.dumps(path), flags | PATH_IS_JSON
    text = ""
    if body:
        if form is None:
            form = form_json(content_type, full_content_type, body)
        if is_json_type(content_type):
            flags |= PARSE_JSON
        text = body.decode("utf-8", "replace")
        if "\x00" in text:
            text, flags = json.dumps(text), flags | BODY_IS_JSON
    return (method, path, query, headers, text, json.dumps(params) if params else "", form or "", flags)
