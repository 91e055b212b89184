"""roast: YAML workflows that can pause on an external event and resume exactly once.

Kept light on purpose: `import roast` loads nothing heavy; `roast.run` and friends are
imported on first use (STYLE: start-up is part of the product).
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.3.0.dev0"

__all__ = ["Result", "SessionInfo", "__version__", "cancel", "listen", "resume", "retry", "run", "session",
           "sessions", "tick"]
_API = {"run", "resume", "retry", "sessions", "session", "cancel", "tick", "listen", "Result", "SessionInfo"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from roast import api

        return getattr(api, name)
    if name == "errors":
        import importlib  # `from roast import errors` lands here first: import the submodule itself

        return importlib.import_module("roast.errors")
    raise AttributeError(f"module 'roast' has no attribute {name!r}")
