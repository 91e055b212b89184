"""Shell-safe interpolation: turning a `$( … )` step with `{{ }}` placeholders into a shell line
whose values arrive through the environment, never parsed by the shell (SPEC §4, reliability §3.3),
and finding the templates that cannot be made safe (refused) or that bash evaluates as arithmetic
(warned). The sh lexer that finds each placeholder's quoting context is `roast.shell_lex`.
Pure functions; performs no I/O of its own.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from itertools import count, pairwise

from roast.errors import StepFailed
from roast.expressions import TEMPLATE, evaluate, to_text
from roast.record import Record
from roast.shell_lex import DOUBLE, SINGLE, UNQUOTED, Lexer


# Linux MAX_ARG_STRLEN is 32 pages (131,072 bytes) per argv/env string, NUL included; the
# string is `NAME=value` [measured: ROAST_ARG_1 holds at most 131,059 bytes].
MAX_ENV_STRING = 131_071
# ARG_MAX (2 MiB by default) covers argv and the whole environment; keep room for the rest.
_MAX_ARGS_TOTAL = 1_048_576

_ARITH_OPS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
_DECLARE = frozenset({"declare", "typeset", "local", "export", "readonly"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# What roast cannot follow: where bash and dash read a command differently, or a syntax error.
# A value placed after one of these is refused (the shell could read its quotes either way).
_DOUBTS = {
    "case": ("a `case` that does not read as `case WORD in PATTERN) COMMANDS ;; esac`",
             "check the case syntax"),
    "bash-case": (("a `case` after `time`, `coproc` or `function NAME`, which bash reads as a case "
                   "statement and dash as plain words"),
                  "put the case statement in its own command"),
    "ansi": ("a $'…' string with a backslash, which bash reads as an escape and dash as a quote",
             "use '…' or \"…\" quotes instead"),
    "param-quote": (("a ' inside \"${ … }\" around `}`, `\"`, `$` or a backslash, which bash and dash "
                     "read differently"),
                    "use \"…\" inside the ${ }, or set a variable first"),
    "bracket": ("`$[ … ]` holding characters that bash (arithmetic) and dash (plain text) read differently",
                "use $(( … )) instead"),
    "body-span": (("a substitution inside a here-document body that runs past its line, where bash "
                   "and dash end the body differently"),
                  "keep each $( ) of a here-document body on one line"),
    "body-start": ("a here-document whose body would start inside quotes or a substitution",
                   "end the line that holds << outside any quotes and substitutions"),
    "delimiter": ("a here-document delimiter that is empty or holds $, ` or {{ }}",
                  "use a plain delimiter such as EOF"),
    "body-backslash": ("a backslash at the end of a here-document body line, which joins lines",
                       "quote the delimiter (<<'EOF') so the body is literal"),
    "arith": ("a `$((` that `))` does not close, which bash reads as `$( (` and dash refuses",
              "write `$( (` with a space for a subshell"),
    "bash-only": ("`<<`, `#` or `case` inside [[ ]] or (( )), which bash and dash read differently",
                  "move it out of the [[ ]] or (( ))"),
}
_REFUSALS = {
    "heredoc": "{where} is inside a here-document, whose quoting depends on its delimiter; pipe the "
               "value in instead: printf '%s\\n' \"{where}\" | command",
    "backtick": "{where} is inside backticks (`...`), where its quoting cannot be kept; use $( ... ) instead",
    "arith": "{where} is inside $(( ... )), where the shell would evaluate its value as arithmetic; "
             "compute it in the expression instead",
    "escaped": "a backslash escapes {where}; remove the backslash",
    "ansi": "{where} is inside $'...', which bash and dash quote differently; use '...' quotes",
}
_DANGER = "bash evaluates it as arithmetic, and a value like `a[$(id)]` runs a command"
_NUMBER = "make it a number first: {{{{ int({expr}) }}}}"
_NUMBER_FIRST = "or " + _NUMBER
_WARNINGS = {
    "dparen": "{where} is inside (( )): " + _DANGER + "; compare with `[ \"{bare}\" -gt N ]` "
              "(test(1) does not evaluate), " + _NUMBER_FIRST,
    "let": "{where} is an argument of `let`: " + _DANGER + "; " + _NUMBER,
    "bracket": "{where} is inside $[ ]: " + _DANGER + "; " + _NUMBER,
    "subscript": "{where} is an array subscript inside ${{name[ ]}}: " + _DANGER
                 + "; pick the element in the {{{{ }}}} expression, " + _NUMBER_FIRST,
    "substring": "{where} is an offset or length inside ${{name:…}}: " + _DANGER
                 + "; slice in the {{{{ }}}} expression, " + _NUMBER_FIRST,
    "assign-subscript": "{where} is an array subscript of an assignment: " + _DANGER + "; " + _NUMBER,
    "integer": "{where} is assigned to a variable declared with -i: " + _DANGER
               + "; drop -i, " + _NUMBER_FIRST,
    "name": "{where} is a variable name for {detail}: bash evaluates an array subscript in it, and a "
            "value like `a[$(id)]` runs a command; check the name in the {{{{ }}}} expression first",
    "op": "{where} is an operand of `{detail}` inside [[ ]]: " + _DANGER + "; compare with {suggest} "
          "(test(1) does not evaluate), " + _NUMBER_FIRST,
}


def _assignment(raw: str) -> bool:
    """`name=…`, `name+=…` or `name[…]=…` (an assignment word, POSIX 2.9.1)."""
    name = _NAME.match(raw)
    if not name:
        return False
    rest = raw[name.end():]
    if rest.startswith("["):
        close = rest.find("]")
        rest = rest[close + 1:] if close > 0 else ""
    return rest.startswith(("=", "+="))


def _quoted_placeholder(raw: str) -> str:
    match = TEMPLATE.fullmatch(raw)
    return f'"{{{{ {match.group(1).strip()} }}}}"' if match else raw


class _Arithmetic:
    """The placeholders that whole commands hand to bash arithmetic: `let`, `declare -i`, array
    subscripts of assignments, `printf -v` and the operands of `[[ … -gt … ]]`. Reads the commands
    in the order the lexer ended them (a `declare -i` counts for the assignments after it) and adds
    its warnings to the lexer's slots; a placeholder keeps the first warning it gets.
    """

    __slots__ = ("int_names", "slots", "spans")

    def __init__(self, lexer: Lexer) -> None:
        self.slots, self.spans = lexer.slots, lexer.spans
        self.int_names: set[str] = set()  # declared with -i: assignments to them are arithmetic

    def command(self, words: list[tuple[str, str | None, list[tuple[int, int]]]]) -> None:
        """One command's words: note the placeholders it hands to bash arithmetic (for the warnings)."""
        at = 0
        while at < len(words) and _assignment(words[at][0]):
            self._assigned(*words[at])
            at += 1
        if at == len(words):
            return
        command, args = words[at][1], words[at + 1:]
        if command == "[[":
            self._conditional(words[at:])
        elif command == "let":
            self._warn([s for _, _, slots in args for s in slots], "let")
        elif command in _DECLARE:
            options = [w for _, w, _ in args if w and w.startswith("-") and w != "--"]
            integer = any("i" in o[1:] for o in options)
            for raw, word, slots in args:
                if word and word.startswith("-"):
                    continue
                name = _NAME.match(raw)
                if integer:
                    if name:
                        self.int_names.add(name.group())
                    self._warn(slots, "integer")
                else:
                    self._assigned(raw, word, slots)
        elif command == "printf":
            for (_, flag, _), (_, _, slots) in pairwise(args):
                if flag == "-v":
                    self._warn(slots, "name", "printf -v")

    def _assigned(self, raw: str, word: str | None, slots: list[tuple[int, int]]) -> None:
        name = _NAME.match(raw)
        if not name or not slots:
            return
        if raw[name.end():name.end() + 1] == "[":
            masked = list(raw)  # placeholders may hold `]`: look for the subscript's end around them
            for start, offset in slots:
                masked[offset:offset + self.spans[start] - start] = "x" * (self.spans[start] - start)
            close = "".join(masked).find("]", name.end())
            self._warn([s for s in slots if s[1] < close], "assign-subscript")
        if name.group() in self.int_names:
            self._warn(slots, "integer")

    def _conditional(self, words: list[tuple[str, str | None, list[tuple[int, int]]]]) -> None:
        for j, (raw, _, slots) in enumerate(words):
            if not slots:
                continue
            before = words[j - 1][1] if j else None
            after = words[j + 1][1] if j + 1 < len(words) else None
            if before == "-v":
                self._warn(slots, "name", "[[ -v ]]")
            for op, left in ((before, j - 2), (after, j)):
                if op in _ARITH_OPS and left >= 0 and left + 2 < len(words):
                    sides = [_quoted_placeholder(words[k][0]) for k in (left, left + 2)]
                    self._warn(slots, "op", op, f"[ {sides[0]} {op} {sides[1]} ]")
                    break

    def _warn(self, slots: list[tuple[int, int]], code: str, detail: str = "", suggest: str = "") -> None:
        for start, _ in slots:
            state, refusal, warning = self.slots[start]
            self.slots[start] = (state, refusal, warning or (code, detail, suggest))


def _number_expr(expr: str) -> bool:
    """True for `int(…)`, `len(…)` or a whole number: a value bash arithmetic cannot run."""
    import ast  # only when a warning is about to be given

    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return False
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int)
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("int", "len")


class _Slot(Record):
    """One `{{ expr }}` of a command and the quoting state it sits in."""

    __slots__ = ("expr", "state")


class _Plan(Record):
    """A lexed template: literal parts and slots, what makes it unsafe, what to warn about."""

    __slots__ = ("parts", "problems", "warnings")


@functools.lru_cache(maxsize=512)
def _plan(template: str) -> _Plan:
    """Lex `template` once and note each placeholder's quoting context (reliability §3.3)."""
    matches = list(TEMPLATE.finditer(template))
    lexer = Lexer(template, {m.start(): m.end() for m in matches})
    lexer.run()
    arithmetic = _Arithmetic(lexer)
    for words in lexer.commands:
        arithmetic.command(words)
    parts: list[str | _Slot] = []
    problems: list[str] = []
    warnings: list[str] = []
    pos = 0
    for match in matches:
        literal = template[pos:match.start()]
        expr = match.group(1).strip()
        where = f"{{{{ {expr} }}}}"
        state, refusal, warning = lexer.slots.get(match.start(), (UNQUOTED, "doubt", None))
        if refusal == "doubt":
            what, fix = _DOUBTS.get(lexer.doubt, ("a construct roast cannot follow", "simplify the command"))
            problems.append(f"{where} comes after {what}, so roast cannot tell how the shell would "
                            f"quote it; {fix}")
        elif refusal:
            problems.append(_REFUSALS[refusal].format(where=where))
        elif state in (UNQUOTED, DOUBLE) and _ends_with_bare(literal, "$"):
            # `${{x}}` would become `$"…"` (bash: locale string) or `$${…}` (the shell's pid):
            # keep the dollar a literal dollar, as in render().
            literal = literal[:-1] + "\\$"
        elif state == DOUBLE and _ends_with_bare(literal, "\\"):
            # Inside "…" `\{` is a backslash and a brace, but `\${…}` would escape the expansion.
            literal += "\\"
        if warning and not _number_expr(expr):
            code, detail, suggest = warning
            warnings.append(_WARNINGS[code].format(where=f"`{where}`", bare=where, expr=expr, detail=detail,
                                                   suggest=f"`{suggest}`"))
        parts += [literal, _Slot(expr, state)]
        pos = match.end()
    parts.append(template[pos:])
    unclosed = lexer.unclosed()
    problems += lexer.problems + ([unclosed] if unclosed else [])
    return _Plan(tuple(parts), tuple(problems), tuple(warnings))


def _ends_with_bare(literal: str, char: str) -> bool:
    """True when `literal` ends with `char` not itself escaped by a backslash."""
    if not literal.endswith(char):
        return False
    body = literal[:-1]
    return (len(body) - len(body.rstrip("\\"))) % 2 == 0


def shell_template_problems(template: str) -> list[str]:
    """What makes a `$( … )` command unsafe or unbalanced (for load time); empty when fine.

    A value is refused where roast cannot be sure how the shell quotes it: inside backticks,
    `$(( ))` or a here-document, and after a construct that bash and dash read differently.
    """
    return list(_plan(template).problems)


def shell_template_warnings(template: str) -> list[str]:
    """One warning per `{{ }}` that bash would evaluate as arithmetic (for `roast validate`).

    roast passes the value through a variable, but bash still evaluates `[[ $v -gt 3 ]]`,
    `(( ))`, `let`, `$[ ]`, `${a[$v]}`, `${s:$v}`, `a[$v]=` and `declare -i` assignments as
    arithmetic, where a value like `a[$(id)]` runs a command. dash (and test(1)) do not. A value
    that is already a number (`{{ int(event.count) }}`) is not flagged.

    >>> shell_template_warnings("[[ {{ event.count }} -gt 3 ]]")[0].split(":")[0]
    '`{{ event.count }}` is an operand of `-gt` inside [[ ]]'
    """
    return list(_plan(template).warnings)


def render_shell(template: str, namespace: Mapping[str, object]) -> tuple[str, dict[str, str]]:
    """Turn a command with `{{ }}` into a shell line plus the environment that carries the values.

    Each placeholder becomes a reference to `ROAST_ARG_n` fitted to its quoting context, so the
    shell expands the value but never parses it (SPEC §4, reliability §3.3 option B):

    >>> render_shell('echo "by {{x}}" {{x}}', {"x": "$(id)"})
    ('echo "by ${ROAST_ARG_1}" "${ROAST_ARG_2}"', {'ROAST_ARG_1': '$(id)', 'ROAST_ARG_2': '$(id)'})
    """
    plan = _plan(template)
    if plan.problems:
        raise StepFailed(f"cannot run $({template}): " + "; ".join(plan.problems))
    pieces: list[str] = []
    env: dict[str, str] = {}
    total = 0
    numbers = count(1)
    for part in plan.parts:
        if isinstance(part, str):
            pieces.append(part)
            continue
        name = f"ROAST_ARG_{next(numbers)}"
        value = to_text(evaluate(part.expr, namespace))
        total += _check_arg(part.expr, name, value)
        if total > _MAX_ARGS_TOTAL:
            raise StepFailed(f"the values interpolated into $({_clip(template)}) add up to more than "
                             f"{_MAX_ARGS_TOTAL:,} bytes, too much for one command",
                             hint="read large data from $ROAST_EVENT_FILE instead")
        env[name] = value
        if part.state == DOUBLE:
            pieces.append(f"${{{name}}}")
        elif part.state == SINGLE:
            pieces.append(f"'\"${{{name}}}\"'")
        else:
            pieces.append(f'"${{{name}}}"')
    return "".join(pieces), env


def _check_arg(expr: str, name: str, value: str) -> int:
    """Refuse what cannot travel in an environment variable; return its size in bytes."""
    where = f"`{{{{ {expr} }}}}`"
    if "\x00" in value:
        raise StepFailed(f"{where} contains a NUL byte, which a command cannot receive")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as err:
        bad = value[err.start:err.end]
        raise StepFailed(f"{where} contains {bad!r} at position {err.start}, "
                         f"which is not valid Unicode text") from err
    if size + len(name) + 1 > MAX_ENV_STRING:
        raise StepFailed(f"{where} is {size:,} bytes; a command argument is limited to "
                         f"{MAX_ENV_STRING:,} bytes on Linux",
                         hint="read large data from $ROAST_EVENT_FILE instead")
    return size


def _clip(text: str, most: int = 60) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"

