"""Hot reload through real files and the real watcher: saving is all it takes, and nobody connected
notices anything but the new behaviour."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, wait_for
from sse_client import SSEReader

from engine.http.keys import SCRIPTS, STREAMS, SUBSCRIPTIONS


async def text(client: TestClient, path: str) -> str:
    r = await client.get(path)
    return f"{r.status} {await r.text()}"


async def serves(client: TestClient, path: str, expected: str, what: str = "") -> None:
    async def check() -> bool:
        return await text(client, path) == expected
    await wait_for(check, what=what or f"{path} to answer {expected!r}")


def save(folder: Path, name: str, source: str) -> None:
    (folder / name).write_text(source, encoding="utf-8")


def js_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("js:"))


async def test_add_change_rename_and_delete(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await engine_client()
    save(scripts_dir, "a.js", 'register("/a", () => "one");')
    await serves(client, "/a", "200 one")
    save(scripts_dir, "a.js", 'register("/a", () => "two");')
    await serves(client, "/a", "200 two")

    (scripts_dir / "sub").mkdir()
    save(scripts_dir, "sub/b.js", 'register("/b", () => "b");')
    await serves(client, "/b", "200 b")
    os.rename(scripts_dir / "sub/b.js", scripts_dir / "c.js")  # a rename: the old name goes, the new comes
    await wait_for(lambda: set(client.app[SCRIPTS].records) == {"a.js", "c.js"}, what="the rename")
    await serves(client, "/b", "200 b")

    (scripts_dir / "a.js").unlink()
    async def gone() -> bool:
        return (await client.get("/a")).status == 404
    await wait_for(gone, what="/a to go away with its file")
    assert set(client.app[SCRIPTS].records) == {"c.js"}


async def test_a_save_that_changes_nothing_reloads_nothing(engine_client: MakeClient, scripts_dir: Path) -> None:
    save(scripts_dir, "a.js", 'register("/a", () => "one");')
    client = await engine_client()
    record = client.app[SCRIPTS].records["a.js"]
    ctx = record.context
    os.utime(scripts_dir / "a.js")
    save(scripts_dir, "a.js", 'register("/a", () => "one");')
    save(scripts_dir, "b.js", 'register("/b", () => "b");')  # a change the watcher must get to after a.js
    await serves(client, "/b", "200 b")
    assert record.context is ctx


async def test_a_request_running_on_the_old_version_finishes_on_it(engine_client: MakeClient,
                                                                    scripts_dir: Path) -> None:
    slow = 'register("/v", () => new Promise((ok) => setTimeout(() => ok("old"), 300)));'
    save(scripts_dir, "v.js", slow)
    client = await engine_client()
    running = asyncio.ensure_future(text(client, "/v"))
    await wait_for(lambda: client.app[SCRIPTS].records["v.js"].context.inflight == 1, what="the request to start")
    save(scripts_dir, "v.js", 'register("/v", () => "new");')
    await serves(client, "/v", "200 new")
    assert await running == "200 old"  # not a 503: it finished where it started
    await wait_for(lambda: client.app[SCRIPTS].background == 0, what="the old version to close")
    assert js_threads() == 1


async def test_the_old_versions_timers_stop(engine_client: MakeClient, scripts_dir: Path) -> None:
    source = ('registerWebStream("/t");\n'
              'setInterval(() => sendStreamMessage("VERSION"), 5);\n')
    save(scripts_dir, "t.js", source.replace("VERSION", "v1"))
    client = await engine_client()
    reader = SSEReader(await client.get("/t"))
    assert (await reader.next()).data == "v1"
    save(scripts_dir, "t.js", source.replace("VERSION", "v2"))
    while (await reader.next()).data != "v2":
        pass
    assert [e.data for e in await reader.take(20)] == ["v2"] * 20


async def test_twenty_saves_in_a_row_lose_nothing(engine_client: MakeClient, scripts_dir: Path) -> None:
    source = ('registerWebStream("/ticks");\nlet n = 0;\n'
              'setInterval(() => sendStreamMessage("VERSION:" + n++), 4);\n')
    save(scripts_dir, "ticks.js", source.replace("VERSION", "0"))
    client = await engine_client()
    records = client.app[SCRIPTS].records
    response = await client.get("/ticks")
    reader = SSEReader(response)
    ids: list[int] = []
    versions: set[str] = set()
    stop = asyncio.Event()

    async def read() -> None:
        while not stop.is_set():
            event = await reader.next()
            ids.append(int(event.id.rpartition("-")[2]))  # type: ignore[union-attr]
            versions.add(event.data.split(":")[0])

    reading = asyncio.ensure_future(read())
    for version in range(1, 21):
        before = records["ticks.js"].context
        save(scripts_dir, "ticks.js", source.replace("VERSION", str(version)))
        await wait_for(lambda b=before: records["ticks.js"].context is not b, what=f"version {version} to load")
        await wait_for(lambda v=version: str(v) in versions, what=f"a message from version {version}")
    stop.set()
    await asyncio.wait_for(reading, 5)
    assert versions == {str(v) for v in range(21)}
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # one gap-free, duplicate-free sequence
    assert not response.content.at_eof() and client.app[STREAMS].connection_count == 1  # never dropped
    response.close()


async def test_a_path_the_new_version_drops_ends_cleanly(engine_client: MakeClient, scripts_dir: Path) -> None:
    save(scripts_dir, "s.js", 'registerWebStream("/keep"); registerWebStream("/drop");')
    client = await engine_client()
    keep, drop = SSEReader(await client.get("/keep")), SSEReader(await client.get("/drop"))
    await wait_for(lambda: client.app[STREAMS].connection_count == 2, what="both readers")
    save(scripts_dir, "s.js", 'registerWebStream("/keep");\n'
                              'register("/send", () => { sendStreamMessage("hi"); return "ok"; });')
    assert await drop.ended()  # the stream ends with HTTP's last chunk: a clean end, not a reset
    await serves(client, "/send", "200 ok")
    assert (await keep.next()).data == "hi"


async def test_a_graphql_subscription_survives_a_reload(engine_client: MakeClient, scripts_dir: Path) -> None:
    source = ('registerGraphQLSubscription("news", "type Subscription { news: String }", () => undefined);\n'
              'register("/send", () => { sendSubscriptionMessage("news", "VERSION"); return "VERSION"; });\n')
    save(scripts_dir, "n.js", source.replace("VERSION", "v1"))
    client = await engine_client()
    r = await client.post("/graphql/sse", json={"query": "subscription { news }"})
    reader = SSEReader(r)
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 1, what="the subscription")
    save(scripts_dir, "n.js", source.replace("VERSION", "v2"))
    await serves(client, "/send", "200 v2")  # retried until v2 serves; v1 may have sent first
    while json.loads((await reader.next()).data)["data"]["news"] != "v2":
        pass
    assert client.app[SUBSCRIPTIONS].count == 1
    r.close()


@pytest.mark.parametrize("broken, expected", [
    ('register("/v", () => {', "v.js:1: SyntaxError"),
    ('register("/v", () => "x");\nthrow new Error("no, not now");', "v.js:2: Error: no, not now"),
    ("for (;;) {}", "v.js:1: ran past the time limit"),
    # Out of memory, QuickJS sometimes cannot even build the error, so the line may be missing.
    ('let a = []; for (;;) a.push("x".repeat(1000));', "ran past the memory limit"),
])
async def test_a_failed_reload_keeps_the_old_version_serving(
    engine_client: MakeClient, scripts_dir: Path, broken: str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    save(scripts_dir, "v.js", 'register("/v", () => "good");')
    client = await engine_client(script_time_ms=200, script_memory_mb=16)
    record = client.app[SCRIPTS].records["v.js"]
    save(scripts_dir, "v.js", broken)
    await wait_for(lambda: record.last_error is not None, what="the failed reload")
    assert expected in record.last_error  # type: ignore[operator]
    assert await text(client, "/v") == "200 good"
    listed = (await (await client.get("/_engine/scripts")).json())["scripts"]
    assert listed == [{"name": "v.js", "status": "loaded", "loaded_at": listed[0]["loaded_at"],
                       "last_error": record.last_error, "latest_failed": True}]
    health = await (await client.get("/health")).json()  # an older version serves, but the save failed
    assert health["status"] == "degraded" and health["scripts"]["failing_names"] == ["v.js"]
    save(scripts_dir, "v.js", 'register("/v", () => "fixed");')
    await serves(client, "/v", "200 fixed")
    health = await (await client.get("/health")).json()
    assert health["status"] == "ok" and health["scripts"]["failing_names"] == []
    assert any(expected in r.getMessage() and "previous version keeps serving" in r.getMessage()
               for r in caplog.records)
    save(scripts_dir, "v.js", 'register("/v", () => "fixed");')  # and a good save recovers
    await serves(client, "/v", "200 fixed")
    assert record.last_error is None


async def test_fifty_saves_in_a_second_end_in_the_last_version(engine_client: MakeClient, scripts_dir: Path) -> None:
    save(scripts_dir, "v.js", 'register("/v", () => "start");')
    client = await engine_client()
    scripts = client.app[SCRIPTS]
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(50):
        save(scripts_dir, "v.js", f'registerWebStream("/s{i % 3}");\nregister("/v", () => "v{i}");\n'
                                  f'setInterval(() => sendStreamMessage("{i}"), 10);\n')
        await asyncio.sleep(0)  # let the loop breathe between writes, as an editor would
    assert loop.time() - started < 1.0
    await serves(client, "/v", "200 v49", what="the last version")
    await wait_for(lambda: scripts.background == 0, what="every replaced version to close")
    assert js_threads() == 1  # one context, one thread: nothing leaked
    assert scripts.records["v.js"].status == "loaded" and set(client.app[STREAMS].streams) == {"/s1"}


async def test_a_script_refused_over_a_conflict_loads_once_the_other_lets_go(
    engine_client: MakeClient, scripts_dir: Path
) -> None:
    save(scripts_dir, "a.js", 'register("/x", () => "a");')
    save(scripts_dir, "b.js", 'register("/x", () => "b");\n'
                              'registerGraphQLQuery("bq", "type Query { bq: Int }", () => 2);')
    client = await engine_client()
    records = client.app[SCRIPTS].records
    assert records["b.js"].status == "failed" and "already registered by script a.js" in records["b.js"].last_error
    save(scripts_dir, "a.js", 'register("/x", () => "a2");')  # still holds /x: b.js stays refused
    await serves(client, "/x", "200 a2")
    assert records["b.js"].status == "failed"
    save(scripts_dir, "a.js", 'register("/y", () => "a3");')  # lets /x go: b.js gets another go
    await serves(client, "/x", "200 b")
    r = await client.post("/graphql", json={"query": "{ bq }"})
    assert await r.json() == {"data": {"bq": 2}}


BURST = """
registerWebStream("/burst");
register("/go", () => {
  setTimeout(() => { for (let i = 1; i <= 40000; i++) sendStreamMessageToPath("/burst", String(i)); }, 0);
  return "ok";
});
"""


async def test_messages_still_being_applied_when_a_save_lands_are_not_dropped(engine_client: MakeClient) -> None:
    """A timer's 40,000 messages to 10 readers are applied in slices; a reload while that is under
    way waits for them before the old version closes."""
    client = await engine_client(extra={"b.js": BURST})
    readers = [SSEReader(await client.get("/burst")) for _ in range(10)]
    stream = client.app[STREAMS].channels["/burst"]
    assert await (await client.get("/go")).text() == "ok"
    await wait_for(lambda: stream.sent > 0, what="the burst to start")
    record = await client.app[SCRIPTS].save("b.js", BURST + "// v2\n")
    assert record.status == "loaded"
    assert 0 < stream.sent < 40000 or pytest.fail("the burst was over before the save landed: nothing tested")
    await wait_for(lambda: client.app[SCRIPTS].background == 0, what="the old version to close")
    assert stream.sent == 40000  # all of it applied, none dropped with the old version
    for reader in readers:
        assert [e.data for e in await reader.take(40000, timeout=20)] == [str(i) for i in range(1, 40001)]


CLOSING = """
register("/spin", () => { const t = Date.now(); while (Date.now() - t < 300) {}
  return new Promise((ok) => setTimeout(() => ok("late"), 100)); });
register("/never", () => new Promise(() => {}));
"""


@pytest.mark.parametrize("path", ["/spin", "/never"])
async def test_calls_under_way_when_a_context_closes_are_answered(
        engine_client: MakeClient, scripts_dir: Path, path: str) -> None:
    """A context closes (shutdown, or a retiring version whose wait ran out) while a call is on the
    script's thread (/spin: it returns a Promise after) or waits on its Promise (/never): each
    caller gets an answer, nothing raises in a callback, and no call stays counted in flight."""
    loop = asyncio.get_running_loop()
    errors: list[str] = []
    loop.set_exception_handler(lambda _loop, c: errors.append(f"{c.get('message')} {c.get('exception')!r}"))
    save(scripts_dir, "s.js", CLOSING)
    client = await engine_client(handler_timeout_ms=60_000)
    ctx = client.app[SCRIPTS].records["s.js"].context
    request = asyncio.ensure_future(client.get(path))
    if path == "/never":
        await wait_for(lambda: ctx._pending, what="the call's Promise waited on")  # noqa: SLF001
    else:
        await wait_for(lambda: ctx.inflight == 1, what="the call made")
    await ctx.close()
    resp = await asyncio.wait_for(request, 5)
    assert resp.status >= 500 and (await resp.json())["error"]["code"]
    await wait_for(lambda: ctx.inflight == 0, what="no call left in flight")
    assert errors == []
