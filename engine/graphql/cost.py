"""What one GraphQL operation may cost, so that no query and no resolver's value runs away.

Before validation, an operation's field selections are counted with fragments expanded and aliases
counted (`limits.graphql_max_fields`): validation and execution grow with that count. During
execution, each list a resolver returns is charged its items times the fields selected below it,
before graphql-core walks it (`limits.graphql_max_result_fields`); a list past the budget becomes a
field error and is never walked. Objects outside lists are bounded by the selection count already.

A budget may also have a smaller share it may spend where it runs (`here`): a subscription message
is first executed on the server's loop, and one that needs more is executed again on a GraphQL
thread (runner.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from inspect import isawaitable
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLResolveInfo,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

HERE = 2000  # result fields a subscription message may take on the server's loop (about 10 ms)


class _Cycle(Exception):
    """A fragment spreads itself, directly or through others."""


def _count(selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode],
           memo: dict[str, int], visiting: set[str], limit: int) -> int:
    """Selections under `selection_set` (fields, fragment spreads and inline fragments: what
    validation and execution walk), fragments expanded (each counted once, remembered), stopping
    once past `limit`. An unknown fragment counts one: validation says why; a cycle raises `_Cycle`."""
    total = 0
    if selection_set is None:
        return 0
    for sel in selection_set.selections:
        total += 1
        if isinstance(sel, FieldNode | InlineFragmentNode):
            total += _count(sel.selection_set, fragments, memo, visiting, limit - total)
        elif isinstance(sel, FragmentSpreadNode):
            name = sel.name.value
            if name in visiting:
                raise _Cycle(name)
            if name not in memo and name in fragments:
                visiting.add(name)
                memo[name] = _count(fragments[name].selection_set, fragments, memo, visiting, limit)
                visiting.discard(name)
            total += memo.get(name, 0)
        if total > limit:
            break
    return total


class TooCostly(Exception):
    """The document costs too much to validate or run; the message says why."""


def count_selections(document: DocumentNode, limit: int) -> int:
    """The document's selections, or TooCostly past `limit`. Validation walks every operation and
    fragment, some rules through the fragments they spread: so selections are counted with fragments
    expanded, over all of its operations together, and any fragment alone."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    memo: dict[str, int] = {}
    total = 0
    try:
        for d in document.definitions:
            if isinstance(d, OperationDefinitionNode):
                total += _count(d.selection_set, fragments, memo, set(), limit - total)
            elif isinstance(d, FragmentDefinitionNode) and d.name.value not in memo:
                memo[d.name.value] = _count(d.selection_set, fragments, memo, {d.name.value}, limit)
                total = max(total, memo[d.name.value])
            if total > limit:
                raise TooCostly(f"the document selects more than {limit} fields once its fragments are expanded "
                                "(limits.graphql_max_fields)")
    except _Cycle as cycle:
        raise TooCostly(f"fragment {cycle.args[0]} spreads itself (directly or through other fragments)") from None
    return total


class Budget:
    """The fields one execution may still produce; with `here`, the share it may spend where it runs.
    `max_bytes`: the characters its strings may hold in all (a field can be aliased a thousand times
    over one large value: the count of fields alone does not bound a result's size)."""

    def __init__(self, limit: int, here: int | None = None, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.bytes_left = max_bytes if max_bytes is not None else 0
        self.limit = limit
        self.left = limit
        self.here = limit if here is None else min(here, limit)
        self.needs_more = False  # it was stopped by `here`, not by the limit: run it where it may
        self._widths: dict[int, int] = {}
        self._fragment_counts: dict[str, int] = {}

    def charge(self, info: GraphQLResolveInfo, value: Any) -> None:
        """Charge a list value before it is walked: its items times the fields selected below it;
        and a string, its length, against `max_bytes`."""
        if isinstance(value, str) and self.max_bytes is not None:
            self.bytes_left -= len(value)
            if self.bytes_left < 0:
                raise GraphQLError(f"this value would take the result past {self.max_bytes} bytes of text "
                                   "(limits.max_response_bytes)", extensions={"code": "RESULT_TOO_LARGE"})
            return
        if not isinstance(value, list):
            return
        cost = _items(value) * max(1, self._width(info))
        if cost > self.left:  # refused, so not walked: what is left stays for the rest of the result
            raise GraphQLError(f"this list would take the result past {self.limit} fields "
                               "(limits.graphql_max_result_fields)", extensions={"code": "RESULT_TOO_LARGE"})
        spent = self.limit - self.left
        if spent + cost > self.here:
            self.needs_more = True
            raise GraphQLError("too large to build here")  # the result is thrown away and built elsewhere
        self.left -= cost

    def _width(self, info: GraphQLResolveInfo) -> int:
        key = id(info.field_nodes[0])
        width = self._widths.get(key)
        if width is None:
            width = sum(_count(node.selection_set, info.fragments, self._fragment_counts, set(), self.limit)
                        for node in info.field_nodes)
            self._widths[key] = width
        return width


def _items(value: list[Any]) -> int:
    """Items of a list, nested lists flattened: what graphql-core completes one by one."""
    count, stack = 0, [value]
    while stack:
        for item in stack.pop():
            if isinstance(item, list):
                stack.append(item)
            else:
                count += 1
    return count


def budget_of(info: GraphQLResolveInfo) -> Budget | None:
    return getattr(info.context, "budget", None)


def charge_lists(resolve: Callable[..., Any], root: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
    """graphql-core middleware around every field's resolver, scripts', the default one and
    introspection's alike: a list it returns is charged to the execution's budget before it is walked."""
    value = resolve(root, info, **args)
    budget = budget_of(info)
    if budget is None:
        return value
    if isawaitable(value):
        return _charged_later(value, budget, info)
    budget.charge(info, value)
    return value


async def _charged_later(pending: Awaitable[Any], budget: Budget, info: GraphQLResolveInfo) -> Any:
    value = await pending
    budget.charge(info, value)
    return value


MIDDLEWARE = [charge_lists]
