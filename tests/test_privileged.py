"""Privileged scripts (scripts.privileged): aiwebengine's script and asset management globals, through a
real server. Every other script gets a clear Error; forged commands are refused in Python; the limits
hold in Python whatever the JS said."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, wait_for
from test_boundary import compromise

from engine.config import AssetsConfig, Config
from engine.http.keys import MANAGEMENT, SCRIPTS

# An editor as a user would write one: every privileged global behind a route.
EDITOR = r"""
const out = (v) => ({ body: JSON.stringify(v), contentType: "application/json" });
register("/ed/list", () => out({ scripts: listScripts(), assets: listAssets() }));
register("/ed/script", (req) => out({ source: getScript(req.query.name) }));
register("/ed/script", (req) => {
  try { upsertScript(req.query.name, req.body); } catch (e) { return out({ error: e.message }); }
  return out({ readBack: getScript(req.query.name) });
}, "PUT");
register("/ed/script", (req) => out({ existed: deleteScript(req.query.name) }), "DELETE");
register("/ed/logs", (req) => out(listLogsForUri(req.query.name)));
register("/ed/asset", (req) => {
  const a = fetchAsset(req.query.path);
  if (a !== null && typeof a.content !== "string") a.content = { bytes: Array.from(a.content) };
  return out(a);
});
register("/ed/asset", (req) => {
  let content = req.body;
  if (req.query.bytes) content = new Uint8Array(JSON.parse(req.body));
  try { upsertAsset(req.query.path, content, req.query.type); } catch (e) { return out({ error: e.message }); }
  return out({ ok: true });
}, "PUT");
register("/ed/asset", (req) => out({ existed: deleteAsset(req.query.path) }), "DELETE");
register("/ed/bad", (req) => {
  const errors = [];
  for (const call of JSON.parse(req.body)) {
    const args = call[1].map((a) => typeof a === "string" && a.startsWith("@x") ? "x".repeat(+a.slice(2)) : a);
    try { globalThis[call[0]](...args); errors.push(null); } catch (e) { errors.push(e.message); }
  }
  return out(errors);
}, "POST");
register("/ed/many", (req) => {
  for (let i = 0; i < Number(req.query.n); i++) {
    if (req.query.assets) upsertAsset("/many/a" + i + ".txt", "a" + i);
    else upsertScript("many/m" + i + ".js", 'register("/m' + i + '", () => "m");');
  }
  return "ok";
}, "POST");
writeLog("editor sees " + listScripts().join(","));
"""

PLAIN = r"""
register("/plain/try", (req) => {
  try { globalThis[req.query.fn]("x.js", "y"); return "no error"; }
  catch (e) { return e.constructor.name + ": " + e.message; }
});
writeLog("plain here");
"""

NAMES = ["listScripts", "getScript", "upsertScript", "deleteScript", "listLogsForUri",
         "listAssets", "fetchAsset", "upsertAsset", "deleteAsset"]


def privileged_config(scripts_dir: Path, **assets: Any) -> Config:
    config = make_config(scripts_dir)
    return replace(config, scripts=replace(config.scripts, privileged=("editor.js",)),
                   assets=replace(AssetsConfig(), dir=str(scripts_dir.parent / "assets"), **assets))


async def start(engine_client: MakeClient, scripts_dir: Path, extra: dict[str, str] | None = None,
                **assets: Any) -> TestClient:
    return await engine_client(extra={"editor.js": EDITOR, "plain.js": PLAIN, **(extra or {})},
                               config=privileged_config(scripts_dir, **assets))


async def get_json(client: TestClient, url: str, **params: str) -> Any:
    resp = await client.get(url, params=params)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def logs_of(client: TestClient, name: str) -> list[str]:
    return await get_json(client, "/ed/logs", name=name)  # type: ignore[no-any-return]


async def logged(client: TestClient, name: str, text: str) -> bool:
    return any(text in line for line in await logs_of(client, name))


async def test_a_privileged_script_lists_reads_writes_and_deletes_scripts(
        engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    # Its top level already sees every script (the view arrives before it runs).
    assert await wait_for(lambda: logs_of(client, "editor.js")) == ["editor sees editor.js,plain.js"]
    assert await get_json(client, "/ed/list") == {"scripts": ["editor.js", "plain.js"], "assets": []}
    assert (await get_json(client, "/ed/script", name="plain.js"))["source"] == PLAIN
    assert (await get_json(client, "/ed/script", name="nope.js"))["source"] is None
    assert await logs_of(client, "plain.js") == ["plain here"]

    # upsertScript: the same call reads it back; the engine writes the file and loads it.
    source = 'register("/made", () => "made by the editor"); writeLog("made here");'
    resp = await client.put("/ed/script", params={"name": "sub/made.js"}, data=source)
    assert (await resp.json()) == {"readBack": source}
    await wait_for(lambda: "upsertScript(sub/made.js): saved and loaded" in " ".join(
        client.app[SCRIPTS].records["editor.js"].logs), what="the load reported")
    assert (scripts_dir / "sub" / "made.js").read_text() == source
    assert await (await client.get("/made")).text() == "made by the editor"
    assert await wait_for(lambda: logs_of(client, "sub/made.js"), what="its log in the view") == ["made here"]
    await wait_for(lambda: logged(client, "editor.js", "[info] upsertScript(sub/made.js): saved and loaded"))
    assert "sub/made.js" in (await get_json(client, "/ed/list"))["scripts"]

    # A version that fails to load: written, the old one serves, and both logs say why.
    await client.put("/ed/script", params={"name": "sub/made.js"}, data='register("/made", () => {')
    await wait_for(lambda: any("failed to load" in line for line in client.app[SCRIPTS].records["editor.js"].logs))
    assert await (await client.get("/made")).text() == "made by the editor"
    await wait_for(lambda: any("load failed" in line for line in client.app[SCRIPTS].records["sub/made.js"].logs))
    await wait_for(lambda: logged(client, "sub/made.js", "SyntaxError"), what="the failure in the view")

    # A script saved through the admin API reaches the view too.
    await client.put("/_engine/scripts/other.js", data='register("/other", () => "o");')
    await wait_for(lambda: _has_source(client, "other.js"), what="view")
    assert (await get_json(client, "/ed/script", name="other.js"))["source"] == 'register("/other", () => "o");'

    # deleteScript: the file goes, the script unloads, the view forgets it.
    assert await (await client.delete("/ed/script", params={"name": "sub/made.js"})).json() == {"existed": True}
    await wait_for(lambda: "sub/made.js" not in client.app[SCRIPTS].records, what="unloaded")
    assert not (scripts_dir / "sub" / "made.js").exists()
    assert (await client.get("/made")).status == 404
    assert await (await client.delete("/ed/script", params={"name": "sub/made.js"})).json() == {"existed": False}
    assert "sub/made.js" not in (await get_json(client, "/ed/list"))["scripts"]


async def test_every_other_script_gets_a_clear_error(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    for name in NAMES:
        text = await (await client.get("/plain/try", params={"fn": name})).text()
        assert text == (f"Error: {name}: only privileged scripts may manage scripts and assets; list plain.js in "
                        "scripts.privileged (config.yaml) to allow it"), text
    assert sorted(p.name for p in scripts_dir.iterdir()) == ["editor.js", "plain.js"]


async def test_assets_are_written_served_fetched_and_deleted(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    assets = scripts_dir.parent / "assets"
    resp = await client.put("/ed/asset", params={"path": "/css/site.css"}, data="body { color: red }")
    assert await resp.json() == {"ok": True}
    await wait_for(lambda: (assets / "css" / "site.css").exists(), what="the asset written")
    served = await client.get("/css/site.css")
    assert served.status == 200 and await served.text() == "body { color: red }"
    assert served.headers["Content-Type"] == "text/css; charset=utf-8"
    assert served.headers["Cache-Control"] == "no-cache" and served.headers["X-Content-Type-Options"] == "nosniff"
    etag = served.headers["ETag"]
    again = await client.get("/css/site.css", headers={"If-None-Match": etag})
    assert again.status == 304
    head = await client.head("/css/site.css")
    assert head.status == 200 and head.headers["Content-Length"] == "19"
    part = await client.get("/css/site.css", headers={"Range": "bytes=0-3"})
    assert part.status == 206 and await part.text() == "body"

    # The engine's guess reaches the view; a type given is kept, and served.
    await wait_for(lambda: _fetched_type(client, "/css/site.css", "text/css; charset=utf-8"), what="the type")
    fetched = await get_json(client, "/ed/asset", path="/css/site.css")
    assert fetched["content"] == "body { color: red }" and fetched["size"] == 19 and fetched["path"] == "/css/site.css"
    await client.put("/ed/asset", params={"path": "/data/feed", "type": "application/rss+xml"}, data="<rss/>")
    await wait_for(lambda: (assets / "data" / "feed").exists())
    assert (await client.get("/data/feed")).headers["Content-Type"] == "application/rss+xml"
    assert json.loads((assets / ".types.json").read_text()) == {"/data/feed": "application/rss+xml"}

    # Bytes in, bytes out, and served as they are.
    raw = [0, 1, 2, 127, 128, 200, 255]
    await client.put("/ed/asset", params={"path": "/img/x.png", "bytes": "1"}, data=json.dumps(raw))
    await wait_for(lambda: (assets / "img" / "x.png").exists())
    assert (await (await client.get("/img/x.png")).read()) == bytes(raw)
    assert (await client.get("/img/x.png")).headers["Content-Type"] == "image/png"
    assert (await get_json(client, "/ed/asset", path="/img/x.png"))["content"] == {"bytes": raw}

    # index.html answers for its folder, and for `/` in place of the landing page.
    await client.put("/ed/asset", params={"path": "/index.html"}, data="<h1>home</h1>")
    await wait_for(lambda: (assets / "index.html").exists())
    home = await client.get("/", headers={"Accept": "text/html"})
    assert await home.text() == "<h1>home</h1>" and home.headers["Content-Type"] == "text/html; charset=utf-8"

    # A file put there by hand is served at once and reaches the views.
    (assets / "hand.txt").write_text("by hand")
    assert await (await client.get("/hand.txt")).text() == "by hand"
    await wait_for(lambda: _listed(client, "/hand.txt"), what="the hand-made asset in the view")

    # Script routes come first.
    await client.put("/_engine/scripts/route.js", data='register("/hand.txt", () => "the route");')
    assert await (await client.get("/hand.txt")).text() == "the route"

    assert await (await client.delete("/ed/asset", params={"path": "/img/x.png"})).json() == {"existed": True}
    await wait_for(lambda: not (assets / "img" / "x.png").exists())
    assert (await client.get("/img/x.png")).status == 404
    assert await get_json(client, "/ed/asset", path="/img/x.png") is None
    assert await (await client.delete("/ed/asset", params={"path": "/img/x.png"})).json() == {"existed": False}


async def _fetched_type(client: TestClient, path: str, want: str) -> bool:
    return (await get_json(client, "/ed/asset", path=path))["contentType"] == want  # type: ignore[no-any-return]


async def _has_source(client: TestClient, name: str) -> bool:
    return (await get_json(client, "/ed/script", name=name))["source"] is not None


async def _unlisted(client: TestClient, path: str) -> bool:
    return not await _listed(client, path)


async def _listed(client: TestClient, path: str) -> bool:
    return path in (await get_json(client, "/ed/list"))["assets"]


BAD_CALLS: list[tuple[list[Any], str]] = [
    (["getScript", ["../x.js"]], "getScript: \"../x.js\" is not a script name"),
    (["upsertScript", ["/abs.js", "x"]], "is not a script name"),
    (["upsertScript", [".hidden.js", "x"]], "is not a script name"),
    (["upsertScript", ["notes.txt", "x"]], "is not a script name"),
    (["upsertScript", ["a\\b.js", "x"]], "is not a script name"),
    (["upsertScript", ["x.js", 42]], "upsertScript: the source must be a string, got number 42"),
    (["upsertScript", ["x.js", "@x5000"]], "the limit is 4096 (limits.max_body_bytes)"),
    (["deleteScript", [None]], "is not a script name"),
    (["listLogsForUri", [{}]], "is not a script name"),
    (["fetchAsset", ["no-slash.css"]], "path must start with '/'"),
    (["upsertAsset", ["/../up.css", "x"]], "is not an asset path"),
    (["upsertAsset", ["/.env", "x"]], "is not an asset path"),
    (["upsertAsset", ["/graphql/x.js", "x"]], "is reserved by the engine"),
    (["upsertAsset", ["/a%20b.css", "x"]], "not %-encoded"),
    (["upsertAsset", ["/a b.css", "x"]], "must not contain whitespace"),
    (["upsertAsset", ["/x.html", "x", "text/html\r\nSet-Cookie: a=b"]], "the content type must be a media type"),
    (["upsertAsset", ["/x.html", 12]], "the content must be a string, a Uint8Array or an ArrayBuffer"),
    (["upsertAsset", ["/x.html", "@x600"]], "the limit is 512 (assets.max_bytes)"),
    (["deleteAsset", ["/x/"]], "is not an asset path"),
    # What Python refuses, the JS refuses too, at the call, with nothing queued.
    (["upsertScript", ["\u00e9" * 130 + ".js", "x"]], "parts of at most 255 bytes"),
    (["upsertScript", ["a\nb.js", "x"]], "is not a script name"),
    (["upsertScript", ["a\u202eb.js", "x"]], "is not a script name"),
    (["upsertScript", ["ok.js", "a\ud800b"]], "the source holds a lone surrogate"),
    (["upsertAsset", ["/\ud800", "x"]], "is not an asset path"),
    (["upsertAsset", ["/ok.txt", "a\ud800b"]], "the content holds a lone surrogate"),
    (["upsertAsset", ["/i.css", "x", "text/css\u2028;x=y"]], "the content type must be a media type"),
    (["upsertAsset", ["/i.css", "x", "text/css;x=\"\u0000\""]], "the content type must be a media type"),
]


async def test_bad_arguments_throw_and_write_nothing(engine_client: MakeClient, scripts_dir: Path) -> None:
    config = privileged_config(scripts_dir, max_bytes=512)
    config = replace(config, limits=replace(config.limits, max_body_bytes=4096))
    client = await engine_client(extra={"editor.js": EDITOR, "plain.js": PLAIN}, config=config)
    calls = [c for c, _ in BAD_CALLS]
    resp = await client.post("/ed/bad", data=json.dumps(calls))
    errors = await resp.json()
    assert isinstance(errors, list), errors
    for (call, want), got in zip(BAD_CALLS, errors, strict=True):
        assert got is not None and want in got, (call, got)
    assert sorted(p.name for p in scripts_dir.iterdir()) == ["editor.js", "plain.js"]
    assert not (scripts_dir.parent / "assets").exists()


async def test_the_limits_hold_in_python(engine_client: MakeClient, scripts_dir: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """The JS checks only the size of one asset; how many there are and what they weigh together is the
    engine's to check, and a refused write leaves the views with what the folder holds."""
    client = await start(engine_client, scripts_dir, max_count=2, max_total_bytes=90, max_bytes=60)
    assets = scripts_dir.parent / "assets"
    for name in ("a", "b"):
        await client.put("/ed/asset", params={"path": f"/{name}.txt"}, data="x" * 40)
    await wait_for(lambda: (assets / "b.txt").exists())
    await client.put("/ed/asset", params={"path": "/c.txt"}, data="c")  # a third asset
    await client.put("/ed/asset", params={"path": "/b.txt"}, data="y" * 60)  # past 90 bytes in all
    editor = client.app[SCRIPTS].records["editor.js"]
    await wait_for(lambda: sum("refused" in line for line in editor.logs) == 2, what="both refusals logged")
    lines = [line for line in editor.logs if "refused" in line]
    assert "upsertAsset(/c.txt) refused: there are 2 assets already; the limit is 2 (assets.max_count)" in lines[0]
    assert "upsertAsset(/b.txt) refused: the assets would take 100 bytes; the limit is 90 " \
        "(assets.max_total_bytes)" in lines[1]
    assert not (assets / "c.txt").exists() and (assets / "b.txt").read_text() == "x" * 40
    await wait_for(lambda: _listed_exactly(client, ["/a.txt", "/b.txt"]), what="the view put right")
    assert (await get_json(client, "/ed/asset", path="/b.txt"))["content"] == "x" * 40

    # A file over assets.max_bytes put there by hand: served and listed, but no script holds it.
    (assets / "big.bin").write_bytes(b"\0" * 200)
    await wait_for(lambda: _listed(client, "/big.bin"))
    assert len(await (await client.get("/big.bin")).read()) == 200
    with caplog.at_level(logging.ERROR, logger="engine"):
        resp = await client.get("/ed/asset", params={"path": "/big.bin"})
    assert resp.status == 500
    assert any("fetchAsset: /big.bin is 200 bytes, over assets.max_bytes or past assets.max_total_bytes" in
               r.getMessage() for r in caplog.records)


async def _listed_exactly(client: TestClient, paths: list[str]) -> bool:
    return (await get_json(client, "/ed/list"))["assets"] == paths  # type: ignore[no-any-return]


async def test_a_symbolic_link_out_of_either_folder_is_refused(
        engine_client: MakeClient, scripts_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    assets = scripts_dir.parent / "assets"
    assets.mkdir()
    (assets / "link").symlink_to(outside)
    (scripts_dir / "out").symlink_to(outside)
    (outside / "o.js").write_text('register("/outside", () => "o");')
    (scripts_dir / "linked.js").symlink_to(outside / "o.js")  # the operator's own link: it loads
    client = await start(engine_client, scripts_dir)
    assert (await client.get("/link/secret.txt")).status == 404
    assert "/link/secret.txt" not in (await get_json(client, "/ed/list"))["assets"]
    await client.put("/ed/asset", params={"path": "/link/new.txt"}, data="x")
    await client.put("/ed/script", params={"name": "out/new.js"}, data="x")
    assert await (await client.delete("/ed/script", params={"name": "linked.js"})).json() == {"existed": True}
    editor = client.app[SCRIPTS].records["editor.js"]
    await wait_for(lambda: sum("refused" in line for line in editor.logs) == 3, what="all three refused")
    assert any("deleteScript(linked.js) refused: it leads out of the scripts folder" in line for line in editor.logs)
    assert sorted(p.name for p in outside.iterdir()) == ["o.js", "secret.txt"]
    assert await (await client.get("/outside")).text() == "o"
    await wait_for(lambda: _has_source(client, "linked.js"), what="the view put back")


FORGED = {
    "a name out of the folder": ({"op": "putscript", "name": "../evil.js", "source": "x"}, "is not a script name"),
    "a header in the type": ({"op": "putasset", "path": "/x.html", "text": "x", "type": "text/html\r\nX: y"},
                             "the content type must be a media type"),
    "content twice": ({"op": "putasset", "path": "/x.html", "text": "x", "b64": "eA=="}, "one of them"),
    "bytes not base64": ({"op": "putasset", "path": "/x.bin", "b64": "not base64!"}, "b64 is not base64"),
    "a name with a line break": ({"op": "putscript", "name": "a\nb.js", "source": "x"}, "is not a script name"),
}


@pytest.mark.parametrize("case", list(FORGED))
async def test_forged_commands_of_a_privileged_script_are_refused(
        engine_client: MakeClient, scripts_dir: Path, caplog: pytest.LogCaptureFixture, case: str) -> None:
    command, reason = FORGED[case]
    client = await start(engine_client, scripts_dir)
    await compromise(client, "editor.js", {"o": {"r": {"s": 200, "b": "forged"}}, "c": [command]})
    with caplog.at_level(logging.ERROR, logger="engine"):
        resp = await client.get("/ed/list")
    assert resp.status == 500
    assert any(reason in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert sorted(p.name for p in scripts_dir.iterdir()) == ["editor.js", "plain.js"]
    assert not (scripts_dir.parent / "evil.js").exists() and not (scripts_dir.parent / "assets").exists()


async def test_a_plain_script_that_forges_a_write_is_refused(
        engine_client: MakeClient, scripts_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = await start(engine_client, scripts_dir)
    await compromise(client, "plain.js", {"o": {"r": {"s": 200, "b": "forged"}}, "c": [
        {"op": "putscript", "name": "evil.js", "source": "x"}, {"op": "delscript", "name": "editor.js"},
        {"op": "putasset", "path": "/evil.html", "text": "x"}, {"op": "delasset", "path": "/x.css"}]})
    with caplog.at_level(logging.ERROR, logger="engine"):
        resp = await client.get("/plain/try", params={"fn": "listScripts"})
    assert resp.status == 500
    assert any("plain.js is not privileged: it may not manage scripts or assets" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert sorted(p.name for p in scripts_dir.iterdir()) == ["editor.js", "plain.js"]
    assert not (scripts_dir.parent / "assets").exists()


async def test_writes_waiting_and_scripts_in_all_are_bounded(engine_client: MakeClient, scripts_dir: Path) -> None:
    config = privileged_config(scripts_dir)
    config = replace(config, scripts=replace(config.scripts, max_count=5))
    client = await engine_client(extra={"editor.js": EDITOR, "plain.js": PLAIN}, config=config)
    editor = client.app[SCRIPTS].records["editor.js"]
    # Writes wait their turn (asset writes one at a time): past 100 waiting, the rest are refused.
    management = client.app[MANAGEMENT]
    async with management._asset_lock:  # noqa: SLF001 - holds every asset write back, as a slow disk would
        assert await (await client.post("/ed/many", params={"n": "150", "assets": "1"})).text() == "ok"
        await wait_for(lambda: any("50 writes refused: 100 writes already wait" in line for line in editor.logs),
                       what="the writes past 100 refused, in one line")
    assets = scripts_dir.parent / "assets" / "many"
    await wait_for(lambda: assets.is_dir() and len(list(assets.iterdir())) == 100, 30, what="the 100 written")
    await wait_for(lambda: _assets_listed(client, 100), what="the view put right")

    # Scripts in all: 5 (two are there).
    assert await (await client.post("/ed/many", params={"n": "10"})).text() == "ok"
    await wait_for(lambda: sum("(scripts.max_count)" in line for line in editor.logs) == 7, what="7 refused")
    assert sorted(client.app[SCRIPTS].records) == ["editor.js", "many/m0.js", "many/m1.js", "many/m2.js", "plain.js"]
    assert sorted(p.name for p in (scripts_dir / "many").iterdir()) == ["m0.js", "m1.js", "m2.js"]
    await wait_for(lambda: _scripts_listed(client, 5), what="the view put right")
    # The admin API keeps to the same count.
    resp = await client.put("/_engine/scripts/one-more.js", data='register("/x", () => "x");')
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "too_many_scripts"
    assert (await client.put("/_engine/scripts/plain.js", data=PLAIN)).status == 200  # replacing one is fine


async def _assets_listed(client: TestClient, n: int) -> bool:
    return len((await get_json(client, "/ed/list"))["assets"]) == n


async def _scripts_listed(client: TestClient, n: int) -> bool:
    return len((await get_json(client, "/ed/list"))["scripts"]) == n


async def test_the_view_keeps_within_its_budget(engine_client: MakeClient, scripts_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Sources past the view's share are `big` (getScript says where to read them), a script's log
    lines are kept to its newest 64 K characters, and big assets cost native time, not a JS loop."""
    monkeypatch.setattr("engine.management.SOURCES_HELD", 20_000)
    big = "// " + "x" * 15_000 + "\n"
    noisy = 'for (let i = 0; i < 400; i++) writeLog("line " + i + " " + "y".repeat(1000));'
    client = await start(engine_client, scripts_dir, extra={"a_big.js": big, "b_big.js": big, "noisy.js": noisy})
    sources = [await get_json(client, "/ed/script", name=n) for n in ("a_big.js",)]
    assert sources[0]["source"] == big  # the first fits
    resp = await client.post("/ed/bad", data=json.dumps([["getScript", ["b_big.js"]]]))
    message = (await resp.json())[0]
    assert message == ("getScript: b_big.js is 15004 bytes, past what the view holds of scripts' sources; read it "
                       "through the admin API (GET /_engine/scripts/b_big.js)")
    await wait_for(lambda: logged(client, "noisy.js", "line 399 "), what="noisy's last line in the view")
    lines = await logs_of(client, "noisy.js")
    assert lines[-1].startswith("line 399 ") and sum(len(line) for line in lines) <= 65536 < 400 * 1000

    # A 3 MB binary asset in and out within one call's CPU time (base64 both ways, natively).
    resp = await client.post("/ed/bad", data=json.dumps([["eval", [
        "upsertAsset('/big.bin', new Uint8Array(3 * 1048576).fill(7))"]]]))
    assert (await resp.json()) == [None]
    await wait_for(lambda: (scripts_dir.parent / "assets" / "big.bin").exists(), 10)
    resp = await client.post("/ed/bad", data=json.dumps([["eval", [
        "const a = fetchAsset('/big.bin'); if (a.content.length !== 3 * 1048576 || a.content[5] !== 7) throw new "
        "Error('wrong content')"]]]))
    assert (await resp.json()) == [None]


async def test_assets_beside_routes_compressed_files_and_forgotten_types(
        engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir, extra={"post.js": 'register("/form.html", () => "ok", "POST");'})
    assets = scripts_dir.parent / "assets"
    assets.mkdir()
    (assets / "form.html").write_text("<form></form>")
    (assets / "data.txt.gz").write_bytes(b"\x1f\x8b not really")
    # A route that takes only POST leaves GET to the asset there.
    got = await client.get("/form.html")
    assert got.status == 200 and await got.text() == "<form></form>"
    assert (await client.post("/form.html")).status == 200
    assert (await client.get("/data.txt.gz")).headers["Content-Type"] == "application/gzip"
    # A type given to upsertAsset is forgotten with its file: a new file there gets its name's type.
    await client.put("/ed/asset", params={"path": "/t.png", "type": "text/html"}, data="<b>x</b>")
    await wait_for(lambda: (assets / "t.png").exists())
    assert (await client.get("/t.png")).headers["Content-Type"] == "text/html"
    (assets / "t.png").unlink()
    await wait_for(lambda: _unlisted(client, "/t.png"), what="the removal seen")
    (assets / "t.png").write_bytes(b"\x89PNG")
    await wait_for(lambda: _listed(client, "/t.png"), what="the new file seen")
    assert (await client.get("/t.png")).headers["Content-Type"] == "image/png"


async def test_a_source_larger_than_a_write_may_be_is_not_held(engine_client: MakeClient, scripts_dir: Path) -> None:
    """A script put in the folder by hand may be any size; the view holds none larger than
    limits.max_body_bytes (what upsertScript may write), so a change's JSON stays small."""
    config = privileged_config(scripts_dir)
    config = replace(config, limits=replace(config.limits, max_body_bytes=4096))
    small, large = "// " + "s" * 3000 + "\n", "// " + "l" * 5000 + "\n"
    client = await engine_client(extra={"editor.js": EDITOR, "plain.js": PLAIN, "small.js": small,
                                        "large.js": large}, config=config)
    assert (await get_json(client, "/ed/script", name="small.js"))["source"] == small
    resp = await client.post("/ed/bad", data=json.dumps([["getScript", ["large.js"]]]))
    assert (await resp.json())[0].startswith("getScript: large.js is 5004 bytes, past what the view holds")


async def test_hostile_asset_paths_get_the_json_404(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await start(engine_client, scripts_dir)
    assets = scripts_dir.parent / "assets"
    assets.mkdir()
    (assets / "ok.txt").write_text("ok")
    (assets / ".hidden").write_text("secret")
    (assets / ".types.json").write_text("{}")
    for raw in (b"/.types.json", b"/.hidden", b"/%2e%2e/scripts/editor.js", b"/..%2fscripts/editor.js",
                b"/ok.txt%00", b"/ok.txt/", b"//ok.txt/../ok.txt"):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"GET " + raw + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 404") and b'"not_found"' in answer, (raw, answer)
        assert b"secret" not in answer
    assert await (await client.get("/ok.txt")).text() == "ok"
