"""Signed approval links are shown where a person looks (issue 15): the waiting notice, `roast
session ID` and its `--json` `links`, once ROAST_PUBLIC_URL says where `roast serve` is reachable."""
from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import run_cli

from roast import api

PUBLIC = "https://roast.example.com"


def _gate(tmp_path: Path) -> Path:
    path = tmp_path / "gate.yml"
    path.write_text("steps:\n  - wait_for_event:\n      approved: ['$(echo ok)']\n      rejected: ['$(echo no)']\n"
                    "      within: 1h\n")
    return path


def test_the_notice_and_roast_session_show_one_working_link_per_event(tmp_path: Path) -> None:
    env = {"ROAST_PUBLIC_URL": PUBLIC}
    ran = run_cli("execute", str(_gate(tmp_path)), "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    sid = json.loads(ran.stdout)[0]["session_id"]
    shown = dict(re.findall(r"^ {5}(approved|rejected): (https://\S+)$", ran.stderr, re.M))
    assert set(shown) == {"approved", "rejected"}, ran.stderr
    for event, url in shown.items():
        assert url.startswith(f"{PUBLIC}/a/")
        link, session, _ = api.check_link(url.rsplit("/", 1)[1])  # a genuine, signed capability
        assert (link.session_id, link.event, session.id) == (sid, event, sid)
    detail = run_cli("session", sid, env=env)
    assert "approval links:" in detail.stdout and shown["approved"] in detail.stdout, detail.stdout
    doc = json.loads(run_cli("session", sid, "--json", env=env).stdout)
    assert doc["links"] == shown


def test_without_a_public_url_there_are_no_links(tmp_path: Path) -> None:
    ran = run_cli("execute", str(_gate(tmp_path)), "--json")
    sid = json.loads(ran.stdout)[0]["session_id"]
    assert "/a/" not in ran.stderr and "approval link" not in ran.stderr
    assert json.loads(run_cli("session", sid, "--json").stdout)["links"] == {}


def test_roast_link_max_age_bounds_a_link_without_a_deadline(tmp_path: Path) -> None:
    path = tmp_path / "open.yml"
    path.write_text("steps:\n  - wait_for_event:\n      approved: ['$(echo ok)']\n")
    env = {"ROAST_PUBLIC_URL": PUBLIC, "ROAST_LINK_MAX_AGE": "2h"}
    ran = run_cli("execute", str(path), "--json", env=env)
    sid = json.loads(ran.stdout)[0]["session_id"]
    url = json.loads(run_cli("session", sid, "--json", env=env).stdout)["links"]["approved"]
    link, session, _ = api.check_link(url.rsplit("/", 1)[1])
    assert abs(link.expires - (session.updated_at + 2 * 3600)) < 5
    bad = run_cli("session", sid, env={**env, "ROAST_LINK_MAX_AGE": "soon"})
    assert "no approval links" in bad.stderr and "ROAST_LINK_MAX_AGE" in bad.stderr, bad.stderr
