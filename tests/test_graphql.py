"""GraphQL over HTTP from scripts: the schema they build together, /graphql, errors, registration."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from conftest import MakeClient

from engine.http.keys import GRAPHQL, SCRIPTS


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
    r = await client.get("/graphql")  # not a browser, no query
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
    body = await gql(client, "{ " + " ".join(["hello"] * 12_000) + " }")
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
