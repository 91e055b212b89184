"""A wait's gate policy (issue 23), table-tested: every verdict of `decide`, identities and globs,
quorum in every order, vetoes, self-approval, verified identities, timers, and each refusal of
`parse_policy` with its message and hint. Pure: no store, no clock."""
from __future__ import annotations

import itertools
import random

import pytest

from roast.errors import UsageError, WorkflowInvalid
from roast.policy import (
    POLICY_KEYS,
    Approval,
    Counted,
    Decides,
    Duplicate,
    Escalation,
    Forbidden,
    Policy,
    approval_dicts,
    decide,
    due_escalations,
    due_reminder,
    exact_approvers,
    identity_key,
    misspelt_key,
    matches,
    next_timer,
    parse_policy,
    progress,
    progress_text,
)

EVENTS = ("approved", "rejected")
GATE = Policy(approvers=("ana@example.com", "bo@example.com", "*@sre.example.com"), quorum=(("approved", 2),),
              self_approval=False)


def _decide(policy: Policy | None, actor: str | None, *, event: str = "approved", verified: bool = True,
            starter: str | None = "cy@example.com", prior: tuple[Approval, ...] = ()):
    return decide(policy, event=event, actor=actor, verified=verified, starter=starter, prior=prior)


def _parse(raw: dict, *, events=EVENTS, has_notify: bool = True, **kw) -> Policy | None:
    return parse_policy(raw, where="wf.yml:3", events=events, has_notify=has_notify, **kw)


def _refusal(raw: dict, **kw) -> WorkflowInvalid:
    with pytest.raises(WorkflowInvalid) as info:
        _parse(raw, **kw)
    return info.value


# --------------------------------------------------------------------------- identities and globs

@pytest.mark.parametrize("entry, identity, expected", [
    ("ana@example.com", "ana@example.com", True),
    ("ana@example.com", "Ana@Example.COM", True),           # emails compare case-insensitively
    ("ANA@example.com", " ana@example.com ", True),
    ("ana@example.com", "bo@example.com", False),
    ("ana@example.com", "ana@example.com.evil", False),
    ("deploy-bot", "deploy-bot", True),
    ("deploy-bot", "Deploy-Bot", False),                    # other identities compare exactly
    ("*@sre.example.com", "bo@sre.example.com", True),
    ("*@sre.example.com", "Bo@SRE.Example.com", True),
    ("*@sre.example.com", "bo@example.com", False),
    ("*@sre.example.com", "x@evil.com@sre.example.com", False),  # `*` never crosses an @
    ("*@sre.example.com", "@sre.example.com", True),
    ("*@*.example.com", "ana@eu.example.com", True),
    ("*@*.example.com", "ana@example.com", False),
    ("ana?@example.com", "ana2@example.com", True),
    ("ana?@example.com", "ana@example.com", False),
    ("ci-*", "ci-deploy", True),
    ("ci-*", "ci-deploy@example.com", False),
    ("*", "anyone@anywhere.example", True),                # `*` alone is everyone with an identity
    ("*", "bot", True),
    ("*", "", False),
    ("a.b@example.com", "aXb@example.com", False),          # a dot is a dot
    ("[ana]@example.com", "a@example.com", False),          # no character classes: brackets are literal
    ("[ana]@example.com", "[ana]@example.com", True),
])
def test_an_approver_entry_matches_identities(entry, identity, expected):
    assert matches(entry, identity) is expected


def test_identities_are_compared_as_documented():
    assert identity_key("Ana@Example.COM") == "ana@example.com"
    assert identity_key("Deploy-Bot") == "Deploy-Bot"
    assert exact_approvers(Policy(approvers=("Ana@x.com", "ana@X.com", "*@y.com", "bo"))) == ("Ana@x.com", "bo")
    assert exact_approvers(None) == () and exact_approvers(Policy()) == ()


# --------------------------------------------------------------------------- every verdict

@pytest.mark.parametrize("policy, kwargs, verdict", [
    # no policy, or one without quorum: the delivery decides at once
    (None, {"actor": None}, Decides),
    (Policy(), {"actor": "anyone"}, Decides),
    (Policy(), {"actor": None}, Decides),
    (GATE, {"actor": "ana@example.com", "event": "rejected"}, Decides),
    (GATE, {"actor": "ana@example.com"}, Counted),
    (GATE, {"actor": "oncall@sre.example.com"}, Counted),
    (GATE, {"actor": "eve@example.com"}, Forbidden),
    (GATE, {"actor": "eve@example.com", "event": "rejected"}, Forbidden),  # every event of the wait
    (GATE, {"actor": None}, Forbidden),
    (GATE, {"actor": "  "}, Forbidden),
    (GATE, {"actor": "ana@example.com", "starter": "ana@example.com"}, Forbidden),
    (Policy(quorum=(("approved", 2),)), {"actor": None}, Forbidden),
    (Policy(quorum=(("approved", 2),)), {"actor": None, "event": "rejected"}, Decides),
    (Policy(quorum=(("approved", 2),)), {"actor": "anyone"}, Counted),
    (Policy(quorum=(("approved", 1),)), {"actor": "anyone"}, Decides),
    (GATE, {"actor": "ana@example.com", "prior": (Approval("approved", "ANA@example.com"),)}, Duplicate),
    (GATE, {"actor": "ana@example.com", "prior": (Approval("approved", "bo@example.com"),)}, Decides),
    # an approval of another event does not count toward this one
    (GATE, {"actor": "ana@example.com", "prior": (Approval("rejected", "bo@example.com"),)}, Counted),
])
def test_decide_gives_each_verdict(policy, kwargs, verdict):
    result = _decide(policy, **kwargs)
    assert type(result) is verdict
    assert result.outcome == {Decides: "decides", Counted: "counted", Forbidden: "forbidden",
                              Duplicate: "duplicate"}[verdict]


@pytest.mark.parametrize("policy, kwargs, words", [
    (GATE, {"actor": "eve@example.com"}, "eve@example.com is not among the approvers of this wait (allowed: "
                                         "ana@example.com, bo@example.com, *@sre.example.com)"),
    (GATE, {"actor": "Ana@example.com", "starter": "ana@EXAMPLE.com"}, "the session's starter may not approve "
                                                                     "it (Ana@example.com started it"),
    (GATE, {"actor": None}, "a delivery without an identity cannot decide a wait that names its approvers"),
    (Policy(quorum=(("approved", 2),)), {"actor": ""}, "a delivery without an identity cannot count toward a quorum"),
    (Policy(require_verified=True), {"actor": "ana", "verified": False}, "only verified identities may decide "
                                                                         "this wait"),
])
def test_a_forbidden_delivery_says_why_in_plain_words(policy, kwargs, words):
    verdict = _decide(policy, **kwargs)
    assert isinstance(verdict, Forbidden)
    assert words in verdict.reason


def test_the_starter_may_approve_unless_self_approval_is_false():
    allowed = Policy(approvers=("*@example.com",))
    assert isinstance(_decide(allowed, "cy@example.com", starter="cy@example.com"), Decides)
    assert isinstance(_decide(allowed._replace(self_approval=False), "cy@example.com", starter="cy@example.com"),
                      Forbidden)
    # a session nobody is recorded as starting has no starter to refuse
    assert isinstance(_decide(allowed._replace(self_approval=False), "cy@example.com", starter=None), Decides)


def test_an_unverified_actor_counts_as_itself_unless_verified_identities_are_required():
    policy = Policy(approvers=("ana@example.com",))
    decided = _decide(policy, "ana@example.com", verified=False)
    assert isinstance(decided, Decides) and decided.approvals[0].verified is False
    assert isinstance(_decide(policy._replace(require_verified=True), "ana@example.com", verified=False), Forbidden)
    assert isinstance(_decide(policy._replace(require_verified=True), "ana@example.com", verified=True), Decides)


def test_an_outsider_is_refused_before_the_verified_check():
    policy = Policy(approvers=("ana@example.com",), require_verified=True)
    assert "not among the approvers" in _decide(policy, "eve@example.com", verified=False).reason


def test_a_duplicate_reports_the_count_so_far():
    prior = (Approval("approved", "ana@example.com", True, None, 10.0),)
    assert _decide(GATE, "Ana@Example.com", prior=prior) == Duplicate("approved", "Ana@Example.com", 1, 2)


def test_a_counted_approval_carries_have_need_and_approvers():
    prior = (Approval("approved", "ana@example.com"),)
    quorum3 = GATE._replace(quorum=(("approved", 3),))
    verdict = _decide(quorum3, "oncall@sre.example.com", prior=prior)
    assert verdict == Counted("approved", 2, 3, ("ana@example.com", "oncall@sre.example.com"))
    assert verdict.to_dict() == {"event": "approved", "have": 2, "need": 3,
                                 "approvers": ["ana@example.com", "oncall@sre.example.com"]}


def test_the_deciding_delivery_carries_every_approval_with_its_data_last():
    prior = (Approval("approved", "ana@example.com", False, "looks good", 1_800_000_000.0, {"n": 1}),)
    verdict = decide(GATE, event="approved", actor="bo@example.com", verified=True, starter=None, prior=prior,
                     reason="ship it", at=1_800_000_060.0, data={"n": 2})
    assert isinstance(verdict, Decides) and verdict.event == "approved"
    assert approval_dicts(verdict.approvals) == [
        {"actor": "ana@example.com", "verified": False, "reason": "looks good", "at": "2027-01-15T08:00:00Z",
         "data": {"n": 1}},
        {"actor": "bo@example.com", "verified": True, "reason": "ship it", "at": "2027-01-15T08:01:00Z",
         "data": {"n": 2}},
    ]


def test_one_rejection_vetoes_a_quorum_in_progress():
    prior = (Approval("approved", "ana@example.com"),)
    verdict = _decide(GATE, "bo@example.com", event="rejected", prior=prior)
    assert isinstance(verdict, Decides) and verdict.event == "rejected"
    assert [a.actor for a in verdict.approvals] == ["bo@example.com"]  # the approvals are not the veto's


# --------------------------------------------------------------------------- quorum in every order

def _run(policy: Policy, deliveries: list[tuple[str, str]]) -> list[object]:
    """Deliver in order as a store would: record `Counted`, stop accepting after `Decides`."""
    prior: list[Approval] = []
    verdicts: list[object] = []
    for i, (event, actor) in enumerate(deliveries):
        if any(isinstance(v, Decides) for v in verdicts):
            verdicts.append("closed")
            continue
        verdict = decide(policy, event=event, actor=actor, verified=True, starter=None, prior=tuple(prior),
                         at=float(i), data={"i": i})
        if isinstance(verdict, Counted):
            prior.append(Approval(event, actor, True, None, float(i), {"i": i}))
        verdicts.append(verdict)
    return verdicts


IDENTITIES = ["ana@example.com", "bo@example.com", "oncall@sre.example.com", "lead@sre.example.com"]


@pytest.mark.parametrize("order", list(itertools.permutations(IDENTITIES)))
def test_a_quorum_of_two_from_four_identities_decides_once_in_every_order(order):
    verdicts = _run(GATE, [("approved", actor) for actor in order])
    decided = [v for v in verdicts if isinstance(v, Decides)]
    assert len(decided) == 1
    assert [a.actor for a in decided[0].approvals] == list(order[:2])
    assert decided[0].approvals[-1].data == {"i": 1}  # the last delivery's data is the event's
    assert [type(v).__name__ if not isinstance(v, str) else v for v in verdicts] == [
        "Counted", "Decides", "closed", "closed"]


def test_sixteen_deliveries_from_four_identities_decide_once_with_two_approvals():
    shuffler = random.Random(23)  # seeded: the same 300 orders on every run
    for _ in range(300):
        deliveries = IDENTITIES * 4
        shuffler.shuffle(deliveries)
        repeated = [("approved", actor.upper() if i % 3 else actor) for i, actor in enumerate(deliveries)]
        verdicts = _run(GATE, repeated)
        decided = [v for v in verdicts if isinstance(v, Decides)]
        assert len(decided) == 1 and len(decided[0].approvals) == 2
        assert len({identity_key(a.actor) for a in decided[0].approvals}) == 2


def test_a_repeat_before_the_quorum_is_a_duplicate_and_changes_nothing():
    verdicts = _run(GATE, [("approved", "ana@example.com"), ("approved", "ANA@example.com"),
                           ("approved", "eve@example.com"), ("approved", "bo@example.com")])
    assert [type(v) for v in verdicts] == [Counted, Duplicate, Forbidden, Decides]
    assert [a.actor for a in verdicts[-1].approvals] == ["ana@example.com", "bo@example.com"]


def test_progress_in_words_and_as_data():
    prior = (Approval("approved", "ana@example.com"), Approval("approved", "Ana@example.com"))
    assert progress_text(GATE, (), "approved") == "0 of 2"
    assert progress_text(GATE, prior, "approved") == "1 of 2: ana@example.com"
    assert progress_text(GATE, prior, "rejected") == ""  # no quorum, nothing to show
    both = GATE._replace(quorum=(("approved", 2), ("rejected", 3)))
    assert progress_text(both, prior) == "approved 1 of 2: ana@example.com; rejected 0 of 3"
    assert progress_text(None, prior) == ""
    assert progress(GATE, prior, "approved") == {"event": "approved", "have": 1, "need": 2,
                                                 "approvers": ["ana@example.com"]}
    assert progress(GATE, prior, "rejected") is None


# --------------------------------------------------------------------------- timers

REMIND = Policy(remind=3600.0, escalate=(Escalation(1800.0, "first"), Escalation(8 * 3600.0, None)))


@pytest.mark.parametrize("now, sent, expected", [
    (1000.0, 0, None),           # the wait opened at 1000: the first notice is reminder 0
    (1000.0 + 3599, 0, None),
    (1000.0 + 3600, 0, 1),
    (1000.0 + 3600, 1, None),    # already sent: never twice
    (1000.0 + 7199, 1, None),
    (1000.0 + 7200, 1, 2),
    (1000.0 + 5 * 3600 + 5, 1, 5),  # after an absence only the latest, no burst
    (999.0, 0, None),            # a clock behind the opening fires nothing
])
def test_reminder_k_is_due_at_k_intervals_after_the_opening(now, sent, expected):
    assert due_reminder(REMIND, opened_at=1000.0, now=now, sent=sent) == expected


def test_a_wait_without_remind_has_no_reminder():
    assert due_reminder(Policy(), opened_at=0.0, now=1e9, sent=0) is None
    assert due_reminder(None, opened_at=0.0, now=1e9, sent=0) is None


@pytest.mark.parametrize("now, fired, expected", [
    (1000.0 + 1799, 0, []),
    (1000.0 + 1800, 0, [0]),
    (1000.0 + 1800, 1, []),
    (1000.0 + 9 * 3600, 0, [0, 1]),   # both due after an absence, each once
    (1000.0 + 9 * 3600, 1, [1]),
    (1000.0 + 9 * 3600, 2, []),
])
def test_each_escalation_fires_once_after_its_delay(now, fired, expected):
    assert due_escalations(REMIND, opened_at=1000.0, now=now, fired=fired) == expected


def test_firing_what_is_due_at_every_tick_sends_each_timer_exactly_once():
    sent, fired, log = 0, 0, []
    for now in range(1000, 1000 + 10 * 3600, 61):
        k = due_reminder(REMIND, opened_at=1000.0, now=float(now), sent=sent)
        if k is not None:
            log.append(("remind", k))
            sent = k
        for i in due_escalations(REMIND, opened_at=1000.0, now=float(now), fired=fired):
            log.append(("escalate", i))
            fired = i + 1
    assert log == [("escalate", 0), ("remind", 1), ("remind", 2), ("remind", 3), ("remind", 4), ("remind", 5),
                   ("remind", 6), ("remind", 7), ("remind", 8), ("escalate", 1), ("remind", 9)]


def test_next_timer_is_the_earliest_of_the_next_reminder_and_escalation():
    assert next_timer(REMIND, opened_at=1000.0, sent=0, fired=0) == 2800.0
    assert next_timer(REMIND, opened_at=1000.0, sent=0, fired=1) == 4600.0
    assert next_timer(REMIND, opened_at=1000.0, sent=9, fired=1) == 1000.0 + 8 * 3600
    assert next_timer(REMIND._replace(remind=None), opened_at=1000.0, sent=0, fired=2) is None
    assert next_timer(None, opened_at=0.0, sent=0, fired=0) is None


# --------------------------------------------------------------------------- parsing

def test_a_wait_without_policy_keys_has_no_policy():
    assert _parse({"approved": [], "within": "2h"}) is None
    assert set(POLICY_KEYS) == {"approvers", "quorum", "self_approval", "require_verified", "remind", "escalate"}


def test_the_issue_example_parses():
    policy = _parse({"approvers": ["ana@example.com", "bo@example.com", "*@sre.example.com"],
                     "quorum": {"approved": 2}, "self_approval": False, "remind": "4h",
                     "escalate": {"after": "8h", "notify": ["$(page-oncall)"]},
                     "approved": [], "rejected": []})
    assert policy == Policy(("ana@example.com", "bo@example.com", "*@sre.example.com"), (("approved", 2),),
                            False, False, 14400.0, (Escalation(28800.0, ["$(page-oncall)"]),))


def test_parsing_fills_the_defaults_sorts_escalations_and_compiles_their_notify():
    policy = _parse({"approvers": "ana@example.com", "require_verified": True,
                     "escalate": [{"after": "8h", "notify": ["b"]}, {"after": 90}, {"after": "1h30m", "notify": "a"}]},
                    compile_notify=lambda value, what: (what, value))
    assert policy.approvers == ("ana@example.com",) and policy.quorum == ()
    assert policy.self_approval is True and policy.require_verified is True and policy.remind is None
    assert policy.escalate == (Escalation(90.0, None), Escalation(5400.0, ("escalate[2]", "a")),
                               Escalation(28800.0, ("escalate[0]", ["b"])))


def test_a_quorum_needs_no_approvers_list():
    assert _parse({"quorum": {"approved": 3}}).need("approved") == 3


def test_patterns_lift_the_limit_on_the_quorum():
    assert _parse({"approvers": ["ana@example.com", "*@sre.example.com"], "quorum": {"approved": 5}}).quorum == (
        ("approved", 5),)


@pytest.mark.parametrize("raw, message, hint", [
    ({"approvers": []}, "`approvers` must be a non-empty list", "omit it to let anyone decide"),
    ({"approvers": None}, "`approvers` must be a non-empty list", None),
    ({"approvers": {"ana": 1}}, "`approvers` must be a non-empty list", None),
    ({"approvers": ["ana smith"]}, "approver 'ana smith' must be an identity", None),
    ({"approvers": [""]}, "approver '' must be an identity", None),
    ({"approvers": [3]}, "approver 3 must be an identity", None),
    ({"approvers": ["{{ inputs.who }}"]}, "approvers are fixed when the workflow is loaded", "a pattern"),
    ({"approvers": ["a@b@example.com"]}, "has more than one @", None),
    ({"approvers": ["ana@x.com", "ANA@x.com"], "quorum": {"approved": 2}},
     "the quorum of 'approved' is 2, but only 1 approver is listed", "lower the quorum to 1"),
    ({"approvers": ["ana@x.com", "bo@x.com"], "quorum": {"approved": 3}},
     "the quorum of 'approved' is 3, but only 2 approvers are listed", "list at least 3 approvers"),
    ({"quorum": {"aproved": 2}}, "`quorum` names the event 'aproved', which this wait does not declare",
     "did you mean 'approved'?"),
    ({"quorum": {"merged": 2}}, "which this wait does not declare", "the wait declares approved, rejected"),
    ({"quorum": {"approved": 0}}, "the quorum of 'approved' must be a whole number of approvers, at least 1",
     "quorum: {approved: 2}"),
    ({"quorum": {"approved": -1}}, "at least 1, not -1", None),
    ({"quorum": {"approved": 1.5}}, "at least 1, not 1.5", None),
    ({"quorum": {"approved": "2"}}, "at least 1, not '2'", None),
    ({"quorum": {"approved": True}}, "at least 1, not True", None),
    ({"quorum": 2}, "`quorum` must map an event to how many distinct approvers", "quorum: {approved: 2}"),
    ({"quorum": {}}, "`quorum` must map an event", None),
    ({"self_approval": "no"}, "`self_approval` must be true or false, not 'no'", "self_approval: false"),
    ({"require_verified": 1}, "`require_verified` must be true or false, not 1", None),
    ({"remind": "0s"}, "`remind` '0s' must be a positive duration", None),
    ({"remind": 0.5}, "`remind` 0.5 is shorter than a second", "4h"),
    ({"remind": "400d"}, "at most 365d", None),
    ({"remind": True}, "must be a positive duration", "YAML reads on/off"),
    ({"remind": "1:30"}, "must be a positive duration", "with units"),
    ({"escalate": "8h"}, "`escalate` must be a mapping with `after:`", "escalate: {after: 8h, notify: "),
    ({"escalate": {"notify": ["x"]}}, "`escalate` must be a mapping with `after:`", None),
    ({"escalate": [{"after": "1h"}, {"aftr": "2h"}]}, "`escalate[1]` must be a mapping with `after:`", None),
    ({"escalate": {"after": "1h", "notfy": ["x"]}}, "`escalate` has the unknown key 'notfy'",
     "did you mean 'notify'?"),
    ({"escalate": {"after": "1h", "to": ["x"]}}, "unknown key 'to'", "it takes `after:` and `notify:`"),
    ({"escalate": {"after": "-1h"}}, "`escalate.after` '-1h' must be a positive duration", None),
    ({"escalate": [{"after": "1h"}, {"after": 0.1}]}, "`escalate[1].after` 0.1 is shorter than a second", None),
])
def test_parse_refuses_a_bad_policy_with_a_message_and_hint(raw, message, hint):
    err = _refusal(raw)
    assert isinstance(err, UsageError) and err.exit_code == 2
    assert len(err.problems) == 1, [str(p) for p in err.problems]
    problem = err.problems[0]
    assert message in problem.message
    assert problem.where == "wf.yml:3"
    if hint:
        assert hint in (problem.hint or "")
    assert str(err).startswith("wf.yml:3: ")  # one problem: shown as itself, with its place


@pytest.mark.parametrize("raw, message, hint", [
    ({"remind": "4h"}, "`remind` runs the wait's `notify:` again, but this wait has no `notify:`",
     "add `notify: [...]`"),
    ({"escalate": {"after": "8h"}}, "an `escalate` entry without its own `notify:` runs the wait's",
     "give it one"),
    ({"escalate": [{"after": "8h", "notify": ["x"]}, {"after": "9h"}]}, "without its own `notify:`", None),
])
def test_timers_need_a_notify_to_run(raw, message, hint):
    problem = _refusal(raw, has_notify=False).problems[0]
    assert message in problem.message
    assert hint is None or hint in problem.hint
    assert _parse(raw, has_notify=True) is not None


def test_an_escalation_with_its_own_notify_needs_none_on_the_wait():
    assert _parse({"escalate": {"after": "8h", "notify": ["$(page)"]}}, has_notify=False).escalate[0].after == 28800


@pytest.mark.parametrize("raw, message", [
    ({"remind": "4h"}, "`remind` every 4h never runs: the wait's deadline is 2h"),
    ({"remind": "2h"}, "`remind` every 2h never runs"),
    ({"escalate": {"after": "1d"}}, "`escalate` after 1d never runs: the wait's deadline is 2h"),
])
def test_a_timer_past_the_deadline_is_refused(raw, message):
    assert message in _refusal(raw, within=7200.0).problems[0].message
    assert _parse(raw, within=86401.0) is not None


def test_every_problem_is_reported_at_once_each_at_its_key():
    lines = {"approvers": "wf.yml:4", "quorum": "wf.yml:5", "remind": "wf.yml:6"}
    err = _refusal({"approvers": [], "quorum": {"nope": 2}, "remind": "soon"}, where_of=lines.__getitem__)
    assert [p.where for p in err.problems] == ["wf.yml:4", "wf.yml:5", "wf.yml:6"]
    assert err.message == "the wait's policy has 3 problems"
    assert str(err).count("\n  - wf.yml:") == 3


@pytest.mark.parametrize("key, meant", [
    ("qourum", "quorum"), ("quorom", "quorum"), ("Quorum", "quorum"), ("approver", "approvers"),
    ("aprovers", "approvers"), ("APPROVERS", "approvers"), ("self-approval", "self_approval"),
    ("self_aproval", "self_approval"), ("selfapproval", "self_approval"), ("require-verified", "require_verified"),
    ("requires_verified", "require_verified"), ("require_verifed", "require_verified"), ("remnd", "remind"),
    ("remid", "remind"), ("escalte", "escalate"), ("esclate", "escalate"),
    # event names that must stay events
    ("approved", None), ("approve", None), ("approval", None), ("approvals", None), ("rejected", None),
    ("escalated", None), ("reminded", None), ("reminder", None), ("quorum_met", None), ("verified", None),
    ("remove", None), ("quorum", None), ("approvers", None),
])
def test_a_near_miss_of_a_policy_key_is_caught_but_event_names_stay_events(key, meant):
    assert misspelt_key(key) == meant


def test_the_policy_module_does_no_io():
    """STYLE: the pure halves import no I/O module and read no clock; `now` is passed in."""
    import ast
    from pathlib import Path

    import roast.policy

    tree = ast.parse(Path(roast.policy.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "re", "difflib", "collections.abc", "typing", "roast.errors",
                        "roast.expressions", "roast.record"}, imported
