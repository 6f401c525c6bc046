"""Prometheus metrics of the broker core, in a registry of its own (several brokers may share a process).

Record counts come from batch headers (recordsCount), never from decoding records.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BrokerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.bytes_in = Counter("tidelog_bytes_in", "Record batch bytes appended", ["topic"], registry=r)
        self.records_in = Counter("tidelog_records_in", "Records appended", ["topic"], registry=r)
        self.bytes_out = Counter("tidelog_bytes_out", "Record batch bytes served to consumers", ["topic"],
                                 registry=r)
        self.records_out = Counter("tidelog_records_out", "Records served to consumers", ["topic"], registry=r)
        self.request_errors = Counter("tidelog_request_errors", "Requests or partitions answered with an error",
                                      ["api", "error"], registry=r)
        self.latency = Histogram("tidelog_request_latency_seconds", "Broker-core request latency", ["api"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self._topic_children: dict[str, tuple] = {}
        self._latency_children: dict[str, object] = {}
        self._lock = threading.Lock()

    def _children(self, topic: str) -> tuple:
        children = self._topic_children.get(topic)
        if children is None:
            children = (self.bytes_in.labels(topic), self.records_in.labels(topic),
                        self.bytes_out.labels(topic), self.records_out.labels(topic))
            self._topic_children[topic] = children
        return children

    def record_in(self, topic: str, size: int, records: int) -> None:
        bytes_in, records_in, _, _ = self._children(topic)
        bytes_in.inc(size)
        records_in.inc(records)

    def record_out(self, topic: str, size: int, records: int) -> None:
        _, _, bytes_out, records_out = self._children(topic)
        bytes_out.inc(size)
        records_out.inc(records)

    def observe(self, api: str, seconds: float) -> None:
        child = self._latency_children.get(api)
        if child is None:
            child = self._latency_children[api] = self.latency.labels(api)
        child.observe(seconds)

    def error(self, api: str, error_name: str) -> None:
        self.request_errors.labels(api, error_name).inc()

    def forget_topic(self, topic: str) -> None:
        if self._topic_children.pop(topic, None) is not None:
            for metric in (self.bytes_in, self.records_in, self.bytes_out, self.records_out):
                try:
                    metric.remove(topic)
                except KeyError:
                    pass

    def register_log_collector(self, snapshot: Callable[[], Iterable[tuple[str, int, int, int, int, int]]]) -> None:
        """`snapshot()` yields (topic, partition, size_bytes, log_start, log_end, high_watermark); read at scrape."""
        self.registry.register(_LogCollector(snapshot))


class _LogCollector:
    def __init__(self, snapshot) -> None:
        self._snapshot = snapshot

    def describe(self):
        return []

    def collect(self):
        size = GaugeMetricFamily("tidelog_log_size_bytes", "Bytes on disk per partition log",
                                 labels=["topic", "partition"])
        start = GaugeMetricFamily("tidelog_log_start_offset", "Log start offset", labels=["topic", "partition"])
        end = GaugeMetricFamily("tidelog_log_end_offset", "Log end offset", labels=["topic", "partition"])
        hw = GaugeMetricFamily("tidelog_high_watermark", "High watermark", labels=["topic", "partition"])
        count = 0
        topics = set()
        for topic, partition, size_bytes, log_start, log_end, high_watermark in self._snapshot():
            labels = [topic, str(partition)]
            size.add_metric(labels, size_bytes)
            start.add_metric(labels, log_start)
            end.add_metric(labels, log_end)
            hw.add_metric(labels, high_watermark)
            count += 1
            topics.add(topic)
        partitions = GaugeMetricFamily("tidelog_partitions", "Partitions hosted by this broker", value=count)
        topic_count = GaugeMetricFamily("tidelog_topics", "Topics", value=len(topics))
        return [size, start, end, hw, partitions, topic_count]
