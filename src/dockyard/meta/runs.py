"""RunStore: the history of job runs (collection, scrub), bounded per job."""

from __future__ import annotations

import json

from sqlalchemy import Connection, delete, select

from dockyard.meta.schema import gc_runs


class RunStore:
    """Recorded runs of each job, newest first."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def record(self, job: str, started: float, finished: float, dry_run: bool, host: str,
               report: dict, keep: int = 500) -> None:
        """Record a run; only the newest ``keep`` runs of each job are kept, so a daemon
        that runs for weeks does not grow the table."""
        self.conn.execute(gc_runs.insert().values(job=job, started_at=started, finished_at=finished,
                                                  dry_run=int(dry_run), host=host, report=json.dumps(report)))
        cutoff = self.conn.execute(select(gc_runs.c.id).where(gc_runs.c.job == job)
                                   .order_by(gc_runs.c.id.desc()).offset(keep).limit(1)).scalar()
        if cutoff is not None:
            self.conn.execute(delete(gc_runs).where(gc_runs.c.job == job, gc_runs.c.id <= cutoff))

    def recent(self, job: str, limit: int = 10) -> list[dict]:
        """The last ``limit`` runs in the order they were recorded (finished), newest first: a long
        run that started early must not hide behind the short ones that started after it."""
        rows = self.conn.execute(select(gc_runs).where(gc_runs.c.job == job)
                                 .order_by(gc_runs.c.id.desc()).limit(limit))
        return [{"id": r.id, "job": r.job, "started_at": r.started_at, "finished_at": r.finished_at,
                 "dry_run": bool(r.dry_run), "host": r.host, "report": json.loads(r.report)} for r in rows]
