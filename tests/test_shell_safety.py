"""Interpolated values never become shell syntax (SPEC §4), under dash, bash as sh and bash.

Every rendered command runs through real shells: dash (this machine's /bin/sh), bash in POSIX mode
(bash started under the name `sh`, through a symlink in a temporary directory; /bin/sh is left
alone) and plain `bash -c`. Also here: the warnings about values bash would evaluate as arithmetic,
and `DotDict`'s rule that data keys win over dict methods (issue 11 item 8).
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import cloudpickle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roast.errors import StepFailed
from roast.expressions import DotDict, evaluate, render, to_text
from roast.shell import render_shell, shell_template_problems, shell_template_warnings

DASH = shutil.which("dash")
BASH = shutil.which("bash")
SANDBOX_FILES = ["a", "ab", "b"]  # what hostile globs (`*`, `?b`, `[a]`, `a*`) would match


@pytest.fixture(scope="module")
def shells(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """dash, bash as `sh` (POSIX mode) and `bash -c`; skips when either shell is missing."""
    if DASH is None or BASH is None:
        pytest.skip(f"needs dash and bash (found dash={DASH}, bash={BASH})")
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "sh").symlink_to(BASH)  # bash started as `sh` runs in POSIX mode
    return [[DASH, "-c"], [str(bin_dir / "sh"), "-c"], [BASH, "-c"]]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with a few files for globs to match; the tests check it never changes."""
    path = tmp_path_factory.mktemp("cwd")
    for name in SANDBOX_FILES:
        (path / name).write_text("")
    return path


def run(shell: list[str], line: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    # A small, fixed environment: no stray UNSET_X, a byte-transparent locale.
    return subprocess.run([*shell, line], env={"PATH": os.environ["PATH"], "LC_ALL": "C", **env}, cwd=cwd,
                          capture_output=True, stdin=subprocess.DEVNULL, check=False)


def assert_untouched(cwd: Path, what: str) -> None:
    found = sorted(p.name for p in cwd.iterdir())
    for extra in set(found) - set(SANDBOX_FILES):
        (cwd / extra).unlink()  # keep later examples meaningful
    assert found == SANDBOX_FILES, f"{what} created {sorted(set(found) - set(SANDBOX_FILES))}"


def prints_exactly(shells: list[list[str]], template: str, value: str, expected: str, cwd: Path) -> None:
    """Render `template` with `v = value`; every shell must print `expected` and create no file."""
    line, env = render_shell(template, {"v": value})
    for shell in shells:
        proc = run(shell, line, env, cwd)
        assert proc.stdout == expected.encode("utf-8"), (shell[0], template, value, line, proc.stderr)
        assert_untouched(cwd, f"{shell[0]} running {line!r} with {value!r}")


# --------------------------------------------------------------------------- the case bug


@pytest.mark.parametrize("template, rendered", [
    # Each of these was rendered wrongly before: the lexer took the pattern's `)` for the end
    # of the $( ), then left the value unquoted or undid the author's quotes.
    ('echo "$(case x in x) echo "{{ v }}";; esac)"',
     'echo "$(case x in x) echo "${ROAST_ARG_1}";; esac)"'),
    ('echo "$(case x in x) echo {{ v }};; esac)"',
     'echo "$(case x in x) echo "${ROAST_ARG_1}";; esac)"'),
    ('echo "$(case x in (x) echo {{ v }};; esac)"',
     'echo "$(case x in (x) echo "${ROAST_ARG_1}";; esac)"'),
    ('echo "$(case a in a) case b in (b) echo {{ v }};; esac;; esac)"',
     'echo "$(case a in a) case b in (b) echo "${ROAST_ARG_1}";; esac;; esac)"'),
    ('echo "$(case x in x|y) echo \'a)\';; esac)" "{{ v }}"',
     'echo "$(case x in x|y) echo \'a)\';; esac)" "${ROAST_ARG_1}"'),
    ('echo "$(case x in x) echo y;; esac)" "{{ v }}"',
     'echo "$(case x in x) echo y;; esac)" "${ROAST_ARG_1}"'),
    ('case x in x) echo {{ v }};; esac', 'case x in x) echo "${ROAST_ARG_1}";; esac'),
])
def test_a_case_patterns_parenthesis_never_closes_a_substitution(template, rendered):
    assert shell_template_problems(template) == []
    assert render_shell(template, {"v": "x"})[0] == rendered


@pytest.mark.parametrize("template, expected", [
    ('printf %s "$(case x in x) printf %s "{{ v }}";; esac; echo .)"', "{v}."),
    ('printf %s "$(case x in x) printf %s {{ v }};; esac; echo .)"', "{v}."),
    ('printf %s "$(case x in\nx)\nprintf %s {{ v }}\n;;\nesac; echo .)"', "{v}."),
    # `case` and `esac` are reserved only where a command starts (POSIX 2.4)
    ('printf %s "$(echo case x in; echo esac)" "$(case x in x) printf %s {{ v }};; esac; echo .)"',
     "case x in\nesac{v}."),
    ('f() case x in x) printf %s "$(printf %s {{ v }}; echo .)";; esac; f', "{v}."),
    ('for i do case $i in x) :;; esac; done; printf %s "$(case y in y) printf %s {{ v }};; esac; echo .)"',
     "{v}."),
    ('if case x in x) true;; esac; then printf %s "$(case y in y) printf %s {{ v }};; esac; echo .)"; fi',
     "{v}."),
    ('ca\\\nse x in x) printf %s "$(case y in y) printf %s {{ v }};; esac; echo .)";; esac', "{v}."),
])
def test_values_inside_and_after_case_statements_print_exactly_in_every_shell(shells, sandbox, template,
                                                                              expected):
    value = "a  *[a]$(touch PWNED)\"' ?b"
    prints_exactly(shells, template, value, expected.replace("{v}", value), sandbox)


@pytest.mark.parametrize("template, expected", [
    # each was rendered wrongly (or refused) before this lexer
    ('printf %s ${UNSET_X:- #} "{{ v }}"', "#{v}"),  # a # inside ${ } is no comment
    ('printf %s "$(printf %s ${UNSET_X:- #} "{{ v }}"; echo .)"', "#{v}."),
    ('printf %s "$(printf %s ${UNSET_X:-)} "{{ v }}"; echo .)"', "){v}."),  # a ) inside ${ }
    ('cat <<EOF\nit\'s $(echo ")") "\nEOF\nprintf %s "{{ v }}"', 'it\'s ) "\n{v}'),  # here-documents end
    ("cat <<'EOF'\n\"'$(\nEOF\nprintf %s {{ v }}", "\"'$(\n{v}"),
    ("cat <<-EOF\n\t'\n\tEOF\nprintf %s {{ v }}", "'\n{v}"),
    ('cat <<A; cat <<\\B\n"\nA\n`\nB\nprintf %s {{ v }}', '"\n`\n{v}'),
    ('cat <<EOF >/dev/null; printf %s {{ v }}\n$(echo ")")\nEOF', "{v}"),
    # and these were right before; they stay right
    ('printf %s "$(printf %s {{ v }} # it\'s ) "\n echo .)"', "{v}."),  # a comment inside $( )
    ('printf %s "$(echo \\) )" {{ v }}', "){v}"),  # an escaped )
    ('printf %s "$( (printf %s {{ v }}); echo .)"', "{v}."),  # $( ( subshell ) )
    ("printf %s $(printf %s ${UNSET_X:-'}'}) {{ v }}", "}{v}"),  # a quoted } inside ${ }
    ('printf %s "${UNSET_X:-"}"}" {{ v }}', "}{v}"),
    ('x=abc; printf %s "${#x}" {{ v }}', "3{v}"),  # # inside ${#x}
    ('printf %s "${UNSET_X:-{{ v }}}" ${UNSET_X:-{{ v }}}', "{v}{v}"),  # a value inside ${ }
    ("printf %s ${UNSET_X:-'{{ v }}'} \"${UNSET_X:-\"{{ v }}\"}\"", "{v}{v}"),
])
def test_the_lexer_follows_comments_escapes_subshells_parameters_and_here_documents(shells, sandbox,
                                                                                   template, expected):
    value = "a  *[a]$(touch PWNED)\"'`touch PWNED` }){"
    prints_exactly(shells, template, value, expected.replace("{v}", value), sandbox)


DOUBTS = [
    # (a command the shells read differently, the value placed after it)
    ("time case x in x) echo y;; esac", "time"),
    ("echo $'a\\'b'", "$'"),
    ("echo \"${UNSET_X:-'}'}\"", "a ' inside"),
    ("echo $((echo a) )", "$(("),
    ("cat <<EOF\n$(echo a\nEOF\n)\nEOF", "here-document body"),
]


@pytest.mark.parametrize("command, fragment", DOUBTS)
def test_a_value_after_a_construct_bash_and_dash_read_differently_is_refused(command, fragment):
    template = f"{command}\necho {{{{ v }}}}"
    problems = shell_template_problems(template)
    assert len(problems) == 1 and fragment in problems[0] and "{{ v }} comes after" in problems[0]
    with pytest.raises(StepFailed, match="cannot run"):
        render_shell(template, {"v": "x"})


@pytest.mark.parametrize("command", [c for c, _ in DOUBTS])
def test_those_constructs_really_read_differently(shells, sandbox, command):
    # Why they are refused: the three shells do not agree on what they mean.
    outputs = {(proc.returncode, proc.stdout) for proc in (run(s, command, {}, sandbox) for s in shells)}
    assert len(outputs) > 1, outputs


@pytest.mark.parametrize("template, fragment", [
    ("echo a ) {{ v }}", "closes nothing"),
    ("case x in x) echo {{ v }};;", "not closed by `esac`"),
    ('echo "${x:-{{ v }}', "a ${ is not closed"),
    ("cat <<$x\nbody\n$x\necho {{ v }}", "delimiter"),
    ("echo $[ (1) ] {{ v }}", "$[ … ]"),
    ("[[ a << b ]]; echo {{ v }}", "inside [[ ]] or (( ))"),
    ("echo $'{{ v }}'", "inside $'...'"),
    ("echo ${UNSET_X:-\\{{ v }}}", "a backslash escapes"),
    ("echo `echo \\{{ v }}`", "inside backticks"),
])
def test_what_the_lexer_cannot_follow_is_reported(template, fragment):
    problems = shell_template_problems(template)
    assert any(fragment in p for p in problems), problems


# --------------------------------------------------------------------------- hostile values

PIECES = [
    "'", '"', "$(touch PWNED)", "`touch PWNED`", ";", "; touch PWNED", "&&", "&& touch PWNED #", "|",
    "| touch PWNED", "\n", "\r", "*", "?", "?b", "a*", "[a]", "~", "~root", "{a,b}", "$((1+1))", "\\",
    '"$x"', "$HOME", "${IFS}", "$'\\n'", " ", "  ", "\t", "é", "日本", "🙂", "\u200b", ")", "(", "}",
    "{", "esac", "case", ";;", "#", "-n", "-e", "--", "%s", "%n", "a[$(touch PWNED)]", "EOF", "<<EOF",
    ">PWNED", "<", "!", "\x01", "\x7f", "'\"$(touch PWNED)\"'", "{{ v }}",
]
text_without_nul = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                           max_size=4)
hostile = st.lists(st.one_of(st.sampled_from(PIECES), text_without_nul), max_size=8).map("".join)

# A placeholder in every context roast supports; `{v}` is the value. Inside $( ) a `.` follows
# the value, since command substitution strips trailing newlines.
CONTEXTS = [
    ("printf %s {{ v }}", "{v}"),
    ('printf %s "a{{ v }}b"', "a{v}b"),
    ("printf %s 'a{{ v }}b'", "a{v}b"),
    ("printf %s 'a'{{ v }}\"b\"", "a{v}b"),
    ('printf %s "$(printf %s {{ v }}; echo .)"', "{v}."),
    ('printf %s "$(printf %s "{{ v }}"; echo .)"', "{v}."),
    ('printf %s "$(case x in x) echo y;; esac)" {{ v }}', "y{v}"),
    ('printf %s "$(case x in (x) printf %s {{ v }};; esac; echo .)"', "{v}."),
    ("case x in x) printf %s {{ v }};; esac", "{v}"),
    ("case a in a) case b in (b) printf %s \"{{ v }}\";; esac;; esac", "{v}"),
    ("case {{ v }} in {{ v }}) printf %s ok;; *) printf %s no;; esac", "ok"),
    ('printf %s "$(( 1 + 2 ))" {{ v }}', "3{v}"),
    ('cat <<EOF\nit\'s $(echo ")")\nEOF\nprintf %s {{ v }}', "it's )\n{v}"),
    ("cat <<'EOF'\n\"'$(\nEOF\nprintf %s \"{{ v }}\"", "\"'$(\n{v}"),
    ('printf %s "`echo a`" {{ v }} `echo b`', "a{v}b"),
    ('printf %s "$(printf %s "$(printf %s {{ v }}; echo .)"; echo .)"', "{v}.."),
    ("printf %s {{ v }} # it's a comment: {{ v }} \"", "{v}"),
    ('printf %s "${UNSET_X:-{{ v }}}"', "{v}"),
    ("printf %s ${UNSET_X:-{{ v }}}", "{v}"),
    ("printf %s ${UNSET_X:-'{{ v }}'}", "{v}"),
    ('printf %s "${UNSET_X:-)}" {{ v }}', "){v}"),
    ('printf %s "${{ v }}" ${{ v }} "\\{{ v }}"', "${v}${v}\\{v}"),
]


def _one_script() -> str:
    # All contexts in one process per shell (fast); each ends its record with a NUL.
    return "\n".join(f"{template}\nprintf '\\0'" for template, _ in CONTEXTS)


@pytest.mark.parametrize("template", [t for t, _ in CONTEXTS])
def test_every_context_is_rendered_not_refused(template):
    assert shell_template_problems(template) == []


def _check_contexts(shells: list[list[str]], sandbox: Path, value: str) -> None:
    line, env = render_shell(_one_script(), {"v": value})
    expected = [e.replace("{v}", value).encode("utf-8") for _, e in CONTEXTS]
    for shell in shells:
        proc = run(shell, line, env, sandbox)
        assert proc.stdout.split(b"\0")[:-1] == expected, (shell[0], value, proc.stderr)
        assert_untouched(sandbox, f"{shell[0]} with {value!r}")


@settings(max_examples=100, deadline=None, derandomize=True)
@given(value=hostile)
def test_hostile_values_print_exactly_in_every_context_under_dash_and_bash(shells, sandbox, value):
    _check_contexts(shells, sandbox, value)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(value=hostile)
def test_hostile_values_print_exactly_in_every_context_many_examples(shells, sandbox, value):
    _check_contexts(shells, sandbox, value)


# Commands that print nothing, to put before a placeholder: each must either leave the value
# quoted right or get the template refused (never a silently wrong quoting).
PREFIXES = [
    ': "$(case x in x) echo y;; esac)"', ': $(case x in (x) echo "a)b";; esac)', "case x in x) :;; esac",
    "case a in a) case b in (b) :;; esac;; esac", ': "$(( 1 + 2 ))"', ": $(( (1+2) * 3 ))", ': "`echo a`"',
    ': "$(echo "$(echo ")")")"', ': "$(echo hi # ) it\'s\n)"', ': "$(echo \\) )"', ': "$( (echo a) )"',
    ': "${UNSET_X:-)}"', ": ${UNSET_X:-'}'}", ': "${#PWD}"', ': "${UNSET_X:-"}"}"', ": ${UNSET_X:- #}",
    'cat <<EOF >/dev/null\nit\'s $(echo ")") "\nEOF', 'cat <<\'EOF\' >/dev/null\n"\'$(\nEOF',
    "cat <<-EOF >/dev/null\n\tx\n\tEOF", "f() case x in x) :;; esac",
    "for i in a; do case $i in a) :;; esac; done", "for i do case $i in x) :;; esac; done", ": $'ab'",
    ": $'a\\'b'", "time case x in x) :;; esac >/dev/null 2>&1", ': "${UNSET_X:-\'}\'}"', ': # $( \' "',
    "[ 1 -eq 1 ]", ': "$(cat <<EOF\n)\nEOF\n)"', ": <<EOF\n$(echo a\nEOF\n)\nEOF",
    "{ case x in x) :;; esac; }", "if case x in x) true;; esac; then :; fi", ': "$[ 1 + 1 ]"',
    'a="b)"; : "${a%)}"', ': ${UNSET_X:-$(echo "}")}', "ca\\\nse x in x) :;; esac",
    "case x in\nx)\n:\n;;\nesac", "case x in x|y) :;; (z) :;; esac",
    ": $(case x in x) case y in y) :;; esac;; esac)", ': "$(case x in (x) :;; esac)"$(echo ")")',
    'x=$(case a in a) echo "(";; esac)', ": $( case x in x ) : ;; esac )", ": `case x in x) : ;; esac`",
    ': "${UNSET_X:-\'a\'}"', ': ${UNSET_X:-"\'"}', ': <<"E O"\n$(\nE O', ": <<\\EOF\n`\nEOF",
    "cat <<A <<B >/dev/null\na\nA\nb\nB", ': $(cat <<EOF\n$(echo "(")\nEOF\n)', ": $((echo a) ) 2>/dev/null",
    "x=1; : $(( x << 2 ))", ': "$(printf \'%s\' "${UNSET_X:-\'}")"',
]


@st.composite
def compositions(draw: st.DrawFn) -> tuple[str, str, str]:
    prefixes = draw(st.lists(st.sampled_from(PREFIXES), max_size=3))
    context, expected = draw(st.sampled_from(CONTEXTS))
    value = draw(hostile)
    return "\n".join([*prefixes, context]), expected.replace("{v}", value), value


def _check_composition(shells: list[list[str]], sandbox: Path, template: str, expected: str,
                       value: str) -> None:
    if shell_template_problems(template):
        with pytest.raises(StepFailed):
            render_shell(template, {"v": value})
        return
    prints_exactly(shells, template, value, expected, sandbox)


@settings(max_examples=250, deadline=None, derandomize=True)
@given(case=compositions())
def test_every_template_is_either_quoted_right_in_every_shell_or_refused(shells, sandbox, case):
    _check_composition(shells, sandbox, *case)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None)
@given(case=compositions())
def test_every_template_is_either_quoted_right_or_refused_many_examples(shells, sandbox, case):
    _check_composition(shells, sandbox, *case)


# --------------------------------------------------------------------------- arithmetic warnings

ATTACK = "a[$(touch PWNED)]"
# (template, setup that makes the form run) — each puts {{ v }} where bash evaluates arithmetic
ARITHMETIC = [
    "[[ {{ v }} -gt 3 ]]",
    "[[ 3 -eq {{ v }} ]]",
    '[[ -n x && "{{ v }}" -le 3 ]]',
    "(( {{ v }} > 1 ))",
    'x=$(( 1 )); (( x + "{{ v }}" ))',
    "let 'y={{ v }}'",
    "echo $[ {{ v }} + 1 ]",
    'echo "$[ {{ v }} + 1 ]"',
    'a=(1 2); echo "${a[{{ v }}]}"',
    'x=abc; echo "${x:{{ v }}}"',
    "x=abc; echo ${x:1:{{ v }}}",
    "a[{{ v }}]=1",
    "declare -i n={{ v }}",
    "typeset -i n; n={{ v }}",
    "f() { local -i z=\"{{ v }}\"; }; f",
    "[[ -v {{ v }} ]]",
    "printf -v {{ v }} %s 1",
]


@pytest.mark.parametrize("template", ARITHMETIC)
def test_each_arithmetic_context_gets_exactly_one_warning(template):
    warnings = shell_template_warnings(template)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("`{{ v }}` is ") and "a[$(id)]" in warnings[0]
    assert shell_template_problems(template) == []  # a warning, not a refusal: dash is unaffected


@pytest.mark.parametrize("template", ARITHMETIC)
def test_the_warned_forms_really_run_a_command_under_bash(tmp_path, template):
    # The warning is true: through render_shell's quoting, bash still runs the value's $( ).
    if BASH is None:
        pytest.skip("needs bash")
    line, env = render_shell(template, {"v": ATTACK.replace("a[", "x[") if "-v" in template else ATTACK})
    run([BASH, "-c"], line, env, tmp_path)
    assert (tmp_path / "PWNED").exists(), line


def test_the_warning_says_what_where_and_how_to_fix():
    [warning] = shell_template_warnings("[[ {{ event.count }} -gt 3 ]]")
    assert warning == (
        "`{{ event.count }}` is an operand of `-gt` inside [[ ]]: bash evaluates it as arithmetic, and a "
        "value like `a[$(id)]` runs a command; compare with `[ \"{{ event.count }}\" -gt 3 ]` (test(1) "
        "does not evaluate), or make it a number first: {{ int(event.count) }}")


@pytest.mark.parametrize("template", ["[[ {{ v }} -gt 3 ]]", "[[ 3 -lt {{ v }} ]]", "(( {{ v }} > 1 ))"])
def test_the_suggested_alternatives_are_safe_under_every_shell(shells, tmp_path, template):
    [warning] = shell_template_warnings(template)
    suggested = re.search(r"compare with `?(\[ .*? \])", warning).group(1).replace("N", "3")
    assert shell_template_warnings(suggested) == []
    line, env = render_shell(suggested, {"v": ATTACK})
    for shell in shells:
        proc = run(shell, line, env, tmp_path)
        assert proc.returncode != 0 and not (tmp_path / "PWNED").exists(), (shell[0], line, proc.stderr)
    # and making it a number first refuses the hostile value before any shell runs
    number_first = template.replace("{{ v }}", "{{ int(v) }}")
    assert shell_template_warnings(number_first) == []
    with pytest.raises(StepFailed, match="invalid literal for int"):
        render_shell(number_first, {"v": ATTACK})
    assert render_shell(number_first, {"v": " 7 "})[1] == {"ROAST_ARG_1": "7"}


@pytest.mark.parametrize("template", [
    '[ "{{ v }}" -gt 3 ]', "[[ {{ v }} == 3 ]]", "[[ -n {{ v }} ]]", "echo {{ v }} -gt 3", "echo let {{ v }}",
    'echo "${a:-{{ v }}}"', "declare n={{ v }}", "n={{ v }}", "[[ {{ len(v) }} -gt 3 ]]", "(( {{ 3 }} > 1 ))",
    "echo '(( {{ v }} ))'", "# [[ {{ v }} -gt 3 ]]", "printf %s {{ v }}", "echo $(( 1 )) {{ v }}",
])
def test_no_warning_where_bash_does_not_evaluate(template):
    assert shell_template_warnings(template) == []


def test_a_variable_declared_integer_warns_where_it_is_assigned_later():
    warnings = shell_template_warnings("declare -i n=0 m; n={{ a }}; m+={{ b }}; k={{ c }}")
    assert [w.split("`")[1] for w in warnings] == ["{{ a }}", "{{ b }}"]
    assert all("declared with -i" in w for w in warnings)


# --------------------------------------------------------------------------- DotDict: data keys win

EVENT = {"items": [1, 2], "keys": "k", "get": "g", "values": "v", "pop": "p", "copy": "c", "update": "u",
         "pr": {"items": ["i"], "number": 7}, "prs": [{"items": "first"}], "__typename": "PullRequest"}


@pytest.mark.parametrize("expr, shown", [
    ("event.items", "[1, 2]"), ("event.keys", "k"), ("event.get", "g"), ("event.pop", "p"),
    ("event.copy", "c"), ("event.update", "u"), ("output.values", "v"), ("event.pr.items", '["i"]'),
    ("event.prs[0].items", "first"), ("event.__typename", "PullRequest"),
])
def test_data_keys_win_over_dict_methods_in_templates(expr, shown):
    assert render(f"{{{{ {expr} }}}}", {"event": EVENT, "output": {"values": "v"}}) == shown
    _, env = render_shell(f"printf %s {{{{ {expr} }}}}", {"event": EVENT, "output": {"values": "v"}})
    assert env == {"ROAST_ARG_1": shown}


def test_dict_methods_still_work_where_no_key_shadows_them():
    ns = {"event": {"a": 1, "b": {"c": 2}}, "output": {"x": "y"}}
    assert evaluate("sorted(event.keys())", ns) == ["a", "b"]
    assert evaluate("event.get('a')", ns) == 1 and evaluate("event.get('b').c", ns) == 2
    assert evaluate("output.values()", ns) == ["y"] and evaluate("output.items()", ns) == [("x", "y")]
    assert evaluate("event.copy().b.c", ns) == 2
    with pytest.raises(StepFailed, match=r"no key 'nope' \(known: a, b\)"):
        evaluate("event.nope", ns)


def test_dicts_reached_through_lists_tuples_values_and_items_follow_the_same_rule():
    ns = {"event": {"m": {"a": {"items": 1}}, "l": [[{"keys": 2}]]}, "output": {"t": ({"get": 3},)}}
    assert evaluate("[p.items for p in event.m.values()]", ns) == [1]
    assert evaluate("[p.items for _, p in event.m.items()]", ns) == [1]
    assert evaluate("event.l[0][0].keys", ns) == 2
    assert evaluate("output.t[0].get", ns) == 3
    assert evaluate("event.copy().m.a.items", ns) == 1


def test_dunder_names_are_never_data():
    d = DotDict({"__class__": "x", "__reduce_ex__": "y", "__dict__": "z"})
    assert d.__class__ is DotDict and callable(d.__reduce_ex__) and isinstance(d, dict)
    with pytest.raises(AttributeError):
        _ = d.__dict__  # slotted: no instance dict, and never the key


def test_a_dotdict_with_keys_that_shadow_methods_pickles_copies_compares_and_serialises():
    d = DotDict(EVENT)
    for module in (pickle, cloudpickle):
        back = module.loads(module.dumps(d))
        assert type(back) is DotDict and back == EVENT and back.items == [1, 2]
    assert copy.copy(d) == EVENT and type(copy.deepcopy(d)) is DotDict and copy.deepcopy(d).pr.items == ["i"]
    assert json.loads(to_text(d)) == EVENT and json.loads(to_text([d, (d,)])) == [EVENT, [EVENT]]
    assert dict(d) == EVENT and {**d} == EVENT and d == DotDict(EVENT)
