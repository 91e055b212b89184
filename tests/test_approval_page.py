"""The approval page of a signed link (issue 15), against a real `roast serve`: in headless Chromium
(Selenium) for what people see and click, over plain HTTP for what must never happen (GET
delivering, a forged form, a tampered link)."""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_serve
from test_serve import eventually, finished, need, store_dump, waiting_session

from roast import api

serve = test_serve.serve  # the fixture: a real `roast serve` on a free port
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
APPROVAL = """
    name: release
    steps:
      - build: $(echo built 1.4.2)
      - tests: $(echo 212 passed)
      - wait_for_event:
          approved: ["$(echo shipping)"]
          rejected: ["$(echo stopped)"]
          timeout: ["$(echo nobody answered)"]
          within: 1h
"""


def _link(session_id: str, port: int, event: str = "approved") -> str:
    return api.links(session_id, public_url=f"http://127.0.0.1:{port}")[event]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    need("selenium")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = "needs chromium and chromium-driver (bash .ci/install-chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=900,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def test_a_person_opens_the_link_sees_the_wait_and_approves_it(tmp_path, serve, browser):
    from selenium.webdriver.common.by import By

    sid = waiting_session(tmp_path, APPROVAL)
    server = serve()
    browser.get(_link(sid, server.port))
    page = _text(browser)
    for shown in ("release", sid[:8], "Waiting for a decision", "approved", "Deadline"):
        assert shown in page, (shown, page)
    # issue 22: no internals: the whole session id, step outputs, step paths
    for hidden in (sid, "built 1.4.2", "212 passed", "steps[", "roast resume"):
        assert hidden not in browser.page_source, hidden
    assert api.session(sid).status == "waiting"  # opening the page delivered nothing
    browser.find_element(By.ID, "reason").send_keys("looks good <b>to me</b>")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "approval-page.png"))
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    eventually(lambda: browser.find_elements(By.CLASS_NAME, "result"), "the page after the click")
    page = _text(browser)
    assert "Decision: approved" in page and "By someone with the link" in page
    assert "looks good <b>to me</b>" in page  # escaped: shown as text, not markup
    done = eventually(lambda: finished(sid), "the session to complete in the server")
    assert done.status == "completed"
    [delivery] = [d for d in api.deliveries(sid) if d.outcome == "consumed"]
    assert (delivery.name, delivery.actor, delivery.source, delivery.reason) == (
        "approved", "link", "link", "looks good <b>to me</b>")
    browser.refresh()  # the same link later says what happened, and offers no button
    assert browser.find_elements(By.CSS_SELECTOR, "button") == []
    assert "finished successfully" in browser.find_element(By.ID, "outcome").text
    browser.save_screenshot(str(ARTIFACTS / "approval-page-after.png"))


def test_after_the_deadline_the_link_is_refused_and_says_the_wait_timed_out(tmp_path, serve, browser):
    from selenium.webdriver.common.by import By

    server = serve()
    sid = waiting_session(tmp_path, APPROVAL.replace("within: 1h", "within: 1s"))
    link = _link(sid, server.port, "rejected")
    eventually(lambda: finished(sid), "the deadline to fire")
    browser.get(link)
    assert "Nobody decided in time" in _text(browser)
    assert browser.find_elements(By.CSS_SELECTOR, "button") == []


def test_get_never_delivers_and_a_tampered_or_forged_request_is_403(tmp_path, serve, roast_home):
    sid = waiting_session(tmp_path, APPROVAL)
    server = serve()
    link = _link(sid, server.port)
    path = link[link.index("/a/"):]
    before = store_dump(roast_home)
    status, headers, _ = server.request("GET", path)
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "form-action 'self'" in csp
    assert server.request("HEAD", path)[0] == 200
    token = path[len("/a/"):]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert server.request("GET", f"/a/{tampered}")[0] == 403
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert server.request("POST", f"/a/{tampered}", "_csrf=x", form)[0] == 403
    forged = server.request("POST", path, "_reason=ok", form)
    assert forged[0] == 403  # no CSRF token from the page
    assert store_dump(roast_home) == before
    assert api.session(sid).status == "waiting"
    assert "/a/<link>" in server.log and token not in server.log  # the capability is never logged


def test_a_second_click_is_a_duplicate_not_a_second_delivery(tmp_path, serve):
    sid = waiting_session(tmp_path, APPROVAL)
    server = serve()
    token = _link(sid, server.port).rsplit("/", 1)[1]
    link, _, csrf = api.check_link(token)
    path = f"/a/{token}"
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert server.request("POST", path, f"_csrf={csrf}", form)[0] == 303
    eventually(lambda: finished(sid), "the branch")
    status, _, page = server.request("POST", path, f"_csrf={csrf}", form)
    assert status == 409 and "Decision: approved" in page
    assert [d.outcome for d in api.deliveries(sid)] == ["consumed"]
    assert time.time() < link.expires
