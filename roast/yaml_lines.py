"""YAML with line numbers: the one wrapper, `parse()`, around PyYAML's safe loading, with a
constructor that builds `Map`, `Seq` and `Str` (a mapping, list and string that remember their
line), and refuses hostile input before it can hurt: size, nesting depth, alias expansion,
recursive aliases, duplicate keys (SPEC §10, reliability.md §5 row 8). Errors name the file and
line, also when the text is several files joined (`origin`). libyaml parses when PyYAML has it;
whatever it refuses is parsed again by the pure-Python parser, so every error has one wording.

Parses text it is given; performs no I/O of its own. yaml is imported on the first parse only.

    >>> parse("steps:\n  - $(date)\n", "wf.yml")["steps"].line
    2

Sessions saved before this module existed pickled `Map`/`Seq`/`Str` as `roast.workflow.*`; that
module still imports them, so those sessions load.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence

from roast.errors import WorkflowInvalid

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import Any

    import yaml

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "Map", "Segments", "Seq", "Str", "line_of", "origin",
           "parse"]

MAX_BYTES = 1_048_576   # SPEC §10: workflow files ≤ 1 MiB
MAX_DEPTH = 100         # SPEC §10: nesting ≤ 100 levels
MAX_NODES = 100_000     # SPEC §10: alias expansion under a node budget


# --- line-tracking values -------------------------------------------------------------------

class Map(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers its line (`line`) and the line of each key (`key_lines`)."""

    line: int
    key_lines: dict[object, int]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.line = 0
        self.key_lines = {}

    def __reduce__(self) -> tuple[object, ...]:
        # Items go through the dictitems slot, so pickle memoizes the Map before its values.
        return (Map, (), {"line": self.line, "key_lines": self.key_lines}, None, iter(self.items()))


class Seq(list):  # type: ignore[type-arg]
    """A YAML sequence that remembers its line."""

    line: int

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.line = 0

    def __reduce__(self) -> tuple[object, ...]:
        return (Seq, (), {"line": self.line}, iter(self))


class Str(str):
    """A YAML string that remembers its line. Compares and hashes like the plain string."""

    line: int

    def __new__(cls, value: str = "", line: int = 0) -> Str:  # noqa: PYI034 - Self is 3.11+
        obj = super().__new__(cls, value)
        obj.line = line
        return obj

    def __reduce__(self) -> tuple[object, ...]:
        return (Str, (str(self), self.line))


def line_of(node: object) -> int | None:
    """The 1-based line of a parsed `Map`/`Seq`/`Str`, or None for anything else."""
    line = getattr(node, "line", None)
    return line if isinstance(line, int) and not isinstance(line, bool) and line > 0 else None


# --- the loader -----------------------------------------------------------------------------

Segments = Sequence[tuple[int, str]]


def origin(line: int, segments: Segments) -> tuple[str, int]:
    """Map a line of the parsed text to (file name, line in that file)."""
    name, first = segments[0][1], 1
    for start, filename in segments:
        if start <= line:
            name, first = filename, start
    return name, line - first + 1


def _segment(line: int, segments: Segments) -> int:
    return sum(1 for start, _ in segments if start <= line)


@functools.cache
def _loaders() -> tuple[Any, ...]:
    """The loaders, built on first use: yaml is imported only when a file is parsed (a resume of
    an unchanged workflow never parses, so never pays for it). libyaml's parser first, when PyYAML
    has it (issue 25: ten times faster than the pure one), then the pure-Python SafeLoader, whose
    wording every error is reported in. Both build with the same constructor, below."""
    import yaml

    class _Build(yaml.constructor.SafeConstructor):
        """SafeConstructor building `Map`/`Seq`/`Str`; keeps `1:30` as text (YAML 1.1 would make it 90)."""

        def construct_yaml_str(self, node: yaml.ScalarNode) -> Str:  # type: ignore[override]
            return Str(self.construct_scalar(node), node.start_mark.line + 1)

        def construct_yaml_int(self, node: yaml.ScalarNode) -> int | Str:  # type: ignore[override]
            value = self.construct_scalar(node)
            if ":" in value:   # sexagesimal: keep the text so durations can refuse it (SPEC §10)
                return Str(value, node.start_mark.line + 1)
            return super().construct_yaml_int(node)  # type: ignore[no-any-return]

        def construct_yaml_float(self, node: yaml.ScalarNode) -> float | Str:  # type: ignore[override]
            value = self.construct_scalar(node)
            if ":" in value:
                return Str(value, node.start_mark.line + 1)
            return super().construct_yaml_float(node)  # type: ignore[no-any-return]

        def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Str:  # type: ignore[override]
            # Roast refuses dates (Psych DisallowedClass); we keep the text rather than a datetime.
            return Str(self.construct_scalar(node), node.start_mark.line + 1)

        def construct_yaml_seq(self, node: yaml.SequenceNode) -> Iterator[Seq]:  # type: ignore[override]
            data = Seq()
            data.line = node.start_mark.line + 1
            yield data
            data.extend(self.construct_sequence(node))

        def construct_yaml_map(self, node: yaml.MappingNode) -> Iterator[Map]:  # type: ignore[override]
            data = Map()
            data.line = node.start_mark.line + 1
            yield data
            self.flatten_mapping(node)   # merge keys (`<<: *base`) first, own keys after: later wins
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=False)
                try:
                    hash(key)
                except TypeError as err:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        "found unhashable key", key_node.start_mark) from err
                data[key] = self.construct_object(value_node, deep=False)
                data.key_lines[key] = key_node.start_mark.line + 1

    _Build.add_constructor("tag:yaml.org,2002:str", _Build.construct_yaml_str)
    _Build.add_constructor("tag:yaml.org,2002:int", _Build.construct_yaml_int)
    _Build.add_constructor("tag:yaml.org,2002:float", _Build.construct_yaml_float)
    _Build.add_constructor("tag:yaml.org,2002:timestamp", _Build.construct_yaml_timestamp)
    _Build.add_constructor("tag:yaml.org,2002:seq", _Build.construct_yaml_seq)
    _Build.add_constructor("tag:yaml.org,2002:map", _Build.construct_yaml_map)

    class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer,
                  _Build, yaml.resolver.Resolver):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            _Build.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    if not getattr(yaml, "__with_libyaml__", False):
        return (_Loader,)

    class _CLoader(yaml.cyaml.CParser, _Build, yaml.resolver.Resolver):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            yaml.cyaml.CParser.__init__(self, stream)
            _Build.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return (_CLoader, _Loader)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _refuse(msg: str, line: int | None, segments: Segments, hint: str) -> WorkflowInvalid:
    if line is None:
        return WorkflowInvalid(msg, where=segments[-1][1], hint=hint)
    name, file_line = origin(line, segments)
    return WorkflowInvalid(msg, where=f"{name}:{file_line}", hint=hint)


def _prescan_depth(text: str, segments: Segments) -> None:
    """Refuse nesting deeper than MAX_DEPTH before the (recursive) composer sees it.

    The event parser keeps its stack on the heap, so even libyaml's is safe here (it is the C
    *composer* that crashes on deep input: reliability.md §5 row 8). A syntax error ends the
    scan quietly: the real parse reports it with the usual message.
    """
    import yaml

    loaders = [yaml.SafeLoader]
    if getattr(yaml, "__with_libyaml__", False):
        loaders.insert(0, yaml.CSafeLoader)
    for loader_cls in loaders:
        loader = loader_cls(text)
        depth = 0
        try:
            while loader.check_event():
                event = loader.get_event()
                if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise _refuse(f"the document nests deeper than {MAX_DEPTH} levels",
                                      event.start_mark.line + 1, segments,
                                      "flatten the structure; roast refuses deeper nesting "
                                      "to stay safe on hostile input")
                elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                    depth -= 1
            return
        except WorkflowInvalid:
            raise
        except Exception:  # noqa: BLE001, S112 - try the pure parser; parse() reports errors
            continue
        finally:
            loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_duplicates(loader: Any, node: yaml.MappingNode, is_root: bool,
                      segments: Segments) -> None:
    import yaml

    first: dict[object, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            continue   # construction reports the unhashable key
        line = key_node.start_mark.line + 1
        if key in first:
            before = first[key]
            # Roast prepends shared.yml as text; a workflow key overriding a shared key is the
            # point of it (later wins), so only duplicates within one file are refused.
            if is_root and _segment(before, segments) != _segment(line, segments):
                first[key] = line
                continue
            _, before_line = origin(before, segments)
            _, again_line = origin(line, segments)
            raise _refuse(f"duplicate key {key!r} (first at line {before_line}, "
                          f"again at line {again_line})", line, segments,
                          "remove one of them; YAML would silently keep only the last")
        first[key] = line


def _check_graph(loader: Any, root: yaml.Node, segments: Segments) -> None:
    """Walk the composed node graph once (iteratively): duplicates, cycles, expanded size/depth."""
    import yaml

    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    distinct = 0
    aliased = False
    stack: list[tuple[yaml.Node, Iterator[yaml.Node]]] = []

    def enter(node: yaml.Node) -> None:
        nonlocal distinct
        distinct += 1
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(loader, node, node is root, segments)
        on_path.add(id(node))
        stack.append((node, iter(_children(node))))

    enter(root)
    while stack:
        node, pending = stack[-1]
        for child in pending:
            if id(child) in on_path:
                raise _refuse("recursive alias: a node refers to itself through an alias",
                              child.start_mark.line + 1, segments,
                              "an alias (*name) may only refer to a node that is complete "
                              "before the alias")
            if id(child) in size:
                aliased = True
                continue
            enter(child)
            break
        else:
            stack.pop()
            on_path.discard(id(node))
            kids = _children(node)
            total = 1 + sum(size[id(k)] for k in kids)
            deepest = (1 + max((depth[id(k)] for k in kids), default=0)
                       if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) else 0)
            line = node.start_mark.line + 1
            if total > MAX_NODES:
                if aliased:
                    raise _refuse(f"the document expands to more than {MAX_NODES:,} nodes "
                                  "through aliases (a YAML bomb?)", line, segments,
                                  "use fewer or smaller aliases")
                raise _refuse(f"the document has more than {MAX_NODES:,} nodes", line, segments,
                              "split the workflow; roast refuses larger documents")
            if deepest > MAX_DEPTH:
                raise _refuse(f"the document nests deeper than {MAX_DEPTH} levels through "
                              "aliases", line, segments, "use fewer nested aliases")
            size[id(node)] = total
            depth[id(node)] = deepest


_TAG = re.compile(r"tag '([^']*)'")


def _yaml_error(err: yaml.YAMLError, text: str, segments: Segments) -> WorkflowInvalid:
    import yaml

    line: int | None
    if isinstance(err, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(err.position, 0)) + 1
        char = f"U+{err.character:04X}" if isinstance(err.character, int) else repr(err.character)
        return _refuse(f"the file contains a character YAML does not allow ({char})", line, segments,
                       "remove control characters from the file")
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = err.problem or err.context or "invalid YAML"
        found = _TAG.search(problem)
        if isinstance(err, yaml.constructor.ConstructorError) and found:
            tag = found.group(1).replace("tag:yaml.org,2002:", "!!")
            return _refuse(f"the tag {tag!r} is not allowed (workflows are read with a safe "
                           "loader)", line, segments, "remove the tag; a workflow holds plain data")
        column = f" at column {mark.column + 1}" if mark is not None else ""
        context = f" ({err.context})" if err.context and err.problem else ""
        return _refuse(f"invalid YAML{column}: {problem}{context}", line, segments,
                       "check the indentation and quoting on that line; values starting with "
                       "{ [ * & ! | > ' \" % @ or ` need quotes")
    return _refuse(f"invalid YAML: {err}", None, segments, "check the file's YAML syntax")


def _build(loader_cls: Any, text: str, segments: Segments) -> object:
    loader = loader_cls(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_graph(loader, root, segments)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def parse(text: str, filename: str, *, line_offset_map: Segments | None = None) -> object:
    """Parse untrusted YAML text into `Map`/`Seq`/`Str`/scalars, refusing hostile input.

    `line_offset_map` lists `(first_line, filename)` pairs, ascending, when `text` is several
    files joined (shared.yml + workflow.yml): errors then name the right file and line.
    Raises `WorkflowInvalid` (exit 2) with `where="file:line"`.

        >>> parse("steps:\\n  - $(date)\\n", "wf.yml")["steps"].line
        2
    """
    import yaml

    segments: Segments = list(line_offset_map) if line_offset_map else [(1, filename)]
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise _refuse(f"the file is larger than 1 MiB ({MAX_BYTES:,} bytes)", None, segments,
                      "move parts into shared.yml or step files")
    try:
        _prescan_depth(text, segments)
        *fast, pure = _loaders()
        for loader_cls in fast:  # libyaml: what it refuses, the pure parser reads again and words
            try:
                return _build(loader_cls, text, segments)
            except WorkflowInvalid:
                raise
            except Exception:  # noqa: BLE001, S112 - the pure parser below reports it
                continue
        return _build(pure, text, segments)
    except WorkflowInvalid:
        raise
    except yaml.YAMLError as err:
        raise _yaml_error(err, text, segments) from err
    except RecursionError as err:
        raise _refuse("cannot parse: the document is nested too deeply for the parser", None,
                      segments, "flatten the structure") from err
    except Exception as err:  # fuzzing found OverflowError, IndexError (reliability.md §5 row 8)
        raise _refuse(f"cannot parse: {type(err).__name__}: {err}", None, segments,
                      "the YAML parser failed on this input; simplify the document") from err
