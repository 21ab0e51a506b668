"""Run settings: Azure ML v1 names and defaults, validated once at the boundary."""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.parts.rows import RowFormat
from common.version import VERSION

_UNITS = {"": 1, "b": 1, "kb": 1024, "k": 1024, "mb": 1024**2, "m": 1024**2, "gb": 1024**3, "g": 1024**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Return the number of bytes in `text`; raise ValueError naming the problem."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size such as '1MB' or '512KB'")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(f"{text!r} has unknown unit {match.group(2)!r}; use B, KB, MB or GB")
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"{text!r} must be more than zero bytes")
    return size


SNAPSHOT_MAX_BYTES = 300 * 1024**2
SNAPSHOT_MAX_FILES = 2000
_COUNT = re.compile(r"^\s*(\d+)\s*(?:files?)?\s*$", re.IGNORECASE)


def parse_snapshot_limit(text: str | None) -> tuple[int, int]:
    """(bytes, files) from '1GB', '5000', '5000 files' or '1GB,5000'; a part not given keeps its default."""
    max_bytes, max_files = SNAPSHOT_MAX_BYTES, SNAPSHOT_MAX_FILES
    for part in (text or "").split(","):
        if not part.strip():
            continue
        count = _COUNT.match(part)
        if count:
            max_files = int(count.group(1))
        else:
            max_bytes = parse_size(part)
    if max_files <= 0:
        raise ValueError(f"{text!r} allows no files")
    return max_bytes, max_files


OutputAction = Literal["summary_only", "append_row"]

# Seed FAQ names that differ in the v2 job YAML, mapped to ours.
V2_ALIASES = {
    "mini_batch_error_threshold": "allowed_failed_count",
    "max_concurrency_per_instance": "process_count_per_node",
    "instance_count": "node_count",
    "max_retries": "run_max_try",
    "timeout": "run_invocation_timeout",
}
V2_DEFAULT_RETRIES = 3  # Azure ML v2's retry_settings.max_retries when a job does not set it


def retries_as_tries(value: object) -> object:
    """v2 `max_retries` counts retries after the first try; run_max_try counts tries.

    A value that is not a whole number of at least 0 passes through for validation to name."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value + 1
    return value


def v2_setting(key: str, value: object) -> tuple[str, object]:
    """A v2 job key and its value under our name and meaning (same key and value otherwise)."""
    name = V2_ALIASES.get(key, key)
    return name, retries_as_tries(value) if key == "max_retries" else value


DEFAULT_APPEND_FILE = "parallel_run_step.txt"


def _doc(unit: str = "", allowed: str = "", default: str = "", v2: str = "", ours: bool = False) -> dict[str, Any]:
    """How `--help` and `batchfleet settings` describe a field beyond its description (its meaning):
    unit, allowed values and default in words where the type alone does not say, the Azure ML v2
    job YAML name where it differs, and `ours` for settings Azure ML does not have."""
    extra = {"unit": unit, "allowed": allowed, "default": default, "v2": v2, "ours": ours}
    return {key: value for key, value in extra.items() if value}


class RunSettings(BaseModel):
    """Everything that tunes a job's run; every boundary builds one of these.

    Each field's description is its meaning, and `json_schema_extra` (see `_doc`) the rest of its
    documentation: the flags' `--help` and `batchfleet settings` are generated from this model.
    """

    model_config = ConfigDict(defer_build=True, extra="forbid", validate_assignment=True)

    mini_batch_size: int | str | None = Field(
        default=None,
        description="Work per mini-batch (one run() call): a file count for file inputs, "
        "an approximate data size for tables.",
        json_schema_extra=_doc(
            unit="files, or bytes with a unit (B, KB, MB, GB) for tables",
            allowed="a positive whole number such as 10, or a size such as 512KB or 1MB",
            default="10 files; 1MB for tables",
        ),
    )
    error_threshold: int = Field(
        default=-1,
        ge=-1,
        description="Failed items (files or rows, summed over the job) allowed before the job fails; -1 ignores them.",
        json_schema_extra=_doc(unit="items"),
    )
    allowed_failed_count: int = Field(
        default=-1,
        ge=-1,
        description="Failed mini-batches allowed before the job fails; -1 ignores them.",
        json_schema_extra=_doc(unit="mini-batches", v2="mini_batch_error_threshold"),
    )
    allowed_failed_percent: float = Field(
        default=100,
        ge=0,
        le=100,
        description="Share of mini-batches allowed to fail before the job fails; 100 ignores failures.",
        json_schema_extra=_doc(unit="percent of all mini-batches"),
    )
    run_invocation_timeout: float = Field(
        default=60,
        gt=0,
        description="Longest one run() call may take; a slower call fails that try (retried up to run_max_try).",
        json_schema_extra=_doc(unit="seconds", v2="retry_settings.timeout"),
    )
    run_max_try: int = Field(
        default=3,
        ge=1,
        description="Tries per mini-batch (exceptions, timeouts and crashed processes count) before it fails for good.",
        json_schema_extra=_doc(unit="tries", v2="retry_settings.max_retries"),
    )
    process_count_per_node: int | None = Field(
        default=None,
        ge=1,
        description="Child processes running run() on each node (a worker's --processes overrides it).",
        json_schema_extra=_doc(unit="processes", default="the node's CPU count", v2="max_concurrency_per_instance"),
    )
    node_count: int = Field(
        default=1,
        ge=1,
        description="Nodes the job expects; informational in fleet mode, where every live worker helps.",
        json_schema_extra=_doc(unit="nodes", v2="resources.instance_count"),
    )
    logging_level: str = Field(
        default="INFO",
        description="Level of the entry script's logger (EntryScript().logger) and its log files.",
        json_schema_extra=_doc(allowed="DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)"),
    )
    output_action: OutputAction = Field(
        default="append_row",
        description="append_row merges the rows run() returns into one file in the output; "
        "summary_only keeps only counts and logs.",
    )
    append_row_file_name: str = Field(
        default=DEFAULT_APPEND_FILE,
        description="Name of the merged file in the output location (append_row only).",
        json_schema_extra=_doc(
            allowed="a plain file name, no folders",
            default=f"{DEFAULT_APPEND_FILE} (parallel_run_step.<format> for other formats)",
        ),
    )
    append_row_format: RowFormat = Field(
        default="text",
        description="Format of the merged file: text is Azure ML's (one element per line, DataFrame rows "
        "space separated); csv, parquet and jsonl keep DataFrame columns (a list becomes a 'result' column).",
        json_schema_extra=_doc(ours=True),
    )
    partition_keys: list[str] | None = Field(
        default=None,
        description="Keys whose values group the input (table columns, or folder levels of a partitioned "
        "file input): each mini-batch holds one partition.",
        json_schema_extra=_doc(allowed="key names, comma-separated (a,b) or a list ([a,b])", default="none"),
    )
    partition_layout: str | None = Field(
        default=None,
        description="Folder layout naming partition keys by position, e.g. '{country}/{state}/*'.",
        json_schema_extra=_doc(
            allowed="a path pattern with one {key} per folder level", default="none (key=value folders)", ours=True
        ),
    )
    task_overhead_timeout: float = Field(
        default=30,
        gt=0,
        description="Time allowed per mini-batch on top of run() (download, commit) before a try counts as hung.",
        json_schema_extra=_doc(unit="seconds"),
    )
    progress_update_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Time without any finished mini-batch after which the job fails as stalled.",
        json_schema_extra=_doc(unit="seconds", default="3 x (run_invocation_timeout + task_overhead_timeout)"),
    )
    init_max_try: int = Field(
        default=3,
        ge=1,
        description="Tries at init() on a node before that node leaves the job (the job fails if no node is left).",
        json_schema_extra=_doc(unit="tries", ours=True),
    )
    snapshot_limit: str | None = Field(
        default=None,
        description="Largest code snapshot a job may upload; over it, submission names the biggest folders.",
        json_schema_extra=_doc(allowed="a size, a file count or both, e.g. 1GB,5000", default="300MB,2000", ours=True),
    )
    environment: Literal["job", "current"] | None = Field(
        default=None,
        description="job: each worker builds the spec's Python environment; current: children run in the "
        "worker's own Python.",
        json_schema_extra=_doc(allowed="job or current", default="job on a fleet, current embedded", ours=True),
    )
    user_log_size: str = Field(
        default="10MB",
        description="Size at which a user log file (stdout, stderr, entry script log, errors) rotates.",
        json_schema_extra=_doc(allowed="a size such as 10MB", ours=True),
    )
    user_log_count: int = Field(
        default=5,
        ge=1,
        description="Rotated user log files kept per process and stream.",
        json_schema_extra=_doc(unit="files", ours=True),
    )

    @field_validator("mini_batch_size", mode="before")
    @classmethod
    def _check_batch_size(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError("must be a file count such as 10 or a size such as '1MB'")
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, int):
            if value <= 0:
                raise ValueError(f"must be a positive file count, got {value}")
            return value
        if isinstance(value, str):
            parse_size(value)
            return value.strip()
        raise ValueError("must be a file count such as 10 or a size such as '1MB'")

    @field_validator("snapshot_limit")
    @classmethod
    def _check_snapshot_limit(cls, value: str | None) -> str | None:
        if value is not None:
            parse_snapshot_limit(value)
        return value

    @field_validator("user_log_size")
    @classmethod
    def _check_log_size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("logging_level", mode="before")
    @classmethod
    def _check_level(cls, value: object) -> str:
        name = str(value).upper()
        if not isinstance(logging.getLevelName(name), int):
            raise ValueError(f"{value!r} is not a logging level; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return name

    @field_validator("append_row_file_name")
    @classmethod
    def _check_file_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in {".", ".."}:
            raise ValueError(f"{value!r} must be a plain file name")
        return value

    @model_validator(mode="after")
    def _check_partition_keys(self) -> RunSettings:
        if self.partition_keys is not None and not self.partition_keys:
            raise ValueError("partition_keys must name at least one key")
        return self

    def processes(self) -> int:
        """Child processes per node, defaulting to the CPU count."""
        return self.process_count_per_node or os.cpu_count() or 1

    def files_per_batch(self) -> int:
        """mini_batch_size for a file input; a size string is refused there."""
        size = self.mini_batch_size
        if size is None:
            return 10
        if isinstance(size, str):
            raise ValueError(f"mini_batch_size {size!r} is a data size; a file input needs a file count such as 10")
        return size

    def bytes_per_batch(self) -> int:
        """mini_batch_size for a tabular input: a size such as '1MB', or a bare number of bytes."""
        size = self.mini_batch_size
        if size is None:
            return 1024**2
        if isinstance(size, int):
            return size  # Azure ML reads a bare number as bytes for tables
        return parse_size(size)

    def merged_file_name(self) -> str:
        """append_row_file_name, with the default's extension following append_row_format."""
        name = self.append_row_file_name
        if name == DEFAULT_APPEND_FILE and self.append_row_format != "text":
            return f"parallel_run_step.{self.append_row_format}"
        return name

    def stall_timeout(self) -> float:
        """Azure ML's rule for progress_update_timeout when not set."""
        if self.progress_update_timeout is not None:
            return self.progress_update_timeout
        return 3 * (self.run_invocation_timeout + self.task_overhead_timeout)


SETTING_NAMES = tuple(RunSettings.model_fields)


def predefined_args(
    settings: RunSettings, entry_script: str, input_names: list[str], processes: int | None = None
) -> list[str]:
    """The arguments Azure ML's runtime adds to every entry script's command line (seed FAQ),
    so a script's parse_known_args() sees the same names and values; `processes` is what the
    node really runs (one per GPU, or its --processes), when it knows."""
    pairs: list[tuple[str, object]] = [
        ("client_sdk_version", VERSION),
        ("scoring_module_name", entry_script),
        ("output_action", settings.output_action),
        ("create_snapshot_at_runtime", "True"),
        ("input_fds", ",".join(input_names)),
        ("process_count_per_node", processes or settings.processes()),
        ("node_count", settings.node_count),
        ("error_threshold", settings.error_threshold),
        ("allowed_failed_count", settings.allowed_failed_count),
        ("allowed_failed_percent", settings.allowed_failed_percent),
        ("mini_batch_size", settings.mini_batch_size),
        ("logging_level", settings.logging_level),
        ("run_invocation_timeout", settings.run_invocation_timeout),
        ("run_max_try", settings.run_max_try),
        ("task_overhead_timeout", settings.task_overhead_timeout),
        ("progress_update_timeout", settings.stall_timeout()),
    ]
    if settings.output_action == "append_row":
        pairs.append(("append_row_file_name", settings.append_row_file_name))
    if settings.partition_keys:
        pairs.append(("partition_keys", ",".join(settings.partition_keys)))
    args: list[str] = []
    for name, value in pairs:
        if value is not None:
            text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            args += [f"--{name}", text]
    return args
