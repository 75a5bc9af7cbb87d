"""The route table on its own: matching order, parameters, prefixes, 405 lists, conflicts."""

from __future__ import annotations

import pytest

from engine.errors import RouteConflict
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
