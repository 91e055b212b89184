"""Roast's tools for models (`tools:`), confined to the workflow's working directory.

Owns what `tools:` may say (`parse_tools`, and `check_tools` for `roast validate`), the function
definitions offered to the model (`function_definitions`), and running one call (`run_tool`,
`run_call`). Tool names, function names, parameters and result texts follow Roast 0.4
(`lib/roast/tools/*.rb`): `Roast::Tools::ReadFile` → `read_file(path, max_tokens)`, `SearchFile` →
`search_for_file(glob_pattern, path)`, `Grep` → `grep(string, max_tokens)`, `WriteFile` →
`write_file(path, content)`, and `Cmd` → one function per allowed command (`ls(args, timeout)`).

A call's result is text for the model, bounded in size. What the model got wrong (bad arguments, a
missing file, a refused path) comes back as `error: …` for it to read; only programming errors
raise. The rules, whatever the model sends:
- file tools reach only files whose real path (symlinks resolved, also for a file not yet created)
  is inside the root; Grep and SearchFile never walk through a symlink out of it;
- `Cmd` runs only the command names in its allow-list, as an argv list, never through a shell:
  `;`, `|` or `$(…)` in the arguments are just arguments. The allow-list is the only confinement:
  an allowed command may read or write outside the root if its arguments say so (`ls /etc`), and
  some run arbitrary code (Roast's default list has `ruby` and `find`, which has `-exec`);
- nothing here evaluates `{{ }}` or a shell in what a tool returns: tool output is data.
A `ToolSpec` is the permission itself: build them with `parse_tools`, not by hand.
"""
from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from roast.errors import UsageError, WorkflowInvalid

READ_FILE, SEARCH_FILE, GREP = "Roast::Tools::ReadFile", "Roast::Tools::SearchFile", "Roast::Tools::Grep"
CMD, WRITE_FILE = "Roast::Tools::Cmd", "Roast::Tools::WriteFile"
TOOLS = (READ_FILE, SEARCH_FILE, GREP, CMD, WRITE_FILE)
# Roast tools this version does not provide (they need a terminal, an agent CLI, or run a shell).
NOT_PROVIDED = ("Roast::Tools::Bash", "Roast::Tools::ApplyDiff", "Roast::Tools::AskUser",
                "Roast::Tools::CodingAgent", "Roast::Tools::Swarm", "Roast::Tools::UpdateFiles")
# Roast's Cmd::DEFAULT_ALLOWED_COMMANDS, with its descriptions.
DEFAULT_COMMANDS = (
    ("pwd", "pwd command - print current working directory path"),
    ("find", "find command - search for files/directories using patterns like -name '*.rb'"),
    ("ls", "ls command - list directory contents with options like -la, -R"),
    ("rake", "rake command - run Ruby tasks defined in Rakefile"),
    ("ruby", "ruby command - execute Ruby code or scripts, supports -e for inline code"),
    ("dev", "Shopify dev CLI - development environment tool with subcommands"),
    ("mkdir", "mkdir command - create directories, supports -p for parent directories"),
)
CONFIG_KEYS = {CMD: ("allowed_commands",), WRITE_FILE: ("allowed_paths",)}
# A bare command name is also a valid OpenAI function name: no '/', no spaces, no options.
BARE_COMMAND = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
# The model's keys are not the commands' business (a command's output goes back to the model).
SECRET_VARIABLES = frozenset({"OPENAI_API_KEY", "OPENROUTER_API_KEY"})

CMD_TIMEOUT, MAX_CMD_TIMEOUT = 30, 600  # seconds; Roast's Cmd default is 30
MAX_WALK = 20_000  # directory entries Grep or SearchFile look at, at most
MAX_LISTED = 200  # paths SearchFile lists
MAX_MATCH_LINES = 100  # Roast's Grep::MAX_RESULT_LINES
MAX_GREP_FILE = 4 << 20  # larger files are not searched
MAX_LINE = 300  # characters shown of one matching line
NOTE_ROOM = 160  # bytes kept free for a "[truncated: …]" note
MIN_MAX_BYTES = 256


class ToolSpec(NamedTuple):
    """One function offered to the model: Roast's tool `name`, the `function` the model calls (for Cmd:
    the command), WriteFile's `paths` (`allowed_paths`; empty = anywhere in root), a `description`."""

    name: str
    function: str
    paths: tuple[str, ...] = ()
    description: str | None = None


class _Refused(Exception):
    """A call the model got wrong; becomes an `error: …` result."""


# -- tools: in the workflow


def parse_tools(spec: Any) -> tuple[ToolSpec, ...]:
    """The functions a workflow's `tools:` list offers; raises UsageError listing every problem.

    `[Roast::Tools::ReadFile, {Roast::Tools::Cmd: {allowed_commands: [git, make]}},
    {Roast::Tools::WriteFile: {allowed_paths: ["out/**"]}}]`
    """
    tools, problems = _parse(spec)
    if problems:
        count = len(problems)
        raise WorkflowInvalid(f"`tools:` has {count} problem{'s' if count > 1 else ''}",
                              problems=[UsageError(p, hint=None) for p in problems])
    return tools


def check_tools(spec: Any) -> list[str]:
    """The problems `parse_tools` would raise, as strings (for `roast validate`)."""
    return _parse(spec)[1]


def _parse(spec: Any) -> tuple[tuple[ToolSpec, ...], list[str]]:
    if spec is None:
        return (), []
    if not isinstance(spec, (list, tuple)):
        example = f"[{READ_FILE}, {GREP}]"
        return (), [f"tools must be a list of tool names (e.g. {example}), got {type(spec).__name__}"]
    tools: list[ToolSpec] = []
    problems: list[str] = []
    seen: set[str] = set()
    offered: dict[str, str] = {}
    for i, item in enumerate(spec):
        where = f"tools[{i}]"
        if isinstance(item, str):
            name, config = item, None
        elif isinstance(item, Mapping) and len(item) == 1:
            name, config = next(iter(item.items()))
        elif isinstance(item, Mapping):
            problems.append(f"{where}: a configured tool is a one-key mapping such as "
                            f"{{{CMD}: {{allowed_commands: [ls]}}}}, got {len(item)} keys "
                            f"({', '.join(map(str, item))})")
            continue
        else:
            problems.append(f"{where}: must be a tool name or a one-key mapping "
                            f"{{tool name: configuration}}, got {type(item).__name__}")
            continue
        found = _tool_problem(where, name, seen)
        if found:
            problems.append(found)
            continue
        seen.add(name)
        new, config_problems = _configured(where, name, config)
        problems += config_problems
        for tool in new:
            if tool.function in offered:
                problems.append(f"{where}: function {tool.function!r} is also offered by "
                                f"{offered[tool.function]}; the model could not tell them apart: keep one")
            else:
                offered[tool.function] = where
                tools.append(tool)
    return tuple(tools), problems


def _tool_problem(where: str, name: object, seen: set[str]) -> str | None:
    if not isinstance(name, str):
        return f"{where}: a tool name is a string such as {READ_FILE!r}, got {type(name).__name__}"
    if name in NOT_PROVIDED:
        return (f"{where}: {name!r} is a Roast tool not provided by this version of roast; "
                f"available: {', '.join(TOOLS)}")
    if name not in TOOLS:
        return f"{where}: unknown tool {name!r}" + _did_you_mean(name, TOOLS, show_all=True)
    if name in seen:
        return f"{where}: {name!r} is listed twice; list each tool once"
    return None


def _configured(where: str, name: str, config: object) -> tuple[list[ToolSpec], list[str]]:
    if config is not None and not isinstance(config, Mapping):
        return [], [f"{where}: the configuration of {name} must be a mapping, got {type(config).__name__}"]
    config = config or {}
    if "url" in config or "command" in config:
        return [], [f"{where}: {name} looks like an MCP tool (url/command); roast does not run MCP tools"]
    allowed = CONFIG_KEYS.get(name, ())
    problems = []
    for key in config:
        if key not in allowed:
            if not allowed:
                problems.append(f"{where}: {name} takes no configuration, got {key!r}")
            else:
                problems.append(f"{where}: {name} has no option {key!r} (it has {', '.join(allowed)})"
                                + _did_you_mean(str(key), allowed))
    if name == CMD:
        commands, cmd_problems = _commands(where, config.get("allowed_commands"))
        return [ToolSpec(CMD, command, (), text) for command, text in commands], problems + cmd_problems
    if name == WRITE_FILE:
        paths, path_problems = _allowed_paths(where, config.get("allowed_paths"))
        return [ToolSpec(WRITE_FILE, "write_file", paths)], problems + path_problems
    return [ToolSpec(name, _FUNCTIONS[name])], problems


def _commands(where: str, value: object) -> tuple[list[tuple[str, str]], list[str]]:
    if value is None:
        return list(DEFAULT_COMMANDS), []
    where = f"{where}: allowed_commands"
    if not isinstance(value, (list, tuple)):
        return [], [f"{where} must be a list of command names, got {type(value).__name__}"]
    defaults = dict(DEFAULT_COMMANDS)
    commands: list[tuple[str, str]] = []
    problems = []
    for i, entry in enumerate(value):
        description = None
        if isinstance(entry, Mapping):  # Roast's {name:, description:} form
            description = entry.get("description")
            entry = entry.get("name")
            if entry is None:
                problems.append(f"{where}[{i}] needs a 'name' (and may have a 'description')")
                continue
        if not isinstance(entry, str) or not BARE_COMMAND.fullmatch(entry):
            problems.append(f"{where}[{i}]: {entry!r} is not a bare command name (letters, digits, - and _; "
                            "no '/', spaces or options: the model passes the arguments)")
        elif description is not None and not isinstance(description, str):
            problems.append(f"{where}[{i}]: the description of {entry!r} must be a string")
        elif entry in dict(commands):
            problems.append(f"{where}[{i}]: {entry!r} is listed twice")
        else:
            commands.append((entry, description or defaults.get(entry) or f"Execute the {entry} command"))
    return commands, problems


def _allowed_paths(where: str, value: object) -> tuple[tuple[str, ...], list[str]]:
    if value is None:
        return (), []
    where = f"{where}: allowed_paths"
    if not isinstance(value, (list, tuple)):
        got = type(value).__name__
        return (), [f"{where} must be a list of paths or globs inside the working directory, got {got}"]
    problems = []
    for i, entry in enumerate(value):
        if not isinstance(entry, str) or not entry.strip() or "\x00" in entry:
            problems.append(f"{where}[{i}] must be a non-empty path or glob, got {entry!r}")
        elif entry.startswith(("/", "~")) or ".." in entry.split("/"):
            problems.append(f"{where}[{i}]: {entry!r} points outside the working directory; use a path "
                            "relative to it such as 'out/**' (writes never leave it anyway)")
    return tuple(value) if not problems else (), problems


def _did_you_mean(word: str, choices: Sequence[str], *, show_all: bool = False) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (available: {', '.join(choices)})" if show_all else ""


# -- what the model sees

_FUNCTIONS = {READ_FILE: "read_file", SEARCH_FILE: "search_for_file", GREP: "grep", WRITE_FILE: "write_file"}
_MAX_TOKENS = ("integer", "Optional maximum tokens to return (the text is cut, and says so, beyond it)")
# function → ({parameter: (JSON type, description)}, required)
_PARAMETERS: dict[str, tuple[dict[str, tuple[str, str]], tuple[str, ...]]] = {
    "read_file": ({"path": ("string", "The path to the file to read, relative to the working directory"),
                   "max_tokens": _MAX_TOKENS}, ("path",)),
    "search_for_file": ({
        "glob_pattern": ("string", "A glob pattern to search for. Example: 'test/**/*_test.rb'"),
        "path": ("string", "The directory to search from (default: '.')"),
    }, ("glob_pattern",)),
    "grep": ({"string": ("string", "The string to search for (a fixed string, not a regular expression)"),
              "max_tokens": _MAX_TOKENS}, ("string",)),
    "write_file": ({"path": ("string", "The path to the file to write, relative to the working directory"),
                    "content": ("string", "The content to write to the file")}, ("path", "content")),
}
_CMD_PARAMETERS: tuple[dict[str, tuple[str, str]], tuple[str, ...]] = ({
    "args": ("string", ("Arguments to pass to the command, split like a shell splits words (quotes work), "
                        "but no shell runs: no pipes, redirection, variables, globbing or command chaining")),
    "timeout": ("integer", f"Timeout in seconds (optional, default: {CMD_TIMEOUT})"),
}, ())
_DESCRIPTIONS = {
    "read_file": "Read the contents of a text file. (If the path is a directory, list its entries.) "
                 "Only files inside the working directory can be read.",
    "search_for_file": "Search for files in the working directory using a glob pattern ('**/' is prefixed "
                       "unless the pattern starts with '**'; {a,b} alternatives work). Lists the matching "
                       "paths, or shows the file when exactly one matches. Hidden directories are skipped.",
    "grep": "Search the files of the working directory for a string, case-insensitively, like "
            "`grep -rniF`. Shows each matching file, then line-number:line for each match (at most "
            f"{MAX_MATCH_LINES} lines). Hidden directories, binary files and symlinks are skipped.",
    "write_file": "Write content to a file. Creates the file (and its directories) if it does not exist, "
                  "or overwrites it if it does. Only files inside the working directory can be written.",
}


def function_definitions(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The OpenAI `tools=[{"type": "function", "function": {...}}]` definitions for `tools`."""
    definitions = []
    for tool in tools:
        properties, required = _parameters(tool)
        description = tool.description or _DESCRIPTIONS[tool.function]
        if tool.paths:
            description += f" Only these paths (globs) may be written: {', '.join(tool.paths)}."
        definitions.append({"type": "function", "function": {
            "name": tool.function,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {k: {"type": t, "description": d} for k, (t, d) in properties.items()},
                "required": list(required),
                "additionalProperties": False,
            },
        }})
    return definitions


def _parameters(tool: ToolSpec) -> tuple[dict[str, tuple[str, str]], tuple[str, ...]]:
    return _CMD_PARAMETERS if tool.name == CMD else _PARAMETERS[tool.function]


# -- running one call


def run_call(tools: Sequence[ToolSpec], function: str, arguments_json: str, *, root: Path,
             max_bytes: int = 65536) -> str:
    """Run the model's call of `function` among `tools`; an unknown function is an `error: …` result."""
    for tool in tools:
        if tool.function == function:
            return run_tool(tool, arguments_json, root=root, max_bytes=max_bytes)
    names = [t.function for t in tools]
    return (f"error: there is no tool function {function!r}"
            + _did_you_mean(str(function), names) + f"; available: {', '.join(names) or 'none'}")


def run_tool(tool: ToolSpec, arguments_json: str, *, root: Path, max_bytes: int = 65536) -> str:
    """Run one call of `tool` with the model's JSON arguments, inside `root`; at most `max_bytes` of text.

    `run_tool(ls, '{"args": "-a src"}', root=wf_dir)` → `"Command: ls -a src\\nExit status: 0\\nOutput:\\n…"`.
    """
    run = _RUNNERS.get(tool.name)
    if run is None:
        raise ValueError(f"no tool {tool.name!r}: build ToolSpecs with parse_tools()")
    if max_bytes < MIN_MAX_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES}, got {max_bytes}")
    real_root = Path(os.path.realpath(root))
    if not real_root.is_dir():
        raise ValueError(f"the tools' root {str(root)!r} is not a directory")
    try:
        text = run(tool, _arguments(tool, arguments_json), real_root, max_bytes)
    except _Refused as err:
        text = f"error: {err}"
    return _bounded(text, max_bytes)


def _arguments(tool: ToolSpec, raw: str) -> dict[str, Any]:
    try:
        args = json.loads(raw) if raw and raw.strip() else {}
    except ValueError as err:
        raise _Refused(f"the arguments are not valid JSON ({err}); send a JSON object") from None
    if not isinstance(args, dict):
        raise _Refused(f"the arguments must be a JSON object, got {_json_type(args)}")
    properties, required = _parameters(tool)
    unexpected = sorted(set(args) - set(properties))
    if unexpected:
        raise _Refused(f"unexpected argument {', '.join(map(repr, unexpected))} for {tool.function}; "
                       f"it takes: {', '.join(properties) or 'nothing'}")
    for name in required:
        if args.get(name) is None:
            raise _Refused(f"{tool.function} needs the argument {name!r}")
    for name, value in args.items():
        kind = properties[name][0]
        if value is None or (name == "args" and tool.name == CMD and _string_list(value)):
            continue
        if not (isinstance(value, str) if kind == "string" else type(value) is int):
            article = "an" if kind == "integer" else "a"
            raise _Refused(f"{name!r} must be {article} {kind}, got {_json_type(value)}")
    return args


def _string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _json_type(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _inside(root: Path, raw: Any) -> Path:
    """The real path of `raw` (relative to root, or absolute), if it is inside root."""
    if not isinstance(raw, str) or not raw:
        raise _Refused("the path must be a non-empty string")
    if "\x00" in raw:
        raise _Refused(f"the path {raw!r} contains a NUL byte")
    real = os.path.realpath(os.path.join(root, raw))  # symlinks resolved, also under a missing file
    if not _within(real, root):
        raise _Refused(f"{raw!r} leads outside the working directory {root} (through '..', an absolute "
                       "path or a symlink); only files inside it can be used")
    return Path(real)


def _within(real: str, root: Path) -> bool:
    return os.path.commonpath([real, root]) == str(root)


def _rel(path: str | Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _os_error(err: OSError, raw: str, doing: str) -> _Refused:
    return _Refused(f"cannot {doing} {raw!r}: {err.strerror or err}")


def _truncated(data: bytes, limit: int, total: int, what: str) -> str:
    """`data` cut to `limit` bytes, saying so when `total` (the whole size) is more."""
    if total <= limit and len(data) <= limit:
        return data.decode("utf-8", "replace")
    head = data[:limit].decode("utf-8", "replace")
    while len(head.encode()) > limit:  # a character cut in two became a 3-byte U+FFFD
        head = head[:-1]
    return f"{head}\n[truncated: {what}: showing the first {len(head.encode())} of {total} bytes]"


def _bounded(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return _truncated(data, max_bytes - NOTE_ROOM, len(data), "the result is longer")


# ReadFile


def _read_file(tool: ToolSpec, args: dict[str, Any], root: Path, max_bytes: int) -> str:
    raw = args["path"]
    path = _inside(root, raw)
    limit = max_bytes - NOTE_ROOM
    if args.get("max_tokens") is not None:
        limit = max(1, min(limit, args["max_tokens"] * 4))  # ~4 bytes a token, as Roast's truncator
    try:
        if path.is_dir():
            return _listing(path, root)
        data, size = _read(path, limit)
    except OSError as err:
        raise _os_error(err, raw, "read") from None
    if b"\x00" in data[:8192]:
        raise _Refused(f"{raw!r} is a binary file ({size} bytes); read_file shows text files only")
    return _truncated(data, limit, max(size, len(data)), _rel(path, root))


def _listing(path: Path, root: Path) -> str:
    entries = sorted(os.scandir(path), key=lambda e: e.name)
    lines = [f"{_rel(path, root)}/ ({len(entries)} entries)"]
    for entry in entries[:MAX_LISTED]:
        if entry.is_symlink():
            lines.append(f"{entry.name}@")
        elif entry.is_dir():
            lines.append(f"{entry.name}/")
        else:
            lines.append(f"{entry.name}  ({entry.stat().st_size} bytes)")
    if len(entries) > MAX_LISTED:
        lines.append(f"… and {len(entries) - MAX_LISTED} more")
    return "\n".join(lines) + "\n"


# WriteFile


def _write_file(tool: ToolSpec, args: dict[str, Any], root: Path, max_bytes: int) -> str:
    raw, content = args["path"], args["content"]
    path = _inside(root, raw)
    rel = _rel(path, root)
    if path == root:
        raise _Refused(f"{raw!r} is the working directory itself; name a file in it")
    if tool.paths and not _allowed(rel, tool.paths):
        raise _Refused(f"{raw!r} ({rel}) is not in this workflow's allowed_paths for write_file: "
                       f"{', '.join(tool.paths)}; write there instead")
    try:
        os.makedirs(path.parent, exist_ok=True)
        if not _within(os.path.realpath(path.parent), root):  # changed since _inside resolved it
            raise _Refused(f"{raw!r} leads outside the working directory {root}")
        # O_NOFOLLOW: the resolved path must not have become a symlink; O_NONBLOCK: a FIFO fails, not hangs.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(path, flags, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _Refused(f"{raw!r} is not a regular file")
        os.ftruncate(fd, 0)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(content)
    except OSError as err:
        raise _os_error(err, raw, "write") from None
    lines = content.count("\n") + (1 if content and not content.endswith("\n") else 0)  # Ruby's lines.count
    return f"Successfully wrote {lines} lines to {raw}"


def _allowed(rel: str, patterns: Sequence[str]) -> bool:
    """`rel`, or a directory containing it, matches one of the globs."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    regexes = [r for p in patterns for r in _glob_regexes(p.rstrip("/"))]
    return any(r.match(c) for r in regexes for c in candidates)


# SearchFile


def _search_for_file(tool: ToolSpec, args: dict[str, Any], root: Path, max_bytes: int) -> str:
    pattern, raw = args["glob_pattern"], args.get("path") or "."
    if not pattern or "\x00" in pattern:
        raise _Refused("glob_pattern must be a non-empty pattern such as '**/*.py'")
    base = _inside(root, raw)
    if not base.is_dir():
        raise _Refused(f"{raw!r} is not a directory; path is the directory to search from")
    if not pattern.startswith("**"):  # Roast prefixes **/ to the pattern
        pattern = f"**/{pattern}"
    regexes = _glob_regexes(pattern)
    found: list[str] = []
    files = _Files(base, root, links=True)
    for full in files:
        if any(r.match(_rel(full, base)) for r in regexes):
            found.append(_rel(full, root))
    if not found:
        return f"No results found for {pattern} in {raw}" + files.note
    if len(found) == 1:  # Roast shows the file itself
        limit = max_bytes - 2 * NOTE_ROOM
        try:
            data, size = _read(root / found[0], limit)
        except OSError:
            return found[0]
        if b"\x00" in data[:8192]:
            return found[0]
        return f"{found[0]} (the only match):\n{_truncated(data, limit, size, found[0])}"
    found.sort()
    shown = found[:MAX_LISTED]
    if len(found) > MAX_LISTED:
        shown.append(f"… and {len(found) - MAX_LISTED} more (use a narrower pattern)")
    return "\n".join(shown) + files.note


class _Files:
    """The regular files below `base` (full paths, sorted), at most MAX_WALK of them. Hidden and
    symlinked directories are not entered; a symlinked file is listed only with `links` and only if
    its real path is inside root. `note` says when the walk stopped early."""

    def __init__(self, base: Path, root: Path, *, links: bool) -> None:
        self.base, self.root, self.links, self.note = base, root, links, ""

    def __iter__(self) -> Iterator[str]:
        count = 0
        for directory, dirs, names in os.walk(self.base, followlinks=False):
            dirs[:] = sorted(d for d in dirs
                             if not d.startswith(".") and not os.path.islink(os.path.join(directory, d)))
            for name in sorted(names):
                full = os.path.join(directory, name)
                if os.path.islink(full) and not (self.links and _within(os.path.realpath(full), self.root)):
                    continue
                if not os.path.isfile(full):  # FIFOs, sockets, devices: reading them could block
                    continue
                count += 1
                if count > MAX_WALK:
                    self.note = f"\n[stopped after looking at {MAX_WALK} files; search a narrower path]"
                    return
                yield full


def _read(path: Path | str, limit: int) -> tuple[bytes, int]:
    """Up to `limit + 1` bytes of a regular file, and its size."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the open
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return fh.read(limit + 1), os.fstat(fd).st_size


def _glob_regexes(pattern: str) -> list[re.Pattern[str]]:
    return [_glob_regex(p) for p in _braces(pattern)]


def _braces(pattern: str, limit: int = 64) -> list[str]:
    """`*.{py,rb}` → `*.py`, `*.rb` (as Ruby's Dir.glob); at most `limit` patterns."""
    depth, start = 0, -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            depth, start = depth + 1, i if depth == 0 else start
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                options, level, last = [], 0, start + 1
                for j in range(start + 1, i):
                    level += {"{": 1, "}": -1}.get(pattern[j], 0)
                    if pattern[j] == "," and level == 0:
                        options.append(pattern[last:j])
                        last = j + 1
                options.append(pattern[last:i])
                if len(options) > 1:
                    head, tail = pattern[:start], pattern[i + 1:]
                    expanded = [x for option in options for x in _braces(head + option + tail, limit)]
                    if len(expanded) > limit:
                        raise _Refused(f"the pattern {pattern!r} has too many {{a,b}} alternatives")
                    return expanded
    return [pattern]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Glob → regex: `**/` any directories, `*` and `?` within one name, `[abc]` / `[!abc]` classes."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        ch = pattern[i]
        end = pattern.find("]", i + 2) if ch == "[" else -1
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif end != -1:
            body = pattern[i + 1:end]
            negate = body[:1] in ("!", "^")
            chars = "".join(c if c == "-" else re.escape(c) for c in (body[1:] if negate else body))
            out.append(f"[^/{chars}]" if negate else f"[{chars}]")
            i = end + 1
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


# Grep


def _grep(tool: ToolSpec, args: dict[str, Any], root: Path, max_bytes: int) -> str:
    needle = args["string"]
    if not needle or "\x00" in needle or "\n" in needle:
        raise _Refused("string must be a non-empty, single-line string to search for")
    wanted = needle.lower()
    lines: list[str] = []
    matches = 0
    files = _Files(root, root, links=False)  # like rg: symlinks are not followed
    for full in files:
        try:
            data, size = _read(full, MAX_GREP_FILE)
        except OSError:
            continue  # unreadable: no match
        if size > MAX_GREP_FILE or b"\x00" in data[:8192]:
            continue  # too large, or binary
        heading = False
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if wanted not in line.lower():
                continue
            matches += 1
            if matches > MAX_MATCH_LINES:
                continue
            if not heading:
                lines += ([""] if lines else []) + [_rel(full, root)]
                heading = True
            text = line.strip()
            lines.append(f"{number}:{text[:MAX_LINE]}{'…' if len(text) > MAX_LINE else ''}")
    if not matches:
        return f"No matches for {needle!r}" + files.note
    if matches > MAX_MATCH_LINES:
        lines.append(f"[truncated: showing the first {MAX_MATCH_LINES} of {matches} matching lines; "
                     "search for something more specific]")
    text = "\n".join(lines) + files.note
    limit = args.get("max_tokens")
    if limit is not None:
        data = text.encode()
        return _truncated(data, max(1, limit * 4), len(data), "the matches")
    return text


# Cmd


def _cmd(tool: ToolSpec, args: dict[str, Any], root: Path, max_bytes: int) -> str:
    import shlex
    import shutil
    import signal
    import subprocess
    import tempfile

    command = tool.function
    if not BARE_COMMAND.fullmatch(command):  # parse_tools allows no other; a hand-made spec gets this
        raise _Refused(f"{command!r} is not a bare command name; only allowed commands run, by name")
    given = args.get("args") or ""
    if isinstance(given, str):
        try:
            words = shlex.split(given)  # words only: shlex expands nothing and runs nothing
        except ValueError as err:
            raise _Refused(f"cannot split args {given!r}: {err}") from None
    else:
        words = list(given)
    timeout = max(1, min(args.get("timeout") or CMD_TIMEOUT, MAX_CMD_TIMEOUT))
    argv = [command, *words]
    shown = shlex.join(argv)
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}
    # Only absolute PATH entries: a relative one ('.', 'bin') would find a file the model put in root.
    search = os.pathsep.join(d for d in env.get("PATH", os.defpath).split(os.pathsep) if os.path.isabs(d))
    executable = shutil.which(command, path=search)
    if executable is None:
        raise _Refused(f"the command {command!r} is not installed here (not found on PATH)")
    with tempfile.TemporaryFile() as out:  # a file, not a pipe: a flood of output costs no memory
        try:
            proc = subprocess.Popen(argv, executable=executable, shell=False, cwd=root,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        except OSError as err:
            raise _Refused(f"cannot run {shown}: {err.strerror or err}") from None
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise _Refused(f"{shown} timed out after {timeout} s and was stopped") from None
        finally:
            try:  # its own session: whatever it left running in the background goes too
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        size = os.fstat(out.fileno()).st_size
        head = f"Command: {shown}\nExit status: {status}\nOutput:\n"  # Roast's Cmd result format
        limit = max(0, max_bytes - len(head.encode()) - NOTE_ROOM)
        out.seek(0)
        data = out.read(limit + 1)
    return head + _truncated(data, limit, size, "the output")


_RUNNERS: dict[str, Callable[[ToolSpec, dict[str, Any], Path, int], str]] = {
    READ_FILE: _read_file, SEARCH_FILE: _search_for_file, GREP: _grep, CMD: _cmd, WRITE_FILE: _write_file,
}
