"""The transport demo (scripts/transports_demo.js, seed 001) in a real Chromium: two tabs, each with a
long-poll, an SSE and a WebSocket connection to one channel; ids, delivery, order, heartbeats and
isolation, and closing a tab cleans up after it."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from conftest import MakeClient, make_config, wait_for
from playwright.async_api import Page, async_playwright
from test_browser import CHROMIUM_ARGS

from engine.http.keys import STREAMS

EXAMPLES = Path(__file__).resolve().parent.parent / "scripts"
KINDS = ("poll", "sse", "ws")
TRANSPORT = {"poll": "poll", "sse": "sse", "ws": "websocket"}


async def lines(page: Page, kind: str, type_: str) -> list[dict[str, Any]]:
    return await page.evaluate(  # type: ignore[no-any-return]
        f"window.demo[{kind!r}].lines.filter(l => l.type === {type_!r})")


def has(page: Page, kind: str, type_: str, n: int) -> Any:
    async def check() -> bool:
        return len(await lines(page, kind, type_)) >= n
    return check()


async def say(page: Page, kind: str, text: str) -> None:
    await page.fill(f"#{kind} input", text)
    await page.click(f"#{kind} .controls button:nth-child(4)")


async def test_three_transports_in_two_tabs(engine_client: MakeClient, scripts_dir: Path) -> None:
    config = make_config(EXAMPLES)
    config = replace(config, streams=replace(config.streams, poll_grace_seconds=0.5, heartbeat_seconds=0.2))
    client = await engine_client(config=config)
    url = f"http://{client.host}:{client.port}/transports"
    registry = client.app[STREAMS]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            tabs = []
            for _ in range(2):
                page = await browser.new_page(viewport={"width": 1400, "height": 760})
                await page.goto(url)
                for kind in KINDS:
                    await page.click(f"#{kind} .controls button:nth-child(1)")
                for kind in KINDS:
                    await page.wait_for_function(f"window.demo[{kind!r}].id !== null")
                tabs.append(page)
            ids = {(t, k): await tabs[t].evaluate(f"window.demo[{k!r}].id") for t in range(2) for k in KINDS}
            assert len(set(ids.values())) == 6 and set(ids.values()) == set(registry.connections)
            for (t, k), cid in ids.items():
                assert registry.connections[cid].channel.path == "/demo/live"
                welcome = (await lines(tabs[t], k, "welcome"))[0]
                assert welcome["connection_id"] == cid and welcome["transport"] == TRANSPORT[k]
                assert await tabs[t].inner_text(f"#{k} .meta b") == cid

            # what each connection sends comes back to it alone, in order, with its id
            for k in KINDS:
                for i in range(5):
                    await say(tabs[0], k, f"{k} {i}")
            await say(tabs[1], "ws", "from the second tab")
            for k in KINDS:
                await wait_for(lambda k=k: has(tabs[0], k, "user_message", 5), what=f"tab 1's {k} messages")
                got = await lines(tabs[0], k, "user_message")
                assert [m["message"] for m in got] == [f"{k} {i}" for i in range(5)]
                assert {m["connection_id"] for m in got} == {ids[(0, k)]}
                assert {m["transport"] for m in got} == {TRANSPORT[k]}
            await wait_for(lambda: has(tabs[1], "ws", "user_message", 1), what="tab 2's message")
            assert [m["message"] for m in await lines(tabs[1], "ws", "user_message")] == ["from the second tab"]
            for k in ("poll", "sse"):
                assert await lines(tabs[1], k, "user_message") == []  # isolated: nothing of anyone else's

            # the server's heartbeat reaches every section of every tab, with timestamps on screen
            for t in range(2):
                for k in KINDS:
                    await wait_for(lambda t=t, k=k: has(tabs[t], k, "heartbeat", 1), what="a heartbeat")
            assert await tabs[0].locator("#ws li time").count() >= 7

            os.makedirs("/tmp/shots", exist_ok=True)
            await tabs[0].screenshot(path="/tmp/shots/transports.png", full_page=True)

            # closing a tab ends its three connections (the poller's after its grace); the other's stay
            await tabs[1].close()
            others = {ids[(1, k)] for k in KINDS}
            await wait_for(lambda: not others & set(registry.connections), what="tab 2's connections to end")
            assert {ids[(0, k)] for k in KINDS} <= set(registry.connections)
        finally:
            await browser.close()
