"""logs/job_error.txt and logs/sys/error/<node>/: the job's errors, as Azure ML lays them out.

The failed tries themselves are streamed to logs/sys/error/<node>/<process>.txt as they arrive
(report/trylog.py); this module writes what is left at the end: the summary, and why a dropped
node left.
"""

from __future__ import annotations

from itertools import islice

from coordinator.follow.tally import Tally
from coordinator.report.digest import TryDigest
from coordinator.report.state import error_groups


def job_error_text(tally: Tally, digest: TryDigest, state: str, reason: str | None) -> str | None:
    """A summary of what went wrong, grouped by error; None when nothing did."""
    groups = error_groups(digest, failed_only=True)
    if not groups and not tally.short_count and not tally.dropped and state == "succeeded":
        return None
    lines = [f"Job {state}." + (f" {reason}" if reason else "")]
    for node, why in sorted(tally.dropped.items()):
        lines.append(f"Node {node} left the job: {why.splitlines()[0]}")
    if tally.short_count:
        shown = ", ".join(str(b) for b in islice(tally.short_ids(), 20))
        lines.append(
            f"{tally.short_count} mini-batches returned fewer results than items ({tally.short_items} items): {shown}"
        )
    for group in groups:
        shown = ", ".join(map(str, group["batch_ids"][:20]))
        lines.append("")
        lines.append(f"{group['count']} x {group['error_type']}: {group['message']}")
        lines.append(f"  mini-batches: {shown}")
        if group["traceback"]:
            lines.extend("  " + line for line in group["traceback"].rstrip().splitlines())
    return "\n".join(lines) + "\n"


def dropped_node_texts(tally: Tally) -> dict[tuple[str, str], str]:
    """(node, "init.txt") -> why each dropped node left the job."""
    return {(node, "init.txt"): why.rstrip() + "\n" for node, why in tally.dropped.items()}
