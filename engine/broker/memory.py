"""The broker of one process (the default): ids, bounded history and delivery, all in memory.

Event ids are `<epoch>-<n>`: `n` counts per channel, `epoch` is this process's start, so an id from
before a restart is recognised as unknown rather than mistaken for a different event.

History is bounded three ways: events per channel, bytes per channel, and bytes across every
channel, the oldest event anywhere going first. Replay only ever starts after an id still held, so
a reader whose id has been evicted is told (`reset`) rather than silently missing what went.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from engine.broker.base import Node, Replay
from engine.streams.event import Event, notice

_EVENT_ID = re.compile(r"([0-9a-f]{1,16})-([0-9]{1,19})")
_SHOWN_ID = 80  # characters of a client's unusable Last-Event-ID quoted back in the reset notice


@dataclass(eq=False)
class Channel:
    seq: int = 0
    history: deque[tuple[int, Event, int]] = field(default_factory=deque)  # (seq, event, order key)
    history_bytes: int = 0


class MemoryBroker:
    def __init__(self, history: int, history_bytes: int, total_history_bytes: int) -> None:
        self.history = history
        self.history_bytes = history_bytes
        self.total_history_bytes = total_history_bytes
        self.epoch = format(time.time_ns() // 1_000_000, "x")
        self.channels: dict[str, Channel] = {}
        self.kept_bytes = 0  # history held by every channel together
        self._floor = 0  # every forgotten channel's last seq: new channels number from above it
        self._order: OrderedDict[int, Channel] = OrderedDict()  # every kept event, oldest first
        self._next_key = 0
        self._nodes: list[Node] = []
        self._held: dict[str, list[Event]] = {}  # per channel published to in this pass: what waits
        self._closing_pass = False
        self.on_message: Any = None  # never called: no other process forwards to this one

    def subscribe(self, node: Node) -> None:
        self._nodes.append(node)

    async def start(self, must_connect: bool) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ready(self, channel: str, last_event_id: str | None = None) -> None:
        return None

    def is_here(self, connection: str) -> bool:
        return True  # every connection there is, is here

    async def forward_message(self, connection: str, path: str, text: str, as_json: bool,
                              timeout: float) -> dict[str, Any]:
        raise AssertionError("one process: there is nowhere to forward to")

    def is_ready(self, channel: str) -> bool:
        return True

    @property
    def healthy(self) -> bool:
        return True

    @property
    def is_leader(self) -> bool:
        return True  # the only process: it runs every timer

    def describe_state(self) -> dict[str, Any]:
        return {"kind": "memory", "state": "ok"}

    def publish(self, channel: str, data: str, event: str | None = None, is_json: bool = False) -> None:
        """Number the event and frame it for SSE once; keep it in history; deliver it."""
        ch = self.channels.get(channel)
        if ch is None:
            ch = self.channels[channel] = Channel(self._floor)
        ch.seq += 1
        ev = Event(data, f"{self.epoch}-{ch.seq}", event, is_json)
        self._keep(ch, ev)
        held = self._held.get(channel)
        if held is not None:  # this pass has some for it already: it goes with them
            held.append(ev)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a tool, a test of the parts): nothing to coalesce with
            for node in self._nodes:
                node.deliver(channel, ev)
            return
        # Held until this pass of the loop ends (call_soon: microseconds, not a timer), so a burst
        # costs each reader one write.
        self._held[channel] = [ev]
        if not self._closing_pass:
            self._closing_pass = True
            loop.call_soon(self._end_pass)

    def _end_pass(self) -> None:
        """What each channel was sent in this pass of the loop: to every reader in one write (a burst
        of N costs a reader one write, not N)."""
        self._closing_pass = False
        held, self._held = self._held, {}
        for channel, events in held.items():
            self._release(channel, events)

    def _release(self, channel: str, events: list[Event]) -> None:
        if len(events) == 1:
            for node in self._nodes:
                node.deliver(channel, events[0])
        elif events:
            for node in self._nodes:
                node.deliver_many(channel, events)

    def settle(self, channel: str) -> None:
        """Deliver what this pass holds for `channel` now: a reader about to attach gets history up
        to here as its replay, so nothing held may reach it a second time afterwards."""
        events = self._held.get(channel)
        if events:
            self._held[channel] = []
            self._release(channel, events)

    def send_to(self, connection: str, data: str, event: str | None = None, owner: str | None = None,
                is_json: bool = False) -> bool:
        ev = Event(data, None, event, is_json)
        return any(node.deliver_to(connection, ev, owner) for node in self._nodes)

    def close(self, connection: str, reason: str, owner: str | None = None) -> bool:
        ev = notice("close", {"reason": reason})
        return any(node.close_connection(connection, ev, reason, owner) for node in self._nodes)

    def since(self, channel: str, last_event_id: str | None) -> Replay:
        """Whatever the client sent, this answers: an id that is not one of ours is a `reset`."""
        self.settle(channel)
        if last_event_id is None:
            return Replay(None, [])
        ch = self.channels.get(channel) or Channel(self._floor)
        events = [ev for _, ev, _ in ch.history]
        shown = repr(last_event_id[:_SHOWN_ID]) + ("..." if len(last_event_id) > _SHOWN_ID else "")
        if last_event_id == f"{self.epoch}-start":
            return Replay(None, events)
        m = _EVENT_ID.fullmatch(last_event_id)
        if m is None or m.group(1) != self.epoch:
            return Replay(f"unknown event id {shown} (from another server run?)", events)
        seq = int(m.group(2))
        oldest = ch.history[0][0] if ch.history else ch.seq + 1
        if seq > ch.seq:
            return Replay(f"event id {shown} is ahead of this stream", events)
        if seq + 1 < oldest:
            return Replay(f"event id {shown} has left the history (it holds the last {len(events)} events; "
                          "streams.history, streams.history_bytes, streams.total_history_bytes)", events)
        return Replay(None, [ev for s, ev, _ in ch.history if s > seq])

    def cursor(self, channel: str) -> str:
        """For a channel not made yet, "from its start": its first id depends on what is forgotten
        before it is made, which a number taken now cannot know."""
        ch = self.channels.get(channel)
        return f"{self.epoch}-start" if ch is None else f"{self.epoch}-{ch.seq}"

    def unwatched(self, channel: str) -> None:
        return None  # its history is this process's alone: it stays with the channel

    def forget(self, channel: str) -> None:
        """The channel goes, history and all; nothing of it is kept. Whatever channel takes its path
        later numbers from above every id it gave out, one skipped: a reader resuming from an old id
        gets `reset`, never a replay that silently starts later."""
        self._held.pop(channel, None)
        ch = self.channels.pop(channel, None)
        if ch is not None:
            while ch.history:
                self._evict(ch)
            self._floor = max(self._floor, ch.seq + 1)

    def describe(self, channel: str) -> tuple[int, str | None]:
        ch = self.channels.get(channel)
        if ch is None or not ch.seq:
            return 0, None
        return len(ch.history), f"{self.epoch}-{ch.seq}"

    def _keep(self, ch: Channel, ev: Event) -> None:
        """Add the event to history, then drop the oldest until every bound holds again. An event too
        large to keep takes the channel's older history with it, so no replay can skip over it."""
        key = self._next_key
        self._next_key += 1
        ch.history.append((ch.seq, ev, key))
        size = ev.size
        ch.history_bytes += size
        self.kept_bytes += size
        self._order[key] = ch
        while ch.history and (len(ch.history) > self.history or ch.history_bytes > self.history_bytes):
            self._evict(ch)
        while self.kept_bytes > self.total_history_bytes:
            self._evict(next(iter(self._order.values())))

    def _evict(self, ch: Channel) -> None:
        _, ev, key = ch.history.popleft()
        size = ev.size
        ch.history_bytes -= size
        self.kept_bytes -= size
        del self._order[key]
