"""logs/job_error.txt and logs/sys/error/<node>/: the job's errors, as Azure ML lays them out."""

from __future__ import annotations

import time

from coordinator.follow.tally import Tally
from coordinator.report.state import error_groups


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "-"


def job_error_text(tally: Tally, state: str, reason: str | None) -> str | None:
    """A summary of what went wrong, grouped by error; None when nothing did."""
    failed_tries = [r for r in tally.records if r.error and r.outcome != "committed"]
    short = [tally.committed[b] for b in sorted(tally.short) if b in tally.committed]
    if not failed_tries and not short and not tally.dropped and state == "succeeded":
        return None
    lines = [f"Job {state}." + (f" {reason}" if reason else "")]
    for node, why in sorted(tally.dropped.items()):
        lines.append(f"Node {node} left the job: {why.splitlines()[0]}")
    if short:
        items = sum(r.failed for r in short)
        shown = ", ".join(str(r.batch_id) for r in short[:20])
        lines.append(f"{len(short)} mini-batches returned fewer results than items ({items} items): {shown}")
    for group in error_groups(failed_tries):
        shown = ", ".join(map(str, group["batch_ids"][:20]))
        lines.append("")
        lines.append(f"{group['count']} x {group['error_type']}: {group['message']}")
        lines.append(f"  mini-batches: {shown}")
        if group["traceback"]:
            lines.extend("  " + line for line in group["traceback"].rstrip().splitlines())
    return "\n".join(lines) + "\n"


def node_error_texts(tally: Tally) -> dict[tuple[str, str], str]:
    """(node, file name) -> every failed try on that node's process, and why the node left the job."""
    texts: dict[tuple[str, str], list[str]] = {}
    for r in tally.records:
        if not r.error or r.outcome == "committed":
            continue
        key = (r.node_id, f"{r.process or 'node'}.txt")
        entry = f"{_stamp(r.started)} batch {r.batch_id} attempt {r.attempt} {r.outcome}: {r.error}"
        texts.setdefault(key, []).append(entry + (f"\n{r.traceback.rstrip()}" if r.traceback else ""))
    for node, why in tally.dropped.items():
        texts.setdefault((node, "init.txt"), []).append(why.rstrip())
    return {key: "\n".join(entries) + "\n" for key, entries in texts.items()}
