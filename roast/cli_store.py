"""The `roast store` and `roast key` commands (issue 13): copying the store to PostgreSQL, signing
keys. A face: calls `roast.api` only; its parsers join `cli.build_parser()` (the man page too)."""
from __future__ import annotations

import json
import sys

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    import argparse
    from typing import Any


def add_parsers(sub: Any, common: argparse.ArgumentParser, parser_class: type[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("store", parents=[common], help="manage the session store (copy it to PostgreSQL)",
                       description="Manage the session store named by ROAST_STORE (default: SQLite in "
                                   "ROAST_HOME).")
    store_sub = p.add_subparsers(dest="store_command", metavar="COMMAND", parser_class=parser_class)
    store_sub.required = True
    c = store_sub.add_parser("copy", parents=[common], help="copy every session into a shared PostgreSQL store",
                             description="Copy every session — waiting ones too, their saved state byte for byte "
                                         "— into another store (a PostgreSQL one, to share it between hosts), in "
                                         "one transaction; refused if the target already holds any of them. "
                                         "Counts are verified afterwards.")
    c.add_argument("--to", metavar="URL", required=True,
                   help="the target store, postgresql://user@host:port/dbname (required; a password in it is "
                        "never shown)")
    c.add_argument("--from", dest="source", metavar="URL", default=None,
                   help="the store to copy from (default: ROAST_STORE, else SQLite in ROAST_HOME)")
    c.add_argument("--keep-source", action="store_true",
                   help="leave the copied open sessions live in the source too, for a trial copy: an event "
                        "delivered to both stores then runs twice (default: mark them moved in the source, "
                        "which then refuses them with exit 3)")
    c.set_defaults(handler=cmd_store_copy)

    p = sub.add_parser("key", parents=[common], help="signing keys for shared stores",
                       description="Signing keys: a store shared by several hosts needs the same key on each, "
                                   "from ROAST_KEY_FILE or ROAST_KEY.")
    key_sub = p.add_subparsers(dest="key_command", metavar="COMMAND", parser_class=parser_class)
    key_sub.required = True
    k = key_sub.add_parser("new", parents=[common], help="print a new signing key (base64 text) on stdout",
                           description="Print a new random key. Save it with `roast key new > roast.key && "
                                       "chmod 600 roast.key`, then set ROAST_KEY_FILE=roast.key on every host. To "
                                       "rotate, put the new key first in the file and keep the old one below it.")
    k.set_defaults(handler=cmd_key_new)


def cmd_store_copy(args: argparse.Namespace) -> int:
    from roast import api

    counts = api.copy_store(args.to, source=args.source, keep_source=args.keep_source)
    if args.keep_source:
        print("roast: warning: --keep-source: the copied sessions stay live in the source as well; deliver each "
              "event to one store only (an event delivered to both runs its steps twice)", file=sys.stderr)
    if args.json:
        _emit(counts)
    else:
        target = counts.get("target", args.to)
        print("roast: copied " + ", ".join(f"{n:,} {table}" for table, n in counts.items()
                                           if table not in ("target", "moved", "serve_pid")) + f" to {target}",
              file=sys.stderr)
        if counts.get("moved"):
            print(f"roast: {counts['moved']:,} open session{'s' if counts['moved'] != 1 else ''} marked moved here: "
                  f"deliver to {target} from now on (ROAST_STORE={target})", file=sys.stderr)
    if counts.get("serve_pid"):  # best effort (issue 24); stderr, so --json too
        print(f"roast: warning: roast serve (pid {counts['serve_pid']}) still has the source store open: stop it, "
              f"and start it again with ROAST_STORE={counts.get('target', args.to)}", file=sys.stderr)
    return 0


def cmd_key_new(args: argparse.Namespace) -> int:
    from roast import api

    key = api.new_key()
    if args.json:
        _emit({"key": key})
    else:
        print(key)
    return 0


def _emit(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False, indent=2, default=str))
