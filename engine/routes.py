"""The dynamic route table that `register()` fills: patterns, matching, ownership and conflicts.

It knows nothing of aiohttp: a route's `target` is opaque here. Every change is synchronous, so a
request matched on the event loop sees one version or the other. Replacing an owner's routes (a
load) rebuilds the lookup tables; adding one (a registration after the load) costs the same
however many routes exist, so a script registering in a loop cannot make the loop quadratic.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from engine.errors import RouteConflict


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as registered: "/users/{id}", "/files/*"
    owner: str  # the script that registered it
    target: Any  # what runs it (the engine passes the script's context)
    handler: int  # handler index inside the target

    @property
    def key(self) -> str:
        """Identity for conflicts: parameter names do not matter, `/a/{x}` and `/a/{y}` collide."""
        return f"{self.method} {pattern_key(self.path)}"


@dataclass(slots=True)
class Match:
    route: Route
    params: dict[str, str]


@dataclass
class _Pattern:
    segments: list[str | None]  # a literal, or None for a {param}
    names: list[str]
    prefix: bool  # ends in /*
    methods: dict[str, Route] = field(default_factory=dict)

    def sort_key(self) -> tuple[int, int, int]:
        literals = sum(1 for s in self.segments if s is not None)
        return (self.prefix, -literals, -len(self.segments))

    def match(self, parts: list[str]) -> dict[str, str] | None:
        n = len(self.segments)
        if len(parts) < n if self.prefix else len(parts) != n:
            return None
        params: dict[str, str] = {}
        names = iter(self.names)
        for want, got in zip(self.segments, parts, strict=False):
            if want is None:
                if got == "":
                    return None
                params[next(names)] = unquote(got)
            elif want != unquote(got):
                return None
        if self.prefix:
            params["*"] = unquote("/".join(parts[n:]))
        return params


def pattern_key(path: str) -> str:
    return "/".join("{}" if s.startswith("{") else s for s in path.split("/"))


def _parse(path: str) -> _Pattern:
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
    return _Pattern(segments, names, prefix)


class RouteTable:
    """Routes by owner, and by key; looked up through a static dict plus ordered patterns."""

    def __init__(self) -> None:
        self._by_owner: dict[str, dict[str, Route]] = {}  # owner -> key -> route
        self._by_key: dict[str, Route] = {}  # every route, by its conflict key
        self._static: dict[str, dict[str, Route]] = {}
        self._patterns: list[_Pattern] = []
        self._pattern_index: dict[str, _Pattern] = {}

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

    def replace(self, owner: str, routes: list[Route]) -> None:
        """Give `owner` exactly these routes, atomically; raise RouteConflict and change nothing if taken."""
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
        self._rebuild()

    def add(self, route: Route) -> None:
        """One more route for its owner, in constant time (plus placing a new pattern in order)."""
        taken = self._by_key.get(route.key)
        if taken is not None:
            whose = "this script" if taken.owner == route.owner else f"script {taken.owner}"
            raise RouteConflict(f"{route.method} {route.path} is already registered by {whose}")
        self._by_owner.setdefault(route.owner, {})[route.key] = route
        self._by_key[route.key] = route
        self._place(route, self._static, self._pattern_index, self._patterns)

    @staticmethod
    def _place(route: Route, static: dict[str, dict[str, Route]], index: dict[str, _Pattern],
               patterns: list[_Pattern]) -> None:
        if "{" in route.path or route.path.endswith("/*"):
            key = pattern_key(route.path)
            p = index.get(key)
            if p is None:
                p = index[key] = _parse(route.path)
                # Among equally specific patterns, a rebuild tries owners in load order; a pattern
                # added later goes after its equals, as if its owner had loaded last.
                insort(patterns, p, key=_Pattern.sort_key)
            p.methods[route.method] = route
        else:
            static.setdefault(route.path, {})[route.method] = route

    def _rebuild(self) -> None:
        static: dict[str, dict[str, Route]] = {}
        index: dict[str, _Pattern] = {}
        for routes in self._by_owner.values():
            for route in routes.values():
                if "{" in route.path or route.path.endswith("/*"):
                    index.setdefault(pattern_key(route.path), _parse(route.path)).methods[route.method] = route
                else:
                    static.setdefault(route.path, {})[route.method] = route
        self._static = static
        self._pattern_index = index
        self._patterns = sorted(index.values(), key=_Pattern.sort_key)

    @property
    def has_patterns(self) -> bool:
        """Whether any route has parameters or a prefix (only then does matching need the raw path)."""
        return bool(self._patterns)

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
        if self._patterns:
            parts = (raw_path or path).split("/")[1:]
            for p in self._patterns:
                params = p.match(parts)
                if params is None:
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
