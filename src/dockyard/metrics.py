"""Prometheus metrics (prometheus_client), passed in, never global.

``Metrics`` is the one API the code uses: ``inc``, ``set``, ``observe`` and ``get``, each by
metric name with labels. Every metric has an entry in :data:`HELP` (its type, help text and,
for a histogram, its buckets); a metric is created on first use with the label names of that
first call, and every later call must use the same label names.

Processes. ``dockyard serve`` with one worker keeps the values in memory, in a
``CollectorRegistry`` of its own. With ``--workers N``, ``serve`` creates an empty directory
and names it in ``PROMETHEUS_MULTIPROC_DIR`` before the workers start (:func:`prepare_multiprocess`);
prometheus_client then keeps every value of every worker in memory-mapped files there
(multiprocess mode), and a scrape in any worker, or on ``metrics_listen`` in the parent,
adds them up: one registry for the whole server, whichever worker answers. A worker that
died leaves its counters and histograms (totals never go down) while its live gauges
(``livesum``, e.g. requests in flight) are dropped (``mark_process_dead``) at the next scrape.
Within one process in that mode, every ``Metrics`` shares the same metric objects (values
are cached per object, so two objects for one series would overwrite each other's counts).

Scrape-time collectors (:meth:`Metrics.add_collector`) compute values when scraped, e.g.
storage usage from the database, and are asked by whichever process answers the scrape.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# seconds: HTTP requests (prometheus_client's default buckets reach 10 s; blob transfers take longer)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
RUN_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0)

# name -> (type, help[, labels[, buckets]]); gauges are "gauge" (the most recently set value
# wins across workers) or "gauge:livesum" (summed over live processes, dropped when one dies)
HELP: dict[str, tuple] = {
    # HTTP (api/requestlog.py); route is the route template, e.g. /v2/{name}/blobs/{digest}
    "dockyard_http_requests_total": ("counter", "HTTP requests answered, by method, route template and status",
                                     ("method", "route", "status")),
    "dockyard_http_request_duration_seconds": ("histogram", "time from a request's arrival to its last byte",
                                               ("method", "route", "status"), REQUEST_BUCKETS),
    "dockyard_http_received_bytes_total": ("counter", "request body bytes received, by method and route template",
                                           ("method", "route")),
    "dockyard_http_sent_bytes_total": ("counter", "response body bytes sent, by method and route template",
                                       ("method", "route")),
    "dockyard_http_requests_in_flight": ("gauge:livesum", "requests being answered now"),
    # the collector (lifecycle/collector.py)
    "dockyard_gc_reclaimed_objects_total": ("counter", "objects the collector reclaimed, by kind"),
    "dockyard_gc_reclaimed_bytes_total": ("counter", "bytes the collector reclaimed, by kind"),
    "dockyard_gc_failures_total": ("counter", "failed storage deletes, by kind (retried with backoff)"),
    "dockyard_gc_backlog": ("gauge", "review queue entries, by queue and whether they are due (at the last run)"),
    "dockyard_gc_runs_total": ("counter", "collector runs"),
    "dockyard_mirror_fetches_total": ("counter", "successful upstream fetches of the mirror, by upstream and kind"),
    "dockyard_mirror_fetched_bytes_total": ("counter", "bytes fetched from upstreams, by upstream and kind"),
    "dockyard_mirror_failures_total": ("counter", "failed upstream fetches (unreachable, refused, lying), by upstream and kind"),
    "dockyard_mirror_evictions_total": ("counter", "mirrored images evicted, by reason (bound, prune, evict)"),
    "dockyard_mirror_evicted_bytes_total": ("counter", "bytes of mirrored images evicted, by reason"),
    "dockyard_gc_run_seconds": ("histogram", "duration of collector runs", (), RUN_BUCKETS),
    # the scrubber (lifecycle/scrubber.py)
    "dockyard_scrub_images_total": ("counter", "trashed images the scrubber purged"),
    "dockyard_scrub_runs_total": ("counter", "scrubber runs"),
    # computed at scrape time from the database (registry/usage.py), cached
    "dockyard_storage_blobs": ("gauge", "blobs stored (each once for the whole registry)"),
    "dockyard_storage_bytes": ("gauge", "bytes of the blobs stored"),
    "dockyard_repositories": ("gauge", "live repositories"),
    "dockyard_repository_bytes": ("gauge", "bytes of the blobs linked to a repository, for the largest repositories "
                                           "(shared blobs count in each)", ("repository",)),
    "dockyard_upload_sessions": ("gauge", "open upload sessions"),
    "dockyard_upload_session_bytes": ("gauge", "bytes staged by open upload sessions"),
    "dockyard_events_delivered_total": ("counter", "events delivered, by notification endpoint"),
    "dockyard_events_delivery_failures_total": ("counter", "failed event deliveries (retried with backoff), by endpoint"),
    "dockyard_events_dropped_total": ("counter", "undelivered events dropped by the outbox bound (events_max), by endpoint"),
    "dockyard_quota_denied_total": ("counter", "pushes refused by a hard quota, by quota"),
    "dockyard_host_images": ("gauge", "images a host holds, by host (its last inventory)"),
    "dockyard_host_work_total": ("counter", "host work confirmed, by kind (pull, delete) and result"),
    "dockyard_cache_hits_total": ("counter", "blob reads served from this replica's cache"),
    "dockyard_cache_misses_total": ("counter", "blob reads the cache did not hold"),
    "dockyard_cache_served_bytes_total": ("counter", "blob bytes served, by source (cache or backend)"),
    "dockyard_cache_evictions_total": ("counter", "cache entries evicted, by reason (fill, prune, delete, clear, invalid)"),
    "dockyard_cache_evicted_bytes_total": ("counter", "bytes evicted from the cache, by reason"),
    "dockyard_cache_size_bytes": ("gauge", "bytes the cache holds or has reserved for fills"),
    "dockyard_cache_entries": ("gauge", "cache entries (every state)"),
    "dockyard_cache_prefetch_queue": ("gauge", "prefetch targets queued"),
    "dockyard_cache_verify_failures_total": ("counter", "fills whose bytes failed digest or size verification"),
    "dockyard_cache_uncached_total": ("counter", "misses served without caching, by reason (full, busy, too_large)"),
}

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SHARED: dict[str, object] = {}  # one metric object per name in a multiprocess-mode process
_SHARED_LOCK = threading.Lock()


def prepare_multiprocess(directory: str | os.PathLike) -> str:
    """Make ``directory`` the (empty) multiprocess directory of this process and of every
    process it starts afterwards. Call before the worker processes start."""
    path = os.fspath(directory)
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)
    os.environ[MULTIPROC_ENV] = path
    return path


def sweep_dead_processes(directory: str) -> list[int]:
    """``mark_process_dead`` for every process that left files in ``directory`` and is gone."""
    dead = set()
    for path in glob.glob(os.path.join(directory, "*_*.db")):
        pid = os.path.basename(path).rsplit("_", 1)[-1][:-3]
        if pid.isdigit() and int(pid) not in dead and not process_alive(int(pid)):
            dead.add(int(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)
    return sorted(dead)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _spec(name: str, kind_hint: str, labels: Iterable[str]) -> tuple[str, str, tuple, tuple | None]:
    """(kind, help, label names, buckets) of ``name``; a name missing from HELP gets the kind its
    first use implies (tests/unit/test_metrics.py checks that the code's names are all in HELP)."""
    entry = HELP.get(name)
    if entry is None:
        return kind_hint, name.replace("_", " "), tuple(sorted(labels)), None
    kind, text = entry[0], entry[1]
    names = tuple(entry[2]) if len(entry) > 2 and entry[2] else tuple(sorted(labels))
    return kind, text, names, (entry[3] if len(entry) > 3 else None)


class Metrics:
    """The metrics of one process (or, in multiprocess mode, its share of the server's)."""

    def __init__(self) -> None:
        disable_created_metrics()  # no NAME_created series: they double the series and no dashboard reads them
        self.directory = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry(auto_describe=False)
        self._metrics: dict[str, object] = _SHARED if self.directory else {}
        self._lock = _SHARED_LOCK if self.directory else threading.Lock()
        self._collectors: list = []

    # ---- recording ---------------------------------------------------------
    def _metric(self, name: str, kind_hint: str, labels: dict):
        metric = self._metrics.get(name)
        if metric is not None:
            return metric
        with self._lock:
            metric = self._metrics.get(name)
            if metric is not None:
                return metric
            if not _NAME.fullmatch(name):
                raise ValueError(f"invalid metric name {name!r}")
            kind, text, names, buckets = _spec(name, kind_hint, labels)
            registry = None if self.directory else self.registry
            if kind == "counter":
                metric = Counter(name, text, names, registry=registry)
            elif kind.startswith("gauge"):
                mode = kind.partition(":")[2] or "mostrecent"
                metric = Gauge(name, text, names, registry=registry, multiprocess_mode=mode)
            elif kind == "histogram":
                metric = Histogram(name, text, names, registry=registry,
                                   **({"buckets": buckets} if buckets else {}))
            else:
                raise ValueError(f"metric {name}: unknown type {kind!r}")
            self._metrics[name] = metric
            return metric

    @staticmethod
    def _child(metric, labels: dict):
        return metric.labels(**labels) if labels else metric

    def child(self, name: str, kind_hint: str, **labels: str):
        """The sample of ``name`` with these label values, to record into directly (``.inc``,
        ``.observe``, ``.set``): a caller that records the same series over and over (the
        request log, per route) keeps it and skips the name and label lookups of :meth:`inc`."""
        return self._child(self._metric(name, kind_hint, labels), labels)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to a counter (never negative) or a gauge (either sign)."""
        self._child(self._metric(name, "counter" if name.endswith("_total") else "gauge", labels), labels).inc(value)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._child(self._metric(name, "gauge", labels), labels).set(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._child(self._metric(name, "histogram", labels), labels).observe(value)

    def get(self, name: str, **labels: str) -> float:
        """This process's value of a sample: a counter or gauge by its name, a histogram's
        ``NAME_count`` / ``NAME_sum``; 0 when never recorded."""
        base = name
        metric = self._metrics.get(name)
        if metric is None:
            for suffix in ("_count", "_sum", "_bucket"):
                if name.endswith(suffix) and name[: -len(suffix)] in self._metrics:
                    base = name[: -len(suffix)]
                    metric = self._metrics[base]
        if metric is None:
            return 0.0
        wanted = {k: str(v) for k, v in labels.items()}
        for family in metric.collect():
            for sample in family.samples:
                if sample.name == name and {k: v for k, v in sample.labels.items() if k != "le"} == wanted:
                    return float(sample.value)
        return 0.0

    # ---- scraping ----------------------------------------------------------
    def add_collector(self, collector) -> None:
        """A scrape-time collector (an object with ``collect()`` yielding metric families)."""
        self._collectors.append(collector)

    def collect(self):
        """Every metric family of a scrape: the process's (or all workers') values, then the
        scrape-time collectors'."""
        if self.directory:
            sweep_dead_processes(self.directory)
            source = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(source, self.directory)
        else:
            source = self.registry
        yield from source.collect()
        for collector in self._collectors:
            yield from collector.collect()

    def render(self) -> bytes:
        """The Prometheus text exposition of :meth:`collect`."""
        return generate_latest(self)
