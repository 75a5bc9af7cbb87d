"""Seed-era scripts (written from seed 002) loaded into a real server, every answer checked."""

from __future__ import annotations

from conftest import MakeClient


async def test_query_parameters(engine_client: MakeClient) -> None:
    client = await engine_client("compat_query.js")
    resp = await client.get("/search", params={"term": "flights", "page": "3", "x": "é ✓"})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == {"term": "flights", "page": "3", "all": {"term": "flights", "page": "3", "x": "é ✓"}}
    resp = await client.get("/search")
    assert await resp.json() == {"term": None, "page": "1", "all": {}}


async def test_form_data(engine_client: MakeClient) -> None:
    client = await engine_client("compat_form.js")
    resp = await client.post("/send-alert", data={"type": "disk", "message": "almost full", "priority": "high"})
    assert resp.status == 200
    assert await resp.json() == {"alertType": "disk", "message": "almost full", "priority": "high"}
    resp = await client.post("/send-alert", data={"type": "cpu", "message": "hot"})
    assert (await resp.json())["priority"] == "normal"


async def test_methods_on_one_path(engine_client: MakeClient) -> None:
    client = await engine_client("compat_methods.js")
    resp = await client.get("/item")
    assert (resp.status, await resp.json()) == (200, {"id": 1, "name": "first"})
    resp = await client.post("/item", data={"name": "second"})
    assert (resp.status, await resp.text()) == (201, "created second")
    resp = await client.put("/item", data={"name": "renamed"})
    assert (resp.status, await resp.text()) == (200, "updated renamed")
    resp = await client.delete("/item")
    assert (resp.status, await resp.read()) == (204, b"")
    resp = await client.patch("/item")
    assert resp.status == 405
    assert resp.headers["Allow"] == "DELETE, GET, POST, PUT, HEAD, OPTIONS"


async def test_health_handler_returning_json(engine_client: MakeClient) -> None:
    client = await engine_client("compat_health.js")
    resp = await client.get("/app/health")
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.json()
    assert body["status"] == "healthy" and body["checks"] == {"scripts": "ok"}
    assert body["timestamp"].endswith("Z")


async def test_write_log_then_list_logs(engine_client: MakeClient) -> None:
    client = await engine_client("compat_logs.js")
    assert await (await client.get("/logs/write", params={"msg": "first"})).text() == "logged"
    assert await (await client.get("/logs/write", params={"msg": "second"})).text() == "logged"
    logs = await (await client.get("/logs/read")).json()
    assert logs == ["logs script loaded", "note: first", "note: second"]
