"""SSH-signed approvals (issue 23): a small signed statement, made and checked with OpenSSH's
`ssh-keygen -Y sign|find-principals|verify` under the namespace `roast` — no cryptography of our own.

The statement binds one delivery: the session, the wait, the event, the SHA-256 of the event data's
canonical JSON (sorted keys, no spaces, UTF-8; no data is `{}`), the reason, a UTC timestamp and a
random nonce. Its text is canonical, one field per line, in this order, each line ending in `\\n`:

    roast-approval-v1
    session: 7f3kq2ab
    wait: 2
    event: approved
    data-sha256: 44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
    reason: "looks good"
    at: 2026-12-06T16:45:21Z
    nonce: 9b1c0f2e5d7a4c3b8e6f1a2d3c4b5a69

`reason` is an ASCII JSON string (or `null`), so a relay cannot put words in the signer's mouth. The
signer's identity is not in the statement: it is the principal that `ROAST_ALLOWED_SIGNERS` (OpenSSH's
`allowed_signers` format) lists for the key, and a key must be listed under exactly one identity.

HTTP: the header `Roast-Signature` carries base64url (unpadded) of the UTF-8 JSON object
`{"statement": TEXT, "signature": ARMORED_SSHSIG}` (`to_header`/`from_header`), so a bot can relay a
person's signed approval unchanged.

Checks (`check_statement`) refuse another session, wait or event, other data, a timestamp older than
`max_age` or more than `skew` ahead; replay is refused by the store, which records `replay_key` once.
A refused signature raises `SignatureRefused` (exit 3) saying why; a key that cannot sign raises
`UsageError` (exit 2). I/O: `ssh-keygen` subprocesses, and their files in a private temporary
directory removed afterwards. The signing subprocess gets no terminal and no stdin, so it can never
wait for a passphrase: a key that needs one must be in ssh-agent.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from roast.errors import Refused, UsageError
from roast.expressions import iso
from roast.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
# subprocess, tempfile, secrets and base64 are imported where they are used: importing this module
# must cost nothing on the resume path (tests/test_startup.py).

NAMESPACE = "roast"
VERSION = "roast-approval-v1"
FIELDS = ("session", "wait", "event", "data-sha256", "reason", "at", "nonce")
MAX_AGE = 3600.0  # seconds a signed statement stays acceptable (a relay may be slow)
SKEW = 300.0  # seconds a signer's clock may run ahead of ours
MAX_HEADER = 16384  # bytes of a `Roast-Signature` header
_TIMEOUT = 30.0
_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_HINT = "sign it again with `roast approve … --key KEY` for this session, wait and event"


class SignatureRefused(Refused):
    """A signed approval was refused (bad signature, unknown key, wrong session/wait/event/data, too
    old, replayed): nothing changed."""

    code = "signature_refused"


class Statement(Record):
    """What a signer approves: `session`, `wait` (its sequence number or step path), `event`,
    `data_sha256` (see `data_digest`), `reason` (str or None), `at` (epoch seconds, whole) and `nonce`."""
    __slots__ = ("session", "wait", "event", "data_sha256", "reason", "at", "nonce")

    def text(self) -> str:
        """The canonical text that is signed."""
        values = (self.session, self.wait, self.event, self.data_sha256,
                  json.dumps(self.reason), iso(self.at), self.nonce)  # ASCII: \uXXXX escapes
        return "".join([f"{VERSION}\n"] + [f"{key}: {value}\n" for key, value in zip(FIELDS, values)])


def data_digest(data: object) -> str:
    """SHA-256 (hex) of the event data's canonical JSON; None (no data) counts as `{}`.

    >>> data_digest({"b": 1, "a": "é"}) == data_digest({"a": "é", "b": 1})
    True
    """
    text = json.dumps({} if data is None else data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def make_statement(session: str, wait: object, event: str, data: object, *, now: float,
                   reason: str | None = None, nonce: str | None = None) -> Statement:
    """The statement approving `event` with `data` at `wait` of `session`, dated `now`."""
    for name, value in (("session", session), ("wait", str(wait)), ("event", event)):
        if not value or value != value.strip() or any(c in value for c in "\r\n"):
            raise UsageError(f"cannot sign an approval: the {name} {value!r} is empty or spans lines")
    import secrets

    return Statement(session, str(wait), event, data_digest(data), reason, int(now),
                     nonce or secrets.token_hex(16))


def parse_statement(text: str) -> Statement:
    """Read a statement's canonical text back; anything else is refused (`SignatureRefused`)."""
    lines = text.split("\n")
    if len(lines) != len(FIELDS) + 2 or lines[0] != VERSION or lines[-1] != "":
        raise SignatureRefused(f"the signed statement is not a {VERSION} statement",
                               hint=f"it has {len(FIELDS) + 1} lines, starting with {VERSION!r}")
    values = {}
    for key, line in zip(FIELDS, lines[1:]):
        name, sep, value = line.partition(": ")
        if name != key or not sep or not value:
            raise SignatureRefused(f"the signed statement's line {line!r} should be `{key}: …`")
        values[key] = value
    try:
        reason = json.loads(values["reason"])
    except ValueError:
        reason = 0  # refused below
    if reason is not None and not isinstance(reason, str):
        raise SignatureRefused("the signed statement's reason is not a JSON string or null")
    if (not _STAMP.fullmatch(values["at"]) or not re.fullmatch(r"[0-9a-f]{64}", values["data-sha256"])
            or not re.fullmatch(r"[0-9A-Za-z_-]{16,128}", values["nonce"])):
        raise SignatureRefused("the signed statement's `at`, `data-sha256` or `nonce` is malformed",
                               hint="`at` is like 2026-12-06T16:45:21Z, `data-sha256` 64 hex digits, "
                                    "`nonce` 16 to 128 letters, digits, - or _")
    from datetime import datetime, timezone

    at = datetime.strptime(values["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    statement = Statement(values["session"], values["wait"], values["event"], values["data-sha256"], reason,
                          int(at), values["nonce"])
    if statement.text() != text:  # e.g. a reason written with other escapes: only one text is canonical
        raise SignatureRefused("the signed statement is not in canonical form")
    return statement


def check_statement(statement: Statement, *, session_id: str, wait: object, event: str, data: object,
                    now: float, max_age: float = MAX_AGE, skew: float = SKEW) -> None:
    """Refuse (`SignatureRefused`) a statement made for another delivery, or at the wrong time."""
    for what, signed, wanted in (("session", statement.session, session_id), ("wait", statement.wait, str(wait)),
                                 ("event", statement.event, event)):
        if signed != wanted:
            raise SignatureRefused(f"the approval was signed for {what} {signed!r}, not {wanted!r}", hint=_HINT)
    if statement.data_sha256 != data_digest(data):
        raise SignatureRefused("the event data is not the data that was signed (its SHA-256 differs)",
                               hint="send exactly the data that was signed, or sign the new data")
    if statement.at > now + skew:
        raise SignatureRefused(f"the approval is dated {iso(statement.at)}, in the future (now {iso(now)})",
                               hint="check the signer's clock")
    if statement.at < now - max_age:
        raise SignatureRefused(f"the approval was signed at {iso(statement.at)}, more than {int(max_age)} s "
                               f"ago (now {iso(now)})", hint="sign it again: a signed approval is valid for "
                                                             f"{int(max_age)} s")


def replay_key(signed: Statement | str) -> str:
    """The digest a store records once per accepted signed approval, refusing it a second time.

    Of a `Statement`: its canonical text, so the same statement counts once however often it is signed
    again (the nonce makes every new statement distinct). Of a str: that signature, armor and
    whitespace aside."""
    if isinstance(signed, Statement):
        material = signed.text()
    else:
        material = "".join(line for line in signed.split() if not line.startswith("-----"))
    return hashlib.sha256(f"roast-replay-v1\n{material}".encode()).hexdigest()


def to_header(statement_text: str, signature: str) -> str:
    """The `Roast-Signature` header value carrying a signed statement."""
    import base64

    raw = json.dumps({"statement": statement_text, "signature": signature}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def from_header(value: str) -> tuple[str, str]:
    """(statement text, signature) from a `Roast-Signature` header value; refused if malformed."""
    import base64

    value = value.strip()
    if len(value) > MAX_HEADER:
        raise SignatureRefused(f"the Roast-Signature header is too large ({len(value)} bytes, limit {MAX_HEADER})")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        parsed = json.loads(raw.decode("utf-8"))
    except ValueError as err:
        raise SignatureRefused("the Roast-Signature header is not base64url of a JSON object",
                               hint="see roast.signed: {\"statement\": …, \"signature\": …}") from err
    if (not isinstance(parsed, dict) or set(parsed) != {"statement", "signature"}
            or not all(isinstance(v, str) for v in parsed.values())):
        raise SignatureRefused("the Roast-Signature header must hold exactly {\"statement\", \"signature\"}, "
                               "both strings")
    return parsed["statement"], parsed["signature"]


def _keygen(args: list[str], *, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    # no terminal (new session), no stdin when signing, no askpass: ssh-keygen can never wait for a person
    import subprocess

    env = dict(os.environ, SSH_ASKPASS_REQUIRE="never")
    try:
        return subprocess.run(["ssh-keygen", *args], input=stdin, stdin=None if stdin is not None
                              else subprocess.DEVNULL, capture_output=True, timeout=_TIMEOUT, env=env,
                              start_new_session=True, check=False)
    except FileNotFoundError as err:
        raise UsageError("SSH-signed approvals need OpenSSH's ssh-keygen (8.2 or newer), which is not "
                         "on PATH", hint="install OpenSSH (e.g. apt install openssh-client)") from err
    except subprocess.TimeoutExpired as err:
        raise UsageError(f"ssh-keygen did not answer within {_TIMEOUT:g} s") from err


def _said(proc: subprocess.CompletedProcess[bytes], *, first: bool = False) -> str:
    """ssh-keygen's first or last words, for a message."""
    lines = [ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[0 if first else -1] if lines else f"exit status {proc.returncode}"


def sign(statement_text: str, key_path: str | os.PathLike[str]) -> str:
    """The armored SSH signature (`-----BEGIN SSH SIGNATURE-----…`) of `statement_text` by the key.

    `key_path` is a private key without a passphrase, or one (or its `.pub`) whose private half is
    in ssh-agent. Raises `UsageError` saying why a key cannot sign."""
    key = Path(key_path).expanduser()
    if not key.exists():
        raise UsageError(f"cannot sign: no SSH key at {str(key)!r}", hint="pass --key ~/.ssh/id_ed25519")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="roast-sign-") as tmp:
        message = Path(tmp, "statement")
        message.write_text(statement_text, encoding="utf-8")
        proc = _keygen(["-Y", "sign", "-n", NAMESPACE, "-f", str(key), str(message)])
        signature = Path(tmp, "statement.sig")
        if proc.returncode == 0 and signature.exists():
            return signature.read_text(encoding="ascii")
    said = _said(proc)
    if "passphrase" in said.lower():
        raise UsageError(f"cannot sign with {str(key)!r}: the key needs a passphrase, and roast asks for none",
                         hint=f"add it to ssh-agent (ssh-add {key}) and try again")
    if "too open" in proc.stderr.decode("utf-8", "replace"):
        raise UsageError(f"cannot sign with {str(key)!r}: the private key is readable by others",
                         hint=f"chmod 600 {key}")
    raise UsageError(f"cannot sign with {str(key)!r}: ssh-keygen says: {said}")


def verify(statement_text: str, signature: str, allowed_signers: str | os.PathLike[str], *,
           principal: str | None = None) -> str:
    """The principal whose key signed `statement_text`, per the `allowed_signers` file; else
    `SignatureRefused`. Without `principal`, the file must list the key under exactly one identity."""
    allowed = Path(allowed_signers).expanduser()
    if not allowed.is_file():
        raise UsageError(f"cannot check SSH-signed approvals: no allowed_signers file at {str(allowed)!r}",
                         hint="set ROAST_ALLOWED_SIGNERS to an OpenSSH allowed_signers file")
    if not signature.lstrip().startswith("-----BEGIN SSH SIGNATURE-----"):
        raise SignatureRefused("the signature is not an armored SSH signature (-----BEGIN SSH SIGNATURE-----)")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="roast-verify-") as tmp:
        sig = Path(tmp, "statement.sig")
        sig.write_text(signature, encoding="ascii", errors="replace")
        if principal is None:
            found = _keygen(["-Y", "find-principals", "-s", str(sig), "-f", str(allowed)])
            names = found.stdout.decode("utf-8", "replace").split()
            if found.returncode != 0 and _said(found, first=True).lower() != "no principal matched.":
                raise SignatureRefused(f"the signature cannot be read: ssh-keygen says: {_said(found, first=True)}")
            if found.returncode != 0 or not names:
                raise SignatureRefused("the approval was signed by a key that is not in the allowed signers "
                                       f"({allowed.name})", hint="add the signer's public key to that file, "
                                                                 "under their identity")
            if len(names) > 1 or any(c in names[0] for c in "*?!"):
                raise SignatureRefused(f"the signing key is listed for {', '.join(names)}, not for one identity",
                                       hint="list each key under exactly one identity in allowed_signers")
            principal = names[0]
        proc = _keygen(["-Y", "verify", "-f", str(allowed), "-I", principal, "-n", NAMESPACE, "-s", str(sig)],
                       stdin=statement_text.encode("utf-8"))
    if proc.returncode != 0:
        raise SignatureRefused(f"the signature does not verify for {principal!r}: the statement was changed "
                               f"after signing, or another key or namespace signed it ({_said(proc)})")
    return principal


def sign_approval(session: str, wait: object, event: str, data: object, key_path: str | os.PathLike[str], *,
                  now: float, reason: str | None = None) -> tuple[str, str]:
    """(statement text, signature) approving `event` with `data` at `wait` of `session`: what
    `roast approve --key` sends."""
    text = make_statement(session, wait, event, data, now=now, reason=reason).text()
    return text, sign(text, key_path)


def accept(statement_text: str, signature: str, allowed_signers: str | os.PathLike[str], *, session_id: str,
           wait: object, event: str, data: object, now: float, max_age: float = MAX_AGE) -> tuple[str, Statement]:
    """(principal, statement) of a signed approval for this delivery, or `SignatureRefused`.

    Checks the statement first (cheap, and says what is wrong), then the signature. The caller then
    records `replay_key(statement)` once, refusing the approval if it was recorded before."""
    statement = parse_statement(statement_text)
    check_statement(statement, session_id=session_id, wait=wait, event=event, data=data, now=now,
                    max_age=max_age)
    return verify(statement_text, signature, allowed_signers), statement
