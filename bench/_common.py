"""Helpers shared by the benchmarks in bench/: free ports, server processes, CPU accounting.

Everything here listens on / talks to 127.0.0.1 only. A :class:`ServerProcess` remembers
the ids of the processes it started (the server and any workers it forked) and stops
exactly those, never anything found by name.
"""

from __future__ import annotations

import http.client
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

HOST = "127.0.0.1"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---- /proc accounting -----------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces; it ends at the last ')'
    return raw[raw.rindex(")") + 2:].split()


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (by parent id in /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (dead ones count as 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _CLK_TCK


def system_busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy (not idle, not iowait) since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return 0.0
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return (total - fields[3] - fields[4]) / _CLK_TCK


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores the whole machine keeps busy on average over the next ``seconds``."""
    b0 = system_busy_seconds()
    time.sleep(seconds)
    return (system_busy_seconds() - b0) / seconds


class CpuMeter:
    """Measures CPU use of this process, of a server's process tree and of the whole machine."""

    def __init__(self, server: "ServerProcess | None" = None):
        self.server = server

    def __enter__(self) -> "CpuMeter":
        self._pids = self.server.tree() if self.server else []
        self._wall = time.perf_counter()
        self._client = time.process_time()
        self._server = cpu_seconds(self._pids)
        self._system = system_busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.client_cpu = time.process_time() - self._client
        self.server_cpu = cpu_seconds(self._pids) - self._server
        self.system_cpu = system_busy_seconds() - self._system

    @property
    def client_cores(self) -> float:
        return self.client_cpu / self.wall if self.wall else 0.0

    @property
    def server_cores(self) -> float:
        return self.server_cpu / self.wall if self.wall else 0.0

    @property
    def other_cores(self) -> float:
        """Cores busy with anything but this process and the server (other work on the machine, kernel threads)."""
        if not self.wall:
            return 0.0
        return max(0.0, (self.system_cpu - self.server_cpu - self.client_cpu) / self.wall)


# ---- server processes -----------------------------------------------------------

class ServerProcess:
    """A server started by this benchmark, with its output in ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], *, port: int, log_path: Path,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None):
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._known: set[int] = set()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, ready_path: str = "/v2/", timeout: float = 60.0) -> "ServerProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=self.cwd, stdin=subprocess.DEVNULL)
        self._known.add(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self._probe(ready_path):
                self.tree()  # remember the workers' ids now
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {ready_path} within {timeout}s:\n{self.log_tail()}")

    def _probe(self, path: str) -> bool:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status in (200, 401)
        except OSError:
            return False
        finally:
            conn.close()

    def tree(self) -> list[int]:
        """The server's pid and its live descendants (remembered for :meth:`stop`)."""
        if self.proc is None:
            return []
        pids = [self.proc.pid] + children_of(self.proc.pid)
        self._known.update(pids)
        return pids

    def wait_workers(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the server has at least ``count`` descendant processes (worker mode)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.tree()) < count + 1:
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # workers normally exit with their supervisor; kill any of ours that did not
        for pid in sorted(self._known - {self.proc.pid}):
            if _stat_fields(pid) is not None and _is_descendant_cmd(pid, self.argv):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()
        self.proc = None

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _is_descendant_cmd(pid: int, argv: Sequence[str]) -> bool:
    """Guard against pid reuse: the process must still run the same executable family."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    exe = os.path.basename(argv[0]).encode()
    return bool(cmdline) and os.path.basename(cmdline[0]).startswith(exe[:6])


# ---- page cache -------------------------------------------------------------------

def prefault_page_cache(directory: str | os.PathLike, nbytes: int, block: int = 4 * 1024 * 1024) -> float:
    """Write and delete ``nbytes`` of scratch data in ``directory``; returns the seconds it took.

    On a VM whose guest memory is populated lazily by the host (as on the project's
    machines), the first write into never-touched page frames runs ~10x slower than into
    recycled ones (e.g. 400 MB/s vs 4.8 GB/s for a 1 GiB page-cache write). Writing and
    deleting a scratch file first puts enough touched frames on the free lists that the
    timed writes of every server see the same, recycled memory.
    """
    t0 = time.perf_counter()
    path = Path(directory) / ".prefault"
    buf = bytes(block)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = 0
        while written < nbytes:
            written += os.write(fd, buf)
    finally:
        os.close(fd)
        os.unlink(path)
    return time.perf_counter() - t0


# ---- machine -----------------------------------------------------------------------

def machine_info() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "kernel": platform.release(),
    }


def tool_version(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


# ---- stores: PostgreSQL scratch databases and the filesystem driver's blobs ----------------------

def pg_admin():
    """An autocommit engine on the test server's maintenance database (tests.support.PG_URL)."""
    import sqlalchemy as sa
    from tests.support import PG_URL

    return sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")


def pg_url(name: str) -> str:
    from tests.support import PG_URL

    return f"{PG_URL.rsplit('/', 1)[0]}/{name}"


def pg_create(name: str, template: str | None = None) -> str:
    """(Re)create database ``name``, optionally as a copy of ``template``; its URL."""
    eng = pg_admin()
    with eng.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.exec_driver_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    eng.dispose()
    return pg_url(name)


def pg_drop(name: str) -> None:
    eng = pg_admin()
    with eng.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    eng.dispose()


def sa_url(database_url: str, data_dir: Path) -> str:
    """The SQLAlchemy URL dockyard uses for ``database_url`` (empty: SQLite in ``data_dir``)."""
    if database_url:
        return database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"sqlite:///{data_dir / 'dockyard.db'}"


def blob_files(data_dir: Path) -> set[str]:
    """Digests of the blob objects in dockyard's filesystem storage under ``data_dir``."""
    root = data_dir / "storage" / "blobs"
    out = set()
    for dirpath, _dirs, files in os.walk(root):
        alg = Path(dirpath).relative_to(root).parts[:1]
        for name in files:
            out.add(f"{alg[0]}:{name}")
    return out


def distribution_config(path: Path, root: Path, *, port: int = 5000, log_level: str = "info",
                        access_log: bool = True) -> Path:
    """Write a config for the reference registry (Debian's ``docker-registry``, distribution
    2.8): filesystem storage under ``root``, deletes enabled, in-memory blob descriptor cache."""
    access = "" if access_log else "  accesslog:\n    disabled: true\n"
    path.write_text(f"""version: 0.1
log:
  level: {log_level}
{access}  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: {HOST}:{port}
  secret: dockyard-bench
""")
    return path
