"""`roast serve`'s claim process (issue 25): the deliveries are claimed in a child process, for the
server, which runs their branches. Tested with real `roast serve` processes over HTTP: the claim
process exists, claims in the server's name, holds no credential, is replaced when it dies, ends
with the server, and never lets the server take a session it claimed for an orphan."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from test_serve import AUTH_ENV, BEARER, eventually, finished, serve, waiting_session  # noqa: F401 - fixture

from roast import api


def children(pid: int) -> list[int]:
    """The living child processes of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def claim_processes(server: Any, count: int = 1) -> list[int]:
    """The server's claim processes (its children running `roast.serve_claims`), once there are `count`."""
    def find() -> list[int] | None:
        found = []
        for pid in children(server.proc.pid):
            try:
                if b"roast.serve_claims" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
        return sorted(found) if len(found) == count else None

    return eventually(find, f"{count} claim process(es) to start")


def claim_process(server: Any) -> int:
    """The server's claim process: its one child running `roast.serve_claims` (a SQLite store)."""
    return claim_processes(server)[0]


def unread(pid: int) -> int:
    """Bytes written to process `pid`'s standard input (a pipe) that it has not read yet."""
    import fcntl
    import struct
    import termios

    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_deliveries_are_claimed_in_a_child_for_the_server_which_runs_the_branch(tmp_path, serve):  # noqa: F811 - the fixture
    sids = [waiting_session(tmp_path) for _ in range(6)]
    server = serve(env=AUTH_ENV)
    child = claim_process(server)
    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert not names & {"ROAST_SERVE_TOKENS", "ROAST_WEBHOOK_SECRET", "ROAST_GITHUB_WEBHOOK_SECRET"}, names
    answers: dict[str, Any] = {}

    def deliver(sid: str) -> None:
        answers[sid] = server.post(sid, "approved", '{"approver": "ana"}', BEARER)

    threads = [threading.Thread(target=deliver, args=(sid,)) for sid in sids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for sid in sids:
        status, doc = answers[sid]
        assert (status, doc["outcome"]) == (200, "consumed"), doc
        assert eventually(lambda sid=sid: finished(sid), "the branch to run").status == "completed"
        # the branch ran in the server, once: its steps' records name the server, never the claim process
        assert [h.path for h in api.history(sid)].count("steps[1].approved[0]") == 1
    assert child in children(server.proc.pid)  # the same claim process made every claim
    assert "recovered" not in server.log, server.log  # never taken for an orphan by its own server

    # the claim is made there: while the claim process is stopped, a delivery waits for it
    held = waiting_session(tmp_path)
    os.kill(child, signal.SIGSTOP)
    try:
        thread = threading.Thread(target=deliver, args=(held,))
        thread.start()
        thread.join(timeout=2)
        assert thread.is_alive() and api.session(held).status == "waiting"
    finally:
        os.kill(child, signal.SIGCONT)
    thread.join(timeout=60)
    assert answers[held][1]["outcome"] == "consumed", answers[held]
    assert eventually(lambda: finished(held), "the branch to run").status == "completed"


def test_a_claim_process_that_dies_is_replaced_and_its_sessions_are_not_lost(tmp_path, serve):  # noqa: F811 - the fixture
    first, second, third = waiting_session(tmp_path), waiting_session(tmp_path), waiting_session(tmp_path)
    server = serve()
    child = claim_process(server)
    os.kill(child, signal.SIGKILL)
    eventually(lambda: not alive(child), "the claim process to die")
    status, doc = server.post(first, "approved", '{"approver": "ana"}')  # a new claim process makes it
    assert (status, doc["outcome"]) == (200, "consumed"), doc
    assert claim_process(server) != child
    assert "the claim process stopped" in server.log, server.log
    assert server.post(second, "approved", '{"approver": "bo"}')[1]["outcome"] == "consumed"

    # it dies with a delivery sent and not answered: that request gets a 503 that says so, and the
    # sender's retry with the same key is answered by the next claim process
    child = claim_process(server)
    os.kill(child, signal.SIGSTOP)
    answers: dict[str, Any] = {}
    key = {"idempotency-key": "third-1"}
    body = '{"approver": "cy"}'
    thread = threading.Thread(target=lambda: answers.update(third=server.post(third, "approved", body, key)))
    thread.start()
    eventually(lambda: unread(child) > 0, "the delivery to reach the claim process's pipe")
    os.kill(child, signal.SIGKILL)
    thread.join(timeout=60)
    status, doc = answers["third"]
    assert (status, doc["error"]["code"]) == (503, "store_unavailable"), doc
    assert "Idempotency-Key" in doc["error"]["hint"], doc
    status, doc = server.post(third, "approved", body, key)
    assert (status, doc["outcome"]) == (200, "consumed"), doc
    for sid in (first, second, third):
        assert eventually(lambda sid=sid: finished(sid), "the branch to run").status == "completed"
        assert [e.outcome for e in api.deliveries(sid)].count("consumed") == 1


def test_the_claim_process_ends_with_the_server_whether_stopped_or_killed(tmp_path, serve):  # noqa: F811 - the fixture
    sid, later = waiting_session(tmp_path), waiting_session(tmp_path)
    server = serve()
    child = claim_process(server)
    assert server.post(sid, "approved", '{"approver": "ana"}')[0] == 200
    eventually(lambda: finished(sid), "the branch to run")
    os.kill(child, signal.SIGTERM)  # a signal to the whole group does not stop it before the server
    assert server.post(later, "approved", '{"approver": "ana"}')[1]["outcome"] == "consumed"
    assert claim_process(server) == child
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    eventually(lambda: not alive(child), "the claim process to end with the server")

    killed = serve()
    child = claim_process(killed)
    killed.proc.kill()
    killed.proc.wait(timeout=30)
    eventually(lambda: not alive(child), "the claim process to end when the server dies")


def test_on_postgresql_two_claim_processes_share_the_deliveries_and_each_is_claimed_once(
        tmp_path, serve, pg_url, monkeypatch):  # noqa: F811 - the fixture
    """A shared store's claims are round trips: roast serve runs two claim processes, each batching
    what waits for it. Both claim; a delivery for a session whose claim is in flight goes to the
    same process (so two batches never wait for each other's row locks), and is a duplicate."""
    from conftest import TEST_KEY

    monkeypatch.setenv("ROAST_STORE", pg_url)
    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    sids = [waiting_session(tmp_path) for _ in range(3)]
    server = serve()
    pids = claim_processes(server, 2)
    answers: dict[int, Any] = {}

    def deliver(n: int, sid: str, key: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.update({n: server.post(
            sid, "approved", '{"approver": "ana"}', {"idempotency-key": key})}))
        thread.start()
        return thread

    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        # both stopped, deliveries one after another: the least busy process takes each (the first
        # process 0 and 2, the second 1); 3 follows 0, the claim of its session being in flight
        threads = []
        for n, (sid, key) in enumerate([(sids[0], "a"), (sids[1], "b"), (sids[2], "c"), (sids[0], "a")]):
            before = sum(unread(pid) for pid in pids)
            threads.append(deliver(n, sid, key))
            eventually(lambda: sum(unread(pid) for pid in pids) > before, f"delivery {n} to reach a pipe")
        os.kill(pids[0], signal.SIGCONT)
        # the first to go on answers all of its deliveries, and none of the other's, which wait for it
        groups = ({0, 2, 3}, {1})  # 3, a repeat of 0, went where 0 was: one session's claims, one process
        eventually(lambda: any(group <= set(answers) for group in groups), "one claim process's answers")
        mine = next(group for group in groups if group <= set(answers))
        assert set(answers) == mine, answers
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    for thread in threads:
        thread.join(timeout=60)
    outcomes = sorted(doc["outcome"] for _, doc in answers.values())
    assert outcomes == ["consumed", "consumed", "consumed", "duplicate"], answers
    for sid in sids:
        assert eventually(lambda sid=sid: finished(sid), "the branch to run").status == "completed"
        assert [e.outcome for e in api.deliveries(sid)].count("consumed") == 1
        assert [h.path for h in api.history(sid)].count("steps[1].approved[0]") == 1
    assert claim_processes(server, 2) == pids and "recovered" not in server.log, server.log

