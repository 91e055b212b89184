"""Running one call of a model's tool (`run_call`, `run_tool`), confined to the working directory and
kept away from roast's own secrets and code.

A call's result is text for the model, bounded in size. What the model got wrong (bad arguments, a
missing file, a refused path) comes back as `error: …` for it to read; only programming errors
raise. The rules, whatever the model sends:
- file tools reach only files whose real path (symlinks resolved, also for a file not yet created)
  is inside the root; Grep and SearchFile never walk through a symlink out of it;
- no file tool reads, lists, searches or writes roast's own files, even inside the root: the signing
  keys (`ROAST_KEY_FILE`, `ROAST_SECRET_KEY_FILE`), the SQLite store (`ROAST_STORE`: the file, its
  -wal/-shm/-journal, its key and locks) and everything under `ROAST_HOME` (issue 21: a model that
  reads the key forges approval links). Paths are compared resolved, and files also by inode;
- `write_file` never changes the running workflow's definition (workflow.yml, shared.yml, step and
  prompt files, schemas, compiled `__pycache__`): a step file the model wrote would run as code;
- `Cmd` runs only the command names in its allow-list, as an argv list, never through a shell:
  `;`, `|` or `$(…)` in the arguments are just arguments, and the command's environment holds no
  secret roast knows of (`secret_variable`). The allow-list is the only other confinement: an
  allowed command may read or write outside the root if its arguments say so (`ls /etc`), and some
  run arbitrary code (Roast's default list has `ruby` and `find`, which has `-exec`);
- nothing here evaluates `{{ }}` or a shell in what a tool returns: tool output is data.
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

from roast.tools import (BARE_COMMAND, CMD, CMD_TIMEOUT, GREP, MAX_CMD_TIMEOUT, MAX_MATCH_LINES, READ_FILE,
                         SEARCH_FILE, WRITE_FILE, ToolSpec, did_you_mean, parameters)

MAX_WALK = 20_000  # directory entries Grep or SearchFile look at, at most
MAX_LISTED = 200  # paths SearchFile lists
MAX_GREP_FILE = 4 << 20  # larger files are not searched
MAX_LINE = 300  # characters shown of one matching line
NOTE_ROOM = 160  # bytes kept free for a "[truncated: …]" note
MIN_MAX_BYTES = 256

# Secrets a command a model runs must not see (its output goes back to the model, into the store and
# onto approval pages): roast's own, PostgreSQL's, and any name that says it holds a credential.
_SECRET_NAMES = frozenset({"ROAST_STORE", "ROAST_KEY_FILE", "ROAST_SECRET_KEY_FILE", "ROAST_SECRET_VARIABLES",
                           "DATABASE_URL", "SSH_AUTH_SOCK"})
_SECRET_PATTERN = re.compile(r"^PG|(?:^|_)(?:TOKENS?|SECRETS?|PASSWORD|PASSWD|PASSPHRASE|KEYS?|API_KEY|"
                             r"CREDENTIALS?|AUTH)$")
# What a workflow's definition is made of (workflow.py: `name/prompt.md`, `name.py`, `name.sh`,
# `output.txt`, schemas): write_file changes none of them in the workflow's directory or ../shared.
_DEFINITION_SUFFIXES = frozenset({".yml", ".yaml", ".py", ".pyc", ".sh", ".rb", ".md", ".json"})


class _Refused(Exception):
    """A call the model got wrong; becomes an `error: …` result."""


def secret_variable(name: str, extra: str = "") -> bool:
    """Whether the environment variable `name` holds a secret a model's command must not see: a
    credential of roast's (tokens, webhook secrets, keys, the store URL), PostgreSQL's `PG*`, any
    `*_TOKEN`, `*_SECRET`, `*_PASSWORD`, `*_KEY`, `*_API_KEY` …, and the names (or `*` patterns) in
    `extra` (`ROAST_SECRET_VARIABLES`, comma- or space-separated)."""
    upper = name.upper()
    if upper in _SECRET_NAMES or _SECRET_PATTERN.search(upper):
        return True
    if extra:
        import fnmatch

        return any(fnmatch.fnmatchcase(name, word) for word in re.split(r"[\s,]+", extra) if word)
    return False


class _Own(NamedTuple):
    """Roast's own files as real paths: `secret` ones no tool touches (files, directories, inodes) and
    the running workflow's `definition` that write_file leaves alone."""

    files: frozenset[str]
    dirs: tuple[str, ...]
    inodes: frozenset[tuple[int, int]]
    definition_dirs: tuple[str, ...]
    definition_files: frozenset[str]

    @classmethod
    def of(cls, environ: Mapping[str, str], workflow: str | None) -> _Own:
        files, dirs = [], []
        for variable in ("ROAST_KEY_FILE", "ROAST_SECRET_KEY_FILE"):
            if environ.get(variable):
                files.append(os.path.expanduser(environ[variable]))
        dirs.append(os.path.expanduser(environ.get("ROAST_HOME") or "~/.roast"))
        url = environ.get("ROAST_STORE", "")
        if url.startswith("sqlite:"):  # as api.open_store reads it: the file, and a store directory beside it
            db = url[len("sqlite://"):] if url.startswith("sqlite://") else url[len("sqlite:"):]
            if db and db != "/":
                files += [db + suffix for suffix in ("", "-wal", "-shm", "-journal")]
                home = os.path.dirname(db) or "."
                files.append(os.path.join(home, "secret.key"))
                dirs.append(os.path.join(home, "locks"))
        real_files = frozenset(os.path.realpath(f) for f in files)
        inodes = set()
        for file in real_files:
            try:
                found = os.stat(file)
            except (OSError, ValueError):
                continue
            inodes.add((found.st_dev, found.st_ino))
        definition_dirs: tuple[str, ...] = ()
        definition_files: frozenset[str] = frozenset()
        if workflow and not workflow.startswith("<"):
            real = os.path.realpath(workflow)
            directory = os.path.dirname(real)
            definition_dirs = (directory, os.path.join(os.path.dirname(directory), "shared"))
            definition_files = frozenset({real, os.path.join(os.path.dirname(directory), "shared.yml")})
        return cls(real_files, tuple(os.path.realpath(d) for d in dirs), frozenset(inodes), definition_dirs,
                   definition_files)

    def secret(self, real: str) -> bool:
        """Whether the real path `real` is one of roast's secrets (or a hard link to one)."""
        if real in self.files or any(_within(real, Path(d)) for d in self.dirs):
            return True
        try:
            found = os.stat(real)
        except (OSError, ValueError):
            return False
        return (found.st_dev, found.st_ino) in self.inodes

    def definition(self, real: str) -> bool:
        """Whether writing `real` would change the running workflow's definition."""
        if real in self.definition_files:
            return True
        path = Path(real)
        return any(_within(real, Path(d)) for d in self.definition_dirs) and (
            path.suffix in _DEFINITION_SUFFIXES or path.name == "output.txt" or "__pycache__" in path.parts)

    def check(self, real: str | Path, raw: str) -> None:
        if self.secret(str(real)):
            raise _Refused(f"refused: {raw!r} is roast's own file (a signing key, the session store, or under "
                           "ROAST_HOME); no tool reads, lists or writes it")


# -- running one call


def run_call(tools: Sequence[ToolSpec], function: str, arguments_json: str, *, root: Path,
             workflow: str | None = None, max_bytes: int = 65536) -> str:
    """Run the model's call of `function` among `tools`; an unknown function is an `error: …` result.
    `workflow` is the running workflow's file: write_file leaves its definition alone."""
    for tool in tools:
        if tool.function == function:
            return run_tool(tool, arguments_json, root=root, workflow=workflow, max_bytes=max_bytes)
    names = [t.function for t in tools]
    return (f"error: there is no tool function {function!r}"
            + did_you_mean(str(function), names) + f"; available: {', '.join(names) or 'none'}")


def run_tool(tool: ToolSpec, arguments_json: str, *, root: Path, workflow: str | None = None,
             max_bytes: int = 65536) -> str:
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
        own = _Own.of(os.environ, workflow)  # read per call: the environment is the process's, now
        text = run(tool, _arguments(tool, arguments_json), real_root, max_bytes, own)
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
    properties, required = parameters(tool)
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


def _inside(root: Path, raw: Any, own: _Own) -> Path:
    """The real path of `raw` (relative to root, or absolute), if it is inside root and not roast's own."""
    if not isinstance(raw, str) or not raw:
        raise _Refused("the path must be a non-empty string")
    if "\x00" in raw:
        raise _Refused(f"the path {raw!r} contains a NUL byte")
    real = os.path.realpath(os.path.join(root, raw))  # symlinks resolved, also under a missing file
    if not _within(real, root):
        raise _Refused(f"{raw!r} leads outside the working directory {root} (through '..', an absolute "
                       "path or a symlink); only files inside it can be used")
    own.check(real, raw)
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


def _read_file(tool: ToolSpec, args: dict[str, Any], root: Path, max_bytes: int, own: _Own) -> str:
    raw = args["path"]
    path = _inside(root, raw, own)
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


def _write_file(tool: ToolSpec, args: dict[str, Any], root: Path, max_bytes: int, own: _Own) -> str:
    raw, content = args["path"], args["content"]
    path = _inside(root, raw, own)
    rel = _rel(path, root)
    if path == root:
        raise _Refused(f"{raw!r} is the working directory itself; name a file in it")
    if own.definition(str(path)):  # issue 21: a step file the model wrote would run as code
        raise _Refused(f"refused: {raw!r} is part of the running workflow's definition (its workflow.yml, "
                       "shared.yml, step, prompt or schema files); write_file never changes the workflow "
                       "itself: write your result elsewhere")
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


def _search_for_file(tool: ToolSpec, args: dict[str, Any], root: Path, max_bytes: int, own: _Own) -> str:
    pattern, raw = args["glob_pattern"], args.get("path") or "."
    if not pattern or "\x00" in pattern:
        raise _Refused("glob_pattern must be a non-empty pattern such as '**/*.py'")
    base = _inside(root, raw, own)
    if not base.is_dir():
        raise _Refused(f"{raw!r} is not a directory; path is the directory to search from")
    if not pattern.startswith("**"):  # Roast prefixes **/ to the pattern
        pattern = f"**/{pattern}"
    regexes = _glob_regexes(pattern)
    found: list[str] = []
    files = _Files(base, root, own, links=True)
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
    symlinked directories, and roast's own, are not entered; a symlinked file is listed only with
    `links` and only if its real path is inside root; roast's own files never. `note` says when the
    walk stopped early."""

    def __init__(self, base: Path, root: Path, own: _Own, *, links: bool) -> None:
        self.base, self.root, self.own, self.links, self.note = base, root, own, links, ""

    def __iter__(self) -> Iterator[str]:
        count = 0
        for directory, dirs, names in os.walk(self.base, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(
                directory, d)) and not self.own.secret(os.path.join(directory, d)))
            for name in sorted(names):
                full = os.path.join(directory, name)
                if os.path.islink(full) and not (self.links and _within(os.path.realpath(full), self.root)):
                    continue
                if not os.path.isfile(full) or self.own.secret(os.path.realpath(full)):
                    continue  # FIFOs, sockets, devices (reading them could block); roast's own files
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


def _grep(tool: ToolSpec, args: dict[str, Any], root: Path, max_bytes: int, own: _Own) -> str:
    needle = args["string"]
    if not needle or "\x00" in needle or "\n" in needle:
        raise _Refused("string must be a non-empty, single-line string to search for")
    wanted = needle.lower()
    lines: list[str] = []
    matches = 0
    files = _Files(root, root, own, links=False)  # like rg: symlinks are not followed
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


def _cmd(tool: ToolSpec, args: dict[str, Any], root: Path, max_bytes: int, own: _Own) -> str:
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
    extra = os.environ.get("ROAST_SECRET_VARIABLES", "")
    env = {k: v for k, v in os.environ.items() if not secret_variable(k, extra)}
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


_RUNNERS: dict[str, Callable[[ToolSpec, dict[str, Any], Path, int, _Own], str]] = {
    READ_FILE: _read_file, SEARCH_FILE: _search_for_file, GREP: _grep, CMD: _cmd, WRITE_FILE: _write_file,
}
