"""The route table on its own: matching order, parameters, prefixes, 405 lists, conflicts."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import unquote

import pytest

from engine.errors import RouteConflict
from engine.http.keys import ROUTES, SCRIPTS, STREAMS
from engine.routes import Match, Route, RouteTable


def r(method: str, path: str, owner: str = "a.js", handler: int = 0) -> Route:
    return Route(method, path, owner, None, handler)


def test_static_beats_parameter_beats_prefix() -> None:
    t = RouteTable()
    t.replace("a.js", [r("GET", "/u/*", handler=1), r("GET", "/u/{id}", handler=2), r("GET", "/u/me", handler=3)])
    assert t.match("GET", "/u/me").route.handler == 3  # type: ignore[union-attr]
    m = t.match("GET", "/u/7")
    assert isinstance(m, Match) and m.route.handler == 2 and m.params == {"id": "7"}
    m = t.match("GET", "/u/7/x")
    assert isinstance(m, Match) and m.route.handler == 1 and m.params == {"*": "7/x"}


def test_more_literal_segments_win() -> None:
    t = RouteTable()
    t.replace("a.js", [r("GET", "/{a}/{b}", handler=1), r("GET", "/x/{b}", handler=2)])
    assert t.match("GET", "/x/y").route.handler == 2  # type: ignore[union-attr]
    assert t.match("GET", "/z/y").route.handler == 1  # type: ignore[union-attr]


def test_method_decides_between_overlapping_patterns() -> None:
    t = RouteTable()
    t.replace("a.js", [r("POST", "/u/me", handler=1), r("GET", "/u/{id}", handler=2)])
    assert t.match("GET", "/u/me").route.handler == 2  # type: ignore[union-attr]
    assert t.match("DELETE", "/u/me") == ["GET", "POST", "HEAD"]


def test_head_uses_get_and_empty_params_do_not_match() -> None:
    t = RouteTable()
    t.replace("a.js", [r("GET", "/u/{id}")])
    assert isinstance(t.match("HEAD", "/u/1"), Match)
    assert t.match("GET", "/u/") is None
    assert t.match("GET", "/u") is None


def test_encoded_slash_stays_inside_a_parameter() -> None:
    t = RouteTable()
    t.replace("a.js", [r("GET", "/f/{name}")])
    m = t.match("GET", "/f/a/b", raw_path="/f/a%2Fb")
    assert isinstance(m, Match) and m.params == {"name": "a/b"}


def test_conflicts_ignore_parameter_names_and_change_nothing() -> None:
    t = RouteTable()
    t.replace("a.js", [r("GET", "/u/{id}"), r("GET", "/static")])
    with pytest.raises(RouteConflict, match=r"GET /u/\{name\} is already registered by script a.js"):
        t.replace("b.js", [r("GET", "/free", "b.js"), r("GET", "/u/{name}", "b.js")])
    assert t.match("GET", "/free") is None
    t.replace("b.js", [r("POST", "/u/{name}", "b.js")])  # other method: fine
    assert len(t) == 3


def test_replace_is_whole_and_empty_removes() -> None:
    t = RouteTable()
    t.replace("a.js", [r("GET", "/one"), r("GET", "/two")])
    t.replace("a.js", [r("GET", "/three")])
    assert t.match("GET", "/one") is None and isinstance(t.match("GET", "/three"), Match)
    t.replace("a.js", [])
    assert len(t) == 0 and t.match("GET", "/three") is None


MANY_ROUTES = """
for (let i = 0; i < 30000; i++) register(i % 2 ? "/r" + i + "/{id}" : "/r" + i, (req) => "r" + (req.params.id || ""));
let more = 0;
register("/more", function (req) {
  for (let n = Number(req.query.n); n > 0; n--, more++) {
    register(more % 2 ? "/m" + more + "/{id}/*" : "/m" + more, () => "m");
    registerWebStream("/ms" + more);
  }
  return String(more);
});
"""


async def test_registering_after_load_costs_the_same_however_many_routes_exist(engine_client: Any) -> None:
    """30,000 routes, then a handler registering 1,000 more routes and 1,000 streams in one call: each
    registration is constant work (it was a rebuild of the whole table, minutes of frozen loop)."""
    client = await engine_client(extra={"many.js": MANY_ROUTES})
    assert len(client.app[ROUTES]) == 30001
    assert await (await client.get("/more", params={"n": "1000"})).text() == "1000"
    assert len(client.app[ROUTES]) == 31001
    assert await (await client.get("/r29999/x")).text() == "r" + "x"
    assert await (await client.get("/r0")).text() == "r"
    assert await (await client.get("/m999/a/b/c")).text() == "m"
    assert await (await client.get("/m998")).text() == "m"
    assert (await client.get("/m999")).status == 404  # /m999/{id}/* needs an {id}
    assert client.app[SCRIPTS].records["many.js"].status == "loaded"
    assert len([p for p in client.app[STREAMS].streams if p.startswith("/ms")]) == 1000


def test_adding_one_by_one_matches_like_replacing_at_once() -> None:
    """`add` (a registration after the load) keeps the table exactly as a rebuild would order it."""
    rng = random.Random(7)
    paths = set()
    while len(paths) < 150:  # of the 240 there are
        parts = [rng.choice(["a", "b", f"{{p{i}}}"]) for i in range(rng.randint(1, 4))]
        paths.add("/" + "/".join(parts + (["*"] if rng.random() < 0.3 else [])))
    routes = [r(rng.choice(["GET", "POST"]), p, handler=i) for i, p in enumerate(sorted(paths))]
    unique = list({x.key: x for x in routes}.values())
    whole, one_by_one = RouteTable(), RouteTable()
    whole.replace("a.js", unique)
    for route in unique:
        one_by_one.add(route)
    probes = ["/" + "/".join(rng.choice(["a", "b", "c"]) for _ in range(rng.randint(1, 5))) for _ in range(500)]
    for method in ("GET", "POST", "PUT"):
        for probe in probes:
            a, b = whole.match(method, probe), one_by_one.match(method, probe)
            assert (a.route.handler, a.params) == (b.route.handler, b.params) if isinstance(a, Match) else a == b
    with pytest.raises(RouteConflict, match="already registered by this script"):
        one_by_one.add(unique[0])


def test_the_pattern_trie_matches_exactly_as_trying_every_pattern_in_order() -> None:
    """The trie only visits the branches a path can take; the answer must be the one trying every
    pattern in matching order would give, for literals, parameters, prefixes, empty and
    percent-encoded segments alike."""
    rng = random.Random(11)
    table = RouteTable()
    routes, seen = [], set()
    for i in range(400):
        parts = [rng.choice(["a", "b", "", "a b", f"{{p{j}}}"]) for j in range(rng.randint(1, 4))]
        path = "/" + "/".join(parts + (["*"] if rng.random() < 0.25 else []))
        route = r(rng.choice(["GET", "POST"]), path, owner=rng.choice(["a.js", "b.js"]), handler=i)
        if route.key not in seen:
            seen.add(route.key)
            routes.append(route)
    for owner in ("a.js", "b.js"):
        table.replace(owner, [x for x in routes if x.owner == owner])
    ordered = sorted(table._pattern_index.values(), key=lambda p: p.rank)  # noqa: SLF001 - the reference

    def by_scanning(method: str, raw: str) -> Match | list[str] | None:
        parts, allowed = raw.split("/")[1:], []
        for p in ordered:
            params = p.match(parts)
            if params is not None:
                if method in p.methods:
                    return Match(p.methods[method], params)
                allowed += p.methods
        return sorted(set(allowed)) + (["HEAD"] if "GET" in allowed else []) if allowed else None

    segments = ["a", "b", "", "c", "a%20b", "%61", "x"]
    for _ in range(3000):
        raw = "/" + "/".join(rng.choice(segments) for _ in range(rng.randint(1, 6)))
        path = unquote(raw)
        if path in table._static:  # noqa: SLF001 - static paths are looked up first, as before
            continue
        for method in ("GET", "POST"):
            got, want = table.match(method, path, raw), by_scanning(method, raw)
            if isinstance(want, Match):
                assert isinstance(got, Match) and (got.route, got.params) == (want.route, want.params), raw
            else:
                assert got == want, raw


async def test_a_path_with_a_backslash_is_refused(engine_client: Any) -> None:
    """Browsers read a link to `/\\host/x` as one to another site: no route or stream may be one."""
    source = ('let r = []; for (const p of ["/\\\\evil.example/x", "/a\\\\b"]) {'
              ' try { register(p, () => "x"); r.push("registered"); } catch (e) { r.push(e.message); }'
              ' try { registerWebStream(p); r.push("registered"); } catch (e) { r.push(e.message); } }'
              ' register("/tried", () => ({ body: r }));')
    client = await engine_client(extra={"bs.js": source})
    answers = await (await client.get("/tried")).json()
    assert len(answers) == 4 and all("must not contain" in a and "'\\'" in a for a in answers), answers
