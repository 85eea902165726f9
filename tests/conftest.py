import os
import shutil

import pytest

from tests.support import postgres_database, start_server

BACKENDS = ["sqlite", "postgres"]


def pytest_addoption(parser):
    parser.addoption("--backends", default=os.environ.get("DOCKYARD_TEST_BACKENDS", "sqlite,postgres"),
                     help="comma-separated database backends to run server tests on")


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        wanted = metafunc.config.getoption("--backends").split(",")
        metafunc.parametrize("backend", [b for b in BACKENDS if b in wanted], scope="session")


@pytest.fixture(scope="session")
def database_url(backend):
    if backend == "sqlite":
        yield ""
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture(scope="session")
def server(backend, database_url, tmp_path_factory):
    """A real `dockyard serve` process, one per backend for the whole session."""
    data = tmp_path_factory.mktemp(f"server-{backend}")
    proc = start_server(data, database_url=database_url)
    yield proc
    proc.stop()


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
