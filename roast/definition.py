"""The definition a session runs against: loading it, saving it once per fingerprint, finding it
again on resume without parsing, and deciding whether an edit since the pause is safe (SPEC §6).

A file workflow's compiled tree is saved with the digests of every file it came from (and of
every file looked for and absent); a resume of an unchanged workflow loads the tree and never
imports yaml (STYLE: an unchanged workflow need not be parsed again). The tree is stored once
per definition fingerprint, not per session (issue 12). Reads workflow files; runs nothing.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast import steps, tree
from roast.errors import DefinitionChanged, UsageError
from roast.expressions import digest

if TYPE_CHECKING:
    from typing import Any

    from roast.store import Session


class Definition:
    """A compiled workflow and where it came from."""

    __slots__ = ("root", "path", "name", "fingerprint", "provider", "data", "sources", "tree", "directory",
                 "key", "key_template", "models", "secret", "about")

    def __init__(self, root: steps.Sequence, path: str, name: str, fingerprint: str, provider: str | None, *,
                 data: Mapping[str, Any] | None = None, sources: dict[str, str | None] | None = None,
                 tree: bytes | None = None, key_template: str | None = None,
                 models: Mapping[str, Any] | None = None, secret: str | None = None,
                 about: str | None = None) -> None:
        # the workflow's model keys (issue 17), saved with the tree; `api_token:` is only marked there
        self.models = dict(models or {})
        self.secret = secret    # the `api_token:` as written (a literal or $(cmd)): never saved
        self.root, self.path, self.name, self.fingerprint, self.provider = root, path, name, fingerprint, provider
        self.data = data        # a dict workflow, saved with the session (its steps may be callables)
        self.sources = sources  # a file workflow's files (see Workflow.sources)
        self.tree = tree        # `root`, pickled for the next resume (see portable_tree)
        self.directory = os.path.dirname(path) if not path.startswith("<") else None
        self.key_template = key_template  # `key:`: the correlation key's template (issue 15)
        self.about = about  # the workflow's own `description:`, shown on its gates' pages (issue 22)

    @property
    def declares(self) -> list[str]:
        return tree.declared_events(self.root)


def read(workflow: Any) -> Any:
    """A workflow file read and parsed, not compiled (`load` compiles this very parse: issue 25)."""
    from roast import workflow as workflow_mod

    return workflow_mod.load(workflow)


def own_targets(wf: Any) -> list[str | None]:
    """A workflow's own `target:` (SPEC §5) expanded, else `[None]`."""
    from roast import effects

    configured = wf.data.get("target")
    return list(effects.configured_targets(str(configured), str(wf.directory))) if configured else [None]


def load(workflow: Any, cwd: str | None = None) -> Definition:
    """Load and compile a workflow: a path (file, directory, roast/NAME) or a dict."""
    from roast import compiler  # not on the path of a resume that finds its tree saved

    if isinstance(workflow, Mapping):
        source = compiler.DictSource(workflow)
        root = compiler.compile_workflow(source)
        fingerprint = "dict:" + _dict_fingerprint(workflow)
        return Definition(root, f"<dict:{source.name}>", source.name, fingerprint, _provider(workflow),
                          data=workflow, key_template=_key(workflow), models=model_keys(workflow),
                          secret=_secret(workflow), about=_about(workflow))
    from roast import workflow as workflow_mod

    if cwd is None:
        wf = workflow_mod.load(workflow)
    else:
        from pathlib import Path

        wf = workflow_mod.load(workflow, Path(cwd))
    root = compiler.compile_workflow(wf)
    return Definition(root, str(wf.path), wf.name, wf.fingerprint(), _provider(wf.data), sources=wf.sources(),
                      key_template=_key(wf.data), models=model_keys(wf.data), secret=_secret(wf.data),
                      about=_about(wf.data))


def _about(data: Mapping[str, Any]) -> str | None:
    """The workflow's `description:` as plain text (at most 2,000 characters), or None."""
    value = data.get("description") if isinstance(data, Mapping) else None
    return str(value)[:2000] if isinstance(value, (str, int, float)) and str(value).strip() else None


MODEL_KEYS = ("api_provider", "model", "base_url", "uri_base", "tools")


def model_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level keys a model call needs, as plain data; `api_token: True` only says one is set."""
    found = {key: _plain(data[key]) for key in MODEL_KEYS if data.get(key) is not None}
    if data.get("api_token") is not None:
        found["api_token"] = True
    return found


def _secret(data: Mapping[str, Any]) -> str | None:
    token = data.get("api_token")
    return str(token) if isinstance(token, str) else None


def api_token(defn: Definition) -> str | None:
    """The workflow's `api_token:` as written, read again from the file when the definition came from
    the store (the token is never saved, not even as its command)."""
    if defn.secret is None and defn.models.get("api_token") and defn.data is None and defn.directory:
        from roast import workflow as workflow_mod

        defn.secret = _secret(workflow_mod.load(defn.path).data)
    return defn.secret


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, str) else value


def _provider(data: Mapping[str, Any]) -> str | None:
    provider = data.get("api_provider")
    return str(provider) if isinstance(provider, str) else None


def _key(data: Mapping[str, Any]) -> str | None:
    key = data.get("key")
    return str(key) if isinstance(key, str) else None


def _dict_fingerprint(data: Mapping[str, Any]) -> str:
    """A dict workflow's fingerprint: a digest of its pickled form (callables by value)."""
    import hashlib

    from roast import seal

    try:
        payload, _ = seal.dumps(dict(data), "the workflow definition")
    except Exception:  # noqa: BLE001 - unpicklable: the session saves it later and reports then
        return "unpicklable"
    return hashlib.sha256(payload).hexdigest()


def portable_tree(defn: Definition) -> bytes | None:
    """The compiled tree of a file workflow, pickled with the loader's line-tracking strings,
    dicts and lists turned into plain ones, so that loading it needs neither the YAML loader nor a
    parse. None if it cannot be made so."""
    if defn.tree is None and defn.sources is not None:
        import io
        import pickle

        from roast.workflow import Map, Seq, Str

        class _Plain(pickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                kind = type(obj)
                if kind is Str:
                    return str, (str(obj),)
                if kind is Map:
                    return dict, (dict(obj),)
                if kind is Seq:
                    return list, (list(obj),)
                return NotImplemented

        buffer = io.BytesIO()
        try:
            _Plain(buffer, protocol=5).dump(defn.root)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
            return None  # something in the tree will not pickle: the next resume parses again
        blob = buffer.getvalue()
        defn.tree = blob if b"roast.workflow" not in blob and b"roast.yaml_lines" not in blob else None
    return defn.tree


def record(defn: Definition) -> dict[str, Any]:
    """What the store keeps once per fingerprint: enough to run the definition again."""
    if defn.data is not None:
        return {"v": 2, "data": dict(defn.data)}
    return {"v": 2, "tree": portable_tree(defn), "sources": defn.sources, "provider": defn.provider,
            "path": defn.path, "name": defn.name, "key": defn.key_template, "models": defn.models,
            "about": defn.about}


def unchanged(sources: Mapping[str, str | None], moved_from: str | None = None, moved_to: str | None = None) -> bool:
    """True if every file reads as it did when the tree was compiled, and none has appeared."""
    for path, expected in sources.items():
        if moved_from and moved_to and path.startswith(moved_from + os.sep):
            path = moved_to + path[len(moved_from):]
        if expected is None:
            if os.path.isfile(path):
                return False
            continue
        if file_digest(path) != expected:
            return False
    return True


# issue 25: a file's digest, kept while its inode, size, mtime and ctime stay the same (any write
# changes ctime), so a claim stats the workflow instead of reading and hashing it; a file written
# in the last 2 s is read every time (an edit within the clock's resolution cannot hide)
SETTLED_NS = 2_000_000_000
_DIGESTS: dict[str, tuple[tuple[int, int, int, int], str]] = {}


def file_digest(path: str) -> str | None:
    """The digest of a workflow file's text, as `digest` gives it; None if it cannot be read."""
    try:
        st = os.stat(path)
        seen = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        kept = _DIGESTS.get(path)
        if kept is not None and kept[0] == seen:
            return kept[1]
        with open(path, "rb") as handle:
            text = handle.read(1_048_577).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    found = digest(text)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLED_NS:
        if len(_DIGESTS) >= 1024:
            _DIGESTS.clear()
        _DIGESTS[path] = (seen, found)
    return found


def from_record(saved: Mapping[str, Any], session: Session) -> Definition | None:
    """The definition saved with a session, if it is still what the files say (else None: parse)."""
    if saved.get("data") is not None:
        return load(saved["data"])
    tree, sources = saved.get("tree"), saved.get("sources")
    where = _relocated(saved.get("path"), session.workflow_path)
    if tree and sources and where is not None and unchanged(sources, *where):
        return Definition(_unpickled(tree), session.workflow_path, session.workflow_name, session.fingerprint,
                          saved.get("provider"), sources=sources, tree=tree, key_template=saved.get("key"),
                          models=saved.get("models"), about=saved.get("about"))
    return None


# issue 25: the step trees this process unpickled, by their bytes (the store keeps the verified
# record, so the same bytes come back for every claim of a workflow); a tree is immutable Records,
# shared as `roast tick`'s batches share one between the sessions they run
_TREES: dict[bytes, steps.Sequence] = {}


def _unpickled(tree: bytes) -> steps.Sequence:
    found = _TREES.get(tree)
    if found is None:
        import pickle  # the tree was sealed and verified with the rest of the record

        found = pickle.loads(tree)
        if len(_TREES) >= 64:
            _TREES.clear()
        _TREES[tree] = found
    return found


def _relocated(saved_path: str | None, path: str) -> tuple[str | None, str | None] | None:
    """Where the record's files are for this session: the record is kept once per fingerprint, so
    another checkout with the same content shares the first saver's, whose paths are mapped to this
    session's by their common tail (`/x/a/wf.yml` for `/x/b/wf.yml`: `/x/a` → `/x/b`). An edit here is
    then seen, and a first checkout deleted or edited no longer makes every resume parse again.
    None: the file names differ, so nothing maps (parse)."""
    if not saved_path or saved_path == path:
        return None, None
    before, now = saved_path.split(os.sep), path.split(os.sep)
    same = 0
    while same < min(len(before), len(now)) - 1 and before[-1 - same] == now[-1 - same]:
        same += 1
    if not same:
        return None
    return os.sep.join(before[:-same]), os.sep.join(now[:-same])


def old_tree(saved: Mapping[str, Any] | None) -> steps.Sequence | None:
    """The tree a session paused with, even if the files changed since (for the edit check)."""
    if not saved:
        return None
    if saved.get("data") is not None:
        return load(saved["data"]).root
    if saved.get("tree"):
        import pickle

        return pickle.loads(saved["tree"])  # type: ignore[no-any-return]
    return None


def signature_digest(root: steps.Sequence, cursor: steps.Cursor) -> str:
    """A digest of what must not change for `cursor` to mean the same place (see tree.signature)."""
    return digest("\n".join(tree.signature(root, cursor)))


def check(session: Session, defn: Definition, state: Mapping[str, Any], old: steps.Sequence | None,
          event: str | None, force: bool, *, changed_files: list[str] | None = None) -> list[str]:
    """SPEC §6: unchanged → resume; changed after the cursor → warn; the path to it changed → refuse.

    `old` is the tree the session was saved with (None when only roast 0.1's inline signature
    is known). Returns the warnings to show."""
    if not session.fingerprint or defn.fingerprint == session.fingerprint:
        return []
    cursor = state["cursor"]
    what = _what_changed(changed_files, session.workflow_path)
    new_sig = tree.signature(defn.root, cursor)
    if old is not None:
        old_sig = tree.signature(old, cursor)
    elif state.get("signature") is not None and isinstance(state["signature"], list):
        old_sig = list(state["signature"])  # roast 0.1 kept the whole signature in the state
    else:
        if force:
            return [f"{what} changed since session {session.id} was saved; continuing with the new definition "
                    "(--force)"]
        raise DefinitionChanged(
            f"session {session.id} cannot continue: {what} changed since it was saved, and the saved state "
            "does not say what its position meant; nothing was changed",
            hint="restore the workflow, or pass --force to continue with the new one")
    waits = tree.wait_at(defn.root, cursor)
    at_wait = bool(tree.wait_at(old, cursor)) if old is not None else bool(waits)
    declared = not event or any(event in w.events for w in waits)
    where = "its wait" if at_wait else "its last checkpoint"
    if old_sig == new_sig and declared and (waits or not at_wait):
        return [f"{what} changed since session {session.id} was saved; the change is after {where}, so the "
                "new definition is used"]
    moved = [f"was: {a}\n    now: {b}" for a, b in zip(old_sig, new_sig) if a != b]
    if len(old_sig) != len(new_sig):
        moved.append(f"the path to {where} had {len(old_sig)} levels, now {len(new_sig)}")
    if at_wait and not waits:
        moved.append("the saved position no longer rests on a wait")
    elif not declared:
        moved.append(f"the wait no longer declares {event!r}")
    can_force = (not at_wait or bool(waits)) and declared
    if force and can_force:
        return [f"{what} changed before {where}; continuing anyway (--force)"]
    raise DefinitionChanged(
        f"session {session.id} cannot continue: {what} changed on the path to {where}; nothing was changed\n    "
        + "\n    ".join(moved),
        hint=("restore the workflow as it was, or pass --force to continue with the new definition" if can_force
              else "restore the workflow as it was (--force cannot help: "
                   + ("the wait no longer declares the event)" if not declared else
                      "the saved position no longer rests on a wait)")))


def changed_files(saved: Mapping[str, Any] | None) -> list[str]:
    """Which of the saved definition's files differ now (for a notice that names them)."""
    if not saved or not saved.get("sources"):
        return []
    out = []
    for path, expected in saved["sources"].items():
        if expected is None:
            if os.path.isfile(path):
                out.append(path)
        elif file_digest(path) != expected:
            out.append(path)
    return out


def _what_changed(files: list[str] | None, workflow_path: str) -> str:
    if not files:
        return workflow_path
    shown = [os.path.basename(f) if os.path.dirname(f) == os.path.dirname(workflow_path) else f for f in files]
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def check_model(root: Any, models: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """At load time (issue 24), what answers a workflow's prompt steps: refused (UsageError) when that
    is a provider and the `openai` package is missing, before any session starts; a warning when
    the workflow has prompt steps and only the offline model would answer them; else None."""
    from roast import tree
    from roast.leaves import Prompt
    from roast.providers import implied_provider

    prompts = [n for n in tree.subtree(root) if isinstance(n, Prompt)]
    if not prompts:
        return None
    wanted = {implied_provider({**models, **{k: v for k, v in (("api_provider", p.options.provider),
                                                              ("base_url", p.options.base_url)) if v}}, env)
              for p in prompts}
    asked = sorted(wanted - {"offline"})
    if asked:
        import importlib.util

        if importlib.util.find_spec("openai") is None:
            raise UsageError(f"this workflow's prompt steps ask the {asked[0]} provider, and the `openai` package "
                             "is not installed; no session was started",
                             hint="pip install 'roast-workflows[openai]'  (or: pip install 'openai>=1.40')")
        return None
    if models.get("api_provider") == "offline":
        return None  # chosen, not fallen back to
    return (f"{len(prompts)} prompt step{'s' if len(prompts) != 1 else ''} and no model provider: only the offline "
            "model would answer (it returns the prompt itself); set `api_provider:` and a token "
            "(OPENAI_API_KEY), or `base_url:` for a local server")
