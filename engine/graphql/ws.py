"""GraphQL over WebSocket: the `graphql-transport-ws` protocol (the `graphql-ws` npm package's; its
PROTOCOL.md), so Apollo, urql and graphql-ws clients work unchanged.

aiohttp does the handshake and reads frames; results of subscriptions come from the same hub as
`/graphql/sse` (one execution per group of subscribers, each socket's frame naming its own id), and
everything else a socket is told goes out through aiohttp. The close codes are the spec's: 4400 a
bad message, 4401 subscribe before connection_ack, 4403 a token that does not verify, 4406 no
graphql-transport-ws subprotocol, 4408 no connection_init in time, 4409 an id already in use, 4429
a second connection_init, 4500 the server failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from engine.auth import Unauthorized, Verifier
from engine.errors import HTTPError
from engine.graphql.cost import Budget
from engine.graphql.execute import GraphQLParams, RequestContext, merged_headers, params_from_json
from engine.graphql.schema import SubscribeRoot
from engine.graphql.subscriptions import Full, Subscriber, encode_result, ws_message
from engine.http.keys import AUTH, CONFIG, GRAPHQL, GRAPHQL_RUNNER, METRICS, REQUEST_ID, STREAMS, SUBSCRIPTIONS
from engine.streams.sse import check_room
from engine.transports.websocket import SocketTransport, close_reason

log = logging.getLogger("engine.graphql")

PROTOCOL = "graphql-transport-ws"
BAD_MESSAGE, UNAUTHORIZED, FORBIDDEN, NO_SUBPROTOCOL = 4400, 4401, 4403, 4406
INIT_TIMEOUT, DUPLICATE_ID, TOO_MANY_INITS, INTERNAL = 4408, 4409, 4429, 4500
MAX_ID = 128  # characters of a subscription id
MAX_INIT_PAYLOAD = 16384  # characters of connection_init's payload, as JSON


class Closing(Exception):
    """End the socket with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def wants_graphql_ws(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def graphql_ws(request: web.Request) -> web.WebSocketResponse:
    config = request.app[CONFIG]
    ws = web.WebSocketResponse(protocols=(PROTOCOL,), heartbeat=config.streams.heartbeat_seconds,
                               max_msg_size=config.limits.max_body_bytes, compress=False)
    if not ws.can_prepare(request).ok:
        raise HTTPError(400, "bad_websocket_handshake", "not a WebSocket handshake this server accepts "
                        "(Sec-WebSocket-Version 13 and a 16-byte Sec-WebSocket-Key are needed)")
    # The socket itself holds a place among streams.max_connections (and each subscription on it one
    # more): idle sockets, initialised or not, cannot pile up past the limit.
    registry = request.app[STREAMS]
    check_room(registry)
    registry.connection_count += 1
    try:
        await ws.prepare(request)
        if ws.ws_protocol != PROTOCOL:
            await ws.close(code=NO_SUBPROTOCOL, message=b"Subprotocol not acceptable")
            return ws
        await Session(request, ws).run()
    finally:
        registry.connection_count -= 1
    return ws


class Session:
    """One graphql-transport-ws socket: its init, its operations by id, and their ends."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request = request
        self.app = request.app
        self.ws = ws
        self.limits = self.app[CONFIG].limits
        self.acked = False
        self.inited = False
        self.params: Any = None
        self.user: dict[str, Any] | None = None
        # Operations under way, by the client's id: a marker each. One the client completed, or whose
        # socket went, is not cancelled (graphql-core's execution does not take cancelling well
        # mid-way); it runs out, bounded by limits.graphql_timeout_ms, and what it finds is dropped.
        self.operations: dict[str, object] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.subscribers: dict[str, Subscriber] = {}
        transport = request.transport
        assert transport is not None
        # Frames straight to the socket; a slow consumer is dropped at once (its unsent frames with it).
        self.socket = SocketTransport(transport, grace=0)  # type: ignore[arg-type]

    async def run(self) -> None:
        timer = asyncio.get_running_loop().call_later(self.limits.graphql_ws_init_seconds, self._init_timeout)
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._message(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    raise Closing(BAD_MESSAGE, "Invalid message received: binary frames are not allowed")
        except Closing as e:
            await self.ws.close(code=e.code, message=close_reason(e.reason))
        except Exception:  # noqa: BLE001 - the socket is told, then the error is logged
            log.exception("graphql-ws: the socket failed (request %s)", self.request[REQUEST_ID])
            await self.ws.close(code=INTERNAL, message=b"Internal server error")
        finally:
            timer.cancel()
            self._end_all()

    def _init_timeout(self) -> None:
        if not self.inited and not self.ws.closed:
            asyncio.get_running_loop().create_task(
                self.ws.close(code=INIT_TIMEOUT, message=b"Connection initialisation timeout"))

    async def _message(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise Closing(BAD_MESSAGE, "Invalid message received: not JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise Closing(BAD_MESSAGE, "Invalid message received: an object with a `type` is expected")
        kind = msg["type"]
        if kind == "connection_init":
            await self._init(msg.get("payload"))
        elif kind == "ping":
            await self.ws.send_str(json.dumps({"type": "pong", **({"payload": msg["payload"]}
                                                                  if isinstance(msg.get("payload"), dict) else {})}))
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            self._subscribe(msg)
        elif kind == "complete":
            self._complete(_id(msg))
        else:
            raise Closing(BAD_MESSAGE, f"Invalid message received: unknown type {kind[:40]!r}")

    async def _init(self, payload: Any) -> None:
        if self.inited:
            raise Closing(TOO_MANY_INITS, "Too many initialisation requests")
        self.inited = True
        if payload is not None and not isinstance(payload, dict):
            raise Closing(BAD_MESSAGE, "Invalid message received: connection_init's payload must be an object")
        if payload is not None and len(json.dumps(payload)) > MAX_INIT_PAYLOAD:
            # It goes along with every resolver call (context.connectionParams): kept small.
            raise Closing(BAD_MESSAGE, f"Invalid message received: connection_init's payload is over "
                          f"{MAX_INIT_PAYLOAD} characters of JSON")
        self.params = payload
        verifier: Verifier = self.app[AUTH]
        token = _bearer(payload.get("authorization") or payload.get("Authorization")) if payload else None
        if token is None:
            token = verifier.token_from(self.request.headers, self.request.query, {})
        if token is not None:
            try:
                self.user = verifier.verify(token).values
            except Unauthorized as e:
                raise Closing(FORBIDDEN, f"Forbidden: {e}") from None
        self.acked = True
        await self.ws.send_str('{"type":"connection_ack"}')

    def _subscribe(self, msg: dict[str, Any]) -> None:
        sub_id = _id(msg)
        if not self.acked:
            raise Closing(UNAUTHORIZED, "Unauthorized")
        if sub_id in self.operations or sub_id in self.subscribers:
            raise Closing(DUPLICATE_ID, f"Subscriber for {sub_id} already exists")
        payload = msg.get("payload")
        if not isinstance(payload, dict):
            raise Closing(BAD_MESSAGE, "Invalid message received: subscribe needs a payload {query, variables}")
        try:
            params = params_from_json(json.dumps(payload).encode())
        except HTTPError as e:
            raise Closing(BAD_MESSAGE, f"Invalid message received: {e.message}") from None
        # Work still running for an id the client completed counts too: `complete` frees the id at
        # once, not the thread the work holds.
        if max(len(self.operations), len(self.tasks)) + len(self.subscribers) >= self.limits.graphql_ws_operations:
            self._send(ws_message(sub_id, "error", encode_result_list(
                f"this socket already has {self.limits.graphql_ws_operations} operations under way "
                "(limits.graphql_ws_operations)")))
            return
        marker = self.operations[sub_id] = object()
        task = asyncio.get_running_loop().create_task(self._operation(sub_id, params, marker))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _current(self, sub_id: str, marker: object) -> bool:
        """Is the operation still wanted (not completed by the client, its socket still up)?"""
        return self.operations.get(sub_id) is marker and not self.socket.is_closing()

    def _complete(self, sub_id: str) -> None:
        """The client is done with `sub_id` (no answer is owed)."""
        self.operations.pop(sub_id, None)
        sub = self.subscribers.pop(sub_id, None)
        if sub is not None:
            self.app[SUBSCRIPTIONS].remove(sub, "the client completed it")

    async def _operation(self, sub_id: str, params: GraphQLParams, marker: object) -> None:
        try:
            await self._run(sub_id, params, marker)
        except Exception:  # noqa: BLE001 - the server's own failure: the spec's 4500, and the log
            log.exception("graphql-ws: operation %s failed (request %s)", sub_id[:MAX_ID], self.request[REQUEST_ID])
            if not self.ws.closed:
                await self.ws.close(code=INTERNAL, message=b"Internal server error")
        finally:
            if self.operations.get(sub_id) is marker:
                del self.operations[sub_id]

    async def _run(self, sub_id: str, params: GraphQLParams, marker: object) -> None:
        app = self.app
        schema, runner, hub = app[GRAPHQL].schema, app[GRAPHQL_RUNNER], app[SUBSCRIPTIONS]
        prepared = await runner.prepare(schema, params)
        if not self._current(sub_id, marker):
            return
        if prepared.errors:  # before execution: the spec's `error`, and nothing more for this id
            self._send(ws_message(sub_id, "error", json.dumps([e.formatted for e in prepared.errors]).encode()))
            return
        app[METRICS].graphql[(prepared.operation, "websocket")] += 1
        limits = self.limits
        context = RequestContext(self.request[REQUEST_ID], merged_headers(self.request.headers.items()),
                                 prepared.operation,
                                 Budget(limits.graphql_max_result_fields, max_bytes=limits.max_response_bytes),
                                 limits.graphql_timeout_ms / 1000, asyncio.get_running_loop(), self.params, self.user)
        if prepared.operation != "subscription":
            result = await runner.execute(schema, prepared, params, context)
            if self._current(sub_id, marker):
                self._send(ws_message(sub_id, "next", encode_result(result)) + ws_message(sub_id, "complete"))
            return
        try:
            reservation = hub.reserve(prepared.root_fields[0], params, prepared.selections)
        except Full as e:
            self._send(ws_message(sub_id, "error", encode_result_list(str(e))))
            return
        added = False
        try:
            root = SubscribeRoot()
            first = await runner.execute(schema, prepared, params, context, root)
            if not self._current(sub_id, marker):
                return
            if first.get("errors"):  # the resolver failed: report it and complete
                self._send(ws_message(sub_id, "next", encode_result(first)) + ws_message(sub_id, "complete"))
                return
            if not root.undefined:
                self._send(ws_message(sub_id, "next", encode_result(first)))
            def ended(_reason: str) -> None:  # the hub ended it (field gone, slow consumer, shutdown)
                self.subscribers.pop(sub_id, None)

            sub = hub.add(reservation, params, prepared.document, self.socket,  # type: ignore[arg-type]
                          ended, sub_id)
            added = True
            self.subscribers[sub_id] = sub
        finally:
            if not added:
                hub.release(reservation)

    def _send(self, framed: bytes) -> None:
        """A frame of this socket's own (an answer, an error). A client that leaves more than
        `streams.max_buffer_bytes` of them unread is cut off, as a slow subscriber is."""
        if self.socket.is_closing():
            return
        self.socket.write(framed)
        if self.socket.get_write_buffer_size() > self.app[CONFIG].streams.max_buffer_bytes:
            log.warning("graphql-ws: closed a socket that left more than %d bytes unread",
                        self.app[CONFIG].streams.max_buffer_bytes)
            self.socket.abort()

    def _end_all(self) -> None:
        """The socket is gone: what is under way is dropped when it ends, every subscription leaves
        the hub now."""
        self.operations.clear()
        hub = self.app[SUBSCRIPTIONS]
        for sub in list(self.subscribers.values()):
            hub.remove(sub)
        self.subscribers.clear()


def encode_result_list(message: str) -> bytes:
    """An `error` message's payload: a list of GraphQL errors."""
    return json.dumps([{"message": message}]).encode()


def _id(msg: dict[str, Any]) -> str:
    sub_id = msg.get("id")
    if not isinstance(sub_id, str) or not sub_id or len(sub_id) > MAX_ID:
        raise Closing(BAD_MESSAGE, f"Invalid message received: `id` must be a string of 1 to {MAX_ID} characters")
    return sub_id


def _bearer(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else value.strip() or None



