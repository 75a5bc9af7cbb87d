"""A small real SSE reader over aiohttp's client, for tests: parses events as a browser would."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp


@dataclass
class Event:
    data: str
    id: str | None = None
    event: str | None = None


@dataclass
class SSEReader:
    response: aiohttp.ClientResponse
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    last_id: str | None = None
    _buffer: bytes = b""

    async def readline(self) -> bytes:
        """One line with its end, however long (aiohttp's own readline stops at 512 KiB); b"" at the end."""
        while b"\n" not in self._buffer:
            more = await self.response.content.read(65536)
            if not more:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += more
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    async def next(self, timeout: float = 5.0) -> Event:
        """The next event (comments and retry lines are recorded, not returned)."""
        return await asyncio.wait_for(self._next(), timeout)

    async def take(self, n: int, timeout: float = 5.0) -> list[Event]:
        return [await self.next(timeout) for _ in range(n)]

    async def _next(self) -> Event:
        data: list[str] = []
        event_id = name = None
        while True:
            raw = await self.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
            if line == "":
                if data or name or event_id:
                    if event_id is not None:
                        self.last_id = event_id
                    return Event("\n".join(data), event_id, name)
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "data":
                data.append(value)
            elif key == "id":
                event_id = value
            elif key == "event":
                name = value
            elif key == "retry":
                self.retry = int(value)

    async def ended(self, timeout: float = 5.0) -> bool:
        """Wait until the server ends the stream."""
        async def drain() -> None:
            while await self.readline():
                pass
        await asyncio.wait_for(drain(), timeout)
        return True
