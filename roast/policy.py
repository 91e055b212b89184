"""A wait's gate policy (issue 23): who may deliver its events, how many must agree, whether the
session's starter may, and when reminders and escalations are due.

Pure: no I/O, no clock (`now` is passed in), no store. The compiler calls `parse_policy`; a delivery
calls `decide` with the wait's counted approvals and acts on the verdict (`Forbidden`, `Duplicate`:
nothing changes; `Counted`: record it; `Decides`: consume the event, the branch gets
`approval_dicts(verdict.approvals)` as `delivery.approvals`); the worker asks `due_reminder`,
`due_escalations` and `next_timer`. Semantics (SPEC §12):
- An identity containing `@` is compared case-insensitively as a whole (case cannot make one person
  two approvers); others (token names, OS users) exactly.
- `approvers:` entries are identities or globs: `*` is any run of characters but `@`, `?` one
  character but `@` (`*@sre.example.com` never matches `x@evil.com@sre.example.com`); `*` alone
  matches every identity. A delivery without an identity matches none.
- `quorum: {event: N}`: N distinct identities must deliver `event`; earlier ones are `Counted`, the
  same identity again `Duplicate`, the Nth `Decides` with the N approvals and its own data as the
  event's. Other events decide at once (one rejection vetoes). Counts are per event, never withdrawn.
- The first refusal wins: no identity (when the wait names approvers or the event has a quorum), not
  an approver, the starter under `self_approval: false`, unverified under `require_verified: true`.
- Reminder k (1, 2, …) is due at opened_at + k·remind; after an absence only the latest due one is
  sent. Each `escalate:` entry fires once at opened_at + after. The worker records the last reminder
  index and the escalations fired (compare-and-set in the store), so each fires at most once.
"""
from __future__ import annotations

import re

from roast.errors import RoastError, UsageError, WorkflowInvalid
from roast.expressions import edits, iso, parse_duration
from roast.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

# The wait keys this module reads; the compiler reserves them (no event may take these names).
POLICY_KEYS = ("approvers", "quorum", "self_approval", "require_verified", "remind", "escalate")
ESCALATE_KEYS = ("after", "notify")
MIN_INTERVAL = 1.0  # seconds: remind/escalate durations follow `within:` (issue 23), from 1 s


class Escalation(Record):
    """One `escalate:` entry: `after` seconds past the opening, run `notify` once (None: the wait's)."""
    __slots__ = ("after", "notify")
    _defaults = {"notify": None}


class Policy(Record):
    """A wait's policy. `approvers`: None (anyone may deliver) or identities and patterns; `quorum`:
    (event, N ≥ 1) pairs, hashable like every node's fields (other events decide at once); `remind`:
    seconds or None; `escalate`: `Escalation`s sorted by `after`."""
    __slots__ = ("approvers", "quorum", "self_approval", "require_verified", "remind", "escalate")
    _defaults = {"approvers": None, "quorum": (), "self_approval": True, "require_verified": False,
                 "remind": None, "escalate": ()}

    def need(self, event: str) -> int | None:
        """How many distinct identities must deliver `event` (None: it decides at once)."""
        return next((n for name, n in self.quorum if name == event), None)


class Approval(Record):
    """One delivery counted toward a wait: the `event`, who (`actor`, `verified`), why (`reason`),
    when (`at`, epoch seconds) and the event `data` (a JSON object, or None)."""
    __slots__ = ("event", "actor", "verified", "reason", "at", "data")
    _defaults = {"verified": False, "reason": None, "at": None, "data": None}


class Forbidden(Record):
    """The actor may not deliver this wait's events: nothing changes. `reason` is a plain sentence."""
    __slots__ = ("reason",)
    outcome = "forbidden"


class Duplicate(Record):
    """The same identity was already counted for this event: nothing changes."""
    __slots__ = ("event", "actor", "have", "need")
    outcome = "duplicate"


class Counted(Record):
    """The approval counts but the quorum is not met yet: record it. `approvers` lists the identities
    counted so far, this one last."""
    __slots__ = ("event", "have", "need", "approvers")
    outcome = "counted"

    def to_dict(self) -> dict[str, Any]:
        """The `quorum` member of a delivery's JSON document."""
        return {"event": self.event, "have": self.have, "need": self.need, "approvers": list(self.approvers)}


class Decides(Record):
    """The event is consumed: the quorum is met (or the event has none). `approvals` are the ones
    that decided it, in delivery order, this one last."""
    __slots__ = ("event", "approvals")
    outcome = "decides"


def to_doc(policy: Policy | None) -> dict[str, Any] | None:
    """The policy as saved with a session's wait (`awaiting[i].policy`, plain JSON): what a delivery's
    transaction decides with, without loading the workflow. Escalations keep only their `after`."""
    if policy is None:
        return None
    return {"approvers": None if policy.approvers is None else list(policy.approvers),
            "quorum": dict(policy.quorum), "self_approval": bool(policy.self_approval),
            "require_verified": bool(policy.require_verified), "remind": policy.remind,
            "escalate": [e.after for e in policy.escalate]}


def from_doc(doc: Mapping[str, Any] | None) -> Policy | None:
    """A saved policy (`to_doc`) again; None for None (a wait saved without one)."""
    if not doc:
        return None
    approvers = doc.get("approvers")
    return Policy(None if approvers is None else tuple(approvers),
                  tuple((str(k), int(v)) for k, v in (doc.get("quorum") or {}).items()),
                  bool(doc.get("self_approval", True)), bool(doc.get("require_verified", False)),
                  doc.get("remind"), tuple(Escalation(float(a)) for a in doc.get("escalate") or ()))


def identity_key(identity: str) -> str:
    """The form identities are compared in: an email is compared case-insensitively, the rest exactly.

    >>> identity_key("Ana@Example.COM"), identity_key("Deploy-Bot")
    ('ana@example.com', 'Deploy-Bot')
    """
    identity = identity.strip()
    return identity.casefold() if "@" in identity else identity


def is_pattern(entry: str) -> bool:
    """Whether an `approvers:` entry is a glob (`*` or `?`) rather than one exact identity."""
    return "*" in entry or "?" in entry


def matches(entry: str, identity: str) -> bool:
    """Whether `identity` is the approver `entry` (an exact identity or a glob pattern).

    >>> matches("*@sre.example.com", "Bo@SRE.example.com"), matches("*@sre.example.com", "bo@example.com")
    (True, False)
    """
    key, entry = identity_key(identity), entry.strip()
    if not key or entry == "*" or not is_pattern(entry):
        return bool(key) and (entry == "*" or identity_key(entry) == key)
    body = "".join("[^@]*" if c == "*" else "[^@]" if c == "?" else re.escape(c) for c in identity_key(entry))
    return re.fullmatch(body, key) is not None  # `re` caches the compiled pattern


def misspelt_key(key: str) -> str | None:
    """The policy key that a wait's key `key` is a near miss of (`qourum`, `approver`), else None: one
    edit away (two for the long ones), never a key that extends one (`approved`, `escalated` are events)."""
    word = key.lower()
    for name in POLICY_KEYS:
        near = not word.startswith(name) and edits(word, name) <= (2 if len(name) > 12 else 1)
        if key != name and (word == name or near):
            return name
    return None


def exact_approvers(policy: Policy | None) -> tuple[str, ...]:
    """The approvers listed by exact identity, deduplicated in order: one per-person link each."""
    seen: dict[str, str] = {}
    for entry in (policy.approvers or ()) if policy else ():
        if not is_pattern(entry):
            seen.setdefault(identity_key(entry), entry.strip())
    return tuple(seen.values())


def decide(policy: Policy | None, *, event: str, actor: str | None, verified: bool, starter: str | None,
           prior: Sequence[Approval], reason: str | None = None, at: float | None = None,
           data: Any = None) -> Forbidden | Duplicate | Counted | Decides:
    """The verdict on one delivery of `event` by `actor` to a wait with `policy`.

    `starter` is the session's `started_by`; `prior` the wait's counted approvals (of any event);
    `reason`, `at` and `data` describe this delivery (kept in `Decides.approvals`).

    >>> p = Policy(approvers=("*@example.com",), quorum=(("approved", 2),))
    >>> decide(p, event="approved", actor="ana@example.com", verified=True, starter=None, prior=())
    Counted(event='approved', have=1, need=2, approvers=('ana@example.com',))
    """
    mine = Approval(event, actor, bool(verified), reason, at, data)
    need = policy.need(event) if policy else None
    if policy and (refusal := _refusal(policy, actor, bool(verified), starter, counted=need is not None)):
        return Forbidden(refusal)
    if need is None:
        return Decides(event, (mine,))
    counted = _distinct(prior, event)
    if identity_key(str(actor)) in counted:
        return Duplicate(event, str(actor), len(counted), need)
    if len(counted) + 1 >= need:
        return Decides(event, (*counted.values(), mine))
    return Counted(event, len(counted) + 1, need, (*(a.actor for a in counted.values()), str(actor)))


def _refusal(policy: Policy, actor: str | None, verified: bool, starter: str | None,
             counted: bool) -> str | None:
    """Why `actor` may not deliver to a wait with `policy`, in plain words; None when they may."""
    if not (actor and actor.strip()):
        return ("a delivery without an identity cannot decide a wait that names its approvers"
                if policy.approvers is not None else
                "a delivery without an identity cannot count toward a quorum" if counted else None)
    if policy.approvers is not None and not any(matches(entry, actor) for entry in policy.approvers):
        return f"{actor} is not among the approvers of this wait (allowed: {', '.join(policy.approvers)})"
    if not policy.self_approval and starter and identity_key(starter) == identity_key(actor):
        return f"the session's starter may not approve it ({actor} started it; self_approval: false)"
    if policy.require_verified and not verified:
        return (f"only verified identities may decide this wait ({actor} is declared, not verified: "
                "use a token, a per-person link or an SSH-signed approval)")
    return None


def _distinct(prior: Sequence[Approval], event: str) -> dict[str, Approval]:
    """The first counted approval of each identity for `event`, in delivery order."""
    counted: dict[str, Approval] = {}
    for approval in prior:
        if approval.event == event and approval.actor:
            counted.setdefault(identity_key(str(approval.actor)), approval)
    return counted


def approval_dicts(approvals: Sequence[Approval]) -> list[dict[str, Any]]:
    """`{{ delivery.approvals }}`: `{actor, verified, reason, at, data}` each, `at` in ISO 8601 UTC."""
    return [{"actor": a.actor, "verified": bool(a.verified), "reason": a.reason, "at": iso(a.at),
             "data": a.data} for a in approvals]


def progress(policy: Policy | None, prior: Sequence[Approval], event: str) -> dict[str, Any] | None:
    """`{event, have, need, approvers}` for an event with a quorum (None without one)."""
    if (need := policy.need(event) if policy else None) is None:
        return None
    names = [a.actor for a in _distinct(prior, event).values()]
    return {"event": event, "have": len(names), "need": need, "approvers": names}


def progress_text(policy: Policy | None, prior: Sequence[Approval], event: str | None = None) -> str:
    """The quorum's progress in words for `roast session`, the page and the inbox: `1 of 2: ana`; without
    `event`, every event with a quorum, named: `approved 1 of 2: ana; rejected 0 of 2`; else empty."""
    events = [event] if event is not None else [name for name, _ in policy.quorum] if policy else []
    parts = []
    for name in events:
        if (shown := progress(policy, prior, name)) is not None:
            names = ": " + ", ".join(shown["approvers"]) if shown["approvers"] else ""
            text = f"{shown['have']} of {shown['need']}{names}"
            parts.append(text if event is not None else f"{name} {text}")
    return "; ".join(parts)


def due_reminder(policy: Policy | None, *, opened_at: float, now: float, sent: int) -> int | None:
    """The reminder to send now, as its index k (`wait.reminder`), or None. Reminder k is due at
    `opened_at + k * remind`; `sent` is the last index sent (0: only the first notice), and after an
    absence only the latest due reminder is sent, never a burst of missed ones."""
    if policy is None or policy.remind is None or now < opened_at:
        return None
    k = int((now - opened_at) // policy.remind)
    return k if k > sent else None


def due_escalations(policy: Policy | None, *, opened_at: float, now: float, fired: int) -> list[int]:
    """Indexes (into `policy.escalate`) of the escalations to fire now; `fired` were fired already.
    Each fires once, in order of `after`; several may be due together after an absence."""
    steps = policy.escalate if policy else ()
    return [i for i, step in enumerate(steps) if i >= fired and opened_at + step.after <= now]


def next_timer(policy: Policy | None, *, opened_at: float, sent: int, fired: int) -> float | None:
    """When the wait's next reminder or escalation is due (epoch), or None: the worker's wake-up."""
    if policy is None:
        return None
    times = [opened_at + (sent + 1) * policy.remind] if policy.remind is not None else []
    times += [opened_at + policy.escalate[fired].after] if fired < len(policy.escalate) else []
    return min(times, default=None)


def parse_policy(raw: Mapping[str, Any], *, where: str, events: Sequence[str], has_notify: bool,
                 where_of: Callable[[str], str] | None = None, within: float | None = None,
                 compile_notify: Callable[[Any, str], Any] | None = None) -> Policy | None:
    """The policy of a wait from its mapping `raw` (None when it sets none of `POLICY_KEYS`). `where`:
    the wait's file:line (`where_of(key)`: one key's, when known); `events`: those it declares;
    `has_notify`: whether it has a `notify:` to run again; `within`: its deadline (seconds), to refuse
    timers that never run; `compile_notify(value, "escalate[i]")` makes an escalation's own `notify:`
    steps (default: kept as is). Raises `WorkflowInvalid` listing every problem with place and hint."""
    if not any(key in raw for key in POLICY_KEYS):
        return None
    problems: list[RoastError] = []

    def problem(key: str, msg: str, hint: str | None = None) -> None:
        problems.append(WorkflowInvalid(msg, where=where_of(key) if where_of else where, hint=hint))

    approvers = _approvers(raw.get("approvers"), problem) if "approvers" in raw else None
    quorum = _quorum(raw.get("quorum"), events, approvers, problem) if "quorum" in raw else ()
    flags = {}
    for key in ("self_approval", "require_verified"):
        value = raw.get(key, key == "self_approval")
        if not isinstance(value, bool):
            problem(key, f"`{key}` must be true or false, not {value!r}", hint=f"e.g.  {key}: false")
        flags[key] = value is True
    remind = _duration(raw.get("remind"), "remind", problem) if raw.get("remind") is not None else None
    escalate = _escalations(raw.get("escalate"), problem, compile_notify) if "escalate" in raw else ()
    if remind is not None and not has_notify:
        problem("remind", "`remind` runs the wait's `notify:` again, but this wait has no `notify:`",
                hint="add `notify: [...]` to the wait (or its config), or remove `remind`")
    if any(e.notify is None for e in escalate) and not has_notify:
        problem("escalate", "an `escalate` entry without its own `notify:` runs the wait's, but this wait "
                "has no `notify:`", hint="give it one: escalate: {after: 8h, notify: [page-oncall]}")
    if within is not None and remind is not None and remind >= within:
        problem("remind", f"`remind` every {_words(remind)} never runs: the wait's deadline is "
                f"{_words(within)}", hint="remind more often than `within:`, or remove `remind`")
    for e in escalate:
        if within is not None and e.after >= within:
            problem("escalate", f"`escalate` after {_words(e.after)} never runs: the wait's deadline is "
                    f"{_words(within)}", hint="escalate before `within:`, or let the `timeout:` branch act")
    if problems:
        raise WorkflowInvalid(f"the wait's policy has {len(problems)} problem{'s' * (len(problems) > 1)}",
                              where=where, problems=problems)
    return Policy(approvers, quorum, flags["self_approval"], flags["require_verified"], remind, escalate)


def _approvers(value: Any, problem: Callable[..., None]) -> tuple[str, ...] | None:
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, (list, tuple)) or not value:
        problem("approvers", "`approvers` must be a non-empty list of identities or patterns",
                hint='e.g.  approvers: [ana@example.com, "*@sre.example.com"]; omit it to let anyone decide')
        return None
    found = []
    for entry in value:
        if isinstance(entry, str) and "{{" in entry:
            problem("approvers", f"approver {entry!r} is a template; approvers are fixed when the workflow "
                    "is loaded", hint="list the identities, or a pattern such as \"*@sre.example.com\"")
        elif not isinstance(entry, str) or not entry.strip() or any(c.isspace() for c in entry.strip()):
            problem("approvers", f"approver {entry!r} must be an identity (an email, a user or token name) "
                    "or a pattern such as \"*@sre.example.com\", without spaces")
        elif entry.strip().count("@") > 1:
            problem("approvers", f"approver {entry!r} has more than one @")
        else:
            found.append(entry.strip())
    return tuple(found)


def _quorum(value: Any, events: Sequence[str], approvers: tuple[str, ...] | None,
            problem: Callable[..., None]) -> tuple[tuple[str, int], ...]:
    if not hasattr(value, "items") or not value:
        problem("quorum", "`quorum` must map an event to how many distinct approvers must deliver it",
                hint="e.g.  quorum: {approved: 2}")
        return ()
    quorum: list[tuple[str, int]] = []
    exact = approvers is not None and not any(is_pattern(a) for a in approvers)
    listed = len({identity_key(a) for a in approvers}) if approvers else 0
    for event, n in value.items():
        event = str(event)
        if event not in events:
            problem("quorum", f"`quorum` names the event {event!r}, which this wait does not declare",
                    hint=_meant(event, events, f"the wait declares {', '.join(events) or 'no event'}"))
        elif isinstance(n, bool) or not isinstance(n, int) or n < 1:
            problem("quorum", f"the quorum of {event!r} must be a whole number of approvers, at least 1, "
                    f"not {n!r}", hint=f"e.g.  quorum: {{{event}: 2}}")
        elif exact and n > listed:
            problem("quorum", f"the quorum of {event!r} is {n}, but only {listed} approver"
                    f"{'s are' if listed != 1 else ' is'} listed", hint=f"list at least {n} approvers, add a "
                    f"pattern such as \"*@example.com\", or lower the quorum to {listed}")
        else:
            quorum.append((event, n))
    return tuple(quorum)


def _duration(value: Any, what: str, problem: Callable[..., None], key: str | None = None) -> float | None:
    try:
        seconds = parse_duration(value, f"`{what}`")
        if seconds < MIN_INTERVAL:
            raise UsageError(f"`{what}` {value!r} is shorter than a second", hint="e.g.  4h, 30m or 90s")
    except RoastError as err:
        problem(key or what, err.message, hint=err.hint)
        return None
    return seconds


def _escalations(value: Any, problem: Callable[..., None],
                 compile_notify: Callable[[Any, str], Any] | None) -> tuple[Escalation, ...]:
    entries = value if isinstance(value, list) else [value]
    found = []
    for i, entry in enumerate(entries):
        what = "escalate" if not isinstance(value, list) else f"escalate[{i}]"
        if not hasattr(entry, "items") or "after" not in entry:
            problem("escalate", f"`{what}` must be a mapping with `after:` (and `notify:`), not {entry!r}",
                    hint="e.g.  escalate: {after: 8h, notify: [page-oncall]}, or a list of them")
            continue
        for key in entry:
            if key not in ESCALATE_KEYS:
                problem("escalate", f"`{what}` has the unknown key {key!r}",
                        hint=_meant(str(key), ESCALATE_KEYS, "it takes `after:` and `notify:`"))
        notify = entry.get("notify")
        if notify is not None and compile_notify is not None:
            notify = compile_notify(notify, what)
        if (after := _duration(entry["after"], f"{what}.after", problem, "escalate")) is not None:
            found.append(Escalation(after, notify))
    return tuple(sorted(found, key=lambda e: e.after))


def _meant(word: str, choices: Sequence[str], otherwise: str) -> str:
    import difflib  # only on error paths: start-up is part of the product

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else otherwise


def _words(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
