"""SSH-signed approvals (issue 23) with the real OpenSSH `ssh-keygen`: keys made in tmp_path, an
allowed_signers file, and every refusal — unknown key, another session/wait/event, other data, an
altered statement, another namespace, too old, from the future, a malformed header."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from roast.errors import UsageError
from roast.signed import (
    SignatureRefused,
    Statement,
    accept,
    check_statement,
    data_digest,
    from_header,
    make_statement,
    parse_statement,
    replay_key,
    sign,
    sign_approval,
    to_header,
    verify,
)

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DATA = {"build": "b-17", "notes": "ünïcode ok"}


def _key(tmp_path: Path, name: str, passphrase: str = "") -> Path:
    path = tmp_path / "keys" / name
    path.parent.mkdir(exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def _public(key: Path) -> str:
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture
def ana(tmp_path: Path) -> Path:
    return _key(tmp_path, "ana")


@pytest.fixture
def allowed(tmp_path: Path, ana: Path) -> Path:
    bo = _key(tmp_path, "bo")
    path = tmp_path / "allowed_signers"
    path.write_text(f"# who may sign roast approvals\nana@example.com namespaces=\"roast\" {_public(ana)}\n"
                    f"bo@example.com {_public(bo)}\n")
    return path


def _signed(key: Path, **changes: object) -> tuple[str, str]:
    fields = {"session": "s-1234", "wait": "2", "event": "approved", "data": DATA, "reason": "looks good"}
    fields.update(changes)
    return sign_approval(fields["session"], fields["wait"], fields["event"], fields["data"], key, now=NOW,
                         reason=fields["reason"])


def _accept(text: str, signature: str, allowed: Path, **changes: object) -> tuple[str, Statement]:
    fields: dict = {"session_id": "s-1234", "wait": 2, "event": "approved", "data": DATA, "now": NOW + 60}
    fields.update(changes)
    return accept(text, signature, allowed, **fields)


def test_an_approval_signed_by_an_allowed_key_is_accepted_with_its_principal(ana, allowed):
    text, signature = _signed(ana)
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----")
    principal, statement = _accept(text, signature, allowed)
    assert principal == "ana@example.com"
    assert (statement.session, statement.wait, statement.event, statement.reason) == (
        "s-1234", "2", "approved", "looks good")
    assert statement.data_sha256 == data_digest({"notes": "ünïcode ok", "build": "b-17"})
    assert verify(text, signature, allowed) == "ana@example.com"


def test_a_reason_in_any_script_or_with_undecodable_bytes_is_signed_and_checked(ana, allowed):
    for reason in ("größer als 2 ✓", "bad byte \udcff from argv", None):
        text, signature = _signed(ana, reason=reason)
        assert text.isascii()
        assert _accept(text, signature, allowed)[1].reason == reason


def test_the_statement_is_the_documented_canonical_text(ana):
    statement = make_statement("s-1234", 2, "approved", {"b": 1, "a": [1, 2]}, now=NOW + 0.7,
                               reason='ship "it"\nnow', nonce="ab" * 16)
    assert statement.text() == (
        "roast-approval-v1\nsession: s-1234\nwait: 2\nevent: approved\n"
        f"data-sha256: {data_digest({'a': [1, 2], 'b': 1})}\n"
        "reason: \"ship \\\"it\\\"\\nnow\"\nat: 2027-01-15T08:00:00Z\nnonce: " + "ab" * 16 + "\n")
    assert parse_statement(statement.text()) == statement._replace(at=int(NOW))
    # the digest is of the canonical JSON (sorted keys, no spaces, UTF-8); no data is {}
    import hashlib
    assert data_digest({"b": 1, "a": "é"}) == hashlib.sha256('{"a":"é","b":1}'.encode()).hexdigest()
    assert data_digest(None) == data_digest({})


def test_a_key_not_in_the_allowed_signers_is_refused(tmp_path, allowed):
    eve = _key(tmp_path, "eve")
    text, signature = _signed(eve)
    with pytest.raises(SignatureRefused, match="signed by a key that is not in the allowed signers") as info:
        _accept(text, signature, allowed)
    assert info.value.exit_code == 3


@pytest.mark.parametrize("changes, words", [
    ({"session_id": "s-9999"}, "signed for session 's-1234', not 's-9999'"),
    ({"wait": 3}, "signed for wait '2', not '3'"),
    ({"event": "rejected"}, "signed for event 'approved', not 'rejected'"),
    ({"data": {**DATA, "build": "b-18"}}, "the event data is not the data that was signed"),
    ({"data": None}, "the event data is not the data that was signed"),
    ({"now": NOW + 3601}, "more than 3600 s ago"),
    ({"now": NOW - 301}, "in the future"),
])
def test_an_approval_for_another_delivery_or_time_is_refused(ana, allowed, changes, words):
    text, signature = _signed(ana)
    with pytest.raises(SignatureRefused, match=words.replace("(", r"\(")) as info:
        _accept(text, signature, allowed, **changes)
    assert info.value.exit_code == 3 and info.value.hint


@pytest.mark.parametrize("old, new", [
    ("reason: \"looks good\"", "reason: \"looks great\""),
    ("nonce: ", "nonce: 0"),
    ("at: 2027-01-15T08:00:00Z", "at: 2027-01-15T08:00:01Z"),
])
def test_a_statement_altered_after_signing_is_refused(ana, allowed, old, new):
    text, signature = _signed(ana)
    assert old in text
    with pytest.raises(SignatureRefused, match="does not verify for 'ana@example.com'"):
        _accept(text.replace(old, new), signature, allowed)


def test_a_statement_with_other_data_and_a_matching_digest_is_still_refused(ana, allowed):
    """Changing the data and its digest together changes the signed text: the signature fails."""
    text, signature = _signed(ana)
    other = {**DATA, "build": "evil"}
    forged = text.replace(data_digest(DATA), data_digest(other))
    with pytest.raises(SignatureRefused, match="does not verify"):
        _accept(forged, signature, allowed, data=other)


def test_a_signature_in_another_namespace_is_refused(ana, allowed, tmp_path):
    text = make_statement("s-1234", 2, "approved", DATA, now=NOW).text()
    message = tmp_path / "m"
    message.write_text(text)
    subprocess.run(["ssh-keygen", "-Y", "sign", "-n", "git", "-f", str(ana), str(message)], check=True,
                   capture_output=True)
    signature = Path(f"{message}.sig").read_text()
    with pytest.raises(SignatureRefused):
        _accept(text, signature, allowed)


def test_a_key_listed_for_several_identities_needs_the_principal_named(tmp_path, ana):
    shared = tmp_path / "shared_signers"
    shared.write_text(f"ana@example.com,ops@example.com {_public(ana)}\n")
    text, signature = _signed(ana)
    with pytest.raises(SignatureRefused, match="listed for ana@example.com, ops@example.com, not for one"):
        verify(text, signature, shared)
    assert verify(text, signature, shared, principal="ops@example.com") == "ops@example.com"
    with pytest.raises(SignatureRefused, match="does not verify for 'bo@example.com'"):
        verify(text, signature, shared, principal="bo@example.com")


def test_a_key_listed_under_a_pattern_is_no_identity(tmp_path, ana):
    patterned = tmp_path / "patterned_signers"
    patterned.write_text(f"*@example.com {_public(ana)}\n")
    text, signature = _signed(ana)
    with pytest.raises(SignatureRefused, match="not for one identity"):
        verify(text, signature, patterned)


@pytest.mark.parametrize("signature, words", [
    ("", "not an armored SSH signature"),
    ("hello", "not an armored SSH signature"),
    ("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n", "cannot be read: ssh-keygen says: "),
])
def test_a_malformed_signature_is_refused(ana, allowed, signature, words):
    text, _ = _signed(ana)
    with pytest.raises(SignatureRefused, match=words):
        _accept(text, signature, allowed)


def test_the_same_statement_has_one_replay_key_however_often_it_is_signed(ana, tmp_path):
    statement = make_statement("s-1234", 2, "approved", DATA, now=NOW)
    again = make_statement("s-1234", 2, "approved", DATA, now=NOW)
    assert statement.nonce != again.nonce and len(statement.nonce) == 32
    assert replay_key(statement) == replay_key(parse_statement(statement.text()))
    assert replay_key(statement) != replay_key(again)
    signature = sign(statement.text(), ana)
    assert replay_key(signature) == replay_key(signature.replace("\n", "\r\n") + "\n")
    assert replay_key(signature) != replay_key(sign(again.text(), ana))
    assert len(replay_key(statement)) == 64


@pytest.mark.parametrize("mangle, words", [
    (lambda t: t.replace("roast-approval-v1", "roast-approval-v2"), "not a roast-approval-v1 statement"),
    (lambda t: t.rstrip("\n"), "not a roast-approval-v1 statement"),
    (lambda t: t + "extra: 1\n", "not a roast-approval-v1 statement"),
    (lambda t: t.replace("session: ", "Session: "), "line 'Session: s-1234' should be `session: …`"),
    (lambda t: t.replace("event: approved", "event:approved"), "should be `event: …`"),
    (lambda t: t.replace("reason: \"looks good\"", "reason: 3"), "reason is not a JSON string or null"),
    (lambda t: t.replace("reason: \"looks good\"", "reason: {"), "reason is not a JSON string or null"),
    (lambda t: t.replace("reason: \"looks good\"", "reason: \"looks\\u0020good\""), "not in canonical form"),
    (lambda t: t.replace("T08:00:00Z", "T08:00:00+00:00"), "`at`, `data-sha256` or `nonce` is malformed"),
    (lambda t: t.replace("data-sha256: ", "data-sha256: 0"), "`at`, `data-sha256` or `nonce` is malformed"),
    (lambda t: t.replace("\n", "\r\n"), "not a roast-approval-v1 statement"),
    (lambda t: t.replace("nonce: ", "nonce: ~"), "`nonce` is malformed"),
    (lambda t: t.replace("reason: \"looks good\"", "reason: \"l\u00f6oks\""), "not in canonical form"),
])
def test_parse_statement_accepts_only_the_canonical_text(ana, mangle, words):
    text = make_statement("s-1234", 2, "approved", DATA, now=NOW, reason="looks good").text()
    with pytest.raises(SignatureRefused, match=words):
        parse_statement(mangle(text))


def test_check_statement_allows_a_little_clock_skew_and_the_whole_max_age():
    statement = make_statement("s-1234", "steps.1", "approved", None, now=NOW)
    for now in (NOW - 300, NOW, NOW + 3600):
        check_statement(statement, session_id="s-1234", wait="steps.1", event="approved", data={}, now=now)
    with pytest.raises(SignatureRefused, match="more than 60 s ago"):
        check_statement(statement, session_id="s-1234", wait="steps.1", event="approved", data={}, now=NOW + 61,
                        max_age=60)


@pytest.mark.parametrize("field, value", [("session", ""), ("wait", "a\nb"), ("event", " approved")])
def test_a_statement_cannot_be_made_from_a_field_that_would_break_its_lines(field, value):
    fields = {"session": "s-1234", "wait": "2", "event": "approved"}
    fields[field] = value
    with pytest.raises(UsageError, match=f"the {field}"):
        make_statement(fields["session"], fields["wait"], fields["event"], {}, now=NOW)


def test_the_header_carries_the_statement_and_signature_unchanged(ana, allowed):
    text, signature = _signed(ana)
    header = to_header(text, signature)
    assert "=" not in header and "\n" not in header and header.isascii()
    assert from_header(f" {header} ") == (text, signature)
    assert _accept(*from_header(header), allowed)[0] == "ana@example.com"


@pytest.mark.parametrize("value, words", [
    ("not base64!", "not base64url of a JSON object"),
    ("e30", "must hold exactly"),                                  # {}
    (to_header("a", "b")[:-4], "not base64url of a JSON object"),
    ("x" * 20000, "too large"),
])
def test_a_malformed_header_is_refused(value, words):
    with pytest.raises(SignatureRefused, match=words):
        from_header(value)
    import base64
    extra = base64.urlsafe_b64encode(json.dumps({"statement": "a", "signature": 1}).encode()).decode()
    with pytest.raises(SignatureRefused, match="both strings"):
        from_header(extra)


def test_a_key_with_a_passphrase_fails_at_once_instead_of_prompting(tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    locked = _key(tmp_path, "locked", passphrase="secret words")
    with pytest.raises(UsageError, match="needs a passphrase, and roast asks for none") as info:
        sign("roast-approval-v1\n", locked)
    assert "ssh-add" in info.value.hint and info.value.exit_code == 2


def test_a_private_key_readable_by_others_is_refused_with_the_fix(ana):
    ana.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others") as info:
        sign("x\n", ana)
    assert info.value.hint == f"chmod 600 {ana}"


def test_missing_files_and_a_missing_ssh_keygen_are_usage_errors(tmp_path, ana, allowed, monkeypatch):
    with pytest.raises(UsageError, match="no SSH key at"):
        sign("x\n", tmp_path / "nope")
    text, signature = _signed(ana)
    with pytest.raises(UsageError, match="no allowed_signers file") as info:
        verify(text, signature, tmp_path / "nope")
    assert "ROAST_ALLOWED_SIGNERS" in info.value.hint
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="need OpenSSH's ssh-keygen"):
        sign("x\n", ana)


def test_the_temporary_files_are_removed(tmp_path, ana, allowed, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    text, signature = _signed(ana)
    _accept(text, signature, allowed)
    with pytest.raises(SignatureRefused):
        _accept(text.replace("looks good", "looks bad"), signature, allowed)
    assert list(scratch.iterdir()) == []



def test_importing_the_module_costs_the_resume_path_nothing():
    """subprocess, tempfile and the rest load only when a signature is made or checked."""
    import sys

    probe = ("import sys; import roast.signed, roast.policy; "
             "print(sorted(m for m in ('subprocess', 'tempfile', 'secrets', 'base64', 'typing', 'dataclasses') "
             "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
