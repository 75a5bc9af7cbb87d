"""`GET <stream path>` as Server-Sent Events: headers, `retry:`, replay from Last-Event-ID, then live.

The handler only sets a reader up and waits for it to end; events reach the socket from the
registry's fan-out, never through this coroutine.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from engine.config import StreamsConfig
from engine.errors import HTTPError
from engine.streams.registry import Stream, StreamRegistry
from engine.streams.wire import chunk, encode_event, encode_retry

log = logging.getLogger("engine.streams")


def sse_headers(config: StreamsConfig, request_id: str) -> dict[str, str]:
    headers = {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Request-Id": request_id,
    }
    if config.cors_origin:
        headers["Access-Control-Allow-Origin"] = config.cors_origin
    return headers


async def serve_sse(
    request: web.Request, stream: Stream, registry: StreamRegistry, config: StreamsConfig, request_id: str
) -> web.StreamResponse:
    if registry.full():
        raise HTTPError(503, "too_many_connections",
                        f"the server already has {registry.max_connections} stream readers "
                        "(streams.max_connections); retry later")
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId") or None
    response = web.StreamResponse(status=200, headers=sse_headers(config, request_id))
    await response.prepare(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        return response
    # From attach to the last replayed event there is no await: no live event can slip in between,
    # so the reader sees history then live with no gap and no duplicate.
    conn, replay = registry.attach(stream, transport, last_event_id)
    try:
        transport.write(chunk(encode_retry(config.retry_ms)))
        if replay.reset is not None:
            notice = json.dumps({"reason": replay.reset, "lastEventId": last_event_id})
            transport.write(chunk(encode_event(notice, event="reset")))
        for framed in replay.events:
            transport.write(framed)
        await conn.closed
    finally:
        registry.detach(conn)
    return response


async def heartbeat(registry: StreamRegistry, seconds: float) -> None:
    """Ping every reader every `seconds`, which also finds readers whose client is gone."""
    while True:
        await asyncio.sleep(seconds)
        registry.heartbeat()
