"""The console at /_engine/ in real Chromium, against a real server: sign-in, every panel showing
what the server holds, closing a connection, the live log, the publish box reaching an EventSource
on another page, and the editor saving (and failing to save) a script. Plus its JSON endpoints'
guards and bad input."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

from conftest import MakeClient, make_config, wait_for
from playwright.async_api import Page, async_playwright

from engine.http.keys import SCRIPTS, STREAMS

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TOKEN = "console-test-token"
SCRIPT = """
registerWebStream("/news");
register("/hello", () => "hello v1");
register("/shout", (req) => { console.warn("shouting " + (req.query.text || "")); return "ok"; });
registerGraphQLQuery("answer", "type Query { answer: Int }", () => 42);
"""


async def text_of(page: Page, selector: str) -> str:
    return await page.eval_on_selector(selector, "e => e.textContent")


async def test_the_console_shows_and_drives_a_live_server(engine_client: MakeClient, scripts_dir: Path,
                                                          tmp_path: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, admin=replace(config.admin, token=TOKEN))
    client = await engine_client(extra={"site.js": SCRIPT}, config=config)
    base = f"http://{client.host}:{client.port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            reader = await browser.new_page()  # another page, reading /news with EventSource
            await reader.goto(base + "/health")
            await reader.evaluate("() => { window.got = []; window.news = new EventSource('/news');"
                                  " window.news.onmessage = (e) => window.got.push(e.data); }")
            await wait_for(lambda: client.app[STREAMS].connection_count == 1, what="the other page's reader")

            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            outside: list[str] = []
            page.on("request", lambda req: None if req.url.startswith(base) else outside.append(req.url))
            await page.goto(base + "/_engine/")
            await page.wait_for_selector("#login:not([hidden])")  # a token is set: it asks for it
            await page.fill("#login-token", "wrong")
            await page.click("#login-form button")
            await page.wait_for_function("document.querySelector('#login-error').textContent.includes('not the')")
            await page.fill("#login-token", TOKEN)
            await page.click("#login-form button")
            await page.wait_for_selector("#login", state="hidden")

            # Overview: live figures over the engine's own stream
            await page.wait_for_function("document.querySelector('#feed').textContent === 'live'")
            await page.wait_for_function("document.querySelector('#c-scripts').textContent === '1 loaded'")
            assert await text_of(page, "#health") == "healthy"
            assert int(await text_of(page, "#c-connections")) >= 1
            assert await text_of(page, "#c-broker") == "memory"
            await page.screenshot(path=str(tmp_path / "console.png"))

            # Scripts: what site.js registered
            await page.click("#tabs button[data-tab=scripts]")
            card = await page.wait_for_selector(".script[data-script='site.js']")
            assert card is not None
            listed = await card.text_content() or ""
            assert "GET /hello" in listed and "/news" in listed and "Query.answer" in listed and "loaded" in listed

            # Channels: the stream and its reader
            await page.click("#tabs button[data-tab=channels]")
            row = await page.wait_for_selector("#stream-table tr[data-stream='/news']")
            assert row is not None and "sse 1" in (await row.text_content() or "")

            # Logs: a line a script logs shows up, and a level filter hides it
            await page.click("#tabs button[data-tab=logs]")
            await client.get("/shout", params={"text": "across the room"})
            await page.wait_for_function("[...document.querySelectorAll('#log-lines div')].some("
                                         "d => d.textContent.includes('shouting across the room'))")
            await page.select_option("#log-level", "error")
            assert await page.eval_on_selector_all(
                "#log-lines div", "ds => ds.filter(d => d.textContent.includes('shouting') && !d.hidden).length") == 0

            # Publish: the other page's EventSource gets it, and the console sees it arrive
            await page.click("#tabs button[data-tab=publish]")
            await page.fill("#pub-path", "/news")
            await page.fill("#pub-data", '{"headline": "from the console"}')
            await page.click("#publish-form button[type=submit]")
            await reader.wait_for_function("window.got.length === 1")
            assert json.loads((await reader.evaluate("window.got"))[0]) == {"headline": "from the console"}
            await page.wait_for_function("document.querySelector('#arrivals').textContent.includes('headline')")

            # Connections: the other page's reader is listed; Close ends it
            await page.click("#tabs button[data-tab=connections]")
            await page.wait_for_function("[...document.querySelectorAll('#conn-table tr[data-connection]')]"
                                         ".some(r => r.textContent.includes('/news'))")
            row = ("[...document.querySelectorAll('#conn-table tr[data-connection]')]"
                   ".find(r => r.dataset.connection === ")
            closed = next(c.id for c in client.app[STREAMS].connections.values() if c.channel.path == "/news")
            await page.wait_for_function(f"!!{row}{json.dumps(closed)})")
            await page.evaluate(f"() => {row}{json.dumps(closed)}).querySelector('button').click()")
            await wait_for(lambda: closed not in client.app[STREAMS].connections, what="the closed reader to go")

            # Editor: open site.js, change it, save: the route answers the new version
            await page.click("#tabs button[data-tab=editor]")
            await page.wait_for_function("document.querySelector('.CodeMirror').CodeMirror.getValue()"
                                         ".includes('hello v1')")
            await page.evaluate("() => { const cm = document.querySelector('.CodeMirror').CodeMirror;"
                                " cm.setValue(cm.getValue().replace('hello v1', 'hello v2')); }")
            await page.click("#edit-save")
            await page.wait_for_function("document.querySelector('#edit-result').textContent.includes('loaded')")
            assert await (await client.get("/hello")).text() == "hello v2"
            # a save that does not load: the error inline, its line marked, the old version serving
            await page.evaluate("() => document.querySelector('.CodeMirror').CodeMirror.setValue("
                                "'register(\"/hello\", () => \"v3\");\\nthis is not JavaScript;')")
            await page.click("#edit-save")
            await page.wait_for_selector("#edit-error:not([hidden])")
            assert "site.js:2" in await text_of(page, "#edit-error")
            assert await page.eval_on_selector_all(".cm-error-line", "ls => ls.length") == 1
            assert await (await client.get("/hello")).text() == "hello v2"
            assert client.app[SCRIPTS].records["site.js"].latest_failed
            await page.screenshot(path=str(tmp_path / "console-editor.png"))
            assert errors == [] and outside == []  # no script errors; nothing fetched from elsewhere
        finally:
            await browser.close()


async def test_the_console_api_is_guarded_and_checks_what_it_is_sent(engine_client: MakeClient,
                                                                     scripts_dir: Path) -> None:
    config = make_config(scripts_dir)
    config = replace(config, admin=replace(config.admin, token=TOKEN))
    client = await engine_client(extra={"site.js": SCRIPT}, config=config)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.get("/_engine/")).status == 200  # the page itself: it asks for the token
    assert (await client.get("/_engine/console/console.js")).status == 200
    assert (await client.get("/_engine/console/index.html")).status == 404  # only the listed files
    assert (await client.get("/_engine/console/..%2f..%2fapp.py")).status == 404
    for method, path in (("GET", "/_engine/overview"), ("GET", "/_engine/connections"), ("GET", "/_engine/live"),
                         ("POST", "/_engine/publish"), ("DELETE", "/_engine/connections/abcdef01.AAAAAAAAAAAAAAAA")):
        assert (await client.request(method, path)).status == 401, path
    bad = {"not json": b"{", "no path": b'{"data": 1}', "a path of no stream": b'{"path": "/nowhere", "data": 1}',
           "an engine event": b'{"path": "/news", "data": 1, "event": "connected"}'}
    expected = {"not json": 400, "no path": 400, "a path of no stream": 404, "an engine event": 400}
    as_json = {**auth, "Content-Type": "application/json"}
    for why, body in bad.items():
        r = await client.post("/_engine/publish", data=body, headers=as_json)
        assert r.status == expected[why], (why, await r.text())
    # what a page of another site can send without a preflight is refused (no cross-site publish)
    for kind in ("text/plain", "application/x-www-form-urlencoded"):
        r = await client.post("/_engine/publish", data=b'{"path": "/news", "data": 1}',
                              headers={**auth, "Content-Type": kind})
        assert r.status == 415
    page = await client.get("/_engine/")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    # a token that is not even text is a 401, not a failure of the server
    assert (await client.get("/_engine/overview", headers={"Authorization": "Bearer \xff\xfe"})).status == 401
    big = json.dumps({"path": "/news", "data": "x" * (config.limits.max_message_bytes + 1)}).encode()
    assert (await client.post("/_engine/publish", data=io.BytesIO(big), headers=as_json)).status == 413
    assert (await client.delete("/_engine/connections/not-an-id", headers=auth)).status == 400
    assert (await client.delete("/_engine/connections/abcdef01.AAAAAAAAAAAAAAAA", headers=auth)).status == 404
    assert (await client.get("/_engine/connections", params={"limit": "many"}, headers=auth)).status == 400
    listing = await (await client.get("/_engine/overview", headers=auth)).json()
    assert [s["name"] for s in listing["scripts"]] == ["site.js"]
