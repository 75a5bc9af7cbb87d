"""The trust boundary through a real server: scripts that tamper with every built-in the engine's JS
uses, and (standing in for a prelude an attacker got past) forged commands handed straight to the
engine. Whatever they do, that script's call fails alone and everything else keeps serving."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, wait_for
from sse_client import SSEReader

from engine.http.keys import BROKER, ROUTES, SCRIPTS, STREAMS

# What every tampering script does after its tampering: the engine must still understand it exactly.
STANDARD = r"""
registerWebStream("/t/stream");
register("/t/hello", () => "hello");
register("/t/send", function () {
  sendStreamMessage("m1", { event: "tick" });
  sendStreamMessageToPath("/t/stream", "m2");
  return "sent";
}, "POST");
register("/t/async", async function () { await null; return { status: 201, body: "async ok" }; });
register("/t/headers", () => ({ body: "h", headers: { "X-Mine": "yes" } }));
register("/t/errors", function () {
  // Written with nothing but literals, indexes and +, which no tampering reaches.
  const calls = [
    () => registerWebStream("/health"),
    () => sendStreamMessage("x", { event: "a\nid: 7-7" }),
    () => sendStreamMessage("x" + new Array(2 * 1024 * 1024 + 2).join("x")),
    () => sendStreamMessageToPath("/graphql/subscription/x", "x"),
    () => register("/_engine/x", () => "x"),
  ];
  let text = "";
  for (let i = 0; i < calls.length; i++) {
    let result = "sent";
    try { calls[i](); } catch (e) { result = "threw"; }
    text += result + ";";
  }
  return text;
});
register("/t/rt", () => typeof globalThis.__rt);
setTimeout(() => sendStreamMessageToPath("/t/stream", "from a timer"), 0);
writeLog("loaded");
"""

TAMPERINGS = {
    "json": "JSON.stringify = () => 'not json'; JSON.parse = () => ({ forged: true });",
    "push": """
        const push = Array.prototype.push;
        Array.prototype.push = function (...items) {
          for (const it of items) if (it && it.op) { it.path = "/health"; it.event = "x\\nid: 7-7"; it.op = "stream"; }
          return push.apply(this, items);
        };
        Object.defineProperty(Array.prototype, "0", { set(v) {}, get() { return { op: "stream", path: "/health" }; },
                                                      configurable: true });""",
    "toJSON": """
        Object.prototype.toJSON = function () { return { op: "stream", path: "/_engine/pwned" }; };
        Array.prototype.toJSON = function () {
          return [{ op: "route", method: "GET", path: "/health", handler: 0 }];
        };""",
    # Not `path` or `event`: the script's own option objects would inherit those, as they should.
    "accessors": """
        for (const k of ["op", "paths", "data", "level", "msg", "c", "o", "s", "t", "r", "b", "h", "e", "p", "j"]) {
          Object.defineProperty(Object.prototype, k, { get() { return "evil\\ndata: injected"; }, set(v) {},
                                                       configurable: true });
        }""",
    "regexp": """
        RegExp.prototype.exec = function () { return null; };
        RegExp.prototype.test = function () { return false; };
        RegExp.prototype[Symbol.split] = function () { return ["/health"]; };
        RegExp.prototype[Symbol.replace] = function () { return "/health"; };""",
    "strings": """
        for (const k of ["split", "slice", "startsWith", "indexOf", "includes", "toUpperCase", "toLowerCase",
                         "charCodeAt", "replace", "trim"]) {
          String.prototype[k] = function () { return "/health"; };
        }
        String.prototype[Symbol.split] = function () { return ["/health"]; };""",
    "functions": """
        Function.prototype.call = function () { throw new Error("no call"); };
        Function.prototype.apply = function () { throw new Error("no apply"); };
        Function.prototype.bind = function () { throw new Error("no bind"); };
        Promise.prototype.then = function () { throw new Error("no then"); };
        Promise.resolve = function () { throw new Error("no resolve"); };""",
    "globals": """
        Object.keys = () => ["forged"];
        Object.defineProperty = () => { throw new Error("no defineProperty"); };
        Object.setPrototypeOf = () => { throw new Error("no setPrototypeOf"); };
        Array.isArray = () => true;
        Number.isInteger = () => true;
        Date.now = () => 0;
        globalThis.eval = () => undefined;
        globalThis.Error = function () { return { stack: "forged" }; };""",
    "iterators": """
        Array.prototype[Symbol.iterator] = function* () { yield "/health"; };
        Object.prototype[Symbol.iterator] = function* () { yield "/health"; };
        Set.prototype.has = () => true; Set.prototype.add = () => {};
        Map.prototype.get = () => undefined; Map.prototype.has = () => false;""",
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
async def test_a_script_that_replaces_built_ins_still_talks_to_the_engine_exactly(
    engine_client: MakeClient, tampering: str
) -> None:
    # The tampering comes first: every registration, send and handler after it meets that world.
    client = await engine_client("other.js", extra={"tamper.js": TAMPERINGS[tampering] + STANDARD})
    scripts = client.app[SCRIPTS]
    assert scripts.records["tamper.js"].status == "loaded", scripts.records["tamper.js"].last_error
    assert set(client.app[STREAMS].streams) == {"/t/stream"}
    assert {(r.method, r.path) for r in client.app[ROUTES].routes("tamper.js")} == {
        ("GET", "/t/hello"), ("POST", "/t/send"), ("GET", "/t/async"), ("GET", "/t/headers"), ("GET", "/t/errors"),
        ("GET", "/t/rt")}
    resp = await client.get("/t/stream", headers={"Last-Event-ID": f"{client.app[BROKER].epoch}-0"})
    reader = SSEReader(resp)
    first = await reader.next()  # the timer's, sent at load
    assert (first.data, first.event) == ("from a timer", None)
    assert await (await client.get("/t/hello")).text() == "hello"
    sent = await client.post("/t/send")
    assert await sent.text() == "sent"
    m1, m2 = await reader.take(2)
    assert (m1.data, m1.event) == ("m1", "tick") and (m2.data, m2.event) == ("m2", None)
    assert [first.id, m1.id, m2.id] == [f"{client.app[BROKER].epoch}-{n}" for n in (1, 2, 3)]
    async_resp = await client.get("/t/async")
    assert (async_resp.status, await async_resp.text()) == (201, "async ok")
    headers = await client.get("/t/headers")
    assert headers.headers["X-Mine"] == "yes" and "X-Injected" not in headers.headers
    assert await (await client.get("/t/errors")).text() == "threw;" * 5
    assert await (await client.get("/t/rt")).text() == "undefined"  # the dispatcher is out of reach
    health = await client.get("/health")
    assert health.status == 200 and (await health.json())["status"] == "ok"
    assert await (await client.get("/other")).text() == "other is fine"
    # Saving another script tells the tampered one the new claims: that must not fail the save.
    put = await client.put("/_engine/scripts/new.js", data='register("/new", () => "new");')
    assert put.status == 201, await put.text()
    assert await (await client.get("/new")).text() == "new"
    resp.close()


async def test_sdl_types_that_do_not_match_the_sdl_fail_that_load_only(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDL reader runs in the script's own world: a tampered Array.prototype.join changes the
    types it reports to other scripts. Python derives them again from the SDL and refuses the lie,
    so no other script is told that `User` is taken, or declared some other way."""
    forged = """
        Array.prototype.join = function () { return "type User { forged: Int }"; };
        registerGraphQLQuery("forgedUser", "type Query { forgedUser: User } type User { id: ID }", () => null);
    """
    honest = 'registerGraphQLQuery("user", "type Query { user: User } type User { id: ID }", () => ({ id: "1" }));'
    client = await engine_client(extra={"a_forged.js": forged, "b_honest.js": honest})
    records = client.app[SCRIPTS].records
    assert records["a_forged.js"].status == "failed"
    assert "the types handed back do not match the SDL" in (records["a_forged.js"].last_error or "")
    assert records["b_honest.js"].status == "loaded", records["b_honest.js"].last_error
    result = await (await client.post("/graphql", json={"query": "{ user { id } }"})).json()
    assert result == {"data": {"user": {"id": "1"}}}


# ---- forged commands: what Python does when the JS side cannot be trusted at all ----------------

# A JS function standing in for the prelude's `handle` after an attacker got past it: it returns
# whatever envelope it likes. Each case is one forged command and why Python refuses it.
FORGED_COMMANDS = {
    "stream on /health": ({"op": "stream", "path": "/health"}, "/health is reserved"),
    "route on /_engine": ({"op": "route", "method": "GET", "path": "/_engine/x", "handler": 0}, "is reserved"),
    "route on /graphql": ({"op": "route", "method": "POST", "path": "/graphql", "handler": 0}, "is reserved"),
    "3 MiB message": ({"op": "send", "data": "x" * (3 << 20)}, "the limit is 1048576"),
    "event injection into another script's stream": (
        {"op": "send", "data": "x", "event": "e\nid: 7-7\nevent: reset\ndata: fake", "paths": ["/other/stream"]},
        "event name must be"),
    "8 MiB event name": ({"op": "send", "data": "x", "event": "e" * (8 << 20)}, "event name must be"),
    "send to a subscription's stream": (
        {"op": "send", "data": "x", "paths": ["/graphql/subscription/news"]}, "cannot be sent to"),
    "forged GraphQL types": (
        {"op": "gql", "kind": "query", "name": "x", "sdl": "type Query { x: Int }", "handler": 0,
         "types": {"User": {"kind": "type", "text": "type User { mine: Int }"}}},
        "the types handed back do not match the SDL"),
}

VICTIM = """
registerWebStream("/other/stream");
registerGraphQLSubscription("news", "type Subscription { news: String }", () => undefined);
register("/other/ok", () => "still here");
"""


def compromise(client: TestClient, script: str, envelope: dict[str, Any]) -> Any:
    """Replace the script's dispatcher's `handle` (held by the engine, out of the script's reach)
    with JS that returns `envelope`, on the script's own thread, as a compromised prelude would."""
    ctx = client.app[SCRIPTS].records[script].context
    source = "(function () { return " + json.dumps(json.dumps(envelope)) + "; })"

    def install() -> None:  # this test stands in for an attacker
        real, forged = ctx._rt, ctx._ctx.eval(source)  # noqa: SLF001
        ctx._rt = lambda name, *args: forged() if name == "handle" else real(name, *args)  # noqa: SLF001

    return ctx._worker.submit(install)  # noqa: SLF001


@pytest.mark.parametrize("case", list(FORGED_COMMANDS))
async def test_forged_commands_fail_that_call_and_change_nothing(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    command, reason = FORGED_COMMANDS[case]
    client = await engine_client(extra={"attacker.js": 'register("/go", () => "ok");', "victim.js": VICTIM})
    app = client.app
    reader_resp = await client.get("/other/stream")
    reader = SSEReader(reader_resp)
    before_streams, before_routes = set(app[STREAMS].streams), len(app[ROUTES])
    await compromise(client, "attacker.js", {"o": {"r": {"s": 200, "b": "forged"}}, "c": [
        {"op": "log", "level": "info", "msg": "applied?"}, command]})
    with caplog.at_level(logging.ERROR, logger="engine"):
        resp = await client.get("/go")
    assert resp.status == 500 and (await resp.json())["error"]["code"] == "script_error"
    assert any(reason in r.getMessage() and "refused what the script handed back" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    # Nothing of that call was applied: not even its harmless log line.
    assert "applied?" not in app[SCRIPTS].records["attacker.js"].logs
    assert set(app[STREAMS].streams) == before_streams and len(app[ROUTES]) == before_routes
    # Everyone else keeps serving, and the victim's readers saw nothing.
    assert await (await client.get("/other/ok")).text() == "still here"
    health = await client.get("/health")
    assert health.status == 200 and health.headers["Content-Type"].startswith("application/json")
    with pytest.raises(asyncio.TimeoutError):
        await reader.next(timeout=0.2)
    reader_resp.close()


# ---- loads that fail leave nothing behind ------------------------------------------------------

def js_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("js:"))


FAILING_LOADS = [
    'register("/v", () => {',  # syntax error
    'throw new Error("no");',
    "for (;;) {}",  # time limit
    'const a = []; for (;;) a.push("x".repeat(4096) + a.length);',  # memory limit
    'Array.prototype.join = () => "x"; registerGraphQLQuery("q", "type Query { q: T } type T { a: Int }", () => 1);',
    'registerWebStream("/health");',
    'for (let i = 0; i < 60000; i++) writeLog("x");',  # past limits.max_commands_per_call
]


async def test_failed_loads_dispose_of_their_context_and_thread(engine_client: MakeClient) -> None:
    client = await engine_client("other.js", script_time_ms=300, script_memory_mb=16)
    scripts = client.app[SCRIPTS]
    baseline = js_threads()
    for i in range(20):
        record = await scripts.load("v.js", FAILING_LOADS[i % len(FAILING_LOADS)])
        assert record.status == "failed" and record.last_error, record.describe()
        assert record.context is None
    await wait_for(lambda: scripts.background == 0, what="background work to end")
    assert js_threads() == baseline  # not one thread per failed load
    assert await (await client.get("/other")).text() == "other is fine"
    # and a good version after all that loads as usual
    record = await scripts.load("v.js", 'register("/v", () => "v");')
    assert record.status == "loaded" and js_threads() == baseline + 1
    assert await (await client.get("/v")).text() == "v"


async def test_a_fragment_that_lies_about_its_root_fields_fails_that_load_only(engine_client: MakeClient) -> None:
    """The SDL reader runs in the script's world: with `String` swapped for a moment it checked a
    harmless fragment while the real one went to the engine with more root fields. Python counts
    them again, so no field is taken from the script that owns it."""
    smuggler = """
        const RealString = String;
        globalThis.String = function () { return "type Query { innocent: Int }"; };
        try {
          registerGraphQLQuery("innocent", "type Query { innocent: Int users: String } " +
            "type Mutation { addUser(name: String!): String }", () => 1);
        } finally { globalThis.String = RealString; }
    """
    owner = 'registerGraphQLQuery("users", "type Query { users: [String] }", () => ["ada"]);'
    client = await engine_client(extra={"a_smuggler.js": smuggler, "b_owner.js": owner})
    records = client.app[SCRIPTS].records
    assert records["a_smuggler.js"].status == "failed"
    assert "the SDL declares 3 root fields, not just Query.innocent" in (records["a_smuggler.js"].last_error or "")
    assert records["b_owner.js"].status == "loaded", records["b_owner.js"].last_error
    assert await (await client.post("/graphql", json={"query": "{ users }"})).json() == {"data": {"users": ["ada"]}}


async def test_stack_trace_hooks_cannot_reach_the_engines_functions(engine_client: MakeClient) -> None:
    """QuickJS-NG's Error.prepareStackTrace hands out the functions on the stack, the engine's own
    among them: it is switched off before any script runs."""
    source = """
        let seen = "nothing";
        try {
          Error.prepareStackTrace = (e, calls) => {
            seen = calls.map((c) => typeof c.getFunction()).join();
            return "";
          };
        } catch (e) { seen = "refused"; }
        register("/seen", function () {
          "use strict";
          try { Error.prepareStackTrace = () => ""; } catch (e) { seen += ", refused in strict code"; }
          try { register("no slash"); } catch (e) { String(e.stack); }
          return seen;
        });
    """
    client = await engine_client(extra={"hook.js": source})
    assert await (await client.get("/seen")).text() == "nothing, refused in strict code"
