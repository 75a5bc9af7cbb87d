"""A real headless Chromium: EventSource gets unnamed and named events and resumes, losing nothing.

Needs Debian's `chromium` at /usr/bin/chromium (installed by .ci/run) and the playwright package;
playwright never downloads a browser of its own here.
"""

from __future__ import annotations

import json
from dataclasses import replace

from conftest import MakeClient, make_config, wait_for
from playwright.async_api import async_playwright

from engine.http.keys import STREAMS

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
