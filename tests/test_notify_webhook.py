"""`notify: - webhook: URL` (issue 15): once a wait is saved, roast POSTs its details to a receiver,
signed with Standard Webhooks headers, retrying 5xx; a failure is a warning and never loses the wait.
The receiver is a real HTTP server on loopback; roast runs as a real process."""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _receiver import Receiver, receiving
from conftest import run_cli

import roast
from roast import api, webhooks

SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
TOKEN = "tok-3c1f9e77a2"  # a credential in the receiver's URL: never shown, never stored


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[Receiver]]]:
    with receiving(f"/hooks/roast?token={TOKEN}") as found:
        yield found


def _workflow(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "gate" / "workflow.yml"
    path.parent.mkdir()
    path.write_text(f"""
steps:
  - approval:
      wait_for_event:
        approved: ["$(echo approved)"]
        within: 1h
        notify:
          - webhook: "{url}"
{extra}
""")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "ROAST_NOTIFY_SECRET": SECRET}


def test_a_saved_wait_is_posted_signed_with_its_details(tmp_path: Path, receiver) -> None:
    url, got = receiver
    # a URL holding a credential comes from the environment, which is never saved with a session
    path = _workflow(tmp_path, "{{ env.HOOK_URL }}")
    ran = run_cli("execute", str(path), "--json", env={**_env(), "HOOK_URL": url})
    assert ran.returncode == 0, ran.stderr
    sid = json.loads(ran.stdout)[0]["session_id"]
    assert roast.session(sid).status == "waiting"
    assert len(got.seen) == 1
    headers, body = got.seen[0]
    assert webhooks.verify([SECRET], headers, body, now=float(headers["webhook-timestamp"])) == headers["webhook-id"]
    sent = json.loads(body)
    assert sent["type"] == "roast.wait.started" and sent["session_id"] == sid
    assert sent["events"] == ["approved"] and sent["deadline"].endswith("Z")
    assert sent["resume"]["approved"].startswith("roast resume ") and sid in sent["resume"]["approved"]
    row = [h for h in api.history(sid) if h.path == "steps[0].notify[0]"]
    assert len(row) == 1 and row[0].status == "ok" and ": 200 (" in row[0].output
    # the URL's credential is nowhere: not in what roast printed, not in the store
    assert TOKEN not in ran.stderr and TOKEN not in row[0].output
    home = Path(os.environ["ROAST_HOME"])
    for file in home.rglob("*"):
        if file.is_file():
            assert TOKEN.encode() not in file.read_bytes(), file
    done = run_cli("resume", "-s", sid, "-e", "approved")
    assert done.returncode == 0 and roast.session(sid).status == "completed", done.stderr


def test_a_5xx_is_retried_with_the_same_webhook_id_and_every_attempt_is_recorded(tmp_path: Path,
                                                                                  receiver) -> None:
    url, got = receiver
    got.answers.extend([503, 200])
    ran = run_cli("execute", str(_workflow(tmp_path, url)), "--json", env=_env())
    assert ran.returncode == 0, ran.stderr
    sid = json.loads(ran.stdout)[0]["session_id"]
    assert len(got.seen) == 2
    assert got.seen[0][0]["webhook-id"] == got.seen[1][0]["webhook-id"]  # one message, retried
    row = [h for h in api.history(sid) if h.path == "steps[0].notify[0]"][0]
    assert row.status == "ok" and "503 (" in row.output and "200 (" in row.output, row.output


def test_a_refusing_receiver_is_a_warning_and_the_wait_is_kept(tmp_path: Path, receiver) -> None:
    url, got = receiver
    got.answers.append(400)  # not retried: the receiver said no
    ran = run_cli("execute", str(_workflow(tmp_path, url, '          - "$(echo after)"')), "--json", env=_env())
    assert ran.returncode == 0, ran.stderr
    sid = json.loads(ran.stdout)[0]["session_id"]
    assert len(got.seen) == 1
    assert "warning" in ran.stderr and "failed after 1 attempt(s): 400" in ran.stderr and "still waiting" in ran.stderr
    assert TOKEN not in ran.stderr
    assert roast.session(sid).status == "waiting"
    assert run_cli("resume", "-s", sid, "-e", "approved").returncode == 0
    assert roast.session(sid).status == "completed"


def test_without_a_secret_the_post_is_unsigned_but_carries_an_id(tmp_path: Path, receiver) -> None:
    url, got = receiver
    env = {k: v for k, v in os.environ.items() if k != "ROAST_NOTIFY_SECRET"}
    ran = run_cli("execute", str(_workflow(tmp_path, url)), env=env)
    assert ran.returncode == 0, ran.stderr
    headers, _ = got.seen[0]
    assert headers["webhook-id"].startswith("msg_") and "webhook-signature" not in headers


def test_the_short_form_and_bad_urls_at_validate_time(tmp_path: Path) -> None:
    path = tmp_path / "wf.yml"
    path.write_text("steps:\n  - wait_for_event:\n      go: ['$(true)']\n      notify: {webhook: 'ftp://x'}\n")
    ran = run_cli("validate", str(path))
    assert ran.returncode == 2 and "`webhook:` takes an https:// or http:// URL" in ran.stderr, ran.stderr
    path.write_text("steps:\n  - wait_for_event:\n      go: ['$(true)']\n"
                    "      notify: {webhook: 'https://hooks.example.com/{{ env.get(\"X\", \"\") }}'}\n")
    assert run_cli("validate", str(path)).returncode == 0
    path.write_text("steps:\n  - webhook: $(echo a named command, not a notify)\n")
    ran = run_cli("execute", str(path))
    assert ran.returncode == 0 and "a named command" in ran.stdout, ran.stderr


def _home_bytes() -> bytes:
    home = Path(os.environ["ROAST_HOME"])
    return b"".join(f.read_bytes() for f in home.rglob("*") if f.is_file())


def test_a_dripping_receiver_cannot_hold_execute_past_roast_notify_timeout(tmp_path: Path) -> None:
    with receiving("/hooks/roast", drip=0.2) as (url, got):
        ran = run_cli("execute", str(_workflow(tmp_path, url)), "--json",
                      env={**_env(), "ROAST_NOTIFY_TIMEOUT": "2"}, timeout=60)
    assert ran.returncode == 0, ran.stderr
    sid = json.loads(ran.stdout)[0]["session_id"]
    assert roast.session(sid).status == "waiting"
    assert "warning" in ran.stderr and "no complete answer within" in ran.stderr, ran.stderr
    assert 1 <= len(got.seen) <= 3


@pytest.mark.parametrize("junk", [" x", "\tx"])
def test_a_url_with_a_space_or_tab_never_shows_its_token(tmp_path: Path, junk: str) -> None:
    with receiving() as (url, got):
        bad = f"{url}/ok?token={TOKEN}{junk}"
        ran = run_cli("execute", str(_workflow(tmp_path, "{{ env.HOOK_URL }}")), "--json",
                      env={**_env(), "HOOK_URL": bad})
        assert ran.returncode == 0, ran.stderr
        sid = json.loads(ran.stdout)[0]["session_id"]
        shown = run_cli("session", sid, "--json")
    assert got.seen == []
    assert "warning" in ran.stderr and "127.0.0.1" in ran.stderr, ran.stderr
    for text in (ran.stdout, ran.stderr, shown.stdout, shown.stderr):
        assert TOKEN not in text and "/ok" not in text
    assert TOKEN.encode() not in _home_bytes()
