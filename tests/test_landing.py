"""`GET /` when no script registered it: a page for browsers, JSON for the rest; the operator sees
what the scripts registered, anyone else only the engine's own entrances."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from conftest import MakeClient, make_config

SCRIPT = """
register("/hello", () => "hi");
register("/users/{id}", () => "a user");
registerWebStream("/news");
registerGraphQLQuery("answer", "type Query { answer: Int }", () => 42);
"""


async def test_the_landing_page_lists_what_the_scripts_registered_for_the_operator(engine_client: MakeClient) -> None:
    client = await engine_client(extra={"s.js": SCRIPT})
    listing = await (await client.get("/")).json()
    assert listing["links"]["graphql"] == "/graphql" and listing["links"]["console"] == "/_engine/"
    assert listing["routes"] == ["GET /hello", "GET /users/{id}"]
    assert listing["streams"] == ["/news"] and listing["graphql_fields"] == ["Query.answer"]
    page = await client.get("/", headers={"Accept": "text/html"})
    assert page.content_type == "text/html"
    text = await page.text()
    assert '<a href="/hello">/hello</a>' in text and "/users/{id}" in text and '<a href="/graphql">' in text


async def test_others_see_only_the_engine_entrances(engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, admin=replace(config.admin, token="secret"))
    client = await engine_client(extra={"s.js": SCRIPT}, config=config)
    listing = await (await client.get("/")).json()
    assert "routes" not in listing and "streams" not in listing
    assert "/hello" not in await (await client.get("/", headers={"Accept": "text/html"})).text()
    full = await (await client.get("/", headers={"Authorization": "Bearer secret"})).json()
    assert full["routes"] == ["GET /hello", "GET /users/{id}"]


async def test_a_script_may_take_the_root(engine_client: MakeClient) -> None:
    client = await engine_client(extra={"root.js": 'register("/", () => "my own home page");'})
    assert await (await client.get("/")).text() == "my own home page"
