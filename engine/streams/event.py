"""One message as every transport carries it: built once per message and per wire format, shared by
every reader of that format.

A reader's transport fixes its format: `sse` (an SSE event in an HTTP/1.1 chunk), `ndjson` (an
envelope line in a chunk), `ws` (a WebSocket text frame of the data alone, as seed-000 clients
`JSON.parse(event.data)`), `ws.v1` (a text frame of the envelope, for the `rtengine.v1`
subprotocol) and `poll` (the envelope alone, for a long-poll answer to gather). The envelope is
`{"id", "event", "data"}`; `data` is the JSON value a script sent, or the string it sent.
"""

from __future__ import annotations

import json

from engine import rules
from engine.streams.wire import chunk, encode_event, ws_frame

SSE, NDJSON, WS, WS_V1, POLL = "sse", "ndjson", "ws", "ws.v1", "poll"
FORMATS = (SSE, NDJSON, WS, WS_V1, POLL)
_ENGINE_EVENTS = frozenset(rules.ENGINE_EVENTS)


class Event:
    """`id` is None for what is not numbered (a message to one connection, an engine notice);
    `json`: `data` is the JSON text of a value (checked as such), not a string to quote."""

    __slots__ = ("id", "name", "data", "json", "sse", "_frames")

    def __init__(self, data: str, event_id: str | None = None, name: str | None = None, is_json: bool = False) -> None:
        self.id = event_id
        self.name = name
        self.data = data
        self.json = is_json
        self.sse = chunk(encode_event(data, event_id, name))  # nearly every reader reads SSE: made at once
        self._frames: dict[str, bytes] | None = None

    @property
    def size(self) -> int:
        """What it counts for against history bounds: its SSE bytes and its data, both kept."""
        return len(self.sse) + len(self.data)

    def envelope(self) -> str:
        data = self.data if self.json else json.dumps(self.data)
        return f'{{"id":{json.dumps(self.id)},"event":{json.dumps(self.name)},"data":{data}}}'

    def frame(self, fmt: str) -> bytes:
        """The bytes for a reader of `fmt`; b"" for a raw WebSocket when the engine's own notices
        (connected, reset, close) have no place among the data frames."""
        if fmt == SSE:
            return self.sse
        frames = self._frames
        if frames is None:
            frames = self._frames = {}
        framed = frames.get(fmt)
        if framed is None:
            framed = frames[fmt] = self._build(fmt)
        return framed

    def _build(self, fmt: str) -> bytes:
        if fmt == WS:
            return b"" if self.name in _ENGINE_EVENTS else ws_frame(self.data.encode("utf-8", "replace"))
        envelope = self.envelope().encode("utf-8", "replace")
        if fmt == WS_V1:
            return ws_frame(envelope)
        if fmt == NDJSON:
            return chunk(envelope + b"\n")
        return envelope  # POLL: gathered into one answer


def notice(name: str, payload: dict[str, object]) -> Event:
    """An engine notice (`connected`, `reset`, `close`): JSON data, no id."""
    return Event(json.dumps(payload), None, name, True)
