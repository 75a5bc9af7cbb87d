"""Live GraphQL subscriptions over SSE (graphql-sse, distinct connections mode) and WebSocket
(graphql-transport-ws).

Subscribers are grouped by what they asked (document, variables, operation): a message is executed
once per group, its result encoded once, and the same framed bytes go to every SSE member, written
to the transport like stream events, with the same slow-consumer cut-off; a WebSocket member's frame
names its own subscription id around those same result bytes. Groups are keyed by field name, not by script version,
so a reload that keeps the field keeps its subscribers. Each execution has its own result budget;
one that needs more than the loop may give it (cost.HERE fields) is built on a GraphQL thread, and so
is checking every subscription against a new schema.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, execute_sync, validate

from engine.graphql.cost import HERE, MIDDLEWARE, Budget
from engine.graphql.execute import GraphQLParams
from engine.sandbox.applier import Steps
from engine.streams.registry import PING, StreamRegistry, Transport, write_all, write_one
from engine.streams.wire import chunk, encode_event, ws_frame

if TYPE_CHECKING:
    from engine.graphql.runner import GraphQLRunner

log = logging.getLogger("engine.graphql")

COMPLETE = chunk(encode_event("", event="complete"))


def encode_result(result: dict[str, Any]) -> bytes:
    return json.dumps(result, separators=(",", ":")).encode()


def next_event(result: dict[str, Any]) -> bytes:
    """A `next` event carrying one execution result, as one HTTP chunk."""
    return sse_next(encode_result(result))


def sse_next(encoded: bytes) -> bytes:
    return chunk(encode_event(encoded.decode(), event="next"))


def ws_message(sub_id: str, kind: str, payload: bytes | None = None) -> bytes:
    """A graphql-transport-ws message for one subscription (`next`, `error`, `complete`) as a text frame."""
    head = b'{"id":' + json.dumps(sub_id).encode() + b',"type":"' + kind.encode() + b'"'
    return ws_frame(head + (b',"payload":' + payload if payload is not None else b"") + b"}")


@dataclass(eq=False, slots=True)
class Subscriber:
    transport: Transport
    on_end: Callable[[str], None]
    group: Group
    sub_id: str | None = None  # a WebSocket subscription's id; None over SSE
    ended: bool = False

    def frame(self, encoded: bytes) -> bytes:
        """One result as this subscriber's wire takes it (SSE members share theirs: see `_write`)."""
        return sse_next(encoded) if self.sub_id is None else ws_message(self.sub_id, "next", encoded)

    def completion(self) -> bytes:
        return COMPLETE if self.sub_id is None else ws_message(self.sub_id, "complete")

    def end(self, reason: str) -> None:
        if not self.ended:
            self.ended = True
            self.on_end(reason)


@dataclass
class EventContext:
    """The context of one message's execution for one group: only its budget."""

    budget: Budget


Key = tuple[str, str, str | None]  # what a group's members asked: query, variables, operation


@dataclass(eq=False)
class Group:
    name: str  # the subscription field
    key: Key
    params: GraphQLParams
    document: DocumentNode
    cost: int  # the field selections its document holds (counted against the hub's bound)
    members: set[Subscriber] = field(default_factory=set)
    sockets: int = 0  # members over WebSocket (each needs a frame of its own)


class Full(Exception):
    """No room for another subscription; the message says which bound."""


@dataclass
class Reservation:
    """A subscription's place, taken before anything is awaited (so no bound can be overrun by many
    subscribing at once), then given to `add`, or back with `release`."""

    field_name: str
    key: Key
    selections: int
    cost: int  # selections charged now: none if its query is held already


class SubscriptionHub:
    """Every live subscription; counted with stream readers against `streams.max_connections`."""

    def __init__(self, streams: StreamRegistry, max_result_fields: int, max_fields: int,
                 max_result_bytes: int | None = None) -> None:
        self.streams = streams
        self.max_result_fields = max_result_fields
        self.max_result_bytes = max_result_bytes  # text one message's result may hold, through its selection
        self.max_fields = max_fields
        self.fields_held = 0  # selections of every group's document, and of reservations
        self.runner: GraphQLRunner | None = None  # set once the app's GraphQL threads run
        self._schema: GraphQLSchema | None = None  # the latest, against which subscriptions are checked
        self._checks: set[asyncio.Task[None]] = set()
        self.groups: dict[str, dict[tuple[str, str, str | None], Group]] = {}
        self.slow_cut = 0  # subscribers cut off for falling behind, since start (/metrics)

    @property
    def count(self) -> int:
        return sum(len(g.members) for groups in self.groups.values() for g in groups.values())

    def reserve(self, field_name: str, params: GraphQLParams, selections: int) -> Reservation:
        """A place for one more subscriber, or Full. A query held already costs no more fields."""
        if self.streams.full():
            raise Full(f"the server already has {self.streams.max_connections} stream readers and subscriptions "
                       "(streams.max_connections); retry later")
        key = (params.query, json.dumps(params.variables, sort_keys=True), params.operation_name)
        cost = 0 if key in self.groups.get(field_name, {}) else selections
        if self.fields_held + cost > self.max_fields:
            raise Full(f"live subscriptions already hold {self.fields_held} field selections "
                       f"(limits.graphql_subscription_fields is {self.max_fields}); retry later")
        self.streams.connection_count += 1
        self.fields_held += cost
        return Reservation(field_name, key, selections, cost)

    def release(self, r: Reservation) -> None:
        """A reservation that never became a subscriber."""
        self.streams.connection_count -= 1
        self.fields_held -= r.cost

    def add(self, r: Reservation, params: GraphQLParams, document: DocumentNode, transport: Transport,
            on_end: Callable[[str], None], sub_id: str | None = None) -> Subscriber:
        groups = self.groups.setdefault(r.field_name, {})
        group = groups.get(r.key)
        if group is None:  # charged at reservation, or (its group gone since) now
            self.fields_held += r.selections - r.cost
            group = groups[r.key] = Group(r.field_name, r.key, params, document, r.selections)
        else:  # another subscriber of the same query came first: it holds the document
            self.fields_held -= r.cost
        sub = Subscriber(transport, on_end, group, sub_id)
        group.members.add(sub)
        group.sockets += sub_id is not None
        return sub

    def remove(self, sub: Subscriber, reason: str = "the client went away") -> None:
        group = sub.group
        if sub in group.members:
            group.members.discard(sub)
            group.sockets -= sub.sub_id is not None
            self.streams.connection_count -= 1
            if not group.members:
                self.fields_held -= group.cost
                groups = self.groups.get(group.name, {})
                groups.pop(group.key, None)
                if not groups:
                    self.groups.pop(group.name, None)
        sub.end(reason)

    def publish(self, schema: GraphQLSchema, field_name: str, value: Any) -> Steps:
        """One `next` per subscriber of `field_name`: `{"data": {field: value}}` through its selection.
        One step per group, so the loop can serve others between groups; a group whose result is
        too large to build on the loop gets it built on a GraphQL thread (the applier awaits it)."""
        for group in list(self.groups.get(field_name, {}).values()):
            if not group.members:
                continue  # everyone left while earlier groups were served
            budget = Budget(self.max_result_fields, HERE if self.runner is not None else None, self.max_result_bytes)
            framed = _execute(schema, group, field_name, value, budget)
            if budget.needs_more and self.runner is not None:
                yield self._deliver(group, self.runner.call(_execute, schema, group, field_name, value,
                                                            Budget(self.max_result_fields,
                                                                   max_bytes=self.max_result_bytes)))
            else:
                self._write(group, framed)
                yield None

    async def _deliver(self, group: Group, pending: Awaitable[bytes]) -> None:
        encoded = await pending
        if group.members:
            self._write(group, encoded)

    def schema_changed(self, schema: GraphQLSchema) -> None:
        """Subscriptions to a field that is gone are completed now; the others are checked against
        the new schema on a GraphQL thread (validation is slow), and completed if no longer valid."""
        self._schema = schema
        fields = schema.subscription_type.fields if schema.subscription_type else {}
        remaining = []
        for name, groups in list(self.groups.items()):
            for group in list(groups.values()):
                if name in fields:
                    remaining.append(group)
                else:
                    self._complete(group, None, f"the subscription field {name} was removed")
        if remaining and self.runner is not None:
            task = asyncio.get_running_loop().create_task(self._recheck(schema, remaining, self.runner))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)
        else:
            self._completed_if_invalid(remaining, [validate(schema, g.document) for g in remaining])

    async def _recheck(self, schema: GraphQLSchema, groups: list[Group], runner: GraphQLRunner) -> None:
        errors = await runner.call(_validate_all, schema, [g.document for g in groups])
        if schema is self._schema:  # else a newer schema is being checked already
            self._completed_if_invalid(groups, errors)

    def _completed_if_invalid(self, groups: list[Group], errors: list[list[GraphQLError]]) -> None:
        for group, errs in zip(groups, errors, strict=True):
            if errs:
                self._complete(group, encode_result({"errors": [e.formatted for e in errs]}), "no longer valid")

    def _complete(self, group: Group, last: bytes | None, why: str) -> None:
        """End every member: a last result (`last`, encoded) if any, then `complete`."""
        for sub in list(group.members):
            write_one(sub.transport, (sub.frame(last) if last is not None else b"") + sub.completion())
            self.remove(sub, why)

    def heartbeat(self) -> None:
        """SSE members get a ping comment (a WebSocket's pings are aiohttp's); gone ones are removed."""
        for groups in list(self.groups.values()):
            for group in list(groups.values()):
                for sub in [s for s in group.members if s.transport.is_closing()]:
                    self.remove(sub)
                if group.sockets < len(group.members):
                    self._cut_slow(group, write_all([s for s in group.members if s.sub_id is None], PING,
                                                    self.streams.max_buffer_bytes))

    def close_all(self, reason: str = "the server is shutting down") -> None:
        for groups in list(self.groups.values()):
            for group in list(groups.values()):
                self._complete(group, None, reason)

    def _write(self, group: Group, encoded: bytes) -> None:
        """One result to every member: SSE members share one frame, each WebSocket member its own."""
        if not group.sockets:
            slow = write_all(group.members, sse_next(encoded), self.streams.max_buffer_bytes)
        else:
            shared = sse_next(encoded) if group.sockets < len(group.members) else b""
            limit = self.streams.max_buffer_bytes
            slow = []
            frames: dict[str, bytes] = {}  # by subscription id: clients tend to use the same few ("1")
            for sub in list(group.members):
                if sub.sub_id is None:
                    framed = shared
                else:
                    framed = frames.get(sub.sub_id) or frames.setdefault(sub.sub_id, sub.frame(encoded))
                if not write_one(sub.transport, framed) or sub.transport.get_write_buffer_size() > limit:
                    slow.append(sub)
        self._cut_slow(group, slow)

    def _cut_slow(self, group: Group, slow: list[Subscriber]) -> None:
        for sub in slow:
            if sub.transport.is_closing():  # it went away; its handler has not noticed yet
                self.remove(sub)
                continue
            log.warning("closed a slow subscriber of %s", group.name)
            self.slow_cut += 1
            self.remove(sub, "slow consumer")
            sub.transport.abort()


def _execute(schema: GraphQLSchema, group: Group, field_name: str, value: Any, budget: Budget) -> bytes:
    """One message through one group's selection: the result its members get, encoded once."""
    p = group.params
    result = execute_sync(schema, group.document, root_value={field_name: value}, context_value=EventContext(budget),
                          variable_values=p.variables, operation_name=p.operation_name, middleware=MIDDLEWARE)
    return encode_result(dict(result.formatted))


def _validate_all(schema: GraphQLSchema, documents: list[DocumentNode]) -> list[list[GraphQLError]]:
    return [validate(schema, d) for d in documents]
