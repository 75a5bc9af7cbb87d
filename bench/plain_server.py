"""The baseline for bench/http_bench.py: a plain aiohttp handler returning the same bytes as the JS route."""

import asyncio
import sys

from aiohttp import web

from engine.cli import loop_factory

BODY = b"Hello, bench!\n"


async def handler(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain", charset="utf-8")


app = web.Application()
app.router.add_get("/bench", handler)
# The same event loop as the engine under test (argv[2]: uvloop or asyncio), so the comparison is fair.
loop = loop_factory(sys.argv[2] if len(sys.argv) > 2 else "uvloop")()
asyncio.set_event_loop(loop)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=lambda *_: None, loop=loop)
