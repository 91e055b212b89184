"""SSH-signed approvals, delivered (issue 23): `approve` signs a statement for a session's current
wait with the person's SSH key and delivers it; `deliver_signed` checks a signed statement (from
`roast approve`, or relayed by a bot in a `Roast-Signature` header) and delivers it through
`api.resume` as the signer.

The statement, its text and its checks are `roast.signed` (pure, plus `ssh-keygen`); this module
adds what needs the store: the session's current wait, the replay check, and the delivery. The
signer's principal in `ROAST_ALLOWED_SIGNERS` is the delivery's actor, `verified`; the statement's
reason is its reason (a relay cannot put words in the signer's mouth).

A statement is usable once. Its replay key (`signed.replay_key`) is the delivery's event id
(`ssh:…`) and its signature binding (`Incoming.signature`, bound by the store to the first session
and event it reaches): a second delivery of the same statement — to the same session and event, or
anywhere else — is refused (`SignatureRefused`, exit 3, HTTP 403) and changes nothing, even when
two race (the store keeps one event id per session: the loser comes back `duplicate`, refused here).
Everything that can refuse runs before the delivery, so a refusal records nothing.

The faces (`cli_approve`, `serve`) call these as they call `api`.
"""
from __future__ import annotations

import time

from roast import api, settings
from roast import deliver as intake_
from roast import signed
from roast.errors import EventRefused, Replayed, RoastError, UsageError
from roast.record import Record
from roast.signed import SignatureRefused

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from collections.abc import Callable
    from typing import Any

    from roast.runner import Observer
    from roast.store import Session, SessionStore
    from roast.views import Result

EVENT_ID = "ssh:"  # + the statement's replay key: the event id of a signed approval
_SETUP = ("set ROAST_ALLOWED_SIGNERS to an OpenSSH allowed_signers file, one line per person: "
          "`ana@example.com ssh-ed25519 AAAA…`")


def allowed_signers(*, refuse: bool = False) -> str:
    """The allowed_signers file (ROAST_ALLOWED_SIGNERS); unset or unreadable: `UsageError` (exit 2),
    or with `refuse` (a relayed approval over HTTP) `SignatureRefused` (403)."""
    try:
        path = settings.allowed_signers()
    except UsageError as err:
        if refuse:
            raise SignatureRefused(f"SSH-signed approvals cannot be checked here: {err.message}; nothing "
                                   "changed", hint=err.hint) from err
        raise
    if path is None:
        kind = SignatureRefused if refuse else UsageError
        raise kind("SSH-signed approvals are not set up: ROAST_ALLOWED_SIGNERS is not set, so no signature "
                   "can be checked; nothing changed", hint=_SETUP)
    return path


def approve(session_id: str, event: str, *, key: str | os.PathLike[str] | None, data: Any = None,
            reason: str | None = None, home: str | os.PathLike[str] | None = None,
            store: SessionStore | str | None = None, observer: Observer | None = None,
            now: Callable[[], float] = time.time, source: str = "ssh") -> Result:
    """Sign `event` (with `data`, a dict or JSON text) for the wait `session_id` rests on now, with the
    SSH key `key` (`ssh-keygen -Y sign -n roast`), and deliver it as the key's principal in
    ROAST_ALLOWED_SIGNERS, verified. `roast approve`.

        >>> approve("7f3kq2ab", "approved", key="~/.ssh/id_ed25519", reason="looks good")  # doctest: +SKIP
    """
    allowed = allowed_signers()
    key = _need_key(key)
    payload = intake_.event_data(data)
    store_ = api.open_store(store, home)
    session = store_.get(session_id)
    _check_waits_for(session, event)
    text, signature = signed.sign_approval(session.id, session.wait_seq, event, payload, key, now=now(),
                                           reason=reason)
    return deliver_signed(session.id, event, payload, text, signature, allowed=allowed, store=store_,
                          observer=observer, now=now, source=source)


def header(session_id: str, event: str, *, key: str | os.PathLike[str] | None, data: Any = None,
           reason: str | None = None, wait_seq: int | None = None, home: str | os.PathLike[str] | None = None,
           store: SessionStore | str | None = None, now: Callable[[], float] = time.time) -> dict[str, Any]:
    """Sign without delivering: the `Roast-Signature` header a bot relays (`roast approve --header`).
    With `wait_seq` (the `seq` a notify webhook posts) nothing is read from the store and
    `session_id` must be the full id; else the session's current wait is signed."""
    key = _need_key(key)
    payload = intake_.event_data(data)
    if wait_seq is None:
        session = api.open_store(store, home).get(session_id)
        _check_waits_for(session, event)
        session_id, wait_seq = session.id, session.wait_seq
    text, signature = signed.sign_approval(session_id, wait_seq, event, payload, key, now=now(), reason=reason)
    return {"session_id": session_id, "wait": wait_seq, "event": event, "statement": text,
            "header": signed.to_header(text, signature)}


def deliver_signed(session_id: str, event: str, data: Any, statement_text: str, signature: str, *,
                   allowed: str | None = None, home: str | os.PathLike[str] | None = None,
                   store: SessionStore | str | None = None, observer: Observer | None = None,
                   now: Callable[[], float] = time.time, source: str = "http", run: bool = True) -> Result:
    """Deliver a signed approval of `event` with `data` (a dict, JSON text or the raw body) to
    `session_id`: the statement must be for that session, its current wait, that event and exactly
    that data (by digest), recent, signed by a key in ROAST_ALLOWED_SIGNERS, and never delivered
    before; else `SignatureRefused` and nothing changed. `run=False` (`roast serve`): claim only."""
    store_ = api.open_store(store, home)
    checked = check_signed(session_id, event, data, statement_text, signature, allowed=allowed, store=store_,
                           now=now)
    return deliver_checked(checked, store=store_, observer=observer, now=now, source=source, run=run)


class Checked(Record):
    """A signed approval that passed every check but the store's: who signed what, for which wait."""

    session_id: str
    event: str
    data: dict[str, Any]
    actor: str
    reason: str | None
    wait_seq: int
    event_id: str


def check_signed(session_id: str, event: str, data: Any, statement_text: str, signature: str, *,
                 allowed: str | None = None, home: str | os.PathLike[str] | None = None,
                 store: SessionStore | str | None = None, now: Callable[[], float] = time.time) -> Checked:
    """The checks of `deliver_signed`, without delivering (reads only): `roast serve` runs these
    (`ssh-keygen`, ~30 ms) outside the claim, so a signed request never holds a claim thread."""
    allowed = allowed or allowed_signers(refuse=True)
    payload = intake_.event_data(data)
    store_ = api.open_store(store, home)
    session = store_.get(session_id)
    try:
        statement = signed.parse_statement(statement_text)
    except SignatureRefused as err:
        raise _refused(err, session, event) from None
    event_id = EVENT_ID + signed.replay_key(statement)
    _refuse_replay(store_, session, event, event_id)
    try:
        principal, statement = signed.accept(statement_text, signature, allowed, session_id=session.id,
                                             wait=session.wait_seq, event=event, data=payload, now=now())
    except SignatureRefused as err:
        raise _refused(err, session, event) from None
    except UsageError as err:  # the file went away, or no ssh-keygen: the signature cannot be checked
        raise _refused(SignatureRefused(f"the signature cannot be checked here: {err.message}", hint=err.hint),
                       session, event) from err
    return Checked(session.id, event, payload, principal, statement.reason, int(statement.wait), event_id)


def deliver_checked(checked: Checked, *, home: str | os.PathLike[str] | None = None,
                    store: SessionStore | str | None = None, observer: Observer | None = None,
                    now: Callable[[], float] = time.time, source: str = "http", run: bool = True) -> Result:
    """Deliver a checked signed approval, as its signer, verified, to the wait it was signed for
    only (a compare-and-set on the wait), never queued, once."""
    try:
        result = api.resume(checked.event, data=checked.data, session_id=checked.session_id, store=store, home=home,
                            source=source, observer=observer, now=now, event_id=checked.event_id, actor=checked.actor,
                            reason=checked.reason, if_waiting=True, run=run, wait_seq=checked.wait_seq,
                            verified=True, signature=checked.event_id)
    except Replayed as err:  # bound to another session or event: cannot happen to a statement that checked
        raise SignatureRefused(err.message, hint=err.hint) from err
    if result.outcome == "duplicate":  # a racing delivery of the same statement won
        session = api.session(checked.session_id, store=store, home=home)
        raise _replayed(session, checked.event, result.delivery or {})
    return result


def read_header(value: str) -> tuple[str, str]:
    """(statement text, signature) of a `Roast-Signature` header, judged before the body is read:
    refused (403) when no allowed signers are set up here, or the header is malformed."""
    allowed_signers(refuse=True)
    return signed.from_header(value)


def _need_key(key: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    if key is None or not str(key).strip():
        raise UsageError("roast approve signs with your SSH key: say which with --key",
                         hint="e.g. --key ~/.ssh/id_ed25519 (a key with a passphrase must be in ssh-agent)")
    return key


def _check_waits_for(session: Session, event: str) -> None:
    """Refuse, before anything is signed, a session that is not waiting for `event` now."""
    if session.status != "waiting":
        raise intake_.not_waiting(session)
    if event not in session.events:
        raise EventRefused(f"session {session.id} is waiting for {', '.join(session.events) or 'its deadline'}, "
                           f"not {event!r}; nothing was signed or delivered",
                           hint="\n".join(_approve_commands(session)) or None)


def _approve_commands(session: Session) -> list[str]:
    import shlex

    return [f"roast approve {session.id} -e {shlex.quote(e)} --key ~/.ssh/id_ed25519" for e in session.events]


def _refuse_replay(store: SessionStore, session: Session, event: str, event_id: str) -> None:
    from roast.store import ACCEPTED

    for record in store.events(session.id):
        if record.event_id == event_id and record.outcome in ACCEPTED:
            from roast.views import delivery_doc

            raise _replayed(session, event, delivery_doc(record))


def _replayed(session: Session, event: str, first: dict[str, Any]) -> RoastError:
    when = f" at {first['received_at']}" if first.get("received_at") else ""
    how = f" ({first['outcome']})" if first.get("outcome") else ""
    return _refused(SignatureRefused(
        f"this signed approval was already delivered{when}{how}: a signed approval is usable once, so "
        f"{event!r} was not delivered to session {session.id} again; nothing changed",
        hint="to decide again, sign a new approval (`roast approve … --key KEY`)"), session, event)


def _refused(err: RoastError, session: Session, event: str) -> RoastError:
    """The refusal with its document: what `--json` and HTTP answer (every refusal has an outcome)."""
    if not err.document:
        err.document.update(outcome=err.code, session_id=session.id, event=event, status=session.status,
                            delivery=None)
    if "nothing changed" not in err.message:
        err.args = (f"{err.message}; nothing changed",)
    return err
