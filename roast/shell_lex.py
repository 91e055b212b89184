"""The POSIX sh lexer behind shell-safe interpolation: just enough of the sh grammar (quotes,
comments, words, reserved words, `$( )`, `( )`, `$(( ))`, `${ }`, `$[ ]`, backticks, here-documents)
to know the quoting context of each `{{ }}` placeholder in a `$( … )` command, which placeholders
cannot be quoted safely (refused), which sit where bash evaluates arithmetic (`(( ))`, `$[ ]`,
`${a[…]}`, `${s:…}`), and the words of each command. `roast.shell` turns what it finds into the
placeholder plan, the command-level arithmetic warnings and `render_shell`.
Pure; imports nothing from roast and performs no I/O of its own.
"""
from __future__ import annotations

import re

# The quoting state a placeholder sits in (also `roast.shell`'s choice of how to reference it).
UNQUOTED, SINGLE, DOUBLE = "unquoted", "single", "double"
_COMMENT = "comment"
_WORD_END = frozenset(" \t\n;&|()<>")
_COMMANDS = frozenset({"top", "cmdsub", "paren"})  # frames holding commands (and so words)
# POSIX 2.4: after these reserved words the next word is again the first word of a command.
_OPENERS = frozenset({"if", "then", "else", "elif", "while", "until", "do", "!", "{"})
_CLOSERS = frozenset({"fi", "done", "}"})
_FD = re.compile(r"[0-9]+")
_SUBSCRIPT = re.compile(r"[#!]?[A-Za-z_][A-Za-z0-9_]*\[[^\]]*\Z")
_SUBSTRING = re.compile(r"[#!]?(?:[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?|[0-9]+|[@*]):(?![-=?+])")


class _Frame:
    """A lexing context: a command frame (the whole command, a `$( )` or a `( )` subshell), a
    `$(( ))`, a `${ }`, a `$[ ]`, a backtick substitution or a here-document body."""

    __slots__ = ("kind", "state", "depth", "arith", "in_double", "ansi", "first", "expect", "cases",
                 "word_start", "plain", "word_slots", "words", "dbracket", "redirect", "text",
                 "strip_tabs", "quoted", "line_start")

    def __init__(self, kind: str, state: str = UNQUOTED, depth: int = 0, arith: bool = False,
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


class Lexer:
    """Just enough of the POSIX sh grammar to know the quoting context of each placeholder.

    Tracks unquoted, '…' and "…" text (backslash escapes honoured outside single quotes), comments,
    words and where a command starts (so `case … in pattern)` is told from a closing parenthesis,
    as POSIX 2.4 recognises reserved words), `$( )` and `( )` (fresh unquoted contexts), `$(( ))`,
    `${ }`, `$[ ]`, backticks and here-documents. Where bash (also as sh) and dash read a
    construct differently, or roast cannot follow it, the lexer stops and records a doubt: the
    placeholders after it are refused rather than quoted by guess.
    """

    __slots__ = ("bodies", "commands", "doubt", "escaped", "pending", "problems", "slots", "spans",
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
        # the words of each command, in the order the commands ended (for the warnings)
        self.commands: list[list[tuple[str, str | None, list[tuple[int, int]]]]] = []

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
        if frame.state == SINGLE:
            return "a single quote (') is not closed"
        if frame.state == DOUBLE:
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
        elif self.pending and (frame is not self.pending[0][0] or frame.state not in (UNQUOTED, _COMMENT)):
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
        """A command ended: keep its words for `roast.shell`'s arithmetic warnings."""
        words, frame.words, frame.dbracket = frame.words, [], False
        if words:
            self.commands.append(words)

    # ----------------------------------------------------------------- frames

    def _command(self, frame: _Frame, i: int) -> int:
        text, state = self.text, frame.state
        c = text[i]
        if state == SINGLE:
            return self._single(frame, i)
        if state == DOUBLE:
            return self._double(frame, i)
        if state == _COMMENT:
            if c != "\n":
                return i + 1
            frame.state = UNQUOTED
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
            frame.state = SINGLE if c == "'" else DOUBLE
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
        in_double = frame.state == DOUBLE or frame.kind == "heredoc" or frame.in_double
        if nxt == "(":
            self._push(_Frame("cmdsub"))
        elif nxt == "{":
            self._push(_Frame("param", in_double=in_double))
        elif nxt == "[":
            self._push(_Frame("bracket", state=DOUBLE if in_double else UNQUOTED))
        elif nxt == "'" and not in_double and frame.kind in ("top", "cmdsub", "paren", "param"):
            frame.state, frame.ansi = SINGLE, True  # bash's $'…' (dash: a $ and a '…')
        else:
            return i + 1
        return i + 2

    def _single(self, frame: _Frame, i: int) -> int:
        c = self.text[i]
        if c == "'":
            frame.state, frame.ansi = UNQUOTED, False
        elif c == "\\" and frame.ansi:
            self._doubt("ansi")
        return i + 1

    def _double(self, frame: _Frame, i: int) -> int:
        c = self.text[i]
        if c == "\\":
            return i + 2 if self.text[i + 1:i + 2] in ("$", "`", '"', "\\", "\n") else i + 1
        if c == '"':
            frame.state = UNQUOTED
        elif c == "`":
            self._push(_Frame("backtick"))
        elif c == "$":
            return self._dollar(frame, i)
        return i + 1

    def _arith(self, frame: _Frame, i: int) -> int:
        """`$(( … ))`: parentheses are counted; quotes and substitutions nest."""
        c = self.text[i]
        if frame.state == SINGLE:
            return self._single(frame, i)
        if frame.state == DOUBLE:
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
            frame.state = SINGLE if c == "'" else DOUBLE
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
        if frame.state == SINGLE:
            return self._single(frame, i)
        if frame.state == DOUBLE:
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
            frame.state = SINGLE if c == "'" else DOUBLE
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
