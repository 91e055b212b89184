"""Issue 21: a signed webhook works once, where it was sent.

A Standard Webhooks signature covers `id.timestamp.body` and GitHub's only the body: neither covers
the URL, which names the session and the event. The store binds a signature (a Standard Webhooks
`webhook-id`, a GitHub body signature) to the first session and event it reaches, in the
delivery's own transaction; the same request anywhere else is refused (409 `replayed`), and a
sender's retry to the same place is a `duplicate`. Real `roast serve` processes on free ports.
"""
from __future__ import annotations

# ruff: noqa: F811 - `serve` is test_serve's fixture, imported to be used by name

import threading
import time

from test_serve import AUTH_ENV, GITHUB_SECRET, SECRET, eventually, finished, serve, waiting_session  # noqa: F401

import roast
from roast import api, webhooks

BODY = b'{"approver": "ana"}'
TWO_EVENTS = """
    name: gate
    steps:
      - wait_for_event:
          approved: ["$(echo approved)"]
          rejected: ["$(echo rejected)"]
"""


def _still_waiting(*session_ids: str) -> None:
    for sid in session_ids:
        s = api.session(sid)
        assert s.status == "waiting", s
        assert not [e for e in api.deliveries(sid) if e.outcome == "consumed"]


def test_a_standard_webhooks_request_for_one_session_is_refused_at_another(tmp_path, serve):
    server = serve(env=AUTH_ENV)
    first = waiting_session(tmp_path)
    second = waiting_session(tmp_path, name="wf2")
    headers = webhooks.sign([SECRET], "msg_1", BODY, now=time.time())
    status, doc = server.post(first, "approved", BODY, headers)
    assert (status, doc["outcome"]) == (200, "consumed"), doc
    # the same headers and body, within the 300 s window, at another session
    status, doc = server.post(second, "approved", BODY, headers)
    assert (status, doc["error"]["code"]) == (409, "replayed"), doc
    assert "nothing changed" in doc["error"]["message"]
    _still_waiting(second)
    # the sender's retry where it was sent stays a duplicate
    status, doc = server.post(first, "approved", BODY, webhooks.sign([SECRET], "msg_1", BODY, now=time.time()))
    assert (status, doc["outcome"]) == (200, "duplicate")
    eventually(lambda: finished(first), "the first branch")


def test_a_signed_request_for_one_event_is_refused_for_another_event_of_the_same_session(tmp_path, serve):
    server = serve(env=AUTH_ENV)
    sid = waiting_session(tmp_path, TWO_EVENTS)
    headers = webhooks.sign([SECRET], "msg_r", BODY, now=time.time())
    other = waiting_session(tmp_path, TWO_EVENTS, name="wf2")
    status, doc = server.post(other, "rejected", BODY, headers)
    assert (status, doc["outcome"]) == (200, "consumed"), doc
    status, doc = server.post(sid, "approved", BODY, headers)
    assert (status, doc["error"]["code"]) == (409, "replayed")
    status, doc = server.post(other, "approved", BODY, headers)  # its own session, another event
    assert (status, doc["error"]["code"]) == (409, "replayed")
    _still_waiting(sid)


def test_a_github_body_cannot_be_replayed_elsewhere_whatever_delivery_id_comes_with_it(tmp_path, serve):
    server = serve(env=AUTH_ENV)
    first = waiting_session(tmp_path)
    second = waiting_session(tmp_path, name="wf2")
    signed = {"x-hub-signature-256": webhooks.github_signature(GITHUB_SECRET, BODY)}
    # without X-GitHub-Delivery: refused (GitHub always sends one)
    status, doc = server.post(first, "approved", BODY, signed)
    assert (status, doc["error"]["code"]) == (401, "unauthorized"), doc
    assert "X-GitHub-Delivery" in doc["error"]["message"]
    status, doc = server.post(first, "approved", BODY, {**signed, "x-github-delivery": "d-1"})
    assert (status, doc["outcome"]) == (200, "consumed"), doc
    for delivery in ("d-1", "d-2"):  # the same id, or a new one made up by whoever replays it
        status, doc = server.post(second, "approved", BODY, {**signed, "x-github-delivery": delivery})
        assert (status, doc["error"]["code"]) == (409, "replayed"), (delivery, doc)
    _still_waiting(second)
    # GitHub's own redelivery (the same delivery id) where it was sent: a duplicate
    status, doc = server.post(first, "approved", BODY, {**signed, "x-github-delivery": "d-1"})
    assert (status, doc["outcome"]) == (200, "duplicate")
    eventually(lambda: finished(first), "the first branch")


def test_a_signature_bound_to_a_session_outlives_its_pruning(tmp_path, serve):
    server = serve(env=AUTH_ENV)
    first = waiting_session(tmp_path)
    signed = {"x-hub-signature-256": webhooks.github_signature(GITHUB_SECRET, BODY), "x-github-delivery": "d-9"}
    assert server.post(first, "approved", BODY, signed)[0] == 200
    eventually(lambda: finished(first), "the first branch")
    assert roast.api.open_store().prune(older_than=0, now=time.time() + 10) >= 1
    second = waiting_session(tmp_path, name="wf2")
    status, doc = server.post(second, "approved", BODY, {**signed, "x-github-delivery": "d-10"})
    assert (status, doc["error"]["code"]) == (409, "replayed"), doc


def test_racing_one_signature_at_many_sessions_delivers_it_at_most_once(tmp_path, serve):
    server = serve(env=AUTH_ENV)
    sessions = [waiting_session(tmp_path, name=f"wf{n}") for n in range(8)]
    headers = webhooks.sign([SECRET], "msg_race", BODY, now=time.time())
    answers: list[int] = []
    start = threading.Barrier(len(sessions))

    def racer(sid: str) -> None:
        start.wait()
        answers.append(server.post(sid, "approved", BODY, headers)[0])

    threads = [threading.Thread(target=racer, args=(sid,)) for sid in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200] + [409] * (len(sessions) - 1), answers
    consumed = [sid for sid in sessions if any(e.outcome == "consumed" for e in api.deliveries(sid))]
    assert len(consumed) == 1
