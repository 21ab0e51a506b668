"""One module per command; each exposes register(subparsers)."""

from __future__ import annotations

import argparse
import importlib

# Modules are imported lazily by name so `batchfleet --help` stays fast.
MODULES = ["run", "worker", "status", "debug", "coordinator", "settings"]


def register_all(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name in MODULES:
        try:
            module = importlib.import_module(f"batchfleet.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"batchfleet.commands.{name}":
                raise
            continue  # a command not written yet
        module.register(sub)
