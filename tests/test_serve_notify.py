"""Issue 21: a notify webhook never occupies one of `roast serve`'s branch workers.

A receiver that drips its answer a byte at a time held serve's only worker until the notify's
deadline; another session's claimed branch waited behind it. Notify jobs now run on the worker's
own notify thread. A real server with `--workers 1` and a dripping receiver.
"""
from __future__ import annotations

# ruff: noqa: F811 - `serve` is test_serve's fixture, imported to be used by name

from _receiver import receiving
from test_serve import eventually, finished, serve, waiting_session  # noqa: F401

from roast import api

NOTIFIED = """
    name: hooked
    steps:
      - wait_for_event:
          go: ["$(echo went)"]
      - wait_for_event:
          done: ["$(echo done)"]
          notify:
            - webhook: "{{ env.HOOK_URL }}"
"""


def test_a_dripping_notify_receiver_does_not_hold_the_only_branch_worker(tmp_path, serve):
    hooked = waiting_session(tmp_path, NOTIFIED, name="hooked")
    other = waiting_session(tmp_path, name="other")
    with receiving("/hook", drip=0.5) as (url, got):
        server = serve("--workers", "1", env={"HOOK_URL": url, "ROAST_NOTIFY_TIMEOUT": "120"})
        status, doc = server.post(hooked, "go")
        assert (status, doc["outcome"]) == (200, "consumed"), doc
        eventually(lambda: got.seen, "the notify POST to reach the dripping receiver")
        assert api.session(hooked).status == "waiting"
        status, doc = server.post(other, "approved", '{"approver": "ana"}')
        assert (status, doc["outcome"]) == (200, "consumed"), doc
        # the other session's branch runs while the notify is still being answered, byte by byte
        done = eventually(lambda: finished(other), "the other branch, while the notify drips", timeout=60)
        assert done.status == "completed"
        assert len(got.seen) == 1 and "notify failed" not in server.log
        assert api.session(hooked).notify_pending  # still being notified
