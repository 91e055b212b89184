"""The gate page a person sees (issue 22, roast/pages.py): forms from a schema, the posted form turned
into typed data by the same schema check as every channel, the deadline in words, and the page
itself — pure tests with tables of cases, then the rendered page in headless Chromium (served with
its CSP header from a loopback server), with screenshots under tests/artifacts/."""
from __future__ import annotations

import base64
import calendar
import hashlib
import html.parser
from html import escape as _e
import os
import re
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from roast import pages, schema
from roast.pages import Decision, Gate, GateEvent

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
NOW = calendar.timegm((2026, 12, 6, 14, 8, 0))  # a Sunday, 14:08 UTC
SESSION_ID = "7f3a9c1e5b2d4e6f8a0b1c2d3e4f5a6b"
DEPLOY = {"type": "object", "required": ["approver", "region"], "properties": {
    "approver": {"type": "string", "format": "email", "title": "Your work email",
                 "description": "Recorded with the deployment."},
    "region": {"enum": ["eu", "us"], "description": "Where to deploy first."},
    "canary": {"type": "boolean", "title": "Start with a 5% canary", "default": True},
    "percent": {"type": "integer", "minimum": 1, "maximum": 100, "title": "Rollout percentage"},
    "ticket": {"type": "string", "pattern": "^OPS-[0-9]+$", "title": "Change ticket",
               "description": "For example OPS-1234."}}}
REJECT = {"type": "object", "properties": {"why": {"type": "string", "minLength": 3, "title": "What is wrong"}}}


def _gate(**changes: Any) -> Gate:
    fields: dict[str, Any] = {
        "title": "Deploy 1.4.2 to production?",
        "events": (GateEvent("approved", "Approve and deploy", None, True), GateEvent("rejected", "Reject")),
        "description": "212 tests passed.\nBuild 1.4.2 is ready: 3 new features, 5 fixes.",
        "workflow": "release", "workflow_description": "Build, test and ship the web app",
        "deadline": NOW + 6720, "progress": "1 of 2 approvals: ana", "ref": SESSION_ID}
    fields.update(changes)
    return Gate(**fields)


def _render(gate: Gate, **kwargs: Any) -> str:
    return pages.render_gate(gate, now=NOW, csrf="csrf-value-1", action_url="/g/capability", **kwargs)


# --------------------------------------------------------------------------- form_fields

@pytest.mark.parametrize("prop, required, expected", [
    ({"type": "string"}, False, {"kind": "text", "label": "Thing name", "required": False}),
    ({"type": "string", "minLength": 2, "maxLength": 9, "pattern": "^a"}, True,
     {"kind": "text", "min_length": 2, "max_length": 9, "pattern": "^a", "required": True}),
    ({"type": "string", "format": "email"}, False, {"kind": "email"}),
    ({"type": "string", "format": "date"}, False, {"kind": "date"}),
    ({"type": "string", "format": "uri"}, False, {"kind": "text"}),
    ({"type": ["string", "null"]}, False, {"kind": "text"}),
    ({"enum": ["eu", "us"]}, False, {"kind": "radio", "choices": ("eu", "us")}),
    ({"enum": ["a", "b", "c", "d", "e"]}, False, {"kind": "select"}),
    ({"type": "integer", "enum": [1, 2]}, False, {"kind": "radio", "choices": (1, 2), "type": "integer"}),
    ({"type": "boolean"}, True, {"kind": "checkbox", "required": False}),  # absent is false: always sent
    ({"type": "boolean", "const": True}, False, {"kind": "checkbox", "required": True}),
    ({"type": "integer", "minimum": 1, "maximum": 9}, False, {"kind": "number", "step": "1", "minimum": 1,
                                                             "maximum": 9}),
    ({"type": "number"}, False, {"kind": "number", "step": "any"}),
    ({"type": "string", "title": "Ticket", "description": "OPS-…", "default": "OPS-1"}, False,
     {"label": "Ticket", "help": "OPS-…", "default": "OPS-1"}),
])
def test_each_schema_property_becomes_the_matching_control(prop, required, expected):
    schema_ = {"type": "object", "properties": {"thing_name": prop}, "required": ["thing_name"] if required else []}
    [field] = pages.form_fields(schema_)
    assert field.name == "thing_name"
    assert {key: getattr(field, key) for key in expected} == expected


def test_a_form_leaves_out_what_it_cannot_express_and_keeps_the_order():
    fields = pages.form_fields({"properties": {"b": {"type": "string"}, "tags": {"type": "array"},
                                               "a": {"type": "integer"}, "_csrf": {"type": "string"}}})
    assert [f.name for f in fields] == ["b", "a"]
    assert pages.form_fields(None) == [] and pages.form_fields({}) == []


# --------------------------------------------------------------------------- unsupported

@pytest.mark.parametrize("schema_, expected", [
    (None, []),
    ({}, []),
    (DEPLOY, []),
    (REJECT, []),
    ({"properties": {"tags": {"type": "array"}}}, ["'tags': a nested list (array)"]),
    ({"properties": {"who": {"type": "object"}}}, ["'who': a nested object"]),
    ({"properties": {"x": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}, ["'x': `oneOf`"]),
    ({"properties": {"x": {"type": ["string", "integer"]}}}, ["'x': a value of several types"]),
    ({"properties": {"x": {"$ref": "#/$defs/x"}}}, ["'x': `$ref`"]),
    ({"properties": {"_event": {"type": "string"}}}, ["'_event': the name '_event' is the page's own"]),
    ({"anyOf": [{"required": ["a"]}]}, ["`anyOf` at the top"]),
    ({"type": "array"}, ["must be a 'array'"]),
    ({"required": ["ghost"]}, ["'ghost' is required but not described"]),
    ({"additionalProperties": {"type": "string"}}, ["`additionalProperties` with a schema"]),
])
def test_unsupported_names_each_part_a_form_cannot_express_with_a_hint(schema_, expected):
    found = pages.unsupported(schema_)
    assert len(found) == len(expected), found
    for line, part in zip(found, expected):
        assert part in line and "hint: a page offers" in line, line


# --------------------------------------------------------------------------- parse_form

@pytest.mark.parametrize("form, data", [
    ({"approver": ["ana@example.com"], "region": ["eu"]}, {"approver": "ana@example.com", "region": "eu",
                                                            "canary": False}),
    ({"approver": ["ana@example.com"], "region": ["us"], "canary": ["true"], "percent": ["25"],
      "ticket": ["OPS-12"], "_csrf": ["x"], "_event": ["approved"], "_reason": ["ok"], "other": ["?"]},
     {"approver": "ana@example.com", "region": "us", "canary": True, "percent": 25, "ticket": "OPS-12"}),
    ({"approver": ["a@b.c"], "region": ["eu"], "percent": [""], "ticket": [""]},  # empty optional: omitted
     {"approver": "a@b.c", "region": "eu", "canary": False}),
    ({"approver": ["a@b.c"], "region": ["eu"], "percent": ["40.0"]},
     {"approver": "a@b.c", "region": "eu", "canary": False, "percent": 40}),
])
def test_a_posted_form_becomes_the_typed_event_data(form, data):
    assert pages.parse_form(DEPLOY, form) == (data, {})
    assert schema.problems(data, DEPLOY) == []


@pytest.mark.parametrize("schema_, form, data", [
    ({"properties": {"n": {"type": "number"}}}, {"n": ["2.5"]}, {"n": 2.5}),
    ({"properties": {"n": {"type": "number"}}}, {"n": ["-3"]}, {"n": -3}),
    ({"properties": {"n": {"enum": [1, 2, 3]}}}, {"n": ["2"]}, {"n": 2}),
    ({"properties": {"n": {"enum": [True, False]}}}, {"n": ["false"]}, {"n": False}),
    ({"properties": {"d": {"type": "string", "format": "date"}}}, {"d": ["2026-12-09"]}, {"d": "2026-12-09"}),
    ({"properties": {"s": {"type": "string"}}}, {"s": "given as one string"}, {"s": "given as one string"}),
    (None, {"_reason": ["fine"]}, {}),
])
def test_values_are_typed_by_the_schema(schema_, form, data):
    assert pages.parse_form(schema_, form) == (data, {})


@pytest.mark.parametrize("schema_, form, errors", [
    (DEPLOY, {}, {"approver": "is required", "region": "is required"}),
    (DEPLOY, {"approver": ["a@b.c"], "region": ["asia"]}, {"region": "must be one of: eu, us"}),
    (DEPLOY, {"approver": ["a@b.c"], "region": ["eu"], "percent": ["0"]}, {"percent": "must be at least 1"}),
    (DEPLOY, {"approver": ["a@b.c"], "region": ["eu"], "percent": ["101"]}, {"percent": "must be at most 100"}),
    (DEPLOY, {"approver": ["a@b.c"], "region": ["eu"], "percent": ["2.5"]}, {"percent": "must be a whole number"}),
    (DEPLOY, {"approver": ["a@b.c"], "region": ["eu"], "percent": ["lots"]}, {"percent": "must be a whole number"}),
    (DEPLOY, {"region": ["eu"], "percent": ["nan"]}, {"percent": "must be a whole number",
                                                      "approver": "is required"}),
    (DEPLOY, {"approver": ["a@b.c"], "region": ["eu"], "ticket": ["1234"]},
     {"ticket": "is not in the expected form (it must match ^OPS-[0-9]+$)"}),
    (REJECT, {"why": ["no"]}, {"why": "must be at least 3 characters"}),
    ({"properties": {"w": {"type": "string", "maxLength": 1}}}, {"w": ["ab"]}, {"w": "must be at most 1 character"}),
    ({"properties": {"n": {"type": "number", "exclusiveMinimum": 0}}}, {"n": ["0"]}, {"n": "must be more than 0"}),
    ({"properties": {"n": {"type": "number", "multipleOf": 5}}}, {"n": ["7"]}, {"n": "must be a multiple of 5"}),
    ({"properties": {"n": {"type": "number"}}}, {"n": ["inf"]}, {"n": "must be a number"}),
    ({"properties": {"ok": {"type": "boolean", "const": True}}}, {}, {"ok": "must be ticked"}),
    ({"properties": {"a": {"type": "string"}}, "minProperties": 2}, {"a": ["x"]},
     {"": "{'a': 'x'} does not have enough properties"}),
])
def test_a_refused_form_says_in_plain_words_what_is_wrong_with_each_field(schema_, form, errors):
    assert pages.parse_form(schema_, form) == (None, errors)


def test_without_jsonschema_a_form_is_refused_as_every_channel_refuses_it(monkeypatch):
    from roast.errors import UsageError

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # an import of it now fails
    with pytest.raises(UsageError, match="jsonschema package is not installed"):
        pages.parse_form(REJECT, {"why": ["because"]})
    assert pages.parse_form(None, {"why": ["because"]}) == ({}, {})  # no schema: nothing to check


# --------------------------------------------------------------------------- deadline_words

@pytest.mark.parametrize("offset, words", [
    (6720, "in 1 h 52 min, 16:00 UTC"),
    (6759, "in 1 h 52 min, 16:00 UTC"),  # never more time than there is
    (3600, "in 1 h, 15:08 UTC"),
    (1500, "in 25 min, 14:33 UTC"),
    (30, "in less than a minute, 14:08 UTC"),
    (12 * 3600, "in 12 h, Mon 7 Dec 02:08 UTC"),
    (86400 + 7200, "in 1 day 2 h, Mon 7 Dec 16:08 UTC"),
    (3 * 86400 + 112 * 60, "in 3 days, Wed 9 Dec 16:00 UTC"),
    (40 * 86400, "in 40 days, Fri 15 Jan 2027 14:08 UTC"),
    (0, "overdue since 14:08 UTC"),
    (-58 * 60, "overdue since 13:10 UTC"),
    (-2 * 86400, "overdue since Fri 4 Dec 14:08 UTC"),
])
def test_the_deadline_in_words_and_in_utc(offset, words):
    assert pages.deadline_words(NOW + offset, NOW) == words


# --------------------------------------------------------------------------- the page

class _Parsed(html.parser.HTMLParser):
    """The page's controls, labels, buttons, forms, style and text, for assertions."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.labels: set[str] = set()
        self.buttons: list[dict[str, str | None]] = []
        self.forms: list[dict[str, str | None]] = []
        self.style, self.text, self._in, self._label_depth = "", [], "", 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label":
            self._label_depth += 1
            if found.get("for"):
                self.labels.add(str(found["for"]))
        if tag in ("input", "select", "textarea") and found.get("type") != "hidden":
            self.controls.append({**found, "wrapped": "yes" if self._label_depth else None, "tag": tag})
        if tag == "input" and found.get("type") == "hidden":
            self.forms[-1].setdefault("hidden", "")
            self.forms[-1]["hidden"] += f"{found['name']}={found['value']};"  # type: ignore[operator]
        if tag == "button":
            self.buttons.append(found)
        if tag == "form":
            self.forms.append(found)
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.style += data
        else:
            self.text.append(data)


def test_the_page_offers_every_event_as_a_button_posting_the_csrf_value():
    page = _Parsed(_render(_gate()))
    assert [(b["value"], b["class"]) for b in page.buttons] == [("approved", "primary"), ("rejected", "secondary")]
    [form] = page.forms
    assert form["method"] == "post" and form["action"] == "/g/capability"
    assert form["hidden"] == "_csrf=csrf-value-1;"
    text = " ".join(page.text)
    for shown in ("Deploy 1.4.2 to production?", "212 tests passed.", "Build, test and ship the web app",
                  "Waiting for a decision", "in 1 h 52 min, 16:00 UTC", "1 of 2 approvals: ana",
                  "Approve and deploy", "Reject", "Reference 7f3a9c1e"):
        assert shown in text, shown


def test_without_labels_a_button_reads_the_event_name_and_the_primary_comes_first():
    gate = _gate(events=(GateEvent("rejected"), GateEvent("approved", primary=True)))
    assert [b.get("value") for b in _Parsed(_render(gate)).buttons] == ["approved", "rejected"]
    assert ">approved</button>" in _render(gate)


def test_an_event_with_a_schema_gets_its_own_form_with_typed_fields():
    gate = _gate(events=(GateEvent("approved", "Approve and deploy", DEPLOY, True),
                         GateEvent("rejected", "Reject", REJECT)))
    page = _Parsed(_render(gate))
    assert [f["hidden"] for f in page.forms] == ["_csrf=csrf-value-1;_event=approved;",
                                                 "_csrf=csrf-value-1;_event=rejected;"]
    by_name = {c["name"]: c for c in page.controls if c.get("type") != "radio"}
    assert by_name["approver"]["type"] == "email" and "required" in by_name["approver"]
    assert by_name["percent"]["type"] == "number" and by_name["percent"]["step"] == "1"
    assert (by_name["percent"]["min"], by_name["percent"]["max"]) == ("1", "100")
    assert by_name["canary"]["type"] == "checkbox" and "checked" in by_name["canary"]  # the default
    assert by_name["ticket"]["pattern"] == ".*(?:^OPS-[0-9]+$).*"
    assert by_name["why"]["minlength"] == "3" and "required" not in by_name["why"]
    assert [c["value"] for c in page.controls if c.get("type") == "radio"] == ["eu", "us"]
    assert "Where to deploy first." in page.text and "required" in page.text


def test_a_schema_with_its_own_reason_property_gets_no_second_reason_box():
    gate = _gate(events=(GateEvent("rejected", "Reject", {"properties": {"reason": {"type": "string"}}}),
                         GateEvent("approved", "Approve", DEPLOY, True)))
    names = [c["name"] for c in _Parsed(_render(gate)).controls]
    assert names.count("reason") == 1 and names.count("_reason") == 1  # the approve form keeps its box


def test_every_control_has_a_label_and_every_id_is_unique():
    gate = _gate(events=(GateEvent("approved", "Approve", DEPLOY, True), GateEvent("rejected", "Reject", REJECT),
                         GateEvent("later", "Ask again later")))
    text = _render(gate)
    page = _Parsed(text)
    assert len(page.controls) == 10  # 4 + 2 radios, 1, and a reason per form (3)
    for control in page.controls:
        assert control["wrapped"] or control.get("id") in page.labels, control
    ids = re.findall(r"\bid=\"?([\w-]+)", text)
    assert len(ids) == len(set(ids)), ids
    for described in re.findall(r'aria-describedby="([^"]+)"', text):
        assert all(part in ids for part in described.split()), described


def test_a_refused_form_comes_back_with_the_values_kept_and_each_message_beside_its_field():
    gate = _gate(events=(GateEvent("approved", "Approve", DEPLOY, True), GateEvent("rejected", "Reject", REJECT)))
    posted = {"_event": ["approved"], "approver": ["ana@example.com"], "region": ["us"], "percent": ["500"],
              "_reason": ["<b>ship</b> it"]}
    data, errors = pages.parse_form(DEPLOY, posted)
    assert data is None
    text = _render(gate, values=posted, errors=errors)
    assert 'value="ana@example.com"' in text and 'value="500"' in text
    assert re.search(r'value="us"[^>]*checked', text) and not re.search(r'value="eu"[^>]*checked', text)
    assert "&lt;b&gt;ship&lt;/b&gt; it</textarea>" in text
    assert re.search(r'aria-describedby="f0-3-err" aria-invalid="true"', text)
    assert "<p class=err id=f0-3-err>Must be at most 100</p>" in text
    assert "<p class='err alert' role=alert>Nothing was sent. Please correct the 1 field marked below.</p>" in text
    whole = _render(gate, values={"_event": ["rejected"]}, errors={"": "{'why': 'x'} is too short"})
    assert "Nothing was sent. {&#x27;why&#x27;: &#x27;x&#x27;} is too short" in whole
    assert "must be at least 3" not in text.lower()  # the other event's form is fresh


def test_everything_given_is_escaped():
    evil = "<script>alert(1)</script>"
    gate = _gate(title=evil, description=evil, workflow=evil, workflow_description=evil, progress=evil,
                 events=(GateEvent('x" onclick="y', evil, {"properties": {"q": {"title": evil, "description": evil,
                                                                               "default": evil}}}, True),))
    text = _render(gate)
    assert "<script" not in text and 'onclick="y' not in text
    assert text.count("&lt;script&gt;") >= 7


def test_the_page_shows_no_internals_only_a_short_reference():
    text = _render(_gate())
    assert SESSION_ID not in text and SESSION_ID[:8] in text
    assert "Opening this page changes nothing: only a button does." in text
    for internal in ("steps/", "/tmp", "ROAST", "roast resume", "--data", "workflow.yml", "session"):
        assert internal not in text, internal


def test_the_csp_allows_exactly_the_inline_style_and_nothing_else():
    text = _render(_gate())
    [style] = re.findall(r"<style>(.*?)</style>", text, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    csp = pages.csp_header(text)
    assert csp == pages.csp_header(style) == pages.csp_header()
    assert f"style-src 'sha256-{digest}';" in csp
    assert "default-src 'none'" in csp and "form-action 'self'" in csp and "script" not in csp
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")
    assert 'name=viewport content="width=device-width, initial-scale=1"' in text


def _luminance(colour: str) -> float:
    if len(colour) == 4:  # #fff
        colour = "#" + "".join(c * 2 for c in colour[1:])
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _rule(selector: str) -> dict[str, str]:
    [body] = re.findall(r"(?:^|})" + re.escape(selector) + r"{([^}]*)}", pages.STYLE)
    return dict(part.split(":", 1) for part in body.split(";"))


@pytest.mark.parametrize("selector, background", [
    ("body", None), (".open", None), (".good", None), (".bad", None), (".neutral", None),
    (".primary", None), (".secondary", None), (".kicker", "#f3f4f6"), (".help", "#ffffff"), (".opt", "#ffffff"),
    (".err", "#ffffff"), (".err", "#fdecee"), (".req", "#ffffff"), ("footer", "#f3f4f6"),
])
def test_text_has_a_contrast_of_at_least_4_5_to_1(selector, background):
    rule = _rule(selector)
    background = background or rule.get("background") or _rule("body")["background"]
    light, dark = sorted((_luminance(rule["color"]), _luminance(background)), reverse=True)
    assert (light + 0.05) / (dark + 0.05) >= 4.5, (selector, rule["color"], background)


@pytest.mark.parametrize("decision, status, shown, absent", [
    (Decision("approved", actor="ana@example.com", verified=True, at=NOW - 360, reason="Looks good",
              outcome="completed"),
     "Decided: Approve and deploy", ["Decision: Approve and deploy", "By ana@example.com (verified), today 14:02 UTC.",
                 "Reason: “Looks good”", "The workflow then finished successfully."], ["Deadline"]),
    (Decision("rejected", actor="link", at=NOW - 86400 * 3, outcome="failed",
              outcome_reason="the step 'rollback' exited with status 2"),
     "Decided: Reject", ["Decision: Reject", "By someone with the link, Thu 3 Dec 14:08 UTC.",
                 "The workflow then failed: the step 'rollback' exited with status 2."], ["verified", "Reason"]),
    (Decision("timeout", at=NOW - 60, outcome="timed_out"), "Timed out",
     ["Nobody decided in time", "The deadline passed today 14:07 UTC.", "nobody decided in time."], ["By "]),
    (None, "Closed", ["This request is closed"], ["By "]),
])
def test_after_a_decision_the_page_says_who_when_why_and_what_became_of_the_session(decision, status, shown,
                                                                                      absent):
    text = _render(_gate(status="decided", decision=decision))
    page = _Parsed(text)
    assert page.buttons == [] and page.forms == [] and page.controls == []
    assert "Opening this page changes nothing" not in text and "Reference 7f3a9c1e" in text
    words = " ".join("".join(page.text).split())
    assert f"id=status>{_e(status)}</span>" in text
    for part in shown:
        assert part in words, (part, words)
    for part in absent:
        assert part not in words, part


def test_status_is_told_by_colour_and_by_text():
    tones = {"open": _render(_gate()),
             "good": _render(_gate(status="decided", decision=Decision("approved", actor="ana"))),
             "bad": _render(_gate(status="decided", decision=Decision("rejected", actor="ana"))),
             "neutral": _render(_gate(status="decided", decision=Decision("timeout")))}
    for tone, text in tones.items():
        assert re.search(rf"<span class='pill {tone}' id=status>\w", text), tone
    assert "Overdue: waiting for a decision" in _render(_gate(deadline=NOW - 5))
    assert "none, this waits until someone decides" in _render(_gate(deadline=None))


# --------------------------------------------------------------------------- in a real browser

class _Site(ThreadingHTTPServer):
    pages: dict[str, str]
    posts: list[str]


class _Handler(BaseHTTPRequestHandler):
    server: _Site

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.server.pages.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Security-Policy", pages.csp_header(body))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.server.posts.append(self.rfile.read(length).decode())
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"received")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[_Site]:
    server = _Site(("127.0.0.1", 0), _Handler)
    server.pages, server.posts = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    pytest.importorskip("selenium") if not os.environ.get("CI") else None
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = "needs chromium and chromium-driver (bash .ci/install-chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1000",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _shoot(driver: Any, name: str, width: int) -> None:
    """A screenshot of the whole page at `width` CSS pixels."""
    driver.set_window_size(width, 900)
    for _ in range(3):  # the window's frame is not part of the viewport: measure, then correct
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight,"
                                      " document.documentElement.scrollHeight]")
        size = driver.get_window_size()
        driver.set_window_size(size["width"] + width - inner[0], size["height"] + max(inner[2], 600) - inner[1])
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}-{width}.png"))


def _problems(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def test_in_chromium_the_page_loads_cleanly_and_required_fields_block_submit(site, browser):
    from selenium.webdriver.common.by import By

    gate = _gate(events=(GateEvent("approved", "Approve and deploy", DEPLOY, True),
                         GateEvent("rejected", "Reject", REJECT)))
    site.pages["/form"] = _render(gate)
    base = f"http://127.0.0.1:{site.server_address[1]}"
    browser.get(base + "/form")
    assert _problems(browser) == []  # no CSP violation, no console error
    assert browser.find_element(By.TAG_NAME, "h1").text == "Deploy 1.4.2 to production?"
    for width in (1280, 390):
        _shoot(browser, "gate-form", width)
    approve = browser.find_element(By.CSS_SELECTOR, "button.primary")
    approve.click()  # nothing filled in: the browser refuses to send it
    assert browser.current_url == base + "/form" and site.posts == []
    browser.find_element(By.NAME, "approver").send_keys("ana@example.com")
    browser.find_element(By.CSS_SELECTOR, "input[name=region][value=us]").click()
    browser.find_element(By.NAME, "ticket").send_keys("1234")  # does not match the pattern
    approve.click()
    assert site.posts == []
    browser.find_element(By.NAME, "ticket").clear()
    browser.find_element(By.NAME, "ticket").send_keys("OPS-77")
    browser.find_element(By.NAME, "percent").send_keys("25")
    browser.find_element(By.NAME, "canary").click()  # untick the default
    browser.find_element(By.ID, "f0-reason").send_keys("ship it")
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    from selenium.webdriver.support.ui import WebDriverWait

    # the answer page replaces the form once the POST returns (under load, later than the click)
    WebDriverWait(browser, 30, poll_frequency=0.05).until(lambda b: "received" in b.page_source)
    [posted] = site.posts
    form = urllib.parse.parse_qs(posted, keep_blank_values=True)
    assert form["_csrf"] == ["csrf-value-1"] and form["_event"] == ["approved"] and form["_reason"] == ["ship it"]
    assert pages.parse_form(DEPLOY, form) == ({"approver": "ana@example.com", "region": "us", "canary": False,
                                               "percent": 25, "ticket": "OPS-77"}, {})


def test_in_chromium_the_plain_refused_and_decided_pages_read_well_on_a_desktop_and_a_phone(site, browser):
    from selenium.webdriver.common.by import By

    forms = _gate(events=(GateEvent("approved", "Approve and deploy", DEPLOY, True),
                          GateEvent("rejected", "Reject", REJECT)))
    posted = {"_event": ["approved"], "approver": ["ana@example.com"], "region": ["us"], "percent": ["500"],
              "ticket": ["1234"]}
    _, errors = pages.parse_form(DEPLOY, posted)
    site.pages.update({
        "/plain": _render(_gate()),
        "/refused": _render(forms, values=posted, errors=errors),
        "/decided": _render(_gate(status="decided", decision=Decision(
            "approved", actor="ana@example.com", verified=True, at=NOW - 360, reason="Looks good, canary first",
            outcome="completed"))),
        "/failed": _render(_gate(status="decided", decision=Decision(
            "rejected", actor="bo@example.com", verified=True, at=NOW - 60, reason="Tests are flaky",
            outcome="failed", outcome_reason="the rollback step exited with status 2")))})
    base = f"http://127.0.0.1:{site.server_address[1]}"
    for path in site.pages:
        browser.get(base + path)
        assert _problems(browser) == [], path
        for width in (1280, 390):
            _shoot(browser, f"gate-{path[1:]}", width)
        if path == "/plain":  # keyboard order: the reason, then the primary button, then the other
            from selenium.webdriver.common.keys import Keys

            body = browser.find_element(By.TAG_NAME, "body")
            body.send_keys(Keys.TAB)
            order = [browser.switch_to.active_element.get_attribute("name")]
            for _ in range(2):
                browser.switch_to.active_element.send_keys(Keys.TAB)
                active = browser.switch_to.active_element
                order.append(active.get_attribute("value") if active.tag_name == "button" else active.tag_name)
            assert order == ["_reason", "approved", "rejected"]
    assert site.posts == []  # loading and looking never posts
