"""The broker of many processes: ids and history in Redis, delivery through Redis pub/sub.

Publishing runs one Lua script (after Centrifugo's Redis engine): it numbers the message in its
channel, appends it to the channel's Redis Stream (trimmed to `streams.history`) and PUBLISHes it,
all in one step, so every process sees a channel's messages in the order of their numbers. Ids are
`<epoch>-<n>`: `n` counts per channel, `epoch` is the channel's own, made with its first message; a
flushed or expired channel gets a new epoch, so an old id is a `reset`, never a wrong replay.

Each process mirrors, in memory, the channels its readers read (`Mirror`): subscribed to their
pub/sub channel, loaded from the Stream once subscribed, so a reader attaches with no await between
its replay and live events, as on the memory broker. A mirror notices a gap (a number skipped, an
epoch changed) and fills it from the Stream, or tells its readers `reset` when it cannot.

If Redis goes away, the process keeps serving: what is published here reaches the readers here (ids
of this process's own epoch, kept in no history), `/health` says `degraded`, and the broker
reconnects with backoff, then fills every mirror's gap or resets it. The engine's own channels
(`/_engine/...`: its logs) never leave the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from engine.broker.base import Node, Replay
from engine.broker.memory import _EVENT_ID, _SHOWN_ID, MemoryBroker
from engine.errors import BrokerUnavailable
from engine.streams.event import Event, notice

log = logging.getLogger("engine.broker")

LOCAL_PREFIX = "/_engine/"  # the engine's own channels: this process's alone
MAX_QUEUED = 10_000  # messages waiting to go to Redis; beyond, they reach this process's readers only
MAX_PENDING = 10_000  # live messages a mirror holds while it loads or fills a gap; beyond, it reloads
BATCH = 256  # messages per pipeline to Redis
POOL = 64  # connections to Redis for commands (pub/sub has its own)
LOADS_AT_ONCE = 16  # channels loaded from Redis at once; more readers of new channels wait their turn
STOP_FLUSH = 1.0  # seconds a stopping broker waits for what is queued to reach Redis
CATCH_UP = 2.0  # seconds a reader with an id ahead of this process's copy waits for it to arrive
BACKOFF = (0.05, 2.0)  # seconds: first and longest wait between reconnection attempts

# KEYS: the channel's meta hash, its stream. ARGV: an epoch for a new channel, history length, TTL
# seconds, the pub/sub channel, the payload. The reply: {epoch, number}.
PUBLISH_LUA = """
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e)
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], n .. '-1', 'd', ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], e .. '\\n' .. n .. '\\n' .. ARGV[5])
return {e, n}
"""

# The lease of the process that runs the scripts' cluster timers: renewed only by its holder.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
LEASE_MS = 3000  # a leader that stops renewing (it died) is replaced after this
RENEW_EVERY = 1.0  # seconds between renewals (and attempts by the others)

Answer = dict[str, Any]
MessageHandler = Callable[[str, str, str, bool], Awaitable[Answer]]  # (connection, path, text, as_json)


@dataclass(eq=False)
class Mirror:
    """This process's copy of one channel: its epoch and number in Redis, its recent history."""

    epoch: str | None = None  # None: the channel has had no message (or Redis could not say)
    seq: int = 0
    history: deque[tuple[int, Event]] = field(default_factory=deque)
    history_bytes: int = 0
    loaded: asyncio.Future[None] | None = None  # done once subscribed and loaded
    pending: list[tuple[str, int, bytes]] | None = None  # live messages held while (re)loading
    overflowed: bool = False  # pending passed MAX_PENDING: load again once this load ends
    waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)  # readers ahead of it
    touched: float = 0.0  # loop time a reader last asked for it (see RedisBroker.unwatched)


U = ("utf-8", "surrogatepass")  # paths and data may hold lone surrogates (JS strings): kept as they are


def _payload(data: str, event: str | None, is_json: bool) -> bytes:
    return f"{event or ''}\n{'j' if is_json else 't'}\n{data}".encode(*U)


_PUBLISHED = re.compile(rb"([0-9a-f]{1,16})\n([0-9]{1,19})\n([^\n]*\n[jt]\n.*)", re.S)


def _published(data: Any) -> tuple[str, int, bytes] | None:
    """A pub/sub message as the publish script sends it (`epoch\nnumber\nevent\nflag\ndata`), or None."""
    m = _PUBLISHED.fullmatch(data) if isinstance(data, bytes) else None
    return None if m is None else (m.group(1).decode(), int(m.group(2)), m.group(3))


def _event(epoch: str, seq: int, payload: bytes) -> Event:
    name, flag, data = payload.decode(*U).split("\n", 2)
    return Event(data, f"{epoch}-{seq}", name or None, flag == "j")


class RedisBroker:
    def __init__(self, url: str, prefix: str, history: int, history_bytes: int, total_history_bytes: int,
                 ttl_seconds: float, connect_timeout: float = 2.0, mirror_idle: float = 120.0) -> None:
        self.url = url
        self.prefix = prefix
        self.history = history
        self.history_bytes = history_bytes
        self.ttl = max(1, int(ttl_seconds))
        self.mirror_idle = mirror_idle  # seconds a channel nobody here reads (or is about to) stays mirrored
        self.local = MemoryBroker(history, history_bytes, total_history_bytes)
        self.epoch = self.local.epoch  # the ids of what this process numbers itself while Redis is away
        # A blocking pool: more commands at once than it has connections wait for one, rather than
        # failing (which would read as Redis going away).
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=POOL, timeout=None,
                                                        socket_connect_timeout=connect_timeout, socket_timeout=None,
                                                        health_check_interval=0)
        self.redis = aioredis.Redis(connection_pool=pool)
        self._loading = asyncio.Semaphore(LOADS_AT_ONCE)
        self.mirrors: dict[str, Mirror] = {}
        self.state = "starting"  # ok, degraded (Redis away), closed
        self.degraded_since: float | None = None
        self.on_message: MessageHandler | None = None  # runs a client's message for a connection here
        self._nodes: list[Node] = []
        self._node_id = ""
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._pubsub: Any = None
        self._subscribed: dict[bytes, asyncio.Future[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_sha = ""
        self._seq = 0  # this process's own numbers, while Redis is away
        self._asks: dict[str, asyncio.Future[Answer]] = {}  # messages forwarded to another node, by ask id
        self._reconnecting: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._gathered: dict[str, list[Event]] | None = None  # what a batch of live messages delivers
        self._leader = False  # holds the lease: runs the scripts' cluster timers
        self._sending = False  # a pipeline is on its way to Redis
        self._message_prefix = f"{prefix}:m:".encode()
        self._node_prefix = f"{prefix}:n:".encode()

    # ---- life --------------------------------------------------------------------------------

    async def start(self, must_connect: bool) -> None:
        """Connect, or (unless `must_connect`) start degraded and keep trying. Raises RedisError."""
        try:
            await self._connect()
        except (RedisError, OSError) as e:
            if must_connect:
                raise BrokerUnavailable(f"Redis at {self._where()} is unreachable ({e}); start it, fix broker.url, "
                                        "or set broker.start_degraded to serve without it until it is back") from e
            self._degrade(e)
        else:
            await self._elect()  # before any script loads: its top-level timers know where they run
        self._tasks.append(asyncio.create_task(self._publisher()))
        self._tasks.append(asyncio.create_task(self._elections()))

    async def stop(self) -> None:
        # What scripts sent last (an onDisconnect's goodbye at shutdown) still goes out, briefly waited for.
        deadline = time.monotonic() + STOP_FLUSH
        while (self._queue or self._sending) and self.state == "ok" and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if self._leader and self.state == "ok":  # hand over at once rather than when the lease runs out
            with contextlib.suppress(RedisError, OSError):
                await self.redis.eval(RELEASE_LUA, 1, self._lease_key, self._node_id)
        self.state = "closed"
        for task in [*self._tasks, self._reconnecting, self._listener]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    @property
    def healthy(self) -> bool:
        return self.state == "ok"

    @property
    def is_leader(self) -> bool:
        """Does this process run the scripts' cluster timers? While Redis is away, every process
        does: what each publishes reaches only its own readers then, so each runs its own."""
        return self._leader or self.state != "ok"

    @property
    def _lease_key(self) -> str:
        return f"{self.prefix}:leader"

    async def _elect(self) -> None:
        """Renew the lease if this process holds it, else take it if nobody does."""
        was = self._leader
        if self._leader:
            self._leader = bool(await self.redis.eval(RENEW_LUA, 1, self._lease_key, self._node_id, LEASE_MS))
        if not self._leader:
            self._leader = bool(await self.redis.set(self._lease_key, self._node_id, nx=True, px=LEASE_MS))
        if self._leader != was:
            log.info("broker: this process %s the scripts' cluster timers",
                     "runs" if self._leader else "no longer runs")

    async def _elections(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            if self.state == "ok":
                try:
                    await self._elect()
                except (RedisError, OSError) as e:
                    self._degrade(e)

    def describe_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "redis", "state": self.state, "node": self._node_id,
                               "runs_cluster_timers": self.is_leader, "channels_mirrored": len(self.mirrors)}
        if self.degraded_since is not None:
            out["degraded_for_seconds"] = round(time.monotonic() - self.degraded_since, 3)
        return out

    async def _connect(self) -> None:
        """Reach Redis, subscribe again, resynchronise every mirror. The broker counts as up from the
        moment Redis answers: readers arriving meanwhile load their channels as usual, while the
        mirrors already here catch up (their live messages wait in `pending` until then)."""
        await self.redis.ping()
        self._publish_sha = await self.redis.script_load(PUBLISH_LUA)
        pubsub = self.redis.pubsub()
        self._pubsub = pubsub
        self._subscribed = {}
        if self._listener is not None:
            self._listener.cancel()
        self._listener = asyncio.create_task(self._listen(pubsub))
        names = [self._node_channel(self._node_id)] if self._node_id else []
        names += [self._channel_name(p) for p in self.mirrors]
        for mirror in self.mirrors.values():
            mirror.pending = []  # what comes live from now on waits for the mirror's resync
        away = time.monotonic() - self.degraded_since if self.degraded_since is not None else None
        self.state = "ok"
        self.degraded_since = None
        try:
            await self._subscribe(names)
            for path, mirror in list(self.mirrors.items()):
                if self.mirrors.get(path) is mirror:
                    await self._load(path, mirror, resync=True)
        except (RedisError, OSError) as e:
            self._degrade(e)
            raise
        if away is not None:
            log.warning("broker: Redis at %s is back after %.1f s: channels resynchronised", self._where(), away)

    def _degrade(self, error: BaseException) -> None:
        """Redis is away: say so once, serve this process's readers alone, reconnect with backoff."""
        if self.state in ("degraded", "closed"):
            return
        log.error("broker: Redis at %s is unreachable (%s); serving this process's readers only, "
                  "reconnecting", self._where(), error or type(error).__name__,
                  exc_info=error if log.isEnabledFor(logging.DEBUG) else None)
        self.state = "degraded"
        self.degraded_since = time.monotonic()
        for fut in self._subscribed.values():
            if not fut.done():
                fut.cancel()
        for mirror in self.mirrors.values():  # readers waiting for a load get what there is
            if mirror.loaded is not None and not mirror.loaded.done():
                mirror.loaded.set_result(None)
            mirror.pending = None
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        wait = BACKOFF[0]
        while self.state == "degraded":
            await asyncio.sleep(wait)
            wait = min(wait * 2, BACKOFF[1])
            old = self._pubsub
            self._pubsub = None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()
            try:
                # Connections pooled before Redis went away are dead (a restarted Redis closed them):
                # every command after this one gets a fresh one.
                await self.redis.connection_pool.disconnect()
                await self._connect()
            except Exception as e:  # noqa: BLE001 - whatever failed, this loop must go on trying
                log.debug("broker: reconnect failed: %r", e)

    def _where(self) -> str:
        pool = self.redis.connection_pool.connection_kwargs
        return f"{pool.get('host', '?')}:{pool.get('port', '?')}"

    # ---- names -------------------------------------------------------------------------------

    def _channel_name(self, path: str) -> bytes:
        return f"{self.prefix}:m:{path}".encode(*U)

    def _node_channel(self, node: str) -> bytes:
        return f"{self.prefix}:n:{node}".encode()

    def _keys(self, path: str) -> tuple[bytes, bytes]:
        return f"{self.prefix}:c:{path}:meta".encode(*U), f"{self.prefix}:c:{path}:h".encode(*U)

    # ---- the Broker protocol -----------------------------------------------------------------

    def subscribe(self, node: Node) -> None:
        self.local.subscribe(node)
        self._nodes.append(node)
        self._node_id = getattr(node, "node", "")
        if self.state == "ok" and self._node_id:
            asyncio.get_running_loop().create_task(self._subscribe([self._node_channel(self._node_id)]))

    def is_ready(self, channel: str) -> bool:
        """Could a reader attach to `channel` now, with no await (its mirror is loaded)?"""
        if channel.startswith(LOCAL_PREFIX):
            return True
        m = self.mirrors.get(channel)
        return m is not None and m.loaded is not None and m.loaded.done()

    async def ready(self, channel: str, last_event_id: str | None = None) -> None:
        """Subscribe to `channel` and load its history, if this process has not yet; then, if
        `last_event_id` is of this channel but ahead of what reached this process (another process
        gave it out a moment ago), wait a little for the mirror to catch up."""
        if channel.startswith(LOCAL_PREFIX):
            return
        m = self.mirrors.get(channel)
        if m is None:
            m = self.mirrors[channel] = Mirror()
            m.loaded = asyncio.get_running_loop().create_future()
            if self.state == "ok":
                asyncio.get_running_loop().create_task(self._first_load(channel, m))
            else:
                m.loaded.set_result(None)
        assert m.loaded is not None
        m.touched = asyncio.get_running_loop().time()
        await asyncio.shield(m.loaded)
        found = _EVENT_ID.fullmatch(last_event_id) if last_event_id else None
        if found is not None and found.group(1) == m.epoch and int(found.group(2)) > m.seq:
            fut = asyncio.get_running_loop().create_future()
            m.waiters = [w for w in m.waiters if not w[1].done()]  # those that gave up go
            m.waiters.append((int(found.group(2)), fut))
            with contextlib.suppress(TimeoutError):  # then `since` says the id is ahead: a reset
                await asyncio.wait_for(fut, CATCH_UP)

    def publish(self, channel: str, data: str, event: str | None = None, is_json: bool = False) -> None:
        if channel.startswith(LOCAL_PREFIX):
            self.local.publish(channel, data, event, is_json)
            return
        if self.state != "ok" or len(self._queue) >= MAX_QUEUED:
            if self.state == "ok":
                log.warning("broker: %d messages wait for Redis; one to %s reaches this process's readers only",
                            MAX_QUEUED, channel)
            self._deliver_here(channel, data, event, is_json)
            return
        self._queue.append((channel, _payload(data, event, is_json)))
        self._wake.set()

    def send_to(self, connection: str, data: str, event: str | None = None, owner: str | None = None,
                is_json: bool = False) -> bool:
        node = connection.partition(".")[0]
        if node == self._node_id or self.state != "ok":
            return self.local.send_to(connection, data, event, owner, is_json)
        self._tell(node, {"op": "to", "id": connection, "data": data, "event": event, "owner": owner,
                          "json": is_json})
        return True  # its node says in its own log if the connection is gone

    def close(self, connection: str, reason: str, owner: str | None = None) -> bool:
        node = connection.partition(".")[0]
        if node == self._node_id or self.state != "ok":
            return self.local.close(connection, reason, owner)
        self._tell(node, {"op": "close", "id": connection, "reason": reason, "owner": owner})
        return True

    def since(self, channel: str, last_event_id: str | None) -> Replay:
        if channel.startswith(LOCAL_PREFIX):
            return self.local.since(channel, last_event_id)
        if last_event_id is None:
            return Replay(None, [])
        m = self.mirrors.get(channel) or Mirror()
        events = [ev for _, ev in m.history]
        shown = repr(last_event_id[:_SHOWN_ID]) + ("..." if len(last_event_id) > _SHOWN_ID else "")
        if last_event_id == "start" or (m.epoch is None and last_event_id == f"{self.epoch}-start"):
            return Replay(None, events)
        found = _EVENT_ID.fullmatch(last_event_id)
        if found is None or m.epoch is None or found.group(1) != m.epoch:
            return Replay(f"unknown event id {shown} (from before the channel's history was reset, or from "
                          "this server while Redis was unreachable)", events)
        seq = int(found.group(2))
        oldest = m.history[0][0] if m.history else m.seq + 1
        if seq > m.seq:
            return Replay(f"event id {shown} is ahead of this stream", events)
        if seq + 1 < oldest:
            return Replay(f"event id {shown} has left the history (it holds the last {len(events)} events; "
                          "streams.history, streams.history_bytes)", events)
        return Replay(None, [ev for s, ev in m.history if s > seq])

    def cursor(self, channel: str) -> str:
        if channel.startswith(LOCAL_PREFIX):
            return self.local.cursor(channel)
        m = self.mirrors.get(channel)
        return "start" if m is None or m.epoch is None else f"{m.epoch}-{m.seq}"

    def settle(self, channel: str) -> None:
        self.local.settle(channel)  # the engine's own channels; the rest is written as each batch is read

    def unwatched(self, channel: str) -> None:
        """Nobody here reads it now: if that lasts `mirror_idle` seconds, stop mirroring it (it would
        cost this process every message of it for nothing; a reader who comes later loads it again)."""
        m = self.mirrors.get(channel)
        if m is not None:
            asyncio.get_running_loop().call_later(self.mirror_idle, self._drop_if_unread, channel, m)

    def _drop_if_unread(self, channel: str, m: Mirror) -> None:
        if self.mirrors.get(channel) is not m or any(node.readers(channel) for node in self._nodes):
            return
        wait = m.touched + self.mirror_idle - asyncio.get_running_loop().time()
        if wait > 0:  # a reader is on its way (its onConnect may still run): look again later
            asyncio.get_running_loop().call_later(wait, self._drop_if_unread, channel, m)
        else:
            self.forget(channel)

    def forget(self, channel: str) -> None:
        """This process stops mirroring the channel; its history stays in Redis (until its TTL)."""
        if channel.startswith(LOCAL_PREFIX):
            self.local.forget(channel)
            return
        m = self.mirrors.pop(channel, None)
        if m is not None and self.state == "ok" and self._pubsub is not None:
            name = self._channel_name(channel)
            self._subscribed.pop(name, None)
            asyncio.get_running_loop().create_task(self._quietly(self._pubsub.unsubscribe(name)))

    def describe(self, channel: str) -> tuple[int, str | None]:
        if channel.startswith(LOCAL_PREFIX):
            return self.local.describe(channel)
        m = self.mirrors.get(channel)
        if m is None or m.epoch is None or not m.seq:
            return 0, None
        return len(m.history), f"{m.epoch}-{m.seq}"

    # ---- messages for connections elsewhere ---------------------------------------------------

    def is_here(self, connection: str) -> bool:
        return connection.partition(".")[0] == self._node_id

    async def forward_message(self, connection: str, path: str, text: str, as_json: bool,
                              timeout: float) -> Answer:
        """A client's message for a connection another process holds: its onMessage runs there.
        The answer: {"status", "text", "json"} or {"status", "error", "message"}."""
        if self.state != "ok":
            return {"status": 503, "error": "broker_unavailable",
                    "message": "the connection is on another server, and Redis, which reaches it, is unreachable"}
        ask = secrets.token_hex(8)
        fut = self._asks[ask] = asyncio.get_running_loop().create_future()
        gone = {"status": 404, "error": "unknown_connection",
                "message": f"no connection {connection} is open (its server is gone, or it never was one)"}
        message = {"op": "msg", "id": connection, "path": path, "text": text, "json": as_json, "ask": ask,
                   "from": self._node_id}
        try:
            # Sent at once, not queued: Redis says how many processes listen on that name, and none
            # means nobody will ever answer.
            if not await self.redis.publish(self._node_channel(connection.partition(".")[0]), json.dumps(message)):
                return gone
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return {**gone, "message": f"connection {connection}'s server did not answer within {timeout:g} s"}
        except (RedisError, OSError) as e:
            self._degrade(e)
            return {"status": 503, "error": "broker_unavailable", "message": "Redis, which reaches the connection's "
                    "server, is unreachable"}
        finally:
            self._asks.pop(ask, None)

    def _tell(self, node: str, message: dict[str, Any]) -> None:
        self._queue.append(("", self._node_channel(node) + b"\n" + json.dumps(message).encode()))
        self._wake.set()

    async def _heard(self, raw: bytes) -> None:
        """A message on this node's channel, from another process."""
        try:
            await self._heard_one(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeError):
            log.warning("broker: a malformed message on this node's channel was dropped")

    async def _heard_one(self, m: dict[str, Any]) -> None:
        """One node message, its fields checked (TypeError for one of the wrong type)."""
        op = m["op"]
        for key in {"to": ("id", "data"), "close": ("id", "reason"), "msg": ("id", "path", "text", "ask", "from"),
                    "ans": ("ask",)}.get(op, ()):
            if not isinstance(m[key], str):
                raise TypeError(key)
        if not isinstance(m.get("event"), str | None) or not isinstance(m.get("owner"), str | None):
            raise TypeError("event, owner")
        if op == "to":
            ev = Event(m["data"], None, m.get("event"), bool(m.get("json")))
            if not any(n.deliver_to(m["id"], ev, m.get("owner")) for n in self._nodes):
                log.info("broker: sendToConnection from another server: no connection %s here (it ended)", m["id"])
        elif op == "close":
            ev = notice("close", {"reason": m["reason"]})
            any(n.close_connection(m["id"], ev, m["reason"], m.get("owner")) for n in self._nodes)
        elif op == "msg":
            answer: Answer
            try:
                if self.on_message is None:
                    raise LookupError("no handler")
                answer = await self.on_message(m["id"], m["path"], m["text"], bool(m["json"]))
            except Exception as e:  # noqa: BLE001 - the asker gets an answer whatever failed here
                log.exception("broker: a message forwarded for connection %s failed", m.get("id"))
                answer = {"status": 500, "error": "internal", "message": f"the message failed on its server: {e}"}
            self._tell(m["from"], {"op": "ans", "ask": m["ask"], "answer": answer})
        elif op == "ans":
            fut = self._asks.get(m["ask"])
            if fut is not None and not fut.done():
                fut.set_result(m["answer"])

    # ---- publishing --------------------------------------------------------------------------

    async def _publisher(self) -> None:
        """Sends what `publish` and `_tell` queued, in order, a pipeline of up to BATCH at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self.state == "ok":
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                self._sending = True
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for path, payload in batch:
                            if path:
                                meta, stream = self._keys(path)
                                pipe.evalsha(self._publish_sha, 2, meta, stream, secrets.token_hex(4),
                                             self.history, self.ttl, self._channel_name(path), payload)
                            else:
                                to, _, body = payload.partition(b"\n")
                                pipe.publish(to, body)
                        results = await pipe.execute(raise_on_error=False)
                    for (path, _), result in zip(batch, results, strict=True):
                        if isinstance(result, RedisConnectionError | RedisTimeout | OSError):
                            raise result
                        if isinstance(result, Exception):  # Redis refused this one (a key of another type...)
                            log.error("broker: Redis refused a message to %s: %s", path or "a node", result)
                except (RedisError, OSError) as e:
                    self._degrade(e)
                    # What was in flight or waiting still reaches this process's readers (it may have
                    # reached Redis too: a reader here may then see it twice, with two ids).
                    batch += self._queue
                    self._queue.clear()
                    self._deliver_all_here(batch)
                except Exception:  # noqa: BLE001 - a batch this code could not send must not end the sending
                    log.exception("broker: a batch of %d messages could not be sent to Redis; this process's "
                                  "readers get them", len(batch))
                    self._deliver_all_here(batch)
                finally:
                    self._sending = False

    def _deliver_all_here(self, batch: list[tuple[str, bytes]]) -> None:
        for path, payload in batch:
            if path:
                event, flag, data = payload.decode(*U).split("\n", 2)
                self._deliver_here(path, data, event or None, flag == "j")

    def _deliver_here(self, channel: str, data: str, event: str | None, is_json: bool) -> None:
        """Without Redis: this process's readers get it, with an id of this process's own."""
        self._seq += 1
        ev = Event(data, f"{self.epoch}-{self._seq}", event, is_json)
        for node in self._nodes:
            node.deliver(channel, ev)

    # ---- subscribing and mirrors -------------------------------------------------------------

    async def _subscribe(self, names: list[bytes]) -> None:
        """Subscribe and wait until Redis confirms: from then on, nothing published is missed."""
        if not names or self._pubsub is None:
            return
        loop = asyncio.get_running_loop()
        waits = []
        for name in names:
            fut = self._subscribed.get(name)
            if fut is None:
                fut = self._subscribed[name] = loop.create_future()
            waits.append(fut)
        await self._pubsub.subscribe(*names)
        try:
            await asyncio.gather(*waits)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # `_degrade` gave up on these: the connection went while Redis was confirming them
            raise RedisConnectionError("the connection to Redis went while subscribing") from None

    async def _first_load(self, path: str, m: Mirror) -> None:
        try:
            async with self._loading:
                await self._subscribe([self._channel_name(path)])
                await self._load(path, m, resync=False)
        except (RedisError, OSError) as e:
            self._degrade(e)
        finally:
            if m.loaded is not None and not m.loaded.done():
                m.loaded.set_result(None)

    async def _load(self, path: str, m: Mirror, resync: bool) -> None:
        """Read the channel's epoch, number and Stream; with `resync`, give the readers what they
        missed (or a `reset` when that cannot be told), then whatever came live meanwhile (held in
        `pending` from before the read, so nothing falls between the two)."""
        if m.pending is None:
            m.pending = []
        meta, stream = self._keys(path)
        start = f"{m.seq + 1}-1" if resync and m.epoch is not None else "-"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(meta, "e", "n")
            pipe.xrange(stream, start, "+")
            (epoch_b, seq_b), entries = await pipe.execute()
        epoch = epoch_b.decode() if epoch_b else None
        seq = int(seq_b) if seq_b else 0
        fresh = [(int(eid.split(b"-")[0]), fields[b"d"]) for eid, fields in entries]
        if not resync:
            m.epoch, m.seq = epoch, seq
            self._clear(m)
            for n, payload in fresh:
                self._keep(m, n, _event(epoch or "", n, payload))
        elif m.epoch is None:
            if seq:
                self._reset(path, m, "events may have been missed while Redis was unreachable", epoch, seq, fresh)
        elif epoch != m.epoch or seq < m.seq:
            self._reset(path, m, "the channel's history in Redis was reset", epoch, seq, fresh)
        elif seq > m.seq and (not fresh or fresh[0][0] != m.seq + 1):
            self._reset(path, m, f"{seq - m.seq} events were missed (while Redis was unreachable, or this "
                        "server fell behind) and have left the history", epoch, seq, fresh)
        else:
            for n, payload in fresh:  # the gap, filled: readers get what they missed, in order
                self._advance(path, m, n, _event(m.epoch, n, payload))
        pending, m.pending = m.pending, None
        overflowed, m.overflowed = m.overflowed, False
        for e, n, payload in pending or ():  # None: Redis went away meanwhile
            self._apply(path, m, e, n, payload)
        if overflowed and m.pending is None:
            await self._load(path, m, resync=True)

    def _reset(self, path: str, m: Mirror, why: str, epoch: str | None, seq: int,
               fresh: list[tuple[int, bytes]]) -> None:
        last = f"{m.epoch}-{m.seq}" if m.epoch else None
        m.epoch, m.seq = epoch, seq
        self._clear(m)
        for n, payload in fresh:
            self._keep(m, n, _event(epoch or "", n, payload))
        ev = notice("reset", {"reason": why, "lastEventId": last})
        for node in self._nodes:
            node.deliver(path, ev)

    def _clear(self, m: Mirror) -> None:
        m.history.clear()
        m.history_bytes = 0

    def _keep(self, m: Mirror, seq: int, ev: Event) -> None:
        m.history.append((seq, ev))
        m.history_bytes += ev.size
        while m.history and (len(m.history) > self.history or m.history_bytes > self.history_bytes):
            m.history_bytes -= m.history.popleft()[1].size

    def _advance(self, path: str, m: Mirror, seq: int, ev: Event) -> None:
        m.seq = seq
        self._keep(m, seq, ev)
        if self._gathered is not None:  # the listener's batch: written once it is all read
            self._gathered.setdefault(path, []).append(ev)
        else:
            for node in self._nodes:
                node.deliver(path, ev)
        if m.waiters:
            for n, fut in m.waiters:
                if n <= seq and not fut.done():
                    fut.set_result(None)
            m.waiters = [(n, fut) for n, fut in m.waiters if not fut.done()]

    def _apply(self, path: str, m: Mirror, epoch: str, seq: int, payload: bytes) -> None:
        """One live message, in order: delivered and kept; one had already dropped; a gap filled
        from Redis first (live messages wait in `pending` meanwhile)."""
        if m.pending is not None:
            if len(m.pending) < MAX_PENDING:
                m.pending.append((epoch, seq, payload))
            else:
                m.overflowed = True
            return
        if m.epoch == epoch and seq <= m.seq:
            return  # had it already (a load and a live message overlap)
        if (m.epoch == epoch and seq == m.seq + 1) or (m.epoch is None and m.seq == 0 and seq == 1):
            m.epoch = epoch
            self._advance(path, m, seq, _event(epoch, seq, payload))
            return
        m.pending = [(epoch, seq, payload)]  # a number skipped, or a new epoch
        asyncio.get_running_loop().create_task(self._fill(path, m))

    async def _fill(self, path: str, m: Mirror) -> None:
        try:
            await self._load(path, m, resync=True)
        except (RedisError, OSError) as e:
            self._degrade(e)

    async def _listen(self, pubsub: Any) -> None:
        """Every message on this process's subscriptions, in the order Redis sent them. What has
        arrived together (up to BATCH) is applied together, and each reader gets its share of it in
        one write: a burst costs a write per reader per batch, not per message."""
        try:
            while not pubsub.subscribed:
                await asyncio.sleep(0.01)
            while True:
                batch = [await pubsub.get_message(ignore_subscribe_messages=False, timeout=None)]
                while len(batch) < BATCH:
                    more = await pubsub.get_message(ignore_subscribe_messages=False, timeout=0)
                    if more is None:
                        break
                    batch.append(more)
                self._gathered = {}
                try:
                    for msg in batch:
                        if msg is not None:
                            self._heard_message(msg)
                finally:
                    gathered, self._gathered = self._gathered, None
                    for path, events in gathered.items():
                        for node in self._nodes:
                            node.deliver_many(path, events)
        except (RedisError, OSError) as e:
            if pubsub is self._pubsub:
                self._degrade(e)

    def _heard_message(self, msg: dict[str, Any]) -> None:
        kind, name = msg["type"], msg["channel"]
        if kind == "subscribe":
            fut = self._subscribed.get(name)
            if fut is not None and not fut.done():
                fut.set_result(None)
            return
        if kind != "message":
            return
        if name.startswith(self._node_prefix):
            asyncio.get_running_loop().create_task(self._heard(msg["data"]))
            return
        path = name[len(self._message_prefix):].decode(*U)
        m = self.mirrors.get(path)
        if m is None:
            return
        parsed = _published(msg["data"])
        if parsed is None:  # not what the publish script sends: someone else's, on our channel name
            log.warning("broker: a malformed message on %s was dropped", path[:200])
            return
        self._apply(path, m, *parsed)

    @staticmethod
    async def _quietly(aw: Awaitable[Any]) -> None:
        with contextlib.suppress(RedisError, OSError):
            await aw
