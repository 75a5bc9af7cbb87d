"""Where a script's messages go once the sandbox has read and checked them: to the broker (a
channel's readers, on every node), to GraphQL subscribers, to one connection.

Each is checked again here against what exists now (a stream may have gone since JS looked), and
what cannot be done is said in the sender's log, never dropped in silence.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from engine.broker.base import Broker
from engine.graphql.schema import SUBSCRIPTION_STREAM, GraphQLRegistry
from engine.graphql.subscriptions import SubscriptionHub
from engine.sandbox.applier import Steps
from engine.sandbox.commands import Close, Send, SendSubscription, SendTo
from engine.streams.registry import Channel, StreamRegistry, TooManyChannels

ScriptLine = Callable[[str, str, str], None]  # (script, level, message): a line in the script's log

MESSAGES = (Send, SendSubscription, SendTo, Close)
Message = Send | SendSubscription | SendTo | Close


class Outbox:
    def __init__(self, streams: StreamRegistry, broker: Broker, graphql: GraphQLRegistry,
                 subscriptions: SubscriptionHub, script_line: ScriptLine) -> None:
        self.streams = streams
        self.broker = broker
        self.graphql = graphql
        self.subscriptions = subscriptions
        self.script_line = script_line

    def apply(self, script: str, command: Message) -> Steps:
        """One message, a step per channel, so the applier can hand the loop to others between any two."""
        if isinstance(command, Send):
            yield from self._send(script, command)
        elif isinstance(command, SendSubscription):
            yield from self._send_subscription(script, command)
        elif isinstance(command, SendTo):
            if not self.broker.send_to(command.connection, command.data, command.event, script, command.json):
                self.script_line(script, "warning", f"sendToConnection: no connection {command.connection} of this "
                                 "script's streams is open (it ended); the message was not sent")
        elif not self.broker.close(command.connection, command.reason, script):
            self.script_line(script, "warning", f"closeConnection: no connection {command.connection} of this "
                             "script's streams is open (it ended already)")

    def _send(self, script: str, command: Send) -> Steps:
        for channel in self._channels(script, command.paths):
            if self.streams.live(channel):  # a channel freed between two steps is not written to
                self.broker.publish(channel.path, command.data, command.event, command.json)
            yield None

    def _channels(self, script: str, paths: tuple[str, ...] | None) -> Iterator[Channel]:
        """The channels a send reaches, found one path at a time (the send yields between them): for
        each path, every channel of the stream registered at it, else the channel at it, made if need
        be. A path no stream has is skipped; one whose channel cannot be made is said in the log."""
        if paths is None:
            yield from self.streams.broadcast_channels()
            return
        for path in paths:
            stream = self.streams.streams.get(path)
            if stream is not None:
                yield from list(stream.channels.values())
                continue
            try:
                channel = self.streams.open(path)
            except TooManyChannels as e:
                self.script_line(script, "error", f"a message to {path} was not sent: {e}")
                continue
            if channel is not None:
                yield channel

    def _send_subscription(self, script: str, command: SendSubscription) -> Steps:
        """sendSubscriptionMessage: to the field's subscribers, and as sent to its plain stream."""
        name, text = command.name, command.data
        try:
            value = json.loads(text) if command.json else text
        except (ValueError, RecursionError):
            self.script_line(script, "error", f"sendSubscriptionMessage({name!r}): the message is nested too deeply")
            return
        yield from self.subscriptions.publish(self.graphql.schema, name, value)
        if SUBSCRIPTION_STREAM + name in self.streams.streams:
            self.broker.publish(SUBSCRIPTION_STREAM + name, text, None, command.json)
