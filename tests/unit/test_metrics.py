"""dockyard.metrics: names, types and the inc/set/observe/get API (one process)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dockyard.metrics import HELP, Metrics

ROOT = Path(__file__).resolve().parents[2]
USE = re.compile(r"metrics\.(inc|set|observe)\(\s*\"(\w+)\"")


def test_every_metric_the_code_records_is_declared_with_a_fitting_type():
    used = {}
    for path in (ROOT / "src" / "dockyard").rglob("*.py"):
        for how, name in USE.findall(path.read_text()):
            used.setdefault(name, set()).add(how)
    assert len(used) >= 10, used
    missing = sorted(set(used) - set(HELP))
    assert not missing, f"add a HELP entry (type and help text) for {missing}"
    for name, hows in used.items():
        kind = HELP[name][0].partition(":")[0]
        assert hows <= {"counter": {"inc"}, "gauge": {"inc", "set"}, "histogram": {"observe"}}[kind], (name, hows)
    for name, entry in HELP.items():
        assert name.startswith("dockyard_")
        assert (entry[0] == "counter") == name.endswith("_total"), name  # counters, and only they, end in _total
        assert entry[0].partition(":")[0] in ("counter", "gauge", "histogram"), name


def test_inc_set_observe_get_and_the_exposition():
    m = Metrics()
    m.inc("dockyard_gc_reclaimed_objects_total", 3, kind="blobs")
    m.inc("dockyard_gc_reclaimed_objects_total", kind="blobs")
    m.set("dockyard_gc_backlog", 7, queue="links", state="due")
    m.observe("dockyard_gc_run_seconds", 0.25)
    m.observe("dockyard_gc_run_seconds", 0.75)
    assert m.get("dockyard_gc_reclaimed_objects_total", kind="blobs") == 4
    assert m.get("dockyard_gc_reclaimed_objects_total", kind="links") == 0
    assert m.get("dockyard_gc_backlog", queue="links", state="due") == 7
    assert m.get("dockyard_gc_run_seconds_count") == 2 and m.get("dockyard_gc_run_seconds_sum") == 1.0
    assert m.get("dockyard_never_recorded_total") == 0
    with pytest.raises(ValueError):
        m.inc("dockyard_gc_reclaimed_objects_total", -1, kind="blobs")  # counters only go up
    found = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert found["dockyard_gc_reclaimed_objects"].type == "counter"
    assert found["dockyard_gc_backlog"].type == "gauge"
    assert found["dockyard_gc_run_seconds"].type == "histogram"
    assert not any(n.endswith("_created") for f in found.values() for n in (s.name for s in f.samples))
    assert Metrics().get("dockyard_gc_reclaimed_objects_total", kind="blobs") == 0  # one process: one per Metrics


def test_dashboard_queries_only_declared_metrics():
    doc = json.loads((ROOT / "deploy" / "grafana" / "dockyard.json").read_text())
    families = set()
    for name, entry in HELP.items():
        families |= {name} | ({name + s for s in ("_bucket", "_count", "_sum")} if entry[0] == "histogram" else set())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bdockyard_[a-z_]+\b", e)}
    assert len(exprs) >= 15 and not used - families, sorted(used - families)


def test_usage_is_cached_and_a_failing_database_does_not_fail_the_scrape(tmp_path):
    import sqlalchemy as sa

    from dockyard.meta.db import Database
    from dockyard.meta.schema import blobs
    from dockyard.registry.usage import UsageCollector

    db = Database(f"sqlite:///{tmp_path / 'usage.db'}")
    db.migrate()
    m = Metrics()
    m.add_collector(UsageCollector(db, totals_ttl=3600))
    values = lambda: {s.name: s.value for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}
    assert values()["dockyard_storage_blobs"] == 0
    with db.write() as conn:
        conn.execute(sa.insert(blobs), [{"digest": "sha256:" + "a" * 64, "size": 5, "created_at": 0.0, "state": "ready"}])
    assert values()["dockyard_storage_blobs"] == 0  # cached: one read per TTL, whatever the scrape rate
    fresh = Metrics()
    fresh.add_collector(UsageCollector(db))
    got = {s.name: s.value for f in text_string_to_metric_families(fresh.render().decode()) for s in f.samples}
    assert got["dockyard_storage_blobs"] == 1 and got["dockyard_storage_bytes"] == 5

    down = Metrics()
    down.add_collector(UsageCollector(Database("postgresql+psycopg://127.0.0.1:1/none?connect_timeout=2")))
    down.inc("dockyard_gc_runs_total")
    text = down.render().decode()  # the rest of the scrape still answers
    assert "dockyard_gc_runs_total 1.0" in text and "dockyard_storage_blobs" not in text
