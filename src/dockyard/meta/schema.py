"""The tables (SQLAlchemy Core). Times are UNIX seconds (float) from the injected clock.

Row states, for the lifecycle engine
------------------------------------
``manifests.state``
    ``active``          visible: pullable by digest, listed in tags/referrers.
    ``pending_delete``  deleted by a client or a policy: every read answers 404 and it
                        leaves tags lists, catalog and referrers, but its row, payload,
                        ``manifest_references`` and so its blobs are kept. ``deleted_at``,
                        ``deleted_by`` and ``scrub_after`` (= deleted_at + scrub_time) are set;
                        the tags it had are in ``tag_history`` (action ``delete``, same time).
                        A push of the same digest to the same repository makes it active
                        again. The scrubber purges it once ``scrub_after`` has passed.
``tags``
    A row is a live tag. Every move, creation and deletion appends to ``tag_history``.
``repository_blobs``
    A layer link: the repository may read that blob. DELETE of a blob removes the link only.
``repositories.deleted_at``
    Set by the admin repository delete: the repository leaves the catalog, its tags go
    (into ``tag_history``) and all its manifests become ``pending_delete``; its links stay
    until the collector reclaims them. A push to the name revives it.
``uploads``
    An upload session; its staged data is at ``storage.paths.upload_key(id)``.

Nothing in a request deletes storage data; the blobs of deleted content stay until the
reclamation pipeline (``lifecycle``) collects them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

ACTIVE = "active"
PENDING_DELETE = "pending_delete"
# blobs.state: a blob row is written as "committing" before its data is moved into place
# and turns "ready" after; only ready blobs are visible, and the collector skips the others.
READY = "ready"
COMMITTING = "committing"

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("deleted_at", Float, nullable=True),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", String(150), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("state", String(12), nullable=False, server_default=READY),
)

repository_blobs = Table(
    "repository_blobs",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(150), ForeignKey("blobs.digest"), primary_key=True),
    Column("created_at", Float, nullable=False),
    Index("ix_repository_blobs_digest", "digest"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("digest", String(150), nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("artifact_type", String(255), nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("subject_digest", String(150), nullable=True),
    Column("annotations", Text, nullable=True),
    Column("state", String(16), nullable=False, default=ACTIVE),
    Column("created_at", Float, nullable=False),
    Column("pushed_at", Float, nullable=False),
    Column("deleted_at", Float, nullable=True),
    Column("deleted_by", String(255), nullable=True),
    Column("scrub_after", Float, nullable=True),
    Column("last_pulled_at", Float, nullable=True),
    UniqueConstraint("repository_id", "digest", name="uq_manifests_repository_digest"),
    Index("ix_manifests_subject", "repository_id", "subject_digest"),
    Index("ix_manifests_state_scrub", "state", "scrub_after"),
    Index("ix_manifests_repository_state", "repository_id", "state"),
    Index("ix_manifests_digest", "digest"),
)

# What a manifest references: kind "blob" (config, layers) or "manifest" (children of an index).
manifest_references = Table(
    "manifest_references",
    metadata,
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("digest", String(150), primary_key=True),
    # the manifest's repository, copied: "is D needed in R" is one index search
    Column("repository_id", Integer, nullable=True),
    Index("ix_manifest_references_digest", "digest", "kind"),
    Index("ix_manifest_references_repository", "repository_id", "digest", "kind"),
)

tags = Table(
    "tags",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("manifest_id", Integer, ForeignKey("manifests.id"), nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_tags_manifest", "manifest_id"),
)

tag_history = Table(
    "tag_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("manifest_digest", String(150), nullable=False),
    Column("action", String(16), nullable=False),  # push | move | delete
    Column("at", Float, nullable=False),
    Column("actor", String(255), nullable=True),
    Index("ix_tag_history_repo_tag", "repository_id", "tag", "at"),
)

# The trash of tags: a tag removed by a delete (of the tag, or of its manifest) is kept
# here until scrub_after, so ``restore`` can put it back. ``with_manifest`` marks the
# tags a manifest delete took along (restored with the manifest).
trashed_tags = Table(
    "trashed_tags",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    Column("with_manifest", Integer, nullable=False, default=0),
    Column("deleted_at", Float, nullable=False),
    Column("deleted_by", String(255), nullable=True),
    Column("scrub_after", Float, nullable=False),
    Index("ix_trashed_tags_repo_tag", "repository_id", "tag"),
    Index("ix_trashed_tags_manifest", "manifest_id"),
    Index("ix_trashed_tags_scrub", "scrub_after"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("size", BigInteger, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # the one request writing to the session now (a random token) and until when its claim holds
    Column("writer", String(32), nullable=True),
    Column("writer_until", Float, nullable=True),
    Index("ix_uploads_updated", "updated_at"),
    Index("ix_uploads_repository", "repository_id"),
)


# ---- the reclamation pipeline (lifecycle/gc) ---------------------------------
# A review entry says "this object may have lost its last reference; look again after
# review_after". Entries are written in the transaction that removed the reference.

gc_blob_reviews = Table(
    "gc_blob_reviews",
    metadata,
    Column("digest", String(150), primary_key=True),
    Column("review_after", Float, nullable=False),
    Column("reason", String(32), nullable=False),
    Index("ix_gc_blob_reviews_due", "review_after"),
)

gc_link_reviews = Table(
    "gc_link_reviews",
    metadata,
    Column("repository_id", Integer, primary_key=True),
    Column("digest", String(150), primary_key=True),
    Column("review_after", Float, nullable=False),
    Column("reason", String(32), nullable=False),
    Index("ix_gc_link_reviews_due", "review_after"),
)

gc_manifest_reviews = Table(
    "gc_manifest_reviews",
    metadata,
    Column("manifest_id", Integer, primary_key=True),
    Column("review_after", Float, nullable=False),
    Column("reason", String(32), nullable=False),
    Index("ix_gc_manifest_reviews_due", "review_after"),
)

gc_repository_reviews = Table(
    "gc_repository_reviews",
    metadata,
    Column("repository_id", Integer, primary_key=True),
    Column("review_after", Float, nullable=False),
    Index("ix_gc_repository_reviews_due", "review_after"),
)

# Data whose row is gone and whose storage delete is owed. Written in the transaction
# that removed the row; dropped once the data is deleted. A push of the same digest
# waits while one exists, so data a new push needs is never deleted under it.
gc_tombstones = Table(
    "gc_tombstones",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("kind", String(16), nullable=False),  # blob | upload
    Column("digest", String(150), nullable=True),
    Column("size", BigInteger, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Index("ix_gc_tombstones_due", "next_attempt_at"),
    Index("ix_gc_tombstones_digest", "digest"),
)

gc_runs = Table(
    "gc_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(32), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    Column("dry_run", Integer, nullable=False, default=0),
    Column("host", String(255), nullable=True),
    Column("report", Text, nullable=False),
    Index("ix_gc_runs_job_started", "job", "started_at"),
)


# ---- retention ------------------------------------------------------------------
# Policies declared through the admin API (the configuration file declares others).
retention_policies = Table(
    "retention_policies",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("body", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(255), nullable=True),
)

# Every prune run: who, when, which policy, what was deleted. Never trimmed.
prune_audit = Table(
    "prune_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(255), nullable=True),
    Column("policy", String(128), nullable=False),
    Column("confirmed", Integer, nullable=False),
    Column("summary", Text, nullable=False),
    Column("deleted", Text, nullable=False),
    Index("ix_prune_audit_at", "at"),
)


# Leases: a singleton job (a scheduled prune) runs in one replica at a time. A replica
# that dies stops renewing its lease, and another takes over once it has expired.
leases = Table(
    "leases",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", Float, nullable=False),
)


# ---- usage (the dashboard) --------------------------------------------------------
# Storage used over time: one row per sample of the usage job; only the newest are kept.
usage_samples = Table(
    "usage_samples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("blobs", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("logical_bytes", BigInteger, nullable=False),  # sum over repositories of their linked bytes
    Column("repositories", Integer, nullable=False),
    Column("manifests", BigInteger, nullable=False),
    Index("ix_usage_samples_at", "at"),
)

# Per repository, as of the last sample: what the repositories page sorts by.
repository_usage = Table(
    "repository_usage",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("bytes", BigInteger, nullable=False),
    Column("images", Integer, nullable=False),
    Column("tags", Integer, nullable=False),
    Column("last_push", Float, nullable=True),
    Column("last_pull", Float, nullable=True),
    Column("sampled_at", Float, nullable=False),
    Index("ix_repository_usage_bytes", "bytes"),
    Index("ix_repository_usage_images", "images"),
    Index("ix_repository_usage_last_push", "last_push"),
)

# ---- events (the outbox) and notification endpoints ------------------------------------
# Every change writes its event here in its own transaction. ``txid`` (PostgreSQL: the
# writing transaction's id; SQLite: 0) orders delivery with ``id``: an endpoint's cursor
# advances over (txid, id) and only past transactions older than every running one, so an
# event committed late by a transaction that began early is never skipped.
event_outbox = Table(
    "event_outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("txid", BigInteger, nullable=False, default=0),
    Column("at", Float, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("repository", String(255), nullable=True),
    Column("actor", String(255), nullable=True),
    Column("payload", Text, nullable=False),
    Index("ix_event_outbox_order", "txid", "id"),
)

# One row per notification endpoint: how far it got (a cursor over the outbox), its retry
# state, and which replica delivers to it now (a lease, claimed with SKIP LOCKED).
event_endpoints = Table(
    "event_endpoints",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("last_txid", BigInteger, nullable=False, default=0),
    Column("last_id", BigInteger, nullable=False, default=0),
    Column("delivered", BigInteger, nullable=False, default=0),
    Column("dropped", BigInteger, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("last_delivered_at", Float, nullable=True),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", Float, nullable=True),
)

# Storage quotas: those declared through the admin API (the configuration file declares
# others), and the bytes each quota's namespace holds (a blob counted once per namespace).
quotas = Table(
    "quotas",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("repositories", String(255), nullable=False),
    Column("hard", BigInteger, nullable=False),
    Column("soft", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(255), nullable=True),
)

quota_usage = Table(
    "quota_usage",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("repositories", String(255), nullable=False),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("updated_at", Float, nullable=False),
)

# ---- hosts (issue 12) -----------------------------------------------------------
# Compute hosts running ``dockyard agent``: their credential (a token, stored hashed),
# heartbeat and the images they hold. ``state``: active or revoked.
hosts = Table(
    "hosts",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("token_hash", String(64), nullable=True),
    Column("state", String(16), nullable=False),
    Column("address", String(255), nullable=True),
    Column("version", String(64), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=True),
)

# What each host holds, as its last inventory said (one row per host and image digest).
# ``managed``: pulled through ``dockyard image pull --host``; only an explicit delete removes it.
host_images = Table(
    "host_images",
    metadata,
    Column("host", String(255), ForeignKey("hosts.name", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(150), primary_key=True),
    Column("repository", String(255), nullable=False),
    Column("tag", String(128), nullable=True),
    Column("managed", Integer, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("pulled_at", Float, nullable=True),
    Column("last_used", Float, nullable=True),
    Column("containers", Text, nullable=False, default="[]"),
    Index("ix_host_images_repo_digest", "repository", "digest"),
)

# Work for a host (pull or delete), taken by its agent when it polls; a row leaves only
# when the host confirms success; a failure stays with its error.
host_work = Table(
    "host_work",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(255), ForeignKey("hosts.name", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("repository", String(255), nullable=False),
    Column("reference", String(150), nullable=False),
    Column("state", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("actor", String(255), nullable=True),
    Index("ix_host_work_host_state", "host", "state", "id"),
)

# Replicas whose blob cache an admin call fans out to (issue 11): each `dockyard serve` with a
# cache registers the address the others can call it at and renews `seen_at`.
cache_replicas = Table(
    "cache_replicas",
    metadata,
    Column("address", String(500), primary_key=True),
    Column("seen_at", Float, nullable=False),
    Column("stats", Text, nullable=True),  # JSON: the cache's entries, bytes, hits, misses (dashboard)
)
