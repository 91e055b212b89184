"""The architecture stays small and obvious: each module imports only modules above it (STYLE)."""
from __future__ import annotations

import ast
from pathlib import Path

ROAST = Path(__file__).resolve().parent.parent / "roast"

# STYLE "Layout": imports flow down this list.
ORDER = ["errors", "record", "expressions", "webhook_aim", "settings", "shell_lex", "shell", "schema", "pages", "inbox", "policy",
         "timers", "providers", "tools", "tool_calls", "context", "seal", "signed", "yaml_lines", "workflow", "requests",
         "steps", "leaves", "tree", "checks", "compiler", "runner", "webhooks", "effects", "links", "store",
         "outcomes", "migrations", "sql_reads", "sql_group", "sql_deliver", "sql",
         "store_sqlite", "pg_errors", "pg_tx", "store_postgres", "store_copy", "store_url", "definition", "stop", "views", "drive", "deliver", "reminders", "firing", "claiming", "worker",
         "api", "gates", "approvals", "display", "approval_html", "http_guard", "serve_intake", "serve_claims", "serve", "people", "cli_store",
         "cli_approve", "cli"]
FACES = {"display", "approval_html", "http_guard", "cli", "cli_store", "serve", "people", "serve_intake", "cli_approve",
         "serve_claims"}
STORES = {"sql", "sql_deliver", "sql_group", "sql_reads", "migrations", "store_sqlite", "pg_errors", "pg_tx", "store_postgres", "store_copy",
          "store_url"}
ENTRY_POINTS = {"__init__", "__main__"}


def _roast_imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("roast.")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "roast":
                found |= {a.name for a in node.names if a.name in ORDER}
            elif node.module.startswith("roast."):
                found.add(node.module.split(".")[1])
    return found


def test_every_module_is_placed_in_the_layout():
    modules = {p.stem for p in ROAST.glob("*.py")} - ENTRY_POINTS
    assert modules <= set(ORDER), f"place {sorted(modules - set(ORDER))} in ORDER (and in STYLE's table)"


def test_no_module_is_over_650_lines():
    """STYLE: a module past ~650 lines does several jobs; split it along a seam before it grows."""
    long = {p.name: n for p in ROAST.glob("*.py") if (n := len(p.read_text().splitlines())) > 650}
    assert not long, f"split these modules: {long}"


def test_no_module_imports_a_module_below_it():
    backwards = []
    for path in sorted(ROAST.glob("*.py")):
        if path.stem in ENTRY_POINTS:
            continue
        rank = ORDER.index(path.stem)
        for name in _roast_imports(ast.parse(path.read_text())):
            if name in ORDER and ORDER.index(name) >= rank and name != path.stem:
                backwards.append(f"roast/{path.name} imports roast.{name}")
    assert not backwards, "imports must flow down the layout:\n" + "\n".join(backwards)


def test_faces_never_import_a_store_backend():
    """SPEC §11: faces talk to `api` only; only `api` picks a store."""
    leaks = []
    for face in FACES:
        path = ROAST / f"{face}.py"
        if path.exists():
            leaks += [f"roast/{face}.py imports roast.{name}" for name in _roast_imports(ast.parse(path.read_text()))
                      if name in STORES]
    assert not leaks, leaks


# What a face may import (STYLE): the api, the documents, the rich output, the errors, the settings,
# and another face (cli builds `roast serve`'s parser).
FACE_MAY_IMPORT = {"api", "gates", "approvals", "views", "display", "errors", "settings"} | FACES


def test_faces_import_only_api_views_display_errors_and_settings():
    """A face reaches the application through `api` (and its documents through `views`): never the
    step tree, the loader, the effects or the store, even for a type (issue 20)."""
    leaks = []
    for face in sorted(FACES):
        imported = _roast_imports(ast.parse((ROAST / f"{face}.py").read_text()))
        leaks += [f"roast/{face}.py imports roast.{name}" for name in sorted(imported - FACE_MAY_IMPORT)]
    assert not leaks, "faces import only api/views/display/errors/settings:\n" + "\n".join(leaks)


def test_the_step_tree_does_no_io_of_its_own():
    forbidden = {"subprocess", "os", "sqlite3", "time", "socket", "shutil", "pathlib", "open"}
    for module in ("steps", "compiler", "expressions", "shell_lex", "shell", "context", "yaml_lines"):
        tree = ast.parse((ROAST / f"{module}.py").read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert not (imported | calls) & forbidden, f"roast/{module}.py touches {(imported | calls) & forbidden}"
