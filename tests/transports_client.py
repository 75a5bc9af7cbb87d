"""Clients for the transports other than SSE, as a user would write them: an NDJSON line reader, a
long-poller, and WebSocket helpers over aiohttp's client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient


class NDJSONReader:
    """Reads `{"id","event","data"}` lines from a chunked response; blank lines are heartbeats."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.heartbeats = 0

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            while True:
                line = await self.response.content.readline()
                if not line:
                    raise EOFError("the response ended")
                if line.strip():
                    return json.loads(line)  # type: ignore[no-any-return]
                self.heartbeats += 1
        return await asyncio.wait_for(read(), timeout)

    async def take(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return [await self.next(timeout) for _ in range(n)]


async def ndjson(client: TestClient, path: str, headers: dict[str, str] | None = None,
                 params: dict[str, str] | None = None) -> NDJSONReader:
    resp = await client.get(path, params=params, headers={"Accept": "application/x-ndjson", **(headers or {})})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/x-ndjson"
    return NDJSONReader(resp)


class Poller:
    """A long-poll client: keeps its connection id and cursor from answer to answer."""

    def __init__(self, client: TestClient, path: str, params: dict[str, str] | None = None) -> None:
        self.client, self.path = client, path
        self.params = dict(params or {})
        self.connection_id: str | None = None
        self.cursor: str | None = None
        self.closed: str | None = None

    async def poll(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        params = {**self.params, "transport": "poll"}
        if self.connection_id:
            params["connectionId"] = self.connection_id
        if self.cursor:
            params["lastEventId"] = self.cursor
        resp = await asyncio.wait_for(self.client.get(self.path, params=params), timeout)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert resp.headers["X-Connection-Id"] == body["connectionId"]
        self.connection_id, self.cursor = body["connectionId"], body["lastEventId"]
        self.closed = body.get("closed")
        return body["events"]  # type: ignore[no-any-return]

    async def collect(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < n:
            out.extend(await self.poll(timeout))
        return out


async def ws_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def ws_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> tuple[int | None, str]:
    """Read until the server's close frame; its code and reason."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.CLOSE:  # the server's close frame: its own code and reason
            return msg.data, msg.extra or ""
        if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            return ws.close_code, ""
