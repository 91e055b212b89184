"""`roast store copy`: moving up from one machine's SQLite store to a shared PostgreSQL store.

Every session is copied, waiting ones included, with its continuation and deltas (the envelopes
byte for byte, so they still verify under the same key), step history, deliveries and workflow
definitions, in one transaction of the target, or not at all. Reads the source, writes only the
target, and never unpickles anything. Must not import yaml or rich.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from typing import TYPE_CHECKING

from roast import seal
from roast.errors import Refused, StoreUnavailable, UsageError
from roast.migrations import TABLE_COLUMNS
from roast.sql import SQLStore, marks

if TYPE_CHECKING:
    from typing import Any

    from roast.sql import Tx
    from roast.store import SessionStore


def copy_store(source: SessionStore, target: SessionStore, *, keep_source: bool = False,
               now: float | None = None) -> dict[str, int]:
    """Copy every session of `source` into `target` (a PostgreSQL store); return how many rows of
    each table were written: `{"sessions", "continuations", "deltas", "steps", "events",
    "definitions"}` (a definition the target already has is not written again).

    Refused, with nothing changed, when the target already holds any of the sessions, when a
    session is still running in a live process (let it finish or reach a wait first), or when a
    session is sealed under a key that this process's ROAST_KEY_FILE/ROAST_KEY lacks (every host
    of a shared store needs that key). After the commit the target is read again, and its counts
    and envelopes compared with the source's.

    Then every copied open session (waiting, or orphaned) is marked `moved` in the source, naming the
    target without its credentials, so that one event is never applied in both stores (issue 24): the
    source refuses deliveries, resumes and ticks of them (exit 3). The source's write lock is held from
    the dump to that mark, so nothing changes in between. `keep_source=True` leaves the source as it
    was (a dry run; the caller warns); the result then has `"moved": 0`.

        >>> from roast.api import open_store                                             # doctest: +SKIP
        >>> copy_store(open_store(), open_store("postgresql://roast@db.internal/roast"))  # doctest: +SKIP
        {'sessions': 12, 'continuations': 3, 'deltas': 0, 'steps': 40, 'events': 9, 'definitions': 2, 'moved': 3}
    """
    if not isinstance(target, SQLStore) or not target.shared:
        raise UsageError(f"cannot copy sessions into {target.describe()}: the target must be a PostgreSQL store",
                         hint="roast store copy --to postgresql://user@host:port/dbname")
    if source.describe() == target.describe():
        raise UsageError(f"the source and the target are the same store ({source.describe()}); nothing was copied")
    if keep_source or not isinstance(source, SQLStore):
        counts = {**_copy(source, target)[0], "moved": 0}
    else:
        with source._write() as tx:  # the source's write lock, from the dump to the mark (issue 24)
            counts, copied = _copy(source, target)
            counts["moved"] = _mark_moved(tx, source, target, copied, now)
    serving = serve_processes(source)
    if serving:
        counts["serve_pid"] = serving[0]  # named in a warning: it should now serve the target
    return counts


def serve_processes(source: SessionStore) -> list[int]:
    """Best effort (Linux's /proc; processes of this host that this user may inspect): the pids of
    `roast serve` processes that have the SQLite store `source` open (issue 24)."""
    path = getattr(source, "db_path", None)
    if not isinstance(path, str) or not os.path.isdir("/proc"):
        return []
    names = {os.path.realpath(path), os.path.realpath(path) + "-wal"}
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
            if not any(b"serve" in w for w in words) or not any(b"roast" in w for w in words):
                continue
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in names for fd in os.listdir(f"/proc/{pid}/fd")):
                found.append(int(pid))
        except OSError:  # gone meanwhile, or not ours to inspect
            continue
    return sorted(found)


def _copy(source: SessionStore, target: SQLStore) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The copy itself; returns the counts and the open sessions copied (their source rows)."""
    live = [s for s in source.list(statuses=["running"], limit=None)[0] if not s.orphaned]
    if live:
        raise Refused(f"session {live[0].id} of {source.describe()} is running in "
                      f"{live[0].holder or 'another roast process'}" + (f" (and {len(live) - 1} more)" if len(live) > 1
                                                                       else "") + "; nothing was copied",
                      hint="let running sessions finish or reach a wait, then copy")
    dumped = source.dump()
    if not dumped.get("sessions"):
        return {table: 0 for table in ("sessions", "continuations", "deltas", "steps", "events", "definitions")}, []
    _check_keys(source, dumped)
    counts = restore(target, dumped)
    ids = [s["id"] for s in dumped["sessions"]]
    found, expected = census(target, ids, [d["fingerprint"] for d in dumped.get("definitions", [])]), census_of(dumped)
    if found != expected:
        wrong = ", ".join(f"{k} {found.get(k)} instead of {v}" for k, v in expected.items() if found.get(k) != v)
        raise StoreUnavailable(f"the copy in {target.describe()} differs from {source.describe()} when read back "
                               f"({wrong})", hint="the source is unchanged; investigate before using the copy")
    return counts, [s for s in dumped["sessions"] if s["status"] in ("waiting", "running", "interrupted")]


def restore(target: SQLStore, dumped: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Insert the sessions of another store's `dump()` in one transaction; refuse (nothing
    changed) if the target already holds any of them. Event rows get new ids there (the
    sessions' pending events follow them); a definition the target already has is kept. Before
    the commit, the rows are read back and compared with `dumped` (`census_of`): any difference
    rolls it all back. Returns how many rows of each table were written."""
    sessions = dumped.get("sessions", [])
    ids = [s["id"] for s in sessions]
    expected = census_of(dumped)
    with target._write() as tx:
        present = sorted(r["id"] for part in _chunks(ids)
                         for r in tx.rows(f"SELECT id FROM sessions WHERE id IN ({marks(part)})", part))
        if present:
            shown = ", ".join(present[:10]) + (f" and {len(present) - 10} more" if len(present) > 10 else "")
            raise Refused(f"the session store {target.describe()} already holds {len(present)} of these sessions "
                          f"({shown}); nothing was copied", hint="copy into a store that holds none of them")
        counts = dict.fromkeys(TABLE_COLUMNS, 0)
        for table in ("sessions", "continuations", "deltas", "steps"):
            cols = [c for c in TABLE_COLUMNS[table] if c != "pending_event"]
            for row in dumped.get(table, []):
                tx.run(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks(cols)})", [row[c] for c in cols])
                counts[table] += 1
        renumbered: dict[int, int] = {}
        cols = list(TABLE_COLUMNS["events"][1:])
        for event in dumped.get("events", []):  # in the source's order, so ids keep it
            renumbered[int(event["id"])] = tx.insert(f"INSERT INTO events ({', '.join(cols)}) VALUES ({marks(cols)})",
                                                     [event[c] for c in cols])
        counts["events"] = len(renumbered)
        for s in sessions:
            if s.get("pending_event") is not None:
                tx.run("UPDATE sessions SET pending_event = ? WHERE id = ?",
                       (renumbered.get(int(s["pending_event"])), s["id"]))
        for definition in dumped.get("definitions", []):
            counts["definitions"] += tx.run(
                "INSERT INTO definitions (fingerprint, envelope, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (fingerprint) DO NOTHING",
                (definition["fingerprint"], definition["envelope"], definition["created_at"]))
        found = _census(tx, ids, [d["fingerprint"] for d in dumped.get("definitions", [])])
        if found != expected:
            wrong = ", ".join(f"{k} {found.get(k)} instead of {v}" for k, v in expected.items() if found.get(k) != v)
            raise StoreUnavailable(f"the copy into {target.describe()} did not read back as written ({wrong}); "
                                   "nothing was copied")
    return counts


def census(target: SQLStore, session_ids: list[str], fingerprints: list[str]) -> dict[str, Any]:
    """How many rows these sessions have in each table of `target`, and a digest of their
    envelopes (as `census_of` counts a dump): the copy is checked with it."""
    with target._read() as tx:
        return census_of({}) if tx is None else _census(tx, session_ids, fingerprints)


def _census(tx: Tx, ids: list[str], fingerprints: list[str]) -> dict[str, Any]:
    counts: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS, 0)
    sealed: list[tuple[str, str, bytes]] = []
    for part in _chunks(ids):
        for table, column in (("sessions", "id"), ("continuations", "session_id"), ("deltas", "session_id"),
                              ("steps", "session_id"), ("events", "session_id")):
            row = tx.row(f"SELECT count(*) AS n FROM {table} WHERE {column} IN ({marks(part)})", part)
            counts[table] += int(row["n"]) if row else 0
        sealed += [("continuations", r["session_id"], bytes(r["envelope"])) for r in tx.rows(
            f"SELECT session_id, envelope FROM continuations WHERE session_id IN ({marks(part)})", part)]
        sealed += [("deltas", f"{r['session_id']}:{r['seq']}", bytes(r["envelope"])) for r in tx.rows(
            f"SELECT session_id, seq, envelope FROM deltas WHERE session_id IN ({marks(part)})", part)]
    for part in _chunks(fingerprints):
        row = tx.row(f"SELECT count(*) AS n FROM definitions WHERE fingerprint IN ({marks(part)})", part)
        counts["definitions"] += int(row["n"]) if row else 0
    counts["envelopes"] = _digest(sealed)
    return counts


def census_of(dumped: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The census (`census`) of the sessions in a `dump()`."""
    counts: dict[str, Any] = {table: len(dumped.get(table, [])) for table in TABLE_COLUMNS}
    sealed = [("continuations", r["session_id"], bytes(r["envelope"])) for r in dumped.get("continuations", [])]
    sealed += [("deltas", f"{r['session_id']}:{r['seq']}", bytes(r["envelope"])) for r in dumped.get("deltas", [])]
    counts["envelopes"] = _digest(sealed)
    return counts


def _chunks(values: list[str]) -> list[list[str]]:
    """`IN (…)` lists of at most 500 (SQLite and psycopg limit the parameters of a statement)."""
    return [values[i:i + 500] for i in range(0, len(values), 500)]


def _digest(sealed: list[tuple[str, str, bytes]]) -> str:
    digest = hashlib.sha256()
    for table, key, blob in sorted(sealed):
        digest.update(f"{table}\x00{key}\x00{len(blob)}\x00".encode() + blob)
    return digest.hexdigest()


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


def _mark_moved(tx: Tx, source: SQLStore, target: SQLStore, copied: list[dict[str, Any]], now: float | None) -> int:
    """Mark the open sessions just copied as `moved` to `target` (its URL without a password) in the
    source, each only if it is still as it was dumped (issue 24). Returns how many were marked."""
    import time

    at = time.time() if now is None else now
    where = re.sub(r"(?<=://)([^:/@]*):[^@]*@", r"\1@", target.describe())  # no password, not even masked
    marked = 0
    for row in copied:
        marked += tx.run("UPDATE sessions SET status = 'moved', reason = ?, finished_at = ?, updated_at = ?, "
                         "owner = NULL, notify_pending = 0 WHERE id = ? AND status = ? AND wait_seq = ? "
                         "AND updated_at = ?", (where, at, at, row["id"], row["status"], row["wait_seq"],
                                                row["updated_at"]))
    if marked != len(copied):
        raise StoreUnavailable(f"{len(copied) - marked} of the sessions copied to {where} changed in "
                               f"{source.describe()} during the copy; the source was left as it was, and the "
                               "target holds copies that may be out of date",
                               hint="stop every roast process using the source, empty the target database, and "
                                    "copy again")
    return marked
