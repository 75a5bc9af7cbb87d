"""Which transport a reader asked for, from its request alone (DESIGN.md, "Transports").

`Upgrade: websocket` is a WebSocket; `?transport=` names one outright (`poll`, `ndjson`, `sse`);
otherwise `Accept` decides: `text/event-stream`, or nothing more specific (curl, seed 002), is SSE,
`application/x-ndjson` is NDJSON, `application/json` is a long-poll. A pure function of three
strings, so the front (which reads raw heads) and aiohttp's handler decide alike.
"""

from __future__ import annotations

from engine.streams.event import NDJSON, POLL, SSE

WEBSOCKET = "websocket"  # its wire format (ws or ws.v1) is settled by the subprotocol
_BY_NAME = {"sse": SSE, "ndjson": NDJSON, "poll": POLL}
_BY_TYPE = {"text/event-stream": SSE, "application/x-ndjson": NDJSON, "application/json": POLL}


def choose(upgrade: str | None, accept: str | None, transport: str | None) -> str | None:
    """The transport's name, or None for a `?transport=` the engine does not have."""
    if upgrade is not None and "websocket" in upgrade.lower():
        return WEBSOCKET
    if transport is not None:
        return _BY_NAME.get(transport)
    if not accept:
        return SSE
    best, best_q = SSE, 0.0
    for item in accept.split(",")[:32]:  # a browser sends a handful; more is not a reader
        media, *params = item.split(";")
        kind = _BY_TYPE.get(media.strip().lower())
        if kind is None:
            continue
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q or (q == best_q and kind == SSE):
            best, best_q = kind, q
    return best
