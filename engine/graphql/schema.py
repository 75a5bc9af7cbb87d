"""The GraphQL schema scripts build together: their fields, who owns what, and the merged schema.

Each `registerGraphQL*` call brings one root field and the types its fragment declares. A script's
fragments must make a valid schema on their own (so removing another script never breaks it); types
of the same name in several scripts must be declared the same way and are then shared. The merged
schema is rebuilt, as a whole, whenever a script's fields change; `on_change` hears of each rebuild.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    EnumTypeDefinitionNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLNonNull,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    InputObjectTypeDefinitionNode,
    InterfaceTypeDefinitionNode,
    ObjectTypeDefinitionNode,
    ObjectTypeExtensionNode,
    ScalarTypeDefinitionNode,
    Token,
    TokenKind,
    TypeDefinitionNode,
    UnionTypeDefinitionNode,
    build_schema,
    parse,
    print_ast,
    validate_schema,
)

from engine.sandbox.context import UNDEFINED

ROOTS = {"query": "Query", "mutation": "Mutation", "subscription": "Subscription"}
SUBSCRIPTION_STREAM = "/graphql/subscription/"
# GraphQL needs a Query type; until a script declares a query field the schema has this one.
PLACEHOLDER = '"No script registers a query yet." _empty: Boolean'

Resolve = Callable[["FieldRegistration", dict[str, Any], Any], Awaitable[Any]]


@dataclass(eq=False)
class FieldRegistration:
    """One `registerGraphQL*` call."""

    kind: str  # query | mutation | subscription
    name: str
    sdl: str
    owner: str
    target: Any  # the script's context
    handler: int  # resolver index inside the target
    types: dict[str, dict[str, str]]  # non-root types the fragment declares -> {kind, text} as JS read them
    document: DocumentNode = None  # type: ignore[assignment] # parsed already (on the script's thread), or here

    def __post_init__(self) -> None:
        if self.document is None:
            self.document = read_fragment(self.kind, self.name, self.sdl, self.types)

    @property
    def root(self) -> str:
        return ROOTS[self.kind]

    @property
    def key(self) -> str:
        return f"{self.root}.{self.name}"


class SchemaProblem(Exception):
    """The fields cannot make a valid schema; the message says why."""


class FragmentMismatch(SchemaProblem):
    """A fragment is not what the script's JS said it is (its root field, its types): a forgery."""


_KINDS: dict[type, str] = {
    ObjectTypeDefinitionNode: "type", InterfaceTypeDefinitionNode: "interface", InputObjectTypeDefinitionNode: "input",
    EnumTypeDefinitionNode: "enum", ScalarTypeDefinitionNode: "scalar", UnionTypeDefinitionNode: "union",
}


def read_fragment(kind: str, name: str, sdl: str, types: dict[str, dict[str, str]]) -> DocumentNode:
    """Parse a registration's SDL (the script's reader accepted it; graphql-core must agree), and
    check it against what the script's JS said, since the reader ran in the script's world: exactly
    its one root field, and the types it reported (what other scripts' register checks are told
    this script declares)."""
    key = f"{ROOTS[kind]}.{name}"
    try:
        document = parse(sdl)
    except GraphQLError as e:
        raise SchemaProblem(f"{key}: {e.message}") from None
    root_fields = [(d.name.value, f.name.value) for d in document.definitions
                   if isinstance(d, ObjectTypeDefinitionNode | ObjectTypeExtensionNode) and d.name.value in _ROOT_NAMES
                   for f in d.fields or ()]
    if root_fields != [(ROOTS[kind], name)]:
        raise FragmentMismatch(f"{key}: the SDL declares {len(root_fields)} root fields, not just {key} "
                               "(was a built-in replaced?)")
    if declared_types(document) != types:
        raise FragmentMismatch(f"{key}: the types handed back do not match the SDL (was a built-in replaced?)")
    return document


_ROOT_NAMES = frozenset(ROOTS.values())


def declared_types(document: DocumentNode) -> dict[str, dict[str, str]]:
    """The non-root types a fragment declares, `{name: {kind, text}}`, with `text` the definition's
    tokens as written, joined by spaces: exactly what the prelude's SDL reader (sdl.js) computes."""
    out: dict[str, dict[str, str]] = {}
    for d in document.definitions:
        kind = _KINDS.get(type(d))
        if kind is None or d.name.value in ROOTS.values() or d.loc is None:  # type: ignore[attr-defined]
            continue
        body = d.loc.source.body
        token: Token | None = d.loc.start_token
        words: list[str] = []
        while token is not None:
            if token.kind != TokenKind.COMMENT:
                words.append(body[token.start:token.end])
            if token is d.loc.end_token:
                break
            token = token.next
        out[d.name.value] = {"kind": kind, "text": " ".join(words)}  # type: ignore[attr-defined]
    return out


@dataclass
class SchemaChange:
    """A script's fields checked against everyone else's: why not, or the schema they make."""

    owner: str
    regs: list[FieldRegistration]
    schema: GraphQLSchema | None
    problems: list[str]
    version: int = -1  # the registry's, when it was checked: only then may it be applied as it is


def merge(regs: list[FieldRegistration]) -> GraphQLSchema:
    """One schema from every registration; SchemaProblem if they do not make a valid one."""
    roots: dict[str, list[str]] = {"Query": [], "Mutation": [], "Subscription": []}
    types: dict[str, tuple[str, str]] = {}  # name -> (printed definition, owner)
    for r in regs:
        for d in r.document.definitions:
            if isinstance(d, ObjectTypeDefinitionNode | ObjectTypeExtensionNode) and d.name.value in roots:
                roots[d.name.value].extend(print_ast(f) for f in d.fields or ())
            elif isinstance(d, TypeDefinitionNode):
                text = print_ast(d)
                seen = types.setdefault(d.name.value, (text, r.owner))
                if seen[0] != text:
                    raise SchemaProblem(f"type {d.name.value} is declared differently by scripts {seen[1]} and "
                                        f"{r.owner}; a shared type must be declared the same way everywhere")
            else:
                raise SchemaProblem(f"{r.key}: only type definitions may appear in script SDL")
    if not roots["Query"]:
        roots["Query"].append(PLACEHOLDER)
    parts = [f"type {root} {{\n  " + "\n  ".join(fields) + "\n}" for root, fields in roots.items() if fields]
    parts += [text for text, _ in types.values()]
    try:
        schema = build_schema("\n\n".join(parts))
    except (GraphQLError, TypeError) as e:
        raise SchemaProblem(str(e).split("\n")[0]) from None
    errors = validate_schema(schema)
    if errors:
        raise SchemaProblem("; ".join(e.message for e in errors))
    return schema


class GraphQLRegistry:
    """Every script's fields and the schema they make, swapped as a whole on every change.

    Building and validating a schema of a few hundred fields takes a good part of a second: a change
    is checked (and its schema built) on a thread from what the registry holds then, and applied on
    the loop if nothing changed meanwhile; otherwise it is checked again, there."""

    def __init__(self, resolve: Resolve, on_change: Callable[[GraphQLSchema], None] | None = None) -> None:
        self._resolve = resolve
        self.on_change = on_change
        self._by_owner: dict[str, list[FieldRegistration]] = {}
        self.fields: dict[str, FieldRegistration] = {}  # "Query.hello" -> registration
        self.schema = self._build([])
        self._version = 0  # bumped by every change applied

    def owned(self, owner: str) -> list[FieldRegistration]:
        return list(self._by_owner.get(owner, ()))

    def claims(self, exclude: str | None) -> dict[str, Any]:
        """What other scripts own, as the prelude checks it: fields -> owner, types -> {kind, text, owner}."""
        fields = {k: r.owner for k, r in self.fields.items() if r.owner != exclude}
        types: dict[str, dict[str, str]] = {}
        for owner, regs in self._by_owner.items():
            if owner != exclude:
                for r in regs:
                    for name, t in r.types.items():
                        types.setdefault(name, {**t, "owner": owner})
        return {"gqlFields": fields, "gqlTypes": types}

    def check(self, owner: str, regs: list[FieldRegistration]) -> SchemaChange:
        """Whether `owner` can have exactly these fields (taken? a valid schema alone and merged?),
        with the merged schema ready to `apply` when it can. Nothing changes until then."""
        if not regs and owner not in self._by_owner:  # no GraphQL before or after: nothing to do
            return SchemaChange(owner, regs, self.schema, [], self._version)
        return self._checked(owner, regs, self.fields, self._with(owner, regs), self._version)

    async def check_off_loop(self, owner: str, regs: list[FieldRegistration]) -> SchemaChange:
        """`check`, the schema built on a thread from what the registry holds now."""
        if not regs and owner not in self._by_owner:
            return SchemaChange(owner, regs, self.schema, [], self._version)
        return await asyncio.to_thread(self._checked, owner, regs, dict(self.fields), self._with(owner, regs),
                                       self._version)

    def current(self, change: SchemaChange) -> SchemaChange:
        """`change` if nothing changed since it was checked; else the same change checked again."""
        return change if change.version == self._version else self.check(change.owner, change.regs)

    def _checked(self, owner: str, regs: list[FieldRegistration], fields: dict[str, FieldRegistration],
                 merged: list[FieldRegistration], version: int) -> SchemaChange:
        taken = [f"{r.key} is already registered by script {fields[r.key].owner}"
                 for r in regs if r.key in fields and fields[r.key].owner != owner]
        if taken:
            return SchemaChange(owner, regs, None, taken, version)
        if regs:
            try:
                merge(regs)
            except SchemaProblem as e:
                return SchemaChange(owner, regs, None, [f"its GraphQL schema is not valid: {e}"], version)
        try:
            schema = self._build(merged)
        except SchemaProblem as e:
            return SchemaChange(owner, regs, None, [f"its GraphQL fields do not merge with the other scripts': {e}"],
                                version)
        return SchemaChange(owner, regs, schema, [], version)

    def apply(self, change: SchemaChange) -> None:
        """Swap in a checked change (no await may come between `check` and this)."""
        if change.schema is None:
            raise SchemaProblem("; ".join(change.problems))
        if change.schema is self.schema:
            return
        if change.regs:
            self._by_owner[change.owner] = list(change.regs)
        else:
            self._by_owner.pop(change.owner, None)
        self.fields = {r.key: r for rs in self._by_owner.values() for r in rs}
        self.schema = change.schema
        self._version += 1
        if self.on_change:
            self.on_change(change.schema)

    def _with(self, owner: str, regs: list[FieldRegistration]) -> list[FieldRegistration]:
        others = [r for o, rs in self._by_owner.items() if o != owner for r in rs]
        return others + list(regs)

    def _build(self, regs: list[FieldRegistration]) -> GraphQLSchema:
        schema = merge(regs)
        for r in regs:
            root = schema.get_type(r.root)
            gql_field = root.fields[r.name]  # type: ignore[union-attr]
            if r.kind == "subscription":
                gql_field.resolve = _subscription(r, self._resolve)
            else:
                gql_field.resolve = _resolver(r, self._resolve)
        return schema


class SubscribeRoot:
    """The root value of a subscription's first execution: its field runs the script's resolver
    (so arguments and variables are coerced by graphql-core) and notes whether it returned undefined."""

    def __init__(self) -> None:
        self.undefined = False


def shape(field_type: GraphQLOutputType, value: Any) -> Any:
    """A subscription value as its field's type wants it: a String field gets text as sent (other
    values as JSON text), any other field the value, a JSON string parsed first."""
    if isinstance(field_type, GraphQLNonNull):
        field_type = field_type.of_type
    if isinstance(field_type, GraphQLScalarType) and field_type.name in ("String", "ID"):
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value  # graphql-core reports it as not of the field's type
    return value


def _subscription(reg: FieldRegistration, call: Resolve) -> Callable[..., Any]:
    async def first(root: SubscribeRoot, info: GraphQLResolveInfo, args: dict[str, Any]) -> Any:
        value = await call(reg, args, info.context)
        if value is UNDEFINED:
            root.undefined = True
            return None
        return shape(info.return_type, value)

    def resolve(root: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
        if isinstance(root, SubscribeRoot):
            return first(root, info, args)
        return shape(info.return_type, root[reg.name])  # an event: the payload is the root value
    return resolve


def _resolver(reg: FieldRegistration, call: Resolve) -> Callable[..., Awaitable[Any]]:
    async def resolve(_root: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
        value = await call(reg, args, info.context)
        if value is UNDEFINED:
            return None
        return json_text_as_value(info.return_type, value)
    return resolve


def json_text_as_value(field_type: GraphQLOutputType, value: Any) -> Any:
    """aiwebengine's habit, which scripts rely on: a string starting with `{` or `[` returned for an
    object- or list-typed field is JSON text, parsed (if it does not parse, graphql-core says the
    value is not of the field's type)."""
    if not isinstance(value, str):
        return value
    inner = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
    if isinstance(inner, GraphQLScalarType | GraphQLEnumType):
        return value
    text = value.lstrip()
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return value
    return value
