"""The dynamic route table that `register()` fills: patterns, matching, ownership and conflicts.

It knows nothing of aiohttp: a route's `target` is opaque here. Every change is synchronous, so a
request matched on the event loop sees one version or the other. Adding a route (a registration
after the load) costs the same however many routes exist, so a script registering in a loop cannot
make the loop quadratic. Replacing an owner's routes (a load) needs new lookup tables: a `Plan`
builds them from a snapshot, on any thread, and `replace` swaps them in if nothing changed since.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from engine.errors import RouteConflict


@dataclass(frozen=True, slots=True)
class Shape:
    """A path with parameters or a prefix, read once: what a pattern is made of."""

    segments: tuple[str | None, ...]  # a literal, or None for a {param}
    names: tuple[str, ...]
    prefix: bool  # ends in /*
    # Matching order: plain before prefix, then more literal segments, then more segments.
    order: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Route:
    """One registration. Its key and shape are worked out when it is made (on the script's thread,
    for a load), so the table's work on the event loop is lookups and inserts."""

    method: str
    path: str  # as registered: "/users/{id}", "/files/*"
    owner: str  # the script that registered it
    target: Any  # what runs it (the engine passes the script's context)
    handler: int  # handler index inside the target
    # Identity for conflicts: parameter names do not matter, `/a/{x}` and `/a/{y}` collide.
    key: str = field(init=False)
    shape: Shape | None = field(init=False)  # None for a plain path

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.method} {pattern_key(self.path)}")
        object.__setattr__(self, "shape", _shape(self.path) if "{" in self.path or self.path.endswith("/*") else None)


@dataclass(slots=True)
class Match:
    route: Route
    params: dict[str, str]


@dataclass
class _Pattern:
    shape: Shape
    rank: tuple[tuple[int, int, int], int]  # the matching order: the shape's, then first made first
    methods: dict[str, Route] = field(default_factory=dict)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        shape = self.shape
        n = len(shape.segments)
        if len(parts) < n if shape.prefix else len(parts) != n:
            return None
        params: dict[str, str] = {}
        names = iter(shape.names)
        for want, got in zip(shape.segments, parts, strict=False):
            if want is None:
                if got == "":
                    return None
                params[next(names)] = unquote(got)
            elif want != unquote(got):
                return None
        if shape.prefix:
            params["*"] = unquote("/".join(parts[n:]))
        return params


_made = itertools.count()


def _pattern(shape: Shape) -> _Pattern:
    return _Pattern(shape, (shape.order, next(_made)))


def _rank(p: _Pattern) -> tuple[tuple[int, int, int], int]:
    return p.rank


@dataclass(slots=True)
class _Node:
    """A trie of patterns by segment: a request visits only the branches its path can take, so
    matching costs what the path and its look-alikes cost, not what every pattern costs."""

    literal: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    end: _Pattern | None = None  # a pattern whose last segment is this node's
    prefix: _Pattern | None = None  # a `/*` pattern whose last fixed segment is this node's

    def insert(self, p: _Pattern) -> None:
        node = self
        for seg in p.shape.segments:
            if seg is None:
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.literal.setdefault(seg, _Node())
        if p.shape.prefix:
            node.prefix = p
        else:
            node.end = p

    def candidates(self, parts: list[str]) -> list[_Pattern]:
        """Every pattern that matches `parts` (still-encoded segments), in matching order."""
        decoded = [unquote(p) for p in parts]
        found: list[_Pattern] = []
        stack = [(self, 0)]
        while stack:
            node, depth = stack.pop()
            if node.prefix is not None:
                found.append(node.prefix)
            if depth == len(parts):
                if node.end is not None:
                    found.append(node.end)
                continue
            child = node.literal.get(decoded[depth])
            if child is not None:
                stack.append((child, depth + 1))
            if node.param is not None and parts[depth] != "":
                stack.append((node.param, depth + 1))
        found.sort(key=_rank)
        return found


def pattern_key(path: str) -> str:
    return "/".join("{}" if s.startswith("{") else s for s in path.split("/"))


def _shape(path: str) -> Shape:
    parts = path.split("/")[1:]
    prefix = bool(parts) and parts[-1] == "*"
    if prefix:
        parts = parts[:-1]
    segments: list[str | None] = []
    names: list[str] = []
    for p in parts:
        if p.startswith("{") and p.endswith("}"):
            segments.append(None)
            names.append(p[1:-1])
        else:
            segments.append(p)
    literals = sum(1 for s in segments if s is not None)
    return Shape(tuple(segments), tuple(names), prefix, (prefix, -literals, -len(segments)))


Tables = tuple[dict[str, dict[str, Route]], dict[str, _Pattern], _Node]  # static paths, patterns by key, trie


def _tables(routes: list[Route]) -> Tables:
    """The lookup tables for `routes` (in owner load order): a pure function, for any thread."""
    static: dict[str, dict[str, Route]] = {}
    index: dict[str, _Pattern] = {}
    trie = _Node()
    for route in routes:
        if route.shape is not None:
            key = route.key.partition(" ")[2]
            p = index.get(key)
            if p is None:
                p = index[key] = _pattern(route.shape)
                trie.insert(p)
            p.methods[route.method] = route
        else:
            static.setdefault(route.path, {})[route.method] = route
    return static, index, trie


class Plan:
    """The lookup tables the table will have once `owner` has `routes`: built by `build`, which may
    run on another thread (a load of many routes), from a snapshot taken on the loop."""

    def __init__(self, version: int, owner: str, routes: list[Route]) -> None:
        self.version = version
        self.owner = owner
        self._routes = routes
        self.tables: Tables | None = None

    def build(self) -> Plan:
        self.tables = _tables(self._routes)
        return self


class RouteTable:
    """Routes by owner, and by key; looked up through a static dict plus ordered patterns."""

    def __init__(self) -> None:
        self._by_owner: dict[str, dict[str, Route]] = {}  # owner -> key -> route
        self._by_key: dict[str, Route] = {}  # every route, by its conflict key
        self._static: dict[str, dict[str, Route]] = {}
        self._pattern_index: dict[str, _Pattern] = {}
        self._trie = _Node()
        self._version = 0  # bumped by every change: a plan from an older table is not used

    def __len__(self) -> int:
        return len(self._by_key)

    def routes(self, owner: str | None = None) -> list[Route]:
        if owner is not None:
            return list(self._by_owner.get(owner, {}).values())
        return list(self._by_key.values())

    def claims(self, exclude: str | None) -> dict[str, str]:
        """Route key -> owner, for every route not owned by `exclude`."""
        return {k: r.owner for k, r in self._by_key.items() if r.owner != exclude}

    def owner_of(self, method: str, path: str) -> str | None:
        """Who owns `method path` (parameter names aside), if anyone."""
        route = self._by_key.get(f"{method} {pattern_key(path)}")
        return route.owner if route is not None else None

    def conflicts(self, owner: str, routes: list[Route]) -> list[str]:
        """Why `routes` cannot be given to `owner`: one line per route another script already owns."""
        problems = []
        for r in routes:
            taken = self._by_key.get(r.key)
            if taken is not None and taken.owner != owner:
                problems.append(f"{r.method} {r.path} is already registered by script {taken.owner}")
        return problems

    def plan(self, owner: str, routes: list[Route]) -> Plan:
        """A snapshot of the table with `owner` having `routes` (a reloaded owner keeps its place);
        call `build` on it anywhere, then pass it to `replace`."""
        snapshot: list[Route] = []
        for o, rs in self._by_owner.items():
            snapshot.extend(routes if o == owner else rs.values())
        if owner not in self._by_owner:
            snapshot.extend(routes)
        return Plan(self._version, owner, snapshot)

    def replace(self, owner: str, routes: list[Route], plan: Plan | None = None) -> None:
        """Give `owner` exactly these routes, atomically; raise RouteConflict and change nothing if taken.
        With a built `plan` for the same change and nothing changed since, its tables are swapped in;
        otherwise they are built here."""
        problems = self.conflicts(owner, routes)
        if problems:
            raise RouteConflict("; ".join(problems))
        for key in self._by_owner.get(owner, {}):
            del self._by_key[key]
        if routes:
            mine = self._by_owner[owner] = {r.key: r for r in routes}  # a reloaded owner keeps its place
            self._by_key.update(mine)
        else:
            self._by_owner.pop(owner, None)
        usable = plan is not None and plan.tables is not None and plan.version == self._version and plan.owner == owner
        self._static, self._pattern_index, self._trie = (
            plan.tables if usable else _tables([r for rs in self._by_owner.values() for r in rs.values()]))  # type: ignore[union-attr,misc]
        self._version += 1

    def add(self, route: Route) -> None:
        """One more route for its owner, in constant time. Among equally specific patterns, a
        rebuild tries owners in load order; a pattern added later goes after its equals, as if its
        owner had loaded last."""
        taken = self._by_key.get(route.key)
        if taken is not None:
            whose = "this script" if taken.owner == route.owner else f"script {taken.owner}"
            raise RouteConflict(f"{route.method} {route.path} is already registered by {whose}")
        self._by_owner.setdefault(route.owner, {})[route.key] = route
        self._by_key[route.key] = route
        if route.shape is not None:
            key = route.key.partition(" ")[2]
            p = self._pattern_index.get(key)
            if p is None:
                p = self._pattern_index[key] = _pattern(route.shape)
                self._trie.insert(p)
            p.methods[route.method] = route
        else:
            self._static.setdefault(route.path, {})[route.method] = route
        self._version += 1

    @property
    def has_patterns(self) -> bool:
        """Whether any route has parameters or a prefix (only then does matching need the raw path)."""
        return bool(self._pattern_index)

    def match(self, method: str, path: str, raw_path: str | None = None) -> Match | list[str] | None:
        """The route for `method path`; else the methods the path does allow (for 405); else None.

        `path` is the decoded path; `raw_path` the still-encoded one, so `%2F` inside a parameter
        stays part of it.
        """
        lookup = "GET" if method == "HEAD" else method
        allowed: list[str] = []
        by_method = self._static.get(path)
        if by_method:
            route = by_method.get(lookup)
            if route is not None:
                return Match(route, {})
            allowed += by_method
        if self._pattern_index:
            parts = (raw_path or path).split("/")[1:]
            for p in self._trie.candidates(parts):
                params = p.match(parts)
                if params is None:  # the trie found it, so it matches: a guard, not a branch
                    continue
                route = p.methods.get(lookup)
                if route is not None:
                    return Match(route, params)
                allowed += p.methods
        if not allowed:
            return None
        methods = sorted(set(allowed))
        if "GET" in methods:
            methods.append("HEAD")
        return methods
