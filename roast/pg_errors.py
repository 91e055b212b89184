"""How a PostgreSQL error is said (`roast.store_postgres`'s errors): one sentence that names the
store — host, port, database, user, never the password — says whether anything changed, and what to
do; a failure to connect, a lost connection, a full disk, a read-only server, a lock that waited too
long. Every psycopg error of a store operation becomes a `StoreUnavailable` here (exit 4), never a
session outcome (SPEC §11).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict

from roast.errors import StoreUnavailable, UsageError
from roast.store import mask_url

TYPE_CHECKING = False


class PgErrors:
    """`PostgresStore`'s errors (a mixin: it names the store with the attributes below)."""

    url: str
    where: str  # host:port
    dbname: str
    user: str

    if TYPE_CHECKING:
        def describe(self) -> str: ...
        def _busy_timeout(self) -> float: ...

    def _lost(self, err: BaseException | None, session_id: str | None) -> StoreUnavailable:
        reason = _first_line(err, self.url) if err is not None else "the connection broke"
        what = f" while running session {session_id}" if session_id else ""
        return StoreUnavailable(f"lost the connection to the PostgreSQL session store at {self.where}{what} "
                                f"({reason}); nothing changed",
                                hint="check the server and the network, then try again")

    def _connect_error(self, err: BaseException) -> StoreUnavailable:
        """Why connecting failed, in one sentence naming host:port (and never the password)."""
        text = _first_line(err, self.url)
        low = text.lower()
        if "database" in low and "does not exist" in low:
            return StoreUnavailable(f"the PostgreSQL server at {self.where} has no database {self.dbname!r}; "
                                    "nothing changed",
                                    hint=f"create it (createdb {self.dbname}) or fix the database name in ROAST_STORE")
        if "authentication failed" in low or "no password supplied" in low or \
                ("role" in low and "does not exist" in low):
            return StoreUnavailable(f"the PostgreSQL server at {self.where} refused the login of user "
                                    f"{self.user!r} (authentication failed); nothing changed",
                                    hint="check the user and password in ROAST_STORE (or ~/.pgpass)")
        return StoreUnavailable(f"cannot reach the PostgreSQL session store at {self.where} ({text}); nothing "
                                "changed", hint="check that the server runs and that ROAST_STORE names it "
                                                "(postgresql://user@host:port/dbname)")

    def _store_error(self, err: BaseException, session_id: str | None = None,
                     committing: bool = False) -> StoreUnavailable:
        """Map a psycopg error on an open connection to one sentence naming the store, never the password."""
        text = _first_line(err, self.url)
        state = getattr(err, "sqlstate", None) or ""
        desc = self.describe()
        if state == "25006":
            return StoreUnavailable(f"the session store {desc} is read-only ({text}); nothing changed",
                                    hint="point ROAST_STORE at the primary server, or turn off "
                                         "default_transaction_read_only for this database")
        if state == "53100" or "no space left on device" in text.lower():
            what = f"could not save session {session_id}" if session_id else "could not write"
            return StoreUnavailable(f"{what} (disk full on the PostgreSQL server at {self.where}); nothing changed",
                                    hint="free some disk space on the database server and try again")
        if state in ("55P03", "40P01", "40001", "57014"):
            return StoreUnavailable(f"the session store {desc} is busy (another roast process has held a lock for "
                                    f"more than {self._busy_timeout():g} s); nothing changed, try again",
                                    hint="raise ROAST_BUSY_TIMEOUT (seconds) to wait longer")
        broken = isinstance(err, psycopg.OperationalError) and (not state or state.startswith(("08", "57P")))
        if broken and committing:
            return StoreUnavailable(f"lost the connection to the PostgreSQL session store at {self.where} while "
                                    f"committing ({text}); the change may or may not have been saved",
                                    hint="`roast session ID` shows what was saved")
        if broken:
            return self._lost(err, session_id)
        return StoreUnavailable(f"the session store {desc} failed ({text}); nothing changed")

    @contextmanager
    def _errors(self, session_id: str | None = None) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as err:
            raise self._store_error(err, session_id) from None


def _first_line(err: BaseException, url: str) -> str:
    """The error's text without the password (psycopg does not print it; be sure anyway)."""
    text = " ".join(str(err).split()) or type(err).__name__
    try:
        password = str(conninfo_to_dict(url).get("password") or "")
    except psycopg.Error:
        password = ""
    return _scrub(text, url, password)


def _scrub(text: str, url: str, password: str = "") -> str:
    if password:
        text = text.replace(password, "***")
    return text.replace(url, mask_url(url))


def not_a_url(shown: str) -> UsageError:
    """A ROAST_STORE that does not parse, or parses only by taking part of the password for a host
    (issue 21): said with the password masked, and never psycopg's text, which may quote it."""
    return UsageError(f"ROAST_STORE {shown!r} is not a PostgreSQL URL roast can read unambiguously: a user name or "
                      "password holds a character that must be percent-encoded", hint="encode it (% as %25, @ as "
                      "%40, # as %23, / as %2F, : as %3A), e.g. python3 -c 'import sys, urllib.parse; "
                      "print(urllib.parse.quote(sys.argv[1], safe=\"\"))' 'PASSWORD'; the form is "
                      "postgresql://user:password@host:port/dbname")
