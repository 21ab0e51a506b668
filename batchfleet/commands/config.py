"""`batchfleet config show`: every setting's resolved value, secrets masked, and where it came from."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from batchfleet.commands.common import add_log_flag


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    config = sub.add_parser(
        "config",
        help="show the configuration in effect (batchfleet.toml, profile, environment) and where each value came from",
        description="Values come from the first of: a flag, an environment variable, the chosen [profile.NAME] "
        "of batchfleet.toml, the file's top level, the default.",
    )
    config.add_argument("action", choices=["show"], help="show: print the resolved values")
    config.add_argument("--json", action="store_true", help="print them as JSON")
    add_log_flag(config)
    config.set_defaults(handler=cmd_config)


def shown(key: str, value: Any, secrets: list[str]) -> str:
    """A value as `config show` prints it: passwords in URLs and known secret values masked."""
    from common.broker.factory import redact_url
    from common.redact import redact

    if value is None:
        return "-"
    parts = str(value).split(",") if key == "broker" else [str(value)]  # a comma-separated list of URLs
    return ",".join(redact(redact_url(part.strip()) if key == "broker" else part, secrets) for part in parts)


def cmd_config(ns: argparse.Namespace) -> int:
    from batchfleet.config import KEYS
    from common.redact import secret_values_from_env

    resolved = ns.resolved_config
    secrets = secret_values_from_env(os.environ)
    rows = [(key.name, shown(key.name, resolved.values[key.name], secrets), resolved.sources[key.name]) for key in KEYS]
    where = (
        str(resolved.file) if resolved.file else "none found (searched " + ", ".join(map(str, resolved.searched)) + ")"
    )
    if ns.json:
        data = {"file": str(resolved.file) if resolved.file else None, "profile": resolved.profile,
                "values": {name: {"value": value, "source": source} for name, value, source in rows}}  # fmt: skip
        print(json.dumps(data, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 160))
    console.print(f"config file: {where}")
    console.print(f"profile: {resolved.profile or '- (top-level keys only)'}")
    table = Table()
    for column in ("key", "value", "from"):
        table.add_column(column, overflow="fold")
    for name, value, source in rows:
        table.add_row(name, value, source)
    console.print(table)
    return 0
