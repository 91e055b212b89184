"""Finding and loading workflow.yml (+ shared.yml) with line numbers; step-file lookup; fingerprints.

Reads files; runs nothing.

    >>> wf = load("deploy")                       # deploy/workflow.yml or roast/deploy/workflow.yml
    >>> wf.where(wf.data["steps"][0])             # 'deploy/workflow.yml:3'
    >>> wf.find_step("summarize")                 # StepFile(kind='prompt', ...)

The YAML itself goes through `roast.yaml_lines.parse()`, which keeps line numbers (`Map`, `Seq`,
`Str`) and refuses hostile input; its names are importable from here too, and sessions that
pickled them as `roast.workflow.Map` (before `yaml_lines` existed) load through these imports.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from roast.errors import UsageError, WorkflowInvalid
from roast.expressions import digest
from roast.yaml_lines import MAX_BYTES, MAX_DEPTH, MAX_NODES, Map, Segments, Seq, Str, line_of, origin, parse

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "Map", "Seq", "StepFile", "Str", "Workflow",
           "line_of", "load", "locate", "parse"]

_MINIMAL = "a minimal workflow is `steps: [\"$(echo hello)\"]`"


# --- finding and loading ------------------------------------------------------------------

def _shown(path: Path, cwd: Path | None = None) -> str:
    """`path` as messages show it: relative to `cwd` (default: the process's) when that is shorter,
    else absolute; both forms normalised. A relative `path` is taken relative to `cwd`."""
    try:
        base = os.path.abspath(cwd if cwd is not None else Path.cwd())
        absolute = os.path.normpath(os.path.join(base, path))
        rel = os.path.relpath(absolute, base)
    except (ValueError, OSError):
        return str(path)
    return rel if len(rel) < len(absolute) else absolute


def locate(arg: str | os.PathLike[str], cwd: Path | None = None) -> Path:
    """Find the workflow file for `arg` (SPEC §1); absolute and resolved.

    A file is itself; a directory means `<dir>/workflow.yml`; otherwise `roast/<arg>/workflow.yml`
    under `cwd` (Roast's lookup). Raises `UsageError` listing the paths it tried.
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    text = os.fspath(arg)
    if not text or "\0" in text:
        raise UsageError(f"workflow {text!r} is not a valid path",
                         hint="give a workflow.yml, a directory holding one, or a name under ./roast/")
    given = base / text
    if given.is_file():
        return given.resolve()
    if given.is_dir():
        inside = given / "workflow.yml"
        if inside.is_file():
            return inside.resolve()
        raise UsageError(f"workflow {text!r} not found (the directory has no workflow.yml: "
                         f"looked for {_shown(inside, base)})",
                         hint="create workflow.yml there, or give the path of the workflow file")
    # A `*.yml` argument names the file itself; a relative one may also be Roast's roast/NAME.
    file_like = Path(text).suffix in (".yml", ".yaml")
    named = base / "roast" / text / "workflow.yml" if not (file_like or Path(text).is_absolute()) else None
    if named is not None and named.is_file():
        return named.resolve()
    tried = [given] if file_like else [given, given / "workflow.yml"]
    tried += [named] if named is not None else []
    shown = dict.fromkeys(_shown(path, base) for path in tried)  # each once, in lookup order
    hint = "give a workflow.yml, a directory holding one, or a name under ./roast/"
    if not given.parent.is_dir():
        hint = (f"the directory {_shown(given.parent, base)} does not exist (moved or renamed?); "
                "give the workflow's current path")
    raise UsageError(f"workflow {text!r} not found (looked for {', '.join(shown)})", hint=hint)


def filter_key(arg: str | None) -> str | None:
    """What `--workflow W` matches: an existing workflow (file, directory, roast/NAME) means its
    workflow.yml path; anything else is taken as a workflow name."""
    if arg is None:
        return None
    try:
        return str(locate(arg))
    except UsageError:
        return arg


def _read_text(path: Path, shown: str) -> str:
    """Read a UTF-8 file of at most 1 MiB (without reading more than that into memory)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise WorkflowInvalid(f"cannot read the file: {err.strerror or err}", where=shown,
                              hint="check that it exists and is readable") from err
    if len(raw) > MAX_BYTES:
        raise WorkflowInvalid(f"the file is larger than 1 MiB ({MAX_BYTES:,} bytes)", where=shown,
                              hint="move parts into shared.yml or step files")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise WorkflowInvalid(f"the file is not valid UTF-8 (byte 0x{raw[err.start]:02x})",
                              where=f"{shown}:{line}", hint="save the file as UTF-8") from err


_DOC_START = re.compile(r"\A((?:[ \t]*(?:#[^\n]*)?\n)*)---[ \t]*(?:#[^\n]*)?(?=\n|\Z)")


def _drop_document_start(text: str) -> str:
    """Blank a leading `---` line (same line count), so workflow.yml can follow shared.yml."""
    return _DOC_START.sub(lambda m: m.group(1), text, count=1)


class StepFile:
    """A step found on disk: a prompt (`name/prompt.md`), a Python file or a shell script."""

    __slots__ = ("kind", "path", "text", "output_template", "shown", "output_shown", "executable")

    def __init__(self, kind: str, path: Path, text: str, output_template: str | None = None, shown: str = "",
                 output_shown: str = "", executable: bool = True) -> None:
        self.kind = kind                        # "prompt" | "python" | "shell"
        self.path = path
        self.text = text                        # prompt template, Python source or shell script
        self.output_template = output_template  # prompts: `output.txt` beside `prompt.md`
        self.shown = shown                      # `path` as messages show it
        self.output_shown = output_shown        # the same for `output.txt`
        self.executable = executable            # shell scripts: may it be run (os.access X_OK)?

    def __repr__(self) -> str:
        return f"StepFile(kind={self.kind!r}, path={self.path!r})"


_STEP_KINDS = (("prompt", "{}/prompt.md"), ("python", "{}.py"), ("shell", "{}.sh"))
_FILE_KINDS = {".md": "prompt", ".py": "python", ".sh": "shell"}  # a config's `path:` naming a file


def _valid_step_name(name: str) -> bool:
    if not name or name in {".", ".."} or "\0" in name or ".." in name:
        return False
    return not any(sep and sep in name for sep in ("/", "\\", os.sep, os.altsep))


class Workflow:
    """A loaded workflow: its file, top-level mapping, and the step files looked up so far."""

    def __init__(self, path: Path, data: Map, text: str, *, shared_path: Path | None = None,
                 shared_text: str | None = None, segments: Segments | None = None,
                 cwd: Path | None = None) -> None:
        self.path = path
        self.directory = path.parent
        self.data = data
        self.text = text
        self.shared_path = shared_path
        self.shared_text = shared_text
        self._cwd = cwd
        self._segments: list[tuple[int, str]] = list(segments or [(1, _shown(path, cwd))])
        self._step_files: dict[Path, str] = {}
        self._absent: set[Path] = set()  # step files looked for and not there (a new one would win)
        self._found: dict[tuple[str, str | None], StepFile | None] = {}
        declared = data.get("name")
        if isinstance(declared, str) and declared.strip():
            self.name = str(declared)
        elif path.name == "workflow.yml" and path.parent.name:
            self.name = path.parent.name
        else:
            self.name = path.stem

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, {str(self.path)!r})"

    @property
    def steps(self) -> Seq:
        """The `steps:` list (checked non-empty by `load`)."""
        steps = self.data["steps"]
        assert isinstance(steps, Seq)
        return steps

    def where(self, node_or_line: object) -> str:
        """`"wf/workflow.yml:12"` for a parsed node or line; shared.yml lines name shared.yml."""
        line = node_or_line if isinstance(node_or_line, int) and not isinstance(
            node_or_line, bool) else line_of(node_or_line)
        if line is None or line <= 0:
            return self._segments[-1][1]
        name, file_line = origin(line, self._segments)
        return f"{name}:{file_line}"

    def config_for(self, name: str) -> Map | None:
        """The top-level key `name` when it is a mapping (a step's configuration)."""
        value = self.data.get(name)
        return value if isinstance(value, Map) else None

    def _search_dirs(self, search_path: str | None) -> list[Path]:
        first = self.directory / search_path if search_path else self.directory
        return [first, self.directory.parent / "shared"]

    def _candidates(self, name: str, search_path: str | None) -> list[tuple[str, Path]]:
        """Where step `name` may be, in lookup order, as (kind, path). A `search_path` with a step
        file's suffix that is no directory names the file itself (issue 11)."""
        if search_path:
            target = self.directory / search_path
            kind = _FILE_KINDS.get(target.suffix)
            if kind is not None and not target.is_dir():
                return [(kind, target)]
        return [(kind, directory / pattern.format(name)) for directory in self._search_dirs(search_path)
                for kind, pattern in _STEP_KINDS]

    def find_step(self, name: str, search_path: str | None = None) -> StepFile | None:
        """Find step `name`: `name/prompt.md`, `name.py`, `name.sh`, in `search_path` (relative
        to the workflow directory) or the workflow directory, then in `../shared/`; or the file
        `search_path` itself when it is one (`noop.py`, `scripts/deploy.sh`, `x/prompt.md`).

        Names with path separators or `..` give None. Every file read counts in `fingerprint()`.
        """
        if not _valid_step_name(name):
            return None
        cache_key = (name, search_path)
        if cache_key in self._found:
            return self._found[cache_key]
        found: StepFile | None = None
        try:
            for kind, candidate in self._candidates(name, search_path):
                if candidate.is_file():
                    found = self._step_file(kind, candidate)
                    break
                self._absent.add(candidate)
        except (ValueError, OSError):   # a NUL or an unusable search_path: nothing there
            found = None
        self._found[cache_key] = found
        return found

    def looked_for(self, name: str, search_path: str | None = None) -> list[str]:
        """The files `find_step(name, search_path)` looks at, as messages show them."""
        if not _valid_step_name(name):
            return []
        try:
            return [_shown(path, self._cwd) for _, path in self._candidates(name, search_path)]
        except (ValueError, OSError):
            return []

    def _step_file(self, kind: str, path: Path) -> StepFile:
        found = StepFile(kind, path, self._read_step(path), shown=_shown(path, self._cwd))
        if kind == "prompt" and path.name == "prompt.md":
            template = path.parent / "output.txt"
            if template.is_file():
                found.output_template = self._read_step(template)
                found.output_shown = _shown(template, self._cwd)
            else:
                self._absent.add(template)
        elif kind == "shell":
            # issue 11: found by `roast validate`, not by a failed run after an event was consumed
            found.executable = os.access(path, os.X_OK)
        return found

    def read_json(self, relative: str) -> tuple[Any, str | None]:
        """A JSON file beside the workflow (a wait's schema); it counts in `fingerprint()` like a step
        file. Returns (value, None) or (None, what is wrong)."""
        import json

        if not relative.endswith(".json") or "\0" in relative:
            return None, f"{relative!r} is not a .json file name"
        path = (self.directory / relative)
        try:
            text = self._read_step(path)
        except WorkflowInvalid as err:
            return None, err.message
        try:
            return json.loads(text), None
        except ValueError as err:
            return None, f"{_shown(path, self._cwd)} is not valid JSON ({err})"

    def _read_step(self, path: Path) -> str:
        text = _read_text(path, _shown(path, self._cwd))
        self._step_files[path] = text
        return text

    def step_candidates(self, search_path: str | None = None) -> list[str]:
        """Names of the steps present on disk, for did-you-mean suggestions."""
        names: set[str] = set()
        for directory in self._search_dirs(search_path):
            try:
                entries = list(directory.iterdir())
            except (OSError, ValueError):
                continue
            for entry in entries:
                try:
                    if entry.is_dir() and (entry / "prompt.md").is_file():
                        names.add(entry.name)
                    elif entry.suffix in {".py", ".sh"} and entry.is_file():
                        names.add(entry.stem)
                except OSError:
                    continue
        return sorted(names)

    def sources(self) -> dict[str, str | None]:
        """Every file this definition was read from, with `digest()` of its text as read, and every
        file looked for but absent (None). `unchanged(sources)` later tells, without parsing,
        whether a fresh load could give anything else."""
        files: dict[str, str | None] = {str(self.path): digest(self.text)}
        shared = self.shared_path or self.path.parent.parent / "shared.yml"
        files[str(shared)] = digest(self.shared_text) if self.shared_text is not None else None
        files.update({str(path): None for path in self._absent})
        files.update({str(path): digest(text) for path, text in self._step_files.items()})
        return files

    def fingerprint(self) -> str:
        """Hex sha256 of workflow.yml, shared.yml and every step file found so far."""
        digest = hashlib.sha256()

        def feed(label: str, text: str) -> None:
            data = text.encode("utf-8", "surrogatepass")
            digest.update(f"{label}\0{len(data)}\0".encode("utf-8", "surrogatepass"))
            digest.update(data)

        feed("workflow.yml", self.text)
        if self.shared_text is not None:
            feed("shared.yml", self.shared_text)
        for path in sorted(self._step_files):
            feed(os.path.relpath(path, self.directory), self._step_files[path])
        return digest.hexdigest()


def load(arg: str | os.PathLike[str], cwd: Path | None = None) -> Workflow:
    """Locate, read and check a workflow (SPEC §1, §2, §10).

    `shared.yml` one level above the workflow directory is prepended as text (Roast): its
    anchors can be used, its top-level keys merge, and the workflow's keys win.

        >>> wf = load("deploy")
        >>> [line_of(step) for step in wf.steps]
    """
    path = locate(arg, cwd)
    shown = _shown(path, cwd)
    text = _read_text(path, shown)
    shared_path: Path | None = path.parent.parent / "shared.yml"
    shared_text: str | None = None
    segments: list[tuple[int, str]] = [(1, shown)]
    combined = text
    if shared_path is not None and shared_path.is_file():
        shared_shown = _shown(shared_path, cwd)
        shared_text = _read_text(shared_path, shared_shown)
        prefix = shared_text + "\n"
        segments = [(1, shared_shown), (prefix.count("\n") + 1, shown)]
        combined = prefix + _drop_document_start(text)
    else:
        shared_path = None
    key = (path, cwd, combined)
    fresh = _FRESH[-1] if _FRESH else None  # issue 25: a workflow just read for its `target:`, parsed once
    if fresh is not None and fresh[0] == key and not fresh[1]._found:
        return fresh[1]
    data = parse(combined, shown, line_offset_map=segments)
    if not isinstance(data, Map):
        kind = "empty" if data is None else f"a {_kind(data)}"
        raise WorkflowInvalid(f"workflow.yml must be a mapping with a `steps:` list (it is {kind})",
                              where=shown, hint=_MINIMAL)
    workflow = Workflow(path, data, text, shared_path=shared_path, shared_text=shared_text,
                        segments=segments, cwd=cwd)
    steps = data.get("steps")
    if "steps" not in data:
        raise WorkflowInvalid("the workflow has no `steps:` list", where=shown, hint=_MINIMAL)
    line = data.key_lines.get("steps")
    if not isinstance(steps, Seq):
        kind = "empty" if steps is None else f"a {_kind(steps)}"
        raise WorkflowInvalid(f"`steps:` must be a list of steps (it is {kind})",
                              where=workflow.where(line), hint=_MINIMAL)
    if not steps:
        raise WorkflowInvalid("`steps:` is empty: there is nothing to run",
                              where=workflow.where(line), hint=_MINIMAL)
    _FRESH[:] = [(key, workflow)]
    return workflow


# The last workflow `load` parsed, handed out again until a step of it is looked up (a compile starts;
# issue 25: `roast execute` reads `target:`, then compiles: one YAML parse, not two). Same path, cwd, text.
_FRESH: list[tuple[tuple[Path, Path | None, str], Workflow]] = []


def _kind(value: object) -> str:
    if isinstance(value, Map):
        return "mapping"
    if isinstance(value, Seq):
        return "list"
    if isinstance(value, str):
        return "string"
    return type(value).__name__
