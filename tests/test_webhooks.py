"""roast.webhooks: Standard Webhooks and GitHub signatures, and the outgoing sender (issue 15)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest
from _receiver import Receiver, receiving

from roast import webhooks
from roast.errors import UsageError

NOW = 1_800_000_000.0
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()


def _manual_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """An independent Standard Webhooks signer, written from the spec, not from roast's code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_a_signature_made_by_hand_from_the_spec_verifies_and_gives_the_webhook_id():
    body = b'{"approver":"ana"}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(NOW)),
               "webhook-signature": _manual_signature(SECRET, "msg_1", int(NOW), body)}
    assert webhooks.verify([SECRET], headers, body, now=NOW) == "msg_1"
    assert webhooks.sign([SECRET], "msg_1", body, now=NOW) == headers  # roast signs the same bytes


def test_a_changed_body_id_or_timestamp_is_refused():
    body = b'{"approver":"ana"}'
    headers = webhooks.sign([SECRET], "msg_1", body, now=NOW)
    with pytest.raises(webhooks.BadSignature):
        webhooks.verify([SECRET], headers, b'{"approver":"eve"}', now=NOW)
    with pytest.raises(webhooks.BadSignature):
        webhooks.verify([SECRET], {**headers, "webhook-id": "msg_2"}, body, now=NOW)
    with pytest.raises(webhooks.BadSignature):
        webhooks.verify([SECRET], {**headers, "webhook-timestamp": str(int(NOW) + 1)}, body, now=NOW)
    with pytest.raises(webhooks.BadSignature):
        webhooks.verify([OLD_SECRET], headers, body, now=NOW)  # another secret


def test_the_timestamp_tolerance_is_inclusive_and_configurable():
    body = b"{}"
    headers = webhooks.sign([SECRET], "m", body, now=NOW)
    assert webhooks.verify([SECRET], headers, body, now=NOW + 300) == "m"
    assert webhooks.verify([SECRET], headers, body, now=NOW - 300) == "m"  # clock skew the other way
    with pytest.raises(webhooks.BadSignature, match="stale"):
        webhooks.verify([SECRET], headers, body, now=NOW + 301)
    assert webhooks.verify([SECRET], headers, body, now=NOW + 3000, tolerance=3600) == "m"


def test_rotation_several_secrets_and_several_signatures():
    body = b'{"n":1}'
    both = webhooks.sign([SECRET, OLD_SECRET], "m", body, now=NOW)
    assert len(both["webhook-signature"].split()) == 2
    assert webhooks.verify([OLD_SECRET], both, body, now=NOW) == "m"  # the receiver still on the old one
    only_old = webhooks.sign([OLD_SECRET], "m", body, now=NOW)
    assert webhooks.verify([SECRET, OLD_SECRET], only_old, body, now=NOW) == "m"  # the sender still on it


def test_missing_headers_and_unknown_signature_versions_are_refused():
    body = b"{}"
    good = webhooks.sign([SECRET], "m", body, now=NOW)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        with pytest.raises(webhooks.BadSignature):
            webhooks.verify([SECRET], {k: v for k, v in good.items() if k != name}, body, now=NOW)
    v1a = {**good, "webhook-signature": good["webhook-signature"].replace("v1,", "v1a,")}
    with pytest.raises(webhooks.BadSignature):
        webhooks.verify([SECRET], v1a, body, now=NOW)
    with pytest.raises(webhooks.BadSignature):
        webhooks.verify([], good, body, now=NOW)  # no secret configured


@pytest.mark.parametrize("text", ["s3cret", "whsec_not base64!", "whsec_" + base64.b64encode(b"x" * 8).decode(),
                                  "whsec_" + base64.b64encode(b"x" * 65).decode()])
def test_malformed_or_short_secrets_are_refused(text):
    with pytest.raises(UsageError):
        webhooks.parse_secrets(f"{SECRET} {text}")


def test_github_signatures_match_a_hand_made_hmac_and_give_the_delivery_id():
    body = b'{"action":"approved"}'
    by_hand = "sha256=" + hmac.new(b"gh-secret-0123456789", body, hashlib.sha256).hexdigest()
    assert webhooks.github_signature("gh-secret-0123456789", body) == by_hand
    headers = {"X-Hub-Signature-256": by_hand, "X-GitHub-Delivery": "d-1"}
    assert webhooks.verify_github("gh-secret-0123456789", headers, body) == "d-1"
    with pytest.raises(webhooks.BadSignature):
        webhooks.verify_github("gh-secret-0123456789", headers, body + b" ")
    with pytest.raises(webhooks.BadSignature):
        webhooks.verify_github("another-secret-000000", headers, body)


# --------------------------------------------------------------------------- the sender


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[Receiver]]]:
    with receiving() as found:
        yield found


def test_send_retries_5xx_with_backoff_and_signs_every_attempt(receiver):
    url, handler = receiver
    handler.answers = [503, 502]
    slept: list[float] = []
    attempts = webhooks.send(url, {"type": "wait.started"}, msg_id="msg_7", secrets=[SECRET],
                             sleep=slept.append, now=lambda: NOW)
    assert [a.status for a in attempts] == [503, 502, 200]
    assert slept == [1.0, 2.0]
    for headers, body in handler.seen:
        assert json.loads(body) == {"type": "wait.started"}
        assert webhooks.verify([SECRET], headers, body, now=NOW) == "msg_7"  # same id on every retry


def test_send_does_not_retry_a_4xx_and_stops_within_its_time_budget(receiver):
    url, handler = receiver
    handler.answers = [404]
    assert [a.status for a in webhooks.send(url, {}, secrets=[SECRET], sleep=lambda s: None)] == [404]
    handler.answers = [500] * 10
    attempts = webhooks.send(url, {}, secrets=[SECRET], max_time=3.5, sleep=lambda s: None)
    assert [a.status for a in attempts] == [500, 500, 500]  # 1 s + 2 s of backoff fit in 3.5 s, 4 s more do not


def test_send_records_a_connection_error_and_retries_it():
    def refused(url: str, body: bytes, headers: object, timeout: float) -> int:
        raise ConnectionRefusedError(111, "Connection refused")

    attempts = webhooks.send("http://127.0.0.1:9/", {}, secrets=[], post=refused, max_time=1.5,
                             sleep=lambda s: None)
    assert [(a.status, "refused" in (a.error or "")) for a in attempts] == [(None, True), (None, True)]


def _in_thread(fn, limit: float = 60.0):  # type: ignore[no-untyped-def]
    """fn()'s value, run on a thread: a sender that never returns fails the test instead of hanging it."""
    import threading

    box: list[object] = []
    worker = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), f"send() was still waiting after {limit:g} s"
    return box[0]


def test_a_dripping_receiver_is_cut_off_at_the_attempts_deadline_however_slowly_bytes_come():
    with receiving(drip=0.05) as (url, handler):
        attempts = _in_thread(lambda: webhooks.send(url, {}, secrets=[], timeout=1.0, max_time=1.5,
                                                    sleep=lambda s: None))
    assert attempts and all(a.status is None and "within" in a.error for a in attempts), attempts
    assert len(handler.seen) == len(attempts)


def test_the_whole_notify_stops_within_roast_notify_timeout(monkeypatch):
    monkeypatch.setenv("ROAST_NOTIFY_TIMEOUT", "1.5")
    with receiving(drip=0.05) as (url, _):
        attempts = _in_thread(lambda: webhooks.send(url, {}, secrets=[]))  # default per attempt: 15 s
    assert attempts and attempts[-1].status is None and "within" in attempts[-1].error
    assert sum(a.seconds for a in attempts) <= 1.5 + 1.0  # every attempt's deadline fits in the budget


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf", "1e9"])
def test_a_bad_roast_notify_timeout_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("ROAST_NOTIFY_TIMEOUT", value)
    with pytest.raises(UsageError, match="ROAST_NOTIFY_TIMEOUT"):
        webhooks.send("http://127.0.0.1:9/", {}, secrets=[], post=lambda *a: 200)


def test_a_redirect_is_a_failure_and_is_not_followed_with_the_signature():
    with receiving() as (elsewhere, other), receiving(redirect=elsewhere) as (url, handler):
        attempts = webhooks.send(url, {}, secrets=[SECRET], sleep=lambda s: None)
    assert [a.status for a in attempts] == [302]
    assert len(handler.seen) == 1 and other.seen == []


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/ok?token=SEKRET-HOOK-TOKEN x",
    "http://127.0.0.1:9/ok?token=SEKRET-HOOK-TOKEN\tx",
    "http://127.0.0.1:9/ok\n?token=SEKRET-HOOK-TOKEN",
    "http://127.0.0.1:9/ok?token=SEKRET-HOOK-TOKEN\x00",
    "htp://127.0.0.1:9/ok?token=SEKRET-HOOK-TOKEN",
    "http://127.0.0.1:99999/ok?token=SEKRET-HOOK-TOKEN",
    "http://127.0.0.1:9/ok?token=SEKRET-HOOK-TOKEN-é",
    "http:///ok?token=SEKRET-HOOK-TOKEN",
])
def test_an_unusable_url_is_refused_showing_at_most_scheme_host_and_port(url):
    with pytest.raises(ValueError) as caught:
        webhooks.send(url, {}, secrets=[], sleep=lambda s: None)
    assert "SEKRET" not in str(caught.value) and "/ok" not in str(caught.value), caught.value


def test_a_transport_error_never_carries_the_urls_path_or_query():
    def leaky(url: str, body: bytes, headers: object, timeout: float) -> int:
        import http.client

        raise http.client.InvalidURL(f"URL can't contain control characters. {url!r}")

    attempts = webhooks.send("http://127.0.0.1:9/ok?token=SEKRET-HOOK-TOKEN", {}, secrets=[], post=leaky,
                             max_time=0.1, sleep=lambda s: None)
    assert attempts and all("SEKRET" not in (a.error or "") and "/ok" not in (a.error or "") for a in attempts)
