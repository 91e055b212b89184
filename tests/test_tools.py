"""Roast's tools for models, confined to the workflow's working directory: every call goes through
`run_tool`/`run_call` on real files and real processes in a temporary root."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from roast.errors import UsageError
from roast.tool_calls import run_call, run_tool, secret_variable
from roast.tools import ToolSpec, check_tools, function_definitions, parse_tools

ALL = ["Roast::Tools::ReadFile", "Roast::Tools::SearchFile", "Roast::Tools::Grep", "Roast::Tools::Cmd",
       "Roast::Tools::WriteFile"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return (tmp_path / "root").resolve()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the root holding a secret that no tool may reach."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("needle TOP SECRET\n")
    return (tmp_path / "outside").resolve()


def tool(spec: object, function: str) -> ToolSpec:
    [found] = [t for t in parse_tools(spec) if t.function == function]
    return found


def call(root: Path, spec: object, function: str, max_bytes: int = 65536, **arguments: object) -> str:
    return run_tool(tool(spec, function), json.dumps(arguments), root=root, max_bytes=max_bytes)


def read(root: Path, path: str) -> str:
    return call(root, ["Roast::Tools::ReadFile"], "read_file", path=path)


def write(root: Path, path: str, content: str = "x\n", spec: object = ("Roast::Tools::WriteFile",)) -> str:
    return call(root, list(spec), "write_file", path=path, content=content)


def cmd(root: Path, function: str, args: object = None, config: object = None, **kw: object) -> str:
    spec = [{"Roast::Tools::Cmd": config}] if config is not None else ["Roast::Tools::Cmd"]
    arguments = {"args": args, **kw} if args is not None else kw
    return call(root, spec, function, **arguments)


# -- parse_tools / check_tools / function_definitions


def test_every_roast_tool_parses_with_roasts_function_names():
    names = [t.function for t in parse_tools(ALL)]
    assert names == ["read_file", "search_for_file", "grep", "pwd", "find", "ls", "rake", "ruby", "dev",
                     "mkdir", "write_file"]
    assert {t.name for t in parse_tools(ALL)} == set(ALL)
    assert parse_tools(None) == () and check_tools(ALL) == []


def test_cmd_and_write_file_take_their_roast_configuration():
    make = {"name": "make", "description": "Build it."}
    spec = [{"Roast::Tools::Cmd": {"allowed_commands": ["git", make]}},
            {"Roast::Tools::WriteFile": {"allowed_paths": ["out/**", "notes.md"]}}]
    tools = parse_tools(spec)
    assert [t.function for t in tools] == ["git", "make", "write_file"]
    assert tools[2].paths == ("out/**", "notes.md")
    assert function_definitions(tools)[1]["function"]["description"] == "Build it."


def test_an_unknown_tool_name_is_refused_with_a_did_you_mean():
    with pytest.raises(UsageError) as caught:
        parse_tools(["Roast::Tools::ReadFiel"])
    assert "'Roast::Tools::ReadFiel'" in str(caught.value)
    assert "did you mean 'Roast::Tools::ReadFile'" in str(caught.value)


def test_every_problem_is_listed_at_once():
    spec = ["Roast::Tools::Grepp", "Roast::Tools::Bash", {"Roast::Tools::Cmd": {"allowed_command": ["ls"]}},
            {"Roast::Tools::WriteFile": {"allowed_paths": ["../elsewhere/**", "/etc/x"]}},
            {"Roast::Tools::ReadFile": {"max": 1}}, 42, {"a": 1, "b": 2}]
    problems = check_tools(spec)
    text = "\n".join(problems)
    assert len(problems) == 8, problems
    assert "tools[0]" in text and "did you mean 'Roast::Tools::Grep'" in text
    assert "Roast::Tools::Bash" in text and "not provided" in text
    assert "did you mean 'allowed_commands'" in text
    assert "'../elsewhere/**'" in text and "'/etc/x'" in text
    assert "takes no configuration" in text and "tools[5]" in text and "tools[6]" in text
    with pytest.raises(UsageError) as caught:
        parse_tools(spec)
    assert all(p in str(caught.value) for p in problems)


@pytest.mark.parametrize("config, expected", [
    ({"allowed_commands": "ls"}, "a list"),
    ({"allowed_commands": ["/bin/sh"]}, "bare command name"),
    ({"allowed_commands": ["../bin/sh"]}, "bare command name"),
    ({"allowed_commands": ["ls -la"]}, "bare command name"),
    ({"allowed_commands": [{"description": "no name"}]}, "name"),
    ({"allowed_commands": ["ls", "ls"]}, "twice"),
    ("ls", "mapping"),
])
def test_bad_cmd_configuration_is_refused(config, expected):
    problems = check_tools([{"Roast::Tools::Cmd": config}])
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_function_offered_twice_is_refused():
    problems = check_tools(["Roast::Tools::Grep", {"Roast::Tools::Cmd": {"allowed_commands": ["grep"]}}])
    assert len(problems) == 1 and "'grep'" in problems[0], problems
    assert "listed twice" in check_tools(["Roast::Tools::Grep", "Roast::Tools::Grep"])[0]


def test_a_tools_value_that_is_not_a_list_is_refused():
    assert "a list" in check_tools("Roast::Tools::Grep")[0]


def test_function_definitions_are_openai_function_tools_with_json_schema():
    definitions = function_definitions(parse_tools(ALL))
    assert json.loads(json.dumps(definitions)) == definitions
    by_name = {d["function"]["name"]: d for d in definitions}
    assert all(d["type"] == "function" and d["function"]["description"] for d in definitions)
    read_file = by_name["read_file"]["function"]["parameters"]
    assert read_file["type"] == "object" and read_file["required"] == ["path"]
    assert set(read_file["properties"]) == {"path", "max_tokens"}
    assert set(by_name["search_for_file"]["function"]["parameters"]["properties"]) == {"glob_pattern", "path"}
    assert by_name["write_file"]["function"]["parameters"]["required"] == ["path", "content"]
    assert set(by_name["ls"]["function"]["parameters"]["properties"]) == {"args", "timeout"}


# -- ReadFile


def test_read_file_returns_the_file_verbatim_as_data(root):
    text = "hello {{ output.secret }} $(touch PWNED) `touch PWNED`\n"
    (root / "a.txt").write_text(text)
    assert read(root, "a.txt") == text
    assert read(root, str(root / "a.txt")) == text  # an absolute path inside root is fine
    assert not (root / "PWNED").exists()


def test_read_file_of_a_directory_lists_its_entries(root):
    (root / "src").mkdir()
    (root / "src" / "lib").mkdir()
    (root / "src" / "main.py").write_text("print()\n")
    listing = read(root, "src")
    assert "lib/" in listing and "main.py" in listing


def test_read_file_is_bounded_and_says_what_was_cut(root):
    (root / "big.txt").write_text("x" * 10_000)
    result = call(root, ["Roast::Tools::ReadFile"], "read_file", max_bytes=500, path="big.txt")
    assert len(result.encode()) <= 500
    assert "truncated" in result and "10000 bytes" in result
    by_tokens = call(root, ["Roast::Tools::ReadFile"], "read_file", path="big.txt", max_tokens=10)
    assert len(by_tokens) < 200 and "truncated" in by_tokens


def test_read_file_errors_are_results_the_model_can_read(root):
    (root / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    assert read(root, "missing.txt").startswith("error: ")
    assert "binary" in read(root, "blob.bin")
    tools = parse_tools(["Roast::Tools::ReadFile"])
    assert run_tool(tools[0], "{not json", root=root).startswith("error: ")
    assert "path" in run_tool(tools[0], "{}", root=root)
    assert "string" in run_tool(tools[0], '{"path": 3}', root=root)
    assert "unexpected" in run_tool(tools[0], '{"path": "a", "mode": "w"}', root=root)
    assert run_tool(tools[0], "[]", root=root).startswith("error: ")


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "../outside/secret.txt",
                                  "sub/../../outside/secret.txt", "a\x00b"])
def test_read_file_refuses_paths_outside_root(root, outside, path):
    (root / "sub").mkdir()
    result = read(root, path)
    assert result.startswith("error: ") and "root:x:" not in result and "SECRET" not in result


def test_read_file_refuses_a_symlink_pointing_outside_root(root, outside):
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside)
    for path in ("link.txt", "linkdir/secret.txt", "linkdir"):
        result = read(root, path)
        assert result.startswith("error: ") and "outside" in result and "SECRET" not in result


def test_a_symlink_that_stays_inside_root_is_followed(root):
    (root / "real.txt").write_text("inside\n")
    (root / "alias.txt").symlink_to("real.txt")
    assert read(root, "alias.txt") == "inside\n"


def test_a_fifo_is_refused_or_skipped_never_waited_on(root):
    os.mkfifo(root / "pipe")
    (root / "plain.txt").write_text("needle\n")
    assert "not a regular file" in read(root, "pipe")
    assert write(root, "pipe").startswith("error: ")
    grep = call(root, ["Roast::Tools::Grep"], "grep", string="needle")
    assert grep.splitlines() == ["plain.txt", "1:needle"]
    search = call(root, ["Roast::Tools::SearchFile"], "search_for_file", glob_pattern="pip*")
    assert search.startswith("No results")


# -- WriteFile


def test_write_file_creates_parents_and_reports_lines(root):
    result = write(root, "out/deep/report.md", "one\ntwo\n")
    assert result == "Successfully wrote 2 lines to out/deep/report.md"
    assert (root / "out" / "deep" / "report.md").read_text() == "one\ntwo\n"


def test_write_file_refuses_escapes(root, outside):
    for path in ("../escaped.txt", str(root.parent / "absolute.txt"), str(outside / "new.txt"), "a\x00b"):
        assert write(root, path).startswith("error: "), path
    assert sorted(p.name for p in root.parent.iterdir()) == ["outside", "root"]
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_write_file_refuses_a_symlink_pointing_outside_root(root, outside):
    (root / "link.txt").symlink_to(outside / "secret.txt")
    assert write(root, "link.txt", "overwritten").startswith("error: ")
    assert (outside / "secret.txt").read_text() == "needle TOP SECRET\n"


def test_write_file_refuses_a_new_file_through_a_symlinked_directory(root, outside):
    (root / "linkdir").symlink_to(outside)
    for path in ("linkdir/new.txt", "linkdir/made/new.txt"):
        assert write(root, path).startswith("error: "), path
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_write_file_allowed_paths_restrict_writes_inside_root(root):
    spec = [{"Roast::Tools::WriteFile": {"allowed_paths": ["out", "*.md"]}}]
    assert write(root, "out/a/b.txt", spec=spec).startswith("Successfully wrote")
    assert write(root, "README.md", spec=spec).startswith("Successfully wrote")
    refused = write(root, "src/main.py", spec=spec)
    assert refused.startswith("error: ") and "out" in refused and "*.md" in refused
    assert not (root / "src").exists()


def test_allowed_paths_are_checked_on_the_real_path(root):
    (root / "out").mkdir()
    (root / "src").mkdir()
    (root / "out" / "to_src").symlink_to(root / "src")
    spec = [{"Roast::Tools::WriteFile": {"allowed_paths": ["out/**"]}}]
    assert write(root, "out/to_src/main.py", spec=spec).startswith("error: ")
    assert list((root / "src").iterdir()) == []


# -- SearchFile


def test_search_for_file_lists_matching_paths_relative_to_root(root):
    for rel in ("a/x_test.rb", "b/c/y_test.rb", "b/z.py", ".git/hidden_test.rb"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    result = call(root, ["Roast::Tools::SearchFile"], "search_for_file", glob_pattern="*_test.rb")
    assert result.splitlines() == ["a/x_test.rb", "b/c/y_test.rb"]
    braces = call(root, ["Roast::Tools::SearchFile"], "search_for_file", glob_pattern="*.{py,rb}", path="b")
    assert braces.splitlines() == ["b/c/y_test.rb", "b/z.py"]


def test_search_for_file_with_one_match_returns_its_contents(root):
    (root / "only.cfg").write_text("key = 1\n")
    result = call(root, ["Roast::Tools::SearchFile"], "search_for_file", glob_pattern="*.cfg")
    assert result.startswith("only.cfg") and "key = 1" in result
    none = call(root, ["Roast::Tools::SearchFile"], "search_for_file", glob_pattern="*.nothing")
    assert none.startswith("No results found")


def test_search_for_file_stays_inside_root(root, outside):
    (root / "linkdir").symlink_to(outside)
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "mine.txt").write_text("mine")
    result = call(root, ["Roast::Tools::SearchFile"], "search_for_file", glob_pattern="*.txt")
    assert result.startswith("mine.txt") and "secret" not in result and "SECRET" not in result
    for path in ("..", "/", "linkdir"):
        escaped = call(root, ["Roast::Tools::SearchFile"], "search_for_file", glob_pattern="*", path=path)
        assert escaped.startswith("error: ") and "SECRET" not in escaped, path


def test_search_for_file_is_bounded(root):
    for i in range(300):
        (root / f"f{i:03}.txt").write_text("")
    result = call(root, ["Roast::Tools::SearchFile"], "search_for_file", glob_pattern="*.txt")
    assert "f000.txt" in result and "f299.txt" not in result and "100 more" in result


# -- Grep


def test_grep_finds_a_fixed_string_with_file_and_line_number(root):
    (root / "src").mkdir()
    (root / "src" / "a.py").write_text("import x\n    Value = f(a.b(\nother\n")
    (root / "src" / "b.py").write_text("nothing\n")
    result = call(root, ["Roast::Tools::Grep"], "grep", string="f(a.b(")
    assert result.splitlines() == ["src/a.py", "2:Value = f(a.b("]
    assert "2:Value" in call(root, ["Roast::Tools::Grep"], "grep", string="VALUE")  # case-insensitive
    assert call(root, ["Roast::Tools::Grep"], "grep", string="absent").startswith("No matches")


def test_grep_skips_binary_files_hidden_directories_and_symlinks_out_of_root(root, outside):
    (root / "blob.bin").write_bytes(b"needle\x00\x01")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("needle\n")
    (root / "linkdir").symlink_to(outside)
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "plain.txt").write_text("a needle here\n")
    result = call(root, ["Roast::Tools::Grep"], "grep", string="needle")
    assert result.splitlines() == ["plain.txt", "1:a needle here"]


def test_grep_output_is_bounded(root):
    (root / "many.txt").write_text("match\n" * 1000)
    result = call(root, ["Roast::Tools::Grep"], "grep", string="match")
    assert len(result.splitlines()) <= 102 and "truncated" in result
    tiny = call(root, ["Roast::Tools::Grep"], "grep", string="match", max_bytes=300)
    assert len(tiny.encode()) <= 300 and "truncated" in tiny


# -- Cmd


def test_cmd_runs_an_allowed_command_with_roasts_result_format(root):
    (root / "sub").mkdir()
    (root / "sub" / "file.txt").write_text("")
    assert cmd(root, "ls", "sub") == "Command: ls sub\nExit status: 0\nOutput:\nfile.txt\n"
    assert cmd(root, "pwd") == f"Command: pwd\nExit status: 0\nOutput:\n{root}\n"
    assert cmd(root, "find", ". -name '*.txt'").endswith("Exit status: 0\nOutput:\n./sub/file.txt\n")


def test_cmd_reports_a_failing_command_with_its_exit_status_and_stderr(root):
    result = cmd(root, "ls", "no-such-file")
    assert result.startswith("Command: ls no-such-file\nExit status: 2\nOutput:\n")
    assert "no-such-file" in result.split("Output:")[1]  # stderr is in the output


@pytest.mark.parametrize("args", ["; touch PWNED", "&& touch PWNED", "| touch PWNED", "$(touch PWNED)",
                                  "`touch PWNED`", "> PWNED", "x\ntouch PWNED", ["; touch PWNED", "$(id)"]])
def test_shell_metacharacters_are_literal_arguments(root, args):
    result = cmd(root, "ls", args)
    assert "Exit status: 2" in result  # ls was given the text as file names, and found no such files
    assert not (root / "PWNED").exists()


def test_a_command_outside_the_allow_list_is_refused(root):
    tools = parse_tools(["Roast::Tools::Cmd"])
    result = run_call(tools, "rm", '{"args": "-rf ."}', root=root)
    assert result.startswith("error: ") and "'rm'" in result and "ls" in result and "mkdir" in result
    custom = parse_tools([{"Roast::Tools::Cmd": {"allowed_commands": ["echo"]}}])
    assert run_call(custom, "ls", "{}", root=root).startswith("error: ")
    assert "hi" in run_call(custom, "echo", '{"args": "hi"}', root=root)


def test_a_command_with_a_slash_is_refused_even_in_a_hand_made_spec(root):
    (root / "PWNED.sh").write_text("#!/bin/sh\ntouch PWNED\n")
    (root / "PWNED.sh").chmod(0o755)
    for name in ("/bin/sh", "./PWNED.sh", "../x", "sh -c"):
        result = run_tool(ToolSpec("Roast::Tools::Cmd", name), '{"args": "-c \\"touch PWNED\\""}', root=root)
        assert result.startswith("error: ") and "bare command name" in result, name
    assert not (root / "PWNED").exists()


def test_cmd_output_is_bounded(root):
    for i in range(300):
        (root / f"file-with-a-long-name-{i:05}.txt").write_text("")
    result = call(root, ["Roast::Tools::Cmd"], "ls", max_bytes=1000)
    assert len(result.encode()) <= 1000 and result.startswith("Command: ls\nExit status: 0")
    assert "truncated" in result


def test_cmd_kills_a_command_that_outlives_its_timeout(root):
    result = cmd(root, "sleep", "30", config={"allowed_commands": ["sleep"]}, timeout=1)
    assert result.startswith("error: ") and "timed out after 1 s" in result


def test_cmd_never_runs_a_program_from_a_relative_path_entry(root, monkeypatch):
    (root / "ls").write_text("#!/bin/sh\ntouch PWNED\n")  # as if the model had planted it
    (root / "ls").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([".", "bin", os.environ["PATH"]]))
    assert "Exit status: 0" in cmd(root, "ls")
    assert not (root / "PWNED").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_cmd_stops_what_a_command_left_running_in_the_background(root):
    result = cmd(root, "sh", "-c 'sleep 300 & echo $!'", config={"allowed_commands": ["sh"]})
    pid = int(result.split("Output:\n")[1])
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:  # SIGKILL is asynchronous; no timing asserted
        time.sleep(0.01)
    assert not _running(pid)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_cmd_does_not_hand_the_model_keys_to_commands(root, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-leak")
    monkeypatch.setenv("OPENROUTER_API_KEY", "or-do-not-leak")
    monkeypatch.setenv("ROAST_TEST_VISIBLE", "yes")
    result = cmd(root, "env", config={"allowed_commands": ["env"]})
    assert "ROAST_TEST_VISIBLE=yes" in result and "do-not-leak" not in result


def test_cmd_bad_arguments_are_results(root):
    assert "No closing quotation" in cmd(root, "ls", "'unbalanced")
    assert "integer" in cmd(root, "ls", "x", timeout="soon")


def test_run_call_reports_an_unknown_function_with_a_did_you_mean(root):
    result = run_call(parse_tools(ALL), "read_fil", '{"path": "a"}', root=root)
    assert result.startswith("error: ") and "did you mean 'read_file'" in result


def test_a_hand_made_spec_for_an_unknown_tool_is_a_programming_error(root):
    with pytest.raises(ValueError, match="Roast::Tools::Nope"):
        run_tool(ToolSpec("Roast::Tools::Nope", "nope"), "{}", root=root)


def test_root_must_be_a_directory(root):
    with pytest.raises(ValueError, match="directory"):
        run_tool(tool(["Roast::Tools::ReadFile"], "read_file"), '{"path": "a"}', root=root / "nope")


# -- roast's own files and secrets (issue 21)


def test_a_hard_link_to_the_key_file_is_refused_like_the_key_itself(root, tmp_path, monkeypatch):
    key = tmp_path / "roast.key"
    key.write_text("KEY-TEXT-1234\n")
    monkeypatch.setenv("ROAST_KEY_FILE", str(key))
    os.link(key, root / "innocent.txt")
    result = read(root, "innocent.txt")
    assert result.startswith("error: refused: ") and "KEY-TEXT" not in result
    assert write(root, "innocent.txt", "overwritten").startswith("error: refused: ")
    assert key.read_text() == "KEY-TEXT-1234\n"
    assert call(root, ["Roast::Tools::Grep"], "grep", string="KEY-TEXT").startswith("No matches")


def test_the_sqlite_store_named_by_roast_store_is_refused_with_its_companions(root, monkeypatch):
    monkeypatch.setenv("ROAST_STORE", f"sqlite:///{root}/db/roast.db")
    (root / "db").mkdir()
    for name in ("roast.db", "roast.db-wal", "secret.key", "other.txt"):
        (root / "db" / name).write_text("STORE-BYTES\n")
    for name in ("roast.db", "roast.db-wal", "roast.db-shm", "secret.key"):
        assert read(root, f"db/{name}").startswith("error: refused: "), name
    assert read(root, "db/other.txt") == "STORE-BYTES\n"  # the directory itself is the user's


@pytest.mark.parametrize("name, secret", [
    ("ROAST_SERVE_TOKENS", True), ("ROAST_NOTIFY_SECRET", True), ("ROAST_WEBHOOK_SECRET", True),
    ("ROAST_GITHUB_WEBHOOK_SECRET", True), ("ROAST_KEY", True), ("ROAST_KEY_FILE", True), ("ROAST_STORE", True),
    ("PGPASSWORD", True), ("PGHOST", True), ("OPENAI_API_KEY", True), ("GITHUB_TOKEN", True),
    ("AWS_SECRET_ACCESS_KEY", True), ("DB_PASSWORD", True), ("DATABASE_URL", True), ("CUSTOM_THING", True),
    ("PATH", False), ("HOME", False), ("LANG", False), ("ROAST_HOME", False), ("MONKEY", False),
    ("TOKENIZER_MODE", False), ("ROAST_PUBLIC_URL", False), ("OTHER_THING", True), ("ANOTHER_THING", False),
])
def test_which_environment_variables_a_command_never_sees(name, secret):
    assert secret_variable(name, "CUSTOM_THING, OTHER_*") is secret
