"""Per-person links (issue 23), against a real `roast serve`: when a wait's `approvers:` lists exact
identities and ROAST_PUBLIC_URL is set, each listed person gets a page link of their own. It delivers
as that person (verified by possession, the form does not ask who you are), once per event (the
store's event id says so), and only while the page shows what the link was made for."""
from __future__ import annotations

import json
import re
from urllib.parse import urlencode

import pytest
import test_serve
from conftest import run_cli, write_workflow
from test_approval_page import ARTIFACTS, browser  # noqa: F401  (the fixture)
from test_serve import eventually, finished, waiting_session

from roast import api, gates, links, seal

serve = test_serve.serve
PUBLIC = "https://roast.example.com"
FORM_TYPE = {"content-type": "application/x-www-form-urlencoded"}
GATE = """
    name: release
    steps:
      - build: $(echo 1.4.2)
      - wait_for_event:
          title: "Promote build {{ output.build }}?"
          description: Goes to every region at once.
          approvers: [ana@example.com, Bo@Example.com, "*@sre.example.com"]
          notify: ["$(echo ana: {{ wait.pages['ana@example.com'] }})"]
          approved: ["$(echo promoted)"]
          rejected: ["$(echo stopped)"]
"""


@pytest.fixture(autouse=True)
def _public(monkeypatch):
    monkeypatch.setenv("ROAST_PUBLIC_URL", PUBLIC)


def _path(url: str) -> str:
    assert url.startswith(f"{PUBLIC}/p/"), url
    return url[len(PUBLIC):]


def _csrf(html: str) -> str:
    return re.search(r'name=_csrf value="([^"]+)"', html).group(1)


def _snapshot(sid: str) -> tuple:
    return api.session(sid), api.deliveries(sid), api.history(sid)


def _post(server, path: str, event: str, **fields: str):
    html = server.request("GET", path)[2]
    body = urlencode({"_csrf": _csrf(html), "_event": event, **fields})
    return server.request("POST", path, body, FORM_TYPE)


def test_each_exact_approver_gets_a_page_of_their_own_and_patterns_get_none(tmp_path):
    sid = waiting_session(tmp_path, GATE)
    pages = gates.pages(sid)
    assert list(pages) == ["ana@example.com", "Bo@Example.com"]  # as written; "*@sre…" names nobody
    assert len(set(pages.values())) == 2 and all(u.startswith(f"{PUBLIC}/p/") for u in pages.values())
    assert gates.pages(sid, public_url=None) == pages  # ROAST_PUBLIC_URL is the default
    plain = waiting_session(tmp_path, """
        name: plain
        steps:
          - wait_for_event:
              approved: ["$(echo yes)"]
    """, name="plain")
    assert gates.pages(plain) == {}  # no `approvers:`: the shared page only


def test_ana_s_link_delivers_as_ana_verified_without_asking_who_she_is(tmp_path, serve):
    sid = waiting_session(tmp_path, GATE)
    server = serve()
    path = _path(gates.pages(sid)["ana@example.com"])
    for _ in range(2):
        status, headers, html = server.request("GET", path)
        assert status == 200 and "Promote build 1.4.2?" in html
    assert api.deliveries(sid) == [] and api.session(sid).status == "waiting"  # GET never acts
    assert "Answering as" in html and "ana@example.com" in html
    assert sid not in html and "actor" not in html.lower() and "name=approver" not in html
    assert "default-src 'none'" in headers["content-security-policy"]
    status, headers, _ = _post(server, path, "approved", _reason="looks good")
    assert status == 303 and headers["location"] == path[3:]
    [delivery] = api.deliveries(sid)
    assert (delivery.name, delivery.actor, delivery.verified, delivery.source, delivery.reason) == (
        "approved", "ana@example.com", True, "link", "looks good")
    assert delivery.outcome in ("consumed", "counted")
    assert eventually(lambda: finished(sid), "the session to finish").status == "completed"
    after = server.request("GET", path)[2]
    assert "Decision: approved" in after and "By ana@example.com" in after and "(verified)" in after
    assert "/p/<link>" in server.log and path[3:] not in server.log  # the capability is never logged


def test_a_second_decision_through_the_same_link_is_refused_and_changes_nothing(tmp_path, serve):
    sid = waiting_session(tmp_path, GATE)
    server = serve()
    path = _path(gates.pages(sid)["ana@example.com"])
    html = server.request("GET", path)[2]
    body = urlencode({"_csrf": _csrf(html), "_event": "approved"})
    assert server.request("POST", path, body, FORM_TYPE)[0] == 303
    eventually(lambda: finished(sid), "the session to finish")
    before = _snapshot(sid)
    for again in (body, urlencode({"_csrf": _csrf(html), "_event": "approved", "_reason": "once more"})):
        status, _, page = server.request("POST", path, again, FORM_TYPE)
        assert status == 409 and "You already approved this on " in page and "nothing was changed" in page
        assert sid not in page and "person-" not in page
    assert _snapshot(sid) == before


def test_a_second_approval_while_the_gate_is_still_open_is_refused_by_the_store(tmp_path, serve):
    """With a quorum the gate stays open after ana's approval: her link still refuses a second one,
    through the deterministic event id (session, wait, person, event), not the server's memory."""
    sid = waiting_session(tmp_path, GATE.replace("approvers:", "quorum: {approved: 2}\n          approvers:"))
    first = serve()
    path = _path(gates.pages(sid)["ana@example.com"])
    html = first.request("GET", path)[2]
    body = urlencode({"_csrf": _csrf(html), "_event": "approved"})
    assert first.request("POST", path, body, FORM_TYPE)[0] == 303
    [delivery] = api.deliveries(sid)
    assert delivery.event_id == links.person_event_id(sid, api.session(sid).wait_seq, "ana@example.com", "approved")
    first.stop()
    second = serve()  # another process: nothing remembered but the store
    status, _, page = second.request("POST", path, body, FORM_TYPE)
    assert status == 409 and "You already approved this" in page
    assert len(api.deliveries(sid)) == 1


def test_a_link_made_for_other_content_is_refused_without_internals(tmp_path, serve):
    sid = waiting_session(tmp_path, GATE)
    server = serve()
    s = api.session(sid)
    key = seal.link_key(api.open_store().signing_keys())
    other = links.content_digest(s.workflow_name, [{**a, "title": "Promote build 9.9.9?"} for a in s.awaiting])
    assert other != links.content_digest(s.workflow_name, s.awaiting)
    token = links.make_person(key, sid, s.wait_seq, "ana@example.com", other, s.updated_at + 3600)
    status, _, html = server.request("GET", f"/p/{token}")
    assert status == 409 and "this request changed since your link was made; ask for a new link" in html.lower()
    assert sid not in html and "9.9.9" not in html and "1.4.2" not in html and "name=_csrf" not in html
    good = server.request("GET", _path(gates.pages(sid)["ana@example.com"]))[2]
    forged = urlencode({"_csrf": links.csrf(key, token), "_event": "approved"})  # even with its own form token
    status, _, html = server.request("POST", f"/p/{token}", forged, FORM_TYPE)
    assert status == 409 and "changed since your link was made" in html
    assert api.deliveries(sid) == [] and api.session(sid).status == "waiting"
    assert "Promote build 1.4.2?" in good


def test_a_forged_or_edited_personal_link_is_a_plain_4xx_page(tmp_path, serve):
    sid = waiting_session(tmp_path, GATE)
    server = serve()
    path = _path(gates.pages(sid)["ana@example.com"])
    token = path[3:]
    head, payload, tag = token.split(".")
    fields = json.loads(links._unb64(payload))
    as_eve = links._b64(json.dumps({**fields, "i": "eve@example.com"}, separators=(",", ":")).encode())
    wrong_key = links.make_person(b"x" * 32, sid, fields["w"], "ana@example.com", fields["d"], fields["x"])
    page_token = gates.page(sid)[len(PUBLIC) + 3:]
    for bad in (f"{head}.{as_eve}.{tag}", wrong_key, token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"),
                "u1.nonsense", page_token):
        for method in ("GET", "POST"):
            body = urlencode({"_csrf": "x" * 32, "_event": "approved"}) if method == "POST" else None
            status, headers, html = server.request(method, f"/p/{bad}", body, FORM_TYPE if body else None)
            assert 400 <= status < 500 and headers["content-type"].startswith("text/html"), (bad, status)
            assert "This link cannot be used" in html and sid not in html and "Traceback" not in html
    assert api.deliveries(sid) == [] and api.session(sid).status == "waiting"


def test_wait_pages_are_rendered_in_notify_and_listed_in_the_session_json(tmp_path, serve):
    wf = write_workflow(tmp_path, GATE)
    done = run_cli("execute", str(wf), "--json", env={"ROAST_PUBLIC_URL": PUBLIC})
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    sid = (doc[0] if isinstance(doc, list) else doc)["session_id"]
    shown = json.loads(run_cli("session", sid, "--json", env={"ROAST_PUBLIC_URL": PUBLIC}).stdout)
    assert list(shown["pages"]) == ["ana@example.com", "Bo@Example.com"]
    assert shown["pages"]["ana@example.com"].startswith(f"{PUBLIC}/p/")
    notified = [h.output for h in api.history(sid) if "ana: " in (h.output or "")]
    assert notified and notified[0].startswith(f"ana: {PUBLIC}/p/")
    ana = links.check_person(seal.link_key(api.open_store().signing_keys()), notified[0].split("/p/")[1], now=0)
    assert (ana.session_id, ana.identity) == (sid, "ana@example.com")
    server = serve(env={"ROAST_PUBLIC_URL": PUBLIC})
    status, _, served = server.request("GET", f"/v1/sessions/{sid}")
    assert status == 200 and list(served["pages"]) == ["ana@example.com", "Bo@Example.com"]
    no_url = json.loads(run_cli("session", sid, "--json", env={"ROAST_PUBLIC_URL": ""}).stdout)
    assert no_url["pages"] == {}


def test_ana_approves_through_her_own_link_in_chromium(tmp_path, serve, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    sid = waiting_session(tmp_path, GATE)
    server = serve()
    browser.get(gates.pages(sid, public_url=f"http://127.0.0.1:{server.port}")["ana@example.com"])
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Promote build 1.4.2?" in text and "Answering as\nana@example.com (this link is yours alone)" in text
    assert api.deliveries(sid) == []
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "person-link.png"))
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    assert eventually(lambda: finished(sid), "the session to finish").status == "completed"
    assert "By ana@example.com (verified)" in browser.find_element(By.TAG_NAME, "body").text
    [delivery] = api.deliveries(sid)
    assert (delivery.actor, delivery.verified) == ("ana@example.com", True)


def test_a_personal_token_is_its_own_kind_and_its_event_id_is_one_per_person_and_event():
    key = b"k" * 32
    token = links.make_person(key, "s1", 3, "Ana@Example.com", "d" * 16, 2_000_000_000)
    link = links.check_person(key, token, now=1_900_000_000)
    assert (link.session_id, link.wait_seq, link.identity, link.digest, link.event) == (
        "s1", 3, "Ana@Example.com", "d" * 16, None)
    for check in (links.check, links.check_page):  # never an event link nor a wait's shared page
        with pytest.raises(links.BadLink):
            check(key, token, now=1_900_000_000)
    with pytest.raises(links.BadLink, match="expired"):
        links.check_person(key, token, now=2_000_000_000)
    with pytest.raises(links.BadLink):
        links.check_person(key, links.make_page(key, "s1", 3, 2_000_000_000), now=0)
    same = links.person_event_id("s1", 3, "ana@example.com", "approved")
    assert same == links.person_event_id("s1", 3, " ANA@example.COM", "approved")  # one person, one id
    assert len({same, links.person_event_id("s1", 3, "bo@example.com", "approved"),
                links.person_event_id("s1", 4, "ana@example.com", "approved"),
                links.person_event_id("s1", 3, "ana@example.com", "rejected")}) == 4
    shown = [{"event": "approved", "title": "Promote 1.4.2?", "deadline": 5.0, "policy": {"quorum": {}}}]
    digest = links.content_digest("release", shown)
    assert digest == links.content_digest("release", [{**shown[0], "deadline": 9.0, "policy": None}])
    assert digest != links.content_digest("release", [{**shown[0], "title": "Promote 9.9.9?"}])
    assert digest != links.content_digest("other", shown)


def test_the_waiting_notice_and_roast_session_show_each_approver_s_own_page(tmp_path):
    """In the terminal too (they were in JSON and notify only): the operator who started the gate
    sees whose link is whose, and that each is for that person alone."""
    wf = write_workflow(tmp_path, GATE)
    started = run_cli("execute", str(wf), env={"ROAST_PUBLIC_URL": PUBLIC})
    assert started.returncode == 0, started.stderr
    sid = re.search(r"session (\S+) is waiting", started.stderr).group(1)
    pages = gates.pages(sid)
    shown = run_cli("session", sid, env={"ROAST_PUBLIC_URL": PUBLIC})
    assert shown.returncode == 0, shown.stderr
    for text in (started.stderr, shown.stdout):
        assert "each approver's own page (send it to them only: it decides as that person):" in text, text
        for person, url in pages.items():
            assert f"{person}: {url}" in text, text
        assert "*@sre.example.com:" not in text  # a pattern names nobody: no page
    plain = run_cli("session", sid, env={"ROAST_PUBLIC_URL": ""})
    assert plain.returncode == 0 and "own page" not in plain.stdout  # no public URL: no links to give
