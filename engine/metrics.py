"""What `/metrics` shows, in Prometheus's text format, through prometheus-client.

The hot paths keep plain integers (the registry's `delivered`, `bytes_sent`, ...; each script's
`loads`): nothing on them takes a lock or looks up a label. A collector reads them, and the live
state (connections by transport and pattern, channels, the broker), when Prometheus scrapes. Script
calls are counted as they end, by outcome and into the buckets of a histogram of their durations,
in plain counts too.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from engine.broker.base import Broker
    from engine.graphql.subscriptions import SubscriptionHub
    from engine.scripts import ScriptManager
    from engine.streams.registry import StreamRegistry

PREFIX = "rtengine"
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every figure the engine exposes; one per app (the tests run many apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_errors: Tally[int] = Tally()  # error responses by status (503s among them)
        self.graphql: Tally[tuple[str, str]] = Tally()  # operations by (operation, transport)
        # Calls into scripts, the hottest figures: plain counts here, made into metrics when scraped
        # (prometheus-client's Counter and Histogram take a lock per increment, a few per call).
        self.calls: Tally[tuple[str, str, str]] = Tally()  # by (script, kind, outcome)
        self.call_seconds: dict[str, list[float]] = {}  # by script: a count per bucket, +Inf's, then the sum

    def observe_call(self, script: str, kind: str, outcome: str, seconds: float) -> None:
        self.calls[(script, kind, outcome)] += 1
        counts = self.call_seconds.get(script)
        if counts is None:
            counts = self.call_seconds[script] = [0] * (len(CALL_BUCKETS) + 2)
        counts[bisect_left(CALL_BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
        counts[-1] += seconds

    def watch(self, streams: StreamRegistry, hub: SubscriptionHub, scripts: ScriptManager, broker: Broker) -> None:
        """Read these when scraped."""
        self.registry.register(_State(self, streams, hub, scripts, broker))


class _State(Collector):
    def __init__(self, metrics: Metrics, streams: StreamRegistry, hub: SubscriptionHub, scripts: ScriptManager,
                 broker: Broker) -> None:
        self.m, self.streams, self.hub, self.scripts, self.broker = metrics, streams, hub, scripts, broker

    def collect(self) -> Iterator[Metric]:
        s = self.streams
        connections = GaugeMetricFamily(f"{PREFIX}_connections", "stream readers now, by transport and by the "
                                        "stream (path or pattern) they read", labels=["transport", "stream"])
        by: Tally[tuple[str, str]] = Tally()
        for stream in list(s.streams.values()):
            for channel in list(stream.channels.values()):
                for fmt, group in channel.groups.items():
                    by[(fmt, stream.path)] += len(group)
        for (fmt, path), n in sorted(by.items()):
            connections.add_metric([fmt, path], n)
        yield connections
        yield _gauge("channels", "channels open now (plain streams and the live paths of patterns)", len(s.channels))
        yield _gauge("graphql_subscriptions", "GraphQL subscriptions now (SSE and WebSocket)", self.hub.count)
        yield _counter("channel_messages", "messages delivered to channels of this process", s.messages)
        yield _counter("events_delivered", "events written to readers (one per reader per event)", s.delivered)
        yield _counter("stream_bytes_sent", "bytes of events written to readers", s.bytes_sent)
        yield _counter("stream_writes", "writes to readers (fewer than events when a burst is coalesced)", s.writes)
        yield _counter("slow_consumers_cut", "readers and subscribers cut off for falling behind "
                       "(streams.max_buffer_bytes)", s.slow_cut + self.hub.slow_cut)
        calls = CounterMetricFamily(f"{PREFIX}_script_calls", "calls into scripts, by script, kind and outcome",
                                    labels=["script", "kind", "outcome"])
        for key, n in sorted(self.m.calls.items()):
            calls.add_metric(list(key), n)
        yield calls
        seconds = HistogramMetricFamily(f"{PREFIX}_script_call_seconds", "how long calls into scripts took, "
                                        "Promise included", labels=["script"])
        for script, counts in sorted(self.m.call_seconds.items()):
            cumulative = list(accumulate(counts[:-1]))
            buckets = [(floatToGoString(b), n) for b, n in zip((*CALL_BUCKETS, math.inf), cumulative, strict=True)]
            seconds.add_metric([script], buckets, counts[-1])
        yield seconds
        errors = CounterMetricFamily(f"{PREFIX}_http_errors", "error responses, by status (503: full or busy)",
                                     labels=["status"])
        for status, n in sorted(self.m.http_errors.items()):
            errors.add_metric([str(status)], n)
        yield errors
        loads = CounterMetricFamily(f"{PREFIX}_script_loads", "script loads and reloads, by script and result",
                                    labels=["script", "result"])
        failing = GaugeMetricFamily(f"{PREFIX}_script_failing", "1 while a script's latest save did not load",
                                    labels=["script"])
        for name, record in sorted(self.scripts.records.items()):
            loads.add_metric([name, "loaded"], record.loads)
            loads.add_metric([name, "failed"], record.failures)
            failing.add_metric([name], int(record.latest_failed))
        yield loads
        yield failing
        ops = CounterMetricFamily(f"{PREFIX}_graphql_operations", "GraphQL operations, by operation and transport",
                                  labels=["operation", "transport"])
        for (operation, transport), n in sorted(self.m.graphql.items()):
            ops.add_metric([operation, transport], n)
        yield ops
        state: dict[str, Any] = self.broker.describe_state()
        broker = GaugeMetricFamily(f"{PREFIX}_broker_up", "1 while the broker reaches every process (always, "
                                   "for the memory broker)", labels=["kind"])
        broker.add_metric([str(state.get("kind"))], int(self.broker.healthy))
        yield broker
        yield _gauge("broker_runs_cluster_timers", "1 if this process runs the scripts' top-level timers",
                     int(self.broker.is_leader))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)
