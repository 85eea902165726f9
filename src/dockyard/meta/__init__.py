"""Metadata: the engine, the schema, migrations and the stores. The only place with SQL.

``db``          engine set-up, transactions (``Database.write()`` / ``read()``), migrations
``schema``      the tables, and the states rows can be in
``repositories``, ``blobs``, ``manifests``, ``tags``, ``uploads``: one store per aggregate;
a store takes a connection inside a transaction, never commits, returns dataclasses.
"""
