"""What one GraphQL operation may cost, so that no query and no resolver's value keeps the event loop.

Before validation, an operation's field selections are counted with fragments expanded and aliases
counted (`limits.graphql_max_fields`): validation and execution grow with that count. During
execution, each list a resolver returns is charged its items times the fields selected below it,
before graphql-core walks it (`limits.graphql_max_result_fields`); a list past the budget becomes a
field error and is never walked. Objects outside lists are bounded by the selection count already.
Execution also yields to the loop every `YIELD_EVERY` fields, so a large result is built in slices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
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

YIELD_EVERY = 2000  # fields resolved between two turns of the event loop


def _count(selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode],
           memo: dict[str, int], visiting: set[str], limit: int) -> int:
    """Field selections under `selection_set`, fragments expanded (each once, remembered), stopping
    once past `limit`. A fragment spread that is unknown or cyclic counts nothing: validation says why."""
    total = 0
    if selection_set is None:
        return 0
    for sel in selection_set.selections:
        if isinstance(sel, FieldNode):
            total += 1 + _count(sel.selection_set, fragments, memo, visiting, limit - total)
        elif isinstance(sel, InlineFragmentNode):
            total += _count(sel.selection_set, fragments, memo, visiting, limit - total)
        elif isinstance(sel, FragmentSpreadNode):
            name = sel.name.value
            if name not in memo and name not in visiting and name in fragments:
                visiting.add(name)
                memo[name] = _count(fragments[name].selection_set, fragments, memo, visiting, limit)
                visiting.discard(name)
            total += memo.get(name, 0)
        if total > limit:
            break
    return total


def selection_problem(document: DocumentNode, operation_name: str | None, limit: int) -> str | None:
    """Why this document is too costly to validate or run, or None. Counts the document's field
    nodes as written (what validation works through) and the chosen operation's with fragments
    expanded (what execution works through)."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    written = 0
    for d in document.definitions:
        if isinstance(d, OperationDefinitionNode | FragmentDefinitionNode):
            written += _count_written(d.selection_set, limit - written)
            if written > limit:
                return f"the document has more than {limit} field selections (limits.graphql_max_fields)"
    memo: dict[str, int] = {}
    for d in document.definitions:
        if isinstance(d, OperationDefinitionNode) and (operation_name is None or (d.name and d.name.value == operation_name)):
            if _count(d.selection_set, fragments, memo, set(), limit) > limit:
                return (f"the operation selects more than {limit} fields once its fragments are expanded "
                        "(limits.graphql_max_fields)")
    return None


def _count_written(selection_set: SelectionSetNode | None, limit: int) -> int:
    total = 0
    if selection_set is None:
        return 0
    for sel in selection_set.selections:
        total += (1 if isinstance(sel, FieldNode) else 0) + _count_written(getattr(sel, "selection_set", None),
                                                                           limit - total)
        if total > limit:
            break
    return total


class Budget:
    """The fields one execution may still produce, and its count toward the next yield."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit
        self.resolved = 0
        self._widths: dict[int, int] = {}
        self._fragment_counts: dict[str, int] = {}

    def charge(self, info: GraphQLResolveInfo, value: Any) -> None:
        """Charge a list value before it is walked: its items times the fields selected below it."""
        if not isinstance(value, list):
            return
        cost = _items(value) * max(1, self._width(info))
        if cost > self.left:  # refused, so not walked: what is left stays for the rest of the result
            raise GraphQLError(f"this list would take the result past {self.limit} fields "
                               "(limits.graphql_max_result_fields)", extensions={"code": "RESULT_TOO_LARGE"})
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


def _later(value: Any) -> asyncio.Future[Any]:
    """`value`, one turn of the loop from now. A future, not a coroutine: if graphql-core drops it
    (a sibling's error ended the list), nobody is warned about an un-awaited coroutine."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(_settle, fut, value)
    return fut


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def field_resolver(source: Any, info: GraphQLResolveInfo, **_args: Any) -> Any:
    """The resolver of every field below a script's root field (values are JSON data): it reads the
    field, charges a list, and every `YIELD_EVERY` fields hands the value back through the loop."""
    value = source.get(info.field_name) if isinstance(source, Mapping) else None
    budget = budget_of(info)
    if budget is None:
        return value
    budget.charge(info, value)
    budget.resolved += 1
    if budget.resolved % YIELD_EVERY == 0:
        return _later(value)
    return value
