"""The flight-search example (scripts/flights.js, seed 000): one search read over WebSocket, SSE and
long-poll at once gets the same messages in the same order; cancel, timeout and unknown ids."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config
from sse_client import SSEReader
from transports_client import Poller

EXAMPLES = Path(__file__).resolve().parent.parent / "scripts"
ENDS = ("completed", "cancelled", "timeout")


async def search(client: TestClient, **params: str) -> dict[str, Any]:
    resp = await client.get("/api/search", params={"from": "JAK", "to": "CGK", **params})
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def until_end(messages: Any) -> list[dict[str, Any]]:
    out = []
    async for m in messages:
        out.append(m)
        if m["type"] in ENDS:
            return out
    raise AssertionError("the stream ended before the search did")


async def over_ws(client: TestClient, path: str) -> list[dict[str, Any]]:
    ws = await client.ws_connect(path)

    async def frames() -> Any:
        while True:
            yield json.loads((await ws.receive(timeout=10)).data)  # seed 000's JSON.parse(event.data)
    try:
        return await until_end(frames())
    finally:
        await ws.close()


async def over_sse(client: TestClient, path: str) -> list[dict[str, Any]]:
    reader = SSEReader(await client.get(path))

    async def events() -> Any:
        while True:
            event = await reader.next(timeout=10)
            if event.event is None:  # what EventSource's onmessage sees (not the `connected` notice)
                yield json.loads(event.data)
    return await until_end(events())


async def over_poll(client: TestClient, path: str) -> list[dict[str, Any]]:
    poller = Poller(client, path)

    async def events() -> Any:
        while True:
            for e in await poller.poll():
                if e["event"] is None:
                    yield e["data"]
    return await until_end(events())


async def test_one_search_over_three_transports_at_once_is_the_same_everywhere(engine_client: MakeClient) -> None:
    client = await engine_client(config=make_config(EXAMPLES))
    found = await search(client, wait_for="3", pace_ms="20")
    qid = found["query_id"]
    assert found["ws_url"].endswith(f"/api/result/{qid}") and found["ws_url"].startswith("ws://")
    assert found["poll_url"].endswith(f"/api/result/{qid}?transport=poll")
    path = f"/api/result/{qid}"
    ws, sse, poll = await asyncio.gather(over_ws(client, path), over_sse(client, path), over_poll(client, path))
    assert ws == sse == poll
    flights = [m for m in ws if m["type"] == "flight"]
    assert len(flights) == 24 and ws[-1] == {"type": "completed", "progress": 100, "status": "completed",
                                            "message": "All flights found", "total_flights": 24}
    assert ws[0]["type"] == "progress" and ws[0]["progress"] == 0
    seed_fields = {"source", "airline", "flight_number", "departure_time", "price", "from", "to", "timestamp",
                   "seat_class", "affiliate_link", "booking_url", "progress", "received_flights",
                   "total_expected", "status"}
    assert all(seed_fields <= set(f) for f in flights)
    assert [f["received_flights"] for f in flights] == list(range(1, 25))


async def test_a_search_can_be_cancelled_and_times_out(engine_client: MakeClient) -> None:
    client = await engine_client(config=make_config(EXAMPLES))
    found = await search(client, pace_ms="50")
    reader = SSEReader(await client.get(f"/api/result/{found['query_id']}"))
    got = []
    while not got or got[-1]["type"] != "flight":  # the search is under way
        event = await reader.next()
        if event.event is None:
            got.append(json.loads(event.data))
    resp = await client.post("/api/search/cancel", params={"query_id": found["query_id"]})
    assert resp.status == 200 and await resp.json() == {"query_id": found["query_id"], "status": "cancelled"}
    while got[-1]["type"] not in ENDS:
        got.append(json.loads((await reader.next()).data))
    assert got[-1]["type"] == "cancelled" and len([m for m in got if m["type"] == "flight"]) < 24
    again = await client.post("/api/search/cancel", params={"query_id": found["query_id"]})
    assert again.status == 409
    slow = await search(client, pace_ms="2000", timeout_s="1")
    got = await over_sse(client, f"/api/result/{slow['query_id']}")
    assert got[-1]["type"] == "timeout" and got[-1]["message"] == "Search timed out after 1 s"


async def test_unknown_searches_and_bad_requests_are_json_errors(engine_client: MakeClient) -> None:
    client = await engine_client(config=make_config(EXAMPLES))
    resp = await client.post("/api/search/cancel", params={"query_id": "0123456789abcdef"})
    assert resp.status == 404 and "no search" in (await resp.json())["error"]["message"]
    resp = await client.get("/api/search", params={"from": "JAKARTA", "to": "CGK"})
    assert resp.status == 400 and "three-letter" in (await resp.json())["error"]["message"]
    resp = await client.get("/api/result/0123456789abcdef")
    assert resp.status == 404 and "no search 0123456789abcdef" in (await resp.json())["error"]["message"]
    resp = await client.get("/api/result/0123456789abcdef", params={"transport": "poll"})
    assert resp.status == 404  # the same refusal whatever the transport
