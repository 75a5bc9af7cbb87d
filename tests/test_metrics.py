"""`/metrics`: scraped from a real server and read with prometheus-client's own parser."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, stalled_client, wait_for
from prometheus_client.parser import text_string_to_metric_families
from sse_client import SSEReader

from engine.http.keys import STREAMS

SCRIPT = """
registerWebStream("/news");
register("/hello", () => "hi");
register("/boom", () => { throw new Error("boom"); });
register("/send", (req) => { sendStreamMessageToPath("/news", req.query.text || "x"); return "sent"; });
registerGraphQLQuery("answer", "type Query { answer: Int }", () => 42);
"""


async def scrape(client: TestClient, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get("/metrics", headers=headers)
    assert r.status == 200, await r.text()
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(await r.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def test_metrics_count_what_happened(engine_client: MakeClient) -> None:
    client = await engine_client(extra={"m.js": SCRIPT})
    reader = SSEReader(await client.get("/news"))
    for text in ("a", "b", "c"):
        assert await (await client.get("/send", params={"text": text})).text() == "sent"
    assert [e.data for e in await reader.take(3)] == ["a", "b", "c"]
    assert (await client.get("/hello")).status == 200
    assert (await client.get("/boom")).status == 500
    assert (await client.get("/nothing-here")).status == 404
    r = await client.post("/graphql", json={"query": "{ answer }"})
    assert (await r.json()) == {"data": {"answer": 42}}
    m = await scrape(client)
    assert m[("rtengine_connections", (("stream", "/news"), ("transport", "sse")))] == 1
    assert m[("rtengine_channel_messages_total", ())] >= 3
    assert m[("rtengine_events_delivered_total", ())] >= 3
    assert m[("rtengine_stream_bytes_sent_total", ())] >= 3 * len(b"data: a\n\n")
    assert m[("rtengine_script_calls_total", (("kind", "handle"), ("outcome", "ok"), ("script", "m.js")))] == 4
    assert m[("rtengine_script_calls_total", (("kind", "handle"), ("outcome", "threw"), ("script", "m.js")))] == 1
    assert m[("rtengine_script_calls_total", (("kind", "resolve"), ("outcome", "ok"), ("script", "m.js")))] == 1
    assert m[("rtengine_script_call_seconds_count", (("script", "m.js"),))] == 6
    assert m[("rtengine_http_errors_total", (("status", "404"),))] == 1
    assert m[("rtengine_http_errors_total", (("status", "500"),))] == 1
    assert m[("rtengine_graphql_operations_total", (("operation", "query"), ("transport", "http")))] == 1
    assert m[("rtengine_script_loads_total", (("result", "loaded"), ("script", "m.js")))] == 1
    assert m[("rtengine_script_failing", (("script", "m.js"),))] == 0
    assert m[("rtengine_broker_up", (("kind", "memory"),))] == 1
    assert m[("rtengine_channels", ())] >= 1
    reader.response.close()
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the reader to go")
    m = await scrape(client)
    assert ("rtengine_connections", (("stream", "/news"), ("transport", "sse"))) not in m


async def test_metrics_are_guarded_like_the_admin_api_or_by_their_own_token(engine_client: MakeClient,
                                                                             scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, metrics=replace(config.metrics, token="scrape-me"),
                     admin=replace(config.admin, token="admin-secret"))
    client = await engine_client(extra={"m.js": SCRIPT}, config=config)
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer admin-secret"})).status == 401
    assert ("rtengine_channels", ()) in await scrape(client, Authorization="Bearer scrape-me")
    remote = await client.get("/metrics", headers={"Host": "example.com"})  # still the token's to decide
    assert remote.status == 401
    config = replace(config, metrics=replace(config.metrics, token=""))
    other = await engine_client(config=config)
    assert (await other.get("/metrics")).status == 401  # then the admin token is the one asked for
    assert (await other.get("/metrics", headers={"Authorization": "Bearer admin-secret"})).status == 200


async def test_metrics_count_503s_and_slow_readers_cut(engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_connections=1, max_buffer_bytes=65536))
    big = ('register("/send-big", () => { for (let i = 0; i < 200; i++) '
           'sendStreamMessageToPath("/news", "x".repeat(60000)); return "sent"; });')
    client = await engine_client(extra={"m.js": SCRIPT, "big.js": big}, config=config)
    stalled = await stalled_client(client.host, client.port, b"GET /news HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the reader in")
    assert (await client.get("/news")).status == 503  # streams.max_connections
    assert (await client.get("/send-big")).status == 200
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="the stalled reader cut")
    m = await scrape(client)
    assert m[("rtengine_http_errors_total", (("status", "503"),))] == 1
    assert m[("rtengine_slow_consumers_cut_total", ())] == 1
    stalled.close()
