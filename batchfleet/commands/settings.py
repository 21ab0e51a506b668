"""`batchfleet settings`: every run setting as a table (Azure ML name, ours, default, unit, meaning)."""

from __future__ import annotations

import argparse
import json

from batchfleet.commands.common import add_log_flag


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    settings = sub.add_parser(
        "settings",
        help="list every run setting: Azure ML name, ours, default, unit and meaning",
        description="Run settings go in the spec, as flags (--NAME or --NAME-WITH-DASHES) or as --set NAME=VALUE.",
    )
    settings.add_argument("--json", action="store_true", help="print the settings as JSON")
    add_log_flag(settings)
    settings.set_defaults(handler=cmd_settings)


def cmd_settings(ns: argparse.Namespace) -> int:
    from coordinator.spec.settings_doc import setting_docs

    docs = setting_docs()
    if ns.json:
        print(json.dumps([doc.as_dict() for doc in docs], indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=True)
    for column, width in (("Azure ML name", 30), ("batchfleet", 22), ("default", 14), ("unit", 12), ("meaning", 48)):
        table.add_column(column, min_width=min(width, 14), max_width=width, overflow="fold")
    for doc in docs:
        azureml = doc.azureml or "- (batchfleet only)"
        if doc.azureml_v2:
            azureml += f"\nv2: {doc.azureml_v2}"
        table.add_row(azureml, doc.name, doc.default, doc.unit or "-", f"{doc.meaning} Allowed: {doc.allowed}.")
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 160))
    console.print(table)
    return 0
