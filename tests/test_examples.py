"""The examples under examples/ run offline and do what their READMEs say.

Each test runs an example from a private copy of examples/ (so commands that write into the
current directory, such as the conditional example's scratch file, write into tmp_path).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import roast
from roast.cli import main
from roast.errors import EventLate
from roast import api
from tests.conftest import ROOT, run_cli

EXAMPLES = ROOT / "examples"
WORKFLOWS = sorted(str(p.relative_to(ROOT)) for p in EXAMPLES.rglob("*.yml") if p.name != "shared.yml")


@pytest.fixture
def examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of examples/ under tmp_path, which is also the current directory."""
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy)
    monkeypatch.chdir(tmp_path)
    return copy



# --------------------------------------------------------------------------- every example


def test_every_example_directory_has_a_readme():
    dirs = [p for p in EXAMPLES.iterdir() if p.is_dir()]
    assert {p.name for p in dirs} >= {"deploy", "offline_pipeline", "conditional", "case_when", "iteration",
                                      "interpolation", "exit_on_error", "shared_config", "review_each_file",
                                      "parallel_signoff", "ai_review"}
    assert [p.name for p in dirs if not (p / "README.md").is_file()] == []


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_roast_validate_accepts_every_example(workflow, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["validate", workflow, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True


# --------------------------------------------------------------------------- deploy


def test_deploy_validates_without_warnings_and_its_gate_has_a_title_labels_and_schemas(capsys, monkeypatch):
    from roast import compiler, tree, workflow

    monkeypatch.chdir(ROOT)
    assert main(["validate", "examples/deploy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []  # every schema fits a page form
    [wait] = tree.all_waits(compiler.compile_workflow(workflow.load("examples/deploy")))
    assert wait.title and dict(wait.labels) == {"approved": "Approve and deploy", "rejected": "Reject"}
    schemas = {event: json.loads(text) for event, text in wait.schemas}
    assert schemas["approved"]["required"] == ["approver"]
    assert set(schemas["rejected"]["properties"]) == {"approver", "reason"}


def test_deploy_pauses_at_the_approval_after_building_and_summarising(examples):
    result = roast.run("examples/deploy")
    assert result.status == "waiting"
    assert result.awaiting == ["approved", "rejected"]
    assert result.deadline is not None
    assert result.output["build"].startswith("built app-1.4.2.tar.gz")
    assert "built app-1.4.2.tar.gz" in result.output["summarize"]  # the offline model echoes the prompt
    assert "cleanup" not in result.output


def test_deploy_approved_deploys_notifies_with_the_approver_and_cleans_up(examples):
    first = roast.run("examples/deploy")
    done = roast.resume("approved", data={"approver": "ana"}, workflow="examples/deploy")
    assert done.status == "completed"
    assert done.session_id == first.session_id
    assert done.output["deploy"] == "deployed app-1.4.2 to production (approved by ana)"
    assert done.output["notify_team"] == ("Team notified: deployed app-1.4.2 to production "
                                          "(approved by ana) - thanks, ana.")
    assert done.output["cleanup"] == "removed build/app-1.4.2.tar.gz"
    assert "rollback" not in done.output
    paths = [step.path for step in api.history(done.session_id)]
    assert "steps[2].approved[0]" in paths  # the inline "Approved by {{ event.approver }}" prompt
    assert paths[:3] == ["steps[0]", "steps[1]", "steps[2].notify[0]"]  # notified once, at the pause
    assert sorted(done.output) == ["build", "cleanup", "deploy", "notify_team", "summarize", "wait_for_event"]


def test_deploy_rejected_rolls_back_with_the_reason(examples):
    roast.run("examples/deploy")
    done = roast.resume("rejected", data={"approver": "bo", "reason": "tests flaky"}, workflow="examples/deploy")
    assert done.status == "completed"
    assert done.output["rollback"] == "release app-1.4.2 rejected by bo: tests flaky"
    assert done.output["notify_team"] == "Team notified: release app-1.4.2 rejected by bo: tests flaky."
    assert "deploy" not in done.output
    assert done.output["cleanup"] == "removed build/app-1.4.2.tar.gz"


def test_deploy_approval_after_two_hours_runs_the_timeout_branch(examples):
    start = 1_800_000_000.0
    first = roast.run("examples/deploy", now=lambda: start)
    assert first.deadline == "2027-01-15T10:00:00Z"  # start + 2h
    with pytest.raises(EventLate, match="timed out"):
        roast.resume("approved", data={"approver": "ana"}, workflow="examples/deploy",
                     now=lambda: start + 2 * 3600 + 1)
    row = api.session(first.session_id)
    assert row.status == "completed"
    assert row.output["rollback"] == "release app-1.4.2 abandoned after the approval deadline"
    assert row.output["notify_team"] == "Team notified: release app-1.4.2 abandoned after the approval deadline."
    assert "deploy" not in row.output


def test_deploy_end_to_end_through_real_processes(examples, tmp_path):
    paused = run_cli("execute", "examples/deploy", cwd=tmp_path)
    assert paused.returncode == 0, paused.stderr
    assert "roast resume" in paused.stderr and "--event approved" in paused.stderr
    # the wait's `notify:` prints the commands to paste once the wait is saved (issue 14)
    assert "notify: app-1.4.2 waits for approval until " in paused.stderr
    assert """--event approved --session-id """ in paused.stderr and """-d '{"approver": "NAME"}'""" in paused.stderr

    listed = run_cli("sessions", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["status"] == "waiting"
    assert row["awaiting"] == ["approved", "rejected"]
    assert row["deadline"]

    done = run_cli("resume", "examples/deploy", "--event", "approved", "--event-data", '{"approver": "ana"}',
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "approved by ana" in done.stdout
    assert done.stdout.rstrip().endswith("removed build/app-1.4.2.tar.gz")

    shown = run_cli("session", row["session_id"], "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    session = json.loads(shown.stdout)
    assert session["status"] == "completed"
    assert "ana" in session["final_output"]


def test_deploy_rejected_through_real_processes(examples, tmp_path):
    assert run_cli("execute", "examples/deploy", cwd=tmp_path).returncode == 0
    done = run_cli("resume", "examples/deploy", "-e", "rejected", "-d",
                   '{"approver": "bo", "reason": "\\"; rm -rf ~"}', "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert result["output"]["rollback"] == 'release app-1.4.2 rejected by bo: "; rm -rf ~'  # never run by the shell
    assert "deploy" not in result["output"]
    again = run_cli("resume", "examples/deploy", "-e", "approved", cwd=tmp_path)
    assert again.returncode == 3
    assert "no session" in again.stderr


def test_sessions_json_shows_the_outputs_of_a_waiting_deploy(examples, tmp_path, capsys):
    roast.run("examples/deploy")
    assert main(["sessions", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["output"]["build"].startswith("built app-1.4.2.tar.gz")


# --------------------------------------------------------------------------- ai_review


def test_ai_review_runs_offline_pauses_for_approval_and_continues(examples):
    result = roast.run("examples/ai_review")
    assert result.status == "waiting", result.error
    assert result.awaiting == ["approved", "rejected"]
    assert "config.ini, retry.py" in result.output["review"]  # offline: the prompt itself
    done = roast.resume("approved", session_id=result.session_id)
    assert done.status == "completed", done.error
    assert done.output["release_note"].startswith("Write a one-line release note")


# --------------------------------------------------------------------------- offline_pipeline


def test_offline_pipeline_counts_classifies_and_grades_the_sample(examples):
    result = roast.run("examples/offline_pipeline")
    assert result.status == "completed", result.error
    assert result.output["line_counts"] == ["README.md has 3 lines of documentation",
                                            "app.py has 13 lines of Python",
                                            "notes.txt has 1 lines of text",
                                            "util.py has 6 lines of Python"]
    assert result.output["summarize_counts"] == {"files": 4, "total_lines": 23, "largest": "app.py",
                                                 "by_kind": {"documentation": 1, "Python": 2, "text": 1}}
    assert result.output["verdict"] == "small sample: 23 lines in 4 files, largest app.py"
    assert result.final_output.endswith("small sample: 23 lines in 4 files, largest app.py")
    assert '"total_lines": 23' in result.final_output  # summarize_counts has print_response: true


def test_offline_pipeline_grades_a_large_sample_from_another_directory(examples, tmp_path, monkeypatch):
    (examples / "offline_pipeline" / "sample" / "big.txt").write_text("line\n" * 200)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = roast.run(examples / "offline_pipeline")
    assert result.status == "completed", result.error
    assert result.output["verdict"] == "large sample (223 lines) - split it up"
    assert result.output["summarize_counts"]["largest"] == "big.txt"


# --------------------------------------------------------------------------- review_each_file


def test_review_each_file_waits_once_per_file_and_summarises(examples, roast_home):
    first = roast.run("examples/review_each_file")
    assert first.status == "waiting"
    assert first.awaiting == ["approved", "changes_requested"]
    second = roast.resume("approved", data={"reviewer": "ana"}, workflow="examples/review_each_file")
    assert second.status == "waiting"
    assert second.waits[0]["path"].endswith("#2")  # the second file's wait
    third = roast.resume("changes_requested", data={"reviewer": "bo", "comment": "add tests"},
                         workflow="examples/review_each_file")
    assert third.status == "waiting"
    done = roast.resume("approved", data={"reviewer": "ana"}, workflow="examples/review_each_file")
    assert done.status == "completed", done.error
    assert done.session_id == first.session_id
    assert done.output["reviews"] == ["CHANGELOG.md approved by ana",
                                      "config.toml needs changes (bo): add tests",
                                      "parser.py approved by ana"]
    assert done.final_output.splitlines()[0] == "2 of 3 files approved: not ready to merge"
    assert [e.name for e in api.deliveries(done.session_id)] == ["approved", "changes_requested", "approved"]


# --------------------------------------------------------------------------- parallel_signoff


def test_parallel_signoff_waits_for_both_and_releases_when_both_approve(examples):
    first = roast.run("examples/parallel_signoff")
    assert first.status == "waiting"
    assert first.awaiting == ["legal_approved", "legal_blocked", "security_approved", "security_blocked"]
    assert {w["wait"] for w in first.waits} == {"legal", "security"}
    half = roast.resume("security_approved", data={"by": "sam"}, workflow="examples/parallel_signoff")
    assert half.status == "waiting"
    assert half.awaiting == ["legal_approved", "legal_blocked"]
    assert "release" not in half.output
    done = roast.resume("legal_approved", data={"by": "lee"}, workflow="examples/parallel_signoff")
    assert done.status == "completed", done.error
    assert done.output["release"] == "released rc-7, signed off by lee and sam"
    assert done.output["legal"]["event"] == "legal_approved"
    assert done.output["security"]["data"] == {"by": "sam"}


def test_parallel_signoff_does_not_release_when_legal_blocks(examples):
    roast.run("examples/parallel_signoff")
    roast.resume("legal_blocked", data={"reason": "licence"}, workflow="examples/parallel_signoff")
    done = roast.resume("security_approved", workflow="examples/parallel_signoff")
    assert done.status == "completed", done.error
    assert done.output["release"] == "rc-7 not released (legal legal_blocked, security security_approved)"


# --------------------------------------------------------------------------- ports of Roast's examples


def test_conditional_takes_the_branch_for_this_os_and_leaves_no_file(examples, tmp_path):
    result = roast.run("examples/conditional")
    assert result.status == "completed", result.error
    if result.output["check_os"] == "Darwin":
        assert result.output["mac_message"] == "Running on macOS!"
    else:
        assert result.output["linux_message"] == "Running on Linux!"
        assert "mac_message" not in result.output
    assert result.output["check_file"] == "missing"
    assert result.output["create_file"] == "File created"  # the unless branch ran
    assert result.output["verify_file"] == "roast_test.txt"
    assert not (tmp_path / "roast_test.txt").exists()


def test_conditional_skips_the_unless_branch_when_the_file_exists(examples, tmp_path):
    (tmp_path / "roast_test.txt").write_text("")
    result = roast.run("examples/conditional")
    assert result.status == "completed", result.error
    assert result.output["check_file"] == "exists"
    assert "create_file" not in result.output


def test_simple_conditional_runs_the_if_and_the_unless_branches(examples):
    result = roast.run("examples/conditional/simple_workflow.yml")
    assert result.status == "completed", result.error
    assert result.output == {"set_value": "true", "success": "If condition worked!",
                             "unless_success": "Unless condition worked!"}


@pytest.mark.parametrize(("sample", "language_steps", "priority"), [
    ("greeter.rb", ("analyze_ruby", "generate_ruby_report"), "low_priority_info"),
    ("cart.js", ("analyze_javascript", "generate_js_report"), "medium_priority_notice"),
    ("backlog.py", ("analyze_python", "generate_python_report"), "high_priority_alert"),
    ("main.go", ("analyze_go", "generate_go_report"), "low_priority_info"),
    ("notes.txt", ("analyze_generic", "generate_generic_report"), "low_priority_info"),
])
def test_case_when_picks_the_language_environment_and_priority(examples, monkeypatch, sample, language_steps,
                                                               priority):
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    result = roast.run("examples/case_when", target=f"examples/case_when/samples/{sample}")
    assert result.status == "completed", result.error
    assert set(language_steps) <= set(result.output)
    assert result.output["run_tests"] == "running tests"  # development, the default environment
    assert priority in result.output
    assert result.final_output == result.output[priority]


def test_case_when_follows_the_environment_variable(examples, monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "staging")
    result = roast.run("examples/case_when", target="examples/case_when/samples/cart.js")
    assert result.output["deploy_staging"] == "deploying to staging"
    monkeypatch.setenv("ENVIRONMENT", "moon")
    result = roast.run("examples/case_when", target="examples/case_when/samples/cart.js")
    assert result.output["unknown_environment"] == "unknown environment moon"


def test_case_when_runs_once_per_target_from_the_command_line(examples, capsys):
    samples = sorted(str(p.relative_to(examples.parent)) for p in (examples / "case_when" / "samples").iterdir())
    assert main(["execute", "examples/case_when", *samples, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in results] == ["completed"] * 5
    assert [r["output"]["count_issues"] for r in results] == ["12", "6", "1", "0", "0"]


def test_iteration_analyses_every_file_and_stops_after_three_fixes(examples):
    result = roast.run("examples/iteration")
    assert result.status == "completed", result.error
    assert [a["file"] for a in result.output["analyses"]] == ["inventory.py", "pricing.py"]  # not test_*
    assert result.output["prioritize_issues"]["total"] == 4
    assert result.output["update_fix_count"] == {"fixes_applied": 3}
    assert result.output["implement_fix"] == "would fix: inventory.py: line 4 is 99 characters long (style)"
    assert "Fixes applied: 3" in result.final_output
    repeats = [s.path for s in api.history(result.session_id) if s.name == "verify_fix"]
    assert len(repeats) == 3


def test_iteration_stops_when_no_issues_are_left(examples, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "short.py").write_text("x = 1  # " + "a very long comment " * 5 + "\n")
    result = roast.run("examples/iteration", target=str(project))
    assert result.status == "completed", result.error
    assert result.output["prioritize_issues"]["total"] == 1
    assert result.output["update_fix_count"] == {"fixes_applied": 1}
    assert result.output["select_next_issue"] == {"no_issues_left": True}
    assert result.output["implement_fix"] == "nothing left to fix"


def test_interpolation_reports_on_a_ruby_file_with_the_matching_generator(examples):
    result = roast.run("examples/interpolation", target="examples/interpolation/sample/calculator.rb")
    assert result.status == "completed", result.error
    assert result.output["analyze_file"].strip() == "Analyze the file at: examples/interpolation/sample/calculator.rb"
    patterns = result.output["analyze_patterns"]["code_patterns"]
    assert patterns["classes"] == ["Calculator"]
    assert patterns["method_count"] == 5
    assert '"Calculator"' in result.output["generate_report_for_rb"]
    assert "generate_report_for_js" not in result.output
    assert result.final_output.endswith("Processing completed for file: calculator.rb")
    assert "Generate a nicely formatted report" in result.final_output  # print_response: true


def test_interpolation_has_no_generator_for_other_extensions(examples):
    result = roast.run("examples/interpolation", target="examples/case_when/samples/main.go")
    assert result.status == "completed", result.error
    steps = {s.path: s.output for s in api.history(result.session_id)}
    assert steps["steps[2].else[0]"] == "no report generator for .go files"
    assert result.final_output == "Processing completed for file: main.go"


def test_exit_on_error_carries_on_after_the_linter_fails(examples):
    result = roast.run("examples/exit_on_error", target="examples/exit_on_error/sample/messy.py")
    assert result.status == "completed", result.error
    assert result.output["lint_check"].startswith("1:def area(width, height):")
    assert result.output["lint_check"].endswith("[Exit status: 1]")
    assert "[Exit status: 1]" in result.output["analyze_lint_output"]
    assert result.output["apply_fixes"] == ("Would strip trailing whitespace on lines 1; "
                                            "lines 7 need shortening by hand.")
    assert (examples / "exit_on_error" / "sample" / "messy.py").read_text().splitlines()[0].endswith("   ")


def test_exit_on_error_on_a_clean_file_has_nothing_to_fix(examples):
    result = roast.run("examples/exit_on_error", target="examples/exit_on_error/sample/clean.py")
    assert result.status == "completed", result.error
    assert result.output["lint_check"] == "no issues"
    assert result.final_output == "Nothing to fix: the linter found no issues."


def test_shared_config_uses_the_anchors_from_shared_yml(examples):
    result = roast.run("examples/shared_config/example_with_shared_config")
    assert result.status == "completed", result.error
    assert result.output == {"sabotage": "Im tellin yall, its sabotage"}
    history = api.history(result.session_id)
    assert [(s.path, s.output) for s in history] == [("steps[0]", "Oh my god. Its a mirage"),
                                                     ("steps[1]", "Im tellin yall, its sabotage")]


def test_shared_config_without_shared_yml_is_refused_naming_the_anchor(examples, capsys):
    (examples / "shared_config" / "shared.yml").unlink()
    assert main(["validate", "examples/shared_config/example_with_shared_config"]) == 2
    assert "standard_tools" in capsys.readouterr().err


# --------------------------------------------------------------------------- bugs found on the way


def test_a_target_glob_in_the_workflow_names_files_the_steps_can_open(wf, tmp_path, monkeypatch, capsys):
    path = wf("""
        target: "data/*.txt"
        steps:
          - $(cat "{{ file }}")
    """, files={"data/a.txt": "alpha\n"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["execute", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["final_output"] == "alpha"
