"""One page per wait (issue 22), against a real `roast serve`: the page link of a wait offers every
event as its own button with its schema's form, in headless Chromium; GET never delivers; a refused
form is shown again (422) with nothing delivered; the HTML shows no internals."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlencode

import test_serve
from test_approval_page import ARTIFACTS, browser  # noqa: F401  (the fixture)
from test_serve import eventually, finished, waiting_session

from roast import api, gates

serve = test_serve.serve
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FORM = """
    name: release
    steps:
      - build: $(echo built 1.4.2 in /srv/build/app)
      - wait_for_event:
          approved: ["$(echo shipping {{ event.ticket }} x{{ event.replicas }} {{ event.canary }})"]
          rejected: ["$(echo stopped)"]
          timeout: ["$(echo nobody answered)"]
          within: 1h
          schema:
            approved:
              type: object
              required: [ticket, replicas]
              properties:
                ticket: {type: string, pattern: "^OPS-[0-9]+$", description: "The change ticket"}
                replicas: {type: integer, minimum: 1, maximum: 9, default: 2}
                canary: {type: boolean}
"""


def _page(sid: str, port: int) -> str:
    link = gates.page(sid, public_url=f"http://127.0.0.1:{port}")
    assert link is not None
    return link


def _no_internals(html: str, sid: str) -> None:
    assert sid not in html and sid[:8] in html          # only the short reference
    for leak in ("steps[", "roast resume", "/srv/build", "wait_for_event", "--session-id"):
        assert leak not in html, leak


def _form(html: str) -> dict[str, str]:
    return {"_csrf": re.search(r'name=_csrf value="([^"]+)"', html).group(1)}


def test_the_main_example_is_approved_through_its_page_in_chromium(tmp_path, serve, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    example = tmp_path / "deploy"
    shutil.copytree(EXAMPLES / "deploy", example)
    server = serve()
    result = api.run(str(example / "workflow.yml"))
    assert result.status == "waiting", result
    sid = result.session_id
    browser.get(_page(sid, server.port))
    _no_internals(browser.page_source, sid)
    assert api.session(sid).status == "waiting"  # opening the page delivered nothing
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Deploy app-1.4.2 to production?" in text and "deploy" in text  # the wait's title, the workflow
    assert "ask a person to approve it, then deploy" in text  # the workflow's own description (About)
    buttons = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "button")]
    assert buttons == ["Approve and deploy", "Reject"]  # the wait's labels, side by side
    browser.find_elements(By.NAME, "approver")[0].send_keys("ana")  # the approved form comes first
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "gate-page-deploy.png"))
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    done = eventually(lambda: finished(sid), "the session to finish in the server")
    assert done.status == "completed", done.error
    [delivery] = [d for d in api.deliveries(sid) if d.outcome == "consumed"]
    assert (delivery.name, delivery.data, delivery.actor, delivery.source, delivery.verified) == (
        "approved", {"approver": "ana"}, "link", "link", False)
    assert any("approved by ana" in (h.output or "") for h in api.history(sid))
    browser.refresh()
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "Decision" in page and "finished successfully" in page
    assert browser.find_elements(By.CSS_SELECTOR, "button") == []
    browser.save_screenshot(str(ARTIFACTS / "gate-page-deploy-after.png"))


def test_a_schema_form_refuses_bad_values_and_delivers_exactly_the_typed_data(tmp_path, serve, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    sid = waiting_session(tmp_path, FORM)
    server = serve()
    link = _page(sid, server.port)
    path = link[link.index("/g/"):]
    status, headers, html = server.request("GET", path)
    assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
    _no_internals(html, sid)
    # a refusal over plain HTTP (the browser would stop it at the pattern): 422, values kept, nothing sent
    bad = urlencode({**_form(html), "_event": "approved", "ticket": "nope", "replicas": "12"})
    status, _, again = server.request("POST", path, bad, {"content-type": "application/x-www-form-urlencoded"})
    assert status == 422
    assert "Nothing was sent" in again and 'value="nope"' in again and "at most 9" in again
    assert api.session(sid).status == "waiting" and api.deliveries(sid) == []
    # in the browser: typed fields, filled in, delivered as typed JSON
    browser.get(link)
    assert browser.find_element(By.NAME, "replicas").get_attribute("type") == "number"
    assert browser.find_element(By.NAME, "replicas").get_attribute("value") == "2"  # the default
    assert browser.find_element(By.NAME, "canary").get_attribute("type") == "checkbox"
    fields = [e.get_attribute("name") for e in browser.find_elements(By.CSS_SELECTOR, "input, select, textarea")]
    shown = [f for f in fields if f in ("ticket", "replicas", "canary")]
    assert shown == ["ticket", "replicas", "canary"]  # the schema's own order, not sorted
    buttons = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "button")]
    assert buttons == ["approved", "rejected"]  # every event its own button, the first primary
    browser.find_element(By.NAME, "ticket").send_keys("OPS-42")
    browser.find_element(By.NAME, "canary").click()
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "gate-page-form.png"))
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    done = eventually(lambda: finished(sid), "the session to finish")
    assert done.status == "completed"
    [delivery] = [d for d in api.deliveries(sid) if d.outcome == "consumed"]
    assert delivery.data == {"ticket": "OPS-42", "replicas": 2, "canary": True}


def test_get_never_delivers_and_a_forged_form_is_refused(tmp_path, serve):
    sid = waiting_session(tmp_path, FORM)
    server = serve()
    link = _page(sid, server.port)
    path = link[link.index("/g/"):]
    for _ in range(3):
        assert server.request("GET", path)[0] == 200
    assert api.session(sid).status == "waiting" and api.deliveries(sid) == []
    forged = urlencode({"_csrf": "x" * 32, "_event": "rejected"})
    status, _, html = server.request("POST", path, forged, {"content-type": "application/x-www-form-urlencoded"})
    assert status == 403 and "not valid" in html
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert server.request("GET", tampered)[0] == 403
    assert api.session(sid).status == "waiting" and api.deliveries(sid) == []
    assert "/g/<link>" in server.log and path[3:] not in server.log  # the capability is never logged


def test_a_rejection_with_a_reason_is_shown_with_who_and_why(tmp_path, serve):
    sid = waiting_session(tmp_path, FORM)
    server = serve()
    link = _page(sid, server.port)
    path = link[link.index("/g/"):]
    html = server.request("GET", path)[2]
    post = urlencode({**_form(html), "_event": "rejected", "_reason": "not <b>today</b>"})
    status, headers, _ = server.request("POST", path, post, {"content-type": "application/x-www-form-urlencoded"})
    assert status == 303
    eventually(lambda: finished(sid), "the session to finish")
    after = server.request("GET", path)[2]
    assert "Decision: rejected" in after and "not &lt;b&gt;today&lt;/b&gt;" in after
    assert "someone with the link" in after
    _no_internals(after, sid)
    [delivery] = [d for d in api.deliveries(sid) if d.outcome == "consumed"]
    assert (delivery.name, delivery.data, delivery.reason) == ("rejected", {}, "not <b>today</b>")


def test_after_a_failure_the_page_says_why_in_plain_words_without_internals(tmp_path, serve):
    sid = waiting_session(tmp_path, """
        name: release
        steps:
          - wait_for_event:
              approved: ["$(echo deploying; exit 3)"]
              rejected: ["$(echo stopped)"]
    """)
    server = serve()
    link = _page(sid, server.port)
    path = link[link.index("/g/"):]
    html = server.request("GET", path)[2]
    post = urlencode({**_form(html), "_event": "approved"})
    assert server.request("POST", path, post, {"content-type": "application/x-www-form-urlencoded"})[0] == 303
    failed = eventually(lambda: finished(sid), "the branch to fail")
    assert failed.status == "failed" and "steps[" in (failed.error or "")
    after = server.request("GET", path)[2]
    assert "Decision: approved" in after and "The workflow then failed: " in after
    assert "a step failed: command exited with status 3" in after
    assert "$(" not in after and "deploying" not in after  # no command, no raw output
    _no_internals(after, sid)


def test_serve_shows_the_page_link_in_the_session_document(tmp_path, serve):
    sid = waiting_session(tmp_path, FORM)
    server = serve(env={"ROAST_PUBLIC_URL": "https://roast.example.com"})
    status, _, doc = server.request("GET", f"/v1/sessions/{sid}")
    assert status == 200 and doc["page"].startswith("https://roast.example.com/g/")
    assert doc["page"] == gates.page(sid, public_url="https://roast.example.com")
