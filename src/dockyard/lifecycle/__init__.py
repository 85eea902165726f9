"""The lifecycle engine: every feature that frees space feeds one reclamation pipeline.

``purge``      removes a manifest's row and enqueues reviews of what it referenced
``collector``  the online garbage collector: review queues -> tombstones -> storage deletes
``deleter``    the worker pool and rate limit for storage deletes
``ratelimit``  a limiter that never exceeds N operations in any 1-second window
``fsck``       the only code that walks storage: leaks and missing data
``runner``     loops a job with jitter and backoff (serve's background, --daemon)
``report``     per-kind counts and bytes of a run

Storage deletes happen only here, and only for keys that hold a tombstone.
"""
