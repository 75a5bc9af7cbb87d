"""What every broker does, whichever runs: the registry and the transports know only this."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.streams.event import Event


@dataclass(frozen=True)
class Replay:
    """What a (re)connecting reader gets before live events: a reset notice, then history."""

    reset: str | None  # why the given id could not be resumed from, or None
    events: list[Event]


class Node(Protocol):
    """A registry of readers (one per engine process): where the broker hands what it numbered."""

    node: str  # this process's name: the first part of every connection id it gives out

    def deliver(self, path: str, event: Event) -> None:
        """One event of channel `path` for every reader of it here."""

    def readers(self, path: str) -> int:
        """How many read channel `path` here."""

    def deliver_many(self, path: str, events: list[Event]) -> None:
        """Several events of channel `path`, in order, for every reader of it here (in one write each)."""

    def deliver_to(self, connection: str, event: Event, owner: str | None = None) -> bool:
        """One event for one reader, if it is here and on a stream of `owner` (any, if None): True."""

    def close_connection(self, connection: str, event: Event, reason: str, owner: str | None = None) -> bool:
        """A last event for one reader, then its end, if it is here and on a stream of `owner`: True."""


class Broker(Protocol):
    """Numbers each message in its channel, keeps the channel's history, hands the framed event to
    every node that subscribed (every process's, with a broker that crosses processes)."""

    def subscribe(self, node: Node) -> None:
        """`node` gets every event published from now on."""

    async def start(self, must_connect: bool) -> None:
        """Connect to whatever the broker needs; raises if it cannot and `must_connect`."""

    async def stop(self) -> None:
        """Disconnect; nothing is published after this."""

    async def ready(self, channel: str, last_event_id: str | None = None) -> None:
        """Until this returns, `since`, `cursor` and `describe` may not know the channel (a broker
        that crosses processes loads it, and catches up with `last_event_id` if another process
        gave it out first): await it before a reader attaches."""

    def is_ready(self, channel: str) -> bool:
        """Whether `ready(channel)` would return at once."""

    def is_here(self, connection: str) -> bool:
        """Whether this process would hold the connection (if it is open at all)."""

    async def forward_message(self, connection: str, path: str, text: str, as_json: bool,
                              timeout: float) -> dict[str, Any]:
        """A client's message for a connection another process holds: `on_message` runs there."""

    on_message: Callable[[str, str, str, bool], Awaitable[dict[str, Any]]] | None

    @property
    def healthy(self) -> bool:
        """False while the broker cannot reach the other processes (this one still serves)."""

    @property
    def is_leader(self) -> bool:
        """Whether this process runs the scripts' cluster timers (their top-level timers)."""

    def describe_state(self) -> dict[str, Any]:
        """What /health and the admin API show of the broker."""

    def publish(self, channel: str, data: str, event: str | None = None, is_json: bool = False) -> None:
        """Number, frame and keep one message, and deliver it. `is_json`: `data` is a JSON value's text."""

    def send_to(self, connection: str, data: str, event: str | None = None, owner: str | None = None,
                is_json: bool = False) -> bool:
        """One message to one connection, wherever it is, if it reads a stream of `owner` (a script
        addresses only its own streams' connections); not numbered, not kept. False if none has it."""

    def close(self, connection: str, reason: str, owner: str | None = None) -> bool:
        """End one connection, wherever it is, with a `close` event saying why. False if none has it."""

    def since(self, channel: str, last_event_id: str | None) -> Replay:
        """What a reader resuming after `last_event_id` gets; a reset rather than an error for any id."""

    def cursor(self, channel: str) -> str:
        """An id meaning "after everything so far" (also before a channel's first event): resuming
        from it later gives what was published in between."""

    def unwatched(self, channel: str) -> None:
        """The last reader of `channel` here left (the channel itself may stay: a plain stream's does)."""

    def settle(self, channel: str) -> None:
        """Deliver now what the broker holds back for `channel` (to coalesce a burst): before a
        reader's replay is taken, and before a message to one of its readers, so order holds."""

    def forget(self, channel: str) -> None:
        """Drop the channel's history; an id from before can only ever be a reset from now on."""

    def describe(self, channel: str) -> tuple[int, str | None]:
        """Events in the channel's history, and its last event id (None before the first)."""
