"""roast.workflow: finding, safely parsing and loading workflows; step files; fingerprints."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from roast import yaml_lines
from roast.errors import UsageError, WorkflowInvalid
from roast.workflow import Map, Seq, Str, line_of, load, locate, parse

ROOT = Path(__file__).resolve().parent.parent


def refusal(exc_type: type[Exception], call, *args, **kwargs) -> Exception:
    """Run `call`, expect `exc_type` with exit code 2, and return the error."""
    with pytest.raises(exc_type) as info:
        call(*args, **kwargs)
    assert info.value.exit_code == 2
    return info.value


# --- locate ---------------------------------------------------------------------------------

def test_locate_accepts_the_path_of_a_workflow_file(wf, tmp_path):
    path = wf("steps: ['$(echo hi)']")
    assert locate(path) == path.resolve()
    assert locate("wf/workflow.yml", cwd=tmp_path) == path.resolve()


def test_locate_turns_a_directory_into_its_workflow_yml(wf, tmp_path):
    path = wf("steps: ['$(echo hi)']")
    assert locate("wf", cwd=tmp_path) == path.resolve()
    assert locate(tmp_path / "wf") == path.resolve()


def test_locate_finds_a_bare_name_under_roast_in_the_cwd(wf, tmp_path):
    path = wf("steps: ['$(echo hi)']", name="roast/deploy")
    found = locate("deploy", cwd=tmp_path)
    assert found == path.resolve() and found.is_absolute()


def test_locate_lists_the_paths_it_tried_when_nothing_matches(tmp_path):
    err = refusal(UsageError, locate, "deploy", cwd=tmp_path)
    assert "workflow 'deploy' not found" in str(err)
    assert "deploy/workflow.yml" in str(err)
    assert os.path.join("roast", "deploy", "workflow.yml") in str(err)
    assert err.hint


def test_locate_refuses_a_directory_without_a_workflow_yml(tmp_path):
    (tmp_path / "empty").mkdir()
    err = refusal(UsageError, locate, "empty", cwd=tmp_path)
    assert "no workflow.yml" in str(err)


# --- line numbers and value types -------------------------------------------------------------

def test_parsed_values_remember_their_lines():
    data = parse("name: demo\nsteps:\n  - $(echo hi)\n  - summarize\nsummarize:\n  model: gpt\n",
                 "wf.yml")
    assert isinstance(data, Map) and data.line == 1
    assert data.key_lines == {"name": 1, "steps": 2, "summarize": 5}
    assert isinstance(data["steps"], Seq) and data["steps"].line == 3
    assert isinstance(data["steps"][1], Str) and line_of(data["steps"][1]) == 4
    assert data["summarize"].line == 6 and data["summarize"] == {"model": "gpt"}
    assert line_of(42) is None and line_of("plain") is None


def test_sexagesimal_timeout_stays_the_string_it_was_written_as():
    data = parse("timeout: 1:30\nother: 90\nfloaty: 1:30.5\n", "wf.yml")
    assert data["timeout"] == "1:30" and isinstance(data["timeout"], Str)
    assert data["timeout"].line == 1
    assert data["other"] == 90 and type(data["other"]) is int
    assert isinstance(data["floaty"], Str)


def test_dates_stay_strings_instead_of_becoming_datetime_objects():
    data = parse("when: 2024-01-02\n", "wf.yml")
    assert data["when"] == "2024-01-02" and isinstance(data["when"], Str)


def test_merge_keys_override_without_counting_as_duplicates():
    data = parse("base: &b {model: a, json: true}\nstep:\n  <<: *b\n  model: b\n", "wf.yml")
    assert data["step"] == {"model": "b", "json": True}
    assert data["step"].key_lines["model"] == 4


def test_map_seq_and_str_survive_pickle_and_cloudpickle():
    cloudpickle = pytest.importorskip("cloudpickle")
    data = parse("steps:\n  - a\n  - {b: c}\n", "wf.yml")
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)):
        for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
            back = loads(dumps(data, protocol=protocol))
            assert back == data and isinstance(back, Map)
            assert back.line == 1 and back.key_lines == {"steps": 1}
            assert isinstance(back["steps"], Seq) and back["steps"].line == 2
            assert isinstance(back["steps"][0], Str) and back["steps"][0].line == 2
            assert back["steps"][1].line == 3 and back["steps"][1].key_lines == {"b": 3}


def test_map_seq_and_str_pickled_under_their_old_module_still_load():
    """Sessions saved before roast.yaml_lines existed name the classes `roast.workflow.Map` etc."""
    data = parse("steps:\n  - a\n  - {b: c}\n", "wf.yml")
    new = pickle.dumps(data, protocol=0)
    assert b"roast.yaml_lines\n" in new
    back = pickle.loads(new.replace(b"roast.yaml_lines\n", b"roast.workflow\n"))
    assert back == data and isinstance(back, Map) and back.key_lines == {"steps": 1}
    assert isinstance(back["steps"], Seq) and back["steps"].line == 2
    assert isinstance(back["steps"][0], Str) and back["steps"][0].line == 2


# --- hostile input --------------------------------------------------------------------------

def test_duplicate_keys_are_refused_naming_both_lines():
    err = refusal(WorkflowInvalid, parse, "steps: [a]\nx:\n  model: a\n  json: true\n  model: b\n",
                  "wf.yml")
    assert "duplicate key 'model' (first at line 3, again at line 5)" in str(err)
    assert err.where == "wf.yml:5"


def test_duplicate_top_level_keys_in_one_workflow_file_are_refused(wf, tmp_path):
    wf("steps: [a]\nmodel: x\nmodel: y\n")
    err = refusal(WorkflowInvalid, load, "wf", cwd=tmp_path)
    assert err.where == os.path.join("wf", "workflow.yml") + ":3"
    assert "first at line 2, again at line 3" in str(err)


def test_a_file_over_one_mebibyte_is_refused_before_parsing(wf, tmp_path):
    big = "steps: [a]\n" + "# padding\n" * 110_000
    wf(big)
    err = refusal(WorkflowInvalid, load, "wf", cwd=tmp_path)
    assert "larger than 1 MiB" in str(err)
    assert "larger than 1 MiB" in str(refusal(WorkflowInvalid, parse, big, "wf.yml"))


def test_nesting_101_levels_deep_is_refused_and_100_is_accepted():
    assert parse("[" * 100 + "]" * 100, "wf.yml") is not None
    err = refusal(WorkflowInvalid, parse, "[" * 101 + "]" * 101, "wf.yml")
    assert "deeper than 100 levels" in str(err) and err.where == "wf.yml:1"
    block = "".join("  " * i + "a:\n" for i in range(101)) + "  " * 101 + "x\n"
    assert refusal(WorkflowInvalid, parse, block, "wf.yml").where == "wf.yml:101"


def test_a_million_open_brackets_are_refused_in_a_real_process_without_crashing():
    code = ("from roast.workflow import parse\n"
            "try:\n    parse('[' * 1_000_000, 'deep.yml')\n"
            "except Exception as err:\n    print(type(err).__name__, err)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("WorkflowInvalid deep.yml:1: the document nests deeper")


def test_nesting_through_aliases_counts_toward_the_depth_limit():
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 101)]
    err = refusal(WorkflowInvalid, parse, "\n".join(lines) + "\n", "wf.yml")
    assert "deeper than 100 levels through aliases" in str(err)


def test_a_billion_laughs_document_is_refused_as_a_yaml_bomb():
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    err = refusal(WorkflowInvalid, parse, "\n".join(lines) + "\n", "wf.yml")
    assert "expands to more than 100,000 nodes through aliases (a YAML bomb?)" in str(err)
    assert err.where == "wf.yml:6"   # the first node over budget: 9**5 + ... > 100,000


def test_a_recursive_alias_is_refused():
    err = refusal(WorkflowInvalid, parse, "steps: [a]\nloop: &a [*a]\n", "wf.yml")
    assert "recursive alias" in str(err) and err.where == "wf.yml:2"


def test_python_tags_are_refused_by_the_safe_loader():
    err = refusal(WorkflowInvalid, parse, "steps: !!python/object/apply:os.system ['touch x']\n",
                  "wf.yml")
    assert "'!!python/object/apply:os.system' is not allowed" in str(err)
    assert err.where == "wf.yml:1"


def test_invalid_yaml_reports_the_line_and_column():
    err = refusal(WorkflowInvalid, parse, "steps:\n  - a\n  b: c\n", "wf.yml")
    assert err.where == "wf.yml:3" and "invalid YAML at column" in str(err)


def test_a_file_that_is_not_utf8_is_refused_with_its_line(wf, tmp_path):
    path = wf("steps: [a]\n")
    path.write_bytes(b"steps:\n  - a\n  - \xff\xfe\n")
    err = refusal(WorkflowInvalid, load, "wf", cwd=tmp_path)
    assert "not valid UTF-8 (byte 0xff)" in str(err)
    assert err.where == os.path.join("wf", "workflow.yml") + ":3"


def _shape(value):
    """A parsed value with every line it remembers, to compare two parses exactly."""
    if isinstance(value, Map):
        return ("map", value.line, sorted(value.key_lines.items(), key=repr),
                [(_shape(k), _shape(v)) for k, v in value.items()])
    if isinstance(value, Seq):
        return ("seq", value.line, [_shape(v) for v in value])
    if isinstance(value, Str):
        return ("str", value.line, str(value))
    return (type(value).__name__, value)


# the project's examples, and Roast's own workflows when ../shared is beside the checkout (as in CI)
YAML_CORPUS = sorted([*(ROOT / "examples").rglob("*.yml"), *(ROOT.parent / "shared" / "roast-examples").rglob("*.yml")])


def test_libyaml_and_the_pure_parser_build_the_same_values_and_lines():
    # issue 25: libyaml parses when PyYAML has it; it must build what the pure parser builds
    loaders = yaml_lines._loaders()
    if len(loaders) < 2:
        pytest.skip("this PyYAML has no libyaml")
    fast, pure = loaders
    texts = [p.read_text() for p in YAML_CORPUS]
    texts += ["a: &x {k: [1, 2.5, '1:30', 1:30, 2024-01-01, ~, yes]}\nb: *x\nc:\n  <<: *x\n  d: |\n    two\n    lines\n"]
    assert len(texts) > len(list((ROOT / "examples").rglob("*.yml")))  # the examples and the inline one at least

    def outcome(loader, text):
        try:
            return _shape(yaml_lines._build(loader, text, [(1, "wf.yml")]))
        except Exception:  # noqa: BLE001 - a few need their shared.yml, or are broken on purpose
            return "refused"

    built = [outcome(pure, text) for text in texts]
    assert built.count("refused") < 5
    assert [outcome(fast, text) for text in texts] == built


@pytest.mark.parametrize("text", ["steps:\n  - a\n - b\n", "steps: [a\n", "a: 1\na: 2\n", "x: !!python/object:os.system []\n",
                                  "steps:\n\t- a\n", "a: *missing\n"])
def test_an_error_libyaml_finds_is_worded_by_the_pure_parser(monkeypatch, text):
    pure = yaml_lines._loaders()[-1]
    with pytest.raises(WorkflowInvalid) as both:
        parse(text, "wf.yml")
    monkeypatch.setattr(yaml_lines, "_loaders", lambda: (pure,))
    with pytest.raises(WorkflowInvalid) as alone:
        parse(text, "wf.yml")
    assert (str(both.value), both.value.where) == (str(alone.value), alone.value.where)


@pytest.mark.parametrize("exc", [OverflowError("int too large"), IndexError("list index"),
                                 RecursionError("maximum recursion depth exceeded")])
def test_a_crash_inside_the_loader_becomes_cannot_parse(monkeypatch, exc):
    def explode(self):
        raise exc
    for loader in yaml_lines._loaders():  # libyaml's, then the pure one
        monkeypatch.setattr(loader, "get_single_node", explode)
    err = refusal(WorkflowInvalid, parse, "steps: [a]\n", "wf.yml")
    assert str(err).startswith("wf.yml: cannot parse")


# --- load -----------------------------------------------------------------------------------

def test_load_reads_name_steps_and_paths(wf, tmp_path):
    path = wf("steps:\n  - $(echo hi)\n")
    loaded = load("wf", cwd=tmp_path)
    assert loaded.path == path.resolve() and loaded.directory == path.resolve().parent
    assert loaded.name == "wf" and loaded.shared_path is None
    assert loaded.steps == ["$(echo hi)"]
    assert loaded.where(loaded.steps[0]) == os.path.join("wf", "workflow.yml") + ":2"
    wf("name: deploy-prod\nsteps: [a]\n")
    assert load("wf", cwd=tmp_path).name == "deploy-prod"


def test_shared_yml_anchors_are_usable_and_where_names_the_right_file(wf, tmp_path):
    (tmp_path / "shared.yml").write_text("defaults: &defaults\n  model: gpt-4o\n  json: true\n"
                                         "model: shared-model\n")
    path = wf("model: own-model\nsteps:\n  - summarize\nsummarize:\n  <<: *defaults\n"
              "  json: false\n")
    loaded = load("wf", cwd=tmp_path)
    assert loaded.shared_path == (tmp_path / "shared.yml").resolve()
    assert loaded.config_for("summarize") == {"model": "gpt-4o", "json": False}
    assert loaded.data["model"] == "own-model"          # the workflow's key wins
    shown = os.path.join("wf", "workflow.yml")
    assert loaded.where(loaded.steps) == f"{shown}:3"
    assert loaded.where(loaded.steps[0]) == f"{shown}:3"
    assert loaded.where(loaded.data["defaults"]) == "shared.yml:1"   # the anchor's line
    assert loaded.where(loaded.data["summarize"]["model"]) == "shared.yml:2"
    assert loaded.where(loaded.data.key_lines["summarize"]) == f"{shown}:4"
    assert loaded.where(None) == shown
    assert loaded.text == path.read_text()


def test_errors_after_shared_yml_name_the_workflow_file_and_its_own_lines(wf, tmp_path):
    (tmp_path / "shared.yml").write_text("---\na: 1\nb: 2\n")
    wf("---\nsteps: [a]\nx: 1\nx: 2\n")
    err = refusal(WorkflowInvalid, load, "wf", cwd=tmp_path)
    assert err.where == os.path.join("wf", "workflow.yml") + ":4"
    assert "first at line 3, again at line 4" in str(err)
    (tmp_path / "shared.yml").write_text("a: 1\na: 2\n")
    wf("steps: [a]\n")
    assert refusal(WorkflowInvalid, load, "wf", cwd=tmp_path).where == "shared.yml:2"


def test_a_workflow_that_is_not_a_mapping_is_refused(wf, tmp_path):
    for text in ("- $(echo hi)\n", "", "just text\n"):
        wf(text)
        err = refusal(WorkflowInvalid, load, "wf", cwd=tmp_path)
        assert "workflow.yml must be a mapping with a `steps:` list" in str(err)
        assert "steps:" in err.hint


@pytest.mark.parametrize("text, message, line", [
    ("name: x\n", "no `steps:` list", None),
    ("name: x\nsteps: []\n", "`steps:` is empty", 2),
    ("name: x\nsteps:\n", "must be a list of steps (it is empty)", 2),
    ("steps:\n  a: b\n", "must be a list of steps (it is a mapping)", 1),
    ("steps: $(echo hi)\n", "must be a list of steps (it is a string)", 1),
])
def test_missing_empty_or_non_list_steps_are_refused(wf, tmp_path, text, message, line):
    wf(text)
    err = refusal(WorkflowInvalid, load, "wf", cwd=tmp_path)
    assert message in str(err)
    shown = os.path.join("wf", "workflow.yml")
    assert err.where == (f"{shown}:{line}" if line else shown)
    assert "steps:" in err.hint


# --- step files -----------------------------------------------------------------------------

def test_find_step_prefers_a_prompt_then_python_then_shell(wf, tmp_path):
    wf("steps: [both, script]\n", files={"both/prompt.md": "Summarize {{ x }}",
                                         "both.py": "def main(ctx): pass\n",
                                         "script.py": "print(1)\n", "script.sh": "echo 1\n",
                                         "only.sh": "echo only\n"})
    loaded = load("wf", cwd=tmp_path)
    both = loaded.find_step("both")
    assert both.kind == "prompt" and both.text == "Summarize {{ x }}"
    assert both.output_template is None
    assert loaded.find_step("script").kind == "python"
    only = loaded.find_step("only")
    assert only.kind == "shell" and only.text == "echo only\n"
    assert only.path == loaded.directory / "only.sh"
    assert loaded.find_step("missing") is None


def test_find_step_reads_output_txt_beside_a_prompt(wf, tmp_path):
    wf("steps: [summarize]\n", files={"summarize/prompt.md": "Say hi",
                                      "summarize/output.txt": "Result: {{ response }}"})
    step = load("wf", cwd=tmp_path).find_step("summarize")
    assert step.kind == "prompt" and step.output_template == "Result: {{ response }}"


def test_find_step_looks_in_search_path_then_in_shared_beside_the_workflow(wf, tmp_path):
    wf("steps: [a, b]\n", files={"lib/a.py": "A\n", "a.py": "top\n", "b.sh": "own b\n"})
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "b.py").write_text("shared b\n")
    (tmp_path / "shared" / "c.sh").write_text("shared c\n")
    loaded = load("wf", cwd=tmp_path)
    assert loaded.find_step("a", search_path="lib").text == "A\n"
    assert loaded.find_step("a").text == "top\n"
    assert loaded.find_step("b").text == "own b\n"
    assert loaded.find_step("c").path == tmp_path / "shared" / "c.sh"


@pytest.mark.parametrize("name", ["../evil", "..", "a/b", "/etc/passwd", "a\\b", "", "x\0y"])
def test_find_step_refuses_names_that_could_leave_the_directory(wf, tmp_path, name):
    wf("steps: [a]\n", files={"a.py": "x\n"})
    (tmp_path / "evil.py").write_text("evil\n")
    assert load("wf", cwd=tmp_path).find_step(name) is None


def test_step_candidates_lists_the_steps_on_disk(wf, tmp_path):
    wf("steps: [a]\n", files={"notify_team.py": "", "summarize/prompt.md": "", "build.sh": "",
                              "notes/readme.md": ""})
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "common.py").write_text("")
    assert load("wf", cwd=tmp_path).step_candidates() == ["build", "common", "notify_team",
                                                          "summarize"]


def test_config_for_returns_only_mappings(wf, tmp_path):
    wf("steps: [a, b]\na:\n  model: x\nb: just text\n")
    loaded = load("wf", cwd=tmp_path)
    assert loaded.config_for("a") == {"model": "x"} and loaded.config_for("a").line == 3
    assert loaded.config_for("b") is None and loaded.config_for("zzz") is None


def test_fingerprint_changes_when_a_step_file_changes_and_not_otherwise(wf, tmp_path):
    files = {"greet.py": "def main(ctx):\n    return 'hi'\n", "unused.sh": "echo 1\n"}
    wf("steps: [greet]\n", files=files)

    def fingerprint() -> str:
        loaded = load("wf", cwd=tmp_path)
        assert loaded.find_step("greet") is not None
        return loaded.fingerprint()

    first = fingerprint()
    assert fingerprint() == first
    (tmp_path / "wf" / "unused.sh").write_text("echo 2\n")   # never looked up: no change
    assert fingerprint() == first
    (tmp_path / "wf" / "greet.py").write_text("def main(ctx):\n    return 'bye'\n")
    changed = fingerprint()
    assert changed != first
    (tmp_path / "wf" / "workflow.yml").write_text("steps: [greet]  # comment\n")
    assert fingerprint() != changed
    assert len(changed) == 64 and int(changed, 16) >= 0


def test_running_a_workflow_parses_its_yaml_once_even_to_read_its_target(tmp_path, monkeypatch):
    """Issue 25: `roast.run` read `target:` by loading the workflow a second time (the YAML parsed twice
    per execute); the parse it makes for `target:` is the one it compiles. A changed file is parsed again."""
    import roast
    from roast import workflow as workflow_mod

    (tmp_path / "workflow.yml").write_text("name: once\ntarget: a.txt\nsteps:\n  - $(echo {{ workflow.target }})\n")
    parses = []
    real = workflow_mod.parse
    monkeypatch.setattr(workflow_mod, "parse", lambda *a, **k: parses.append(1) or real(*a, **k))
    result = roast.run(tmp_path / "workflow.yml")
    assert result.status == "completed" and len(parses) == 1
    (tmp_path / "workflow.yml").write_text("name: once\ntarget: b.txt\nsteps:\n  - $(echo {{ workflow.target }})\n")
    again = roast.run(tmp_path / "workflow.yml")
    assert len(parses) == 2 and again.final_output.strip().endswith("b.txt")


def _checkout(root, text):  # type: ignore[no-untyped-def]
    (root / "proj").mkdir(parents=True)
    (root / "proj" / "workflow.yml").write_text(text)
    return root / "proj" / "workflow.yml"


GATE_TWICE = """name: twins
steps:
  - wait_for_event:
      go: ["$(echo went)"]
  - $(echo after)
"""


def test_two_checkouts_of_one_workflow_each_check_their_own_files(tmp_path, monkeypatch):
    """The definition is kept once per content (fingerprint), with the first checkout's paths. A
    session of a second checkout with the same content is checked against ITS files: an edit there
    after the wait is used (it was ignored while the first checkout was unchanged), and with the
    first checkout gone its resume does not parse the YAML again (it did, at every resume)."""
    import shutil

    import roast
    from roast import workflow as workflow_mod

    first = _checkout(tmp_path / "a", GATE_TWICE)
    second = _checkout(tmp_path / "b", GATE_TWICE)
    waiting = [roast.run(first), roast.run(second), roast.run(second)]
    assert [r.status for r in waiting] == ["waiting"] * 3
    parses = []
    real = workflow_mod.parse
    monkeypatch.setattr(workflow_mod, "parse", lambda *a, **k: parses.append(1) or real(*a, **k))

    shutil.rmtree(tmp_path / "a")  # the first checkout, whose paths the saved definition names
    done = roast.resume("go", session_id=waiting[1].session_id)
    assert done.status == "completed" and parses == [], parses  # its own files are unchanged: no parse

    _checkout(tmp_path / "a", GATE_TWICE)  # the first checkout back, unchanged; the second one edited
    second.write_text(GATE_TWICE.replace("echo after", "echo edited"))  # after the wait: the new one is used
    edited = roast.resume("go", session_id=waiting[2].session_id)
    assert edited.status == "completed" and "edited" in (edited.final_output or ""), edited
