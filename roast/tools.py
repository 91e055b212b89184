"""Roast's tools for models (`tools:`): what a workflow may offer, and what the model is told.

Owns what `tools:` may say (`parse_tools`, and `check_tools` for `roast validate`) and the function
definitions offered to the model (`function_definitions`). Pure: no file, process or environment is
touched here; running a call, confined to the working directory, is `roast.tool_calls`. Tool names,
function names, parameters and result texts follow Roast 0.4 (`lib/roast/tools/*.rb`):
`Roast::Tools::ReadFile` → `read_file(path, max_tokens)`, `SearchFile` → `search_for_file(glob_pattern,
path)`, `Grep` → `grep(string, max_tokens)`, `WriteFile` → `write_file(path, content)`, and `Cmd` → one
function per allowed command (`ls(args, timeout)`).
A `ToolSpec` is the permission itself: build them with `parse_tools`, not by hand.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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
CMD_TIMEOUT, MAX_CMD_TIMEOUT = 30, 600  # seconds; Roast's Cmd default is 30
MAX_MATCH_LINES = 100  # Roast's Grep::MAX_RESULT_LINES


class ToolSpec(NamedTuple):
    """One function offered to the model: Roast's tool `name`, the `function` the model calls (for Cmd:
    the command), WriteFile's `paths` (`allowed_paths`; empty = anywhere in root), a `description`."""

    name: str
    function: str
    paths: tuple[str, ...] = ()
    description: str | None = None


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
        return f"{where}: unknown tool {name!r}" + did_you_mean(name, TOOLS, show_all=True)
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
                                + did_you_mean(str(key), allowed))
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


def did_you_mean(word: str, choices: Sequence[str], *, show_all: bool = False) -> str:
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
        properties, required = parameters(tool)
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


def parameters(tool: ToolSpec) -> tuple[dict[str, tuple[str, str]], tuple[str, ...]]:
    return _CMD_PARAMETERS if tool.name == CMD else _PARAMETERS[tool.function]
