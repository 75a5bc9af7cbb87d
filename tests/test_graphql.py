"""GraphQL over HTTP from scripts: the schema they build together, /graphql, errors, registration."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, wait_for
from sse_client import SSEReader
from test_graphql_sse import next_result, subscribe

from engine.http.keys import GRAPHQL, GRAPHQL_RUNNER, SCRIPTS, SUBSCRIPTIONS


async def gql(client: TestClient, query: str, variables: dict[str, Any] | None = None,
              status: int = 200, **headers: str) -> dict[str, Any]:
    r = await client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    assert r.status == status, await r.text()
    assert r.content_type == "application/json"
    return await r.json()  # type: ignore[no-any-return]


async def test_seed_script_query_mutation_and_trigger(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js")
    assert await gql(client, "{ hello }") == {"data": {"hello": "Hello, world!"}}
    assert await gql(client, 'query { hello(name: "Ann") }') == {"data": {"hello": "Hello, Ann!"}}
    r = await client.get("/graphql", params={"query": "query Q($n: String) { hello(name: $n) }",
                                             "variables": '{"n": "Bo"}', "operationName": "Q"})
    assert r.status == 200 and await r.json() == {"data": {"hello": "Hello, Bo!"}}

    created = await gql(client, "mutation($n: String!) { createUser(name: $n) { id name } }", {"n": "Cy"})
    assert created == {"data": {"createUser": {"id": "1", "name": "Cy"}}}
    assert await gql(client, 'mutation { triggerUserUpdate(userId: "1") }') == {"data": {"triggerUserUpdate": True}}


async def test_fragments_merge_into_one_schema(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js", "graphql_types.js")
    body = await gql(client, "{ __schema { queryType { fields { name } } mutationType { fields { name } } "
                             "subscriptionType { fields { name } } } }")
    s = body["data"]["__schema"]
    assert {f["name"] for f in s["queryType"]["fields"]} >= {"hello", "users", "user", "later", "boom"}
    assert {f["name"] for f in s["mutationType"]["fields"]} == {"createUser", "triggerUserUpdate"}
    assert {f["name"] for f in s["subscriptionType"]["fields"]} == {"userUpdates", "userChanged", "ticks"}

    # Input types, enums, lists, non-null, default arguments: through variables and literals.
    q = "query($f: UserFilter) { users(filter: $f) { id name role tags } }"
    assert await gql(client, q, {"f": {"role": "MEMBER"}}) == {"data": {"users": [
        {"id": "2", "name": "Grace", "role": "MEMBER", "tags": []},
        {"id": "3", "name": "Linus", "role": "MEMBER", "tags": None}]}}
    assert await gql(client, '{ users(filter: {nameContains: "Ad"}, first: 1) { name } }') == {
        "data": {"users": [{"name": "Ada"}]}}
    assert await gql(client, '{ user(id: "2") { name } nobody: user(id: "9") { name } }') == {
        "data": {"user": {"name": "Grace"}, "nobody": None}}
    # The description in the fragment reaches the schema.
    t = await gql(client, '{ __type(name: "Query") { fields { name description } } }')
    assert {"name": "users", "description": "People, filtered."} in t["data"]["__type"]["fields"]


async def test_async_resolvers_and_context(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_types.js")
    assert await gql(client, "{ later(ms: 30) }") == {"data": {"later": "after 30 ms for Query.later"}}
    r = await client.post("/graphql", json={"query": "{ whoami }"}, headers={"X-User": "ann", "X-Request-Id": "r-1"})
    assert await r.json() == {"data": {"whoami": "query ann r-1"}}
    assert r.headers["X-Request-Id"] == "r-1"


async def test_resolver_errors_are_graphql_errors_with_path_and_locations(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_types.js")
    body = await gql(client, "{ hello: user(id: \"1\") { name }\n  boom }")
    assert body["data"] == {"hello": {"name": "Ada"}, "boom": None}  # the rest of the query still answers
    [error] = body["errors"]
    assert error["message"] == "it broke on purpose"
    assert error["path"] == ["boom"] and error["locations"] == [{"line": 2, "column": 3}]
    assert error["extensions"] == {"code": "SCRIPT_ERROR"}

    body = await gql(client, "{ wrongType }")  # a value of the wrong type: graphql-core's own error
    assert body["data"] == {"wrongType": None} and "Int cannot represent" in body["errors"][0]["message"]


async def test_resolver_past_a_limit_fails_that_field_only(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_types.js", script_time_ms=200, script_memory_mb=16)
    body = await gql(client, "{ spin }")
    assert body["data"] == {"spin": None}
    [error] = body["errors"]
    assert error["extensions"] == {"code": "SCRIPT_TIMEOUT"} and error["path"] == ["spin"]
    assert "time limit" in error["message"]
    body = await gql(client, "{ bomb }")
    [error] = body["errors"]
    assert error["extensions"] == {"code": "SCRIPT_MEMORY"} and error["path"] == ["bomb"]
    assert await gql(client, '{ user(id: "1") { name } }') == {"data": {"user": {"name": "Ada"}}}  # still serving


async def test_bad_requests(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_types.js", "compat_graphql.js", max_body_bytes=100_000)

    r = await client.post("/graphql", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400
    body = await r.json()
    assert "not JSON" in body["errors"][0]["message"] and body["error"]["code"] == "bad_request"
    for payload in ({}, {"query": ""}, {"query": 5}, {"query": "{ hello }", "variables": [1]}):
        r = await client.post("/graphql", json=payload)
        assert r.status == 400, payload
    r = await client.get("/graphql")  # no query: the page, whatever the client accepts
    assert r.status == 200 and r.content_type == "text/html"
    r = await client.get("/graphql", params={"query": ""})  # a GET with ?query= executes it, or says why not
    assert r.status == 400 and "no query" in (await r.json())["errors"][0]["message"]

    # GraphQL's own rejections: 200 with errors, no data.
    body = await gql(client, "{ hello(")
    assert "Syntax Error" in body["errors"][0]["message"] and "data" not in body
    body = await gql(client, "{ nope }")
    assert body["errors"][0]["message"].startswith("Cannot query field 'nope' on type 'Query'")
    body = await gql(client, "query($id: ID!) { user(id: $id) { name } }", {"id": {"x": 1}})
    message = body["errors"][0]["message"]
    assert "Variable '$id'" in message and "invalid value" in message and body.get("data") is None
    body = await gql(client, "query($n: Int) { hello(name: $n) }")
    assert "Variable '$n' of type 'Int' used in position expecting type 'String'" in body["errors"][0]["message"]
    body = await gql(client, "query A { hello } query B { hello }")
    assert "Must provide operation name" in body["errors"][0]["message"]

    # Mutations are refused over GET; subscriptions belong to /graphql/sse.
    r = await client.get("/graphql", params={"query": 'mutation { createUser(name: "x") { id } }'})
    assert r.status == 405 and r.headers["Allow"] == "POST"
    assert "mutations are not allowed over GET" in (await r.json())["errors"][0]["message"]
    r = await client.post("/graphql", json={"query": "subscription { userUpdates }"})
    assert r.status == 400 and "/graphql/sse" in (await r.json())["errors"][0]["message"]

    # Documents that would cost the event loop too much: too many tokens, nested too deeply.
    body = await gql(client, "{ " + " ".join(["a"] * 12_000) + " }")
    assert "more than 10000 tokens" in body["errors"][0]["message"]
    body = await gql(client, "{ " + "a { " * 3000 + "b" + " }" * 3000 + " }")
    assert "nested too deeply" in body["errors"][0]["message"]

    r = await client.post("/graphql", json={"query": "{ hello }", "pad": "x" * 100_000})
    assert r.status == 413 and (await r.json())["error"]["code"] == "body_too_large"


async def test_registration_errors_throw_with_the_reason(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_owner.js", "graphql_register_errors.js")
    e = await (await client.get("/gqlerr")).json()
    assert e["syntax"] == ("registerGraphQLQuery: invalid SDL for Query.a: Syntax Error: Expected Name, "
                           "found <EOF> (line 1, column 23)")
    assert "unknown type Strin (line 1, column 17)" in e["unknownType"]
    assert "a query declares its field in type Query, not Mutation" in e["wrongRoot"]
    assert "must declare the field d in type Query" in e["missingField"]
    assert "may declare no other Query field (found f)" in e["extraField"]
    assert "name must be a GraphQL name" in e["badName"]
    assert e["noResolver"] == "registerGraphQLQuery: missing resolver for Query.g"
    assert "resolver 'noSuchFunction' for Query.g is not a function defined in this script" in e["unknownResolver"]
    assert "sdl must be a string" in e["sdlNotString"]
    assert "Query.i must be an output type (not an input), but In is an input type" in e["inputAsOutput"]
    assert "argument o of Query.j must be an input type" in e["outputAsArgument"]
    assert '"schema" definitions are not supported' in e["schemaDefinition"]
    assert e["taken"] == "registerGraphQLQuery: Query.taken is already registered by script graphql_owner.js"
    assert "type Shared is already declared differently by script graphql_owner.js" in e["sharedDifferent"]
    assert e["sharedSame"] == "no error"
    assert e["twice"] == "registerGraphQLQuery: Query.n is already registered by this script"
    assert "no GraphQL subscription named \"nope\"" in e["unknownSubscription"]
    assert "send to it with sendSubscriptionMessage" in e["streamOfSubscription"]
    assert "String is a built-in type" in e["builtinRedefined"]
    assert "the limit is 1048576 (limits.max_message_bytes)" in e["tooLarge"]
    # What did register works, shared type and all.
    assert await gql(client, "{ taken { x } n { x } }") == {"data": {"taken": {"x": 1}, "n": {"x": 7}}}


async def test_uncaught_bad_sdl_fails_the_load_and_the_schema_keeps_the_rest(engine_client: MakeClient) -> None:
    bad = 'registerGraphQLQuery("broken", "type Query { broken: Nope }", () => 1);\n'
    client = await engine_client("compat_graphql.js", extra={"z_bad.js": bad})
    record = client.app[SCRIPTS].records["z_bad.js"]
    assert record.status == "failed"
    assert "registerGraphQLQuery: invalid SDL for Query.broken: unknown type Nope" in (record.last_error or "")
    assert await gql(client, "{ hello }") == {"data": {"hello": "Hello, world!"}}


async def test_schema_follows_scripts_loading_reloading_and_going_away(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js")
    scripts, registry = client.app[SCRIPTS], client.app[GRAPHQL]
    await scripts.load("extra.js", 'registerGraphQLQuery("extra", "type Query { extra: Int }", () => 1);')
    assert await gql(client, "{ extra hello }") == {"data": {"extra": 1, "hello": "Hello, world!"}}

    await scripts.load("extra.js", 'registerGraphQLQuery("extra", "type Query { extra: String }", () => "v2");')
    assert await gql(client, "{ extra }") == {"data": {"extra": "v2"}}

    # A reload whose fragment clashes with another script is refused; the old version keeps serving.
    await scripts.load("extra.js", 'registerGraphQLQuery("hello", "type Query { hello: String }", () => "x");')
    error = scripts.records["extra.js"].last_error or ""
    assert "Query.hello is already registered by script compat_graphql.js" in error
    assert await gql(client, "{ extra }") == {"data": {"extra": "v2"}}

    await scripts.unload("extra.js")
    body = await gql(client, "{ extra }")
    assert body["errors"][0]["message"].startswith("Cannot query field 'extra'")
    assert "Query.extra" not in registry.fields

    await scripts.unload("compat_graphql.js")
    assert await gql(client, "{ __typename }") == {"data": {"__typename": "Query"}}  # an empty schema still answers


async def test_a_browser_gets_a_page_that_needs_no_network(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js")
    r = await client.get("/graphql", headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status == 200 and r.content_type == "text/html"
    page = await r.text()
    assert "<textarea" in page and "/graphql/sse" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere


async def test_cors_preflight_and_origin(engine_client: MakeClient) -> None:
    client = await engine_client("compat_graphql.js")
    asking = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    r = await client.options("/graphql", headers=asking)
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*" and "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    r = await client.post("/graphql", json={"query": "{ hello }"}, headers={"Origin": "http://app.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"


ITEM_FIELDS = "id a b c d e f g h i"


async def test_documents_too_costly_to_validate_or_run_are_refused_first(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_cost.js")
    cases = {
        # a comment of 1 MB passes any token count: bytes come first
        "#" + "x" * 1_000_000 + "\n{ items(n: 1) { id } }": "larger than 65536 bytes (limits.graphql_max_query_bytes)",
        # 3,000 aliases of a field
        "{ " + " ".join(f"a{i}:one" for i in range(3000)) + " }":
            "more than 1000 fields once its fragments are expanded (limits.graphql_max_fields)",
        # a few lines that expand to millions of selections
        "query { items(n: 1) { ...F9 } } " + " ".join(
            f"fragment F{k} on Item {{ children {{ ...F{k - 1} }} children2: children {{ ...F{k - 1} }} }}"
            for k in range(1, 10)) + f" fragment F0 on Item {{ {ITEM_FIELDS} }}":
            "more than 1000 fields once its fragments are expanded",
        # the same, in an operation nobody asked to run: validation still walks it
        "query A { one } query B { items(n: 1) { ...F9 } } " + " ".join(
            f"fragment F{k} on Item {{ children {{ ...F{k - 1} }} children2: children {{ ...F{k - 1} }} }}"
            for k in range(1, 10)) + f" fragment F0 on Item {{ {ITEM_FIELDS} }}":
            "more than 1000 fields once its fragments are expanded",
        # fragments that spread themselves, and sibling spreads doubling at each level (introspection
        # depth checks walked them for ever)
        '{ __type(name: "Query") { ...F40 } } fragment F0 on __Type { ...F0 } ' + " ".join(
            f"fragment F{k} on __Type {{ ...F{k - 1} ...F{k - 1} }}" for k in range(1, 41)):
            "fragment F0 spreads itself",
        '{ __type(name: "Query") { ...F40 } } fragment F0 on __Type { name } ' + " ".join(
            f"fragment F{k} on __Type {{ ...F{k - 1} ...F{k - 1} }}" for k in range(1, 41)):
            "more than 1000 fields once its fragments are expanded",
    }
    for query, reason in cases.items():
        r = await client.post("/graphql", json={"query": query}, headers={"Content-Type": "application/json"})
        body = await r.json()
        assert r.status == 200 and body.get("data") is None and reason in body["errors"][0]["message"], body
    # the same limits hold on the SSE transport, before anything is subscribed
    r = await client.post("/graphql/sse", json={"query": next(iter(cases))})
    assert "larger than 65536 bytes" in (await r.text())
    # a document at the limit still runs
    at_limit = "{ " + " ".join(f"a{i}: items(n: 1) {{ id }}" for i in range(500)) + " }"
    body = await gql(client, at_limit)
    assert "errors" not in body and body["data"]["a499"] == [{"id": "0"}]


async def test_a_result_is_bounded_as_its_lists_come_back(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_cost.js", graphql_max_result_fields=5000)
    ok = await gql(client, f"{{ items(n: 400) {{ {ITEM_FIELDS} }} }}")  # 400 x 10 = 4,000 fields
    assert "errors" not in ok and len(ok["data"]["items"]) == 400 and ok["data"]["items"][399]["i"] == 399
    big = await gql(client, f"{{ items(n: 2000) {{ {ITEM_FIELDS} }} other: items(n: 1) {{ id }} }}")
    assert big["data"] == {"items": None, "other": [{"id": "0"}]}  # the rest of the query still answers
    error = big["errors"][0]
    assert error["extensions"]["code"] == "RESULT_TOO_LARGE" and error["path"] == ["items"]
    assert "past 5000 fields (limits.graphql_max_result_fields)" in error["message"]
    grid = await gql(client, "{ grid(n: 100) }")  # nested lists count every item
    assert grid["data"] == {"grid": None} and grid["errors"][0]["extensions"]["code"] == "RESULT_TOO_LARGE"
    assert (await gql(client, "{ grid(n: 50) }"))["data"]["grid"][49][49] == 49


async def test_a_large_result_is_built_off_the_loop_and_is_whole(engine_client: MakeClient) -> None:
    """20,000 objects of 10 fields each, built on the GraphQL thread while its resolver runs on the
    script's (bench/stall_bench.py measures what the server's loop sees of it): the result is whole."""
    client = await engine_client("graphql_cost.js", graphql_max_result_fields=300_000)
    body = await gql(client, f"{{ items(n: 20000) {{ {ITEM_FIELDS} }} }}")
    items = body["data"]["items"]
    assert "errors" not in body and len(items) == 20000
    assert items[19999] == {"id": "19999", "a": 19999, "b": 19999, "c": "x", "d": 19999, "e": 19999, "f": 19999,
                            "g": 19999, "h": 19999, "i": 19999}


async def test_a_request_past_its_deadline_answers_with_an_error(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_cost.js", graphql_timeout_ms=300)
    body = await gql(client, "{ sleepy(ms: 20000) }")
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "TIMEOUT"
    assert "deadline of 300 ms (limits.graphql_timeout_ms)" in body["errors"][0]["message"]
    assert (await gql(client, "{ sleepy(ms: 1) }"))["data"] == {"sleepy": 1}


async def test_resolver_calls_are_not_run_once_the_client_has_gone(engine_client: MakeClient) -> None:
    """50 aliases of a resolver that takes 100 ms: the client leaves once the first has started, and
    the script's thread skips the calls still queued instead of running them for nobody."""
    client = await engine_client("graphql_cost.js", script_time_ms=5000)
    started = await client.get("/cost/started", headers={"Accept": "text/event-stream"})
    reader = SSEReader(started)
    query = "{ " + " ".join(f"a{i}: slow(ms: 100)" for i in range(50)) + " }"
    request = asyncio.create_task(client.post("/graphql", json={"query": query}))
    assert (await reader.next()).data == "1"  # the first call has started
    request.cancel()  # the client goes away: its connection closes
    with pytest.raises(asyncio.CancelledError):
        await request
    # The count is asked for on the same script thread, behind whatever is still queued there.
    count = int(await (await client.get("/cost/count")).text())
    assert count < 50, count
    started.close()


async def test_published_subscription_results_are_bounded_too(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_cost.js", graphql_max_result_fields=5000)
    _, small = await subscribe(client, "subscription { feed { id } }")
    _, wide = await subscribe(client, "subscription { feed { id a } }")
    await wait_for(lambda: client.app[SUBSCRIPTIONS].count == 2, what="both subscriptions to be in place")
    await client.post("/cost/feed", params={"n": "3000"})  # 3,000 fields for one, 6,000 for the other
    got = await next_result(small)
    assert len(got["data"]["feed"]) == 3000 and got["data"]["feed"][2999] == {"id": "2999"}  # built off the loop
    too_big = await next_result(wide)
    assert too_big["data"] == {"feed": None} and too_big["errors"][0]["extensions"]["code"] == "RESULT_TOO_LARGE"
    await client.post("/cost/feed", params={"n": "2"})  # and both carry on
    assert (await next_result(small))["data"]["feed"] == [{"id": "0"}, {"id": "1"}]
    assert (await next_result(wide))["data"]["feed"] == [{"id": "0", "a": 0}, {"id": "1", "a": 1}]


async def test_json_nested_too_deeply_is_a_400(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_cost.js")
    r = await client.post("/graphql", data=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert r.status == 400 and "nested too deeply" in (await r.json())["error"]["message"]
    r = await client.get("/graphql", params={"query": "{ grid(n: 1) }", "variables": "[" * 2_000})
    assert r.status == 400 and "nested too deeply" in (await r.json())["error"]["message"]


async def test_introspection_results_are_bounded_too(engine_client: MakeClient) -> None:
    """Introspection has resolvers of its own, not the scripts': its lists are charged all the same."""
    types = " ".join(f"type T{i} {{ " + " ".join(f"f{j}: Int" for j in range(10)) + " }" for i in range(50))
    big = f'registerGraphQLQuery("t", "type Query {{ t: T0 }} {types}", () => null);'
    client = await engine_client(extra={"big.js": big}, graphql_max_result_fields=500)
    small = await gql(client, "{ __schema { queryType { name } } }")
    assert small["data"]["__schema"]["queryType"]["name"] == "Query"
    alias = "a{}: __schema {{ types {{ name fields {{ name type {{ name }} }} }} }}"
    body = await gql(client, "{ " + " ".join(alias.format(i) for i in range(5)) + " }")
    codes = {e["extensions"]["code"] for e in body["errors"]}
    assert codes == {"RESULT_TOO_LARGE"}
    # Unbounded, this result holds 8,715 fields. Charged are lists (items times the fields below);
    # what is outside lists, and the null a refused list leaves, comes on top, bounded by the query.
    assert fields_in(body["data"]) <= 1500


def fields_in(value: Any) -> int:
    if isinstance(value, dict):
        return sum(1 + fields_in(v) for v in value.values())
    if isinstance(value, list):
        return sum(fields_in(v) for v in value)
    return 0


JSON_TEXT = """
registerGraphQLQuery("profile", "type Query { profile: Profile } type Profile { name: String! tags: [String!]! }",
  () => JSON.stringify({ name: "Ada", tags: ["math"] }));
registerGraphQLQuery("numbers", "type Query { numbers: [Int!]! }", () => " [1, 2, 3]");
registerGraphQLQuery("note", "type Query { note: String }", () => "{not parsed: a String field}");
registerGraphQLQuery("broken", "type Query { broken: Profile }", () => "{ not json");
"""


async def test_json_text_for_an_object_or_list_field_is_parsed(engine_client: MakeClient) -> None:
    """aiwebengine parsed a resolver's JSON string for an object- or list-typed field; scripts rely on it."""
    client = await engine_client(extra={"j.js": JSON_TEXT})
    r = await client.post("/graphql", json={"query": "{ profile { name tags } numbers note }"})
    assert await r.json() == {"data": {"profile": {"name": "Ada", "tags": ["math"]}, "numbers": [1, 2, 3],
                                       "note": "{not parsed: a String field}"}}
    broken = await (await client.post("/graphql", json={"query": "{ broken { name } }"})).json()
    assert broken["data"] == {"broken": None} and broken["errors"]


async def test_a_prepared_query_is_shared_until_the_schema_changes(engine_client: MakeClient) -> None:
    """The same document is parsed and validated once per schema: a registration that changes the
    schema makes it checked again (a field that went is an error, not a stale success)."""
    client = await engine_client("compat_graphql.js", extra={"extra.js": JSON_TEXT})
    runner = client.app[GRAPHQL_RUNNER]
    for _ in range(3):
        assert (await gql(client, "{ numbers }"))["data"] == {"numbers": [1, 2, 3]}
    assert sum(1 for key in runner._prepared if key[0] == "{ numbers }") == 1
    await client.app[SCRIPTS].unload("extra.js")
    body = await gql(client, "{ numbers }")
    assert "Cannot query field 'numbers'" in body["errors"][0]["message"]


async def test_the_text_of_a_result_is_bounded_however_often_a_field_is_aliased(engine_client: MakeClient) -> None:
    """A thousand aliases of one resolver echoing a large variable would build a result a thousand
    times its size: past limits.max_response_bytes of text, the rest are errors, not memory."""
    client = await engine_client("compat_graphql.js", max_response_bytes=1 << 20, graphql_max_query_bytes=1 << 20)
    query = "query($n: String) { " + " ".join(f"a{i}: hello(name: $n)" for i in range(200)) + " }"
    r = await client.post("/graphql", json={"query": query, "variables": {"n": "x" * 100_000}})
    body = await r.json()
    filled = [v for v in body["data"].values() if v is not None]
    assert 1 <= len(filled) <= 11  # about 1 MiB of them, then errors
    assert any(e["extensions"]["code"] == "RESULT_TOO_LARGE" for e in body["errors"])
    assert len(await r.read()) < 2 << 20
