"""The chat example in a real Chromium: rooms keep their messages to themselves, each tab has its own
connection id, and closing a tab tells its room who left (onDisconnect)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import MakeClient, make_config, wait_for
from playwright.async_api import Page, async_playwright
from test_browser import CHROMIUM_ARGS

from engine.http.keys import STREAMS

EXAMPLES = Path(__file__).resolve().parent.parent / "scripts"


async def lines(page: Page, kind: str) -> list[dict[str, Any]]:
    return await page.evaluate(f"window.chat.lines.filter(l => l.type === {kind!r})")  # type: ignore[no-any-return]


async def say(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.click("#send")


async def test_two_rooms_in_three_tabs(engine_client: MakeClient) -> None:
    client = await engine_client(config=make_config(EXAMPLES))
    base = f"http://{client.host}:{client.port}/chat"
    registry = client.app[STREAMS]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            ada = await browser.new_page()
            await ada.goto(base + "?room=red&name=Ada")
            bo = await browser.new_page()
            await bo.goto(base + "?room=blue&name=Bo")
            cy = await browser.new_page()
            await cy.goto(base + "?room=red&name=Cy")
            for page in (ada, bo, cy):
                await page.wait_for_function("window.chat.id !== null && !document.querySelector('#send').disabled")
            ids = [await p.evaluate("window.chat.id") for p in (ada, bo, cy)]
            assert len(set(ids)) == 3 and set(ids) == set(registry.connections)  # each tab its own id
            assert registry.connections[ids[0]].channel.path == "/rooms/red"
            assert registry.connections[ids[1]].channel.path == "/rooms/blue"
            assert (await ada.inner_text("#cid")) == ids[0]

            await say(ada, "hello red")
            await say(bo, "hello blue")
            await wait_for(lambda: _has(cy, "message", 1), what="Cy to hear Ada")
            await wait_for(lambda: _has(bo, "message", 1), what="Bo to hear himself")
            assert [m["text"] for m in await lines(cy, "message")] == ["hello red"]
            assert [m["text"] for m in await lines(bo, "message")] == ["hello blue"]
            await wait_for(lambda: _has(ada, "message", 1), what="Ada to hear herself")
            assert [m["text"] for m in await lines(ada, "message")] == ["hello red"]
            assert [j["name"] for j in await lines(ada, "join")] == ["Ada", "Cy"]
            assert [j["name"] for j in await lines(bo, "join")] == ["Bo"]  # nothing of red

            await cy.close()  # onDisconnect: the room hears it
            await wait_for(lambda: _has(ada, "leave", 1), what="Ada to see Cy leave")
            leave = (await lines(ada, "leave"))[0]
            assert leave["name"] == "Cy" and leave["reason"] == "the client went away"
            assert await lines(bo, "leave") == []
            assert "Cy left" in await ada.inner_text("#log")
            assert await ada.inner_text("#members") == "Ada"
            rooms = await (await client.get("/chat/rooms")).json()
            assert sorted((r["room"], r["members"]) for r in rooms) == [("blue", ["Bo"]), ("red", ["Ada"])]
        finally:
            await browser.close()


async def _has(page: Page, kind: str, n: int) -> bool:
    return len(await lines(page, kind)) >= n
