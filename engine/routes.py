"""The dynamic route table that `register()` fills: patterns, matching, ownership and conflicts.

It knows nothing of aiohttp: a route's `target` is opaque here. Every change replaces one owner's
routes as a whole, synchronously, so a request matched on the event loop sees one version or the other.
"""

from __future__ import annotations

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
    """Routes by owner; rebuilt into a static dict plus ordered patterns on every change."""

    def __init__(self) -> None:
        self._by_owner: dict[str, list[Route]] = {}
        self._static: dict[str, dict[str, Route]] = {}
        self._patterns: list[_Pattern] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self._by_owner.values())

    def routes(self, owner: str | None = None) -> list[Route]:
        if owner is not None:
            return list(self._by_owner.get(owner, ()))
        return [r for rs in self._by_owner.values() for r in rs]

    def claims(self, exclude: str) -> dict[str, str]:
        """Route key -> owner, for every route not owned by `exclude`."""
        return {r.key: r.owner for o, rs in self._by_owner.items() if o != exclude for r in rs}

    def conflicts(self, owner: str, routes: list[Route]) -> list[str]:
        """Why `routes` cannot be given to `owner`: one line per route another script already owns."""
        taken = self.claims(owner)
        return [f"{r.method} {r.path} is already registered by script {taken[r.key]}"
                for r in routes if r.key in taken]

    def replace(self, owner: str, routes: list[Route]) -> None:
        """Give `owner` exactly these routes, atomically; raise RouteConflict and change nothing if taken."""
        problems = self.conflicts(owner, routes)
        if problems:
            raise RouteConflict("; ".join(problems))
        if routes:
            self._by_owner[owner] = list(routes)
        else:
            self._by_owner.pop(owner, None)
        self._rebuild()

    def add(self, route: Route) -> None:
        self.replace(route.owner, [*self._by_owner.get(route.owner, []), route])

    def _rebuild(self) -> None:
        static: dict[str, dict[str, Route]] = {}
        patterns: dict[str, _Pattern] = {}
        for route in self.routes():
            if "{" in route.path or route.path.endswith("/*"):
                p = patterns.setdefault(pattern_key(route.path), _parse(route.path))
                p.methods[route.method] = route
            else:
                static.setdefault(route.path, {})[route.method] = route
        self._static = static
        self._patterns = sorted(patterns.values(), key=_Pattern.sort_key)

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
