"""The baseline for bench/stream_bench.py: a plain aiohttp handler writing the same NDJSON lines as the
JS route (bench/stream_scripts/stream.js), one `await response.write(line)` per item of a Python async
generator, on the same event loop as the engine under test (argv[2]: uvloop or asyncio)."""

import asyncio
import json
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from engine.cli import loop_factory

PAD = "x" * 20


async def items(n: int) -> AsyncIterator[dict[str, object]]:
    for i in range(n):
        yield {"i": i, "v": PAD}


async def handler(request: web.Request) -> web.StreamResponse:
    n = min(int(request.query.get("n", "1000")), 10_000_000)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson; charset=utf-8",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    async for item in items(n):
        await response.write(json.dumps(item, separators=(",", ":")).encode() + b"\n")
    await response.write_eof()
    return response


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="ok")


app = web.Application()
app.router.add_get("/items", handler)
app.router.add_get("/ping", ping)
loop = loop_factory(sys.argv[2] if len(sys.argv) > 2 else "uvloop")()
asyncio.set_event_loop(loop)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=lambda *_: None, loop=loop)
