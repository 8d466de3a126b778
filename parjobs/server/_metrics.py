"""``GET /metrics``: the Prometheus text format, read from the store and the manager at
scrape time.

Nothing is counted on the jobs' hot path: a scrape runs one grouped SQL query (jobs, items
and bytes done, items failed per type, queue and status), reads the managers table, and asks
this manager for its live figures (`JobManager.statistics`, its thread lanes). The duration
histograms come from the job transitions the event hub sees anyway. A custom collector turns
that snapshot into metric families, so the prometheus-client library does the formatting.

Counters summed from the store (``parjobs_tasks_done_total`` ...) go down when jobs are
deleted; Prometheus treats that as a counter reset, which is what it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .. import JobManager
from .._histogram import CHECKPOINT_SECONDS, TASK_SECONDS, Histogram
from ._events import EventHub
from ._reader import StoreReader

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclasses.dataclass(frozen=True, slots=True)
class Scrape:
    """Everything one scrape reports, gathered before formatting."""

    stats: list[tuple[str, str, str, int, int, int, int]]
    managers: list[dict[str, Any]]
    manager: JobManager
    hub: EventHub


async def gather(manager: JobManager, reader: StoreReader, hub: EventHub) -> Scrape:
    """Read the state a scrape reports (store queries in the reader's thread)."""
    stats = await reader.call(lambda s: s.job_stats())
    managers = await reader.call(lambda s: s.managers())
    return Scrape(stats, managers, manager, hub)


def render(scrape: Scrape) -> bytes:
    """The scrape in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(scrape))
    return generate_latest(registry)


class _Collector(Collector):
    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[Metric]:
        s = self.scrape
        jobs = GaugeMetricFamily(
            "parjobs_jobs",
            "Jobs in the store by type, queue and status",
            labels=["type", "queue", "status"],
        )
        tasks = CounterMetricFamily(
            "parjobs_tasks_done", "Checkpointed tasks done, all jobs in the store", labels=["type"]
        )
        data = CounterMetricFamily(
            "parjobs_bytes_done",
            "Bytes of checkpointed tasks, all jobs in the store",
            labels=["type"],
        )
        failed = CounterMetricFamily(
            "parjobs_items_failed", "Failed items recorded, all jobs in the store", labels=["type"]
        )
        per_type: dict[str, list[int]] = {}
        for job_type, queue, status, count, done, nbytes, nfailed in s.stats:
            jobs.add_metric([job_type, queue, status], count)
            sums = per_type.setdefault(job_type, [0, 0, 0])
            sums[0] += done
            sums[1] += nbytes
            sums[2] += nfailed
        for job_type, (done, nbytes, nfailed) in sorted(per_type.items()):
            tasks.add_metric([job_type], done)
            data.add_metric([job_type], nbytes)
            failed.add_metric([job_type], nfailed)
        yield from (jobs, tasks, data, failed)

        stats = s.manager.statistics()
        yield GaugeMetricFamily(
            "parjobs_manager_jobs_running", "Jobs running in this manager", value=stats.running
        )
        yield GaugeMetricFamily(
            "parjobs_manager_jobs_queued", "Jobs queued in this manager", value=stats.queued
        )
        running = GaugeMetricFamily(
            "parjobs_queue_running", "Jobs running in this manager per queue", labels=["queue"]
        )
        capacity = GaugeMetricFamily(
            "parjobs_queue_capacity", "Capacity of each queue in this manager", labels=["queue"]
        )
        for queue, (now_running, cap) in sorted(stats.queues.items()):
            running.add_metric([queue], now_running)
            capacity.add_metric([queue], cap)
        yield from (running, capacity)
        busy = GaugeMetricFamily(
            "parjobs_workers_busy", "Worker threads busy per lane (this manager)", labels=["lane"]
        )
        threads = GaugeMetricFamily(
            "parjobs_workers", "Worker thread limit per lane (this manager)", labels=["lane"]
        )
        for lane, limiter in sorted(s.manager.lanes.items()):
            busy.add_metric([lane], limiter.borrowed_tokens)
            threads.add_metric([lane], limiter.total_tokens)
        yield from (busy, threads)
        yield CounterMetricFamily(
            "parjobs_manager_tasks_finished",
            "Tasks finished by runs that ended in this manager since it opened",
            value=stats.tasks_finished,
        )
        yield CounterMetricFamily(
            "parjobs_manager_bytes_processed",
            "Bytes processed by runs that ended in this manager since it opened",
            value=stats.bytes_processed,
        )
        yield GaugeMetricFamily(
            "parjobs_manager_tasks_per_second",
            "Current task throughput of this manager's running jobs",
            value=stats.tasks_per_second,
        )
        yield GaugeMetricFamily(
            "parjobs_manager_bytes_per_second",
            "Current byte throughput of this manager's running jobs",
            value=stats.bytes_per_second,
        )
        alive = GaugeMetricFamily(
            "parjobs_managers", "Managers registered in the store", labels=["alive"]
        )
        alive.add_metric(["true"], sum(1 for m in s.managers if m["alive"]))
        alive.add_metric(["false"], sum(1 for m in s.managers if not m["alive"]))
        yield alive
        age = GaugeMetricFamily(
            "parjobs_manager_heartbeat_age_seconds",
            "Seconds since each manager's last heartbeat",
            labels=["manager", "host", "pid"],
        )
        for m in s.managers:
            age.add_metric([m["id"], m["host"], str(m["pid"])], m["heartbeat_age"])
        yield age
        yield _histogram(
            "parjobs_job_run_seconds",
            "Running time of jobs that ended while this server watched",
            s.hub.job_seconds,
        )
        yield _histogram(
            "parjobs_job_queue_wait_seconds",
            "Seconds from submission to first start, jobs started while this server watched",
            s.hub.queue_wait_seconds,
        )
        yield _histogram(
            "parjobs_task_seconds",
            "How long tasks ran, from start to outcome (the jobs this server's process runs)",
            TASK_SECONDS,
        )
        yield _histogram(
            "parjobs_checkpoint_seconds",
            "How long checkpoint writes took (the jobs this server's process runs)",
            CHECKPOINT_SECONDS,
        )
        yield GaugeMetricFamily(
            "parjobs_event_clients",
            "Connected event-stream clients",
            value=len(s.hub.subscriptions),
        )
        yield CounterMetricFamily(
            "parjobs_events_dropped",
            "Events dropped for clients that did not read them in time",
            value=s.hub.dropped_total,
        )


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    buckets = [
        ("+Inf" if bound == float("inf") else repr(float(bound)), count)
        for bound, count in zip(hist.bounds, hist.counts, strict=True)
    ]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.sum)
