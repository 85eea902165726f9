"""The per-replica read-through blob cache (issue 11): the cache itself (blobcache), what an
operator does to it (maintenance), the durable prefetch queue (prefetch) and the background jobs
``dockyard serve`` runs for it (jobs). Its index is a SQLite file in ``cache_dir``
(meta/cacheindex.py), the one source of truth of what is cached."""
