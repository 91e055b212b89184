"""Shell-safe interpolation: turning a `$( … )` step with `{{ }}` placeholders into a shell line
whose values arrive through the environment, never parsed by the shell (SPEC §4, reliability §3.3),
and finding the templates that cannot be made safe (refused) or that bash evaluates as arithmetic
(warned). Pure functions; performs no I/O of its own.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from itertools import count, pairwise

from roast.errors import StepFailed
from roast.expressions import TEMPLATE, evaluate, to_text
from roast.record import Record


# Linux MAX_ARG_STRLEN is 32 pages (131,072 bytes) per argv/env string, NUL included; the
# string is `NAME=value` [measured: ROAST_ARG_1 holds at most 131,059 bytes].
MAX_ENV_STRING = 131_071
# ARG_MAX (2 MiB by default) covers argv and the whole environment; keep room for the rest.
_MAX_ARGS_TOTAL = 1_048_576

_UNQUOTED, _SINGLE, _DOUBLE, _COMMENT = "unquoted", "single", "double", "comment"
_WORD_END = frozenset(" \t\n;&|()<>")
_COMMANDS = frozenset({"top", "cmdsub", "paren"})  # frames holding commands (and so words)
# POSIX 2.4: after these reserved words the next word is again the first word of a command.
_OPENERS = frozenset({"if", "then", "else", "elif", "while", "until", "do", "!", "{"})
_CLOSERS = frozenset({"fi", "done", "}"})
_ARITH_OPS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
_DECLARE = frozenset({"declare", "typeset", "local", "export", "readonly"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FD = re.compile(r"[0-9]+")
_SUBSCRIPT = re.compile(r"[#!]?[A-Za-z_][A-Za-z0-9_]*\[[^\]]*\Z")
_SUBSTRING = re.compile(r"[#!]?(?:[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?|[0-9]+|[@*]):(?![-=?+])")

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


class _Frame:
    """A lexing context: a command frame (the whole command, a `$( )` or a `( )` subshell), a
    `$(( ))`, a `${ }`, a `$[ ]`, a backtick substitution or a here-document body."""

    __slots__ = ("kind", "state", "depth", "arith", "in_double", "ansi", "first", "expect", "cases",
                 "word_start", "plain", "word_slots", "words", "dbracket", "redirect", "text",
                 "strip_tabs", "quoted", "line_start")

    def __init__(self, kind: str, state: str = _UNQUOTED, depth: int = 0, arith: bool = False,
                 in_double: bool = False, ansi: bool = False, first: bool | str = True, expect: str = "",
                 cases: list[str] | None = None, word_start: int = -1, plain: bool = True,
                 word_slots: list[tuple[int, int]] | None = None,
                 words: list[tuple[str, str | None, list[tuple[int, int]]]] | None = None,
                 dbracket: bool = False, redirect: bool = False, text: str = "", strip_tabs: bool = False,
                 quoted: bool = False, line_start: bool = True) -> None:
        self.kind = kind  # "top", "cmdsub", "paren", "arith", "param", "bracket", "backtick" or "heredoc"
        self.state = state  # unquoted, single, double or comment
        self.depth = depth  # arith and bracket: brackets opened inside and not yet closed
        self.arith = arith  # a paren frame that bash reads as (( )) arithmetic
        self.in_double = in_double  # param: the ${ sits inside "…" (or a here-document body)
        self.ansi = ansi  # single: the quote is bash's $'…'
        self.first = first
        self.expect = expect  # "for-name", "for-do", "for-list" or "function-name": what the next word is
        self.cases = [] if cases is None else cases  # each open case: subject, in, patterns, pattern, body
        self.word_start = word_start  # where the word being read began (-1: between words)
        self.plain = plain  # the word so far is unquoted literal text (could be a reserved word)
        self.word_slots = [] if word_slots is None else word_slots  # placeholders in it: (start, offset)
        self.words = [] if words is None else words
        self.dbracket = dbracket  # inside [[ ]]
        self.redirect = redirect  # the next word is a redirection's target
        self.text = text  # param: what the ${ holds so far; heredoc: the delimiter
        self.strip_tabs = strip_tabs  # heredoc: <<-
        self.quoted = quoted  # heredoc: the delimiter was quoted, so the body is literal
        self.line_start = line_start  # heredoc: at the start of a body line


class _Lexer:
    """Just enough of the POSIX sh grammar to know the quoting context of each placeholder.

    Tracks unquoted, '…' and "…" text (backslash escapes honoured outside single quotes), comments,
    words and where a command starts (so `case … in pattern)` is told from a closing parenthesis,
    as POSIX 2.4 recognises reserved words), `$( )` and `( )` (fresh unquoted contexts), `$(( ))`,
    `${ }`, `$[ ]`, backticks and here-documents. Where bash (also as sh) and dash read a
    construct differently, or roast cannot follow it, the lexer stops and records a doubt: the
    placeholders after it are refused rather than quoted by guess.
    """

    __slots__ = ("bodies", "doubt", "escaped", "int_names", "pending", "problems", "slots", "spans",
                 "stack", "text")

    def __init__(self, text: str, spans: dict[int, int]) -> None:
        self.text, self.spans = text, spans
        self.stack = [_Frame("top")]
        # per placeholder start: (quoting state, refusal code, warning (code, detail, suggestion))
        self.slots: dict[int, tuple[str, str, tuple[str, str, str] | None]] = {}
        self.problems: list[str] = []
        self.pending: list[tuple[_Frame, str, bool, bool]] = []  # here-documents whose body is next
        self.bodies = 0  # here-document frames on the stack
        self.escaped = -1  # a placeholder start that an unquoted backslash escapes
        self.doubt = ""
        self.int_names: set[str] = set()  # declared with -i: assignments to them are arithmetic

    def run(self) -> None:
        i, n = 0, len(self.text)
        steps = {"top": self._command, "cmdsub": self._command, "paren": self._command,
                 "arith": self._arith, "param": self._param, "bracket": self._bracket,
                 "backtick": self._backtick, "heredoc": self._heredoc}
        while i < n and not self.doubt:
            frame = self.stack[-1]
            if i in self.spans:
                i = self._placeholder(frame, i)
            elif self.text[i] == "\n" and not self._newline_ok(frame):
                break
            else:
                i = steps[frame.kind](frame, i)
        for frame in reversed(self.stack):
            if frame.kind in _COMMANDS:
                self._end_word(frame, n)
                self._flush(frame)

    def unclosed(self) -> str | None:
        """What is left open at the end of the command, if anything."""
        if self.doubt:
            return None
        frame = self.stack[-1]
        if frame.kind in ("backtick", "heredoc"):
            return "a backtick (`) substitution is not closed" if frame.kind == "backtick" else None
        if frame.state == _SINGLE:
            return "a single quote (') is not closed"
        if frame.state == _DOUBLE:
            return 'a double quote (") is not closed'
        opened = {"arith": "a $(( is not closed", "cmdsub": "a $( is not closed",
                  "paren": "a ( is not closed", "param": "a ${ is not closed",
                  "bracket": "a $[ is not closed"}.get(frame.kind)
        if opened is None and frame.cases:
            return "a `case` is not closed by `esac`"
        return opened

    # ----------------------------------------------------------------- helpers

    def _doubt(self, code: str) -> None:
        self.doubt = self.doubt or code

    def _push(self, frame: _Frame) -> None:
        self.stack.append(frame)

    def _pop(self, frame: _Frame) -> None:
        self.stack.pop()
        if frame.kind == "heredoc":
            self.bodies -= 1
        if any(owner is frame for owner, *_ in self.pending):
            self._doubt("body-start")  # `$(cat <<EOF)`: the body would start outside its $( )
        if frame.kind in _COMMANDS:
            self._flush(frame)
            if frame.kind == "paren":  # `f() case …`, `for (( … )) do`: a command may follow
                parent = self.stack[-1]
                parent.first, parent.expect = True, ""

    def _span_in(self, start: int, end: int) -> bool:
        return any(start <= s < end for s in self.spans)

    def _newline_ok(self, frame: _Frame) -> bool:
        if self.bodies and frame.kind != "heredoc":
            self._doubt("body-span")
        elif self.pending and (frame is not self.pending[0][0] or frame.state not in (_UNQUOTED, _COMMENT)):
            self._doubt("body-start")
        return not self.doubt

    def _placeholder(self, frame: _Frame, i: int) -> int:
        refusal = {"heredoc": "heredoc", "backtick": "backtick", "arith": "arith"}.get(frame.kind, "")
        if frame.ansi:
            refusal = "ansi"
        elif self.escaped == i:
            refusal = "escaped"
        warning: tuple[str, str, str] | None = None
        if frame.kind in _COMMANDS and frame.state != _COMMENT:
            self._word_char(frame, i, plain=False)
            frame.word_slots.append((i, i - frame.word_start))
            if frame.arith:
                warning = ("dparen", "", "")
        elif frame.kind == "heredoc":
            frame.line_start = False  # a line holding a value is never the delimiter
        elif frame.kind == "param":
            if _SUBSCRIPT.match(frame.text):
                warning = ("subscript", "", "")
            elif _SUBSTRING.match(frame.text):
                warning = ("substring", "", "")
            frame.text += "\0"
        elif frame.kind == "bracket":
            warning = ("bracket", "", "")
        self.slots[i] = (frame.state, refusal, warning)
        return self.spans[i]

    # ----------------------------------------------------------------- words and commands

    def _word_char(self, frame: _Frame, i: int, *, plain: bool = True) -> None:
        if frame.word_start < 0:
            frame.word_start, frame.plain, frame.word_slots = i, True, []
        frame.plain = frame.plain and plain

    def _end_word(self, frame: _Frame, i: int) -> None:
        if frame.word_start < 0:
            return
        raw = self.text[frame.word_start:i]
        word = raw.replace("\\\n", "") if frame.plain else None
        slots, frame.word_start = frame.word_slots, -1
        self._word(frame, raw, word, slots)

    def _word(self, frame: _Frame, raw: str, word: str | None, slots: list[tuple[int, int]]) -> None:
        """One word of a command frame: reserved words move the case and command-start state."""
        if frame.redirect:
            frame.redirect = False
            return
        if frame.dbracket:
            if word == "case":
                self._doubt("bash-only")
            frame.words.append((raw, word, slots))
            frame.dbracket = word != "]]"
            return
        phase = frame.cases[-1] if frame.cases else ""
        if phase in ("subject", "in"):
            if word == "esac" if phase == "subject" else word != "in":
                self._doubt("case")  # `case esac in`, `case x y`: syntax errors
            frame.cases[-1] = "in" if phase == "subject" else "patterns"
            return
        if phase in ("patterns", "pattern"):
            if phase == "patterns" and word == "esac":  # POSIX: esac ends the list where a pattern may start
                frame.cases.pop()
                frame.first = False
            else:
                frame.cases[-1] = "pattern"
            return
        if frame.expect:
            expect, frame.expect = frame.expect, ""
            if expect == "for-name":
                frame.expect = "for-do"
            elif expect == "for-do":  # `for x do` or `for x in a b`
                frame.first = word == "do"
                frame.expect = "" if frame.first else "for-list"
            elif expect == "for-list":
                frame.expect = expect
            else:  # function NAME: bash reads a compound command next, dash more words
                frame.first = "maybe"
            return
        first = frame.first
        if (first == "maybe" or frame.arith) and word in ("case", "esac"):
            self._doubt("bash-case" if first == "maybe" else "bash-only")
        elif first is True and word is not None:
            if word == "case":
                self._flush(frame)
                frame.cases.append("subject")
                return
            if word == "esac" and phase == "body":
                self._flush(frame)
                frame.cases.pop()
                frame.first = False
                return
            if word in _OPENERS or word in _CLOSERS:
                self._flush(frame)
                frame.first = word in _OPENERS
                return
            if word in ("for", "select", "function"):
                frame.expect = "function-name" if word == "function" else "for-name"
                frame.first = False
                return
            if word in ("time", "coproc"):
                frame.first = "maybe"
                return
        if first == "maybe" and word is not None and word.startswith("-"):
            return  # time -p
        frame.dbracket = word == "[[" and first is not False
        frame.words.append((raw, word, slots))
        frame.first = False

    def _flush(self, frame: _Frame) -> None:
        """A command ended: note the placeholders it hands to bash arithmetic (for the warnings)."""
        words, frame.words, frame.dbracket = frame.words, [], False
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

    # ----------------------------------------------------------------- frames

    def _command(self, frame: _Frame, i: int) -> int:
        text, state = self.text, frame.state
        c = text[i]
        if state == _SINGLE:
            return self._single(frame, i)
        if state == _DOUBLE:
            return self._double(frame, i)
        if state == _COMMENT:
            if c != "\n":
                return i + 1
            frame.state = _UNQUOTED
            return self._newline(frame, i)
        if text.startswith("\\\n", i):
            return i + 2  # a line continuation joins words: `ca\<newline>se` is `case`
        if c in _WORD_END:
            if c in "<>" and frame.word_start >= 0 and _FD.fullmatch(text, frame.word_start, i):
                frame.word_start = -1  # `2>file`: a file descriptor, not a word
            self._end_word(frame, i)
            if c in " \t":
                return i + 1
            if c == "\n":
                return self._newline(frame, i)
            if c in "()":
                return self._paren(frame, i)
            if c in "<>":
                return self._redirection(frame, i)
            return self._separator(frame, i)
        if c == "#" and frame.word_start < 0:
            if frame.arith or frame.dbracket:
                self._doubt("bash-only")
            frame.state = _COMMENT
            return i + 1
        self._word_char(frame, i, plain=c not in "\\'\"`$")
        if c == "\\":
            if i + 1 in self.spans:
                self.escaped = i + 1
                return i + 1
            return i + 2
        if c in "'\"":
            frame.state = _SINGLE if c == "'" else _DOUBLE
        elif c == "`":
            self._push(_Frame("backtick"))
        elif c == "$":
            return self._dollar(frame, i)
        return i + 1

    def _newline(self, frame: _Frame, i: int) -> int:
        phase = frame.cases[-1] if frame.cases else ""
        if phase in ("subject", "pattern"):
            self._doubt("case")
        if not frame.dbracket:  # bash allows newlines inside [[ ]]
            self._flush(frame)
            if phase in ("", "body"):
                frame.first, frame.expect = True, ""
        frame.redirect = False
        for _, delimiter, strip_tabs, quoted in reversed(self.pending):
            self._push(_Frame("heredoc", text=delimiter, strip_tabs=strip_tabs, quoted=quoted))
            self.bodies += 1
        self.pending.clear()
        return i + 1

    def _separator(self, frame: _Frame, i: int) -> int:
        """`;` `;;` `&` `&&` `|` `||` in a command frame."""
        text, c = self.text, self.text[i]
        two = text[i:i + 2]
        if frame.dbracket and two in ("&&", "||"):
            frame.words.append((two, two, []))
            return i + 2
        phase = frame.cases[-1] if frame.cases else ""
        if two in (";;", ";&"):  # also bash's ;;&: the next word is a pattern or esac
            if phase != "body":
                self._doubt("case")
            self._flush(frame)
            frame.cases[-1:] = ["patterns"]
            return i + 3 if text.startswith(";;&", i) else i + 2
        if c == "|" and phase in ("patterns", "pattern"):
            frame.cases[-1] = "pattern"  # between the patterns of one case item
            return i + 1
        if phase and phase != "body":
            self._doubt("case")
        if two == "&>":  # bash: stdout and stderr to a file
            frame.redirect = True
            return i + 2
        self._flush(frame)
        frame.first, frame.expect, frame.redirect = True, "", False
        return i + 2 if two in ("&&", "||", "|&") else i + 1

    def _paren(self, frame: _Frame, i: int) -> int:
        phase = frame.cases[-1] if frame.cases else ""
        if frame.dbracket:
            frame.words.append((self.text[i], self.text[i], []))
        elif self.text[i] == "(":
            if phase == "patterns":  # the optional ( before a pattern
                frame.cases[-1] = "pattern"
            elif phase and phase != "body":
                self._doubt("case")
            else:
                self._flush(frame)
                self._push(_Frame("paren"))
                if self.text.startswith("((", i):
                    self._push(_Frame("paren", arith=True))  # bash: (( arithmetic )); dash: ( ( ) )
                    return i + 2
        elif phase in ("patterns", "pattern"):  # a pattern's ) never closes a substitution
            frame.cases[-1] = "body"
            frame.first = True
        elif phase:
            self._doubt("case")
        elif frame.kind == "top":
            self.problems.append("a `)` closes nothing here; remove it or add the missing `(`")
        else:
            self._pop(frame)
        return i + 1

    def _redirection(self, frame: _Frame, i: int) -> int:
        text = self.text
        if text.startswith("<<", i) and not text.startswith("<<<", i):
            if frame.dbracket or frame.arith:
                self._doubt("bash-only")
                return i
            return self._heredoc_start(frame, i)
        if frame.dbracket:  # [[ a < b ]] compares strings
            frame.words.append((text[i], text[i], []))
            return i + 1
        frame.redirect, frame.first = True, False
        if text.startswith("<<<", i):
            return i + 3
        return i + 2 if text[i + 1:i + 2] in ("<", ">", "&", "|") else i + 1

    def _heredoc_start(self, frame: _Frame, i: int) -> int:
        text, n = self.text, len(self.text)
        j = i + 2
        strip_tabs = text.startswith("-", j)
        j += strip_tabs
        while j < n and text[j] in " \t":
            j += 1
        start, quoted, bad, delimiter = j, False, False, []
        while j < n and text[j] not in _WORD_END and not bad:
            c = text[j]
            if j in self.spans or c in "$`":
                bad = True
            elif c in "'\"":
                close = text.find(c, j + 1)
                inner = text[j + 1:close]
                bad = close < 0 or self._span_in(j, close) or any(ch in inner for ch in "\\$`\n")
                delimiter.append(inner)
                quoted, j = True, close + 1
            elif c == "\\":
                bad = j + 1 >= n or j + 1 in self.spans or text[j + 1] == "\n"
                delimiter.append(text[j + 1:j + 2])
                quoted, j = True, j + 2
            else:
                delimiter.append(c)
                j += 1
        if bad or j == start:
            self._doubt("delimiter")
            return j
        if self.pending and self.pending[0][0] is not frame:
            self._doubt("body-start")
            return j
        self.pending.append((frame, "".join(delimiter), strip_tabs, quoted))
        frame.first = False
        return j

    def _dollar(self, frame: _Frame, i: int) -> int:
        """`$` in a command, param, arith or bracket frame, or a here-document body."""
        text = self.text
        nxt = text[i + 1:i + 2]
        if i + 1 in self.spans:
            return i + 1  # `${{x}}`: a literal dollar before the value (see _plan)
        if text.startswith("$((", i):
            self._push(_Frame("arith", depth=1))
            return i + 3
        in_double = frame.state == _DOUBLE or frame.kind == "heredoc" or frame.in_double
        if nxt == "(":
            self._push(_Frame("cmdsub"))
        elif nxt == "{":
            self._push(_Frame("param", in_double=in_double))
        elif nxt == "[":
            self._push(_Frame("bracket", state=_DOUBLE if in_double else _UNQUOTED))
        elif nxt == "'" and not in_double and frame.kind in ("top", "cmdsub", "paren", "param"):
            frame.state, frame.ansi = _SINGLE, True  # bash's $'…' (dash: a $ and a '…')
        else:
            return i + 1
        return i + 2

    def _single(self, frame: _Frame, i: int) -> int:
        c = self.text[i]
        if c == "'":
            frame.state, frame.ansi = _UNQUOTED, False
        elif c == "\\" and frame.ansi:
            self._doubt("ansi")
        return i + 1

    def _double(self, frame: _Frame, i: int) -> int:
        c = self.text[i]
        if c == "\\":
            return i + 2 if self.text[i + 1:i + 2] in ("$", "`", '"', "\\", "\n") else i + 1
        if c == '"':
            frame.state = _UNQUOTED
        elif c == "`":
            self._push(_Frame("backtick"))
        elif c == "$":
            return self._dollar(frame, i)
        return i + 1

    def _arith(self, frame: _Frame, i: int) -> int:
        """`$(( … ))`: parentheses are counted; quotes and substitutions nest."""
        c = self.text[i]
        if frame.state == _SINGLE:
            return self._single(frame, i)
        if frame.state == _DOUBLE:
            return self._double(frame, i)
        if c == "(":
            frame.depth += 1
        elif c == ")":
            frame.depth -= 1
            if not frame.depth:
                if not self.text.startswith("))", i):
                    self._doubt("arith")  # `$((echo a) )`: bash reads $( ( ) ), dash refuses it
                    return i
                self._pop(frame)
                return i + 2
        elif c in "'\"":
            frame.state = _SINGLE if c == "'" else _DOUBLE
        elif c == "`":
            self._push(_Frame("backtick"))
        elif c == "$":
            return self._dollar(frame, i)
        elif c == "\\":
            return i + 1 if i + 1 in self.spans else i + 2
        return i + 1

    def _param(self, frame: _Frame, i: int) -> int:
        """`${ … }`: ends at the first unquoted `}`; braces do not nest (bash and dash agree)."""
        text, c = self.text, self.text[i]
        if frame.state == _SINGLE:
            return self._single(frame, i)
        if frame.state == _DOUBLE:
            return self._double(frame, i)
        if c == "}":
            self._pop(frame)
        elif c == "\\":
            if i + 1 in self.spans:
                self.escaped = i + 1
                return i + 1
            frame.text += text[i:i + 2]
            return i + 2
        elif c == "'" and frame.in_double:
            # Inside "${x:-'…'}" dash takes ' literally, bash (not as sh) as a quote: they agree
            # where the ${ ends only when the '…' holds none of these.
            close = text.find("'", i + 1)
            if close < 0 or self._span_in(i, close) or any(ch in text[i + 1:close] for ch in '}"`$\\'):
                self._doubt("param-quote")
                return i
            frame.text += text[i:close + 1]
            return close + 1
        elif c in "'\"":
            frame.state = _SINGLE if c == "'" else _DOUBLE
        elif c == "`":
            self._push(_Frame("backtick"))
        elif c == "$":
            frame.text += c
            return self._dollar(frame, i)
        else:
            frame.text += c
        return i + 1

    def _bracket(self, frame: _Frame, i: int) -> int:
        """`$[ … ]`: bash's old arithmetic, plain text to dash; only what both read alike passes."""
        c = self.text[i]
        if c == "]":
            if frame.depth:
                frame.depth -= 1
            else:
                self._pop(frame)
        elif c == "[":
            frame.depth += 1
        elif c == "$":
            return self._dollar(frame, i)
        elif c in "'\"`\\{}()<>;&|#\n":
            self._doubt("bracket")
            return i
        return i + 1

    def _backtick(self, frame: _Frame, i: int) -> int:
        c = self.text[i]
        if c == "\\":
            return i + 1 if i + 1 in self.spans else i + 2
        if c == "`":
            self._pop(frame)
        return i + 1

    def _heredoc(self, frame: _Frame, i: int) -> int:
        """A here-document body: ends at a line that is exactly the delimiter (after tabs, for <<-)."""
        text = self.text
        if frame.line_start:
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            line = text[i:end]
            if (line.lstrip("\t") if frame.strip_tabs else line) == frame.text:
                self._pop(frame)
                return end + 1
            frame.line_start = False
        c = text[i]
        if c == "\n":
            frame.line_start = True
        elif frame.quoted:
            pass
        elif c == "\\":
            if text.startswith("\\\n", i):
                self._doubt("body-backslash")
                return i
            return i + 2 if text[i + 1:i + 2] in ("$", "`", "\\") else i + 1
        elif c == "`":
            self._push(_Frame("backtick"))
        elif c == "$":
            return self._dollar(frame, i)
        return i + 1


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
    lexer = _Lexer(template, {m.start(): m.end() for m in matches})
    lexer.run()
    parts: list[str | _Slot] = []
    problems: list[str] = []
    warnings: list[str] = []
    pos = 0
    for match in matches:
        literal = template[pos:match.start()]
        expr = match.group(1).strip()
        where = f"{{{{ {expr} }}}}"
        state, refusal, warning = lexer.slots.get(match.start(), (_UNQUOTED, "doubt", None))
        if refusal == "doubt":
            what, fix = _DOUBTS.get(lexer.doubt, ("a construct roast cannot follow", "simplify the command"))
            problems.append(f"{where} comes after {what}, so roast cannot tell how the shell would "
                            f"quote it; {fix}")
        elif refusal:
            problems.append(_REFUSALS[refusal].format(where=where))
        elif state in (_UNQUOTED, _DOUBLE) and _ends_with_bare(literal, "$"):
            # `${{x}}` would become `$"…"` (bash: locale string) or `$${…}` (the shell's pid):
            # keep the dollar a literal dollar, as in render().
            literal = literal[:-1] + "\\$"
        elif state == _DOUBLE and _ends_with_bare(literal, "\\"):
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
        if part.state == _DOUBLE:
            pieces.append(f"${{{name}}}")
        elif part.state == _SINGLE:
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

