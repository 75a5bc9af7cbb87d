"""Many readers for bench/stall_bench.py, in their own process: each connection sends one request
head (`{i}` in the path is the connection's number, so each can ask for something different) and
then reads and drops whatever comes, as fast as it comes.

    python bench/stall_clients.py PORT COUNT PATH_TEMPLATE

Prints READY once every connection has its response head, then reads until killed.
"""

from __future__ import annotations

import asyncio
import sys


async def reader(port: int, path: str, ready: asyncio.Queue[int]) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    await r.readuntil(b"\r\n\r\n")
    await ready.put(1)
    while await r.read(1 << 16):
        pass


async def main(port: int, count: int, template: str) -> None:
    ready: asyncio.Queue[int] = asyncio.Queue()
    tasks = [asyncio.create_task(reader(port, template.replace("{i}", str(i)), ready)) for i in range(count)]
    for _ in range(count):
        await ready.get()
    print("READY", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
