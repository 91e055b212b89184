"""Waits anywhere (issue 5): pauses inside if/unless/case/each/repeat/parallel and event branches.

Every test pauses inside a construct, changes the world so that evaluating again would take
another path, resumes, and checks from a log written by shell steps that the original path
continued and nothing before the cursor ran twice. The property test at the end compares random
nested workflows, run in process and with a process per resume, against a reference interpreter.
"""
from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import yaml
from conftest import run_cli, store_env
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import roast
from roast import api


@pytest.fixture(autouse=True)
def fast_home(roast_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """ROAST_HOME on tmpfs when there is one: the store syncs every step to disk (synchronous=FULL),
    which is what makes these many-step tests slow on a busy disk; durability is not tested here."""
    if not os.path.isdir("/dev/shm"):
        yield roast_home
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="roast-test-") as home:
        monkeypatch.setenv("ROAST_HOME", home)
        yield Path(home)


def _write(wf: Any, tmp_path: Path, text: str, **files: Path) -> Path:
    """Write a workflow whose LOG (and other upper-case placeholders) are absolute paths."""
    text = text.replace("LOG", str(tmp_path / "log"))
    for key, path in files.items():
        text = text.replace(key.upper(), str(path))
    return wf(text)


def _log(tmp_path: Path) -> list[str]:
    path = tmp_path / "log"
    return path.read_text().splitlines() if path.exists() else []


def _resume_cli(path: Path, event: str, session_id: str, data: dict[str, Any] | None = None) -> roast.Result:
    """`roast resume --json` in a real process, read back as a Result."""
    args = ["resume", str(path), "-e", event, "-s", session_id, "--json"]
    if data is not None:
        args += ["-d", json.dumps(data)]
    proc = run_cli(*args)
    assert proc.returncode in (0, 1), proc.stderr
    return roast.Result(**json.loads(proc.stdout))


# --------------------------------------------------------------------------- if / unless / case


def test_a_wait_inside_if_continues_in_then_after_the_flag_file_is_deleted(wf, tmp_path):
    flag = tmp_path / "flag"
    flag.write_text("on")
    path = _write(wf, tmp_path, """
        steps:
          - $(echo before >> LOG)
          - if: "$(test -f FLAG)"
            then:
              - $(echo then-1 >> LOG)
              - wait_for_event:
                  go: ["$(echo go-branch >> LOG)"]
              - $(echo then-2 >> LOG)
            else:
              - $(echo else >> LOG)
          - $(echo after >> LOG)
    """, flag=flag)
    first = roast.run(path)
    assert first.status == "waiting" and first.awaiting == ["go"]
    flag.unlink()  # evaluating the condition again would now take `else`
    done = roast.resume("go", session_id=first.session_id)
    assert done.status == "completed", done.error
    assert _log(tmp_path) == ["before", "then-1", "go-branch", "then-2", "after"]


def test_a_wait_inside_unless_continues_through_a_real_process_after_the_flag_file_appears(wf, tmp_path):
    flag = tmp_path / "flag"
    path = _write(wf, tmp_path, """
        steps:
          - $(echo before >> LOG)
          - unless: "$(test -f FLAG)"
            then:
              - $(echo then-1 >> LOG)
              - wait_for_event:
                  go: ["$(echo go-branch >> LOG)"]
              - $(echo then-2 >> LOG)
            else:
              - $(echo else >> LOG)
          - $(echo after >> LOG)
    """, flag=flag)
    proc = run_cli("execute", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    [first] = json.loads(proc.stdout)
    assert first["status"] == "waiting"
    flag.write_text("now present")  # `unless` would now skip `then`
    done = _resume_cli(path, "go", first["session_id"])
    assert done.status == "completed", done.error
    assert _log(tmp_path) == ["before", "then-1", "go-branch", "then-2", "after"]


def test_a_wait_inside_case_continues_in_the_matched_when_after_the_mode_file_changes(wf, tmp_path):
    mode = tmp_path / "mode"
    mode.write_text("fast\n")
    path = _write(wf, tmp_path, """
        steps:
          - $(echo before >> LOG)
          - case: "$(cat MODE)"
            when:
              fast:
                - $(echo fast-1 >> LOG)
                - wait_for_event:
                    go: ["$(echo go-branch >> LOG)"]
                - $(echo fast-2 >> LOG)
              slow:
                - $(echo slow >> LOG)
            else:
              - $(echo other >> LOG)
          - $(echo after >> LOG)
    """, mode=mode)
    proc = run_cli("execute", str(path), "--json")
    [first] = json.loads(proc.stdout)
    assert first["status"] == "waiting", proc.stderr
    assert "when fast" in first["cursor"]
    mode.write_text("slow\n")
    done = _resume_cli(path, "go", first["session_id"])
    assert done.status == "completed", done.error
    assert _log(tmp_path) == ["before", "fast-1", "go-branch", "fast-2", "after"]


# --------------------------------------------------------------------------- each


EACH_OVER_A_LIST_FILE = """
    steps:
      - $(echo before >> LOG)
      - review:
          each: "$(cat LIST)"
          as: f
          steps:
            - seen: $(echo "seen {{f}}" | tee -a LOG)
            - approval:
                wait_for_event:
                  ok: ["$(echo 'ok {{f}} by {{event.who}}' >> LOG)"]
            - $(echo "done {{f}}" >> LOG)
      - $(echo after >> LOG)
"""


def test_a_wait_inside_each_pauses_once_per_item_of_the_list_as_first_read(wf, tmp_path):
    items = tmp_path / "list"
    items.write_text("a.py\nb.py\nc.py\n")
    path = _write(wf, tmp_path, EACH_OVER_A_LIST_FILE, list=items)
    result = roast.run(path)
    items.write_text("x.py\n")  # a re-read list would loop over x.py only
    for index, name in enumerate(["a.py", "b.py", "c.py"]):
        assert result.status == "waiting", result.error
        assert result.awaiting == ["ok"]
        assert result.output["seen"] == f"seen {name}"  # `output` is this iteration's
        assert f"each f={name} ({index + 1}/3)" in result.cursor
        assert result.waits[0]["path"].endswith(f"#{index + 1}")
        if index == 1:  # one resume through a real process
            result = _resume_cli(path, "ok", result.session_id, {"who": "bo"})
        else:
            result = roast.resume("ok", data={"who": f"p{index}"}, session_id=result.session_id)
    assert result.status == "completed", result.error
    assert _log(tmp_path) == [
        "before",
        "seen a.py", "ok a.py by p0", "done a.py",
        "seen b.py", "ok b.py by bo", "done b.py",
        "seen c.py", "ok c.py by p2", "done c.py",
        "after",
    ]
    assert result.output["approval"]["data"] == {"who": "p2"}


def test_each_item_and_output_are_right_after_every_resume_and_the_step_history_has_no_repeats(wf, tmp_path):
    items = tmp_path / "list"
    items.write_text("a\nb\n")
    path = _write(wf, tmp_path, """
        steps:
          - $(echo before >> LOG)
          - names:
              each: "$(cat LIST)"
              as: f
              steps:
                - wait_for_event:
                    ok: ["$(echo 'got {{f}} {{event.n}}' >> LOG)"]
                - name: $(echo "item-{{f}}")
          - $(echo "{{output.names}}" >> LOG)
    """, list=items)
    result = roast.run(path)
    items.write_text("z\n")
    result = roast.resume("ok", data={"n": 1}, session_id=result.session_id)
    assert result.status == "waiting" and result.output["name"] == "item-a"
    assert "(2/2)" in result.cursor
    result = roast.resume("ok", data={"n": 2}, session_id=result.session_id)
    assert result.status == "completed", result.error
    assert result.output["names"] == ["item-a", "item-b"]
    log = _log(tmp_path)
    assert log[:3] == ["before", "got a 1", "got b 2"]
    assert "item-a" in log[3] and "item-b" in log[3]
    paths = [step.path for step in api.history(result.session_id)]
    assert len(paths) == len(set(paths)), paths  # every step ran exactly once


def test_session_shows_the_cursor_inside_each_as_a_readable_path(wf, tmp_path):
    path = _write(wf, tmp_path, """
        steps:
          - $(echo before >> LOG)
          - review:
              each: "{{ ['a.py', 'b.py', 'c.py'] }}"
              as: f
              steps:
                - wait_for_event:
                    ok: ["$(echo ok >> LOG)"]
    """)
    first = roast.run(path)
    roast.resume("ok", session_id=first.session_id)
    proc = run_cli("session", first.session_id)
    assert proc.returncode == 0, proc.stderr
    cursor = next(line for line in proc.stdout.splitlines() if line.startswith("cursor"))
    assert "steps[1] review" in cursor
    assert "each f=b.py (2/3)" in cursor
    assert cursor.rstrip().endswith("wait_for_event")
    assert cursor.index("steps[1] review") < cursor.index("(2/3)") < cursor.index("wait_for_event")


# --------------------------------------------------------------------------- repeat


REPEAT_UNTIL_A_FILE = """
    steps:
      - $(echo before >> LOG)
      - repeat:
          steps:
            - $(echo body >> LOG)
            - wait_for_event:
                fixed: ["$(echo fixed >> LOG)"]
          until: "$(echo until >> LOG; test -f STOP)"
          max_iterations: 3
      - $(echo after >> LOG)
"""


def test_a_wait_inside_repeat_pauses_each_iteration_and_until_is_read_once_per_iteration(wf, tmp_path):
    stop = tmp_path / "stop"
    path = _write(wf, tmp_path, REPEAT_UNTIL_A_FILE, stop=stop)
    result = roast.run(path)
    result = roast.resume("fixed", session_id=result.session_id)
    assert result.status == "waiting" and "repeat #2" in result.cursor
    stop.write_text("")  # `until` is next read after the second iteration's body
    result = roast.resume("fixed", session_id=result.session_id)
    assert result.status == "completed", result.error
    assert _log(tmp_path) == ["before", "body", "fixed", "until", "body", "fixed", "until", "after"]


def test_a_wait_inside_repeat_stops_at_max_iterations_when_until_never_holds(wf, tmp_path):
    path = _write(wf, tmp_path, REPEAT_UNTIL_A_FILE, stop=tmp_path / "never")
    result = roast.run(path)
    pauses = 0
    while result.status == "waiting":
        pauses += 1
        result = _resume_cli(path, "fixed", result.session_id)
    assert result.status == "completed", result.error
    assert pauses == 3
    assert _log(tmp_path) == ["before"] + ["body", "fixed", "until"] * 3 + ["after"]


# --------------------------------------------------------------------------- parallel


def test_parallel_branches_run_to_their_waits_and_the_session_awaits_the_union(wf, tmp_path):
    flag = tmp_path / "flag"
    flag.write_text("")
    path = _write(wf, tmp_path, """
        steps:
          - $(echo before >> LOG)
          - - - $(echo a1 >> LOG)
              - if: "$(test -f FLAG)"
                then:
                  - legal:
                      wait_for_event:
                        legal_ok: ["$(echo a-legal >> LOG)"]
                else:
                  - $(echo a-else >> LOG)
              - $(echo a2 >> LOG)
            - - $(echo b1 >> LOG)
              - security:
                  wait_for_event:
                    sec_ok: ["$(echo b-sec >> LOG)"]
              - $(echo b2 >> LOG)
            - - $(echo c1 >> LOG)
          - $(echo after >> LOG)
    """, flag=flag)
    first = roast.run(path)
    assert first.status == "waiting"
    assert first.awaiting == ["legal_ok", "sec_ok"]
    assert [(w["event"], w["wait"]) for w in first.waits] == [("legal_ok", "legal"), ("sec_ok", "security")]
    assert first.waits[0]["path"].startswith("steps[1][0]")
    assert first.waits[1]["path"].startswith("steps[1][1]")
    assert sorted(_log(tmp_path)) == sorted(["before", "a1", "b1", "c1"])
    flag.unlink()

    second = _resume_cli(path, "sec_ok", first.session_id)
    assert second.status == "waiting"
    assert second.awaiting == ["legal_ok"]
    assert [w["wait"] for w in second.waits] == ["legal"]
    assert _log(tmp_path)[4:] == ["b-sec", "b2"]

    third = roast.resume("legal_ok", session_id=first.session_id)
    assert third.status == "completed", third.error
    assert _log(tmp_path)[6:] == ["a-legal", "a2", "after"]


def test_an_event_goes_to_the_first_waiting_branch_that_declares_it_and_the_other_stays_waiting(wf, tmp_path):
    path = _write(wf, tmp_path, """
        steps:
          - - - first:
                  wait_for_event:
                    approved: ["$(echo first-approved >> LOG)"]
                    rejected: ["$(echo first-rejected >> LOG)"]
            - - second:
                  wait_for_event:
                    approved: ["$(echo second-approved >> LOG)"]
          - $(echo after >> LOG)
    """)
    result = roast.run(path)
    assert result.awaiting == ["approved", "rejected"]
    result = roast.resume("approved", session_id=result.session_id)
    assert result.status == "waiting"
    assert _log(tmp_path) == ["first-approved"]
    assert [(w["event"], w["wait"]) for w in result.waits] == [("approved", "second")]
    proc = run_cli("resume", str(path), "-e", "approved", "-s", result.session_id, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "completed"
    assert _log(tmp_path) == ["first-approved", "second-approved", "after"]
    # the group ended once, when both branches had ended
    assert run_cli("resume", str(path), "-e", "approved", "-s", result.session_id).returncode == 3


def test_an_event_skips_a_waiting_branch_that_does_not_declare_it(wf, tmp_path):
    path = _write(wf, tmp_path, """
        steps:
          - - - wait_for_event:
                  one: ["$(echo a-one >> LOG)"]
            - - wait_for_event:
                  two: ["$(echo b-two >> LOG)"]
                  one: ["$(echo b-one >> LOG)"]
    """)
    result = roast.run(path)
    result = roast.resume("two", session_id=result.session_id)
    assert result.status == "waiting" and result.awaiting == ["one"]
    result = roast.resume("one", session_id=result.session_id)
    assert result.status == "completed", result.error
    assert _log(tmp_path) == ["b-two", "a-one"]


def test_a_failing_branch_fails_the_group_after_the_other_branch_stops_at_its_wait(wf, tmp_path):
    path = _write(wf, tmp_path, """
        steps:
          - - - $(echo a1 >> LOG)
              - $(exit 7)
              - $(echo a-never >> LOG)
            - - $(echo b1 >> LOG)
              - $(echo b2 >> LOG)
              - wait_for_event:
                  go: ["$(echo b-go >> LOG)"]
          - $(echo after >> LOG)
    """)
    result = roast.run(path)
    assert result.status == "failed"
    assert "status 7" in result.error
    assert result.awaiting == []
    assert sorted(_log(tmp_path)) == ["a1", "b1", "b2"]
    assert api.session(result.session_id).status == "failed"


def test_a_branch_failing_after_a_resume_fails_the_group_and_the_session(wf, tmp_path):
    path = _write(wf, tmp_path, """
        steps:
          - - - wait_for_event:
                  go: ["$(echo a-go >> LOG)", "$(exit 3)"]
            - - wait_for_event:
                  other: ["$(echo b-other >> LOG)"]
              - $(echo b-after >> LOG)
          - $(echo after >> LOG)
    """)
    result = roast.run(path)
    done = _resume_cli(path, "go", result.session_id)
    assert done.status == "failed"
    assert "status 3" in done.error
    assert _log(tmp_path) == ["a-go"]
    assert run_cli("resume", str(path), "-e", "other", "-s", result.session_id).returncode == 3


def test_parallel_waits_inside_each_are_routed_per_iteration(wf, tmp_path):
    items = tmp_path / "list"
    items.write_text("1\n2\n")
    path = _write(wf, tmp_path, """
        steps:
          - each: "$(cat LIST)"
            as: n
            steps:
              - - - wait_for_event:
                      a: ["$(echo 'a{{n}}' >> LOG)"]
                - - wait_for_event:
                      b: ["$(echo 'b{{n}}' >> LOG)"]
              - $(echo 'end{{n}}' >> LOG)
    """, list=items)
    result = roast.run(path)
    items.write_text("9\n")
    seen = []
    for event in ["b", "a", "a", "b"]:
        seen.append(list(result.awaiting))
        result = roast.resume(event, session_id=result.session_id)
    assert result.status == "completed", result.error
    assert seen == [["a", "b"], ["a"], ["a", "b"], ["b"]]
    assert _log(tmp_path) == ["b1", "a1", "end1", "a2", "b2", "end2"]


def test_each_loops_in_two_parallel_branches_keep_their_own_loop_variable(wf, tmp_path):
    path = _write(wf, tmp_path, """
        steps:
          - - - each: "{{ ['a'] }}"
                as: f
                steps:
                  - $(echo 'A1 {{f}}' >> LOG)
                  - $(echo 'A2 {{f}}' >> LOG)
                  - wait_for_event:
                      go: ["$(echo 'A-go {{f}}' >> LOG)"]
                  - $(echo 'A3 {{f}}' >> LOG)
            - - each: "{{ ['x'] }}"
                as: f
                steps:
                  - $(echo 'B1 {{f}}' >> LOG)
                  - $(echo 'B2 {{f}}' >> LOG)
    """)
    result = roast.run(path)
    result = roast.resume("go", session_id=result.session_id)
    assert result.status == "completed", result.error
    assert sorted(_log(tmp_path)) == ["A-go a", "A1 a", "A2 a", "A3 a", "B1 x", "B2 x"]


# --------------------------------------------------------------------------- nested waits


def test_a_wait_nested_in_an_event_branch_continues_its_path_after_the_flag_file_is_deleted(wf, tmp_path):
    flag = tmp_path / "flag"
    flag.write_text("")
    path = _write(wf, tmp_path, """
        steps:
          - $(echo before >> LOG)
          - wait_for_event:
              approved:
                - $(echo approved >> LOG)
                - if: "$(test -f FLAG)"
                  then:
                    - deploy:
                        wait_for_event:
                          deployed: ["$(echo 'deployed by {{event.who}}' >> LOG)"]
                          failed: ["$(echo deploy-failed >> LOG)"]
                  else:
                    - $(echo no-deploy >> LOG)
                - $(echo approved-end >> LOG)
              rejected:
                - $(echo rejected >> LOG)
          - $(echo after >> LOG)
    """, flag=flag)
    result = roast.run(path)
    assert result.awaiting == ["approved", "rejected"]
    result = roast.resume("approved", session_id=result.session_id)
    assert result.status == "waiting"
    assert result.awaiting == ["deployed", "failed"]
    assert result.output["wait_for_event"]["event"] == "approved"
    assert "on approved" in result.cursor and result.cursor.endswith("deploy")
    flag.unlink()
    done = _resume_cli(path, "deployed", result.session_id, {"who": "ci"})
    assert done.status == "completed", done.error
    assert done.output["deploy"]["event"] == "deployed"
    assert _log(tmp_path) == ["before", "approved", "deployed by ci", "approved-end", "after"]


def test_several_waits_in_one_branch_each_pause_and_run_in_order(wf, tmp_path):
    mode = tmp_path / "mode"
    mode.write_text("a\n")
    path = _write(wf, tmp_path, """
        steps:
          - $(echo before >> LOG)
          - wait_for_event:
              start:
                - $(echo started >> LOG)
                - first:
                    wait_for_event:
                      one: ["$(echo one >> LOG)"]
                - case: "$(cat MODE)"
                  when:
                    a:
                      - second:
                          wait_for_event:
                            two: ["$(echo two-a >> LOG)"]
                    b:
                      - $(echo b-path >> LOG)
                - third:
                    wait_for_event:
                      three: ["$(echo three >> LOG)"]
                - $(echo start-end >> LOG)
          - $(echo after >> LOG)
    """, mode=mode)
    result = roast.run(path)
    awaited = []
    for event in ["start", "one", "two", "three"]:
        awaited.append(result.awaiting)
        if event == "two":
            mode.write_text("b\n")
            result = _resume_cli(path, event, result.session_id)
        else:
            result = roast.resume(event, session_id=result.session_id)
    assert awaited == [["start"], ["one"], ["two"], ["three"]]
    assert result.status == "completed", result.error
    assert _log(tmp_path) == ["before", "started", "one", "two-a", "three", "start-end", "after"]


# --------------------------------------------------------------------------- property test
#
# A generated workflow is a tree of plain dicts. `_to_yaml` turns it into roast's YAML;
# `_reference` interprets the same tree with Python generators. Every shell step appends
# "<lane> s<id>:<loop values>" to the log, where the lane names the parallel branches around the
# step: steps of one lane run one after another, steps of sibling lanes may interleave, so logs
# are compared per lane (`_lanes`).

EVENTS = ("e1", "e2")
ITEMS = ("a", "b", "c")


class _Ids:
    def __init__(self) -> None:
        self.next = itertools.count()

    def __call__(self) -> int:
        return next(self.next)


def _draw_steps(draw: Any, ids: _Ids, depth: int, lane: str, loop_vars: tuple[str, ...]) -> list[dict]:
    count = draw(st.integers(1, 3 if depth == 0 else 2))
    return [_draw_step(draw, ids, depth, lane, loop_vars) for _ in range(count)]


def _draw_condition(draw: Any, loop_vars: tuple[str, ...]) -> str:
    choices = ["true", "false", "{{ True }}", "{{ 0 }}"]
    choices += [f"{{{{ {var} == 'a' }}}}" for var in loop_vars]
    return draw(st.sampled_from(choices))


def _draw_step(draw: Any, ids: _Ids, depth: int, lane: str, loop_vars: tuple[str, ...],
               kind: str | None = None, events: tuple[str, ...] | None = None) -> dict:
    kinds = ["cmd", "cmd", "wait"] + (["if", "case", "each", "repeat", "par", "wait"] if depth < 2 else [])
    kind = kind or draw(st.sampled_from(kinds))

    def sub() -> list[dict]:
        return _draw_steps(draw, ids, depth + 1, lane, loop_vars)

    if kind == "cmd":
        return {"k": "cmd", "id": ids(), "lane": lane, "vars": loop_vars}
    if kind == "wait":
        events = events or draw(st.sampled_from([("e1",), ("e2",), ("e1", "e2"), ("e2", "e1"), ("e1", "e2")]))
        return {"k": "wait", "branches": {e: sub() for e in events}}
    if kind == "if":
        return {"k": "if", "neg": draw(st.booleans()), "cond": _draw_condition(draw, loop_vars),
                "then": sub(), "else": sub() if draw(st.booleans()) else None}
    if kind == "case":
        options = [f"{{{{ {var} }}}}" for var in loop_vars] + list(ITEMS)
        keys = draw(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=2, unique=True))
        return {"k": "case", "value": draw(st.sampled_from(options)), "whens": {k: sub() for k in keys},
                "else": sub() if draw(st.booleans()) else None}
    if kind == "each":
        var = f"v{depth}"  # sibling parallel branches may reuse a name: each keeps its own value
        items = draw(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=3))
        return {"k": "each", "var": var, "items": items,
                "steps": _draw_steps(draw, ids, depth + 1, lane, loop_vars + (var,))}
    if kind == "repeat":
        return {"k": "repeat", "max": draw(st.integers(1, 3)), "steps": sub()}
    gid = ids()
    branches = [_draw_steps(draw, ids, depth + 1, f"{lane}/g{gid}.{b}", loop_vars) for b in (0, 1)]
    if draw(st.booleans()):  # both branches wait for the same events: they go by step order
        shared = draw(st.sampled_from([("e1",), ("e1", "e2"), ("e2", "e1")]))
        for b, branch in enumerate(branches):
            branch.insert(0, _draw_step(draw, ids, depth + 1, f"{lane}/g{gid}.{b}", loop_vars, "wait", shared))
    return {"k": "par", "gid": gid, "branches": branches}


@st.composite
def workflows(draw: Any) -> list[dict]:
    ids = _Ids()
    steps = _draw_steps(draw, ids, 0, "", ())
    # at least one wait that is always reached, so that every example pauses
    steps.insert(draw(st.integers(0, len(steps))), _draw_step(draw, ids, 0, "", (), kind="wait"))
    return steps


def _line(node: dict, env: dict[str, str]) -> str:
    return f"{node['lane'] or '/'} s{node['id']}:" + ",".join(env[v] for v in node["vars"])


def _to_yaml(steps: list[dict], log: Path) -> str:
    def step(node: dict) -> Any:
        kind = node["k"]
        if kind == "cmd":
            values = ",".join(f"{{{{{v}}}}}" for v in node["vars"])
            return f"$(echo {node['lane'] or '/'} s{node['id']}:{values} >> {log})"
        if kind == "wait":
            return {"wait_for_event": {e: seq(body) for e, body in node["branches"].items()}}
        if kind == "if":
            out = {"unless" if node["neg"] else "if": node["cond"], "then": seq(node["then"])}
            if node["else"] is not None:
                out["else"] = seq(node["else"])
            return out
        if kind == "case":
            out = {"case": node["value"], "when": {k: seq(v) for k, v in node["whens"].items()}}
            if node["else"] is not None:
                out["else"] = seq(node["else"])
            return out
        if kind == "each":
            return {"each": "{{{{ {!r} }}}}".format(node["items"]), "as": node["var"], "steps": seq(node["steps"])}
        if kind == "repeat":
            return {"repeat": {"steps": seq(node["steps"]), "until": "false", "max_iterations": node["max"]}}
        return [seq(branch) for branch in node["branches"]]

    def seq(nodes: list[dict]) -> list[Any]:
        return [step(n) for n in nodes]

    return yaml.safe_dump({"steps": seq(steps)}, sort_keys=False)


def _truth(cond: str, env: dict[str, str]) -> bool:
    if cond in ("true", "false"):
        return cond == "true"
    body = cond[2:-2].strip()
    if body in ("True", "0"):
        return body == "True"
    var = body.split()[0]
    return env[var] == "a"


Waits = list  # the waits a (sub)tree stopped at, in step order: one tuple of event names each


def _reference(steps: list[dict], env: dict[str, str], log: list[str]) -> Iterator[Waits]:
    """Run the tree; yields the waits it stopped at and is sent the event chosen."""
    for node in steps:
        kind = node["k"]
        if kind == "cmd":
            log.append(_line(node, env))
        elif kind == "wait":
            event = yield [tuple(node["branches"])]
            yield from _reference(node["branches"][event], env, log)
        elif kind == "if":
            body = node["then"] if _truth(node["cond"], env) != node["neg"] else node["else"]
            yield from _reference(body or [], env, log)
        elif kind == "case":
            value = env[node["value"][2:-2].strip()] if node["value"].startswith("{{") else node["value"]
            yield from _reference(node["whens"].get(value, node["else"] or []), env, log)
        elif kind == "each":
            for item in node["items"]:
                yield from _reference(node["steps"], {**env, node["var"]: item}, log)
        elif kind == "repeat":
            for _ in range(node["max"]):  # until: "false"
                yield from _reference(node["steps"], env, log)
        else:
            branches = [_reference(b, env, log) for b in node["branches"]]
            waiting: dict[int, Waits] = {}
            for i, branch in enumerate(branches):
                try:
                    waiting[i] = next(branch)
                except StopIteration:
                    pass
            while waiting:
                event = yield [w for i in sorted(waiting) for w in waiting[i]]
                # SPEC §6: the first waiting branch, in step order, that declares the event
                candidates = [i for i in sorted(waiting) if any(event in w for w in waiting[i])]
                if len(candidates) > 1:
                    hypothesis.event("two waiting parallel branches declare the event")
                chosen = candidates[0]
                try:
                    waiting[chosen] = branches[chosen].send(event)
                except StopIteration:
                    del waiting[chosen]


def _awaiting(waits: Waits) -> list[str]:
    return list(dict.fromkeys(e for w in waits for e in w))


def _choose(awaiting: list[str], picks: list[int], n: int) -> str:
    return awaiting[picks[n % len(picks)] % len(awaiting)]


def _run_reference(steps: list[dict], picks: list[int], limit: int = 40) -> tuple[list[str], list[list[str]]]:
    log: list[str] = []
    seen: list[list[str]] = []
    gen = _reference(steps, {}, log)
    try:
        waits = next(gen)
        while True:
            awaiting = _awaiting(waits)
            seen.append(awaiting)
            if len(seen) > limit:
                break
            waits = gen.send(_choose(awaiting, picks, len(seen) - 1))
    except StopIteration:
        pass
    return log, seen


def _lanes(lines: list[str]) -> dict[str, list[str]]:
    """Per lane: its own steps in order, with each nested parallel group collapsed to one token."""
    parsed = [(line.split(" ", 1)[0].rstrip("/"), line) for line in lines]
    lanes = {""} | {lane[: i] for lane, _ in parsed for i in range(len(lane) + 1) if lane[i:i + 1] in ("/", "")}
    out: dict[str, list[str]] = {}
    for lane in sorted(lanes):
        tokens: list[str] = []
        for own, line in parsed:
            if own == lane:
                tokens.append(line)
            elif own.startswith(lane + "/"):
                group = "G" + own[len(lane) + 1:].split("/")[0].split(".")[0]
                if not tokens or tokens[-1] != group:
                    tokens.append(group)
        out[lane] = tokens
    return out


_example = itertools.count()


def _example_dir(tmp_path: Path) -> Path:
    directory = tmp_path / f"ex{next(_example)}"
    directory.mkdir()
    return directory


def _drive_in_process(path: Path, picks: list[int], limit: int) -> tuple[list[list[str]], str]:
    result = roast.run(path)
    seen: list[list[str]] = []
    while result.status == "waiting" and len(seen) <= limit:  # bounded: a wrong resume may loop
        seen.append(list(result.awaiting))
        result = roast.resume(_choose(result.awaiting, picks, len(seen) - 1), session_id=result.session_id)
    return seen, result.status


def _drive_processes(path: Path, picks: list[int], limit: int) -> tuple[list[list[str]], str]:
    proc = run_cli("execute", str(path), "--json")
    [doc] = json.loads(proc.stdout)
    seen: list[list[str]] = []
    while doc["status"] == "waiting" and len(seen) <= limit:
        seen.append(doc["awaiting"])
        event = _choose(doc["awaiting"], picks, len(seen) - 1)
        proc = run_cli("resume", str(path), "-e", event, "-s", doc["session_id"], "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
    return seen, doc["status"]


def _check(tree: list[dict], picks: list[int], tmp_path: Path, drive: Any, max_pauses: int) -> list[str]:
    expected_log, expected_awaiting = _run_reference(tree, picks)
    assume(len(expected_awaiting) <= max_pauses and len(expected_log) <= 4 * max_pauses)  # runtime
    directory = _example_dir(tmp_path)
    log = directory / "log"
    path = directory / "workflow.yml"
    path.write_text(_to_yaml(tree, log))
    awaiting, status = drive(path, picks, max_pauses)
    lines = log.read_text().splitlines() if log.exists() else []
    assert awaiting == expected_awaiting
    assert status == "completed"
    assert sorted(lines) == sorted(expected_log)
    assert _lanes(lines) == _lanes(expected_log)
    return lines


PICKS = st.lists(st.integers(0, 3), min_size=1, max_size=6)
PROPERTY = {"deadline": None, "derandomize": True, "suppress_health_check": [HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow]}


@settings(max_examples=40, **PROPERTY)
@given(tree=workflows(), picks=PICKS)
def test_random_nested_workflows_resumed_in_process_follow_the_reference(tree, picks, tmp_path):
    _check(tree, picks, tmp_path, _drive_in_process, max_pauses=8)


@settings(max_examples=8, **PROPERTY)
@given(tree=workflows(), picks=PICKS)
def test_random_nested_workflows_give_the_same_log_with_a_process_per_resume(tree, picks, tmp_path):
    in_process = _check(tree, picks, tmp_path, _drive_in_process, max_pauses=3)
    by_process = _check(tree, picks, tmp_path, _drive_processes, max_pauses=3)
    assert sorted(in_process) == sorted(by_process)
    assert _lanes(in_process) == _lanes(by_process)


def _consumed(sid: str) -> int:
    return sum(1 for e in api.deliveries(sid) if e.outcome == "consumed" and e.name != "timeout")


def _drive_with_a_crash(path: Path, picks: list[int], limit: int, crash_at: int,
                        point: int) -> tuple[list[list[str]], str]:
    """A process per phase, as a sender would; phase `crash_at` is SIGKILLed at its write point
    `point` (ROAST_FAULT_AT). What the kill left is recovered (`resume -s`) and the sender retries
    with the same event id, so an event is never delivered twice (issue 10)."""
    seen: list[list[str]] = []
    phase = 0
    fault = {"ROAST_FAULT_AT": str(point)}
    proc = run_cli("execute", str(path), "--json", env=fault if crash_at == 0 else None)
    if proc.returncode == 0:
        sid = json.loads(proc.stdout)[0]["session_id"]  # execute --json is a list
    else:
        assert proc.returncode == -9, proc.stderr
        found = roast.sessions(limit=None)
        sid = found[0].id if found else roast.run(path).session_id
    while phase <= limit + 2:
        s = roast.session(sid)
        if s.status == "running" and s.orphaned:
            roast.resume(session_id=sid, wait_for_steps=True)
            continue
        if s.status != "waiting":
            return seen, s.status
        index = _consumed(sid)
        if len(seen) <= index:
            seen.append(list(s.events))
        phase += 1
        event = _choose(s.events, picks, index)
        env = fault if phase == crash_at else None
        proc = run_cli("resume", str(path), "-e", event, "-s", sid, "--event-id", f"pause-{index}", "--json",
                       env=env)
        assert proc.returncode in (0, -9), proc.stderr
    return seen, roast.session(sid).status


@settings(max_examples=12, phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate], **PROPERTY)
@given(tree=workflows(), picks=PICKS, crash_at=st.integers(0, 3), point=st.integers(1, 12))
def test_random_nested_workflows_killed_at_a_random_write_point_still_follow_the_reference(
        tree, picks, crash_at, point, tmp_path):
    # (no shrinking: every example costs several processes; a failure prints the drawn example)
    expected_log, expected_awaiting = _run_reference(tree, picks)
    assume(len(expected_awaiting) <= 3 and len(expected_log) <= 12)
    directory = _example_dir(tmp_path)
    log = directory / "log"
    path = directory / "workflow.yml"
    path.write_text(_to_yaml(tree, log))
    own = store_env(directory / "home")  # a store of its own for every example (a database on PG)
    saved = {name: os.environ.get(name) for name in own}
    os.environ.update(own)
    try:
        awaiting, status = _drive_with_a_crash(path, picks, 3, crash_at, point)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    lines = log.read_text().splitlines() if log.exists() else []
    assert status == "completed"
    assert awaiting == expected_awaiting  # each wait took the event the reference gave it, once
    assert set(lines) == set(expected_log)  # nothing lost
    for line in set(lines):  # at most the one step in flight at the kill ran again
        assert lines.count(line) <= expected_log.count(line) + 1, (line, lines)


def test_the_reference_and_the_lane_comparison_can_tell_a_wrong_path_apart():
    tree = [{"k": "cmd", "id": 0, "lane": "", "vars": ()},
            {"k": "par", "gid": 1, "branches": [
                [{"k": "wait", "branches": {"e1": [{"k": "cmd", "id": 2, "lane": "/g1.0", "vars": ()}]}}],
                [{"k": "wait", "branches": {"e1": [{"k": "cmd", "id": 3, "lane": "/g1.1", "vars": ()}],
                                            "e2": [{"k": "cmd", "id": 4, "lane": "/g1.1", "vars": ()}]}}]]},
            {"k": "cmd", "id": 5, "lane": "", "vars": ()}]
    log, awaiting = _run_reference(tree, [1, 0])
    assert awaiting == [["e1", "e2"], ["e1"]]
    assert log == ["/ s0:", "/g1.1 s4:", "/g1.0 s2:", "/ s5:"]
    assert _lanes(log) == _lanes(["/ s0:", "/g1.0 s2:", "/g1.1 s4:", "/ s5:"])  # siblings interleave
    assert _lanes(log) != _lanes(["/ s0:", "/g1.0 s2:", "/ s5:", "/g1.1 s4:"])  # the group ended early
    assert _lanes(log) != _lanes(["/ s0:", "/g1.1 s3:", "/g1.0 s2:", "/ s5:"])  # wrong branch
