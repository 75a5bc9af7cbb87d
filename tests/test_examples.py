"""The example scripts the project ships in scripts/ answer from JS, as the README says they do."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import MakeClient, make_config, wait_for
from sse_client import SSEReader

from engine.http.keys import SUBSCRIPTIONS

EXAMPLES = Path(__file__).resolve().parent.parent / "scripts"


async def test_every_example_loads_and_answers(engine_client: MakeClient) -> None:
    client = await engine_client(config=make_config(EXAMPLES))
    health = await (await client.get("/health")).json()
    assert health["scripts"] == {"loaded": len(list(EXAMPLES.glob("*.js"))), "failed": 0, "failed_names": [],
                                 "failing_names": []}
    assert await (await client.get("/hello", params={"name": "Ada"})).text() == "Hello, Ada!\n"
    assert (await (await client.get("/hello/Grace")).json())["greeting"] == "Hello, Grace!"
    created = await client.post("/notes", json={"text": "buy milk"})
    assert created.status == 201 and (await created.json())["text"] == "buy milk"
    assert [n["text"] for n in await (await client.get("/notes")).json()] == ["buy milk"]
    assert (await client.delete("/notes/1")).status == 204
    assert await (await client.get("/slow", params={"ms": "20"})).json() == {"waitedMs": 20}


async def test_events_example_streams_what_trigger_sends(engine_client: MakeClient) -> None:
    client = await engine_client(config=make_config(EXAMPLES))
    reader = SSEReader(await client.get("/events"))
    assert (await client.post("/trigger", data={"message": "hi"})).status == 200
    event = await reader.next()
    assert '"message":"hi"' in event.data and event.id


async def test_graphql_example_feeds_its_subscription_from_its_mutation(engine_client: MakeClient) -> None:
    client = await engine_client(config=make_config(EXAMPLES))
    r = await client.post("/graphql/sse", json={"query": "subscription { userAdded { name } }"})
    reader = SSEReader(r)
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 1, what="the subscription")
    added = await client.post("/graphql", json={"query": 'mutation { addUser(name: "Bo") { id name } }'})
    assert await added.json() == {"data": {"addUser": {"id": "2", "name": "Bo"}}}
    event = await reader.next()
    assert (event.event, json.loads(event.data)) == ("next", {"data": {"userAdded": {"name": "Bo"}}})
    users = await client.post("/graphql", json={"query": "{ users { name } }"})
    assert await users.json() == {"data": {"users": [{"name": "Ada"}, {"name": "Bo"}]}}
    r.close()


async def test_chat_example_over_plain_http(engine_client: MakeClient) -> None:
    """What the chat's comment says to try with curl: read a room, post with the id it gave."""
    client = await engine_client(config=make_config(EXAMPLES))
    resp = await client.get("/rooms/general", params={"name": "curl"})
    reader = SSEReader(resp)
    connected = await reader.next()
    cid = json.loads(connected.data)["id"]
    assert connected.event == "connected" and resp.headers["X-Connection-Id"] == cid
    welcome = json.loads((await reader.next()).data)
    assert welcome == {"type": "welcome", "you": "curl", "id": cid, "room": "general", "members": ["curl"]}
    assert json.loads((await reader.next()).data)["type"] == "join"
    headers = {"X-Connection-Id": cid, "Content-Type": "application/json"}
    assert await (await client.post("/rooms/general", data='"hello"', headers=headers)).json() == {"ok": True}
    said = json.loads((await reader.next()).data)
    assert (said["type"], said["name"], said["text"]) == ("message", "curl", "hello")
    refused = await (await client.post("/rooms/general", data='"   "', headers=headers)).json()
    assert refused["ok"] is False
    bad_room = await client.get("/rooms/NOT-lower")
    assert bad_room.status == 403 and "a room name is" in (await bad_room.json())["error"]["message"]
