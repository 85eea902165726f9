"""``Stores(conn)``: every store on one connection, for work that spans aggregates in one
transaction (the collector's reviews, a purge). Each store is built on first use."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Connection

from dockyard.meta.blobs import BlobStore
from dockyard.meta.manifests import ManifestStore
from dockyard.meta.orphans import OrphanScan
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.reviews import ReviewQueues
from dockyard.meta.runs import RunStore
from dockyard.meta.tags import TagStore
from dockyard.meta.tombstones import TombstoneStore
from dockyard.meta.trash import TrashStore
from dockyard.meta.uploads import UploadStore


class Stores:
    def __init__(self, conn: Connection):
        self.conn = conn

    @cached_property
    def blobs(self) -> BlobStore:
        return BlobStore(self.conn)

    @cached_property
    def manifests(self) -> ManifestStore:
        return ManifestStore(self.conn)

    @cached_property
    def repositories(self) -> RepositoryStore:
        return RepositoryStore(self.conn)

    @cached_property
    def tags(self) -> TagStore:
        return TagStore(self.conn)

    @cached_property
    def uploads(self) -> UploadStore:
        return UploadStore(self.conn)

    @cached_property
    def trash(self) -> TrashStore:
        return TrashStore(self.conn)

    @cached_property
    def reviews(self) -> ReviewQueues:
        return ReviewQueues(self.conn)

    @cached_property
    def tombstones(self) -> TombstoneStore:
        return TombstoneStore(self.conn)

    @cached_property
    def runs(self) -> RunStore:
        return RunStore(self.conn)

    @cached_property
    def orphans(self) -> OrphanScan:
        return OrphanScan(self.conn)
