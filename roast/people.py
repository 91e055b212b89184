"""The CLI for people (issue 22): `roast inbox` (every open gate across workflows, soonest deadline
first) and the page link a waiting session prints. A face: it calls `gates` and `api` only; its
parser has no side effects and loads nothing heavy (`roast --version` builds it).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from roast.errors import RoastError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def page_of(session_id: str) -> str | None:
    """The signed page of a waiting session's wait, when ROAST_PUBLIC_URL is set (issue 22)."""
    from roast import gates, settings

    try:
        return gates.page(session_id) if settings.public_url() else None
    except RoastError as err:  # e.g. no key for a shared store: the page is extra, say why not
        print(f"roast: warning: no approval page: {err.message}", file=sys.stderr)
        return None


def pages_of(session_id: str) -> dict[str, str]:
    """The personal page of each person a waiting session's wait names exactly in `approvers:`,
    when ROAST_PUBLIC_URL is set (issue 23)."""
    from roast import gates, settings

    try:
        return gates.pages(session_id) if settings.public_url() else {}
    except RoastError as err:  # e.g. no key for a shared store: the pages are extra, say why not
        print(f"roast: warning: no personal pages: {err.message}", file=sys.stderr)
        return {}


def add_parser(sub: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """The `inbox` subcommand."""
    p = sub.add_parser("inbox", parents=list(parents), help="every open gate across workflows, soonest deadline first",
                       description="Every waiting session that waits for a person's decision, across workflows, "
                                   "soonest deadline first: its title, workflow, events, deadline, age, who "
                                   "started it, and its page (with ROAST_PUBLIC_URL) or the exact commands.")
    p.add_argument("--as", dest="as_", metavar="NAME",
                   help="only the gates started by NAME (default: every open gate)")
    p.set_defaults(handler=cmd_inbox)
    return p


def cmd_inbox(args: argparse.Namespace) -> int:
    from roast import gates

    listed = gates.inbox(as_=args.as_)
    if args.json:
        print(json.dumps([{k: v for k, v in g.items() if k != "deadline_at"} for g in listed],
                         ensure_ascii=False, indent=2, default=str))
        return 0
    if not listed:
        print("nothing is waiting for a decision", file=sys.stderr)
        return 0
    from roast.display import visible

    blocks = []
    for g in listed:
        lines = [f"{visible(g['title'])}",
                 f"  workflow {visible(g['workflow'])} · {' / '.join(visible(v) for v in g['labels'].values())}"
                 f" · deadline {g['deadline'] or 'none'} · waiting since {g['waiting_since']}"
                 + (f" · started by {visible(g['started_by'])}" if g.get("started_by") else "")]
        if g.get("progress"):  # issue 23: a quorum's approvals so far
            lines.append(f"  {visible(g['progress'])}")
        if g["page"]:
            lines.append(f"  open: {g['page']}")
        else:
            lines.extend(f"  {visible(command)}" for command in g["commands"].values())
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0
