"""What `batchfleet run` starts before it loads anything else: children's interpreters and listings.

A run spends its first few tenths of a second importing its modules and resolving the spec, on
one core. Two things need none of that and go on another core meanwhile: the children's
interpreters (worker/run/standby.py) and the listing of each local --input folder
(common/storage/prelist.py). They are guesses from the command line alone, read here without
argparse; `batchfleet run` settles them once its flags and spec are known (`settle`), and
whatever is not used is stopped.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.storage.prelist import Prelisted
    from worker.run.standby import Standby

COUNT_FLAGS = ("--process_count_per_node", "--process-count-per-node")
INPUT_FLAGS = ("--input", "-i")
# Runs these flags turn into something else (a resume, a detached submission): no head start.
OTHER_RUNS = ("--resume", "--detach")
MAX_GUESSED = 8  # interpreters started on a guess; a job that wants more starts the rest itself


@dataclass
class HeadStart:
    """The standbys and listings started for one `batchfleet run`."""

    standby: Standby | None
    prelisted: Prelisted

    def close(self) -> None:
        self.prelisted.close()
        if self.standby is not None:
            self.standby.close()


def flag_values(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """Values of `names` in argv, as `--name value` or `--name=value`."""
    values: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        for name in names:
            if arg == name and i + 1 < len(argv):
                values.append(argv[i + 1])
            elif arg.startswith(name + "=") and name.startswith("--"):
                values.append(arg[len(name) + 1 :])
    return values


def guessed_processes(argv: Sequence[str]) -> int:
    """The child count the command line asks for, else the CPU count (the default), capped."""
    for value in flag_values(argv, COUNT_FLAGS)[-1:]:
        try:
            return max(0, min(int(value), MAX_GUESSED))
        except ValueError:
            return 0  # the spec's validation says what is wrong with it
    return min(os.cpu_count() or 1, MAX_GUESSED)


def input_folders(argv: Sequence[str]) -> list[str]:
    """Paths of `--input NAME=PATH[:suffix]` that are local folders (tables excluded)."""
    found = []
    for value in flag_values(argv, INPUT_FLAGS):
        path = value.partition("=")[2]
        if path.endswith(":tabular") or ":tabular," in path:
            continue
        if not os.path.isdir(path) and ":" in path:
            path = path.rpartition(":")[0]  # a :files, :direct or :download suffix
        if path and os.path.isdir(path):
            found.append(path)
    return found


def looks_like_pipeline(argv: Sequence[str]) -> bool:
    """Whether the spec says `type: pipeline` at its top level (read as text: no YAML parser loaded yet);
    a pipeline's steps start their own children, later, one step at a time."""
    # Only a regular YAML file: a flag's value may be a pipe (--config <(...)) that reading would drain.
    spec = next((arg for arg in argv[1:] if arg.endswith((".yaml", ".yml")) and os.path.isfile(arg)), None)
    if spec is None or not stat.S_ISREG(os.stat(spec).st_mode):
        return False
    try:
        with open(spec, encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return False
    return re.search(r"^type:\s*['\"]?pipeline['\"]?\s*(#.*)?$", text, re.MULTILINE) is not None


def start(argv: Sequence[str], environ: dict[str, str] | os._Environ[str]) -> HeadStart | None:
    """Start a `run` command's standbys (embedded runs) and listings; None for any other command."""
    if not argv or argv[0] != "run" or any(arg.partition("=")[0] in OTHER_RUNS for arg in argv):
        return None
    from common.storage.prelist import Prelisted

    head = HeadStart(None, Prelisted())
    try:  # only a guess: a machine out of processes or descriptors runs the command without it
        for path in input_folders(argv):
            head.prelisted.start(path)
        fleet = bool(flag_values(argv, ("--broker",)) or environ.get("BATCHFLEET_BROKER"))
        if not (fleet or looks_like_pipeline(argv)):
            from worker.run.standby import Standby  # multiprocessing: a fleet's coordinator starts no child

            head.standby = Standby()
            head.standby.top_up(guessed_processes(argv))
    except OSError:
        head.close()
        return None
    return head
