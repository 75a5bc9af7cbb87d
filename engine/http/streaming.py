"""A route whose handler returned an iterator (an `async function*`, a generator, or `{body:
iterator}`): each value is written as it comes, and the next one is asked for only once the client
has taken the last (backpressure), so a slow client slows its own generator and nothing else.

The format: raw text or bytes when the handler set a `text/*`, CSV or binary content type; SSE when
the client accepts `text/event-stream` (a yielded `{event, id, data, retry}` sets those fields);
NDJSON otherwise, one JSON value per line. A throw mid-stream ends the response with a last error
item; the client leaving, a reload, a step past its time limit or the whole response past
`limits.stream_response_seconds` end it too, and the iterator's `return()` runs so its `finally` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from engine.config import Config
from engine.errors import HTTPError, ScriptError, ScriptGone
from engine.http.response import checked_headers
from engine.http.script_errors import classify, log_script_error
from engine.sandbox.context import ScriptContext
from engine.streams.registry import StreamRegistry
from engine.streams.wire import encode_comment, encode_event

log = logging.getLogger("engine.http")

SSE, NDJSON, RAW = "sse", "ndjson", "raw"
MAX_BATCH = 256  # values one step may bring (and at most about stream_low_water_bytes of them)
FRAME_ON_THREAD = 64 * 1024  # characters of values past which they are framed off the loop
_RAW_TYPES = ("text/", "application/octet-stream", "application/csv", "image/", "audio/", "video/")


def format_of(request: web.Request, content_type: str | None) -> str:
    if content_type is not None and content_type.lower().startswith(_RAW_TYPES) \
            and not content_type.lower().startswith("text/event-stream"):
        return RAW
    accept = request.headers.get("Accept", "")
    if "text/event-stream" in accept or (content_type or "").lower().startswith("text/event-stream"):
        return SSE
    return NDJSON


def frame(fmt: str, item: dict[str, Any]) -> bytes:
    """One yielded value as the wire has it."""
    if "x" in item:
        raw = item["x"].encode("latin-1")
        return raw if fmt == RAW else frame(fmt, {"t": item["x"]})
    text: str = item.get("t", item.get("j", ""))
    if fmt == RAW:
        return text.encode("utf-8", "replace")
    if fmt == SSE:
        head = f"retry: {item['rty']}\n" if "rty" in item else ""
        return head.encode() + encode_event(text, item.get("eid"), item.get("ev"))
    return (text if "j" in item else json.dumps(text)).encode("utf-8", "replace") + b"\n"


def error_item(fmt: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}})
    if fmt == SSE:
        return encode_event(body, None, "error")
    if fmt == NDJSON:
        return body.encode() + b"\n"
    return b""  # raw: the response just ends


async def serve_stream(request: web.Request, ctx: ScriptContext, record: dict[str, Any], rid: str, config: Config,
                       registry: StreamRegistry) -> web.StreamResponse:
    """Drive the iterator `record["g"]` until it ends, fails, or its client leaves."""
    gid: int = record["g"]
    fmt = format_of(request, record.get("t"))
    try:
        headers = checked_headers(ctx.name, record)
    except ScriptError:
        _stop_later(ctx, gid)
        raise
    headers["Content-Type"] = record.get("t") or {
        SSE: "text/event-stream; charset=utf-8", NDJSON: "application/x-ndjson; charset=utf-8"}.get(fmt, "text/plain")
    headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-Id": rid})
    if request.method == "HEAD" or record["s"] in (204, 304):  # no body may follow: no value is taken
        _stop_later(ctx, gid)
        return web.Response(status=record["s"], headers=headers)
    if registry.full():
        _stop_later(ctx, gid)
        raise HTTPError(503, "too_many_connections", f"the server already has {registry.max_connections} readers "
                        "and streaming responses (streams.max_connections); retry later")
    registry.connection_count += 1
    retiring = asyncio.ensure_future(ctx.retiring.wait())
    # The version stays up while the response runs (a retiring one waits up to handler_timeout_ms),
    # so its iterator's `finally` can run when the response ends.
    unhold = ctx.hold(counted=False)
    response = web.StreamResponse(status=record["s"], headers=headers)
    if request.version < (1, 1):
        response.force_close()  # no chunks in HTTP/1.0: the body ends when the connection does
    ended = False  # the iterator finished by itself (nothing to stop)
    try:
        await response.prepare(request)
        if request.transport is not None:
            request.transport.set_write_buffer_limits(high=config.limits.stream_low_water_bytes)
        deadline = time.monotonic() + record.get("ms", config.limits.stream_response_seconds)
        heartbeat = config.streams.heartbeat_seconds
        sse = fmt == SSE
        budget = config.limits.stream_low_water_bytes
        while not ended:
            if ctx.retiring.is_set():  # a reload or removal: the response ends after the item it is on
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await response.write(error_item(fmt, "stream_too_long", "the response ran past its time "
                                                "(limits.stream_response_seconds, or the handler's maxSeconds)"))
                break
            try:
                items = await _next_items(ctx, gid, sse, budget, retiring, heartbeat, remaining, response, fmt)
            except ScriptGone:
                ended = True  # reloaded or removed: ends cleanly after the last item
                break
            except ScriptError as e:  # a limit: the iterator may live on; `stop` ends it below
                await _fail(response, fmt, request, rid, e)
                break
            if items is None:
                continue  # the deadline or a reload: dealt with at the top of the loop
            values = [item for item in items if "d" not in item and "e" not in item and "bad" not in item]
            # Backpressure: aiohttp's write waits while the transport is paused (more than
            # `low_water` unsent), so the next values are asked for only once the client reads.
            if values:
                await response.write(await _framed(fmt, values))
            last = items[-1]
            if "d" in last:
                ended = True
            elif "e" in last or "bad" in last:
                ended = "e" in last  # it threw (done); a bad value leaves it to `stop`
                await _fail(response, fmt, request, rid, ctx.failure(last))
                break
        await response.write_eof()
    finally:
        retiring.cancel()
        registry.connection_count -= 1
        if ended:
            unhold()
        else:
            _stop_later(ctx, gid, unhold)
    return response


async def _next_items(ctx: ScriptContext, gid: int, sse: bool, budget: int, retiring: asyncio.Future[Any],
                      heartbeat: float, remaining: float, response: web.StreamResponse,
                      fmt: str) -> list[dict[str, Any]] | None:
    """The generator's next values; heartbeats while they take long; None if the deadline or a
    reload came first."""
    step = asyncio.ensure_future(ctx.step(gid, sse, MAX_BATCH, budget))
    deadline = time.monotonic() + remaining
    try:
        while True:
            done, _ = await asyncio.wait({step, retiring}, timeout=min(heartbeat, max(deadline - time.monotonic(), 0)),
                                         return_when=asyncio.FIRST_COMPLETED)
            if step in done:
                return step.result()
            if retiring in done or time.monotonic() >= deadline:
                return None
            await response.write(encode_comment("ping") if sse else (b"\n" if fmt == NDJSON else b""))
    finally:
        # Let go of a step still waiting (the client left, a reload, the deadline): what the generator
        # awaits no longer holds the response, its place, or a retiring version.
        if not step.done():
            step.cancel()


async def _framed(fmt: str, values: list[dict[str, Any]]) -> bytes:
    """The wire bytes of a step's values; built on a thread when they are large (1 MiB of line
    breaks is some 7 MB of SSE, tens of milliseconds of work the loop should not wait on)."""
    size = sum(len(v.get("t", v.get("j", v.get("x", "")))) for v in values)
    if size < FRAME_ON_THREAD:
        return b"".join(frame(fmt, v) for v in values)
    return await asyncio.to_thread(lambda: b"".join(frame(fmt, v) for v in values))


async def _fail(response: web.StreamResponse, fmt: str, request: web.Request, rid: str, e: ScriptError) -> None:
    log_script_error(f"{request.method} {request.path} (streaming)", rid, e)
    _, code, message = classify(e)
    await response.write(error_item(fmt, code, f"{message} (request id {rid})"))


def _stop_later(ctx: ScriptContext, gid: int, then: Callable[[], None] | None = None) -> None:
    """Run the iterator's return() without holding anyone up (the client may be gone already)."""
    task = asyncio.ensure_future(_stop(ctx, gid))
    if then is not None:
        task.add_done_callback(lambda _: then())
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)


_stopping: set[asyncio.Task[None]] = set()


async def _stop(ctx: ScriptContext, gid: int) -> None:
    try:
        await ctx.stop(gid)
    except ScriptGone:
        pass
    except ScriptError as e:
        log.warning("%s: a streaming response's return() failed: %s", ctx.name, e.describe())
