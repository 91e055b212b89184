"""Issue 25: what one claim costs (`roast serve` makes one per HTTP delivery), on both stores, counted
in statements: a read the claim does not need is CPU and, on PostgreSQL, a round trip per request."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_scale_queries import recorded, store  # noqa: F401  (the fixture: SQLite and PostgreSQL)

import roast

WAITS = "name: claim\nsteps:\n  - wait_for_event:\n      go:\n        - echo went\n"


def test_a_claim_by_session_id_reads_the_sessions_table_four_times(
        store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    """find() reads the row, the lock re-reads it, the state is loaded, the claim's transaction locks
    and re-reads it; the answer is the session as the claim's compare-and-set returned it (it read
    it again once the claim was saved: five, issue 25); the delivery loop's first look reuses
    find()'s (it read it twice in a row: six before that)."""
    (tmp_path / "claim.yml").write_text(WAITS)
    monkeypatch.chdir(tmp_path)
    sid = roast.run(tmp_path / "claim.yml", store=store).session_id
    with recorded(monkeypatch) as seen:
        result = roast.resume("go", session_id=sid, store=store, run=False)
    assert (result.outcome, result.status) == ("consumed", "running")
    assert len(seen) == 4, [sql[-60:] for sql, _ in seen]
    assert roast.session(sid, store=store).status == "running" and result.session_id == sid
