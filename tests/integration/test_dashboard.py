"""The dashboard over plain HTTP on a real server: login, session cookie and CSRF, empty
states, bad input as an error page (never a 5xx), exclusive bytes, the usage sampler
(bounded samples, sorting by sampled bytes) and the migration on PostgreSQL."""

from __future__ import annotations

import re
import time

import bcrypt
import httpx
import pytest
import sqlalchemy as sa

from dockyard.api.dashboard.render import human_bytes
from tests.support import make_config, make_layer, postgres_database, push_blob, push_image, start_server

USERS = {"root": "admin", "dev": "push"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    data = tmp_path_factory.mktemp("dashboard")
    htpasswd = data / "htpasswd"
    htpasswd.write_text("".join(f"{u}:{bcrypt.hashpw(f'{u}-pw'.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                                for u in USERS))
    proc = start_server(data, extra_env={
        "DOCKYARD_AUTH_HTPASSWD": str(htpasswd), "DOCKYARD_AUTH_ROLES": "root=admin,dev=push",
        "DOCKYARD_USAGE_SAMPLE_INTERVAL": "0.3s", "DOCKYARD_USAGE_SAMPLES_KEPT": "3",
        "DOCKYARD_GC_ENABLED": "false", "DOCKYARD_SCRUB_ENABLED": "false"})
    yield proc
    proc.stop()


def _login(site, user: str, password: str, **headers) -> httpx.Response:
    return httpx.post(site.url + "/dashboard/login", data={"user": user, "password": password,
                                                           "next": "/dashboard/history"}, headers=headers)


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_login_session_and_csrf(site):
    r = httpx.get(site.url + "/dashboard/reclaimable")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Freclaimable"
    assert httpx.get(site.url + "/dashboard/login").status_code == 200
    assert _login(site, "root", "root-pw", origin="http://evil.example").status_code == 403
    assert _login(site, "root", "nope").status_code == 401
    assert _login(site, "dev", "dev-pw").status_code == 403
    r = _login(site, "root", "root-pw")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/history"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert _login(site, "root", "root-pw").headers["location"] == "/dashboard/history"
    r2 = httpx.post(site.url + "/dashboard/login", data={"user": "root", "password": "root-pw",
                                                         "next": "https://evil.example/"})
    assert r2.headers["location"] == "/dashboard/", "no open redirect"

    session = r.cookies["dockyard_session"]
    with httpx.Client(base_url=site.url, cookies={"dockyard_session": session}) as browser:
        page = browser.get("/dashboard/history")
        assert page.status_code == 200 and "root" in page.text
        token = _csrf(page.text)
        assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
        # a POST without the session's CSRF token changes nothing
        r = browser.post("/dashboard/trash/restore", data={"reference": "a/b:c"})
        assert r.status_code == 403 and "CSRF" in r.text
        r = browser.post("/dashboard/trash/restore", data={"reference": "a/b:c", "csrf": token + "x"})
        assert r.status_code == 403
        r = browser.post("/dashboard/trash/restore", data={"reference": "a/b:c", "csrf": token})
        assert r.status_code == 404 and ("MANIFEST_UNKNOWN" in r.text or "NAME_UNKNOWN" in r.text)
    body, _, sig = session.partition(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig
    assert httpx.get(site.url + "/dashboard/", cookies={"dockyard_session": forged}).status_code == 303
    assert httpx.get(site.url + "/dashboard/", cookies={"dockyard_session": "x" * 5000}).status_code == 303
    # basic credentials of the registry API are not a dashboard session
    assert httpx.get(site.url + "/dashboard/", auth=("root", "root-pw")).status_code == 303


@pytest.fixture(scope="module")
def admin(site):
    session = _login(site, "root", "root-pw").cookies["dockyard_session"]
    with httpx.Client(base_url=site.url, cookies={"dockyard_session": session}, timeout=30) as c:
        yield c


def test_empty_states_then_bad_input_is_an_error_page(admin):
    assert "No repositories yet" in admin.get("/dashboard/repositories").text
    assert "The trash is empty" in admin.get("/dashboard/reclaimable").text
    assert "No runs recorded yet" in admin.get("/dashboard/history").text
    for url, status in [("/dashboard/repositories?page=-1", 400), ("/dashboard/repositories?page=" + "9" * 30, 400),
                        ("/dashboard/repositories?sort=evil&dir=x&q=%25_%5C", 200), ("/dashboard/r/no/such", 404),
                        ("/dashboard/r/%00", 404), ("/dashboard/policies/none", 404),
                        ("/dashboard/trash/confirm?action=drop&reference=a/b:c", 400),
                        ("/dashboard/trash/confirm?action=purge&reference=a/b:c", 405),
                        ("/dashboard/trash/confirm?action=purge&reference=no/such@sha256:" + "0" * 64, 404),
                        ("/dashboard/?range=forever", 200), ("/dashboard/static/../../config.py", 404)]:
        r = admin.get(url)
        assert r.status_code == status, (url, r.status_code, r.text[:300])
        if status >= 400 and "static" not in url:
            assert 'id="error"' in r.text


def _wait(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_exclusive_bytes_and_sorting_by_sampled_bytes(site, admin):
    api = httpx.Client(base_url=site.url, auth=("root", "root-pw"), timeout=30)
    shared = make_layer("shared-layer", 40_000)
    push_image(api, "x/big", "v1", "big", layers=3, shared=[shared])
    push_image(api, "x/small", "v1", "small", layers=1, shared=[shared])
    push_blob(api, "x/small", make_config("unused"))
    text = admin.get("/dashboard/r/x/small").text
    exclusive = re.search(r'id="exclusive">([^<]+)<', text).group(1)
    own = len(make_config("small")) + len(make_layer("small-0")) + len(make_config("unused"))
    assert exclusive == human_bytes(own), "the shared layer is not freed by deleting one repository"

    def order():
        html = admin.get("/dashboard/repositories?sort=bytes&dir=desc").text
        names = re.findall(r'href="/dashboard/r/([^"]+)"', html)
        return names if names == ["x/big", "x/small"] else None

    _wait(order)  # once the sampler has measured both
    html = admin.get("/dashboard/repositories?sort=bytes&dir=asc&q=small").text
    assert re.findall(r'href="/dashboard/r/([^"]+)"', html) == ["x/small"]
    assert "<svg" in admin.get("/dashboard/").text
    engine = sa.create_engine(f"sqlite:///{site.data_dir / 'dockyard.db'}")
    with engine.connect() as conn:
        time.sleep(1.0)
        assert conn.execute(sa.text("SELECT count(*) FROM usage_samples")).scalar() <= 3, "samples are bounded"
    engine.dispose()


@pytest.mark.postgres
def test_dashboard_pages_on_postgresql(tmp_path):
    with postgres_database() as url:
        proc = start_server(tmp_path / "pg", database_url=url, extra_env={"DOCKYARD_USAGE_SAMPLE_INTERVAL": "0.3s"})
        try:
            with proc.client() as c:
                digest, _, _ = push_image(c, "pg/app", "v1", "pg")
                assert c.delete(f"/v2/pg/app/manifests/{digest}").status_code == 202
                for page in ("/dashboard/", "/dashboard/repositories?sort=bytes&q=pg", "/dashboard/r/pg/app",
                             "/dashboard/reclaimable", "/dashboard/history", "/dashboard/api"):
                    r = c.get(page)
                    assert r.status_code == 200 and 'id="error"' not in r.text, (page, r.text[:300])
                _wait(lambda: "<svg" in c.get("/dashboard/").text)
        finally:
            proc.stop()


def test_history_shows_who_deleted_restored_and_purged_what(site, admin):
    """The audit trail: a delete, a restore and a purge, each with its actor, from the events
    each change wrote in its own transaction."""
    with httpx.Client(base_url=site.url, auth=("root", "root-pw"), timeout=30) as api:
        kept, _, _ = push_image(api, "audit/app", "v1", "audit-kept")
        gone, _, _ = push_image(api, "audit/app", "v2", "audit-gone")
        for digest in (kept, gone):
            assert api.delete(f"/v2/audit/app/manifests/{digest}").status_code == 202
        assert api.post("/admin/v1/trash/restore", params={"reference": f"audit/app@{kept}"}).status_code == 200
        assert api.post("/admin/v1/trash/purge", params={"reference": f"audit/app@{gone}"}).status_code == 200
    page = admin.get("/dashboard/history").text
    audit = page.split('id="audit"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>[^<]*</td><td>(\w+)</td>.*?<td>([^<]*)</td><td>([^<]*)</td></tr>", audit, re.S)
    kinds = [kind for kind, _, by in rows if by == "root"]
    assert kinds[:4] == ["purge", "restore", "delete", "delete"], rows  # newest first
    assert any(gone[:19] in what for kind, what, _ in rows if kind == "purge"), rows
    assert any(kept[:19] in what for kind, what, _ in rows if kind == "restore"), rows


def test_hosts_page_lists_hosts_and_their_images(site, admin):
    assert "No hosts yet" in admin.get("/dashboard/hosts").text
    with httpx.Client(base_url=site.url, timeout=30) as api:
        r = api.post("/admin/v1/hosts/compute-1", auth=("root", "root-pw"))
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        line = ('{"repository": "team/app", "tag": "v1", "digest": "sha256:' + "a" * 64 + '", "managed": false, '
                '"bytes": 4096, "containers": ["web-1"]}\n')
        r = api.put("/admin/v1/hosts/compute-1/inventory", content=line,
                    headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
    page = admin.get("/dashboard/hosts").text
    assert 'id="hosts"' in page and "compute-1" in page
    detail = admin.get("/dashboard/hosts", params={"host": "compute-1"})
    assert detail.status_code == 200
    images = detail.text.split('id="host-images"', 1)[1]
    assert "team/app" in images and "unmanaged" in images and "web-1" in images
    assert admin.get("/dashboard/hosts", params={"host": "no-such"}).status_code == 404
