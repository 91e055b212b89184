"""The inbox page and the short notice pages of `roast serve` (issue 22), in the gate page's style.

Pure: no I/O, no clock (`now` is passed in). Every value is escaped; no script, no external asset
(the one inline `<style>` is allowed by hash, `pages.csp_header`). An inbox row shows a gate's
title, workflow, events, deadline and age, and links to its page; never a session id beyond an
8-character reference, a step path or a command.
"""
from __future__ import annotations

from html import escape

from roast.pages import STYLE, deadline_words

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

_EXTRA = (".gate{display:block;color:inherit;text-decoration:none}.gate:hover h2{text-decoration:underline}"
          ".gate h2{margin:.4rem 0 .25rem;color:#0b5cad}.tags{display:flex;flex-wrap:wrap;gap:.4rem;margin:.5rem 0 0}"
          ".tag{font-size:.85rem;padding:.1rem .6rem;border-radius:999px;background:#eef1f4;color:#3d4650}"
          ".empty{color:#57606a}")


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _ago(seconds: int) -> str:
    minutes = seconds // 60
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    hours = minutes // 60
    return f"{hours} h ago" if hours < 48 else f"{hours // 24} days ago"


def _doc(title: str, body: str) -> str:
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<meta name=referrer content=no-referrer><title>{_e(title)}</title>"
            f"<style>{STYLE}{_EXTRA}</style></head><body><main class=page>{body}</main></body></html>")


def render_notice(title: str, message: str) -> str:
    """A page that only says something (a refused link, a forged form, a sign-in needed)."""
    return _doc(title, f"<section class='card result bad'><h1>{_e(title)}</h1><p id=notice>{_e(message)}</p>"
                       "</section>")


def render_inbox(gates: Sequence[Mapping[str, Any]], *, now: float, who: str | None = None) -> str:
    """Every open gate, soonest deadline first (the order `gates` comes in), each linking to its page
    (or, without a public URL, naming its events only)."""
    rows = []
    for g in gates:
        deadline = g.get("deadline_at")
        due = deadline_words(deadline, now) if deadline is not None else "no deadline"
        overdue = deadline is not None and deadline <= now
        tags = "".join(f"<span class=tag>{_e(label)}</span>" for label in (g.get("labels") or {}).values())
        started = f" · started by {_e(g['started_by'])}" if g.get("started_by") else ""
        progress = f"<p class=progress>{_e(g['progress'])}</p>" if g.get("progress") else ""  # issue 23: a quorum
        inner = (f"<p class=kicker>{_e(g.get('workflow'))} · waiting {_e(_ago(int(g.get('age_seconds') or 0)))}"
                 f"{started}</p><h2>{_e(g.get('title'))}</h2>"
                 f"<p><span class='pill {'bad' if overdue else 'open'}'>{_e(_cap(due))}</span></p>"
                 f"<div class=tags>{tags}</div>{progress}"
                 f"<p class=help>Reference {_e(str(g.get('session_id', ''))[:8])}</p>")
        if g.get("page"):
            rows.append(f"<article class=card><a class=gate href=\"{_e(g['page'])}\">{inner}</a></article>")
        else:
            rows.append(f"<article class=card>{inner}<p class=help>This gate has no page: the server "
                        "has no public address set.</p></article>")
    count = len(gates)
    head = (f"<header class=top><p class=kicker>Approvals{' for ' + _e(who) if who else ''}</p>"
            f"<span class='pill {'open' if count else 'good'}' id=count>{count} waiting</span></header>"
            "<h1>Waiting for a decision</h1>")
    body = "".join(rows) or "<p class='card empty' id=empty>Nothing is waiting for a decision.</p>"
    return _doc("Approvals", head + body)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
