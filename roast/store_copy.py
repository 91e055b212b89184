"""`roast store copy`: moving up from one machine's SQLite store to a shared PostgreSQL store.

Every session is copied, waiting ones included, with its continuation and deltas (the envelopes
byte for byte, so they still verify under the same key), step history, deliveries and workflow
definitions, in one transaction of the target, or not at all. Reads the source, writes only the
target, and never unpickles anything. Must not import yaml or rich.
"""
from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING

from roast import seal
from roast.errors import Refused, StoreUnavailable, UsageError

if TYPE_CHECKING:
    from typing import Any

    from roast.store import SessionStore


def copy_store(source: SessionStore, target: SessionStore) -> dict[str, int]:
    """Copy every session of `source` into `target` (a PostgreSQL store); return how many rows of
    each table were written: `{"sessions", "continuations", "deltas", "steps", "events",
    "definitions"}` (a definition the target already has is not written again).

    Refused, with nothing changed, when the target already holds any of the sessions, when a
    session is still running in a live process (let it finish or reach a wait first), or when a
    session is sealed under a key that this process's ROAST_KEY_FILE/ROAST_KEY lacks (every host
    of a shared store needs that key). After the commit the target is read again, and its counts
    and envelopes compared with the source's.

        >>> from roast.api import open_store                                             # doctest: +SKIP
        >>> copy_store(open_store(), open_store("postgresql://roast@db.internal/roast"))  # doctest: +SKIP
        {'sessions': 12, 'continuations': 3, 'deltas': 0, 'steps': 40, 'events': 9, 'definitions': 2}
    """
    restore = getattr(target, "restore", None)
    census = getattr(target, "census", None)
    if restore is None or census is None:
        raise UsageError(f"cannot copy sessions into {target.describe()}: the target must be a PostgreSQL store",
                         hint="roast store copy --to postgresql://user@host:port/dbname")
    if source.describe() == target.describe():
        raise UsageError(f"the source and the target are the same store ({source.describe()}); nothing was copied")
    live = [s for s in source.list(statuses=["running"], limit=None)[0] if not s.orphaned]
    if live:
        raise Refused(f"session {live[0].id} of {source.describe()} is running in "
                      f"{live[0].holder or 'another roast process'}" + (f" (and {len(live) - 1} more)" if len(live) > 1
                                                                       else "") + "; nothing was copied",
                      hint="let running sessions finish or reach a wait, then copy")
    dumped = source.dump()
    if not dumped.get("sessions"):
        return {table: 0 for table in ("sessions", "continuations", "deltas", "steps", "events", "definitions")}
    _check_keys(source, dumped)
    counts: dict[str, int] = restore(dumped)
    from roast.store_postgres import census_of

    ids = [s["id"] for s in dumped["sessions"]]
    found, expected = census(ids, [d["fingerprint"] for d in dumped.get("definitions", [])]), census_of(dumped)
    if found != expected:
        wrong = ", ".join(f"{k} {found.get(k)} instead of {v}" for k, v in expected.items() if found.get(k) != v)
        raise StoreUnavailable(f"the copy in {target.describe()} differs from {source.describe()} when read back "
                               f"({wrong})", hint="the source is unchanged; investigate before using the copy")
    return counts


def _check_keys(source: SessionStore, dumped: dict[str, list[dict[str, Any]]]) -> None:
    """Every envelope must be signed by a key this process is configured with (ROAST_KEY_FILE or
    ROAST_KEY): a shared store keeps no key, so without it the copies could never be loaded."""
    keys = seal.configured_keys()
    here = set(keys.ids()) if keys is not None else set()
    needed: dict[str, str] = {}
    for table in ("continuations", "deltas", "definitions"):
        for row in dumped.get(table, []):
            kid = _key_id(bytes(row["envelope"]))
            if kid is not None and kid != seal.LEGACY_KID and kid not in here:
                needed.setdefault(kid, row.get("session_id") or row.get("fingerprint") or "?")
    if keys is None or needed:
        named = ", ".join(sorted(needed)) or "its key"
        raise Refused(f"the sessions of {source.describe()} are sealed with {named}, which "
                      + ("no ROAST_KEY_FILE or ROAST_KEY names here" if keys is None else
                         f"is not among the keys configured here ({', '.join(sorted(here))})")
                      + "; every host of the shared store needs it; nothing was copied",
                      hint="set ROAST_KEY_FILE to the key the sessions were sealed with (a store on one machine "
                           "keeps it in ROAST_HOME/secret.key); to rotate, put a new key first and the old one "
                           "after it, as base64 (`base64 -w0 secret.key`), one a line")


def _key_id(envelope: bytes) -> str | None:
    """The key id in an envelope's header (unauthenticated: only to say which key is missing)."""
    prefix = len(seal.MAGIC) + 1 + 4
    if len(envelope) < prefix or envelope[:len(seal.MAGIC)] != seal.MAGIC:
        return None
    (length,) = struct.unpack(">I", envelope[len(seal.MAGIC) + 1:prefix])
    try:
        header = json.loads(envelope[prefix:prefix + length])
    except ValueError:
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None
