import os
import shutil

import pytest

from tests.support import postgres_database, start_server

# sqlite: SQLite + filesystem; postgres: PostgreSQL + filesystem; s3: PostgreSQL + S3 (moto server)
BACKENDS = ["sqlite", "postgres", "s3"]


def pytest_addoption(parser):
    parser.addoption("--backends", default=os.environ.get("DOCKYARD_TEST_BACKENDS", "sqlite,postgres,s3"),
                     help="comma-separated database backends to run server tests on")


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        wanted = metafunc.config.getoption("--backends").split(",")
        only = getattr(metafunc.module, "BACKENDS", BACKENDS)  # a module may narrow the backends
        metafunc.parametrize("backend", [b for b in BACKENDS if b in wanted and b in only], scope="session")


@pytest.fixture
def reg(tmp_path, backend, request):
    """An in-process registry (``tests.lifecycle_support.make_registry``) on ``backend``, with the
    module's ``REG_SETTINGS`` and then the test's own (``@pytest.mark.parametrize("reg", [{...}],
    indirect=True)``)."""
    from tests.lifecycle_support import make_registry

    settings = {**getattr(request.module, "REG_SETTINGS", {}), **getattr(request, "param", {})}
    moto = request.getfixturevalue("moto") if backend == "s3" else None
    with make_registry(tmp_path, backend, moto=moto, **settings) as r:
        yield r


@pytest.fixture(scope="session")
def database_url(backend):
    if backend == "sqlite":
        yield ""
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture(scope="session")
def storage_env(backend, request):
    """Settings that select the storage driver of a backend (and a fresh bucket for s3)."""
    if backend != "s3":
        return {}
    import uuid

    moto = request.getfixturevalue("moto")
    bucket = f"dockyard-{uuid.uuid4().hex[:10]}"
    moto.make_bucket(bucket)
    return moto.env(bucket, prefix="registry")


@pytest.fixture(scope="session")
def server(backend, database_url, storage_env, tmp_path_factory):
    """A real `dockyard serve` process, one per backend for the whole session."""
    data = tmp_path_factory.mktemp(f"server-{backend}")
    proc = start_server(data, database_url=database_url, extra_env=storage_env)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    from tests.support import start_moto

    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ceph_rgw(tmp_path_factory):
    """A real S3 server beside moto: Ceph's RADOS Gateway on a throwaway single-node cluster
    (scripts/ceph-rgw), started once per run. Not a backend: only the tests that ask for it use it."""
    from tests.support import start_ceph_rgw

    if shutil.which("radosgw") is None:
        pytest.fail("radosgw is not installed (.ci/run installs ceph-mon, ceph-osd and radosgw)")
    gateway = start_ceph_rgw(tmp_path_factory.mktemp("ceph-rgw"))
    yield gateway
    gateway.stop()


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture
def repo(request):
    """A repository name unique to the test."""
    import re
    import uuid

    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"t/{base}-{uuid.uuid4().hex[:6]}"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (.ci/run installs it)")
    return path
