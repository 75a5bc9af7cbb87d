"""Loading scripts: order, bad scripts, register() errors, conflicts between scripts."""

from __future__ import annotations

import logging

import pytest
from conftest import MakeClient

from engine.http.keys import SCRIPTS


async def test_syntax_error_names_file_and_line_and_others_load(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = await engine_client("bad_syntax.js", "other.js")
    assert await (await client.get("/other")).text() == "other is fine"
    assert (await client.get("/never")).status == 404
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith("failed bad_syntax.js:4: SyntaxError") for m in failed), failed
    record = client.app[SCRIPTS].records["bad_syntax.js"]
    assert record.status == "failed" and record.last_error.startswith("bad_syntax.js:4: SyntaxError")
    assert any("loaded other.js (1 route)" in r.getMessage() for r in caplog.records)


async def test_throw_at_top_level_registers_nothing(engine_client: MakeClient) -> None:
    client = await engine_client("bad_throw_at_load.js", "other.js")
    assert (await client.get("/half-loaded")).status == 404
    assert (await client.get("/other")).status == 200
    msg = client.app[SCRIPTS].records["bad_throw_at_load.js"].last_error
    assert msg == "bad_throw_at_load.js:5: Error: exploded while loading"


async def test_uncaught_register_error_fails_the_load_with_its_line(engine_client: MakeClient) -> None:
    client = await engine_client("bad_uncaught_register.js")
    assert (await client.get("/fine-before")).status == 404
    msg = client.app[SCRIPTS].records["bad_uncaught_register.js"].last_error
    assert msg == ("bad_uncaught_register.js:3: Error: register: path must start with '/', "
                   'got "no-leading-slash"')


async def test_register_errors_are_catchable_errors_with_messages(engine_client: MakeClient) -> None:
    client = await engine_client("api_register_errors.js")
    errors = await (await client.get("/register-errors")).json()
    expected = {
        "no-slash": "path must start with '/'",
        "empty": "path must be a non-empty string",
        "missing-path": "path must be a non-empty string starting with '/', got undefined",
        "number-path": "got number 42",
        "space": "must not contain whitespace",
        "query": "'?'",
        "bad-param": "a parameter must be a whole segment like {name}",
        "partial-param": "a parameter must be a whole segment",
        "dup-param": "parameter {b} appears twice",
        "mid-star": "'*' may only be the last segment",
        "reserved-graphql": "/graphql is reserved",
        "reserved-health": "/health is reserved",
        "reserved-engine": "/_engine/scripts is reserved",
        "reserved-metrics": "/metrics is reserved",
        "bad-method": "method must be one of GET, POST, PUT, PATCH, DELETE, got \"FETCH\"",
        "number-method": "method must be one of GET, POST, PUT, PATCH, DELETE, got number 7",
        "missing-handler": "missing handler for GET /h",
        "unknown-handler": "handler 'noSuchFunction' for GET /h is not a function defined in this script",
        "not-a-function": "handler 'errors' for GET /h is not a function",
        "bad-handler-type": "must be a function or the name of one, got number 12",
        "handler-injection": "is not a valid function name",
        "twice": "GET /twice is already registered by this script",
    }
    for label, fragment in expected.items():
        assert errors[label] is not None, f"{label} did not throw"
        assert errors[label]["name"] == "Error", label
        assert errors[label]["message"].startswith("register: "), label
        assert fragment in errors[label]["message"], (label, errors[label]["message"])
    assert errors["lowercase-method"] is None
    assert await (await client.post("/lower")).text() == "ok"
    assert await (await client.get("/twice")).text() == "ok"  # the first registration stands
    assert (await client.get("/h")).status == 404


async def test_conflict_fails_the_later_script_and_names_the_owner(engine_client: MakeClient) -> None:
    client = await engine_client("conflict_a.js", "conflict_b.js")
    assert await (await client.get("/shared")).text() == "from a"
    assert (await client.get("/b-only")).status == 404  # b did not load at all: nothing half-applied
    record = client.app[SCRIPTS].records["conflict_b.js"]
    assert record.status == "failed"
    assert record.last_error == (
        "conflict_b.js:3: Error: register: GET /shared is already registered by script conflict_a.js"
    )


async def test_conflict_is_catchable_and_parameter_names_do_not_matter(engine_client: MakeClient) -> None:
    client = await engine_client("conflict_a.js", "conflict_c.js")
    reason = (await (await client.get("/conflict-reason")).json())["reason"]
    assert reason == "register: GET /shared/{x} is already registered by script conflict_a.js"
    assert await (await client.get("/shared/1")).text() == "from a"
    assert await (await client.post("/shared")).text() == "c's POST"  # another method is no conflict


async def test_conflicts_resolve_the_same_way_every_time(engine_client: MakeClient, scripts_dir) -> None:
    """Load order is by name, whatever order the files were written in."""
    sources = {"zz.js": 'register("/x", function () { return "zz"; });',
               "aa.js": 'register("/x", function () { return "aa"; });'}
    client = await engine_client(extra=sources)
    assert await (await client.get("/x")).text() == "aa"
    assert client.app[SCRIPTS].records["zz.js"].status == "failed"


async def test_scripts_in_subfolders_are_named_by_relative_path(engine_client: MakeClient) -> None:
    client = await engine_client(extra={
        "api/v1.js": 'register("/v1", function () { return "v1"; });',
        ".hidden.js": 'register("/hidden", function () { return "h"; });',
        "notes.txt": "not a script",
    })
    assert await (await client.get("/v1")).text() == "v1"
    assert (await client.get("/hidden")).status == 404
    assert sorted(client.app[SCRIPTS].records) == ["api/v1.js"]


async def test_non_utf8_script_fails_clearly(engine_client: MakeClient, scripts_dir) -> None:
    (scripts_dir / "latin1.js").write_bytes(b'register("/x", function () { return "caf\xe9"; });')
    client = await engine_client("other.js")
    record = client.app[SCRIPTS].records["latin1.js"]
    assert record.status == "failed" and "cannot read the file" in record.last_error
    assert (await client.get("/other")).status == 200


async def test_empty_script_loads(engine_client: MakeClient) -> None:
    client = await engine_client(extra={"empty.js": ""})
    assert client.app[SCRIPTS].records["empty.js"].status == "loaded"


# A script of 27 lines whose errors come from deep inside the engine's own JS (the prelude's path
# checks, the SDL reader), or from the engine interrupting it there: the location is always the
# script's own line, never a line of the prelude.
LOCATIONS = "\n".join([
    "// line 1",
    *[f"const x{i} = {i};" for i in range(2, 20)],
    'register("/ok", () => "ok");',  # line 20
    'register("/spin", () => { for (;;) { try { register("/a b"); } catch (e) {} } });',  # line 21
    'register("/deep", () => { [1].forEach(() => register("/a/*/b", () => 1)); });',  # line 22
    'register("/sdl", () => { registerGraphQLQuery("q", "type Query { q: Nope }", () => 1); });',  # line 23
    'register("/throw", () => { null.x; });',  # line 24
    "// line 25",
    "// line 26",
    'register("/a/*/b", () => 1);',  # line 27: a bad segment, found in the prelude's segment loop
])


async def test_errors_name_the_scripts_own_line(engine_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    client = await engine_client(extra={"x.js": LOCATIONS}, script_time_ms=300)
    record = client.app[SCRIPTS].records["x.js"]
    assert record.last_error == "x.js:27: Error: register: '*' may only be the last segment: /a/*/b"
    fixed = LOCATIONS.replace('register("/a/*/b", () => 1);', "// line 27")
    record = await client.app[SCRIPTS].save("x.js", fixed)
    assert record.status == "loaded", record.last_error
    for path, where, what in [("/spin", "x.js:21", "ran past the time limit"),
                              ("/deep", "x.js:22", "'*' may only be the last segment"),
                              ("/sdl", "x.js:23", "unknown type Nope (line 1, column 17)"),
                              ("/throw", "x.js:24", "TypeError")]:
        caplog.clear()
        resp = await client.get(path)
        assert resp.status in (500, 504)
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(f"{where}: " in m and what in m for m in lines), (path, lines)
        stacks = [m for m in lines if "stack" in m]
        for m in stacks:  # every frame shown is the script's (lines 1-27) or a native one
            for frame in m.split("\n")[1:]:
                assert "(native)" in frame or int(frame.split("x.js:")[1].split(":")[0]) <= 27, frame
