"""Expressions, truthiness, durations, event data and shell-safe interpolation."""
from __future__ import annotations

import json
import math
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roast.errors import BadEventData, StepFailed, UsageError
from roast.expressions import (
    TEMPLATE,
    DotDict,
    evaluate,
    has_template,
    parse_duration,
    parse_event_data,
    render,
    render_value,
    to_text,
    truthy,
    wrap,
)
from roast.shell import render_shell, shell_template_problems


def sh(line: str, env: dict[str, str], cwd: Path | None = None) -> str:
    proc = subprocess.run(["/bin/sh", "-c", line], env={**os.environ, **env}, cwd=cwd, check=False,
                          capture_output=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode("utf-8", "surrogateescape")


def run_template(template: str, value: str, cwd: Path | None = None) -> str:
    line, env = render_shell(template, {"v": value})
    return sh(line, env, cwd)


# --------------------------------------------------------------------------- DotDict


def test_dotdict_reads_keys_as_attributes_and_wraps_nested_dicts_and_lists():
    d = wrap({"pr": {"author": {"login": "ana"}, "labels": [{"name": "ok"}]}, "n": 3})
    assert isinstance(d, DotDict)
    assert d.pr.author.login == "ana"
    assert d["pr"]["author"].login == "ana"
    assert d.pr.labels[0].name == "ok"
    assert d.get("pr").author.login == "ana"
    assert d.n == 3 and d == {"pr": d["pr"], "n": 3}


def test_plain_turns_dotdicts_whose_keys_shadow_dict_methods_into_json_data():
    import json
    from roast.expressions import plain

    data = DotDict({"items": "x", "keys": ["k"], "get": {"values": (1, 2)}})
    with pytest.raises(TypeError):
        json.dumps(data)            # the encoder asks for .items() and gets the data's own key
    assert json.loads(json.dumps(plain(data))) == {"items": "x", "keys": ["k"], "get": {"values": [1, 2]}}
    assert type(plain(data)) is dict


def test_dotdict_missing_attribute_names_the_key_and_the_known_keys():
    with pytest.raises(AttributeError, match=r"no key 'approvr' \(known: approver, at\)"):
        _ = DotDict(approver="ana", at=1).approvr


def test_dotdict_survives_pickle_and_cloudpickle():
    d = DotDict({"a": {"b": [1, {"c": 2}]}})
    for module in (pickle, cloudpickle):
        back = module.loads(module.dumps(d))
        assert type(back) is DotDict and back == d and back.a.b[1].c == 2


def test_dotdict_serialises_as_plain_json():
    assert json.loads(json.dumps(DotDict(a=DotDict(b=1)))) == {"a": {"b": 1}}


# --------------------------------------------------------------------------- evaluate


def test_evaluate_sees_outputs_with_attribute_access_and_loop_variables():
    ns = {"output": {"build": {"status": "green"}, "files": ["a.py", "b.py"]}, "file": "b.py"}
    assert evaluate(" output.build.status ", ns) == "green"
    assert evaluate("output['files'].index(file)", ns) == 1
    assert evaluate("[f.upper() for f in output.files if f != file]", ns) == ["A.PY"]
    assert evaluate("len(sorted(output.files)) + max(1, 2)", ns) == 4


@pytest.mark.parametrize("expr", ["__import__('os')", "open('/etc/passwd')", "eval('1')",
                                  "getattr(1, 'real')", "compile('1', 'x', 'eval')"])
def test_evaluate_refuses_builtins_outside_the_whitelist(expr):
    with pytest.raises(StepFailed) as info:
        evaluate(expr, {"output": {}})
    assert f"cannot evaluate {{{{ {expr} }}}}: NameError" in str(info.value)
    assert isinstance(info.value.__cause__, NameError)


@pytest.mark.parametrize("expr, kind", [
    ("output.missing", "AttributeError: no key 'missing'"),
    ("output['missing']", "KeyError"),
    ("1 +", "SyntaxError"),
    ("1 / 0", "ZeroDivisionError"),
    ("undefined_name", "NameError: name 'undefined_name' is not defined"),
])
def test_evaluate_failures_become_step_errors_naming_the_expression(expr, kind):
    with pytest.raises(StepFailed, match=r"cannot evaluate \{\{ ") as info:
        evaluate(expr, {"output": {"present": 1}})
    assert expr in str(info.value) and kind in str(info.value)
    assert info.value.__cause__ is not None


# --------------------------------------------------------------------------- templates


def test_render_replaces_every_placeholder_in_one_pass():
    ns = {"v": "{{ 1+1 }}", "n": 2}
    assert render("a {{ v }} b {{n * 2}}", ns) == "a {{ 1+1 }} b 4"


def test_render_value_returns_the_object_when_the_text_is_one_placeholder():
    ns = {"xs": [1, 2], "a": 1}
    assert render_value("  {{ xs }} ", ns) == [1, 2]
    assert render_value("{{ a }} and {{ a }}", ns) == "1 and 1"
    assert render_value("items: {{ xs }}", ns) == "items: [1, 2]"


def test_has_template_and_the_pattern_span_lines():
    assert has_template("x {{ a\n + b }} y") and not has_template("{ a }")
    assert [m.group(1) for m in TEMPLATE.finditer("{{a}}{{ b }}")] == ["a", " b "]


@pytest.mark.parametrize("value, text", [
    (None, ""), (True, "true"), (False, "false"), ("é", "é"), (3, "3"), (1.5, "1.5"),
    ({"a": "é"}, '{"a": "é"}'), ([1, None], "[1, null]"), ((1, 2), "[1, 2]"),
    ({"p": Path("/x")}, '{"p": "/x"}'),
])
def test_to_text(value, text):
    assert to_text(value) == text


@pytest.mark.parametrize("value, expected", [
    (None, False), (False, False), ("", False), ("false", False), (" FALSE\n", False),
    ("no", True), ("0", True), ("true", True), ("x", True), (True, True),
    (0, False), (1, True), ([], False), ([0], True), ({}, False),
])
def test_truthy(value, expected):
    assert truthy(value) is expected


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize("value, seconds", [
    ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1.5h", 5400), ("0.5s", 0.5),
    ("365d", 365 * 86400), (90, 90), (0.25, 0.25), (31_536_000, 31_536_000),
    ("1h30m", 5400), ("2d12h", 216_000), ("1w", 604_800), ("52w1d", 365 * 86400), ("1m30s", 90),
])
def test_parse_duration_accepts(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [
    0, -5, 0.0, "0s", "-5s", "", "30m1h", "1h1h", "1h 30m", "53w", "2 h", "1e3", "1:30", "30", "30S", " 30s", "30s\n",
    "366d", 31_536_001, 10**400, math.nan, math.inf, "inf", "nan", None, [30], "٣s",
])
def test_parse_duration_refuses(value):
    with pytest.raises(UsageError) as info:
        parse_duration(value)
    assert f"timeout {value!r} must be a positive duration like 30s, 15m, 2h, 1h30m, 1d or 1w" in str(info.value)


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_refuses_booleans_with_a_yaml_hint(value):
    with pytest.raises(UsageError) as info:
        parse_duration(value)
    assert "YAML reads on/off/yes/no" in str(info.value) and "quote the value" in str(info.value)


def test_parse_duration_hints_at_units_for_sexagesimal_and_misordered_compound_values():
    for value in ("1:30", "30m1h", "1h 30m"):
        with pytest.raises(UsageError) as info:
            parse_duration(value)
        assert info.value.hint and "1h30m" in info.value.hint


# --------------------------------------------------------------------------- event data


def test_parse_event_data_reads_an_object_from_text_or_bytes():
    assert parse_event_data('{"approver": "ana", "n": [1, 2.5, null]}') == {
        "approver": "ana", "n": [1, 2.5, None]}
    assert parse_event_data(b'{"emoji": "\\ud83d\\ude00"}') == {"emoji": "😀"}
    assert parse_event_data(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("raw", [None, "", b""])
def test_parse_event_data_treats_nothing_as_an_empty_object(raw):
    assert parse_event_data(raw) == {}


@pytest.mark.parametrize("raw, fragments", [
    ('{"a": 1 "b": 2}', ["not valid JSON", "Expecting ',' delimiter at line 1 column 9"]),
    ("[1, 2]", ["must be a JSON object, got an array"]),
    ('"x"', ["must be a JSON object, got a string"]),
    ("3", ["must be a JSON object, got a number"]),
    ("null", ["must be a JSON object, got null"]),
    ('{"a": NaN}', ["NaN"]),
    ('{"a": Infinity}', ["Infinity"]),
    ('{"a": -Infinity}', ["-Infinity"]),
    ('{"a": 1e400}', ["1e400", "out of range"]),
    ('{"a": 1, "a": 2}', ["key 'a' more than once"]),
    ('{"x": {"b": 1, "b": 2}}', ["key 'b' more than once"]),
    ('{"a": "\\ud800"}', ["lone surrogate", "\\ud800"]),
    ('{"\\udc80": 1}', ["lone surrogate"]),
    ('{"a": "\udc80"}', ["lone surrogate"]),
    (b'{"a": "\xff"}', ["not valid UTF-8", "byte 7"]),
    pytest.param('{"a": ' + "1" * 5000 + "}", ["number that is too long"],
                 marks=pytest.mark.skipif(not hasattr(sys, "get_int_max_str_digits"),
                                          reason="Python without the int digits limit")),
    ("  ", ["not valid JSON", "line 1 column 3"]),
    ('{"a": "open', ["Unterminated string starting at line 1 column 7"]),
])
def test_parse_event_data_refuses_with_a_precise_message(raw, fragments):
    with pytest.raises(BadEventData) as info:
        parse_event_data(raw)
    text = str(info.value)
    assert all(f in text for f in fragments), text
    assert info.value.exit_code == 2
    assert """--event-data '{"approver": "ana"}'""" in text


def test_parse_event_data_allows_64_levels_and_refuses_65():
    assert parse_event_data('{"a": ' + "[" * 63 + "]" * 63 + "}")
    with pytest.raises(BadEventData, match="nested deeper than 64"):
        parse_event_data('{"a": ' + "[" * 64 + "]" * 64 + "}")


def test_parse_event_data_refuses_a_deep_bomb_without_recursing():
    with pytest.raises(BadEventData, match="nested deeper than 64"):
        parse_event_data("[" * 1_000_000)


def test_parse_event_data_ignores_brackets_inside_strings_when_counting_depth():
    brackets = "[" * 100 + '\\"{'
    assert parse_event_data(json.dumps({"s": brackets}))["s"] == brackets


def test_parse_event_data_checks_the_size_in_utf8_bytes_before_parsing():
    at_limit = '{"a": "' + "x" * (1_048_576 - 9) + '"}'
    assert len(at_limit) == 1_048_576
    assert parse_event_data(at_limit)["a"]
    over = "{" + "é" * 524_288  # 1,048,577 bytes, and not JSON: the size is refused first
    with pytest.raises(BadEventData, match=r"event data is too large \(1,048,577 bytes, limit 1,048,576\)"):
        parse_event_data(over)
    with pytest.raises(BadEventData, match="1,048,577 bytes"):
        parse_event_data(over.encode())


def test_parse_event_data_accepts_a_million_bytes():
    raw = json.dumps({"items": [{"n": i, "s": "x" * 40} for i in range(15_000)]})
    raw = raw[:-2] + " " * (1_000_000 - len(raw)) + "]}"
    assert len(raw.encode()) == 1_000_000
    assert len(parse_event_data(raw)["items"]) == 15_000


def test_parse_event_data_respects_a_smaller_limit():
    with pytest.raises(BadEventData, match=r"event data is too large \(9 bytes, limit 8\)"):
        parse_event_data('{"a": 10}', limit=8)


# --------------------------------------------------------------------------- shell


def test_render_shell_fits_each_reference_to_its_quoting_context():
    line, env = render_shell("""echo "by {{x}}" {{y}} '{{z}}'""", {"x": 1, "y": None, "z": True})
    assert line == """echo "by ${ROAST_ARG_1}" "${ROAST_ARG_2}" ''"${ROAST_ARG_3}"''"""
    assert env == {"ROAST_ARG_1": "1", "ROAST_ARG_2": "", "ROAST_ARG_3": "true"}


SAFE_TEMPLATES = [
    ("printf %s {{v}}", "{v}"),
    ('printf %s "{{v}}"', "{v}"),
    ("printf %s '{{v}}'", "{v}"),
    ('printf %s "pre {{v}} post"', "pre {v} post"),
    ("""printf %s 'a'{{v}}"b\"""", "a{v}b"),
]
text_without_nul = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(value=text_without_nul)
def test_the_shell_prints_every_value_exactly_in_every_quoting_context(value):
    # One process runs the five contexts (fast); each prints its own NUL-terminated record.
    line, env = render_shell("\n".join(t + "; printf '\\0'" for t, _ in SAFE_TEMPLATES), {"v": value})
    assert len(env) == len(SAFE_TEMPLATES)
    printed = sh(line, env).split("\0")[:-1]
    assert printed == [expected.replace("{v}", value) for _, expected in SAFE_TEMPLATES]


HOSTILE = [
    'x"; touch P; echo "',
    "$(touch P)",
    "`touch P`",
    "'; touch P; '",
    "a\ntouch P\n",
    '"\n touch P #',
    "${IFS}touch${IFS}P",
    "\\",
    "'\"$(touch P)\"'",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("template, expected", SAFE_TEMPLATES + [
    ('printf %s "$(printf %s {{v}})"', "{v}"),
    ("printf %s {{v}}{{v}}", "{v}{v}"),
])
def test_hostile_values_stay_data_in_every_context(tmp_path, template, expected, value):
    out = run_template(template, value, cwd=tmp_path)
    if "$(" not in template:  # command substitution strips trailing newlines
        assert out == expected.replace("{v}", value)
    assert not (tmp_path / "P").exists()


def test_plain_shlex_quote_lets_a_value_out_of_double_quotes(tmp_path):
    # Why SPEC §4 passes values through the environment: quoting for the unquoted context
    # is wrong inside "...", and this value runs `touch P` there.
    value = 'x"; touch P; echo "'
    sh(f'echo "{shlex.quote(value)}"', {}, cwd=tmp_path)
    assert (tmp_path / "P").exists()
    (tmp_path / "P").unlink()
    run_template('echo "{{v}}"', value, cwd=tmp_path)
    assert not (tmp_path / "P").exists()


def test_a_dollar_or_backslash_before_a_placeholder_stays_literal():
    ns = {"v": "V"}
    assert sh(*render_shell('printf %s "${{v}}" ${{v}}', ns)) == "$V$V"
    assert sh(*render_shell('printf %s "\\{{v}}" "\\\\{{v}}" "\\${{v}}"', ns)) == "\\V\\V$V"
    assert sh(*render_shell("printf %s '${{v}}' '\\{{v}}'", ns)) == "$V\\V"


def test_placeholders_inside_command_substitutions_and_comments_are_quoted_for_their_context():
    ns = {"v": "a b'\"c"}
    assert sh(*render_shell('printf %s "$(printf %s {{v}})" # don\'t {{v}}', ns)) == "a b'\"c"
    assert sh(*render_shell("printf '%s|' $(printf %s \"x{{v}}\")", ns)) == "xa|b'\"c|"


@pytest.mark.parametrize("template, fragment", [
    ("echo `echo {{v}}`", "inside backticks"),
    ('echo "`echo {{v}}`"', "inside backticks"),
    ("echo $(( {{v}} + 1 ))", "inside $(( ... ))"),
    ("cat <<EOF\n{{v}}\nEOF", "here-document"),
    ("echo \\{{v}}", "a backslash escapes {{ v }}"),
    ("echo '{{v}}", "single quote (') is not closed"),
    ('echo "{{v}}', 'double quote (") is not closed'),
    ("echo $(echo {{v}}", "a $( is not closed"),
    ("echo `date", "backtick"),
])
def test_unsafe_or_unbalanced_commands_are_reported_and_refused(template, fragment):
    problems = shell_template_problems(template)
    assert any(fragment in p for p in problems), problems
    with pytest.raises(StepFailed, match="cannot run"):
        render_shell(template, {"v": "x"})


@pytest.mark.parametrize("template", [
    "echo {{v}}", "echo \"it's {{v}}\"", "echo 'say \"{{v}}\"'", "echo \\' {{v}}", "git log | head",
    'echo "$(date) {{v}}" $(( 1 + 2 ))', "cat <<EOF > {{v}}\nit's fine\nEOF", "echo hi # it's",
    "echo `date` {{v}}", "echo \"\\\"{{v}}\\\"\"",
])
def test_ordinary_commands_have_no_problems(template):
    assert shell_template_problems(template) == []


def test_a_nul_byte_is_refused_before_running():
    with pytest.raises(StepFailed, match=r"`\{\{ v \}\}` contains a NUL byte"):
        render_shell("echo {{v}}", {"v": "a\x00b"})


def test_a_lone_surrogate_is_refused_before_running():
    with pytest.raises(StepFailed, match="not valid Unicode"):
        render_shell("echo {{v}}", {"v": "a\ud800"})


def test_a_value_too_large_for_one_environment_string_is_refused_with_the_way_out():
    with pytest.raises(StepFailed) as info:
        render_shell("wc -c {{ event.diff }}", {"event": {"diff": "x" * 1_000_012}})
    text = str(info.value)
    assert "`{{ event.diff }}` is 1,000,012 bytes" in text
    assert "limited to 131,071 bytes on Linux" in text and "$ROAST_EVENT_FILE" in text


def test_the_largest_value_that_fits_runs():
    value = "é" * 65_529 + "x"  # 131,059 bytes: ROAST_ARG_1=… plus NUL is 131,072
    line, env = render_shell("printf %s {{v}} | wc -c", {"v": value})
    assert sh(line, env).strip() == "131059"
    with pytest.raises(StepFailed, match="131,060 bytes"):
        render_shell("echo {{v}}", {"v": value + "x"})


def test_many_large_values_together_are_refused():
    ns = {"v": "x" * 100_000}
    with pytest.raises(StepFailed, match="add up to more than"):
        render_shell(" ".join(["echo"] + ["{{v}}"] * 11), ns)


def test_render_shell_interpolates_once():
    line, env = render_shell("echo {{v}}", {"v": "{{ __import__('os') }}"})
    assert env == {"ROAST_ARG_1": "{{ __import__('os') }}"} and "__import__" not in line


def test_render_shell_reports_a_bad_expression_as_a_step_error():
    with pytest.raises(StepFailed, match=r"cannot evaluate \{\{ output.nope \}\}"):
        render_shell("echo {{ output.nope }}", {"output": {}})
