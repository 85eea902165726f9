"""Settings: defaults, then a TOML file (``--config``), then ``DOCKYARD_*`` environment.

Every setting is one :class:`Setting` in :data:`SETTINGS`; setting ``gc_delay`` is
read from the TOML key ``gc_delay`` and the variable ``DOCKYARD_GC_DELAY``. The
help text of ``dockyard serve --help`` is generated from the same table, so the
documentation cannot drift from the code.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from dockyard.access import Access, parse_groups, parse_rules
from dockyard.policies import parse_policies
from dockyard.events import parse_notifications
from dockyard.quotas import parse_quotas
from dockyard.values import ConfigError, parse_bool, parse_duration, parse_size  # noqa: F401 (the settings API)

ENV_PREFIX = "DOCKYARD_"
ROLES = ("pull", "push", "admin")

def parse_roles(value: Any) -> dict[str, str]:
    """``{"alice": "admin"}`` from TOML, or ``"alice=admin,bob=pull"`` from the environment."""
    if isinstance(value, Mapping):
        pairs = dict(value)
    else:
        pairs = {}
        for item in str(value).split(","):
            if item.strip():
                user, sep, role = item.partition("=")
                if not sep:
                    raise ConfigError(f"invalid role assignment {item!r} (use user=role)")
                pairs[user.strip()] = role.strip()
    for user, role in pairs.items():
        if role not in ROLES:
            raise ConfigError(f"user {user!r}: unknown role {role!r} (one of {', '.join(ROLES)})")
    return pairs


def parse_role(value: Any) -> str:
    text = str(value).strip()
    if text not in ROLES + ("none", ""):
        raise ConfigError(f"unknown role {text!r}")
    return text


def _policies(value: Any) -> dict:
    return parse_policies(value)


def parse_mirrors(value: Any) -> dict[str, dict]:
    """``[mirrors.NAME]`` tables (``prefix``, ``url``, optional ``username``/``password``), or JSON
    text from the environment: each maps a repository prefix to an upstream registry."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ConfigError(f"mirrors must be JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise ConfigError("mirrors must map names to [mirrors.NAME] tables")
    out: dict[str, dict] = {}
    for name, doc in value.items():
        if not isinstance(doc, Mapping):
            raise ConfigError(f"mirrors.{name} must be a table")
        unknown = set(doc) - {"prefix", "url", "username", "password"}
        if unknown:
            raise ConfigError(f"mirrors.{name}: unknown keys {', '.join(sorted(unknown))}")
        prefix = str(doc.get("prefix", ""))
        try:
            url = parse_public_url(doc.get("url", ""))
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"mirrors.{name}: url must be http(s)://HOST[:PORT], got {doc.get('url')!r}") from exc
        if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*/", prefix):
            raise ConfigError(f"mirrors.{name}: prefix must be a repository path ending in '/', got {prefix!r}")
        if not url:
            raise ConfigError(f"mirrors.{name}: url is required (http(s)://HOST[:PORT])")
        clash = [n for n, o in out.items() if o["prefix"].startswith(prefix) or prefix.startswith(o["prefix"])]
        if clash:
            raise ConfigError(f"mirrors.{name}: prefix {prefix!r} overlaps mirrors.{clash[0]}")
        out[str(name)] = {"prefix": prefix, "url": url, "username": str(doc.get("username", "")),
                          "password": str(doc.get("password", ""))}
    return out


def _list(value: Any) -> tuple:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"expected a list of strings, got {value!r}")


def parse_public_url(value: Any) -> str:
    """``https://registry.example.com[:port][/prefix]``; trailing slash dropped; empty = unset."""
    from urllib.parse import urlsplit

    text = str(value).strip().rstrip("/")
    if not text:
        return ""
    parts = urlsplit(text)
    parts.port  # raises ValueError on a port that is not a number in 0..65535
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or parts.username or parts.password:
        raise ConfigError(f"public_url must be http(s)://HOST[:PORT][/PATH], got {value!r}")
    return text


def parse_networks(value: Any) -> tuple:
    """Addresses or CIDRs (``10.0.0.1``, ``10.0.0.0/8``, ``fd00::/8``), as a list or comma-separated."""
    import ipaddress

    items = _list(value)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{item!r} is not an IP address or CIDR network") from exc
    return items


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port): port 1-65535, an IPv6 address in brackets (``[::1]:5000``)."""
    import ipaddress

    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"listen must be HOST:PORT, got {value!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"port must be a number from 1 to 65535, got {port!r} in {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ConfigError(f"{host!r} in brackets is not an IPv6 address") from exc
    elif ":" in host:
        raise ConfigError(f"an IPv6 address goes in brackets, e.g. [::1]:5000, got {value!r}")
    elif not _HOSTNAME.fullmatch(host) or (re.fullmatch(r"[0-9.]+", host) and not _is_ipv4(host)):
        raise ConfigError(f"{host!r} is not an IP address or host name (in {value!r})")
    return host, int(port)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")


LOG_FORMATS = ("text", "json")


def parse_choice(value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"{value!r} is not one of {', '.join(choices)}")
    return text


def parse_workers(value: Any) -> int:
    n = int(value)
    if n < 0:
        raise ConfigError(f"workers must be 0 (one per core) or more, got {value!r}")
    return n


def cpu_count() -> int:
    """The cores this process may be scheduled on (its affinity mask, not the whole machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_log_level(value: Any) -> str:
    text = str(value).strip().lower()
    text = "warning" if text == "warn" else text
    if text not in LOG_LEVELS:
        raise ConfigError(f"unknown log level {value!r} (one of {', '.join(LOG_LEVELS)})")
    return text


def parse_database_url(value: Any) -> str:
    """Empty (SQLite in data_dir), ``sqlite:///PATH`` or ``postgresql://...``."""
    text = str(value).strip()
    scheme = text.partition("://")[0].lower() if "://" in text else "(none)"
    if text and scheme not in DATABASE_SCHEMES:
        raise ConfigError(f"unsupported database URL scheme {scheme!r} "
                          f"(use postgresql://HOST/DB, sqlite:///PATH, or leave it empty for SQLite in data_dir)")
    return text


def _is_ipv4(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def parse_listen(value: Any) -> str:
    split_listen(value)
    return str(value).strip()


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "./dockyard-data", str, "directory for the embedded database and filesystem storage"),
    Setting("listen", "127.0.0.1:5000", parse_listen, "HOST:PORT the HTTP API listens on ([::1]:5000 for IPv6)"),
    Setting("database_url", "", parse_database_url, "SQLAlchemy URL; empty = SQLite file in data_dir (e.g. postgresql://127.0.0.1/test)"),
    Setting("storage", "filesystem", str, "storage driver: filesystem or s3"),
    Setting("s3_endpoint_url", "", str, "S3 endpoint URL (empty = AWS); credentials from the usual AWS chain"),
    Setting("s3_bucket", "", str, "S3 bucket"),
    Setting("s3_prefix", "", str, "key prefix inside the bucket"),
    Setting("s3_region", "", str, "S3 region"),
    Setting("s3_path_style", False, parse_bool, "path-style addressing (most S3-compatible stores want it)"),
    Setting("s3_redirect", False, parse_bool, "answer blob downloads with a redirect to a presigned URL"),
    Setting("s3_redirect_ttl", 600.0, parse_duration, "lifetime of presigned download URLs"),
    Setting("storage_root", "", str, "filesystem driver root; empty = data_dir/storage"),
    Setting("storage_latency", 0.0, parse_duration, "added to every storage call, to mimic an object store (benchmarks; e.g. 20ms)"),
    Setting("workers", 0, lambda v: parse_workers(v), "HTTP worker processes; 0 = one per CPU core this process may use"),
    Setting("log_level", "info", parse_log_level, "debug, info, warning or error"),
    Setting("log_format", "text", lambda v: parse_choice(v, LOG_FORMATS), "text (key=value) or json (one object per line)"),
    Setting("delayed_delete", True, parse_bool, "deletes move images to the trash (restorable until scrub_time) instead of purging them"),
    Setting("scrub_time", 7 * 86400.0, parse_duration, "how long a deleted image stays restorable before it may be purged"),
    Setting("scrub_enabled", True, parse_bool, "run the scrubber in the background of dockyard serve"),
    Setting("wakeup_time", 300.0, parse_duration, "pause between scrubber runs (with jitter)"),
    Setting("scrub_pool_size", 4, int, "parallel storage deletes of the scrubber"),
    Setting("gc_enabled", True, parse_bool, "run the collector in the background of dockyard serve"),
    Setting("gc_interval", 30.0, parse_duration, "pause between background collections when idle (with jitter)"),
    Setting("gc_delay", 3600.0, parse_duration, "grace before an object that lost its last reference is reviewed; also protects fresh uploads"),
    Setting("gc_workers", 4, int, "parallel storage deletes of the collector"),
    Setting("gc_max_deletes_per_second", 0.0, float, "rate limit of storage deletes (0 = unlimited)"),
    Setting("gc_batch_size", 200, int, "review entries a collector transaction takes"),
    Setting("upload_ttl", 86400.0, parse_duration, "upload sessions idle longer than this are reclaimed"),
    Setting("delete_untagged", False, parse_bool, "collect manifests that have no tag (never children of a live index)"),
    Setting("referrers_follow_subject", True, parse_bool, "collect referrers once their subject is gone"),
    Setting("fsck_grace", 3600.0, parse_duration, "fsck leaves storage objects younger than this alone"),
    Setting("disk_reserve", 64 * 1024 * 1024, parse_size, "disk space kept in data_dir and released when the disk fills, so deletes and collection can still run (0 = none)"),
    Setting("retention", {}, lambda v: _policies(v), "retention policies (TOML [retention.NAME] tables, or JSON in the environment)"),
    Setting("immutable_tags", (), lambda v: _list(v), "REPO_GLOB:TAG_GLOB patterns no policy, delete or push may touch"),
    Setting("pull_flush_interval", 10.0, parse_duration, "how often recorded pull times are written to the database"),
    Setting("usage_sample_interval", 300.0, parse_duration, "how often storage usage is sampled for the dashboard (0 = never)"),
    Setting("usage_samples_kept", 4032, int, "usage samples kept (the newest; 4032 = two weeks at 5 min)"),
    Setting("auth_htpasswd", "", str, "htpasswd file (bcrypt) that turns on authentication"),
    Setting("auth_roles", {}, parse_roles, "role of each user: pull, push or admin (TOML table, or env user=role,...)"),
    Setting("auth_default_role", "", parse_role, "role of an authenticated user not named in auth_roles; empty = push without access rules, none with them"),
    Setting("anonymous_role", "", parse_role, "role of unauthenticated requests; empty = admin without auth_htpasswd, none with it"),
    Setting("token_secret", "", str, "HMAC secret for bearer tokens; empty = generated once into data_dir (replicas must share one)"),
    Setting("token_ttl", 300.0, parse_duration, "lifetime of a bearer token"),
    Setting("public_url", "", parse_public_url, "external base URL (e.g. https://registry.example.com); the auth realm and absolute URLs use it"),
    Setting("trusted_proxies", (), parse_networks, "addresses/CIDRs of reverse proxies whose X-Forwarded-For/-Proto/-Host are believed"),
    Setting("tls_cert", "", str, "PEM certificate (chain) to serve HTTPS with; needs tls_key"),
    Setting("tls_key", "", str, "PEM private key of tls_cert"),
    Setting("tls_client_ca", "", str, "PEM CA bundle: clients must present a certificate it signed (mutual TLS)"),
    Setting("mirrors", {}, parse_mirrors, "pull-through mirrors: [mirrors.NAME] prefix, url, username, password (JSON in the environment)"),
    Setting("mirror_manifest_ttl", 300.0, parse_duration, "a mirrored tag is revalidated with its upstream after this long (by digest: never)"),
    Setting("mirror_max_size", 0, parse_size, "bound of mirrored content; least recently pulled images are evicted above it (0 = unbounded)"),
    Setting("mirror_prefetch_blobs", False, parse_bool, "when a mirrored image manifest is fetched, fetch its blobs into the store at once (a client's request follows the fetch in flight)"),
    Setting("mirror_prefetch_workers", 4, int, "blobs the prefetch fetches at a time, for the whole process"),
    Setting("metrics_listen", "", lambda v: parse_listen(v) if str(v).strip() else "",
            "HOST:PORT of a second listener that serves only /metrics, without credentials (empty = off; "
            "on listen, /metrics needs the pull role)"),
    Setting("groups", {}, parse_groups, "user groups for access rules (TOML [groups] table: name = [users]; JSON in the environment)"),
    Setting("access", (), parse_rules, "access rules: a role on repository globs for users/groups (TOML [[access]] tables; JSON in the environment)"),
    Setting("notifications", {}, lambda v: parse_notifications(v), "event endpoints (TOML [notifications.NAME] tables: url, events, secret, timeout; or JSON)"),
    Setting("notifications_interval", 1.0, parse_duration, "how often each endpoint's deliverer looks for new events"),
    Setting("notifications_backoff_max", 300.0, parse_duration, "longest pause between retries of a failing endpoint (exponential from 0.5s)"),
    Setting("events_max", 100000, int, "events kept in the outbox; undelivered ones beyond it are dropped, counted and logged"),
    Setting("quotas", {}, lambda v: parse_quotas(v), "storage quotas (TOML [quotas.NAME] tables: repositories, hard, soft; or JSON)"),
    Setting("host_down_after", 60.0, parse_duration, "a host (dockyard agent) not heard from for this long shows as down"),
    Setting("cache_dir", "", str, "per-replica blob cache (storage = s3); empty = data_dir/cache"),
    Setting("cache_max_size", 10 * 1024 ** 3, parse_size, "most bytes the blob cache holds (0 = no cache)"),
    Setting("cache_high_watermark", 0.9, float, "scheduled prune starts above this fraction of cache_max_size"),
    Setting("cache_low_watermark", 0.8, float, "prune evicts least recently used entries down to this fraction"),
    Setting("cache_stall_time", 3600.0, parse_duration, "clean removes incomplete cache entries older than this"),
    Setting("cache_clean_interval", 600.0, parse_duration, "pause between background cache cleans (with jitter)"),
    Setting("cache_prune_interval", 60.0, parse_duration, "pause between background cache prunes (with jitter)"),
    Setting("cache_prefetch_interval", 10.0, parse_duration, "pause between runs of the prefetch queue when idle"),
    Setting("cache_prefetch_workers", 4, int, "blobs prefetched at the same time"),
    Setting("cache_prefetch_platforms", ("linux/amd64",), lambda v: _list(v), "platforms an index's prefetch brings (os/arch[/variant])"),
    Setting("cache_advertise_url", "", str, "URL other replicas call this replica's cache admin API at; empty = http://listen"),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass
class Config:
    data_dir: str = "./dockyard-data"
    listen: str = "127.0.0.1:5000"
    database_url: str = ""
    storage: str = "filesystem"
    storage_root: str = ""
    s3_endpoint_url: str = ""
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_region: str = ""
    s3_path_style: bool = False
    s3_redirect: bool = False
    s3_redirect_ttl: float = 600.0
    storage_latency: float = 0.0
    workers: int = 0
    log_level: str = "info"
    log_format: str = "text"
    delayed_delete: bool = True
    scrub_time: float = 7 * 86400.0
    scrub_enabled: bool = True
    wakeup_time: float = 300.0
    scrub_pool_size: int = 4
    gc_enabled: bool = True
    gc_interval: float = 30.0
    gc_delay: float = 3600.0
    gc_workers: int = 4
    gc_max_deletes_per_second: float = 0.0
    gc_batch_size: int = 200
    upload_ttl: float = 86400.0
    delete_untagged: bool = False
    referrers_follow_subject: bool = True
    fsck_grace: float = 3600.0
    disk_reserve: int = 64 * 1024 * 1024
    retention: dict = field(default_factory=dict)
    immutable_tags: tuple = ()
    pull_flush_interval: float = 10.0
    usage_sample_interval: float = 300.0
    usage_samples_kept: int = 4032
    auth_htpasswd: str = ""
    auth_roles: dict[str, str] = field(default_factory=dict)
    auth_default_role: str = ""
    anonymous_role: str = ""
    token_secret: str = ""
    token_ttl: float = 300.0
    public_url: str = ""
    trusted_proxies: tuple = ()
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    mirrors: dict = field(default_factory=dict)
    mirror_manifest_ttl: float = 300.0
    mirror_max_size: int = 0
    mirror_prefetch_blobs: bool = False
    mirror_prefetch_workers: int = 4
    metrics_listen: str = ""
    groups: dict = field(default_factory=dict)
    access: tuple = ()
    notifications: dict = field(default_factory=dict)
    notifications_interval: float = 1.0
    notifications_backoff_max: float = 300.0
    events_max: int = 100000
    quotas: dict = field(default_factory=dict)
    host_down_after: float = 60.0
    cache_dir: str = ""
    cache_max_size: int = 10 * 1024 ** 3
    cache_high_watermark: float = 0.9
    cache_low_watermark: float = 0.8
    cache_stall_time: float = 3600.0
    cache_clean_interval: float = 600.0
    cache_prune_interval: float = 60.0
    cache_prefetch_interval: float = 10.0
    cache_prefetch_workers: int = 4
    cache_prefetch_platforms: tuple = ("linux/amd64",)
    cache_advertise_url: str = ""

    # ---- derived values -------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{self.data_path / 'dockyard.db'}"

    @property
    def effective_storage_root(self) -> Path:
        return Path(self.storage_root).expanduser().resolve() if self.storage_root else self.data_path / "storage"

    @property
    def effective_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser().resolve() if self.cache_dir else self.data_path / "cache"

    @property
    def cache_enabled(self) -> bool:
        """The blob cache sits in front of an object store only (a filesystem needs none)."""
        return self.storage == "s3" and self.cache_max_size > 0

    @property
    def effective_anonymous_role(self) -> str:
        if self.anonymous_role:
            return self.anonymous_role
        return "none" if self.auth_htpasswd else "admin"

    @property
    def effective_default_role(self) -> str:
        if self.auth_default_role:
            return self.auth_default_role
        return "none" if self.access else "push"

    @property
    def access_policy(self) -> Access:
        """Global roles and access rules together: who may do what on which repository."""
        return Access(self.auth_roles, self.effective_default_role, self.effective_anonymous_role,
                      self.groups, self.access)

    @property
    def effective_workers(self) -> int:
        """``workers``, with 0 meaning one per CPU core this process may run on."""
        return self.workers or cpu_count()

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)


def load(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Defaults <- TOML file <- environment <- explicit overrides (command-line flags)."""
    return from_values(gather(path, env, **overrides))


def gather(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
           **overrides: Any) -> dict[str, Any]:
    """The settings as written (TOML values, environment text, flags), merged but not parsed:
    the one form every setting round-trips through JSON in (see :func:`dumps`)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if path:
        import tomllib  # only with a settings file (a command without one skips its import)

        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        unknown = set(doc) - set(_BY_NAME)
        if unknown:
            raise ConfigError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
        values.update(doc)
    for setting in SETTINGS:
        key = ENV_PREFIX + setting.name.upper()
        if key in env:
            values[setting.name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def from_values(values: Mapping[str, Any]) -> Config:
    """Parse and validate settings as :func:`gather` returns them."""
    unknown = set(values) - set(_BY_NAME)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    parsed: dict[str, Any] = {}
    for name, raw in values.items():
        setting = _BY_NAME[name]
        try:
            parsed[name] = setting.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"setting {name}: {exc}") from exc
    cfg = Config(**parsed)
    cfg.host_port  # validate early
    cfg.access_policy  # access rules name only groups that exist
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("tls_cert and tls_key go together: set both (HTTPS) or neither")
    if cfg.tls_client_ca and not cfg.tls_cert:
        raise ConfigError("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS first)")
    if not 0 < cfg.cache_low_watermark <= cfg.cache_high_watermark <= 1:
        raise ConfigError("cache watermarks need 0 < cache_low_watermark <= cache_high_watermark <= 1")
    return cfg


def dumps(values: Mapping[str, Any]) -> str:
    """The whole configuration as one JSON text, for worker processes (``dockyard serve
    --workers N``): :func:`loads` gives every worker the Config the parent parsed, with no
    per-setting encoding (TOML dates, the only non-JSON values, are no setting's type)."""
    return json.dumps(dict(values), default=str)


def loads(text: str) -> Config:
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"settings are not JSON: {exc}") from exc
    return from_values(values)


def describe() -> str:
    """The settings table for ``--help``."""
    from dockyard.values import format_duration, format_size

    lines = ["settings (TOML key / environment variable, default; durations take a unit: 90s, 15m, 1h, 7d, 2w):"]
    for s in SETTINGS:
        default = s.default if s.default not in ("", {}, ()) else "(empty)"
        if s.parse is parse_duration:
            default = format_duration(s.default)
        elif s.parse is parse_size:
            default = format_size(s.default)
        elif isinstance(s.default, bool):
            default = str(s.default).lower()  # as TOML writes it
        lines.append(f"  {s.name} / {ENV_PREFIX}{s.name.upper()} [{default}]\n      {s.help}")
    return "\n".join(lines)


assert {f.name for f in fields(Config)} == set(_BY_NAME), "Config and SETTINGS must list the same settings"
