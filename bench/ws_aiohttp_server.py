"""A plain aiohttp WebSocket broadcast server for bench/ws_fanout_bench.py, written the usual way:
one `WebSocketResponse` per reader kept in a set, and a publish that does `await ws.send_str(data)`
for each of them in turn. No heartbeat, no compression, no access log.

    python bench/ws_aiohttp_server.py PORT [uvloop|asyncio]

`GET /events` (WebSocket) is a reader; `GET /publish?n=&size=` sends n messages of `size` bytes
whose data starts "T<epoch ms>|", as the other servers of the benchmark do.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp import WSMsgType, web

from engine.cli import loop_factory

PAD = "x" * 4096
clients: set[web.WebSocketResponse] = set()


async def events(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    clients.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        clients.discard(ws)
    return ws


async def publish(request: web.Request) -> web.Response:
    n, size = int(request.query.get("n", "1")), int(request.query.get("size", "200"))
    for _ in range(n):
        head = f"T{int(time.time() * 1000)}|"
        data = head + PAD[: size - len(head)]
        for ws in list(clients):
            try:
                await ws.send_str(data)
            except ConnectionError:
                clients.discard(ws)
    return web.Response(text="ok")


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_get("/events", events)
    app.router.add_get("/publish", publish)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with asyncio.Runner(loop_factory=loop_factory(sys.argv[2] if len(sys.argv) > 2 else "uvloop")) as r:
        r.run(main(int(sys.argv[1])))
