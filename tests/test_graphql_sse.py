"""GraphQL over SSE (distinct connections mode) and the subscription streams, through real sockets;
and the real `graphql-sse` client from npm, run by node."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from conftest import ROOT, MakeClient, make_config, stalled_client, wait_for
from node_client import NodeClient
from sse_client import SSEReader

from engine.http.keys import SCRIPTS, STREAMS, SUBSCRIPTIONS

NODE_CLIENT = ROOT / "tests" / "node" / "graphql_sse_client.mjs"


async def subscribe(client: TestClient, query: str, variables: dict[str, Any] | None = None,
                    method: str = "POST") -> tuple[aiohttp.ClientResponse, SSEReader]:
    if method == "POST":
        r = await client.post("/graphql/sse", json={"query": query, "variables": variables},
                              headers={"Accept": "text/event-stream"})
    else:
        params = {"query": query, **({"variables": json.dumps(variables)} if variables else {})}
        r = await client.get("/graphql/sse", params=params)
    assert r.status == 200, await r.text()
    assert r.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    return r, SSEReader(r)


async def next_result(reader: SSEReader) -> dict[str, Any]:
    event = await reader.next()
    assert event.event == "next", event
    return json.loads(event.data)  # type: ignore[no-any-return]


async def completes(reader: SSEReader) -> None:
    event = await reader.next()
    assert (event.event, event.data) == ("complete", "")
    assert await reader.ended()


async def test_wire_format_of_a_subscription_and_of_a_query(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js")
    r = await client.post("/graphql/sse", json={"query": "subscription { userUpdates }"})
    assert r.headers["Cache-Control"] == "no-cache" and r.headers["X-Accel-Buffering"] == "no"
    first = await r.content.readuntil(b"\n\n")
    assert first == b'event: next\ndata: {"data":{"userUpdates":"User updates subscription active"}}\n\n'
    r.close()

    # A query over SSE: one result, then `complete` with an empty data line, then the server closes.
    r = await client.post("/graphql/sse", json={"query": "{ hello }"})
    raw = await r.read()
    assert raw == (b'event: next\ndata: {"data":{"hello":"Hello, world!"}}\n\n'
                   b"event: complete\ndata: \n\n")


async def test_subscription_gets_the_resolver_value_then_every_message(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js")
    r, reader = await subscribe(client, "subscription { userUpdates }")
    assert await next_result(reader) == {"data": {"userUpdates": "User updates subscription active"}}
    plain = await client.get("/graphql/subscription/userUpdates")  # the same messages, as a plain stream
    plain_reader = SSEReader(plain)

    await client.post("/graphql", json={"query": 'mutation { createUser(name: "Di") { id } }'})
    for _ in range(3):
        await client.post("/graphql", json={"query": 'mutation { triggerUserUpdate(userId: "1") }'})
    for _ in range(3):
        text = (await next_result(reader))["data"]["userUpdates"]
        assert json.loads(text)["name"] == "Di"  # a String field: the JSON text as the script sent it
        assert json.loads((await plain_reader.next()).data)["name"] == "Di"
    r.close()
    plain.close()


async def test_object_typed_subscription_follows_the_selection(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_types.js")
    r, reader = await subscribe(client, "subscription { userChanged { name role } }")
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 1, what="the subscriber")  # no first result
    await client.get("/gql/change", params={"i": "1"})  # sent as an object
    assert await next_result(reader) == {"data": {"userChanged": {"name": "Grace", "role": "MEMBER"}}}
    await client.get("/gql/change", params={"i": "0", "asText": "1"})  # sent as JSON text: parsed first
    assert await next_result(reader) == {"data": {"userChanged": {"name": "Ada", "role": "ADMIN"}}}
    r.close()


async def test_arguments_and_variables_reach_the_resolver(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_types.js")
    r, reader = await subscribe(client, "subscription($n: Int!) { ticks(from: $n) }", {"n": 41}, method="GET")
    assert await next_result(reader) == {"data": {"ticks": 41}}
    await client.get("/gql/tick", params={"n": "42"})
    assert await next_result(reader) == {"data": {"ticks": 42}}
    r.close()


async def test_errors_before_execution_are_a_200_stream(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js", "graphql_types.js")
    for query, expect in (
        ("subscription { userUpdates", "Syntax Error"),  # malformed
        ("subscription { nope }", "Cannot query field 'nope' on type 'Subscription'"),  # unknown field
        ("subscription($n: Int!) { ticks(from: $n) }", "Variable '$n'"),  # missing variable
    ):
        r, reader = await subscribe(client, query)
        result = await next_result(reader)
        assert expect in result["errors"][0]["message"], result
        await completes(reader)
        r.close()
    # A request that is not a GraphQL request at all is still a 400.
    r = await client.post("/graphql/sse", data=b"nope", headers={"Content-Type": "application/json"})
    assert r.status == 400 and "not JSON" in (await r.json())["errors"][0]["message"]


async def test_a_subscription_resolver_that_throws_reports_and_completes(engine_client: MakeClient) -> None:
    source = ('registerGraphQLSubscription("bad", "type Subscription { bad: String }", '
              '() => { throw new Error("cannot subscribe now"); });')
    client = await engine_client(extra={"bad.js": source})
    r, reader = await subscribe(client, "subscription { bad }")
    result = await next_result(reader)
    assert result["errors"][0]["message"] == "cannot subscribe now"
    assert result["errors"][0]["path"] == ["bad"]
    await completes(reader)
    assert client.app[SUBSCRIPTIONS].count == 0
    r.close()


async def test_many_subscriptions_and_clients_that_leave_free_everything(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_types.js")
    hub, streams = client.app[SUBSCRIPTIONS], client.app[STREAMS]
    subs = []
    for i in range(30):  # three different selections, ten subscribers each
        query = ["subscription { userChanged { name } }", "subscription { userChanged { role } }",
                 "subscription { userChanged { name tags } }"][i % 3]
        subs.append(await subscribe(client, query))
    await wait_for(lambda: hub.count == 30, what="30 subscribers")
    assert len(hub.groups["userChanged"]) == 3 and streams.connection_count == 30

    await client.get("/gql/change", params={"i": "0"})
    results = [await next_result(reader) for _, reader in subs]
    assert results[0] == {"data": {"userChanged": {"name": "Ada"}}}
    assert results[1] == {"data": {"userChanged": {"role": "ADMIN"}}}
    assert results[2] == {"data": {"userChanged": {"name": "Ada", "tags": ["math"]}}}

    for r, _ in subs[:20]:
        r.close()
    await wait_for(lambda: hub.count == 10, what="the 20 closed subscriptions to be freed")
    await client.get("/gql/change", params={"i": "1"})
    for _, reader in subs[20:]:
        assert "userChanged" in (await next_result(reader))["data"]
    for r, _ in subs[20:]:
        r.close()
    await wait_for(lambda: hub.count == 0 and not hub.groups and streams.connection_count == 0,
                   what="every subscription freed")


async def test_subscriptions_end_when_their_field_goes_away(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js")
    r, reader = await subscribe(client, "subscription { userUpdates }")
    await next_result(reader)
    await client.app[SCRIPTS].unload("compat_graphql.js")
    await completes(reader)
    assert client.app[SUBSCRIPTIONS].count == 0
    r.close()


async def test_keep_alive_comments(engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, heartbeat_seconds=0.05))
    client = await engine_client("compat_graphql.js", config=config)
    r, reader = await subscribe(client, "subscription { userUpdates }")
    await next_result(reader)
    task = asyncio.ensure_future(reader.next(timeout=5))
    await wait_for(lambda: len(reader.comments) >= 2, what="two keep-alive comments")
    task.cancel()
    r.close()


async def test_the_graphql_sse_client_from_npm(engine_client: MakeClient) -> None:
    assert (NODE_CLIENT.parent / "node_modules" / "graphql-sse").is_dir(), \
        "graphql-sse is not installed: run `npm install --prefix tests/node` (.ci/run does)"
    client = await engine_client("compat_graphql.js")
    await client.post("/graphql", json={"query": 'mutation { createUser(name: "Node") { id } }'})
    url = f"http://{client.host}:{client.port}/graphql/sse"
    async with NodeClient(NODE_CLIENT, url, "3") as node:
        assert await node.line() == {"tag": "query", "value": {"data": {"hello": "Hello, world!"}}}
        assert await node.line() == {"tag": "query-complete", "value": None}
        first = {"data": {"userUpdates": "User updates subscription active"}}
        assert await node.line() == {"tag": "subscribed", "value": first}
        for _ in range(3):
            await client.post("/graphql", json={"query": 'mutation { triggerUserUpdate(userId: "1") }'})
            got = await node.line()
            assert got["tag"] == "next" and json.loads(got["value"]["data"]["userUpdates"])["name"] == "Node"
        assert await node.line() == {"tag": "done", "value": 3}
        assert await node.exit_code() == 0
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 0, what="the client's completion to free it")


async def test_a_stalled_subscriber_is_cut_off_and_the_others_get_everything(
    engine_client: MakeClient, scripts_dir: Path
) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_buffer_bytes=64 * 1024))
    client = await engine_client("graphql_types.js", config=config)
    hub = client.app[SUBSCRIPTIONS]
    query = "subscription { userChanged { id name } }"
    body = json.dumps({"query": query}).encode()
    sock = await stalled_client(client.host, client.port,
                                b"POST /graphql/sse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    await wait_for(lambda: hub.count == 1, what="the stalled subscriber")
    fast = [await subscribe(client, query) for _ in range(5)]
    await wait_for(lambda: hub.count == 6, what="the other subscribers")
    received = [0] * len(fast)

    async def consume(i: int, reader: SSEReader) -> None:
        for n in range(400):
            assert (await next_result(reader))["data"]["userChanged"]["id"] == str(n)
            received[i] += 1

    consumers = [asyncio.create_task(consume(i, r)) for i, (_, r) in enumerate(fast)]
    for n in range(400):  # 3.2 MB to each subscriber
        await client.get("/gql/big", params={"n": str(n)})
    await asyncio.gather(*consumers)
    assert received == [400] * 5
    await wait_for(lambda: hub.count == 5, what="the stalled subscriber to be cut off")
    sock.close()
    for r, _ in fast:
        r.close()


SLOW_SUBSCRIPTION = """
registerGraphQLSubscription("news", "type Subscription { news: String }",
  () => new Promise((resolve) => setTimeout(() => resolve(undefined), 100)));
register("/news", (req) => { sendSubscriptionMessage("news", req.query.text); return "sent"; }, "POST");
"""


async def test_many_subscribing_at_once_cannot_pass_max_connections(
    engine_client: MakeClient, scripts_dir: Path
) -> None:
    """Each subscription's place is taken before its resolver runs: 60 subscribing at once against
    room for 10 give 10 subscribers and 50 answers of 503, never more."""
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_connections=10))
    client = await engine_client(extra={"news.js": SLOW_SUBSCRIPTION}, config=config)
    responses = await asyncio.gather(*(client.post("/graphql/sse", json={"query": "subscription { news }"})
                                       for _ in range(60)))
    assert sorted(r.status for r in responses) == [200] * 10 + [503] * 50
    assert client.app[STREAMS].connection_count == 10
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 10, what="the ten to subscribe")
    for r in responses:
        r.close()
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="every place to be given back")


async def test_live_subscriptions_are_bounded_in_what_they_hold(engine_client: MakeClient) -> None:
    """Distinct queries each hold their parsed document; past limits.graphql_subscription_fields
    a new one is refused, while a query held already costs nothing more."""
    client = await engine_client(extra={"news.js": SLOW_SUBSCRIPTION}, graphql_subscription_fields=30)
    held = [await subscribe(client, f"subscription {{ a{i}: news }}") for i in range(30)]  # one field each
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 30, what="the subscribers")
    refused = await client.post("/graphql/sse", json={"query": "subscription { b: news }"})
    assert refused.status == 503 and "limits.graphql_subscription_fields" in (await refused.json())["error"]["message"]
    again = await subscribe(client, "subscription { a0: news }")  # the same query as a subscriber's: free
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 31, what="the subscribers")
    assert client.app[SUBSCRIPTIONS].fields_held == 30
    for r, _ in [*held, again]:
        r.close()
    await wait_for(lambda: client.app[SUBSCRIPTIONS].fields_held == 0, what="the documents to be let go")


async def test_subscriptions_through_fragments_get_their_messages(engine_client: MakeClient) -> None:
    client = await engine_client(extra={"news.js": SLOW_SUBSCRIPTION})
    _, inline = await subscribe(client, "subscription { ... on Subscription { news } }")
    _, spread = await subscribe(client, "subscription { ...F } fragment F on Subscription { news }")
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 2, what="both subscribers")
    await client.post("/news", params={"text": "hi"})
    assert await next_result(inline) == {"data": {"news": "hi"}}
    assert await next_result(spread) == {"data": {"news": "hi"}}
