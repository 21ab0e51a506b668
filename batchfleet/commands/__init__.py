"""One module per command; each exposes register(subparsers)."""

from __future__ import annotations

import argparse
import importlib

# Modules are imported lazily by name so `batchfleet --help` stays fast.
MODULES = ["run", "worker", "status", "debug", "coordinator", "settings", "config"]


def register_all(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from batchfleet.config import add_config_flags

    for name in MODULES:
        try:
            module = importlib.import_module(f"batchfleet.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"batchfleet.commands.{name}":
                raise
            continue  # a command not written yet
        module.register(sub)
    for parser in sub.choices.values():
        add_config_flags(parser)  # every command reads batchfleet.toml (batchfleet/config.py)
