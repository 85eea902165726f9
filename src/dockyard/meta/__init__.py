"""Metadata: the engine, the schema, migrations and the stores. The only place with SQL.

``db``          engine set-up, transactions (``Database.write()`` / ``read()``), migrations
``schema``      the tables, and the states rows can be in
``repositories``, ``blobs``, ``manifests``, ``tags``, ``uploads``, ``trash``, ``retention``,
``leases``: one store per aggregate; ``reviews`` (the review queues), ``tombstones``, ``runs``
(job history) and ``orphans`` (fsck's invariant pages) for the reclamation pipeline. A store
takes a connection inside a transaction, never commits, returns dataclasses or plain values;
``stores.Stores(conn)`` opens every store on one connection.
"""
