"""The inbox (issue 22): every open gate across workflows, soonest deadline first — `roast inbox`
(text and `--json`), `GET /v1/inbox` and `GET /inbox` on a real `roast serve` (in Chromium, with a
screenshot), needing a credential when auth is configured; and the page link where people look
for it (the waiting notice, `roast session`, notify steps)."""
from __future__ import annotations

import json
import socket

import test_serve
from conftest import run_cli, write_workflow
from test_approval_page import ARTIFACTS, browser  # noqa: F401  (the fixture)
from test_serve import eventually, finished

from roast import api

serve = test_serve.serve
PUBLIC = {"ROAST_PUBLIC_URL": "https://roast.example.com"}
TOKEN = "ops:" + "k" * 24


def _start(tmp_path, name: str, within: str, title: str | None = None, who: str | None = None) -> str:
    wf = write_workflow(tmp_path / name, f"""
        name: {name}
        steps:
          - wait_for_event:
              approved: ["$(echo yes)"]
              rejected: ["$(echo no)"]
              within: {within}
    """)
    args = ["execute", str(wf), "--json"] + (["--actor", who] if who else [])
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    return (doc[0] if isinstance(doc, list) else doc)["session_id"]


def _sleeping(tmp_path) -> str:
    wf = write_workflow(tmp_path / "nap", "name: nap\nsteps:\n  - sleep: 1h\n")
    doc = json.loads(run_cli("execute", str(wf), "--json").stdout)
    return (doc[0] if isinstance(doc, list) else doc)["session_id"]


def test_roast_inbox_lists_every_open_gate_across_workflows_soonest_deadline_first(tmp_path):
    later = _start(tmp_path, "release", "3h", who="ana")
    sooner = _start(tmp_path, "rotate-keys", "20m", who="bob")
    napping = _sleeping(tmp_path)
    done = run_cli("inbox", "--json", env=PUBLIC)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [g["session_id"] for g in listed] == [sooner, later] and napping not in done.stdout
    first = listed[0]
    assert {"session_id", "title", "workflow", "events", "deadline", "page"} <= set(first)
    assert first["workflow"] == "rotate-keys" and first["events"] == ["approved", "rejected"]
    assert first["page"].startswith("https://roast.example.com/g/") and first["started_by"] == "bob"
    mine = json.loads(run_cli("inbox", "--json", "--as", "ana").stdout)
    assert [g["session_id"] for g in mine] == [later]
    # without a public URL, the text says the exact commands
    text = run_cli("inbox").stdout
    assert text.index("Rotate keys") < text.index("Release")
    assert "roast resume" in text and f"--session-id {sooner}" in text


def test_the_page_link_is_in_the_waiting_notice_roast_session_and_notify_steps(tmp_path):
    wf = write_workflow(tmp_path, """
        name: deploy
        steps:
          - wait_for_event:
              notify: ["$(echo 'decide at {{ wait.page }}')"]
              approved: ["$(echo yes)"]
    """)
    done = run_cli("execute", str(wf), "--json", env=PUBLIC)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    sid = (doc[0] if isinstance(doc, list) else doc)["session_id"]
    shown = json.loads(run_cli("session", sid, "--json", env=PUBLIC).stdout)
    assert shown["page"].startswith("https://roast.example.com/g/")
    assert any(f"decide at {shown['page']}" in (h.output or "") for h in api.history(sid))
    notice = run_cli("execute", str(wf), env=PUBLIC).stderr
    assert "or open its page: https://roast.example.com/g/" in notice


def test_serve_inbox_needs_a_credential_and_lists_the_gates(tmp_path, serve):
    sid = _start(tmp_path, "release", "1h")
    server = serve(env={"ROAST_SERVE_TOKENS": TOKEN})
    assert server.request("GET", "/v1/inbox")[0] == 401
    status, _, html = server.request("GET", "/inbox")
    assert status == 401 and "Sign in needed" in html
    status, _, listed = server.request("GET", "/v1/inbox", headers={"authorization": "Bearer " + "k" * 24})
    assert status == 200 and [g["session_id"] for g in listed] == [sid]
    status, headers, html = server.request("GET", "/inbox", headers={"authorization": "Bearer " + "k" * 24})
    assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
    assert "Release" in html and "for ops" in html and sid not in html and sid[:8] in html


def test_the_inbox_page_in_chromium_leads_to_the_gate_page(tmp_path, serve, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _start(tmp_path, "release", "3h", who="ana")
    sid = _start(tmp_path, "rotate-keys", "20m", who="bob")
    server = serve("--port", str(port), env={"ROAST_PUBLIC_URL": f"http://127.0.0.1:{port}"})
    browser.get(f"http://127.0.0.1:{server.port}/inbox")
    assert browser.find_element(By.ID, "count").text == "2 waiting"
    titles = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "article h2")]
    assert titles == ["Rotate keys: your decision", "Release: your decision"]
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "inbox.png"))
    browser.find_elements(By.CSS_SELECTOR, "a.gate")[0].click()
    eventually(lambda: browser.find_elements(By.CSS_SELECTOR, "button.primary"), "the gate page")
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    done = eventually(lambda: finished(sid), "the session to finish")
    assert done.status == "completed"
    browser.get(f"http://127.0.0.1:{server.port}/inbox")
    assert browser.find_element(By.ID, "count").text == "1 waiting"
