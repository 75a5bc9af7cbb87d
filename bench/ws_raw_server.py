"""The WebSocket ceiling for bench/ws_fanout_bench.py: a bare asyncio Protocol that does the upgrade
handshake by hand, then writes the same pre-built frame bytes (engine.streams.wire.ws_frame, so
identical on the wire to the engine's) to every socket. No limits, no history, no pings; what a
client sends after its handshake (pongs, a close) is read and dropped.

    python bench/ws_raw_server.py PORT [uvloop|asyncio]

`GET /events` with `Upgrade: websocket` is a reader; `GET /publish?n=&size=` sends n messages of
`size` bytes whose data starts "T<epoch ms>|", as bench/raw_sse_server.py does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
import time
from urllib.parse import parse_qs, urlsplit

from engine.cli import loop_factory
from engine.streams.wire import ws_frame

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PAD = "x" * 4096
readers: set[asyncio.Transport] = set()


class Reader(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer: bytes | None = b""  # None once upgraded: the client's frames are dropped

    def data_received(self, data: bytes) -> None:
        if self.buffer is None:
            return
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        lines = self.buffer[:head_end].split(b"\r\n")
        self.buffer = None
        url = urlsplit(lines[0].split(b" ", 2)[1].decode())
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if url.path == "/events" and b"websocket" in headers.get(b"upgrade", b"").lower():
            key = headers.get(b"sec-websocket-key", b"")
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            readers.add(self.transport)
        elif url.path == "/publish":
            q = parse_qs(url.query)
            publish(int(q.get("n", ["1"])[0]), int(q.get("size", ["200"])[0]))
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            self.transport.close()
        else:
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        readers.discard(self.transport)


def publish(n: int, size: int) -> None:
    for _ in range(n):
        head = f"T{int(time.time() * 1000)}|"
        framed = ws_frame((head + PAD[: size - len(head)]).encode())
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
