"""Where GraphQL's CPU work happens: away from the server's event loop, which every client needs.

Two threads parse and validate documents (validation alone can take a second of CPU) and build
large subscription results; one thread with an event loop of its own executes operations, so a
result of a hundred thousand fields is built there. Resolvers still run scripts from the server's
loop: `call_resolver` hops back to it. On the server's loop, a GraphQL request only ever waits.
Python's threads share one interpreter lock, so the server's loop can still wait for it, but for at
most the interpreter's switch interval at a time, not for the whole of the work.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from graphql import GraphQLSchema

from engine.config import LimitsConfig
from engine.graphql.execute import GraphQLParams, Prepared, RequestContext, prepare, run

T = TypeVar("T")
CACHED_QUERIES = 128  # prepared documents kept, the least recently used going first
CACHED_QUERY_CHARS = 8192  # a longer document is prepared each time (the cache stays small)


class GraphQLRunner:
    def __init__(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="graphql")
        self._prepared: OrderedDict[tuple[str, str | None], tuple[GraphQLSchema, Prepared]] = OrderedDict()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="graphql-execute", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:  # whatever still runs here is cancelled, then the loop closes on its own thread
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def prepare(self, schema: GraphQLSchema, params: GraphQLParams) -> Prepared:
        """Parse, count and validate (see `execute.prepare`), on a thread of the pool, once per
        document and schema: many clients sending one subscription (or query) share the work. The
        cache is read and written here, on the server's loop; an entry holds its schema, so a schema
        rebuilt by a registration misses it."""
        if len(params.query) > CACHED_QUERY_CHARS:
            return await self.call(prepare, schema, params, self.limits)
        key = (params.query, params.operation_name)
        hit = self._prepared.get(key)
        if hit is not None and hit[0] is schema:
            self._prepared.move_to_end(key)
            return hit[1]
        prepared = await self.call(prepare, schema, params, self.limits)
        self._prepared[key] = (schema, prepared)
        self._prepared.move_to_end(key)
        while len(self._prepared) > CACHED_QUERIES:
            self._prepared.popitem(last=False)
        return prepared

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a thread of the pool: CPU-bound work with nothing to await."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def execute(self, schema: GraphQLSchema, prepared: Prepared, params: GraphQLParams,
                      context: RequestContext, root: Any = None) -> dict[str, Any]:
        """Execute on the GraphQL thread's loop. Cancelling this (the client left) cancels it there,
        and with it the resolver calls it still waits for."""
        return await self._on_thread(run(schema, prepared, params, context, root))

    async def execute_encoded(self, schema: GraphQLSchema, prepared: Prepared, params: GraphQLParams,
                              context: RequestContext, encode: Callable[[dict[str, Any]], bytes]) -> bytes:
        """`execute`, then the result encoded for the wire, there too (a large result is large JSON)."""
        async def run_and_encode() -> bytes:
            return encode(await run(schema, prepared, params, context))
        return await self._on_thread(run_and_encode())

    async def _on_thread(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def close(self) -> None:
        """Stop both: what is still running on the thread's loop is cancelled with it. Again: nothing."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 5)
