"""The admin API under /_engine/ against a real server and real files: scripts, logs, the token."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, wait_for
from sse_client import SSEReader

from engine.http.admin import is_loopback, is_loopback_host
from engine.http.keys import BROKER, SCRIPTS, STREAMS, WATCHER

HELLO = 'register("/hi", () => { writeLog("said hi"); return "hi"; });\n'


async def test_list_read_create_replace_delete(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await engine_client(extra={"hello.js": HELLO})
    listed = await (await client.get("/_engine/scripts")).json()
    [entry] = listed["scripts"]
    assert entry["name"] == "hello.js" and entry["status"] == "loaded" and entry["last_error"] is None
    assert entry["loaded_at"].endswith("+00:00")

    r = await client.get("/_engine/scripts/hello.js")
    assert r.status == 200 and r.content_type == "text/javascript" and await r.text() == HELLO
    assert (await client.get("/_engine/scripts/nope.js")).status == 404

    # Create: written to the folder, then loaded as if saved.
    r = await client.put("/_engine/scripts/api/users.js", data='register("/users", () => ({ body: [] }));')
    assert r.status == 201 and (await r.json())["script"]["status"] == "loaded"
    assert (scripts_dir / "api" / "users.js").read_text().startswith('register("/users"')
    assert await (await client.get("/users")).json() == []

    # Replace.
    r = await client.put("/_engine/scripts/api/users.js", data='register("/users", () => ({ body: [1] }));')
    assert r.status == 200
    assert await (await client.get("/users")).json() == [1]

    # A version that fails: the file holds it (the folder is the truth), the old version keeps serving.
    r = await client.put("/_engine/scripts/api/users.js", data="register(")
    assert r.status == 422
    body = await r.json()
    assert body["error"]["code"] == "script_failed" and "api/users.js:1: SyntaxError" in body["error"]["message"]
    assert body["script"]["status"] == "loaded"
    assert (scripts_dir / "api" / "users.js").read_text() == "register("
    assert await (await client.get("/users")).json() == [1]

    # Delete: the file goes, and what the script served.
    assert (await client.delete("/_engine/scripts/api/users.js")).status == 204
    assert not (scripts_dir / "api" / "users.js").exists()
    assert (await client.get("/users")).status == 404
    assert (await client.delete("/_engine/scripts/api/users.js")).status == 404
    assert [s["name"] for s in (await (await client.get("/_engine/scripts")).json())["scripts"]] == ["hello.js"]


async def test_a_write_through_the_api_is_not_loaded_twice(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await engine_client(extra={"hello.js": HELLO})
    watcher = client.app[WATCHER]
    before = watcher.batches
    r = await client.put("/_engine/scripts/hello.js", data=HELLO.replace('"hi"', '"hey"'))
    assert r.status == 200
    ctx = client.app[SCRIPTS].records["hello.js"].context
    await wait_for(lambda: watcher.batches > before, what="the watcher to see the write")
    assert client.app[SCRIPTS].records["hello.js"].context is ctx  # the watcher saw it was already loaded


async def test_recent_logs_and_live_logs(engine_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="engine")  # the live log follows the server's log level
    other = 'register("/o", () => { writeLog("o"); return "o"; });'
    client = await engine_client(extra={"hello.js": HELLO, "other.js": other})
    await client.get("/hi")
    logs = await (await client.get("/_engine/scripts/hello.js/logs")).json()
    assert logs == {"name": "hello.js", "lines": ["said hi"]}
    assert (await client.get("/_engine/scripts/nope.js/logs")).status == 404

    everything = SSEReader(await client.get("/_engine/logs"))
    only_hello = SSEReader(await client.get("/_engine/logs", params={"script": "hello.js"}))
    await wait_for(lambda: client.app[STREAMS].connection_count == 2, what="both log followers")
    await client.get("/o")
    await client.get("/hi")
    first = json.loads((await everything.next()).data)
    assert (first["script"], first["message"], first["level"]) == ("other.js", "[other.js] o", "info")
    assert json.loads((await everything.next()).data)["script"] == "hello.js"
    line = json.loads((await only_hello.next()).data)
    assert line["script"] == "hello.js" and line["message"] == "[hello.js] said hi" and line["time"]


@pytest.mark.parametrize("path", [
    "/_engine/scripts/..%2Fescape.js",
    "/_engine/scripts/a/..%2F..%2Fescape.js",
    "/_engine/scripts/%2Fetc%2Fpasswd.js",
    "/_engine/scripts//etc/passwd.js",
    "/_engine/scripts/notes.txt",
    "/_engine/scripts/.hidden.js",
    "/_engine/scripts/a%5Cb.js",
])
async def test_names_that_escape_the_folder_are_400(engine_client: MakeClient, path: str, tmp_path: Path) -> None:
    client = await engine_client()
    for method in ("GET", "PUT", "DELETE"):
        r = await client.request(method, path, data="register('/x', () => 'x');")
        assert r.status == 400, (method, path, r.status)
        assert (await r.json())["error"]["code"] == "bad_name"
    assert not (tmp_path / "escape.js").exists()


async def admin_client(engine_client: MakeClient, scripts_dir: Path, token: str) -> TestClient:
    config = make_config(scripts_dir)
    config = replace(config, admin=replace(config.admin, token=token))
    return await engine_client(extra={"hello.js": HELLO}, config=config)


async def test_the_token_guards_every_admin_route(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await admin_client(engine_client, scripts_dir, "s3cret")
    routes = [("GET", "/_engine/scripts"), ("GET", "/_engine/scripts/hello.js"), ("PUT", "/_engine/scripts/x.js"),
              ("DELETE", "/_engine/scripts/hello.js"), ("GET", "/_engine/scripts/hello.js/logs"),
              ("GET", "/_engine/logs"), ("GET", "/_engine/streams")]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        for method, path in routes:
            r = await client.request(method, path, headers=headers, data="x")
            assert r.status == 401, (method, path, headers)
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert (await r.json())["error"]["code"] == "unauthorized"
    assert (scripts_dir / "hello.js").exists()
    good = {"Authorization": "Bearer s3cret"}
    assert (await client.get("/_engine/scripts", headers=good)).status == 200
    r = await client.get("/_engine/logs", params={"token": "s3cret"})  # EventSource cannot send headers
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    r.close()
    assert (await client.get("/hi")).status == 200  # the scripts' own routes need no token


def test_with_no_token_only_loopback_clients_are_let_in() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.9.10")
    assert not is_loopback("10.0.0.7") and not is_loopback("192.168.1.2") and not is_loopback(None)
    assert not is_loopback("not an address")


def test_with_no_token_the_host_must_name_the_loopback() -> None:
    for host in ("localhost", "localhost:3000", "LocalHost:80", "127.0.0.1", "127.0.0.1:3000", "127.8.9.10",
                 "[::1]", "[::1]:3000", "app.localhost", "a.b.localhost:3000", "localhost:"):
        assert is_loopback_host(host), host
    for host in (None, "", "rebind.attacker.example", "rebind.attacker.example:3000", "localhost.attacker.example",
                 "127.0.0.1.nip.io", "localhost:80:80", "localhost:x", "[::1", "[::1]x", "::1", "10.0.0.7",
                 "localhost@evil.example", "[::2]:80", "notlocalhost"):
        assert not is_loopback_host(host), host


ADMIN_ROUTES = [("PUT", "/_engine/scripts/evil.js"), ("GET", "/_engine/scripts/hello.js"),
                ("DELETE", "/_engine/scripts/hello.js"), ("GET", "/_engine/scripts"),
                ("GET", "/_engine/scripts/hello.js/logs"), ("GET", "/_engine/logs"), ("GET", "/_engine/streams")]
EVIL = 'register("/evil", () => "pwned");'
NEW = 'register("/new", () => "new");'


async def test_with_no_token_a_rebound_host_is_refused(engine_client: MakeClient, scripts_dir: Path) -> None:
    """A page on rebind.attacker.example, its name pointed at 127.0.0.1, reaches the server from
    loopback; its Host header gives it away."""
    client = await engine_client(extra={"hello.js": HELLO})
    for host in ("rebind.attacker.example", f"rebind.attacker.example:{client.port}", "localhost.attacker.example"):
        for method, path in ADMIN_ROUTES:
            r = await client.request(method, path, headers={"Host": host}, data=EVIL)
            assert r.status == 403, (method, path, host)
            error = (await r.json())["error"]
            assert error["code"] == "forbidden" and "DNS rebinding" in error["message"], error
            assert "Set admin.token" in error["message"] and repr(host) in error["message"]
    assert not (scripts_dir / "evil.js").exists() and (scripts_dir / "hello.js").exists()
    assert (await client.get("/evil")).status == 404
    # the loopback's own names are let in, a port or not
    for host in ("localhost", f"localhost:{client.port}", f"127.0.0.1:{client.port}", "[::1]:3000", "app.localhost"):
        assert (await client.get("/_engine/scripts", headers={"Host": host})).status == 200, host
    r = await client.put("/_engine/scripts/new.js", headers={"Host": f"localhost:{client.port}"}, data=NEW)
    assert r.status == 201
    assert (await client.delete("/_engine/scripts/new.js", headers={"Host": "app.localhost"})).status == 204


async def test_with_no_token_a_request_without_host_is_refused(engine_client: MakeClient) -> None:
    client = await engine_client(extra={"hello.js": HELLO})
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(b"GET /_engine/scripts HTTP/1.0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 403") and b"no Host header" in body


async def test_with_a_token_the_host_does_not_matter(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await admin_client(engine_client, scripts_dir, "s3cret")
    rebind = {"Host": "rebind.attacker.example"}
    for method, path in ADMIN_ROUTES:
        r = await client.request(method, path, headers=rebind, data=EVIL)
        assert r.status == 401, (method, path)
    good = {**rebind, "Authorization": "Bearer s3cret"}
    assert (await client.get("/_engine/scripts", headers=good)).status == 200
    assert (await client.put("/_engine/scripts/new.js", headers=good, data=NEW)).status == 201
    assert (await client.get("/_engine/scripts/new.js", headers=good)).status == 200
    assert (await client.delete("/_engine/scripts/new.js", headers=good)).status == 204


async def test_the_live_log_sends_no_cors_header(engine_client: MakeClient, scripts_dir: Path) -> None:
    """Any page could read the server's log otherwise; the scripts' own streams keep theirs."""
    client = await engine_client(extra={"hello.js": HELLO, "s.js": 'registerWebStream("/events");'})
    for params in ({}, {"script": "hello.js"}):
        r = await client.get("/_engine/logs", params=params, headers={"Origin": "https://evil.example"})
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert "Access-Control-Allow-Origin" not in r.headers
        r.close()
    r = await client.get("/events")
    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    r.close()


async def test_only_known_scripts_get_a_log_stream_and_it_goes_with_its_last_reader(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Following a name costs a stream while followed, then nothing: the private stream map does not
    grow as readers come and go, and no history is left behind."""
    caplog.set_level(logging.INFO, logger="engine")
    client = await engine_client(extra={"hello.js": HELLO})
    registry = client.app[STREAMS]
    path = "/_engine/logs/hello.js"

    def per_script() -> list[str]:
        return [p for p in registry.private if p.startswith("/_engine/logs/")]

    for name in ("nope.js", "a/b/c.js", "hello2.js"):
        r = await client.get("/_engine/logs", params={"script": name})
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found", name
    assert (await client.get("/_engine/logs", params={"script": "../x.js"})).status == 400
    assert per_script() == []

    # two followers: when one goes, the other keeps the stream and its lines
    a = SSEReader(await client.get("/_engine/logs", params={"script": "hello.js"}))
    b = SSEReader(await client.get("/_engine/logs", params={"script": "hello.js"}))
    await wait_for(lambda: registry.connection_count == 2, what="both followers")
    assert per_script() == [path]
    a.response.close()
    await wait_for(lambda: registry.connection_count == 1, what="the first follower to go")
    await client.get("/hi")
    assert json.loads((await b.next()).data)["message"] == "[hello.js] said hi"
    b.response.close()
    await wait_for(lambda: per_script() == [], what="the stream to go with its last reader")

    # resuming from a freed stream's id is a reset: the lines logged while no one followed are gone
    await client.get("/hi")  # logged while no one follows hello.js
    c = SSEReader(await client.get("/_engine/logs", params={"script": "hello.js"}))
    await c.readline()  # the retry line: attached, so the next line is kept
    await client.get("/hi")
    assert json.loads((await c.next()).data)["script"] == "hello.js"
    resumed = SSEReader(await client.get("/_engine/logs", params={"script": "hello.js"},
                                         headers={"Last-Event-ID": b.last_id}))
    reset = await resumed.next()
    assert reset.event == "reset" and "has left the history" in json.loads(reset.data)["reason"]
    assert json.loads((await resumed.next()).data)["script"] == "hello.js"  # then what the new stream kept
    c.response.close()
    resumed.response.close()
    await wait_for(lambda: per_script() == [], what="the stream to go again")

    for _ in range(50):  # come and go: nothing stays
        reader = SSEReader(await client.get("/_engine/logs", params={"script": "hello.js"}))
        await reader.readline()  # the retry line: attached
        await client.get("/hi")
        assert json.loads((await reader.next()).data)["script"] == "hello.js"
        reader.response.close()
        await wait_for(lambda: per_script() == [], what="the stream to go")
    assert registry.connection_count == 0
    broker = client.app[BROKER]
    assert path not in broker.channels  # nothing of the freed stream is kept
    assert broker.kept_bytes == sum(c.history_bytes for c in broker.channels.values())
