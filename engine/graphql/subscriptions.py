"""Live GraphQL subscriptions over SSE (graphql-sse, distinct connections mode).

Subscribers are grouped by what they asked (document, variables, operation): a message is executed
once per group and the same framed bytes go to every member, written to the transport like stream
events, with the same slow-consumer cut-off. Groups are keyed by field name, not by script version,
so a reload that keeps the field keeps its subscribers. Each execution has its own result budget,
and one that grows large is finished asynchronously, in slices (see cost.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any

from graphql import DocumentNode, ExecutionResult, GraphQLSchema, execute, validate

from engine.graphql.cost import Budget, field_resolver
from engine.graphql.execute import GraphQLParams
from engine.sandbox.applier import Steps
from engine.streams.registry import PING, StreamRegistry, Transport, write_all
from engine.streams.wire import chunk, encode_event

log = logging.getLogger("engine.graphql")

COMPLETE = chunk(encode_event("", event="complete"))


def next_event(result: dict[str, Any]) -> bytes:
    """A `next` event carrying one execution result, as one HTTP chunk."""
    return chunk(encode_event(json.dumps(result, separators=(",", ":")), event="next"))


@dataclass(eq=False, slots=True)
class Subscriber:
    transport: Transport
    on_end: Callable[[str], None]
    group: Group
    ended: bool = False

    def end(self, reason: str) -> None:
        if not self.ended:
            self.ended = True
            self.on_end(reason)


@dataclass
class EventContext:
    """The context of one message's execution for one group: only its budget."""

    budget: Budget


@dataclass(eq=False)
class Group:
    name: str  # the subscription field
    key: tuple[str, str, str | None]  # what its members asked: query, variables, operation
    params: GraphQLParams
    document: DocumentNode
    members: set[Subscriber] = field(default_factory=set)


class SubscriptionHub:
    """Every live subscription; counted with stream readers against `streams.max_connections`."""

    def __init__(self, streams: StreamRegistry, max_result_fields: int) -> None:
        self.streams = streams
        self.max_result_fields = max_result_fields
        self.groups: dict[str, dict[tuple[str, str, str | None], Group]] = {}

    @property
    def count(self) -> int:
        return sum(len(g.members) for groups in self.groups.values() for g in groups.values())

    def add(self, field_name: str, params: GraphQLParams, document: DocumentNode, transport: Transport,
            on_end: Callable[[str], None]) -> Subscriber:
        key = (params.query, json.dumps(params.variables, sort_keys=True), params.operation_name)
        groups = self.groups.setdefault(field_name, {})
        group = groups.get(key) or groups.setdefault(key, Group(field_name, key, params, document))
        sub = Subscriber(transport, on_end, group)
        group.members.add(sub)
        self.streams.connection_count += 1
        return sub

    def remove(self, sub: Subscriber, reason: str = "the client went away") -> None:
        group = sub.group
        if sub in group.members:
            group.members.discard(sub)
            self.streams.connection_count -= 1
            if not group.members:
                groups = self.groups.get(group.name, {})
                groups.pop(group.key, None)
                if not groups:
                    self.groups.pop(group.name, None)
        sub.end(reason)

    def publish(self, schema: GraphQLSchema, field_name: str, value: Any) -> Steps:
        """One `next` per subscriber of `field_name`: `{"data": {field: value}}` through its selection.
        One step per group, so the loop can serve others between groups."""
        for group in list(self.groups.get(field_name, {}).values()):
            if not group.members:
                continue  # everyone left while earlier groups were served
            p = group.params
            result = execute(schema, group.document, root_value={field_name: value},
                             context_value=EventContext(Budget(self.max_result_fields)),
                             variable_values=p.variables, operation_name=p.operation_name,
                             field_resolver=field_resolver)
            if isawaitable(result):  # large enough to have yielded: the applier awaits the rest
                yield self._deliver(group, result)
            else:
                self._write(group, next_event(dict(result.formatted)))  # type: ignore[union-attr]
                yield None

    async def _deliver(self, group: Group, pending: Awaitable[ExecutionResult]) -> None:
        result = await pending
        if group.members:
            self._write(group, next_event(dict(result.formatted)))

    def schema_changed(self, schema: GraphQLSchema) -> None:
        """Subscriptions to a field that is gone, or that no longer validate, are completed."""
        fields = schema.subscription_type.fields if schema.subscription_type else {}
        for name, groups in list(self.groups.items()):
            for group in list(groups.values()):
                errors = validate(schema, group.document) if name in fields else []
                if name not in fields or errors:
                    why = f"the subscription field {name} was removed" if name not in fields else "no longer valid"
                    framed = (next_event({"errors": [e.formatted for e in errors]}) if errors else b"") + COMPLETE
                    for sub in list(group.members):
                        sub.transport.write(framed)
                        self.remove(sub, why)

    def heartbeat(self) -> None:
        for groups in list(self.groups.values()):
            for group in list(groups.values()):
                for sub in [s for s in group.members if s.transport.is_closing()]:
                    self.remove(sub)
                self._write(group, PING)

    def close_all(self, reason: str = "the server is shutting down") -> None:
        for groups in list(self.groups.values()):
            for group in list(groups.values()):
                for sub in list(group.members):
                    sub.transport.write(COMPLETE)
                    self.remove(sub, reason)

    def _write(self, group: Group, framed: bytes) -> None:
        for sub in write_all(group.members, framed, self.streams.max_buffer_bytes):
            log.warning("closed a slow subscriber of %s", group.name)
            self.remove(sub, "slow consumer")
            sub.transport.abort()
