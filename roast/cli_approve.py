"""`roast approve` (issue 23): sign a decision with your SSH key and deliver it, or print the
`Roast-Signature` header for a bot to relay. A face: calls `approvals` (beside `api`) only; its
parser has no side effects and loads nothing heavy (`roast --version` builds it).
"""
from __future__ import annotations

import json
import sys

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any


def add_parser(sub: Any, parents: Sequence[argparse.ArgumentParser],
               report: Callable[[argparse.Namespace, list[Any]], int]) -> argparse.ArgumentParser:
    """The `approve` subcommand; `report` prints a delivery's result as `roast resume` does."""
    p = sub.add_parser("approve", parents=list(parents), help="sign a decision with your SSH key and deliver it",
                       description="Sign a statement binding the session, its current wait, the event, the "
                                   "data's SHA-256 and the time with your SSH key (ssh-keygen -Y sign -n roast) "
                                   "and deliver it: the delivery's actor is the identity ROAST_ALLOWED_SIGNERS "
                                   "(an OpenSSH allowed_signers file) lists for the key, verified. A signed "
                                   "approval is usable once; a replay is refused (exit 3).")
    p.add_argument("session_id", metavar="ID", help="the waiting session (any unique prefix of 4+ characters)")
    p.add_argument("-e", "--event", metavar="NAME", required=True, help="the event to deliver (required)")
    p.add_argument("-d", "--event-data", metavar="JSON",
                   help="event data: a JSON object, @FILE to read it from a file, or - for stdin; its "
                        "SHA-256 is signed (default: {})")
    p.add_argument("--reason", metavar="TEXT", help="why, signed with the decision (default: none)")
    p.add_argument("--key", metavar="FILE",
                   help="your SSH private key (or its .pub, with the private key in ssh-agent); a key with "
                        "a passphrase must be in ssh-agent (required)")
    p.add_argument("--header", action="store_true",
                   help="deliver nothing: print the Roast-Signature header value for a bot to relay to "
                        "`roast serve` (default: deliver)")
    p.add_argument("--wait-seq", type=int, metavar="N",
                   help="with --header: sign for wait number N (the `seq` a notify webhook posts) without "
                        "reading the store; ID must be the full session id (default: the session's "
                        "current wait)")
    p.set_defaults(handler=lambda args: cmd_approve(args, report))
    return p


def cmd_approve(args: argparse.Namespace, report: Callable[[argparse.Namespace, list[Any]], int]) -> int:
    from roast import api, approvals
    from roast.errors import UsageError

    data = api.read_event_data(args.event_data, sys.stdin.buffer)
    if args.wait_seq is not None and not args.header:
        raise UsageError("--wait-seq goes with --header: a delivery always signs the session's current wait",
                         hint=f"roast approve {args.session_id} -e {args.event} --key KEY")
    if args.header:
        signed = approvals.header(args.session_id, args.event, key=args.key, data=data, reason=args.reason,
                                  wait_seq=args.wait_seq)
        print(json.dumps(signed, ensure_ascii=False, indent=2) if args.json else signed["header"])
        return 0
    from roast.display import Progress

    progress: Any = Progress(quiet=False)
    try:
        result = approvals.approve(args.session_id, args.event, key=args.key, data=data, reason=args.reason,
                                   observer=progress)
    finally:
        progress.stop()
    return report(args, [result])
