"""Every run setting documented from the one settings model: the flags' `--help` lines and the
`batchfleet settings` table are both built here, so there is no second list to keep in sync."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
from pydantic.fields import FieldInfo

from common.settings import RunSettings


@dataclass(frozen=True)
class SettingDoc:
    name: str  # ours: the flag (--name or --name-with-dashes) and the --set key
    azureml: str  # the Azure ML name (ParallelRunConfig, program arguments), "" for batchfleet's own
    azureml_v2: str  # the v2 job YAML name where it differs, else ""
    meaning: str
    allowed: str
    unit: str
    default: str

    def help_line(self) -> str:
        """One --help entry: meaning, allowed values, unit and default."""
        unit = f" Unit: {self.unit}." if self.unit else ""
        return f"{self.meaning} Allowed: {self.allowed}.{unit} Default: {self.default}."

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def setting_docs() -> list[SettingDoc]:
    """One entry per RunSettings field, in the model's order."""
    return [_doc(name, field) for name, field in RunSettings.model_fields.items()]


def _doc(name: str, field: FieldInfo) -> SettingDoc:
    extra: dict[str, Any] = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return SettingDoc(
        name=name,
        azureml="" if extra.get("ours") else name,
        azureml_v2=str(extra.get("v2") or ""),
        meaning=(field.description or name).strip(),
        allowed=str(extra.get("allowed") or _allowed(field)),
        unit=str(extra.get("unit") or ""),
        default=str(extra.get("default") or _default(field)),
    )


def _members(annotation: Any) -> list[Any]:
    """The non-None types of an annotation (`X | None` -> [X])."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def _allowed(field: FieldInfo) -> str:
    members = _members(field.annotation)
    if len(members) == 1 and typing.get_origin(members[0]) is Literal:
        return "one of " + ", ".join(str(value) for value in typing.get_args(members[0]))
    kind = "a whole number" if members == [int] else "a number"
    bounds: list[str] = []
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            bounds.append(f">= {rule.ge:g}")
        elif isinstance(rule, annotated_types.Gt):
            bounds.append(f"> {rule.gt:g}")
        elif isinstance(rule, annotated_types.Le):
            bounds.append(f"<= {rule.le:g}")
        elif isinstance(rule, annotated_types.Lt):
            bounds.append(f"< {rule.lt:g}")
    if members in ([int], [float]):
        return f"{kind} {' and '.join(bounds)}".strip()
    return "text"


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
