"""Which session store to use, opened: an object given, a URL (`ROAST_STORE`), or SQLite in ROAST_HOME.

Only `api` calls it (faces never open a store, SPEC §11); `roast.api.open_store` is this function.
Each dialect is imported only when its URL is used (psycopg only for PostgreSQL: start-up, issue 25).
"""
from __future__ import annotations

import os

from roast import settings
from roast.errors import UsageError

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from roast.store import SessionStore


def open_store(store: SessionStore | str | None = None, home: str | os.PathLike[str] | None = None) -> SessionStore:
    """The session store to use: `store` (an object, or a URL), else `ROAST_STORE`, else SQLite in
    ROAST_HOME (`home=`). URLs: `sqlite:///path/sessions.db`, `postgresql://user@host:port/db`."""
    if store is not None and not isinstance(store, str):
        return store
    url = store if isinstance(store, str) else settings.store_url()
    if not url or home is not None and not isinstance(store, str):
        from roast.store_sqlite import SQLiteStore

        return SQLiteStore(home)
    if url.startswith("sqlite:"):
        from roast.store_sqlite import SQLiteStore

        path = url[len("sqlite://"):] if url.startswith("sqlite://") else url[len("sqlite:"):]
        if not path or path == "/":
            return SQLiteStore(home)
        return SQLiteStore(os.path.dirname(path) or ".", db_path=path)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from roast.store_postgres import PostgresStore
        except ImportError as err:
            raise UsageError("ROAST_STORE names a PostgreSQL store, and its driver is not installed",
                             hint="pip install 'roast-workflows[postgres]'") from err
        return PostgresStore(url)
    from roast.store import mask_url

    raise UsageError(f"ROAST_STORE {mask_url(url)!r} is not a store URL",
                     hint="use sqlite:///path/sessions.db or postgresql://user@host:port/dbname")
