"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Selenium.

Logs in through the form (a wrong password and a non-admin user are refused first), opens
every page, restores an image from the trash through its confirmation and checks that the
image pulls again over /v2/, purges another. Screenshots of every page are saved under
``test-artifacts/dashboard/`` (or $DOCKYARD_TEST_ARTIFACTS) and the path is printed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.support import push_image, sha256, start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="chromium and chromium-driver are not installed (.ci/run installs them)")
USERS = {"root": "admin", "dev": "push"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    data = tmp_path_factory.mktemp("dashboard-browser")
    htpasswd = data / "htpasswd"
    htpasswd.write_text("".join(f"{u}:{bcrypt.hashpw(f'{u}-pw'.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                                for u in USERS))
    proc = start_server(data, extra_env={
        "DOCKYARD_AUTH_HTPASSWD": str(htpasswd),
        "DOCKYARD_AUTH_ROLES": ",".join(f"{u}={r}" for u, r in USERS.items()),
        "DOCKYARD_USAGE_SAMPLE_INTERVAL": "1s",
    })
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1366,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(120)  # generous: the CI machine may be busy
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots():
    root = Path(os.environ.get("DOCKYARD_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
    path = root / "dashboard"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    print(f"\ndashboard screenshots: {path}")
    return path


def _save(driver, shots: Path, name: str) -> None:
    # the whole page, not just the window: make the window as tall as the document
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, max(900, min(height, 4000)))
    assert driver.save_screenshot(str(shots / f"{name}.png"))
    driver.set_window_size(1366, 900)


def _text(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def _click(driver, element) -> None:
    """Click something that loads a page, and wait until the new page has replaced the old one
    (a form posts and the server may take a moment: bcrypt, a restore)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def replaced(_driver) -> bool:
        try:
            old.is_enabled()  # any call on the old page's element
            return False
        except WebDriverException:  # stale: chromedriver says so either as StaleElementReference or
            return True             # as "Node with given id does not belong to the document"

    WebDriverWait(driver, 120).until(replaced)


def _no_error(driver) -> None:
    from selenium.webdriver.common.by import By

    errors = driver.find_elements(By.CSS_SELECTOR, ".error")
    assert not errors, errors[0].text


def test_dashboard_in_a_browser(site, browser, shots):
    from selenium.webdriver.common.by import By

    admin = httpx.Client(base_url=site.url, auth=("root", "root-pw"), timeout=60)
    kept, _, _ = push_image(admin, "team/web", "v1", "web-1")
    gone, _, blobs = push_image(admin, "team/web", "v2", "web-2")
    purged, _, _ = push_image(admin, "team/api", "old", "api-1")
    push_image(admin, "team/api", "new", "api-2")
    push_image(admin, "solo/tool", "latest", "tool-1")
    for name, digest in (("team/web", gone), ("team/api", purged)):
        assert admin.delete(f"/v2/{name}/manifests/{digest}").status_code == 202
    assert admin.get(f"/v2/team/web/manifests/{gone}").status_code == 404
    assert admin.put("/admin/v1/policies/keep-one", json={"keep_recent": 1}).status_code == 201

    def login(user: str, password: str) -> None:
        browser.find_element(By.ID, "user").clear()
        browser.find_element(By.ID, "user").send_keys(user)
        browser.find_element(By.ID, "password").send_keys(password)
        _click(browser, browser.find_element(By.ID, "login"))

    browser.get(site.url + "/dashboard/reclaimable")
    assert "/dashboard/login" in browser.current_url
    _save(browser, shots, "01-login")
    login("root", "wrong")
    assert "Wrong user name or password" in _text(browser, "#error")
    login("dev", "dev-pw")
    assert "does not have the admin role" in _text(browser, "#error")
    _save(browser, shots, "02-login-refused")
    login("root", "root-pw")
    assert browser.current_url.endswith("/dashboard/reclaimable"), "back where the login started"
    cookie = browser.get_cookie("dockyard_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    browser.get(site.url + "/dashboard/")
    _no_error(browser)
    assert _text(browser, "#blobs") != "0"
    _save(browser, shots, "03-overview")

    browser.get(site.url + "/dashboard/repositories")
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#repositories tbody td:first-child a")]
    assert names == ["solo/tool", "team/api", "team/web"]
    _save(browser, shots, "04-repositories")
    browser.find_element(By.ID, "q").send_keys("team")
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.search button"))
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#repositories tbody td:first-child a")]
    assert names == ["team/api", "team/web"]
    _click(browser, browser.find_element(By.LINK_TEXT, "Bytes"))  # sort by the sampled bytes
    _no_error(browser)
    _click(browser, browser.find_element(By.LINK_TEXT, "team/web"))
    assert _text(browser, "#repo-name") == "team/web"
    assert "v1" in _text(browser, "#tags") and "delete" in _text(browser, "#history")
    _save(browser, shots, "05-repository")

    browser.get(site.url + "/dashboard/reclaimable")
    _no_error(browser)
    trash = _text(browser, "#trash")
    assert gone.split(":")[1][:12] in trash and purged.split(":")[1][:12] in trash
    _save(browser, shots, "06-reclaimable")

    # restore team/web@gone through its confirmation page
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#trash tbody tr") if "team/web" in r.text)
    _click(browser, row.find_element(By.LINK_TEXT, "Restore"))
    assert "Restore team/web@" in browser.find_element(By.TAG_NAME, "h1").text
    _save(browser, shots, "07-confirm-restore")
    _click(browser, browser.find_element(By.ID, "confirm"))
    assert "Restored team/web@" + gone in _text(browser, "#message")
    _save(browser, shots, "08-restored")
    assert admin.get(f"/v2/team/web/manifests/{gone}").status_code == 200
    assert admin.get("/v2/team/web/manifests/v2").status_code == 200, "its tag came back"
    for blob in blobs:
        assert admin.get(f"/v2/team/web/blobs/{sha256(blob)}").content == blob

    # purge team/api@purged: the confirmation page shows what it frees
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#trash tbody tr") if "team/api" in r.text)
    _click(browser, row.find_element(By.LINK_TEXT, "Purge"))
    assert "can no longer be restored" in _text(browser, ".confirm")
    _save(browser, shots, "09-confirm-purge")
    _click(browser, browser.find_element(By.ID, "confirm"))
    assert "Purged team/api@" + purged in _text(browser, "#message")
    assert "The trash is empty" in _text(browser, "#trash-empty")
    assert admin.post(f"/admin/v1/trash/restore?reference=team/api@{purged}").status_code == 404

    _click(browser, browser.find_element(By.LINK_TEXT, "Preview"))
    _no_error(browser)
    assert int(_text(browser, "#would-delete")) >= 1  # keep_recent=1 in team/web (two images now)
    _save(browser, shots, "10-policy-preview")

    assert admin.post("/admin/v1/gc?dry_run=true").status_code == 200  # idle real runs leave no history
    assert admin.post("/admin/v1/scrub?dry_run=true").status_code == 200
    browser.get(site.url + "/dashboard/history")
    _no_error(browser)
    assert "team/api" in _text(browser, "#deletes") and "dry run" in _text(browser, "#gc-runs")
    assert "dry run" in _text(browser, "#scrub-runs") and "keep-one" in _text(browser, "#prune-runs")
    _save(browser, shots, "11-history")

    browser.get(site.url + "/dashboard/api")
    assert "/admin/v1/trash/restore" in browser.page_source
    _save(browser, shots, "12-api")

    browser.get(site.url + "/dashboard/")
    assert browser.find_elements(By.CSS_SELECTOR, "#plot svg"), "usage samples were recorded and plotted"
    _save(browser, shots, "13-overview-plot")

    browser.get(site.url + "/dashboard/r/no/such")
    assert "NAME_UNKNOWN" in _text(browser, "#error")
    _click(browser, browser.find_element(By.CSS_SELECTOR, "form.who button"))
    assert "/dashboard/login" in browser.current_url
    browser.get(site.url + "/dashboard/history")
    assert "/dashboard/login" in browser.current_url, "logged out"
    assert len(list(shots.glob("*.png"))) == 13
