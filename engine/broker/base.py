"""What every broker does, whichever runs: the registry and the transports know only this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Deliver = Callable[[str, bytes], None]  # a channel's path, and one event framed for the wire


@dataclass(frozen=True)
class Replay:
    """What a (re)connecting reader gets before live events: a reset notice, then history."""

    reset: str | None  # why the given id could not be resumed from, or None
    events: list[bytes]


class Broker(Protocol):
    """Numbers each message in its channel, keeps the channel's history, hands the framed event to
    every registry that subscribed (every node's, with a broker that crosses processes)."""

    def subscribe(self, deliver: Deliver) -> None:
        """`deliver` gets every event published from now on."""

    def publish(self, channel: str, data: str, event: str | None = None) -> None:
        """Number, frame and keep one message, and deliver it."""

    def since(self, channel: str, last_event_id: str | None) -> Replay:
        """What a reader resuming after `last_event_id` gets; a reset rather than an error for any id."""

    def forget(self, channel: str) -> None:
        """Drop the channel's history; an id from before can only ever be a reset from now on."""

    def describe(self, channel: str) -> tuple[int, str | None]:
        """Events in the channel's history, and its last event id (None before the first)."""
