"""The approval page of a signed link (issue 15): HTML only, every value from the store escaped
with `html.escape`, one inline style allowed by its hash (CSP), no script. Decides nothing: `roast
serve` checks the link and delivers; this module only says what happened and offers the form.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

from roast.views import iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from roast.api import EventRecord, Session, StepRecord


_STYLE = ("body{font:16px/1.45 system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}"
          "h1{font-size:1.4rem;margin-bottom:.2rem}.meta{color:#555;margin-top:0}"
          ".box{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}"
          "textarea{width:100%;min-height:4rem;box-sizing:border-box}"
          "button{font-size:1rem;padding:.5rem 1.2rem;margin-top:.6rem;cursor:pointer}"
          ".outcome{font-weight:600}ol{padding-left:1.3rem}li{margin:.2rem 0}code{font-size:.9em}"
          ".muted{color:#666}")


def csp() -> str:
    """The Content-Security-Policy of every page: only its own style, no script, forms to itself."""
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
    return (f"default-src 'none'; style-src 'sha256-{digest}'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'")


def _when(ts: float | None) -> str:
    return "an unknown time" if ts is None else time.strftime("%H:%M UTC on %d %b %Y", time.gmtime(ts))


def what_happened(wait_seq: int, session: Session, deliveries: Sequence[EventRecord]) -> str | None:
    """How the wait a link was made for ended ("approved by ana at 14:02 UTC on …", "timed out at …"),
    or None while it is still open."""
    if session.status == "waiting" and session.wait_seq == wait_seq:
        return None
    for d in deliveries:
        if d.wait_seq == wait_seq and d.outcome == "consumed":
            at = _when(d.consumed_at or d.received_at)
            if d.name == "timeout":
                return f"timed out at {at}"
            who = "through this approval link" if d.source == "link" else f"by {d.actor or 'someone'}"
            return f"{d.name} {who} at {at}" + (f" ({d.reason})" if d.reason else "")
    if session.status == "cancelled":
        return f"cancelled at {_when(session.finished_at)}" + (f" ({session.reason})" if session.reason else "")
    if session.status == "timed_out":
        return f"timed out at {_when(session.finished_at)}"
    return f"this wait has ended; the session is now {session.shown_status}"


def _schema_fields(session: Session, event: str) -> str:
    """The form fields of the event's schema, when the wait declares one."""
    # TODO(#14): render one escaped <input> per field of the wait's declared schema once waits carry
    # schemas; POST /a/{token} then sends them as the event data (today it is {}).
    return ""


def render_page(session: Session, history: Sequence[StepRecord], deliveries: Sequence[EventRecord],
                link: Any, csrf: str, *, notice: str | None = None) -> str:
    """The approval page of one link: everything from the store is escaped with html.escape."""
    from html import escape as e

    ended = what_happened(link.wait_seq, session, deliveries)
    parts = [f"<h1>{e(session.workflow_name)}</h1>",
             f"<p class=meta>session <code>{e(session.id)}</code>"
             + (f" · target <code>{e(session.target)}</code>" if session.target else "")
             + f" · {e(session.shown_status)}</p>"]
    if notice:
        parts.append(f"<p class=box>{e(notice)}</p>")
    if ended is None:
        waits = [a for a in session.awaiting or [] if a.get("event")]
        others = [w["event"] for w in waits if w["event"] != link.event]
        deadline = min((w["deadline"] for w in waits if w.get("deadline") is not None), default=None)
        parts.append("<div class=box><h2>Waiting for</h2>"
                     f"<p><strong>{e(link.event)}</strong>"
                     + (f" <span class=muted>(it also accepts: {e(', '.join(others))})</span>" if others else "")
                     + "</p>"
                     + (f"<p>Deadline: {e(iso(deadline) or '')} ({e(_when(deadline))})</p>" if deadline else
                        "<p>No deadline.</p>")
                     + "<form method=post>"
                     f"<input type=hidden name=csrf value=\"{e(csrf)}\">"
                     "<label for=reason>Reason (optional)</label>"
                     "<textarea id=reason name=reason maxlength=2000></textarea>"
                     + _schema_fields(session, link.event)
                     + f"<button type=submit id=deliver>{e(link.event)}</button></form></div>")
    else:
        parts.append(f"<div class=box><p class=outcome id=outcome>{e(ended)}</p>"
                     f"<p>The session is now {e(session.shown_status)}.</p></div>")
    if history:
        items = "".join(f"<li><code>{e(h.path)}</code>{' ' + e(h.name) if h.name else ''} — {e(h.status)}"
                        + (f" (attempt {h.attempt})" if h.attempt > 1 else "")
                        + (f": <span class=muted>{e(_short(h.output))}</span>" if h.output else "") + "</li>"
                        for h in history)
        parts.append(f"<h2>What ran</h2><ol>{items}</ol>")
    return html_page(f"{session.workflow_name}: {link.event}", "".join(parts))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def html_page(title: str, body: str) -> str:
    """A whole page around `body` (already escaped)."""
    from html import escape

    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            "<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<meta name=referrer content=no-referrer><style>{_STYLE}</style></head><body>{body}</body></html>")
