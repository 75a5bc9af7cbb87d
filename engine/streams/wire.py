"""The SSE wire format as pure functions: (data, id, event) -> bytes, framed once for every reader.

aiohttp sends a length-less HTTP/1.1 response chunked, so each event is stored already framed as one
chunk: a publish then costs one `transport.write` of shared bytes per connection.
"""

from __future__ import annotations

import re

_LINES = re.compile(r"\r\n|\r|\n")


def encode_event(data: str, event_id: str | None = None, event: str | None = None) -> bytes:
    """One SSE event: `id:`, optional `event:`, the data split into `data:` lines on CR, LF and CRLF."""
    parts = []
    if event_id is not None:
        parts.append(f"id: {event_id}\n")
    if event is not None:
        parts.append(f"event: {event}\n")
    for line in _LINES.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8", "replace")


def encode_retry(ms: int) -> bytes:
    return f"retry: {ms}\n\n".encode()


def encode_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)
