"""The second argument of run(mini_batch, mini_batch_context)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MiniBatchContext:
    """What Azure ML passes as mini_batch_context."""

    minibatch_index: int
    partition_key_value: dict[str, str] = field(default_factory=dict)
    dataset: str = ""
    attempt: int = 1
