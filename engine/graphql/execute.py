"""One GraphQL request, whatever carried it: its parameters, parse and validate, execute, resolvers.

Results are plain dicts in the standard shape (`{"data": ..., "errors": [...]}`), ready for JSON.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any, TypeVar

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    execute,
    get_operation_ast,
    parse,
    validate,
)

from engine.config import LimitsConfig
from engine.errors import HTTPError, ScriptError, ScriptTimeout
from engine.graphql.cost import MIDDLEWARE, Budget, TooCostly, count_selections
from engine.graphql.schema import FieldRegistration
from engine.http.script_errors import classify, log_script_error
from engine.sandbox.context import UNDEFINED

T = TypeVar("T")


@dataclass(frozen=True)
class GraphQLParams:
    """What a client asked for: `{query, variables, operationName}` (GraphQL over HTTP)."""

    query: str
    variables: dict[str, Any] | None = None
    operation_name: str | None = None


@dataclass
class RequestContext:
    """What resolvers see as `context` (and what the engine needs to call them): the request, what
    its result may still cost, and how long it may run."""

    request_id: str
    headers: dict[str, str]
    operation: str
    budget: Budget
    timeout: float  # seconds
    server_loop: asyncio.AbstractEventLoop  # where scripts are called from (execution runs elsewhere)
    connection_params: Any = None  # a GraphQL WebSocket's connection_init payload
    user: dict[str, Any] | None = None  # the claims of a verified token, if one came

    def for_script(self, reg: FieldRegistration) -> dict[str, Any]:
        out = {"requestId": self.request_id, "headers": self.headers, "operation": self.operation, "field": reg.key,
               "user": self.user}
        if self.connection_params is not None:
            out["connectionParams"] = self.connection_params
        return out


@dataclass
class Prepared:
    """A parsed and validated document, or the errors that stop it before execution."""

    document: DocumentNode | None = None
    operation: str = ""  # query | mutation | subscription
    root_fields: list[str] = field(default_factory=list)  # the operation's, through its fragments
    errors: list[GraphQLError] = field(default_factory=list)
    selections: int = 0  # the document's, fragments expanded (cost.count_selections)

    def error_result(self) -> dict[str, Any]:
        return {"errors": [e.formatted for e in self.errors]}


def merged_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers as resolvers see them: lower-case names, repeated ones joined with ", "."""
    headers: dict[str, str] = {}
    for k, v in items:
        k = k.lower()
        headers[k] = f"{headers[k]}, {v}" if k in headers else v
    return headers


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, "bad_request", message)


def params_from_json(body: bytes) -> GraphQLParams:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"the body is not JSON: {e}") from None
    except RecursionError:
        raise bad_request("the body is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object: {\"query\": ..., \"variables\": {...}}")
    return _params(data.get("query"), data.get("variables"), data.get("operationName"))


def params_from_query(query: Mapping[str, str]) -> GraphQLParams:
    variables: Any = query.get("variables")
    if variables:
        try:
            variables = json.loads(variables)
        except ValueError as e:
            raise bad_request(f"variables is not JSON: {e}") from None
        except RecursionError:
            raise bad_request("variables is JSON nested too deeply") from None
    return _params(query.get("query"), variables or None, query.get("operationName") or None)


def _params(query: Any, variables: Any, operation_name: Any) -> GraphQLParams:
    if not isinstance(query, str) or not query.strip():
        raise bad_request("no query: send {\"query\": \"{ hello }\"} (or ?query= on GET)")
    if variables is not None and not isinstance(variables, dict):
        raise bad_request("variables must be a JSON object")
    if operation_name is not None and not isinstance(operation_name, str):
        raise bad_request("operationName must be a string")
    return GraphQLParams(query, variables, operation_name)


def prepare(schema: GraphQLSchema, params: GraphQLParams, limits: LimitsConfig) -> Prepared:
    """Parse, count what it selects, validate. Each step is bounded before the next starts (bytes,
    then tokens, then field selections), and the caller runs all of it off the event loop:
    validation alone can take a second of CPU for a thousand selections of one field."""
    most = limits.graphql_max_query_bytes
    if len(params.query) > most or len(params.query.encode("utf-8", "replace")) > most:
        too_large = f"the query is larger than {most} bytes (limits.graphql_max_query_bytes)"
        return Prepared(errors=[GraphQLError(too_large)])
    try:
        document = parse(params.query, max_tokens=limits.graphql_max_tokens)
        selections = count_selections(document, limits.graphql_max_fields)
    except GraphQLError as e:
        return Prepared(errors=[e])
    except TooCostly as e:
        return Prepared(errors=[GraphQLError(str(e))])
    except RecursionError:  # graphql-core before 3.3 recurses once per nesting level, as the count does
        return Prepared(errors=[GraphQLError("Syntax Error: Document is nested too deeply.")])
    errors = validate(schema, document)
    if errors:
        return Prepared(errors=list(errors))
    op = get_operation_ast(document, params.operation_name)
    if op is None:
        message = (f"Unknown operation named '{params.operation_name}'." if params.operation_name
                   else "Must provide operation name if query contains multiple operations.")
        return Prepared(errors=[GraphQLError(message)])
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    return Prepared(document, op.operation.value, _field_names(op.selection_set, fragments), selections=selections)


def _field_names(selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode]) -> list[str]:
    """The fields a selection set selects, through inline fragments and fragment spreads (validated:
    no cycles)."""
    names: list[str] = []
    for s in selection_set.selections:
        if isinstance(s, FieldNode):
            names.append(s.name.value)
        elif isinstance(s, InlineFragmentNode):
            names += _field_names(s.selection_set, fragments)
        elif isinstance(s, FragmentSpreadNode) and s.name.value in fragments:
            names += _field_names(fragments[s.name.value].selection_set, fragments)
    return names


async def run(
    schema: GraphQLSchema, prepared: Prepared, params: GraphQLParams, context: RequestContext, root: Any = None
) -> dict[str, Any]:
    """Execute a prepared document within the context's deadline; errors of any kind end up in the
    result's `errors`. Leaving early (the deadline, the client gone) cancels the resolver calls
    still waiting, and a script's thread never runs one whose caller is gone."""
    result = execute(schema, prepared.document, root_value=root, context_value=context,  # type: ignore[arg-type]
                     variable_values=params.variables, operation_name=params.operation_name,
                     middleware=MIDDLEWARE)
    if isawaitable(result):
        try:
            async with asyncio.timeout(context.timeout):
                result = await result
        except TimeoutError:
            message = (f"the request ran past its deadline of {round(context.timeout * 1000)} ms "
                       "(limits.graphql_timeout_ms)")
            return {"data": None, "errors": [{"message": message, "extensions": {"code": "TIMEOUT"}}]}
    return dict(result.formatted)  # type: ignore[union-attr]


async def on_loop(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> T:
    """Await `coro` on `loop` (the server's, where scripts are called), from whichever loop this is.
    Cancelling the wait cancels it there too."""
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


async def call_resolver(reg: FieldRegistration, args: dict[str, Any], context: RequestContext) -> Any:
    """Run a script's resolver (its value, or UNDEFINED); its failure becomes a GraphQL error
    (graphql-core adds path and locations) whose message is the script's own for a throw, the
    engine's for a broken limit."""
    try:
        text = await on_loop(reg.target.resolve(reg.handler, args, context.for_script(reg)), context.server_loop)
    except ScriptError as e:
        _, code, message = classify(e)
        log_script_error(f"resolver {reg.key}", context.request_id, e)
        if type(e) is ScriptError:  # the script threw: its message is meant for the client
            message = e.message.removeprefix("Error: ")
        elif isinstance(e, ScriptTimeout):
            message = f"the resolver of {reg.key} ran past its time limit"
        raise GraphQLError(message, extensions={"code": code.upper()}) from None
    if text is UNDEFINED:
        return UNDEFINED
    try:
        return json.loads(text)  # here, on the GraphQL thread: a large value is a large parse
    except RecursionError:
        too_deep = f"the value of {reg.key} is nested too deeply"
        raise GraphQLError(too_deep, extensions={"code": "BAD_RESPONSE"}) from None
