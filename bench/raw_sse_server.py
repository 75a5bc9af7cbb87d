"""The ceiling for bench/fanout_bench.py: a bare asyncio Protocol that writes the same pre-encoded
SSE bytes (engine.streams.wire, so identical on the wire) to every reader. No limits, no history.

    python bench/raw_sse_server.py PORT [uvloop|asyncio]
"""

from __future__ import annotations

import asyncio
import sys
import time
from urllib.parse import parse_qs, urlsplit

from engine.cli import loop_factory
from engine.streams.wire import chunk, encode_event, encode_retry

HEADERS = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
           b"X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n")
PAD = "x" * 4096
readers: set[asyncio.Transport] = set()
seq = 0


class Reader(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        target = self.buffer.split(b" ", 2)[1].decode()
        url = urlsplit(target)
        if url.path == "/events":
            self.transport.write(HEADERS + chunk(encode_retry(2000)))
            readers.add(self.transport)
        elif url.path == "/publish":
            q = parse_qs(url.query)
            publish(int(q.get("n", ["1"])[0]), int(q.get("size", ["200"])[0]))
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        readers.discard(self.transport)


def publish(n: int, size: int) -> None:
    global seq
    for _ in range(n):
        seq += 1
        head = f"T{int(time.time() * 1000)}|"
        framed = chunk(encode_event(head + PAD[: size - len(head)], f"raw-{seq}"))
        for t in readers:
            t.write(framed)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Reader, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with asyncio.Runner(loop_factory=loop_factory(sys.argv[2] if len(sys.argv) > 2 else "uvloop")) as r:
        r.run(main(int(sys.argv[1])))
