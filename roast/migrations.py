"""The schema of both stores, as numbered migrations (DDL only: `store_sqlite` and `store_postgres`
apply them, each in its own way). Side by side, so the two schemas stay in step: the columns of
every table are `TABLE_COLUMNS`, in this order, in both.

Never edit an entry that has shipped: append a new one, to both lists when both stores change.
Imports nothing.
"""
from __future__ import annotations

# Numbered migrations, applied in order and recorded in PRAGMA user_version. Never edit an entry
# that has shipped: append a new one.
SQLITE: list[tuple[str, ...]] = [
    (  # 1: the first schema (roast 0.1)
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            workflow_path TEXT NOT NULL,
            workflow_name TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            target TEXT,
            status TEXT NOT NULL,
            cursor TEXT,
            awaiting TEXT NOT NULL DEFAULT '[]',
            deadline REAL,
            wait_seq INTEGER NOT NULL DEFAULT 0,
            attempt INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            finished_at REAL,
            error TEXT,
            output TEXT,
            final_output TEXT,
            reason TEXT,
            has_definition INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX sessions_by_status ON sessions(status, created_at)",
        "CREATE INDEX sessions_by_workflow ON sessions(workflow_path, status, created_at)",
        "CREATE INDEX sessions_by_deadline ON sessions(status, deadline)",
        """CREATE TABLE continuations (
            session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
            envelope BLOB NOT NULL
        )""",
        """CREATE TABLE steps (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            name TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            status TEXT NOT NULL,
            output TEXT
        )""",
        "CREATE INDEX steps_by_session ON steps(session_id, path, attempt)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            wait_seq INTEGER NOT NULL,
            name TEXT NOT NULL,
            data TEXT NOT NULL,
            received_at REAL NOT NULL,
            source TEXT NOT NULL,
            UNIQUE(session_id, wait_seq, name)
        )""",
    ),
    (  # 2: roast 0.2 — working directory, owner, deltas, shared definitions, deliveries (issues 10-14)
        "ALTER TABLE sessions ADD COLUMN cwd TEXT",
        "ALTER TABLE sessions ADD COLUMN declares TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE sessions ADD COLUMN key TEXT",
        "ALTER TABLE sessions ADD COLUMN definition TEXT",
        "ALTER TABLE sessions ADD COLUMN owner TEXT",
        "ALTER TABLE sessions ADD COLUMN pending_event INTEGER",
        "ALTER TABLE sessions ADD COLUMN delta_seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN notify_pending INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN ahead TEXT",
        "ALTER TABLE sessions ADD COLUMN schemas TEXT NOT NULL DEFAULT '{}'",
        "CREATE INDEX sessions_by_key ON sessions(workflow_path, key, status)",
        "CREATE INDEX sessions_by_created ON sessions(created_at)",
        "ALTER TABLE steps ADD COLUMN pgid INTEGER",
        "ALTER TABLE steps ADD COLUMN host TEXT",
        "ALTER TABLE steps ADD COLUMN error TEXT",
        """CREATE TABLE events2 (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            wait_seq INTEGER,
            name TEXT NOT NULL,
            data TEXT NOT NULL,
            received_at REAL NOT NULL,
            source TEXT NOT NULL,
            event_id TEXT,
            digest TEXT,
            outcome TEXT NOT NULL DEFAULT 'consumed',
            actor TEXT,
            reason TEXT,
            wait_path TEXT,
            consumed_at REAL,
            detail TEXT
        )""",
        "INSERT INTO events2 (id, session_id, wait_seq, name, data, received_at, source, consumed_at) "
        "SELECT id, session_id, wait_seq, name, data, received_at, source, received_at FROM events",
        "DROP TABLE events",
        "ALTER TABLE events2 RENAME TO events",
        "CREATE INDEX events_by_session ON events(session_id, outcome, id)",
        "CREATE UNIQUE INDEX events_by_event_id ON events(session_id, event_id) "
        "WHERE event_id IS NOT NULL AND outcome IN ('consumed', 'queued', 'unconsumed')",
        "CREATE INDEX events_by_any_id ON events(event_id) WHERE event_id IS NOT NULL",
        """CREATE TABLE deltas (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            envelope BLOB NOT NULL,
            PRIMARY KEY (session_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE definitions (
            fingerprint TEXT PRIMARY KEY,
            envelope BLOB NOT NULL,
            created_at REAL NOT NULL
        )""",
    ),
    (  # issue 22: who decided (verified or not) and who started a session
        "ALTER TABLE events ADD COLUMN verified integer NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN started_by text",
    ),
    (  # issue 21: signed requests bound to the first session and event they reached (no foreign key:
       # the binding outlives a pruned session, so a captured body is never replayed elsewhere)
        """CREATE TABLE signatures (
            digest TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            event TEXT NOT NULL,
            received_at REAL NOT NULL
        )""",
    ),
    (  # issue 20: who cancelled a session (`roast cancel --actor`, default the OS user)
        "ALTER TABLE sessions ADD COLUMN cancelled_by TEXT",
    ),
    (  # issue 25: notify_due() reads only the sessions with a notice pending, not every waiting one
        "CREATE INDEX sessions_notify_due ON sessions(status, notify_pending) WHERE notify_pending <> 0",
    ),
    (  # issue 23: the approvals that decided a gated wait, kept on the consuming event (JSON, else NULL)
        "ALTER TABLE events ADD COLUMN approvals TEXT",
    ),
    (  # issue 23: a wait's reminders and escalations, durable timers fired by the worker: when the wait
       # opened, the last reminder sent, the escalations fired, and when the next one is due
        "ALTER TABLE sessions ADD COLUMN opened_at REAL",
        "ALTER TABLE sessions ADD COLUMN reminded INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN escalated INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN timer_at REAL",
        "CREATE INDEX sessions_timer_due ON sessions(status, timer_at) WHERE timer_at IS NOT NULL",
    ),
    (  # issue 25: a one-status page (`GET /v1/sessions?status=waiting`, `roast sessions -s waiting`) in the
       # listing's whole order (created_at DESC, id DESC) straight from the index: no sort, and the
       # finished sessions at the head of sessions_by_created are never read past
        "DROP INDEX sessions_by_status",
        "CREATE INDEX sessions_by_status ON sessions(status, created_at, id)",
        "DROP INDEX sessions_by_workflow",  # and one workflow's page likewise (else the planner prefers the above)
        "CREATE INDEX sessions_by_workflow ON sessions(workflow_path, status, created_at, id)",
        # made again after them: with no statistics SQLite's planner took the new sessions_by_status
        # for notify_due(), which looks alike to it; made last, this one (only the few sessions with a
        # notice pending) is chosen again (tests/test_scale_queries.py checks the plan)
        "DROP INDEX sessions_notify_due",
        "CREATE INDEX sessions_notify_due ON sessions(status, notify_pending) WHERE notify_pending <> 0",
    ),
]


# Numbered migrations, applied in order under an advisory lock and recorded in roast_schema. Never
# edit an entry that has shipped: append a new one. Column order follows SQLite's schema, so `dump()`
# rows of both stores line up.
POSTGRES: list[tuple[str, ...]] = [
    (  # 1: the schema of SQLite's migration 2 (roast 0.2), plus the holders of liveness locks
        """CREATE TABLE sessions (
            id text COLLATE "C" PRIMARY KEY,
            workflow_path text NOT NULL,
            workflow_name text NOT NULL,
            fingerprint text NOT NULL,
            target text,
            status text NOT NULL,
            cursor text,
            awaiting text NOT NULL DEFAULT '[]',
            deadline double precision,
            wait_seq integer NOT NULL DEFAULT 0,
            attempt integer NOT NULL DEFAULT 1,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            finished_at double precision,
            error text,
            output text,
            final_output text,
            reason text,
            has_definition integer NOT NULL DEFAULT 0,
            cwd text,
            declares text NOT NULL DEFAULT '[]',
            key text,
            definition text,
            owner text,
            pending_event bigint,
            delta_seq integer NOT NULL DEFAULT 0,
            notify_pending integer NOT NULL DEFAULT 0,
            ahead text,
            schemas text NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX sessions_by_status ON sessions(status, created_at)",
        "CREATE INDEX sessions_by_workflow ON sessions(workflow_path, status, created_at)",
        "CREATE INDEX sessions_by_deadline ON sessions(status, deadline)",
        "CREATE INDEX sessions_by_key ON sessions(workflow_path, key, status)",
        "CREATE INDEX sessions_by_created ON sessions(created_at)",
        """CREATE TABLE continuations (
            session_id text COLLATE "C" PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
            envelope bytea NOT NULL
        )""",
        """CREATE TABLE steps (
            session_id text COLLATE "C" NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            path text NOT NULL,
            name text NOT NULL,
            attempt integer NOT NULL,
            started_at double precision NOT NULL,
            finished_at double precision,
            status text NOT NULL,
            output text,
            pgid integer,
            host text,
            error text,
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY
        )""",
        "CREATE INDEX steps_by_session ON steps(session_id, path, attempt)",
        """CREATE TABLE events (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            session_id text COLLATE "C" NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            wait_seq integer,
            name text NOT NULL,
            data text NOT NULL,
            received_at double precision NOT NULL,
            source text NOT NULL,
            event_id text,
            digest text,
            outcome text NOT NULL DEFAULT 'consumed',
            actor text,
            reason text,
            wait_path text,
            consumed_at double precision,
            detail text
        )""",
        "CREATE INDEX events_by_session ON events(session_id, outcome, id)",
        ("CREATE UNIQUE INDEX events_by_event_id ON events(session_id, event_id) "
         "WHERE event_id IS NOT NULL AND outcome IN ('consumed', 'queued', 'unconsumed')"),
        "CREATE INDEX events_by_any_id ON events(event_id) WHERE event_id IS NOT NULL",
        """CREATE TABLE deltas (
            session_id text COLLATE "C" NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seq integer NOT NULL,
            envelope bytea NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
        """CREATE TABLE definitions (
            fingerprint text COLLATE "C" PRIMARY KEY,
            envelope bytea NOT NULL,
            created_at double precision NOT NULL
        )""",
        # Who holds a session's advisory lock (for refusals). No foreign key: hold() comes before create().
        """CREATE TABLE holders (
            session_id text COLLATE "C" PRIMARY KEY,
            lock_key bigint NOT NULL,
            holder text NOT NULL,
            backend_pid integer NOT NULL,
            host text NOT NULL,
            pid integer NOT NULL,
            start text,
            since double precision NOT NULL
        )""",
    ),
    (  # issue 22: who decided (verified or not) and who started a session
        "ALTER TABLE events ADD COLUMN verified integer NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN started_by text",
    ),
    (  # issue 21: signed requests bound to the first session and event they reached (no foreign key:
       # the binding outlives a pruned session, so a captured body is never replayed elsewhere)
        """CREATE TABLE signatures (
            digest text COLLATE "C" PRIMARY KEY,
            session_id text COLLATE "C" NOT NULL,
            event text NOT NULL,
            received_at double precision NOT NULL
        )""",
    ),
    (  # issue 20: who cancelled a session (`roast cancel --actor`, default the OS user)
        "ALTER TABLE sessions ADD COLUMN cancelled_by text",
    ),
    (  # issue 25: notify_due() reads only the sessions with a notice pending, not every waiting one
        "CREATE INDEX sessions_notify_due ON sessions(status, notify_pending) WHERE notify_pending <> 0",
    ),
    (  # issue 23: the approvals that decided a gated wait, kept on the consuming event (JSON, else NULL)
        "ALTER TABLE events ADD COLUMN approvals text",
    ),
    (  # issue 23: a wait's reminders and escalations, durable timers fired by the worker: when the wait
       # opened, the last reminder sent, the escalations fired, and when the next one is due
        "ALTER TABLE sessions ADD COLUMN opened_at double precision",
        "ALTER TABLE sessions ADD COLUMN reminded integer NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN escalated integer NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN timer_at double precision",
        "CREATE INDEX sessions_timer_due ON sessions(status, timer_at) WHERE timer_at IS NOT NULL",
    ),
    (  # issue 25: a one-status page (`GET /v1/sessions?status=waiting`, `roast sessions -s waiting`) in the
       # listing's whole order (created_at DESC, id DESC) straight from the index: no sort, and the
       # finished sessions at the head of sessions_by_created are never read past
        "DROP INDEX sessions_by_status",
        "CREATE INDEX sessions_by_status ON sessions(status, created_at, id)",
        "DROP INDEX sessions_by_workflow",  # and one workflow's page likewise (else the planner prefers the above)
        "CREATE INDEX sessions_by_workflow ON sessions(workflow_path, status, created_at, id)",
        # made again after them: with no statistics SQLite's planner took the new sessions_by_status
        # for notify_due(), which looks alike to it; made last, this one (only the few sessions with a
        # notice pending) is chosen again (tests/test_scale_queries.py checks the plan)
        "DROP INDEX sessions_notify_due",
        "CREATE INDEX sessions_notify_due ON sessions(status, notify_pending) WHERE notify_pending <> 0",
    ),
]


# The columns of every table, in SQLite's order (`dump()`, `roast store copy`).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "sessions": ("id", "workflow_path", "workflow_name", "fingerprint", "target", "status", "cursor", "awaiting",
                 "deadline", "wait_seq", "attempt", "created_at", "updated_at", "finished_at", "error", "output",
                 "final_output", "reason", "has_definition", "cwd", "declares", "key", "definition", "owner",
                 "pending_event", "delta_seq", "notify_pending", "ahead", "schemas", "started_by", "cancelled_by",
                 "opened_at", "reminded", "escalated", "timer_at"),
    "continuations": ("session_id", "envelope"),
    "deltas": ("session_id", "seq", "envelope"),
    "steps": ("session_id", "path", "name", "attempt", "started_at", "finished_at", "status", "output", "pgid",
              "host", "error"),
    "events": ("id", "session_id", "wait_seq", "name", "data", "received_at", "source", "event_id", "digest",
               "outcome", "actor", "reason", "wait_path", "consumed_at", "detail", "verified", "approvals"),
    "definitions": ("fingerprint", "envelope", "created_at"),
}
# issue 21: `signatures` (digest, session_id, event, received_at) is not copied by `roast store copy`
# (store_copy counts every table of TABLE_COLUMNS per session); a copy starts with no bindings.
