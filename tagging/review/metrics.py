"""The review app's Prometheus metrics (`GET /metrics`), read from the store at each scrape.

Counts and ages only: no product id, no reviewer name, no photo, so the endpoint needs no
identity (a scraper has no sign-in) and leaks nothing about the catalogue or the people.
Every app instance reports the same shared store, so the figures are store-wide (take one
instance's, or `max`, not the sum).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tagging.review.store import ReviewStore

NAMES = ("tagging_review_queue_length", "tagging_review_claimed",
         "tagging_review_oldest_open_seconds", "tagging_review_answers_per_hour",
         "tagging_review_answers_total")


class StoreCollector(Collector):
    """The store's vitals as Prometheus metrics."""

    def __init__(self, store: ReviewStore):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        vitals = self.store.vitals()
        yield GaugeMetricFamily("tagging_review_queue_length", "Photos waiting for a reviewer.",
                                value=vitals["queue"])
        yield GaugeMetricFamily("tagging_review_claimed",
                                "Photos on a reviewer's screen now (leased).",
                                value=vitals["claimed"])
        yield GaugeMetricFamily("tagging_review_oldest_open_seconds",
                                "Age of the oldest waiting photo (0 when none waits).",
                                value=vitals["oldest_open_s"] or 0.0)
        yield GaugeMetricFamily("tagging_review_answers_per_hour",
                                "Answers given in the last hour (retracted ones not counted).",
                                value=vitals["answers_last_hour"])
        yield CounterMetricFamily("tagging_review_answers",
                                  "Answers ever given (append-only; retractions do not lower it).",
                                  value=vitals["answers_total"])


def registry_of(store: ReviewStore) -> CollectorRegistry:
    """An app's own registry (not the process-wide one: two apps in one process, as in the
    tests, would clash), holding the store's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry
