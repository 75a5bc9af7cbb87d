"""A real headless Chromium: EventSource gets unnamed and named events and resumes, losing nothing.

Needs Debian's `chromium` at /usr/bin/chromium (installed by .ci/run) and the playwright package;
playwright never downloads a browser of its own here.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from conftest import MakeClient, make_config, wait_for
from playwright.async_api import async_playwright

from engine.http.keys import STREAMS, SUBSCRIPTIONS

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


async def test_eventsource_receives_and_resumes_after_the_server_drops_it(
    engine_client: MakeClient, scripts_dir
) -> None:
    config = make_config(scripts_dir)
    config = replace(config, streams=replace(config.streams, retry_ms=100))
    client = await engine_client("browser_page.js", config=config)
    registry = client.app[STREAMS]
    base = f"http://{client.host}:{client.port}"

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(base + "/b/page")
            await wait_for(lambda: registry.connection_count == 1, what="the browser's EventSource")

            async def received() -> list[dict]:
                return await page.evaluate("window.received")

            await client.get("/b/send", params={"from": "1", "to": "10"})
            await wait_for(lambda: _count(received, 10), what="the first 10 events in the browser")

            # The server drops the browser; messages keep coming while it is away.
            registry.close_all("dropped by the test")
            await client.get("/b/send", params={"from": "11", "to": "20"})
            await wait_for(lambda: registry.connection_count == 1, what="the browser to reconnect")
            await client.get("/b/send", params={"from": "21", "to": "30"})
            await wait_for(lambda: _count(received, 30), what="all 30 events in the browser")

            events = await received()
            assert [json.loads(e["data"])["n"] for e in events] == list(range(1, 31))  # no gap, no duplicate
            assert all(e["kind"] == ("named" if json.loads(e["data"])["n"] % 3 == 0 else "message") for e in events)
            assert len({e["id"] for e in events}) == 30
            assert await page.evaluate("window.opens") == 2  # it did reconnect, with Last-Event-ID
        finally:
            await browser.close()


async def _count(received, n: int) -> bool:
    return len(await received()) >= n


async def test_graphql_page_lists_the_schema_runs_queries_and_subscriptions(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js")
    hub = client.app[SUBSCRIPTIONS]
    base = f"http://{client.host}:{client.port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            outside: list[str] = []
            page.on("request", lambda req: None if req.url.startswith(base) else outside.append(req.url))
            await page.goto(base + "/graphql")
            await page.wait_for_selector("#schema li[data-field='hello']")
            listed = await page.eval_on_selector_all("#schema li[data-field]", "els => els.map(e => e.textContent)")
            assert "hello(name: String): String" in listed
            assert "createUser(name: String!): User" in listed and "userUpdates: String" in listed

            # A click writes the operation; Run shows the result.
            await page.click("#schema li[data-field='hello']")
            await page.fill("#variables", '{"name": "Chromium"}')
            await page.click("#run")
            await page.wait_for_function("document.querySelector('#output').textContent.includes('Hello, Chromium!')")

            # A subscription streams into the same pane until stopped.
            await page.fill("#query", "subscription { userUpdates }")
            await page.fill("#variables", "{}")
            await page.click("#run")
            await page.wait_for_function("document.querySelector('#output').textContent.includes('active')")
            await wait_for(lambda: hub.count == 1, what="the page's subscription")
            await page.wait_for_function("document.querySelector('#status').textContent.includes('WebSocket')")
            members = [m for groups in hub.groups.values() for g in groups.values() for m in g.members]
            assert [m.sub_id for m in members] == ["1"], "the page subscribes over WebSocket when it can"
            await client.post("/graphql", json={"query": 'mutation { createUser(name: "Eve") { id } }'})
            await client.post("/graphql", json={"query": 'mutation { triggerUserUpdate(userId: "1") }'})
            await page.wait_for_function("document.querySelector('#output').textContent.includes('Eve')")
            await page.click("#stop")
            await wait_for(lambda: hub.count == 0, what="Stop to end the subscription")
            assert outside == []  # the page works offline: nothing fetched from anywhere else
        finally:
            await browser.close()


async def test_graphql_page_falls_back_to_sse_when_no_socket_can_be_had(engine_client: MakeClient,
                                                                         tmp_path: Path) -> None:
    client = await engine_client("compat_graphql.js")
    hub = client.app[SUBSCRIPTIONS]
    base = f"http://{client.host}:{client.port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            # every socket to /graphql is closed before it is acknowledged (a proxy that drops them)
            await page.route_web_socket(re.compile(r".*/graphql$"), lambda ws: ws.close())
            await page.goto(base + "/graphql")
            await page.wait_for_selector("#schema li[data-field='userUpdates']")
            await page.fill("#query", "subscription { userUpdates }")
            await page.click("#run")
            await page.wait_for_function("document.querySelector('#status').textContent.includes('SSE')")
            await wait_for(lambda: hub.count == 1, what="the page's subscription over SSE")
            members = [m for groups in hub.groups.values() for g in groups.values() for m in g.members]
            assert [m.sub_id for m in members] == [None]
            await client.post("/graphql", json={"query": 'mutation { createUser(name: "Sse") { id } }'})
            await client.post("/graphql", json={"query": 'mutation { triggerUserUpdate(userId: "1") }'})
            await page.wait_for_function("document.querySelector('#output').textContent.includes('Sse')")
            await page.screenshot(path=str(tmp_path / "graphql.png"))
            await page.click("#stop")
            await wait_for(lambda: hub.count == 0, what="Stop to end the subscription")
        finally:
            await browser.close()


async def test_graphql_page_explores_types_shows_errors_keeps_history_and_sends_headers(
        engine_client: MakeClient, tmp_path: Path) -> None:
    trace = ('registerGraphQLQuery("trace", "type Query { trace: String }",'
             ' (a, ctx) => ctx.headers["x-trace"] || "none");')
    client = await engine_client("graphql_types.js", "compat_graphql.js", extra={"trace.js": trace})
    base = f"http://{client.host}:{client.port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(base + "/graphql")
            # the docs explorer: a type from the list, its fields, a type that links on
            await page.click("#schema li[data-type='Person']")
            await page.wait_for_selector("#docs:not([hidden])")
            docs = await page.text_content("#docs") or ""
            assert "Person (object)" in docs and "name: String!" in docs and "role: Role!" in docs
            await page.click("#docs .link:text('Role!')")
            assert "ADMIN" in (await page.text_content("#docs") or "")
            await page.click("#docs .back")
            # errors are shown as errors, apart from data
            await page.fill("#query", "{ nope }")
            await page.click("#run")
            await page.wait_for_selector("#output .errors")
            assert "Cannot query field 'nope'" in (await page.text_content("#output .errors") or "")
            # headers go with the request (a resolver sees them in context.headers)
            await page.fill("#query", "{ trace }")
            await page.click("#pane-headers")
            await page.fill("#headers", '{"X-Trace": "from-the-page"}')
            await page.click("#run")
            await page.wait_for_function("document.querySelector('#output').textContent.includes('from-the-page')")
            # history: both operations, newest first; picking one restores it
            options = await page.eval_on_selector_all("#history option", "os => os.map(o => o.textContent)")
            assert len(options) == 3 and "trace" in options[1] and "nope" in options[2]
            await page.select_option("#history", "1")
            assert (await page.input_value("#query")) == "{ nope }"
            # a subscription's messages: each its own timestamped entry
            await page.fill("#query", "subscription { userUpdates }")
            await page.click("#run")
            await page.wait_for_function("document.querySelector('#status').textContent.includes('WebSocket')")
            await client.post("/graphql", json={"query": 'mutation { createUser(name: "Eve") { id } }'})
            for _ in range(2):
                await client.post("/graphql", json={"query": 'mutation { triggerUserUpdate(userId: "1") }'})
            await page.wait_for_function("document.querySelectorAll('#output .result').length >= 3")
            stamps = await page.eval_on_selector_all("#output .result time", "ts => ts.map(t => t.textContent)")
            assert all(" · next" in s for s in stamps[:3])
            await page.screenshot(path=str(tmp_path / "graphql-page.png"))
            await page.click("#stop")
        finally:
            await browser.close()
