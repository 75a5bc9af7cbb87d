"""What every broker does, whichever runs: the registry and the transports know only this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.streams.event import Event


@dataclass(frozen=True)
class Replay:
    """What a (re)connecting reader gets before live events: a reset notice, then history."""

    reset: str | None  # why the given id could not be resumed from, or None
    events: list[Event]


class Node(Protocol):
    """A registry of readers (one per engine process): where the broker hands what it numbered."""

    def deliver(self, path: str, event: Event) -> None:
        """One event of channel `path` for every reader of it here."""

    def deliver_to(self, connection: str, event: Event, owner: str | None = None) -> bool:
        """One event for one reader, if it is here and on a stream of `owner` (any, if None): True."""

    def close_connection(self, connection: str, event: Event, reason: str, owner: str | None = None) -> bool:
        """A last event for one reader, then its end, if it is here and on a stream of `owner`: True."""


class Broker(Protocol):
    """Numbers each message in its channel, keeps the channel's history, hands the framed event to
    every node that subscribed (every process's, with a broker that crosses processes)."""

    def subscribe(self, node: Node) -> None:
        """`node` gets every event published from now on."""

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

    def forget(self, channel: str) -> None:
        """Drop the channel's history; an id from before can only ever be a reset from now on."""

    def describe(self, channel: str) -> tuple[int, str | None]:
        """Events in the channel's history, and its last event id (None before the first)."""
