"""Issue 11: a session never fails after its event was consumed for something `roast validate` could
have said. Everything here is found by `compiler.compile_workflow`, so `execute` refuses it (exit 2)
before any session is created."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import roast
from roast import workflow
from roast.cli import main
from conftest import run_cli
from roast.errors import WorkflowInvalid
from roast import api

T0 = 1_800_000_000.0


def refused(capsys: pytest.CaptureFixture[str], path: Path, command: str = "validate") -> str:
    """Run the CLI on a bad workflow: exit 2, nothing on stdout, no session; return stderr."""
    code = main([command, str(path)])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == "" and err.startswith("roast: error: ") and "Traceback" not in err
    assert api.list_sessions().rows == []
    return err


def problems(path: Path) -> list[WorkflowInvalid]:
    """`roast.run(path)` raises WorkflowInvalid; its problems, each with its file:line."""
    with pytest.raises(WorkflowInvalid) as info:
        roast.run(path)
    assert api.list_sessions().rows == []
    return list(info.value.problems) or [info.value]


def where(problem: WorkflowInvalid) -> str:
    """`workflow.yml:7` (or `x.py:2`): the file's name and the line, whatever the directory."""
    return Path(str(problem.where)).name


# --- 1. template syntax -------------------------------------------------------------------------

def test_a_template_syntax_error_anywhere_is_a_validate_error_naming_the_line_and_expression(wf, capsys):
    path = wf("""
        steps:
          - $(echo {{ 1 + }})
          - "Summarise {{ output. }}"
          - if: "{{ output.x == }}"
            then: ["$(echo yes)"]
          - case: "{{ [1, }}"
            when: {a: ["$(echo a)"]}
          - each: "{{ range(3 }}"
            as: i
            steps: ["$(echo {{ i }})"]
          - repeat: {steps: ["$(echo r)"], until: "{{ not }}", max_iterations: 2}
          - input: {prompt: "Ship {{ 'it' + }}?"}
          - wait_for_event:
              approved:
                - "$(echo {{ event. }})"
                - wait_for_event:
                    merged: ["$(echo {{ ) }})"]
          - [["$(echo {{ 2 * }})"], "$(echo ok)"]
          - fine: |-
              $(echo {{ 1
              + 1 }})
    """)
    found = {where(p): str(p) for p in problems(path)}
    expected = {"workflow.yml:2": "{{ 1 + }}", "workflow.yml:3": "{{ output. }}",
                "workflow.yml:4": "{{ output.x == }}", "workflow.yml:6": "{{ [1, }}",
                "workflow.yml:8": "{{ range(3 }}", "workflow.yml:11": "{{ not }}",
                "workflow.yml:12": "{{ 'it' + }}", "workflow.yml:15": "{{ event. }}",
                "workflow.yml:17": "{{ ) }}", "workflow.yml:18": "{{ 2 * }}"}
    assert set(found) == set(expected), found  # the expression over two lines (19-21) is fine
    for line, expr in expected.items():
        assert expr in found[line] and "is not a valid expression" in found[line], found[line]
    err = refused(capsys, path)
    assert "10 problems" in err and "workflow.yml:2: steps[0]: {{ 1 + }} is not a valid expression" in err
    assert refused(capsys, path, "execute") == err


def test_a_template_syntax_error_in_a_prompt_file_names_that_file_and_line(wf, capsys):
    path = wf("steps: [summarize]\n", files={
        "summarize/prompt.md": "Summarise this:\n\n{{ output.build + }}\n",
        "summarize/output.txt": "Done.\n{{ response. }}\n",
    })
    found = sorted(where(p) for p in problems(path))
    assert found == ["output.txt:2", "prompt.md:3"]
    err = refused(capsys, path)
    assert "prompt.md:3: steps[0]: {{ output.build + }} is not a valid expression" in err
    assert "{{ response. }}" in err


# --- 2. Python steps with a syntax error ------------------------------------------------------

def test_a_python_step_with_a_syntax_error_names_the_line_in_the_py_file(wf, tmp_path, capsys):
    path = wf("steps: [notify]\n", files={"notify.py": f"open({str(tmp_path / 'ran')!r}, 'w')\n"
                                                      "def run(ctx):\n    return (1\n"})
    [problem] = problems(path)
    assert where(problem) == "notify.py:3" and "syntax error" in str(problem)
    err = refused(capsys, path, "execute")
    assert "notify.py:3:" in err and "'(' was never closed" in err
    assert not (tmp_path / "ran").exists()  # compiled, never imported or run


def test_a_python_file_two_steps_name_is_compiled_once_and_its_error_reported_at_both(wf, monkeypatch):
    # issue 25: a file several steps name is compiled (and read for its outputs) once
    path = wf("steps:\n  - notify\n  - check\n  - notify\n",
              files={"notify.py": "def run(ctx):\n    return (1\n", "check.py": "def run(ctx):\n    return 1\n"})
    compiled = []
    real_compile = compile

    def counting(source, filename, *args, **kwargs):
        if isinstance(source, str) and str(filename).endswith((".py",)):
            compiled.append(Path(filename).name)
        return real_compile(source, filename, *args, **kwargs)

    monkeypatch.setattr("builtins.compile", counting)
    found = problems(path)
    assert sorted(compiled) == ["check.py", "notify.py"]
    assert [where(p) for p in found] == ["notify.py:2", "notify.py:2"]
    assert "steps[0]: step 'notify'" in str(found[0]) and "steps[2]: step 'notify'" in str(found[1])


# --- 3. shell steps that are not executable ---------------------------------------------------

def test_a_shell_step_that_is_not_executable_says_to_chmod_it(wf, capsys):
    path = wf("steps: [deploy]\n", files={"deploy.sh": "#!/bin/sh\necho deployed\n"})
    (path.parent / "deploy.sh").chmod(0o644)
    [problem] = problems(path)
    assert where(problem) == "workflow.yml:1"
    err = refused(capsys, path, "execute")
    assert "deploy.sh is not executable; run chmod +x " in err and "exit_on_error" not in err


# --- 4. per-step config typos -------------------------------------------------------------------

def test_a_typo_in_a_step_config_is_an_error_with_a_did_you_mean(wf, capsys):
    path = wf("""
        steps:
          - lint: $(false)
          - approval:
              wait_for_event: {ok: ["$(echo ok)"]}
        lint:
          exit_on_eror: false
        approval:
          timout: 2h
        wait_for_event:
          on_timout: ["$(echo late)"]
    """)
    found = {where(p): str(p) for p in problems(path)}
    assert set(found) == {"workflow.yml:6", "workflow.yml:8", "workflow.yml:10"}, found
    assert "`lint.exit_on_eror`" in found["workflow.yml:6"]
    assert "did you mean 'exit_on_error'?" in found["workflow.yml:6"]
    assert "did you mean 'timeout'?" in found["workflow.yml:8"]
    assert "did you mean 'on_timeout'?" in found["workflow.yml:10"]
    assert "3 problems" in refused(capsys, path)


def test_a_step_config_key_with_no_close_match_lists_the_known_keys(wf, capsys):
    path = wf("steps: [lint: $(true)]\nlint:\n  colour: red\n")
    err = refused(capsys, path)
    assert "workflow.yml:3: `lint.colour` is not a step config key" in err and "exit_on_error" in err


# --- 5. reserved-key typos inside a wait --------------------------------------------------------

@pytest.mark.parametrize(("key", "value", "meant"), [
    ("on_timout", '["$(echo late)"]', "on_timeout"),
    ("withn", "2h", "within"),
    ("timout", '["$(echo late)"]', "timeout"),
    ("schma", "{}", "schema"),
])
def test_a_near_miss_of_a_reserved_wait_key_is_an_error_at_its_own_line(wf, capsys, key, value, meant):
    path = wf(f"""
        steps:
          - $(echo start)
          - wait_for_event:
              approved: ["$(echo ok)"]
              {key}: {value}
    """)
    found = [str(p) for p in problems(path) if where(p) == "workflow.yml:5"]
    assert found and f"looks like a misspelt `{meant}`" in found[0], found
    assert f"workflow.yml:5: steps[1]: {key!r} looks like a misspelt `{meant}`" in refused(capsys, path)


def test_an_event_name_that_is_no_near_miss_stays_an_event(wf):
    path = wf("""
        steps:
          - wait_for_event: {timed_out: ["$(echo a)"], within_budget: ["$(echo b)"]}
    """)
    assert roast.run(path).awaiting == ["timed_out", "within_budget"]


# --- 6. on_timeout inside a wait ----------------------------------------------------------------

def _clock(t: float):
    return lambda: t


@pytest.mark.parametrize(("wait", "config", "ran"), [
    pytest.param(['timeout: [{late: "$(echo branch)"}]', 'on_timeout: [{late: "$(echo own)"}]'],
                 [], "branch", id="the wait's timeout branch wins"),
    pytest.param(['on_timeout: [{late: "$(echo own)"}]'],
                 ['approval: {on_timeout: [{late: "$(echo named)"}]}',
                  'wait_for_event: {on_timeout: [{late: "$(echo default)"}]}'], "own",
                 id="then the wait's own on_timeout"),
    pytest.param([], ['approval: {on_timeout: [{late: "$(echo named)"}]}',
                      'wait_for_event: {on_timeout: [{late: "$(echo default)"}]}'], "named",
                 id="then the named wait's config"),
    pytest.param([], ['wait_for_event: {on_timeout: [{late: "$(echo default)"}]}'], "default",
                 id="then the top-level default"),
])
def test_on_timeout_inside_a_wait_is_honoured_in_order_of_precedence(wf, wait, config, ran):
    path = wf("steps:\n  - approval:\n      wait_for_event:\n        approved: ['$(echo ok)']\n"
              "        within: 1s\n" + "".join(f"        {line}\n" for line in wait)
              + "".join(f"{line}\n" for line in config))
    started = roast.run(path, now=_clock(T0))
    assert started.status == "waiting", started
    assert roast.tick(now=_clock(T0 + 0.5)) == []
    [fired] = roast.tick(now=_clock(T0 + 2))
    assert fired["fired"] and fired["status"] == "completed", fired
    assert roast.session(started.session_id).output["late"] == ran


# --- 7. schema: not yet ------------------------------------------------------------------------

def test_schema_inside_a_wait_is_checked_never_silently_accepted(wf, capsys):
    # issue 11 refused `schema:` until schemas existed; issue 14 built them: a bad one is found here
    path = wf("""
        steps:
          - wait_for_event:
              approved: ["$(echo ok)"]
              schema: {approved: {type: objekt}}
    """)
    [problem] = problems(path)
    assert where(problem) == "workflow.yml:4"
    assert "the schema of 'approved': it is not a valid JSON Schema" in refused(capsys, path)


# --- 8. api_provider ----------------------------------------------------------------------------

def test_an_unsupported_api_provider_is_refused_before_any_session_is_created(wf, capsys):
    path = wf("""
        api_provider: oflline
        steps:
          - "Summarise this"
          - lint: $(true)
        lint:
          api_provider: open_ai
    """)
    found = {where(p): str(p) for p in problems(path)}
    assert set(found) == {"workflow.yml:1", "workflow.yml:6"}, found
    assert "'oflline'" in found["workflow.yml:1"] and "did you mean 'offline'?" in found["workflow.yml:1"]
    assert "'open_ai'" in found["workflow.yml:6"] and "did you mean 'openai'?" in found["workflow.yml:6"]
    assert "lint" in found["workflow.yml:6"]
    err = refused(capsys, path, "execute")  # no orphaned `running` session
    assert "api_provider" in err


def test_the_offline_provider_is_accepted(wf):
    path = wf("api_provider: offline\nsteps: ['Say hi']\n")
    assert roast.run(path).status == "completed"


# --- 9. long lists of problems ------------------------------------------------------------------

def test_at_most_twenty_problems_are_listed_but_all_are_kept(wf, capsys):
    path = wf("steps:\n" + "".join(f"  - missing_{i}\n" for i in range(25)))
    assert len(problems(path)) == 25
    err = refused(capsys, path)
    assert "25 problems" in err and "missing_19" in err and "missing_20" not in err
    assert "… and 5 more" in err


# --- 10. path: a directory or a file ------------------------------------------------------------

def test_a_step_configs_path_may_name_a_file(wf):
    path = wf("""
        steps: [noop, deploy, ask]
        noop: {path: noop.py}
        deploy: {path: scripts/deploy.sh}
        ask: {path: prompts/x/prompt.md}
    """, files={"noop.py": "def run(ctx):\n    return 'nothing'\n",
                "scripts/deploy.sh": "#!/bin/sh\necho deployed\n",
                "prompts/x/prompt.md": "Hello from x\n", "prompts/x/output.txt": "[{{ response }}]"})
    result = roast.run(path)
    assert result.status == "completed", result
    assert result.output == {"noop": "nothing", "deploy": "deployed", "ask": "[Hello from x]"}


def test_a_step_not_found_lists_what_was_looked_at_and_never_suggests_itself(wf, capsys):
    path = wf("""
        steps: [noop, other]
        noop: {path: nop.py}
        other: {path: lib}
    """, files={"noop.py": "def run(ctx):\n    return 1\n"})
    assert [where(p) for p in problems(path)] == ["workflow.yml:1", "workflow.yml:1"]
    err = refused(capsys, path)
    assert "step 'noop' not found (looked for " in err and "nop.py)" in err
    assert "did you mean 'noop'" not in err
    assert "step 'other' not found" in err and "lib/other.py" in err


# --- 11. path display and lookup ------------------------------------------------------------------

def test_validate_of_a_moved_workflow_lists_each_path_it_tried_once(wf, tmp_path, capsys):
    path = wf("steps: ['$(echo hi)']", name="mv1")
    shutil.move(str(path.parent), str(tmp_path / "mv2"))
    assert main(["validate", str(tmp_path / "mv1" / "workflow.yml")]) == 2
    err = capsys.readouterr().err
    assert "workflow.yml/workflow.yml" not in err
    assert err.count("mv1/workflow.yml") == 2, err  # once in the argument, once in what was tried
    assert main(["validate", str(tmp_path / "mv1")]) == 2
    err = capsys.readouterr().err
    assert err.count("mv1/workflow.yml") == 1 and str(Path("roast", "mv1")) not in err, err


def test_shown_paths_are_the_shorter_of_relative_and_absolute(tmp_path):
    deep = tmp_path / "a" / "b" / "c.yml"
    assert workflow._shown(deep, tmp_path) == str(Path("a", "b", "c.yml"))
    far = tmp_path.joinpath(*["d"] * 40)  # from here the relative form is the longer one
    assert workflow._shown(deep, far) == str(deep)
    assert workflow._shown(tmp_path / "x" / ".." / "a" / "c.yml", far) == str(tmp_path / "a" / "c.yml")
    assert workflow._shown(Path("a", "b", "c.yml"), tmp_path) == str(Path("a", "b", "c.yml"))


# --- 12. errors with structure -------------------------------------------------------------------

def test_every_problem_has_a_file_and_a_line(wf):
    path = wf("""
        api_provider: nope
        steps:
          - notfy
          - $(echo {{ 1 + }})
          - repeat: 5
          - lint: $(true)
          - wait_for_event:
              withn: 2h
              approved: ["$(echo ok)"]
              timeout: 2h
        lint:
          exit_on_eror: false
          print_response: maybe
        wait_for_event:
          within: 1h
    """)
    found = problems(path)
    assert len(found) >= 9, [str(p) for p in found]
    for problem in found:
        doc = problem.to_dict()
        assert doc["file"] and str(doc["file"]).endswith("workflow.yml"), doc
        assert isinstance(doc["line"], int) and doc["line"] > 0, doc
        assert doc["message"]


# --- 13. issue 24: mistakes caught before anyone approves ---------------------------------------

def test_an_unclosed_command_is_an_error_not_a_prompt(wf, capsys):
    path = wf("""
        steps:
          - $(echo start)
          - $(ls -la
          - listing: $(ls -l /tmp
          - if: $(test -f x
            then: ["$(echo yes)"]
          - each: $(ls
            as: f
            steps: ["$(echo {{ f }})"]
    """)
    found = {where(p): str(p) for p in problems(path)}
    assert set(found) == {"workflow.yml:3", "workflow.yml:4", "workflow.yml:5", "workflow.yml:7"}, found
    assert "`$(` is never closed" in found["workflow.yml:3"] and "hint:" in found["workflow.yml:3"]
    err = refused(capsys, path, "execute")
    assert "workflow.yml:3: steps[1]: `$(` is never closed" in err


def test_a_closed_command_and_a_prompt_mentioning_a_command_stay_as_they_were(wf):
    path = wf("""
        steps:
          - $(echo "a (b")
          - "Explain what $(date) does"
    """)
    assert roast.run(path).status == "completed"


def test_a_misspelt_output_name_is_an_error_with_a_did_you_mean_before_the_wait(wf, capsys):
    path = wf("""
        steps:
          - build: $(echo built)
          - approval:
              wait_for_event:
                approved:
                  - deploy: $(echo deploying {{ output.buidl }})
                within: 1h
          - $(echo {{ output['aproval'].event }})
    """)
    found = {where(p): str(p) for p in problems(path)}
    assert set(found) == {"workflow.yml:6", "workflow.yml:8"}, found
    assert "no step writes `output.buidl`" in found["workflow.yml:6"]
    assert "did you mean 'build'?" in found["workflow.yml:6"]
    assert "did you mean 'approval'?" in found["workflow.yml:8"]
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2 and "did you mean 'build'?" in proc.stderr, proc.stderr
    refused(capsys, path, "execute")  # refused at load time: no session waits for a person


def test_an_output_read_in_a_workflow_with_no_named_step_is_an_error(wf, capsys):
    path = wf("steps:\n  - $(echo {{ output.build }})\n")
    err = refused(capsys, path)
    assert "workflow.yml:2: steps[0]: no step writes `output.build`" in err and "- build: $(" in err


def test_outputs_any_step_could_write_are_not_flagged(wf):
    path = wf("""
        steps:
          - build: $(echo built)
          - summarize
          - checks:
              if: "{{ output.build }}"
              then: ["$(echo ok)"]
          - wait_for_event: {ok: ["$(echo {{ output.wait_for_event.event }} {{ output.checks }})"], within: 1h}
          - setter
          - $(echo {{ output.summarize }} {{ output.extra }} {{ output.get('nothing', 1) }} {{ output.items() }})
    """, files={"summarize/prompt.md": "Summarise {{ output.build }}\n",
                "setter.py": "def run(ctx):\n    ctx.output['extra'] = 1\n"})
    compiled = workflow.load(path)
    from roast import compiler
    assert compiler.compile_workflow(compiled) is not None


def test_outputs_written_by_a_python_step_whose_names_are_unknown_are_not_flagged(wf):
    path = wf("""
        steps:
          - setter
          - $(echo {{ output.anything }})
    """, files={"setter.py": "def run(ctx):\n    for k in ('any', 'thing'):\n        ctx.output[k + ''] = 1\n"})
    from roast import compiler
    # the python step never names `anything`, but it writes computed names: nothing is flagged
    assert compiler.compile_workflow(workflow.load(path)) is not None


def test_a_top_level_key_one_edit_from_a_wait_name_is_an_error(wf, capsys):
    path = wf("""
        steps:
          - approval:
              wait_for_event: {approved: ["$(echo ok)"]}
        aproval:
          timeout: 2h
    """)
    [problem] = problems(path)
    assert where(problem) == "workflow.yml:4"
    err = refused(capsys, path)
    assert "'aproval' configures no step" in err and "did you mean 'approval'?" in err


def test_a_top_level_key_far_from_every_name_stays_a_warning(wf, capsys):
    path = wf("""
        steps:
          - approval:
              wait_for_event: {approved: ["$(echo ok)"]}
              within: 2h
        unrelated:
          colour: red
    """)
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "roast: warning:" in err and "'unrelated' configures no step" in err


def test_a_wait_with_no_deadline_anywhere_gets_a_warning(wf, capsys):
    path = wf("""
        steps:
          - approval:
              wait_for_event: {approved: ["$(echo ok)"]}
          - wait_for_event: {merged: ["$(echo ok)"], within: 1h}
    """)
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "steps[0]" in err and "has no deadline" in err and "within:" in err, err
    assert "steps[1]" not in err
    for fix in ("approval:\n  timeout: 2h\n", "wait_for_event:\n  timeout: 2h\n"):
        path.write_text("steps:\n  - approval:\n      wait_for_event: {approved: ['$(echo ok)']}\n" + fix)
        assert main(["validate", str(path)]) == 0
        assert "has no deadline" not in capsys.readouterr().err
