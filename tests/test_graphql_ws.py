"""GraphQL over WebSocket (graphql-transport-ws): the real `graphql-ws` client from npm, run by node,
and raw sockets (aiohttp's WebSocket client, and a socket that never reads) for every close code,
the limits, and what a socket leaves behind when it goes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient
from conftest import ROOT, MakeClient, make_config, stalled_client, wait_for
from node_client import NodeClient

from engine.http.keys import GRAPHQL_RUNNER, SCRIPTS, STREAMS, SUBSCRIPTIONS

NODE_CLIENT = ROOT / "tests" / "node" / "graphql_ws_client.mjs"
PROTOCOL = "graphql-transport-ws"
SECRET = "a test secret of at least thirty-two bytes"

WHOAMI = """
registerGraphQLQuery("whoami", "type Query { whoami: String }",
  (args, context) => JSON.stringify({ user: context.user, params: context.connectionParams }));
"""


async def connect(client: TestClient, protocols: tuple[str, ...] = (PROTOCOL,),
                  **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
    return await client.ws_connect("/graphql", protocols=protocols, autoping=True, **kwargs)


async def acked(client: TestClient, payload: dict[str, Any] | None = None,
                **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
    ws = await connect(client, **kwargs)
    await ws.send_json({"type": "connection_init", **({"payload": payload} if payload is not None else {})})
    assert await receive(ws) == {"type": "connection_ack"}
    return ws


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
    msg = await ws.receive(timeout=5)
    while msg.type == aiohttp.WSMsgType.TEXT:  # whatever came before the close
        msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    return ws.close_code or 0, msg.extra or ""


def subscribe(sub_id: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": sub_id, "type": "subscribe", "payload": {"query": query, **({"variables": variables}
                                                                              if variables else {})}}


async def test_the_graphql_ws_client_from_npm(engine_client: MakeClient) -> None:
    assert (NODE_CLIENT.parent / "node_modules" / "graphql-ws").is_dir(), \
        "graphql-ws is not installed: run `npm install --prefix tests/node` (tests/prepare.sh does)"
    client = await engine_client("compat_graphql.js")
    url = f"ws://{client.host}:{client.port}/graphql"
    async with NodeClient(NODE_CLIENT, url, "3") as node:
        assert await node.line() == {"tag": "query", "value": {"data": {"hello": "Hello, world!"}}}
        assert await node.line() == {"tag": "mutation", "value": {"data": {"createUser": {"id": "1", "name": "Ada"}}}}
        assert await node.line() == {"tag": "subscribed", "value": {"data": {"userUpdates": "User updates "
                                                                                           "subscription active"}}}
        for _ in range(3):
            await client.post("/graphql", json={"query": 'mutation { triggerUserUpdate(userId: "1") }'})
            got = await node.line()
            assert got["tag"] == "next" and json.loads(got["value"]["data"]["userUpdates"])["name"] == "Ada"
        assert await node.line() == {"tag": "done", "value": 3}
        assert await node.exit_code() == 0
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 0, what="the client's completion to free it")


async def test_queries_mutations_errors_and_ping(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js")
    ws = await acked(client)
    await ws.send_json({"id": "q", "type": "subscribe", "payload": {"query": "{ hello(name: \"WS\") }"}})
    assert await receive(ws) == {"id": "q", "type": "next", "payload": {"data": {"hello": "Hello, WS!"}}}
    assert await receive(ws) == {"id": "q", "type": "complete"}
    await ws.send_json(subscribe("m", 'mutation { createUser(name: "Bo") { name } }'))
    assert (await receive(ws))["payload"] == {"data": {"createUser": {"name": "Bo"}}}
    assert await receive(ws) == {"id": "m", "type": "complete"}
    # an operation that does not validate: the spec's `error`, with GraphQL errors, and nothing else
    await ws.send_json(subscribe("bad", "{ nope }"))
    error = await receive(ws)
    assert error["id"] == "bad" and error["type"] == "error" and "nope" in error["payload"][0]["message"]
    # a resolver that throws: a `next` with the error, then `complete`
    await ws.send_json(subscribe("t", 'mutation { triggerUserUpdate(userId: "404") }'))
    thrown = await receive(ws)
    assert thrown["type"] == "next" and "no user with id 404" in thrown["payload"]["errors"][0]["message"]
    assert await receive(ws) == {"id": "t", "type": "complete"}
    await ws.send_json({"type": "ping", "payload": {"at": 1}})
    assert await receive(ws) == {"type": "pong", "payload": {"at": 1}}
    await ws.send_json({"type": "pong"})  # unasked pongs are fine
    await ws.send_json({"type": "ping"})
    assert await receive(ws) == {"type": "pong"}
    await ws.close()


async def test_a_subscription_gets_its_first_value_then_every_message_through_its_selection(
        engine_client: MakeClient) -> None:
    client = await engine_client("graphql_types.js")
    ws = await acked(client)
    await ws.send_json(subscribe("s1", "subscription { userChanged { id } }"))
    await ws.send_json(subscribe("s2", "subscription { userChanged { name role } }"))
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 2, what="both subscribers")
    await client.get("/gql/change", params={"i": "1"})
    got = {m["id"]: m for m in [await receive(ws), await receive(ws)]}
    assert got["s1"]["payload"] == {"data": {"userChanged": {"id": "2"}}}
    assert got["s2"]["payload"] == {"data": {"userChanged": {"name": "Grace", "role": "MEMBER"}}}
    # the client completes one: no answer, and only the other goes on
    await ws.send_json({"id": "s1", "type": "complete"})
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 1, what="s1 to leave the hub")
    await client.get("/gql/change", params={"i": "0"})
    assert (await receive(ws))["id"] == "s2"
    # the same id is free again once completed
    await ws.send_json(subscribe("s1", "subscription { userChanged { id } }"))
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 2, what="s1 again")
    await ws.close()
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 0, what="the socket's subscriptions to go")


async def test_every_close_code(engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, limits=replace(config.limits, graphql_ws_init_seconds=0.3))
    client = await engine_client("compat_graphql.js", config=config)
    # 4406: no graphql-transport-ws subprotocol offered
    assert (await closed_with(await connect(client, protocols=())))[0] == 4406
    # 4408: no connection_init in time
    assert await closed_with(await connect(client)) == (4408, "Connection initialisation timeout")
    # 4401: subscribe before connection_ack
    ws = await connect(client)
    await ws.send_json(subscribe("1", "{ hello }"))
    assert await closed_with(ws) == (4401, "Unauthorized")
    # 4429: a second connection_init
    ws = await acked(client)
    await ws.send_json({"type": "connection_init"})
    assert await closed_with(ws) == (4429, "Too many initialisation requests")
    # 4409: an id already under way (also one that is not valid text: the close reason copes)
    ws = await acked(client)
    await ws.send_json(subscribe("same", "subscription { userUpdates }"))
    await ws.send_json(subscribe("same", "subscription { userUpdates }"))
    assert await closed_with(ws) == (4409, "Subscriber for same already exists")
    ws = await acked(client)
    for _ in range(2):
        await ws.send_str('{"id": "\\ud800", "type": "subscribe", '
                          '"payload": {"query": "subscription { userUpdates }"}}')
    assert (await closed_with(ws))[0] == 4409
    # 4400: whatever is not a message of the protocol
    for bad in ("not json", "[]", '{"type": 7}', '{"type": "launch"}', '{"type": "subscribe", "payload": {}}',
                '{"id": "", "type": "subscribe", "payload": {"query": "{ hello }"}}',
                '{"id": "x", "type": "subscribe"}', '{"id": "x", "type": "subscribe", "payload": {"query": 5}}',
                '{"id": "x", "type": "subscribe", "payload": {"query": "{ hello }", "variables": []}}',
                '{"type": "complete"}', '{"type": "connection_init", "payload": "token"}',
                json.dumps({"type": "connection_init", "payload": {"blob": "x" * 20000}})):
        ws = await connect(client)
        if "connection_init" not in bad:
            await ws.send_json({"type": "connection_init"})
            assert await receive(ws) == {"type": "connection_ack"}
        await ws.send_str(bad)
        code, reason = await closed_with(ws)
        assert code == 4400 and reason.startswith("Invalid message received"), (bad, code, reason)
    ws = await acked(client)
    await ws.send_bytes(b'{"type": "ping"}')
    assert (await closed_with(ws))[0] == 4400
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="every socket's place freed")


async def test_tokens_in_connection_init_or_the_handshake(engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, auth=replace(config.auth, jwt_secret=SECRET))
    client = await engine_client(extra={"whoami.js": WHOAMI}, config=config)
    token = jwt.encode({"sub": "ada", "role": "admin"}, SECRET, algorithm="HS256")

    async def whoami(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        await ws.send_json(subscribe("w", "{ whoami }"))
        answer = await receive(ws)
        assert await receive(ws) == {"id": "w", "type": "complete"}
        return json.loads(answer["payload"]["data"]["whoami"])  # type: ignore[no-any-return]

    ws = await acked(client, {"authorization": f"Bearer {token}", "app": "test"})
    assert await whoami(ws) == {"user": {"sub": "ada", "role": "admin"},
                                "params": {"authorization": f"Bearer {token}", "app": "test"}}
    await ws.close()
    ws = await acked(client, headers={"Authorization": f"Bearer {token}"})
    assert (await whoami(ws))["user"]["sub"] == "ada"
    await ws.close()
    ws = await acked(client)  # no token: no user
    assert await whoami(ws) == {"user": None}  # connectionParams undefined: JSON.stringify leaves it out
    await ws.close()
    for bad in ("Bearer not-a-token", "Bearer \ud800\u00ff", "Bearer " + jwt.encode(
            {"sub": "x"}, "another secret entirely, 32 bytes!!", algorithm="HS256")):
        ws = await connect(client)
        await ws.send_json({"type": "connection_init", "payload": {"authorization": bad}})
        code, reason = await closed_with(ws)
        assert code == 4403 and reason.startswith("Forbidden"), (code, reason)


async def test_a_hundred_subscriptions_on_a_socket_that_goes_mid_stream_free_everything(
        engine_client: MakeClient) -> None:
    client = await engine_client("graphql_types.js")
    hub, streams = client.app[SUBSCRIPTIONS], client.app[STREAMS]
    ws = await acked(client)
    for i in range(100):  # every one its own variables: a group each
        await ws.send_json(subscribe(f"s{i}", "subscription ($r: Role) { userChanged(role: $r) { id } }",
                                     {"r": "MEMBER"} if i % 2 else None))
    await wait_for(lambda: hub.count == 100, what="100 subscriptions")
    assert streams.connection_count == 101  # the socket holds a place too
    for n in range(3):
        await client.get("/gql/change", params={"i": str(n % 3)})
    await receive(ws)  # the stream is flowing when the socket goes
    ws._response.connection.transport.abort()  # type: ignore[union-attr]
    await wait_for(lambda: hub.count == 0 and not hub.groups and streams.connection_count == 0,
                   what="every subscription and the socket's place freed")
    assert hub.fields_held == 0


async def test_idle_sockets_hold_places_among_the_connections(engine_client: MakeClient, scripts_dir: Path) -> None:
    """Sockets that never subscribe (initialised or not) are bounded by streams.max_connections too."""
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_connections=2))
    client = await engine_client("compat_graphql.js", config=config)
    first, second = await acked(client), await connect(client)
    assert client.app[STREAMS].connection_count == 2
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(client)
    assert refused.value.status == 503
    third = await client.get("/graphql", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                  "Sec-WebSocket-Version": "13",
                                                  "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()})
    assert third.status == 503 and (await third.json())["error"]["code"] == "too_many_connections"
    await second.close()
    await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="its place freed")
    again = await acked(client)
    await again.close()
    await first.close()
    await wait_for(lambda: client.app[STREAMS].connection_count == 0, what="every place freed")


async def test_the_operations_cap_per_socket(engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, limits=replace(config.limits, graphql_ws_operations=3))
    client = await engine_client("compat_graphql.js", config=config)
    ws = await acked(client)
    for i in range(3):
        await ws.send_json(subscribe(str(i), "subscription { userUpdates }"))
        assert (await receive(ws))["type"] == "next"  # the resolver's first value
    await ws.send_json(subscribe("3", "subscription { userUpdates }"))
    error = await receive(ws)
    assert error["id"] == "3" and error["type"] == "error" and "limits.graphql_ws_operations" in \
        error["payload"][0]["message"]
    await ws.send_json({"id": "0", "type": "complete"})
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 2, what="one completed")
    await ws.send_json(subscribe("3", "subscription { userUpdates }"))
    assert (await receive(ws))["type"] == "next"
    await ws.close()


async def test_subscriptions_survive_a_reload_and_complete_when_their_field_goes(
        engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await engine_client("compat_graphql.js")
    ws = await acked(client)
    await ws.send_json(subscribe("u", "subscription { userUpdates }"))
    assert (await receive(ws))["type"] == "next"
    source = (scripts_dir / "compat_graphql.js").read_text()
    assert (await client.app[SCRIPTS].save("compat_graphql.js", source + "\n// again\n")).status == "loaded"
    await client.post("/graphql", json={"query": 'mutation { createUser(name: "Re") { id } }'})
    await client.post("/graphql", json={"query": 'mutation { triggerUserUpdate(userId: "1") }'})
    assert "Re" in (await receive(ws))["payload"]["data"]["userUpdates"]
    await client.app[SCRIPTS].unload("compat_graphql.js")
    assert await receive(ws) == {"id": "u", "type": "complete"}
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 0, what="the hub to let it go")
    await ws.close()


async def test_a_stalled_socket_is_cut_off_while_ten_others_get_everything(
        engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_buffer_bytes=64 * 1024))
    client = await engine_client("graphql_types.js", config=config)
    hub = client.app[SUBSCRIPTIONS]
    query = "subscription { userChanged { id name } }"
    # a raw socket that does the handshake, inits, subscribes, and never reads again
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (f"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n").encode()
    frames = b"".join(_client_frame(json.dumps(m).encode()) for m in ({"type": "connection_init"},
                                                                       subscribe("x", query)))
    stalled = await stalled_client(client.host, client.port, handshake + frames)
    await wait_for(lambda: hub.count == 1, what="the stalled subscriber")
    others = [await acked(client) for _ in range(10)]
    for ws in others:
        await ws.send_json(subscribe("x", query))
    await wait_for(lambda: hub.count == 11, what="the ten others")
    received = [0] * len(others)
    MESSAGES = 500  # noqa: N806

    async def consume(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        for n in range(MESSAGES):
            assert (await receive(ws))["payload"]["data"]["userChanged"]["id"] == str(n)
            received[i] += 1

    consumers = [asyncio.create_task(consume(i, ws)) for i, ws in enumerate(others)]
    for n in range(MESSAGES):  # 4 MB to each subscriber: more than the kernel's buffers hold
        await client.get("/gql/big", params={"n": str(n)})
    await asyncio.gather(*consumers)
    assert received == [MESSAGES] * 10
    await wait_for(lambda: hub.count == 10, what="the stalled socket to be cut off")
    stalled.close()
    for ws in others:
        await ws.close()
    await wait_for(lambda: hub.count == 0, what="everything freed")


def _client_frame(payload: bytes) -> bytes:
    """A masked text frame, as a client must send it."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_a_handshake_aiohttp_would_refuse_is_a_json_400(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js")
    for headers in ({"Sec-WebSocket-Version": "12", "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()},
                    {"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "short"}):
        r = await client.get("/graphql", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                  "Sec-WebSocket-Protocol": PROTOCOL, **headers})
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_websocket_handshake"


async def test_a_socket_that_does_not_read_its_answers_is_cut_off(engine_client: MakeClient, scripts_dir: Path,
                                                                  caplog: Any) -> None:
    """Query answers are the socket's own frames: a client that keeps asking and never reads is cut
    once more than streams.max_buffer_bytes of them wait, so server memory stays bounded."""
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, max_buffer_bytes=64 * 1024),
                     limits=replace(config.limits, graphql_ws_operations=10_000))
    client = await engine_client("compat_graphql.js", config=config)
    big = '{ hello(name: "' + "x" * 20000 + '") }'  # one resolver call, about 20 KB an answer
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (f"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n").encode()
    frames = [_client_frame(json.dumps({"type": "connection_init"}).encode())]
    frames += [_client_frame(json.dumps(subscribe(str(i), big)).encode()) for i in range(600)]  # ~12 MB of answers
    stalled = await stalled_client(client.host, client.port, handshake)
    loop = asyncio.get_running_loop()
    try:
        for frame in frames:
            await loop.sock_sendall(stalled, frame)
    except OSError:
        pass  # cut while still sending: what this test is waiting for
    await wait_for(lambda: any("left more than 65536 bytes unread" in r.getMessage() for r in caplog.records),
                   timeout=30, what="the socket to be cut off")
    stalled.close()


async def test_a_failure_of_the_servers_own_closes_with_4500(engine_client: MakeClient) -> None:
    """No client input reaches 4500; the server's own failure does: here its GraphQL threads are
    gone (as at shutdown) when an operation arrives."""
    client = await engine_client("compat_graphql.js")
    ws = await acked(client)
    await client.app[GRAPHQL_RUNNER].close()
    await ws.send_json(subscribe("q", "{ hello }"))
    assert await closed_with(ws) == (4500, "Internal server error")
