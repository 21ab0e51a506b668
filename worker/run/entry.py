"""Load the user's entry script once, in the child, where its names cannot collide with ours."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from common.errors import EntryScriptError

# Our top-level packages; a user folder may hold its own common.py or worker.py.
OWN_PACKAGES = frozenset({"batchfleet", "common", "coordinator", "worker"})


@dataclass(frozen=True)
class EntryPoints:
    """The user's functions, checked against the contract."""

    module: ModuleType
    run: Callable[..., Any]
    init: Callable[[], Any] | None
    shutdown: Callable[[], Any] | None
    wants_context: bool


def hide_own_packages() -> None:
    """Forget our packages in sys.modules so user imports resolve to the user's files.

    Our already-imported modules keep working through the references they hold;
    the child imports everything it needs before calling this.
    """
    for name in list(sys.modules):
        if name.split(".", 1)[0] in OWN_PACKAGES:
            del sys.modules[name]


def run_arity(run: Callable[..., Any]) -> int:
    """1 or 2: how many positional arguments run() accepts; raise when neither fits."""
    try:
        params = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError) as exc:
        raise EntryScriptError(f"run is not a function with a signature: {exc}") from exc
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    if len(required) > 2:
        raise EntryScriptError(
            f"run() takes {len(required)} required parameters; it must be run(mini_batch) "
            "or run(mini_batch, mini_batch_context)"
        )
    if len(positional) >= 2 or varargs:
        return 2
    if len(positional) == 1:
        return 1
    raise EntryScriptError("run() takes no parameters; it must be run(mini_batch)")


def load_entry(code_dir: Path, entry_script: str) -> EntryPoints:
    """Import the entry script as its own top-level module and check run/init/shutdown."""
    path = (code_dir / entry_script).resolve()
    if not path.is_file():
        raise EntryScriptError(f"entry script {path} does not exist")
    hide_own_packages()
    script_dir = str(path.parent)
    if script_dir not in sys.path:
        sys.path.insert(0, script_dir)
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EntryScriptError(f"cannot import entry script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise EntryScriptError(f"entry script {path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    run = getattr(module, "run", None)
    if not callable(run):
        raise EntryScriptError(f"entry script {path} has no run() function", "define run(mini_batch)")
    init = getattr(module, "init", None)
    shutdown = getattr(module, "shutdown", None)
    return EntryPoints(
        module=module,
        run=run,
        init=init if callable(init) else None,
        shutdown=shutdown if callable(shutdown) else None,
        wants_context=run_arity(run) == 2,
    )
