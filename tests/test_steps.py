"""roast.steps and roast.runner: node generators driven by hand with canned replies.

No subprocess, no mocks: a test compiles a definition, calls `root.run(ctx)` and plays the
runner's part, sending back `Done`, model responses, Python return values and `Delivery`s.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest

from roast import requests, steps
from roast import tree as walkers
from roast.compiler import DictSource, compile_workflow
from roast.context import Context, WorkflowInfo
from roast.errors import StepFailed, TimedOut
from roast.runner import Completed, NullJournal, Runner, Waiting
from roast.requests import (Ask, AskModel, CallPython, Checkpoint, Delivery, Done, Event, Receive, Shell, Suspend,
                            WaitInfo)
from roast.steps import AT_WAIT, COLLECTED, DONE
from roast.workflow import load

FINISHED = object()


def tree(data: dict[str, Any]) -> steps.Sequence:
    return compile_workflow(DictSource(data))


def new_ctx() -> Context:
    return Context(WorkflowInfo("t", "t.yml"))


class Drive:
    """Plays the runner: `reply(x)` sends x into the generator and returns the next request."""

    def __init__(self, root: Any, ctx: Context, at: Any = steps.HERE) -> None:
        self.gen = root.run(ctx, at)
        self.first = self.reply(None)

    def reply(self, value: Any) -> Any:
        try:
            return self.gen.send(value)
        except StopIteration:
            return FINISHED

    def fail(self, err: BaseException) -> Any:
        try:
            return self.gen.throw(err)
        except StopIteration:
            return FINISHED


# --------------------------------------------------------------------------- leaf steps


def test_a_command_step_yields_a_shell_request_whose_values_travel_in_the_environment():
    root = tree({"steps": [{"greet": "$(echo \"hello {{ output.who }}\" {{ output.who }})"}]})
    ctx = new_ctx()
    ctx.output["who"] = "ana; rm -rf ~"
    d = Drive(root, ctx)
    request = d.first
    assert isinstance(request, Shell)
    assert request.command == 'echo "hello ${ROAST_ARG_1}" "${ROAST_ARG_2}"'
    assert request.env == {"ROAST_ARG_1": "ana; rm -rf ~", "ROAST_ARG_2": "ana; rm -rf ~"}
    assert (request.path, request.name, request.step) == ("steps[0]", "greet", True)
    assert d.reply(Done(0, "hello ana\n")) == Checkpoint((1, None))
    assert ctx.output["greet"] == "hello ana"
    assert d.reply(None) is FINISHED


def test_a_single_quoted_placeholder_closes_and_reopens_the_quotes_around_its_variable():
    root = tree({"steps": ["$(echo 'x {{ output.v }} y')"]})
    ctx = new_ctx()
    ctx.output["v"] = "it's"
    request = Drive(root, ctx).first
    assert request.command == "echo 'x '\"${ROAST_ARG_1}\"' y'"
    assert request.env == {"ROAST_ARG_1": "it's"}


def test_each_step_checkpoints_the_cursor_of_the_next_step():
    root = tree({"steps": ["$(echo a)", "$(echo b)"]})
    ctx = new_ctx()
    d = Drive(root, ctx)
    assert d.first.command == "echo a"
    assert d.reply(Done(0, "a\n")) == Checkpoint((1, None))
    assert d.reply(None).command == "echo b"
    assert d.reply(Done(0, "b\n")) == Checkpoint((2, None))
    assert d.reply(None) is FINISHED
    assert ctx.last == "b" and ctx.output == {}  # unnamed steps are not in `output`


def test_a_failing_command_raises_step_failed_naming_the_command_and_its_path():
    root = tree({"steps": ["$(false)"]})
    d = Drive(root, new_ctx())
    with pytest.raises(StepFailed) as info:
        d.reply(Done(3, "", "it broke\n"))
    assert "status 3" in str(info.value) and "$(false)" in str(info.value)
    assert "it broke" in str(info.value) and info.value.where == "steps[0]"


def test_exit_on_error_false_keeps_the_exit_status_in_the_output():
    root = tree({"steps": [{"check": "$(false)"}], "check": {"exit_on_error": False}})
    ctx = new_ctx()
    d = Drive(root, ctx)
    assert d.reply(Done(3, "partial\n")) == Checkpoint((1, None))
    assert ctx.output["check"] == "partial\n[Exit status: 3]"


def test_a_command_timeout_from_the_config_is_in_the_shell_request():
    root = tree({"steps": [{"slow": "$(sleep 5)"}], "slow": {"timeout": "2m"}})
    assert Drive(root, new_ctx()).first.timeout == 120.0


def test_coerce_to_boolean_and_iterable_convert_a_command_output():
    root = tree({"steps": [{"ok": "$(echo yes)"}, {"items": "$(echo)"}],
                 "ok": {"coerce_to": "boolean"}, "items": {"coerce_to": "iterable"}})
    ctx = new_ctx()
    d = Drive(root, ctx)
    d.reply(Done(0, "false\n"))
    d.reply(None)
    d.reply(Done(0, '["a", "b"]\n'))
    assert ctx.output == {"ok": False, "items": ["a", "b"]}


def test_a_prompt_step_asks_the_model_with_the_rendered_prompt_and_the_transcript():
    root = tree({"steps": ["Summarize {{ output.topic }} please", {"again": "And now {{ output.topic }}"}]})
    ctx = new_ctx()
    ctx.output["topic"] = "cats"
    d = Drive(root, ctx)
    first = d.first
    assert isinstance(first, AskModel)
    assert (first.prompt, first.path, first.transcript) == ("Summarize cats please", "steps[0]", ())
    assert d.reply("cats are fine") == Checkpoint((1, None))
    second = d.reply(None)
    assert second.name == "again" and second.prompt == "And now cats"
    assert second.transcript == ({"role": "user", "content": "Summarize cats please"},
                                 {"role": "assistant", "content": "cats are fine"})
    d.reply("done")
    assert ctx.output["again"] == "done"


def test_a_json_prompt_parses_the_response_and_refuses_invalid_json():
    root = tree({"steps": [{"facts": "give me json"}], "facts": {"json": True}})
    ctx = new_ctx()
    d = Drive(root, ctx)
    assert d.first.json is True
    d.reply('{"n": 3}')
    assert ctx.output["facts"] == {"n": 3}
    d = Drive(root, new_ctx())
    with pytest.raises(StepFailed, match="not valid JSON"):
        d.reply("not json")


def test_a_python_step_gets_the_context_and_its_params_and_its_return_value_is_the_output():
    def score(ctx):
        return 1

    root = tree({"steps": [score, {"named": score}], "named": {"params": {"k": 2}}})
    ctx = new_ctx()
    d = Drive(root, ctx)
    call = d.first
    assert isinstance(call, CallPython)
    assert call.target is score and call.ctx is ctx and call.name == "score"
    d.reply({"answer": 42})
    call = d.reply(None)
    assert call.name == "named" and call.params == {"k": 2} and call.path == "steps[1]"
    d.reply([1, 2])
    assert ctx.output["named"] == [1, 2] and ctx.last == [1, 2]


def test_a_python_step_failure_is_kept_as_output_when_exit_on_error_is_false():
    root = tree({"steps": [{"check": len}, "$(echo next)"], "check": {"exit_on_error": False}})
    ctx = new_ctx()
    d = Drive(root, ctx)
    assert d.fail(StepFailed("boom")) == Checkpoint((1, None))
    assert ctx.output["check"] == "[Error: boom]"
    assert d.reply(None).command == "echo next"


def test_a_python_step_failure_propagates_by_default():
    d = Drive(tree({"steps": [len]}), new_ctx())
    with pytest.raises(StepFailed, match="boom"):
        d.fail(StepFailed("boom"))


def test_an_input_step_asks_the_terminal_and_stores_the_answer():
    root = tree({"steps": [{"input": {"prompt": "Deploy {{ output.app }}?", "type": "confirm",
                                      "name": "go"}}]})
    ctx = new_ctx()
    ctx.output["app"] = "shop"
    d = Drive(root, ctx)
    ask = d.first
    assert isinstance(ask, Ask)
    assert (ask.prompt, ask.kind, ask.name) == ("Deploy shop?", "confirm", "go")
    d.reply(True)
    assert ctx.output["go"] is True


def test_a_script_step_runs_the_file_through_an_environment_variable(wf):
    path = wf("steps: [build]\n", files={"build.sh": "#!/bin/sh\necho built\n"})
    root = compile_workflow(load(path))
    ctx = Context(WorkflowInfo("wf", str(path), "s1", "a.txt"))
    d = Drive(root, ctx)
    shell = d.first
    assert shell.command == '"${ROAST_SCRIPT}"'
    assert shell.env["ROAST_SCRIPT"] == str(path.parent / "build.sh")
    assert shell.env["ROAST_TARGET"] == "a.txt" and shell.env["ROAST_STEP_NAME"] == "build"
    d.reply(Done(0, '{"version": 7}\n'))
    assert ctx.output["build"] == {"version": 7}


# --------------------------------------------------------------------------- composites


def test_steps_inside_a_branch_carry_their_path_and_nested_cursors():
    root = tree({"steps": ["$(echo a)", {"if": "{{ True }}", "then": ["$(echo b)", "$(echo c)"]}]})
    d = Drive(root, new_ctx())
    d.reply(Done(0, "a"))
    inner = d.reply(None)
    assert inner.path == "steps[1].then[0]"
    assert d.reply(Done(0, "b")) == Checkpoint((1, ("then", (1, None))))
    assert d.reply(None).path == "steps[1].then[1]"
    assert d.reply(Done(0, "c")) == Checkpoint((1, ("then", (2, None))))
    assert d.reply(None) == Checkpoint((2, None))


def test_an_if_with_a_command_condition_asks_once_and_checkpoints_the_branch_taken():
    root = tree({"steps": [{"if": "$(test -f x)", "then": ["$(echo yes)"], "else": ["$(echo no)"]}]})
    d = Drive(root, new_ctx())
    assert d.first.command == "test -f x" and d.first.step is False
    assert d.reply(Done(1, "")) == Checkpoint((0, ("else", None)))
    assert d.reply(None).path == "steps[0].else[0]"


def test_unless_takes_the_then_branch_when_the_condition_is_false():
    root = tree({"steps": [{"unless": "{{ 1 > 2 }}", "then": ["$(echo then)"], "else": ["$(echo else)"]}]})
    assert Drive(root, new_ctx()).first.command == "echo then"


@pytest.mark.parametrize("condition, expected", [
    ("true", "echo then"), ("false", "echo else"), (True, "echo then"),
    ("flag", "echo then"), ("empty", "echo else"), ("missing", "echo else"),
])
def test_an_if_condition_may_be_a_literal_or_a_step_name(condition, expected):
    root = tree({"steps": [{"if": condition, "then": ["$(echo then)"], "else": ["$(echo else)"]}]})
    ctx = new_ctx()
    ctx.output.update({"flag": "yes", "empty": ""})
    assert Drive(root, ctx).first.command == expected


def test_a_named_if_stores_the_last_output_of_its_branch():
    root = tree({"steps": [{"verdict": {"if": "true", "then": ["$(echo ok)"]}}]})
    ctx = new_ctx()
    d = Drive(root, ctx)
    d.reply(Done(0, "ok\n"))
    d.reply(None)
    assert ctx.output["verdict"] == "ok"


def test_case_runs_the_matching_when_and_checkpoints_a_command_value():
    root = tree({"steps": [{"case": "$(uname)", "when": {"Linux": ["$(echo l)"], "Darwin": ["$(echo d)"]},
                            "else": ["$(echo other)"]}]})
    d = Drive(root, new_ctx())
    assert d.first.command == "uname" and d.first.step is False
    assert d.reply(Done(0, "Darwin\n")) == Checkpoint((0, (1, None)))
    nxt = d.reply(None)
    assert nxt.command == "echo d" and nxt.path == "steps[0].when.Darwin[0]"
    d = Drive(root, new_ctx())
    assert d.reply(Done(0, "Plan9\n")) == Checkpoint((0, (-1, None)))
    assert d.reply(None).path == "steps[0].else[0]"


def test_case_matches_non_string_yaml_keys_by_their_text():
    root = tree({"steps": [{"case": "{{ output.n }}", "when": {2.5: ["$(echo half)"], 1: ["$(echo one)"]}}]})
    ctx = new_ctx()
    ctx.output["n"] = 1
    assert Drive(root, ctx).first.command == "echo one"


def test_each_sets_the_loop_variable_and_numbers_the_paths_by_iteration():
    root = tree({"steps": [{"files": {"each": "{{ output.list }}", "as": "f",
                                      "steps": ["$(echo {{ f }})"]}}]})
    ctx = new_ctx()
    ctx.output["list"] = ["a.txt", "b.txt"]
    d = Drive(root, ctx)
    first = d.first
    assert first.env == {"ROAST_ARG_1": "a.txt"} and first.path == "steps[0].steps[0]#1"
    # the collection is kept in the context once (issue 12), the cursor only refers to it
    assert d.reply(Done(0, "A")) == Checkpoint((0, (0, COLLECTED, (1, None))))
    assert ctx.collections == {"steps[0]": ["a.txt", "b.txt"]}
    second = d.reply(None)
    assert second.env == {"ROAST_ARG_1": "b.txt"} and second.path == "steps[0].steps[0]#2"
    d.reply(Done(0, "B"))
    assert d.reply(None) == Checkpoint((1, None))
    assert ctx.output["files"] == ["A", "B"] and "f" not in ctx.loop
    assert ctx.collections == {}  # dropped when the loop ends


def test_each_over_a_command_iterates_its_output_lines_and_checkpoints_them():
    root = tree({"steps": [{"each": "$(ls)", "as": "f", "steps": ["$(echo {{ f }})"]}]})
    d = Drive(root, new_ctx())
    assert d.first.command == "ls" and d.first.step is False
    assert d.reply(Done(0, "x\n\ny\n")) == Checkpoint((0, (0, COLLECTED, None)))
    assert d.reply(None).env == {"ROAST_ARG_1": "x"}


@pytest.mark.parametrize("form", ["each", "case"])
def test_a_failing_collection_or_case_command_fails_the_step(form):
    # issue 11: `each: $(ls /missing/*.py)` iterated zero times and `case: $(cat /missing)` took `else`
    spec = ({"each": "$(ls /missing/*.py)", "as": "f", "steps": ["$(echo {{ f }})"]} if form == "each"
            else {"case": "$(cat /missing)", "when": {"a": ["$(echo a)"]}, "else": ["$(echo other)"]})
    d = Drive(tree({"steps": [spec]}), new_ctx())
    with pytest.raises(StepFailed, match="exited with status 2"):
        d.reply(Done(2, "", "ls: cannot access '/missing/*.py'"))


def test_repeat_runs_the_body_before_checking_until():
    root = tree({"steps": [{"repeat": {"steps": ["$(echo tick)"], "until": "true", "max_iterations": 5}}]})
    d = Drive(root, new_ctx())
    assert d.first.command == "echo tick" and d.first.path == "steps[0].steps[0]#1"
    assert d.reply(Done(0, "tick")) == Checkpoint((0, (0, (1, None))))
    assert d.reply(None) == Checkpoint((0, (5, None)))  # until held: the loop is finished
    assert d.reply(None) == Checkpoint((1, None))


def test_repeat_stops_at_max_iterations():
    root = tree({"steps": [{"repeat": {"steps": ["$(echo tick)"], "until": "{{ False }}",
                                       "max_iterations": 2}}]})
    d = Drive(root, new_ctx())
    commands = [d.first.path]
    request = d.reply(Done(0, ""))
    while request is not FINISHED:
        if isinstance(request, Shell):
            commands.append(request.path)
            request = d.reply(Done(0, ""))
        else:
            request = d.reply(None)
    assert commands == ["steps[0].steps[0]#1", "steps[0].steps[0]#2"]


def test_a_parallel_group_hands_its_branches_to_the_runner_in_one_fork():
    root = tree({"steps": [["$(echo a)", ["$(echo b1)", "$(echo b2)"]], "$(echo after)"]})
    d = Drive(root, new_ctx())
    fork = d.first
    assert isinstance(fork, requests.Fork)  # the node never drives its branches itself (STYLE)
    assert len(fork.branches) == 2 and fork.cursors == (None, None)
    assert fork.wrap((DONE, None)) == (0, (DONE, None))  # the Sequence above added its level


def test_the_runner_performs_the_branches_side_by_side_and_checkpoints_each_as_it_goes():
    class Journal(NullJournal):
        def __init__(self):
            self.cursors, self.threads = [], set()

        def checkpoint(self, cursor):
            self.cursors.append(cursor)
            self.threads.add(threading.get_ident())

    root = tree({"steps": [["$(echo a)", ["$(echo b1)", "$(echo b2)"]], "$(echo after)"]})
    journal, perform = Journal(), Perform()
    assert Runner(perform, journal=journal).drive(root.run(new_ctx())) == Completed()
    commands = [r.command for r in perform.requests]
    # the first request of every branch starts before b2 (which waits for b1), and `after` comes last
    assert set(commands[:2]) == {"echo a", "echo b1"} and commands.index("echo b2") > commands.index("echo b1")
    assert commands[-1] == "echo after"
    # a finished branch is checkpointed as DONE at once, so it never runs again after a crash; the
    # list branch checkpoints after each of its steps; all on the loop thread
    assert (0, (DONE, (1, None))) in journal.cursors or (0, (None, (1, None))) in journal.cursors
    assert (0, (DONE, DONE)) in journal.cursors
    assert journal.cursors[-2:] == [(1, None), (2, None)]
    assert journal.threads == {threading.get_ident()}


def test_a_failing_branch_fails_the_group_after_the_others_finish():
    root = tree({"steps": [["$(false)", ["$(echo b1)", "$(echo b2)"]]]})
    perform = Perform(fail={"false"})
    with pytest.raises(StepFailed, match="failed: false"):
        Runner(perform, journal=NullJournal()).drive(root.run(new_ctx()))
    assert [r.command for r in perform.requests if r.command != "false"] == ["echo b1", "echo b2"]


# --------------------------------------------------------------------------- waits and fast-forward


WAIT = {"steps": ["$(echo before)",
                  {"if": "$(test -f flag)", "then": [
                      {"wait_for_event": {"approved": ["$(echo yes {{ event.by }})"], "rejected": ["$(echo no)"],
                                          "within": "1h"}}]},
                  "$(echo after)"]}


def run_to_wait(root: Any, ctx: Context, deadline: float = 5000.0) -> Suspend:
    d = Drive(root, ctx)
    d.reply(Done(0, "before"))
    assert d.reply(None).command == "test -f flag"
    assert d.reply(Done(0, "")) == Checkpoint((1, ("then", None)))
    receive = d.reply(None)
    assert receive == Receive("steps[1].then[0]", "wait_for_event", ("approved", "rejected"), 3600.0, None,
                              False)
    suspend = d.reply(Delivery(deadline, None))
    assert isinstance(suspend, Suspend)
    return suspend


def test_a_wait_asks_for_its_event_and_suspends_with_its_cursor_and_wait_info():
    suspend = run_to_wait(tree(WAIT), new_ctx())
    assert suspend.cursor == (1, ("then", (0, (AT_WAIT, 5000.0))))
    assert suspend.waits == (WaitInfo("steps[1].then[0]", "wait_for_event", ("approved", "rejected"),
                                      5000.0),)


def test_resuming_at_the_cursor_asks_the_wait_first_and_skips_earlier_steps_and_the_condition():
    root = tree(WAIT)
    suspend = run_to_wait(root, new_ctx())
    ctx = new_ctx()
    d = Drive(root, ctx, at=suspend.cursor)
    assert d.first == Receive("steps[1].then[0]", "wait_for_event", ("approved", "rejected"), 3600.0,
                              5000.0, True)
    event = Event("approved", {"by": "ana"}, "2024-01-01T00:00:00Z")
    assert d.reply(Delivery(5000.0, event)) == Checkpoint((1, ("then", (0, ("approved", None)))))
    assert ctx.output["wait_for_event"] == {"event": "approved", "data": {"by": "ana"},
                                            "received_at": "2024-01-01T00:00:00Z"}
    assert ctx.event_name == "approved"
    branch = d.reply(None)
    assert branch.path == "steps[1].then[0].approved[0]"
    assert branch.command == 'echo yes "${ROAST_ARG_1}"' and branch.env == {"ROAST_ARG_1": "ana"}
    requests = []
    request = d.reply(Done(0, "yes ana"))
    while request is not FINISHED:
        requests.append(request)
        request = d.reply(Done(0, "after") if isinstance(request, Shell) else None)
    assert [r.command for r in requests if isinstance(r, Shell)] == ["echo after"]


def test_a_resumed_wait_without_its_event_suspends_again_at_the_same_place():
    root = tree(WAIT)
    suspend = run_to_wait(root, new_ctx())
    d = Drive(root, new_ctx(), at=suspend.cursor)
    again = d.reply(Delivery(5000.0, None))
    assert again == suspend


def test_resuming_inside_a_branch_continues_with_its_next_step():
    root = tree(WAIT)
    d = Drive(root, new_ctx(), at=(1, ("then", (0, ("rejected", (1, None))))))
    assert d.first == Checkpoint((1, ("then", (1, None))))
    assert d.reply(None) == Checkpoint((2, None))
    assert d.reply(None).command == "echo after"


def test_resuming_inside_each_does_not_evaluate_the_collection_again():
    root = tree({"steps": [{"each": "$(ls)", "as": "f", "steps": [
        {"wait_for_event": {"ok": ["$(echo {{ f }})"]}}]}]})
    d = Drive(root, new_ctx())
    d.reply(Done(0, "a\nb\n"))
    assert d.reply(None).path == "steps[0].steps[0]#1"
    suspend = d.reply(Delivery(None, None))
    assert suspend.cursor == (0, (0, COLLECTED, (0, (AT_WAIT, None))))
    # second iteration, resumed from a saved cursor: no `ls`, the wait comes first
    ctx = new_ctx()
    ctx.collections["steps[0]"] = ["a", "b"]
    d = Drive(root, ctx, at=(0, (1, COLLECTED, (0, (AT_WAIT, None)))))
    assert isinstance(d.first, Receive) and d.first.resumed and d.first.path == "steps[0].steps[0]#2"
    d.reply(Delivery(None, Event("ok", {}, "t")))
    assert d.reply(None).env == {"ROAST_ARG_1": "b"}


def test_a_timeout_runs_the_timeout_branch_or_ends_with_timed_out():
    with_branch = tree({"steps": [{"wait_for_event": {"ok": ["$(echo ok)"], "timeout": ["$(echo late)"]}}]})
    d = Drive(with_branch, new_ctx(), at=(0, (AT_WAIT, 10.0)))
    d.reply(Delivery(10.0, Event("timeout", {"deadline": "then"}, "now")))
    assert d.reply(None).path == "steps[0].timeout[0]"
    bare = tree({"steps": [{"wait_for_event": {"ok": ["$(echo ok)"]}}]})
    d = Drive(bare, new_ctx(), at=(0, (AT_WAIT, 10.0)))
    d.reply(Delivery(10.0, Event("timeout", {"deadline": "then"}, "now")))
    with pytest.raises(TimedOut, match="neither a `timeout:` branch nor `on_timeout`"):
        d.reply(None)


def test_a_named_wait_takes_its_timeout_and_on_timeout_from_its_config():
    root = tree({"steps": [{"approval": {"wait_for_event": {"ok": ["$(echo ok)"]}}}],
                 "approval": {"timeout": "15m", "on_timeout": ["$(echo notify)"]}})
    ctx = new_ctx()
    d = Drive(root, ctx)
    assert d.first.timeout == 900.0 and d.first.wait == "approval"
    d = Drive(root, ctx, at=(0, (AT_WAIT, 1.0)))
    d.reply(Delivery(1.0, Event("timeout", {}, "now")))
    assert d.reply(None).path == "steps[0].on_timeout[0]"
    assert ctx.output["approval"]["event"] == "timeout"


# --------------------------------------------------------------------------- the runner


class Perform:
    """A fake `perform`: answers shell lines with canned stdout and records what it was asked."""

    def __init__(self, answers: dict[str, Any] | None = None, fail: set[str] = frozenset()) -> None:
        self.answers = answers or {}
        self.fail = fail
        self.requests: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, request: Any) -> Any:
        with self.lock:
            self.requests.append(request)
        if isinstance(request, Shell):
            if request.command in self.fail:
                raise StepFailed(f"failed: {request.command}", where=request.path)
            return Done(0, self.answers.get(request.command, request.command.removeprefix("echo ")) + "\n")
        if isinstance(request, CallPython):
            if request.name in self.fail:
                raise StepFailed(f"failed: {request.name}", where=request.path)
            return request.target(request.ctx)
        if isinstance(request, AskModel):
            return request.prompt
        raise AssertionError(f"unexpected {request!r}")


def test_the_runner_sets_the_deadline_from_its_clock_and_stops_at_the_wait():
    root = tree({"steps": ["$(echo a)", {"wait_for_event": {"ok": ["$(echo b)"], "within": "1m"}}]})
    outcome = Runner(Perform(), now=lambda: 1000.0).drive(root.run(new_ctx()))
    assert isinstance(outcome, Waiting)
    assert outcome.suspend.cursor == (1, (AT_WAIT, 1060.0))
    assert outcome.suspend.waits[0].deadline == 1060.0


def test_a_resumed_wait_past_its_deadline_gets_a_timeout_event():
    root = tree({"steps": [{"wait_for_event": {"ok": ["$(echo ok)"], "timeout": ["$(echo late)"]}}]})
    ctx = new_ctx()
    perform = Perform()
    outcome = Runner(perform, now=lambda: 1060.0).drive(root.run(ctx, (0, (AT_WAIT, 1060.0))))
    assert outcome == Completed()
    assert ctx.event_name == "timeout"
    assert ctx.output["wait_for_event"]["event"] == "timeout"
    assert ctx.output["wait_for_event"]["data"] == {"deadline": "1970-01-01T00:17:40Z"}
    assert [r.command for r in perform.requests] == ["echo late"]


def test_a_resumed_wait_before_its_deadline_and_without_an_event_suspends_again():
    root = tree({"steps": [{"wait_for_event": {"ok": ["$(echo ok)"]}}]})
    outcome = Runner(Perform(), now=lambda: 1059.0).drive(root.run(new_ctx(), (0, (AT_WAIT, 1060.0))))
    assert isinstance(outcome, Waiting) and outcome.suspend.cursor == (0, (AT_WAIT, 1060.0))


def test_the_pending_event_wins_over_a_passed_deadline():
    root = tree({"steps": [{"wait_for_event": {"ok": ["$(echo ok)"], "timeout": ["$(echo late)"]}}]})
    perform = Perform()
    runner = Runner(perform, now=lambda: 9999.0, event=Event("ok", {}, "t"))
    assert runner.drive(root.run(new_ctx(), (0, (AT_WAIT, 1060.0)))) == Completed()
    assert [r.command for r in perform.requests] == ["echo ok"]


def test_the_pending_event_is_not_given_to_a_wait_that_was_not_already_waiting():
    root = tree({"steps": [{"wait_for_event": {"ok": ["$(echo one)"]}},
                           {"wait_for_event": {"ok": ["$(echo two)"]}}]})
    perform = Perform()
    runner = Runner(perform, event=Event("ok", {}, "t"))
    outcome = runner.drive(root.run(new_ctx(), (0, (AT_WAIT, None))))
    assert isinstance(outcome, Waiting) and outcome.suspend.cursor == (1, (AT_WAIT, None))
    assert [r.command for r in perform.requests] == ["echo one"]


def test_an_event_goes_to_the_first_waiting_branch_that_declares_it():
    root = tree({"steps": [[{"wait_for_event": {"a": ["$(echo first-a)"]}},
                            {"wait_for_event": {"a": ["$(echo second-a)"], "b": ["$(echo second-b)"]}}]]})
    first = Runner(Perform()).drive(root.run(new_ctx()))
    assert isinstance(first, Waiting)
    cursor = first.suspend.cursor
    assert cursor == (0, ((AT_WAIT, None), (AT_WAIT, None)))
    assert [w.events for w in first.suspend.waits] == [("a",), ("a", "b")]

    perform = Perform()
    outcome = Runner(perform, event=Event("a", {}, "t")).drive(root.run(new_ctx(), cursor))
    assert [r.command for r in perform.requests] == ["echo first-a"]
    assert isinstance(outcome, Waiting)
    assert outcome.suspend.cursor == (0, (DONE, (AT_WAIT, None)))
    assert outcome.suspend.waits == (WaitInfo("steps[0][1]", "wait_for_event", ("a", "b"), None),)

    perform = Perform()
    outcome = Runner(perform, event=Event("b", {}, "t")).drive(root.run(new_ctx(), cursor))
    assert [r.command for r in perform.requests] == ["echo second-b"]
    assert outcome.suspend.cursor == (0, ((AT_WAIT, None), DONE))


def test_gather_answers_a_parallel_group_with_replies_aligned_to_its_requests():
    root = tree({"steps": [[{"a": "$(echo A)"}, {"b": "$(echo B)"}, [{"c": "$(echo C)"}, {"d": "$(echo D)"}]],
                           {"joined": "$(echo {{ output.a }}{{ output.b }}{{ output.c }}{{ output.d }})"}]})
    ctx = new_ctx()
    perform = Perform(answers={'echo "${ROAST_ARG_1}""${ROAST_ARG_2}""${ROAST_ARG_3}""${ROAST_ARG_4}"': "ABCD"})
    assert Runner(perform).drive(root.run(ctx)) == Completed()
    assert {k: ctx.output[k] for k in "abcd"} == {"a": "A", "b": "B", "c": "C", "d": "D"}
    assert perform.requests[-1].env["ROAST_ARG_1"] == "A"
    assert ctx.output["joined"] == "ABCD"


def test_a_step_failed_from_perform_is_thrown_into_the_node():
    def check(ctx):
        return "never"

    keep_going = tree({"steps": [{"check": check}, "$(echo next)"], "check": {"exit_on_error": False}})
    ctx = new_ctx()
    perform = Perform(fail={"check"})
    assert Runner(perform).drive(keep_going.run(ctx)) == Completed()
    assert ctx.output["check"] == "[Error: failed: check]" and ctx.last == "next"

    stop = tree({"steps": [{"check": check}, "$(echo next)"]})
    perform = Perform(fail={"check"})
    with pytest.raises(StepFailed, match="failed: check"):
        Runner(perform).drive(stop.run(new_ctx()))
    assert len(perform.requests) == 1


def test_an_unexpected_exception_in_perform_becomes_a_step_failed_naming_the_step():
    def perform(request):
        raise KeyError("gone")

    with pytest.raises(StepFailed) as info:
        Runner(perform).drive(tree({"steps": ["$(echo a)"]}).run(new_ctx()))
    assert "KeyError" in str(info.value) and info.value.where == "steps[0]"


def test_the_runner_tells_a_shell_step_its_path_and_attempt_and_journals_checkpoints():
    class Journal(NullJournal):
        def __init__(self):
            self.rows, self.cursors = [], []

        def started(self, request):
            return 2

        def finished(self, request, attempt, status, output):
            self.rows.append((request.path, attempt, status, output))

        def checkpoint(self, cursor):
            self.cursors.append(cursor)

    journal = Journal()
    perform = Perform()
    root = tree({"steps": ["$(echo a)", {"if": "$(true)", "then": ["$(echo b)"]}]})
    assert Runner(perform, journal=journal).drive(root.run(new_ctx())) == Completed()
    first = perform.requests[0]
    assert first.env["ROAST_STEP_PATH"] == "steps[0]" and first.env["ROAST_STEP_ATTEMPT"] == "2"
    assert "ROAST_STEP_PATH" not in perform.requests[1].env  # a condition is not a step
    assert journal.rows == [("steps[0]", 2, "ok", "a"), ("steps[1].then[0]", 2, "ok", "b")]
    assert journal.cursors == [(1, None), (1, ("then", None)), (1, ("then", (1, None))), (2, None)]


# --------------------------------------------------------------------------- cursor views


def test_describe_reads_a_cursor_as_the_steps_that_lead_to_it():
    root = tree({"steps": ["$(echo a)", {"review": {"each": "$(ls)", "as": "item", "steps": [
        {"approval": {"wait_for_event": {"ok": ["$(echo ok)"]}}}]}}]})
    at = (1, (1, ["a.py", "b.py", "c.py"], (0, (AT_WAIT, None))))
    text = walkers.describe(root, at)
    assert text.startswith("steps[1] review › each item=b.py (2/3)")
    assert text.endswith("approval")
    assert walkers.describe(root, steps.HERE) == "start"
    assert walkers.describe(root, (2, None)) == "end"
    assert "on ok" in walkers.describe(root, (1, (0, ["a"], (0, ("ok", (0, None))))))


def test_signature_lists_the_earlier_siblings_and_the_nodes_on_the_path():
    root = tree({"steps": ["$(echo a)", {"if": "true", "then": [{"wait_for_event": {"ok": ["$(echo ok)"]}}]}]})
    sig = walkers.signature(root, (1, ("then", (0, (AT_WAIT, None)))))
    assert sig[0] == "steps: Command($(echo a)) | If(if: true)"
    assert sig[-1] == "steps[1].then[0]: wait wait_for_event: ok"
    changed = tree({"steps": ["$(echo A)", {"if": "true", "then": [{"wait_for_event": {"ok": ["$(echo ok)"]}}]}]})
    assert walkers.signature(changed, (1, ("then", (0, (AT_WAIT, None)))))[0] != sig[0]
    renamed = tree({"steps": ["$(echo a)", {"if": "true", "then": [{"wait_for_event": {"yes": ["$(echo ok)"]}}]}]})
    assert walkers.signature(renamed, (1, ("then", (0, (AT_WAIT, None)))))[-1] != sig[-1]


def test_wait_at_finds_every_wait_a_parallel_cursor_rests_on():
    root = tree({"steps": [[{"wait_for_event": {"a": ["$(echo a)"]}}, {"wait_for_event": {"b": ["$(echo b)"]}}]]})
    waits = walkers.wait_at(root, (0, ((AT_WAIT, None), (AT_WAIT, None))))
    assert [w.events for w in waits] == [("a",), ("b",)]
    assert [w.events for w in walkers.wait_at(root, (0, (DONE, (AT_WAIT, None))))] == [("b",)]
