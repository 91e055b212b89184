"""Every step form and config key of SPEC §3, through `roast.run()`, `main(argv)` and real processes.

Also: targets, `-o`, `--json`, exit codes, interpolation (SPEC §4), shared.yml, and bad
workflows, each refused with exit 2 and a file:line message before anything runs.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli

import roast
from roast.cli import main
from roast.errors import WorkflowInvalid
from roast import api


def execute(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["execute", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def execute_json(capsys, *args: str) -> tuple[int, list[dict]]:
    """`roast execute --json`: always a list, one session object per target (issue 11)."""
    code, out, _ = execute(capsys, *args, "--json")
    return code, json.loads(out)


def invalid(capsys, path, command: str = "execute") -> str:
    """Run the CLI on a bad workflow: exit 2, nothing on stdout, the message on stderr."""
    code = main([command, str(path)])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert err.startswith("roast: error: ")
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- named steps


def test_a_prompt_directory_step_is_answered_by_the_offline_model_with_the_rendered_prompt(wf, capsys):
    path = wf("""
        name: review
        steps: [summarize]
    """, files={"summarize/prompt.md": "Summarize {{ target }} for {{ workflow.name }}"})
    code, out, err = execute(capsys, path, "notes.txt")
    assert code == 0, err
    assert out.strip() == "Summarize notes.txt for review"
    assert err.count("offline model") == 1  # announced once, on stderr


def test_an_output_txt_beside_the_prompt_shapes_the_output(wf):
    path = wf("steps: [summarize]\n", files={"summarize/prompt.md": "the facts",
                                             "summarize/output.txt": "Result: {{ response }}!"})
    result = roast.run(path)
    assert result.status == "completed"
    assert result.output["summarize"] == "Result: the facts!"


def test_a_python_step_file_with_run_returns_the_output(wf):
    path = wf("""
        steps:
          - who: $(echo ana)
          - greet
    """, files={"greet.py": "def run(ctx):\n    return {'hello': ctx.output['who']}\n"})
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.output["greet"] == {"hello": "ana"}


def test_a_python_step_file_may_define_a_class_whose_call_gives_the_output(wf):
    path = wf("steps: [grade]\n", files={"grade.py": """
        class Grade:
            def __init__(self, ctx):
                self.seen = ctx

            def call(self):
                return "graded " + self.seen.workflow.name
    """})
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.output["grade"] == "graded wf"


def test_a_python_step_class_without_an_init_is_called_with_no_arguments(wf):
    path = wf("steps: [grade]\n", files={"grade.py": """
        class Grade:
            def call(self):
                return "graded " + str(self.ctx.output)
    """})
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.output["grade"] == "graded {}"


def test_a_python_step_gets_its_params_from_the_config(wf):
    path = wf("""
        steps: [scale]
        scale:
          params: {factor: 3}
    """, files={"scale.py": "def run(ctx, params):\n    return params['factor'] * 7\n"})
    assert roast.run(path).output["scale"] == 21


def test_an_executable_sh_step_runs_and_its_json_stdout_is_the_output(wf):
    path = wf("steps: [build]\n", files={"build.sh": """
        #!/bin/sh
        printf '{"step": "%s", "target": "%s"}\\n' "$ROAST_STEP_NAME" "$ROAST_TARGET"
    """})
    result = roast.run(path, "app.zip")
    assert result.status == "completed", result.error
    assert result.output["build"] == {"step": "build", "target": "app.zip"}


def test_path_in_a_step_config_says_where_to_find_the_step(wf):
    path = wf("""
        steps: [helper]
        helper:
          path: lib
    """, files={"lib/helper.py": "def run(ctx):\n    return 'from lib'\n"})
    assert roast.run(path).output["helper"] == "from lib"


# --------------------------------------------------------------------------- inline forms


def test_inline_prompts_and_commands_named_and_unnamed(wf, capsys):
    path = wf("""
        steps:
          - $(echo plain)
          - cmd: $(echo named)
          - "an inline prompt about {{ output.cmd }}"
          - said: "named prompt saying {{ output.cmd }}"
    """)
    code, [doc] = execute_json(capsys, path)
    assert code == 0
    assert doc["status"] == "completed"
    assert doc["output"] == {"cmd": "named", "said": "named prompt saying named"}
    assert doc["final_output"] == "named prompt saying named"
    history = api.history(doc["session_id"])
    assert [(h.path, h.output) for h in history] == [
        ("steps[0]", "plain"), ("steps[1]", "named"), ("steps[2]", "an inline prompt about named"),
        ("steps[3]", "named prompt saying named")]


def test_a_command_runs_in_the_current_directory(wf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.txt").write_text("")
    path = wf("steps: [{files: $(ls here.txt)}]\n")
    assert roast.run(path).output["files"] == "here.txt"


# --------------------------------------------------------------------------- parallel groups


def test_a_parallel_group_runs_its_branches_at_the_same_time(wf, tmp_path):
    # two FIFOs make a barrier: opening one blocks until the other branch opens its other end,
    # so run one after the other the branches would hang (until their timeout) instead of finishing
    ab, ba = tmp_path / "ab", tmp_path / "ba"
    os.mkfifo(ab)
    os.mkfifo(ba)
    path = wf(f"""
        steps:
          - - a: $(printf from-a > {ab}; cat {ba})
            - b: $(cat {ab}; printf from-b > {ba})
          - $(echo "a got {{{{ output.a }}}}, b got {{{{ output.b }}}}")
        a: {{timeout: 30}}
        b: {{timeout: 30}}
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.final_output == "a got from-b, b got from-a"


def test_a_nested_list_inside_a_parallel_group_is_one_sequential_branch(wf, tmp_path):
    log = tmp_path / "log"
    path = wf(f"""
        steps:
          - - - $(echo s1 >> {log})
              - $(echo s2 >> {log})
              - $(echo s3 >> {log})
            - other: $(echo other)
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert log.read_text().split() == ["s1", "s2", "s3"]
    assert result.output == {"other": "other"}
    paths = [h.path for h in api.history(result.session_id)]
    assert sorted(paths) == ["steps[0][0][0]", "steps[0][0][1]", "steps[0][0][2]", "steps[0][1]"]


def test_a_failing_branch_fails_the_run_after_the_group(wf, tmp_path):
    path = wf(f"""
        steps:
          - - $(exit 3)
            - $(touch {tmp_path}/sibling)
          - $(touch {tmp_path}/after)
    """)
    result = roast.run(path)
    assert result.status == "failed"
    assert "status 3" in result.error
    assert (tmp_path / "sibling").exists() and not (tmp_path / "after").exists()


# --------------------------------------------------------------------------- conditionals


@pytest.mark.parametrize("condition, branch", [
    ("'{{{{ int(output.n) > 1 }}}}'", "then"),
    ("'{{{{ int(output.n) > 5 }}}}'", "else"),
    ("$(test -f {tmp}/flag)", "then"),
    ("$(test -f {tmp}/nothing)", "else"),
    ("n", "then"),            # a step name: the truthiness of its output
    ("empty", "else"),
    ("true", "then"),
    ("false", "else"),
])
def test_if_picks_its_branch_from_the_condition(wf, tmp_path, condition, branch):
    (tmp_path / "flag").write_text("")
    path = wf(f"""
        steps:
          - n: $(echo 3)
          - empty: $(true)
          - if: {condition.format(tmp=tmp_path)}
            then: ["$(echo then)"]
            else: ["$(echo else)"]
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.final_output == branch


def test_unless_runs_then_when_the_condition_is_false_and_a_named_if_keeps_the_branch_output(wf):
    path = wf("""
        steps:
          - verdict:
              unless: "{{ 1 > 2 }}"
              then: ["$(echo then)"]
              else: ["$(echo else)"]
          - $(echo "got {{ output.verdict }}")
    """)
    result = roast.run(path)
    assert result.output["verdict"] == "then"
    assert result.final_output == "got then"


def test_an_if_without_else_and_a_false_condition_runs_nothing(wf, tmp_path):
    path = wf(f"""
        steps:
          - if: "false"
            then: ["$(touch {tmp_path}/ran)"]
          - $(echo done)
    """)
    assert roast.run(path).final_output == "done"
    assert not (tmp_path / "ran").exists()


def test_case_runs_the_when_matching_a_command_value_or_else(wf, capsys):
    path = wf("""
        steps:
          - case: $(echo deploy)
            when:
              build: ["$(echo building)"]
              deploy: ["$(echo deploying)"]
          - case: "{{ 'x' * 3 }}"
            when:
              y: ["$(echo y)"]
            else: ["$(echo fallback)"]
    """)
    code, out, err = execute(capsys, path)
    assert code == 0, err
    assert out.strip() == "fallback"
    paths = [h.path for h in api.history(api.list_sessions().rows[0].id)]
    assert paths == ["steps[0].when.deploy[0]", "steps[1].else[0]"]


def test_case_matches_yaml_numbers_and_booleans_by_their_text(wf):
    path = wf("""
        steps:
          - n: $(echo 1)
          - one:
              case: n
              when:
                1: ["$(echo one)"]
                2: ["$(echo two)"]
          - truth:
              case: "{{ 1 == 1 }}"
              when:
                true: ["$(echo T)"]
                false: ["$(echo F)"]
          - half:
              case: $(echo 2.5)
              when:
                2.5: ["$(echo half)"]
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert (result.output["one"], result.output["truth"], result.output["half"]) == ("one", "T", "half")


# --------------------------------------------------------------------------- loops


def test_each_over_a_list_expression_binds_the_loop_variable(wf, tmp_path):
    log = tmp_path / "log"
    path = wf(f"""
        steps:
          - each: "{{{{ ['a', 'b', 'c'] }}}}"
            as: letter
            steps: ["$(echo {{{{ letter }}}} >> {log})"]
    """)
    assert roast.run(path).status == "completed"
    assert log.read_text().split() == ["a", "b", "c"]


def test_a_named_each_over_command_lines_collects_the_last_output_of_every_iteration(wf):
    path = wf("""
        steps:
          - shouted:
              each: $(printf 'x\\ny\\n\\nz\\n')
              as: item
              steps:
                - "$(echo {{ item }} | tr a-z A-Z)"
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.output["shouted"] == ["X", "Y", "Z"]
    paths = [h.path for h in api.history(result.session_id)]
    assert paths == ["steps[0].steps[0]#1", "steps[0].steps[0]#2", "steps[0].steps[0]#3"]


def test_repeat_runs_its_body_before_checking_until(wf, tmp_path):
    log = tmp_path / "log"
    path = wf(f"""
        steps:
          - repeat:
              steps: ["$(echo tick >> {log})"]
              until: "true"
    """)
    assert roast.run(path).status == "completed"
    assert log.read_text().split() == ["tick"]


def test_repeat_stops_when_until_holds_or_at_max_iterations(wf, tmp_path):
    log = tmp_path / "log"
    path = wf(f"""
        steps:
          - repeat:
              steps: [{{lines: "$(echo tick >> {log}; wc -l < {log})"}}]
              until: "{{{{ int(output.lines) >= 3 }}}}"
              max_iterations: 10
          - capped:
              repeat:
                steps: ["$(echo cap)"]
                until: "false"
                max_iterations: 2
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert log.read_text().split() == ["tick"] * 3
    paths = [h.path for h in api.history(result.session_id)]
    assert [p for p in paths if p.startswith("steps[1]")] == ["steps[1].steps[0]#1", "steps[1].steps[0]#2"]
    assert result.output["capped"] == "cap"


# --------------------------------------------------------------------------- input


def test_an_input_step_reads_its_answer_from_a_pipe_when_stdin_is_not_a_terminal(wf, monkeypatch):
    # issue 11: answers can come from a pipe
    monkeypatch.setattr(sys, "stdin", io.StringIO("ana\n"))
    path = wf("""
        steps:
          - input: {prompt: "Your name?", type: text, name: who}
          - $(echo "hello {{ output.who }}")
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.output["who"] == "ana" and result.final_output == "hello ana"


def test_an_input_step_without_an_answer_or_a_default_fails_with_a_hint(wf, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    path = wf("""
        steps:
          - input: {prompt: "Your name?", type: text, name: who}
          - $(echo never)
    """)
    code, out, err = execute(capsys, path)
    assert code == 1 and out == ""
    assert "stdin ended" in err and "default:" in err and "Traceback" not in err


def test_an_input_steps_default_answers_an_empty_reply(wf, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    path = wf("""
        steps:
          - input: {prompt: "Deploy?", type: confirm, default: true, name: ok}
    """)
    result = roast.run(path)
    assert result.status == "completed" and result.output["ok"] is True


def test_an_input_step_in_a_real_process_takes_its_answer_from_the_pipe(wf):
    path = wf("steps: [{input: {prompt: 'Deploy?', type: confirm, name: ok}}]\n")
    proc = run_cli("execute", str(path), "--json", input="y\n")
    assert proc.returncode == 0, proc.stderr
    [doc] = json.loads(proc.stdout)
    assert doc["status"] == "completed" and doc["output"]["ok"] is True
    assert "Deploy? [y/n]" in proc.stderr  # the question is asked on stderr, never mixed into stdout


# --------------------------------------------------------------------------- per-step config


def test_a_failing_command_fails_the_run_with_exit_1_and_says_how_to_carry_on(wf, tmp_path, capsys):
    path = wf(f"""
        steps:
          - $(echo oops >&2; exit 4)
          - $(touch {tmp_path}/after)
    """)
    code, out, err = execute(capsys, path)
    assert code == 1 and out == ""
    assert "status 4" in err and "oops" in err and "exit_on_error: false" in err
    assert not (tmp_path / "after").exists()


def test_exit_on_error_false_carries_the_exit_status_in_the_output(wf):
    path = wf("""
        steps:
          - lint: $(echo warning; exit 2)
          - $(echo "next saw {{ output.lint }}")
        lint:
          exit_on_error: false
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.output["lint"] == "warning\n[Exit status: 2]"
    assert result.final_output == "next saw warning\n[Exit status: 2]"


def test_print_response_true_and_false_shape_the_printed_output(wf, capsys):
    path = wf("""
        steps:
          - first: $(echo first)
          - middle: $(echo middle)
          - last: $(echo last)
        first:
          print_response: true
        last:
          print_response: false
    """)
    code, out, _ = execute(capsys, path)
    assert code == 0
    assert out == "first\n"


def test_the_last_step_prints_after_steps_marked_print_response(wf, capsys):
    path = wf("""
        steps:
          - first: $(echo first)
          - $(echo hidden)
          - $(echo last)
        first:
          print_response: true
    """)
    code, out, _ = execute(capsys, path)
    assert code == 0
    assert out == "first\n\nlast\n"


def test_a_workflow_ending_in_a_named_conditional_prints_its_output(wf, capsys):
    path = wf("""
        steps:
          - verdict:
              if: "true"
              then: ["$(echo approved)"]
    """)
    code, out, _ = execute(capsys, path)
    assert code == 0
    assert out == "approved\n"


def test_json_true_parses_the_prompt_response(wf):
    path = wf("""
        steps:
          - facts: '{"count": 3, "tags": ["a"]}'
          - $(echo "count={{ output.facts.count }}")
        facts:
          json: true
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.output["facts"] == {"count": 3, "tags": ["a"]}
    assert result.final_output == "count=3"


def test_coerce_to_boolean_and_iterable(wf):
    path = wf("""
        steps:
          - ok: $(echo FALSE)
          - one: $(echo 1)
          - files: $(printf 'a.py\\nb.py\\n')
          - each: "{{ output.files }}"
            as: f
            steps: ["$(echo {{ f }})"]
        ok:
          coerce_to: boolean
        one:
          coerce_to: boolean
        files:
          coerce_to: iterable
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.output["ok"] is False and result.output["one"] is True
    assert result.output["files"] == ["a.py", "b.py"]
    assert result.final_output == "b.py"


def test_a_command_past_its_timeout_fails_the_run(wf, capsys):
    path = wf("""
        steps:
          - slow: $(sleep 5)
        slow:
          timeout: 0.5
    """)
    result = roast.run(path)
    assert result.status == "failed"
    assert "timed out" in result.error and "sleep 5" in result.error
    assert api.history(result.session_id)[0].status == "failed"


# --------------------------------------------------------------------------- dict workflows


def test_a_dict_workflow_runs_callables_and_named_callables():
    seen = []

    def first(ctx):
        return "one"

    result = roast.run({"name": "in-code", "steps": [
        first,
        {"second": lambda ctx: seen.append(ctx.output["first"]) or "two"},
        "$(echo {{ output.second }}-{{ workflow.name }})",
    ]})
    assert result.status == "completed", result.error
    assert seen == ["one"]
    assert result.output == {"first": "one", "second": "two"}
    assert result.final_output == "two-in-code"
    assert result.workflow == "<dict:in-code>"


def test_a_callable_that_raises_fails_the_run_with_its_message():
    def broken(ctx):
        raise ValueError("no config")

    result = roast.run({"steps": [broken]})
    assert result.status == "failed"
    assert "ValueError" in result.error and "no config" in result.error


# --------------------------------------------------------------------------- targets and output


def test_each_target_gets_its_own_session(wf, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = wf("steps: ['$(echo target={{ target }} file={{ file }})']\n")
    code, out, _ = execute(capsys, path, "a.txt", "b.txt")
    assert code == 0
    assert out == "target=a.txt file=a.txt\n\ntarget=b.txt file=b.txt\n"
    rows = api.list_sessions().rows
    assert sorted(r.target for r in rows) == ["a.txt", "b.txt"]


def test_a_target_glob_expands_to_matching_files(wf, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("x.txt", "y.txt", "z.md"):
        (tmp_path / name).write_text("")
    path = wf("steps: ['$(echo {{ target }})']\n")
    code, docs = execute_json(capsys, path, "-t", "*.txt")
    assert code == 0
    assert [d["target"] for d in docs] == ["x.txt", "y.txt"]
    assert [d["final_output"] for d in docs] == ["x.txt", "y.txt"]


def test_a_target_command_gives_one_target_a_line(wf, capsys):
    path = wf("steps: ['$(echo got {{ target }})']\n")
    code, docs = execute_json(capsys, path, "-t", '$(printf "x\\ny")')
    assert code == 0
    assert [d["final_output"] for d in docs] == ["got x", "got y"]


def test_output_file_receives_the_final_output(wf, tmp_path, capsys):
    path = wf("steps: ['$(echo saved)']\n")
    out_file = tmp_path / "result.txt"
    code, out, err = execute(capsys, path, "-o", out_file)
    assert code == 0
    assert out == ""
    assert out_file.read_text() == "saved\n"
    assert str(out_file) in err


def test_json_output_has_the_documented_fields(wf, capsys):
    path = wf("steps: [{greeting: '$(echo hi)'}]\n")
    code, [doc] = execute_json(capsys, path, "t1")
    assert code == 0
    assert {"session_id", "status", "workflow", "awaiting", "deadline", "output", "target",
            "final_output", "error"} <= set(doc)
    assert doc["status"] == "completed" and doc["output"] == {"greeting": "hi"}
    assert doc["workflow"] == str(path.resolve()) and doc["target"] == "t1"
    assert doc["awaiting"] == [] and doc["deadline"] is None and doc["error"] is None
    assert api.session(doc["session_id"]).status == "completed"


def test_a_failed_run_exits_1_and_its_json_says_why(wf, capsys):
    path = wf("steps: ['$(exit 9)']\n")
    code, [doc] = execute_json(capsys, path)
    assert code == 1
    assert doc["status"] == "failed" and "status 9" in doc["error"]


def test_execute_through_a_real_process(wf):
    path = wf("steps: [{a: '$(echo one)'}, '$(echo two {{ output.a }})']\n")
    proc = run_cli("execute", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    [doc] = json.loads(proc.stdout)
    assert doc["status"] == "completed" and doc["final_output"] == "two one"
    plain = run_cli("execute", str(path))
    assert plain.returncode == 0 and plain.stdout == "two one\n"
    assert "Traceback" not in plain.stderr


def test_a_closed_stdout_pipe_gives_no_traceback(wf):
    path = wf("steps: ['$(seq 1 200000)']\n")  # far more than a pipe buffer holds
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "roast", "execute", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(2) == b"1\n"
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert api.list_sessions().rows[0].status == "completed"  # saved before it was printed
    assert "Traceback" not in err


def test_version_through_a_real_process():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"roast {roast.__version__}"


# --------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize("expr, fragment", [
    ("nope", "NameError"),
    ('output.get("missing").upper()', "AttributeError"),  # `output.missing` is refused at load (issue 24)
    ("1/0", "ZeroDivisionError"),
])
def test_a_bad_expression_is_a_step_error_naming_it(wf, capsys, expr, fragment):
    path = wf(f"steps: ['$(echo {{{{ {expr} }}}})']\n")
    result = roast.run(path)
    assert result.status == "failed"
    assert f"{{{{ {expr} }}}}" in result.error and fragment in result.error
    code, out, err = execute(capsys, path)
    assert code == 1 and out == "" and f"{{{{ {expr} }}}}" in err


def test_a_bad_expression_in_a_prompt_fails_too(wf):
    result = roast.run(wf("steps: ['tell me about {{ undefined_thing }}']\n"))
    assert result.status == "failed" and "undefined_thing" in result.error


def test_env_and_workflow_are_available_in_expressions(wf, roast_home, tmp_path):
    path = wf("""
        name: demo
        steps:
          - $(echo "{{ env.HOME }}|{{ workflow.name }}|{{ workflow.session_id }}")
    """)
    result = roast.run(path)
    assert result.final_output == f"{tmp_path / 'user'}|demo|{result.session_id}"


def test_shared_yml_anchors_can_be_used_by_the_workflow(wf, tmp_path):
    (tmp_path / "shared.yml").write_text("hello: &hello $(echo from shared)\nlimits: &limits {timeout: 30}\n")
    path = wf("""
        steps:
          - *hello
          - fast: $(echo fast)
        fast: *limits
    """)
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.final_output == "fast"
    assert api.history(result.session_id)[0].output == "from shared"


HOSTILE = ['x"; touch {m}; echo "', "'; touch {m}; echo '", "$(touch {m})", "`touch {m}`",
           "a\\", "${{HOME}}", "* -n", "\\'\"$"]


@pytest.mark.parametrize("quoting", ["bare", "double", "single"])
@pytest.mark.parametrize("value", HOSTILE)
def test_interpolated_values_are_never_parsed_by_the_shell(tmp_path, quoting, value):
    marker = tmp_path / "PWNED"
    value = value.format(m=marker)
    template = {"bare": "$(printf '%s' {{ output.v }})",
                "double": "$(printf '%s' \"<{{ output.v }}>\")",
                "single": "$(printf '%s' '<{{ output.v }}>')"}[quoting]
    result = roast.run({"steps": [{"v": lambda ctx: value}, {"shown": template}]})
    assert result.status == "completed", result.error
    expected = value if quoting == "bare" else f"<{value}>"
    assert result.output["shown"] == expected.strip()
    assert not marker.exists()


# --------------------------------------------------------------------------- bad workflows


def test_an_unknown_step_is_refused_with_a_did_you_mean(wf, capsys, tmp_path):
    path = wf("""
        steps:
          - $(touch {tmp}/ran)
          - notfy_team
    """.replace("{tmp}", str(tmp_path)), files={"notify_team.py": "def run(ctx):\n    return 1\n"})
    err = invalid(capsys, path)
    assert "workflow.yml:" in err and "step 'notfy_team' not found" in err
    assert "did you mean 'notify_team'?" in err
    assert not (tmp_path / "ran").exists()
    with pytest.raises(WorkflowInvalid) as info:
        roast.run(path)
    assert info.value.exit_code == 2


def test_an_unknown_step_is_reported_at_its_own_line(wf, capsys):
    path = wf("""
        steps:
          - $(echo a)
          - $(echo b)
          - notfy_team
    """)
    err = invalid(capsys, path)
    assert "workflow.yml:4: step 'notfy_team' not found" in err


def test_a_step_directory_without_prompt_md_is_refused(wf, capsys):
    path = wf("steps: [summarize]\n", files={"summarize/notes.txt": "not a prompt"})
    err = invalid(capsys, path)
    assert "workflow.yml:1" in err and "summarize/prompt.md" in err


def test_a_config_key_of_the_wrong_type_is_refused(wf, capsys):
    path = wf("""
        steps:
          - check: $(true)
        check:
          exit_on_error: "no"
    """)
    err = invalid(capsys, path)
    assert "workflow.yml:4" in err and "`check.exit_on_error` must be true or false" in err


@pytest.mark.parametrize("text, fragment", [
    ("steps: []\n", "`steps:` is empty"),
    ("name: x\n", "no `steps:` list"),
    ("steps: hello\n", "`steps:` must be a list"),
])
def test_a_workflow_without_steps_is_refused(wf, capsys, text, fragment):
    err = invalid(capsys, wf(text))
    assert "workflow.yml:" in err and fragment in err


def test_duplicate_keys_are_refused_naming_both_lines(wf, capsys):
    path = wf("""
        steps:
          - $(echo a)
        steps:
          - $(echo b)
    """)
    err = invalid(capsys, path)
    assert "workflow.yml:3" in err and "duplicate key 'steps'" in err and "line 1" in err


def test_a_yaml_bomb_is_refused(wf, capsys):
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdef", "bcdefg"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    path = wf("\n".join(lines) + "\nsteps: ['$(echo hi)']\n")
    err = invalid(capsys, path)
    assert "workflow.yml:" in err and "aliases" in err


def test_deep_nesting_is_refused(wf, capsys):
    path = wf("steps:\n  - " + "[" * 150 + "]" * 150 + "\n")
    err = invalid(capsys, path)
    assert "workflow.yml:2" in err and "deeper than 100" in err


def test_an_invalid_event_name_is_refused(wf, capsys):
    path = wf("""
        steps:
          - wait_for_event:
              "not valid!": ["$(echo x)"]
              ok: ["$(echo y)"]
    """)
    err = invalid(capsys, path)
    assert "workflow.yml:" in err and "'not valid!'" in err and "letters, digits" in err


def test_an_unquoted_on_event_key_is_refused_as_a_yaml_boolean(wf, capsys):
    path = wf("""
        steps:
          - wait_for_event:
              on: ["$(echo x)"]
              off: ["$(echo y)"]
    """)
    err = invalid(capsys, path)
    assert "workflow.yml:" in err and "boolean" in err and '"on"' in err


@pytest.mark.parametrize("text, fragment", [
    ("""
        steps:
          - wait_for_event:
              ok: ["$(echo x)"]
              within: -5
    """, "-5"),
    ("""
        steps:
          - approval:
              wait_for_event:
                ok: ["$(echo x)"]
        approval:
          timeout: 1:30
    """, "'1:30'"),
    ("""
        steps:
          - slow: $(sleep 1)
        slow:
          timeout: yes
    """, "True"),
])
def test_bad_durations_are_refused(wf, capsys, text, fragment):
    err = invalid(capsys, wf(text))
    assert "workflow.yml:" in err and "positive duration" in err and fragment in err


def test_a_bad_default_wait_timeout_is_reported_once(wf, capsys):
    path = wf("""
        steps:
          - wait_for_event:
              ok: ["$(echo x)"]
        wait_for_event:
          timeout: 1:30
    """)
    err = invalid(capsys, path)
    assert err.count("'1:30'") == 1


def test_validate_reports_every_problem_at_once_and_runs_nothing(wf, tmp_path, capsys):
    path = wf(f"""
        steps:
          - $(touch {tmp_path}/ran)
          - notfy_team
          - check: $(true)
          - wait_for_event:
              on: ["$(echo x)"]
        check:
          exit_on_error: "no"
    """, files={"notify_team.py": "def run(ctx):\n    return 1\n"})
    err = invalid(capsys, path, "validate")
    assert "4 problems" in err  # the wait whose only key is a boolean also declares no event
    assert "notfy_team" in err and "check.exit_on_error" in err and "boolean" in err
    assert not (tmp_path / "ran").exists()
    assert api.list_sessions().rows == []


def test_validate_accepts_a_good_workflow_without_running_it(wf, tmp_path, capsys):
    path = wf(f"""
        steps:
          - $(touch {tmp_path}/ran)
          - wait_for_event:
              approved: ["$(echo ok)"]
    """)
    assert main(["validate", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is True
    assert doc["waits"][0]["events"] == ["approved"]
    assert not (tmp_path / "ran").exists()


def test_validate_warns_about_a_step_config_that_configures_no_step(wf, capsys):
    path = wf("""
        steps:
          - notify_team: $(echo sent)
        notfy_teem:
          exit_on_error: false
        wait_for_event:
          timeout: 2h
    """)
    assert main(["validate", str(path)]) == 0  # a warning, not an error (SPEC §2; one edit away would be an error, issue 24)
    err = capsys.readouterr().err
    assert "workflow.yml:3: top-level key 'notfy_teem' configures no step" in err
    assert "did you mean 'notify_team'?" in err and "wait_for_event" not in err
    assert main(["validate", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["warnings"]) == 1 and "notfy_teem" in doc["warnings"][0]
