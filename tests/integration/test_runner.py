"""The runner (backoff, gates) and database leases, on both databases; the rate limiter."""


from dockyard.clock import FakeClock
from dockyard.lifecycle.ratelimit import WindowLimiter
from dockyard.lifecycle.runner import Runner, lease_gate
from dockyard.meta.leases import LeaseStore


def test_lease_is_exclusive_until_it_expires(reg):
    with reg.db.write() as conn:
        leases = LeaseStore(conn)
        assert leases.acquire("job", "a", 100.0, 10)
        assert leases.acquire("job", "a", 105.0, 10)  # renew
        assert not leases.acquire("job", "b", 110.0, 10)
        assert leases.acquire("job", "b", 115.1, 10)  # a died: its lease ran out
        assert not leases.acquire("job", "a", 116.0, 10)


def test_only_one_replica_runs_a_singleton_job(reg):
    clock = FakeClock(1000.0)
    runs = []

    class Job:
        job = "x"

        def __init__(self, who):
            self.who = who

        def run(self):
            runs.append(self.who)

    gates = {who: lease_gate(reg.db, "prune:nightly", 60, clock) for who in ("r1", "r2", "r3")}
    runners = {who: Runner(who, lambda w=who: Job(w), 30, gate=gates[who]) for who in gates}
    for _ in range(3):
        for r in runners.values():
            r.run_cycle()
        clock.advance(30)
    assert len(set(runs)) == 1 and len(runs) == 3
    holder = runs[0]
    clock.advance(61)  # the holder stops renewing (it died)
    for who, r in runners.items():
        if who != holder:
            r.run_cycle()
    assert len(set(runs[3:])) == 1 and runs[3] != holder


def test_runner_backs_off_after_failures_and_recovers():
    calls = []

    class Flaky:
        job = "flaky"

        def run(self):
            calls.append(1)
            if len(calls) <= 3:
                raise RuntimeError("storage down")

    r = Runner("flaky", Flaky, 10, jitter=0)
    delays = []
    for _ in range(5):
        r.run_cycle()
        delays.append(r.next_delay())
    assert delays[:3] == [20, 40, 80] and delays[3] == 10 and r.failures == 0


def test_rate_limit_holds_in_every_one_second_window():
    t = [0.0]
    stamps = []
    limiter = WindowLimiter(7, clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s))
    for _ in range(100):
        limiter.acquire()
        stamps.append(t[0])
        t[0] += 0.01
    for i, start in enumerate(stamps):
        assert sum(1 for s in stamps[i:] if s < start + 1.0) <= 7
    assert stamps[-1] < 15  # and it does not starve either


def test_every_scheduled_job_returns_one_shape(reg):
    """One job shape (issue 15): whatever the scheduler runs returns a RunResult: a job name,
    dry run or not, a duration, a JSON form and a table."""
    import json

    from dockyard.lifecycle.scheduler import scheduled_jobs

    runners = scheduled_jobs(reg)
    assert {r.name for r in runners} >= {"gc", "scrub", "pulls"}
    for runner in runners:
        result = runner.make_job().run()
        assert isinstance(result.job, str) and isinstance(result.dry_run, bool), runner.name
        assert result.duration >= 0 and isinstance(result.table(), str), runner.name
        json.dumps(result.as_dict())
