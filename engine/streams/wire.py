"""The wire formats as pure functions: (data, id, event) -> bytes, framed once for every reader.

aiohttp sends a length-less HTTP/1.1 response chunked, so each event is stored already framed as one
chunk: a publish then costs one `transport.write` of shared bytes per connection.
"""

from __future__ import annotations


def encode_event(data: str, event_id: str | None = None, event: str | None = None) -> bytes:
    """One SSE event: `id:`, optional `event:`, the data split into `data:` lines on CR, LF and CRLF.
    Done with `str.replace` in C, not a split into a list: a message of a million line breaks is
    still a few milliseconds."""
    if "\r" in data:
        data = data.replace("\r\n", "\n").replace("\r", "\n")
    head = (f"id: {event_id}\n" if event_id is not None else "") + (f"event: {event}\n" if event is not None else "")
    return (head + "data: " + data.replace("\n", "\ndata: ") + "\n\n").encode("utf-8", "replace")


def encode_retry(ms: int) -> bytes:
    return f"retry: {ms}\n\n".encode()


def encode_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked, unfragmented WebSocket frame from the server (RFC 6455 5.2): text by default.
    Built here, once per message, so fan-out writes the same bytes to every socket; aiohttp reads
    the clients' frames and answers the protocol's own."""
    n = len(payload)
    head = 0x80 | opcode
    if n < 126:
        return bytes((head, n)) + payload
    if n < 65536:
        return bytes((head, 126)) + n.to_bytes(2, "big") + payload
    return bytes((head, 127)) + n.to_bytes(8, "big") + payload
