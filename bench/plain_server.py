"""The baseline for bench/http_bench.py: a plain aiohttp handler returning the same bytes as the JS route."""

import sys

from aiohttp import web

BODY = b"Hello, bench!\n"


async def handler(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain", charset="utf-8")


app = web.Application()
app.router.add_get("/bench", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=lambda *_: None)
