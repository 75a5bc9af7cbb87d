"""An aiohttp request turned into the `req` object a JS handler receives (as JSON text)."""

from __future__ import annotations

import email.parser
import email.policy
import json
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from engine.errors import HTTPError

_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"


def is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body, or 413 as soon as we know it is over `limits.max_body_bytes`."""
    size = request.content_length
    if size is not None and size > max_bytes:
        raise _too_large(max_bytes, f"{size} bytes")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_bytes, "larger than that") from None


def _too_large(limit: int, what: str) -> HTTPError:
    return HTTPError(413, "body_too_large",
                     f"the request body is {what}; the limit is {limit} bytes (limits.max_body_bytes)")


def parse_form(content_type: str, full_content_type: str, body: bytes) -> dict[str, str]:
    """Form fields as strings (first value of a repeated name wins); 400 for a broken multipart body."""
    fields: dict[str, str] = {}
    if content_type == _FORM:
        for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            fields.setdefault(k, v)
    elif content_type == _MULTIPART:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + full_content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
        )
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


def js_request(request: web.Request, body: bytes, params: dict[str, str]) -> tuple[str, bool]:
    """JSON text of `req`, and whether the handler should get `req.json` parsed from the body."""
    headers: dict[str, str] = {}
    for k, v in request.headers.items():
        k = k.lower()
        headers[k] = f"{headers[k]}, {v}" if k in headers else v
    query: dict[str, str] = {}
    for k, v in request.query.items():
        query.setdefault(k, v)
    content_type = request.content_type if body else ""
    req: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "query": query,
        "form": parse_form(content_type, request.headers.get("Content-Type", ""), body) if body else {},
        "headers": headers,
        "body": body.decode("utf-8", "replace"),
        "params": params,
    }
    return json.dumps(req), bool(body) and is_json_type(content_type)
