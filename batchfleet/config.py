"""batchfleet.toml: one configuration with named profiles, like the AWS CLI's.

Found at --config, else $BATCHFLEET_CONFIG, else the first of ./batchfleet.toml,
~/.config/batchfleet/batchfleet.toml ($XDG_CONFIG_HOME) and /etc/batchfleet/batchfleet.toml
(%ProgramData%\\batchfleet on Windows). Top-level keys apply to every profile; `[profile.NAME]`
overrides them when chosen with --profile or $BATCHFLEET_PROFILE (`[profile.default]` when none is).
Each value comes from the first of: its flag, its environment variable, the profile, the file's
top level, the default; `batchfleet config show` prints where each came from.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.errors import UsageError

FILE_NAME = "batchfleet.toml"
CONFIG_ENV = "BATCHFLEET_CONFIG"
PROFILE_ENV = "BATCHFLEET_PROFILE"
DEFAULT_PROFILE = "default"


class Profile(BaseModel):
    """The keys of the file's top level and of each [profile.NAME]; every one is optional."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    broker: str | None = Field(default=None, description="amqp(s):// URL of the broker")
    brokers: list[str] | None = Field(default=None, description="several broker URLs (a RabbitMQ cluster)")
    store: str | None = Field(default=None, description="job area root: a folder or s3://bucket/prefix")
    signing_key_file: str | None = Field(default=None, description="file holding the fleet's HMAC key")
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_path_style: bool | None = None
    s3_ca_bundle: str | None = None
    broker_ca: str | None = None
    broker_cert: str | None = None
    broker_key: str | None = None
    node_id: str | None = None
    processes: int | None = Field(default=None, ge=1)
    work_dir: str | None = None
    grace: float | None = Field(default=None, ge=0)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    gpus: str | None = Field(default=None, description="auto, none, or device numbers such as 0,1")
    environment: Literal["job", "current"] | None = Field(
        default=None, description="job: build each job's Python environment; current: the worker's own Python"
    )
    keep_work: bool | None = None
    max_jobs: int | None = Field(default=None, ge=1)
    submit_wait: float | None = Field(default=None, gt=0)
    log_level: str | None = None
    datastores: dict[str, str] | None = Field(
        default=None, description="Azure ML datastore name -> folder or s3:// URI (azureml://datastores/NAME/paths/...)"
    )
    data_assets: str | None = Field(default=None, description="folder of Azure ML data asset YAML files")

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str | None) -> str | None:
        if value is not None and not isinstance(logging.getLevelName(value.upper()), int):
            raise ValueError(f"{value!r} is not a log level; use DEBUG, INFO, WARNING or ERROR")
        return value

    @model_validator(mode="after")
    def _one_broker_key(self) -> Profile:
        if self.broker is not None and self.brokers is not None:
            raise ValueError("set broker or brokers, not both")
        if self.brokers is not None and not self.brokers:
            raise ValueError("brokers must list at least one URL")
        return self


class ConfigFile(Profile):
    """The whole file: top-level keys, and named profiles."""

    profile: dict[str, Profile] = Field(default_factory=dict)


@dataclass(frozen=True)
class Key:
    """One setting: the namespace attribute its flag fills, its environment variable and default."""

    name: str
    env: str | None = None
    default: Any = None
    secret: bool = False  # a URL whose password is masked when shown


KEYS = [
    Key("broker", "BATCHFLEET_BROKER", secret=True),
    Key("store", "BATCHFLEET_STORE"),
    Key("signing_key_file", "BATCHFLEET_SIGNING_KEY_FILE"),
    Key("s3_endpoint_url", "BATCHFLEET_S3_ENDPOINT_URL"),
    Key("s3_region"),
    Key("s3_path_style"),
    Key("s3_ca_bundle"),
    Key("broker_ca", "BATCHFLEET_BROKER_CA"),
    Key("broker_cert", "BATCHFLEET_BROKER_CERT"),
    Key("broker_key", "BATCHFLEET_BROKER_KEY"),
    Key("node_id", "BATCHFLEET_NODE_ID"),
    Key("processes"),
    Key("work_dir"),
    Key("grace", default=30.0),
    Key("metrics_port"),
    Key("gpus", "BATCHFLEET_GPUS"),
    Key("environment", "BATCHFLEET_ENVIRONMENT"),
    Key("keep_work"),
    Key("max_jobs", default=4),
    Key("submit_wait", default=10.0),
    Key("log_level", "BATCHFLEET_LOG_LEVEL"),
    Key("datastores"),  # --datastore NAME=URI entries are added to these (and win)
    Key("data_assets"),
]
PATH_KEYS = {"signing_key_file", "work_dir", "data_assets"}  # their flags hold a Path
INLINE_KEY_ENV = "BATCHFLEET_SIGNING_KEY"  # the key itself in the environment: load_key reads it


@dataclass(frozen=True)
class Resolved:
    """Every key's value and where it came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    file: Path | None
    profile: str | None
    searched: list[Path]


def search_path(environ: Mapping[str, str], cwd: Path | None = None) -> list[Path]:
    """Where a config file is looked for when neither --config nor $BATCHFLEET_CONFIG names one."""
    home = Path(environ.get("HOME") or environ.get("USERPROFILE") or Path.home())
    user = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    system = (
        Path(environ.get("ProgramData", "C:/ProgramData"), "batchfleet") if os.name == "nt" else Path("/etc/batchfleet")
    )
    return [(cwd or Path.cwd()) / FILE_NAME, user / "batchfleet" / FILE_NAME, system / FILE_NAME]


def find_file(given: Path | None, environ: Mapping[str, str]) -> tuple[Path | None, list[Path]]:
    """The config file to read (None when there is none) and the places searched."""
    named = given or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    if named is not None:
        how = "--config" if given else f"${CONFIG_ENV}"
        if not named.is_file():
            raise UsageError(f"config file {named} ({how}) does not exist", "fix the path, or leave it out to search")
        return named, [named]
    searched = search_path(environ)
    return next((path for path in searched if path.is_file()), None), searched


def load_file(path: Path) -> ConfigFile:
    """Parse and check a config file; every problem is one UsageError naming the file and the key."""
    import tomllib  # only here: most runs have no config file

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}", "see batchfleet.toml.example") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_describe(path, exc)) from None


def _describe(path: Path, exc: ValidationError) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    table = f"[profile.{loc[1]}]" if len(loc) >= 2 and loc[0] == "profile" else "the top level"
    key = loc[2] if loc[:1] == ["profile"] and len(loc) > 2 else (loc[0] if loc else "")
    if error["type"] == "extra_forbidden":
        known = [*Profile.model_fields, "profile"]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; keys are {', '.join(Profile.model_fields)}"
        return f"config file {path}: unknown key '{key}' in {table}{hint}"
    where = f"key '{key}' in {table}" if key else table
    return f"config file {path}: {where}: {error['msg']}"


def choose_profile(
    config: ConfigFile | None, path: Path | None, given: str | None, environ: Mapping[str, str]
) -> str | None:
    """The profile in use: --profile, else $BATCHFLEET_PROFILE, else [profile.default] if the file has one."""
    name = given or environ.get(PROFILE_ENV) or None
    how = "--profile" if given else f"${PROFILE_ENV}"
    if name is None:
        return DEFAULT_PROFILE if config is not None and DEFAULT_PROFILE in config.profile else None
    if config is None:
        raise UsageError(f"profile '{name}' ({how}) but no config file was found",
                         f"create {FILE_NAME} (see `batchfleet config show`) or pass --config PATH")  # fmt: skip
    if name not in config.profile:
        known = ", ".join(sorted(config.profile)) or "none"
        raise UsageError(f"no profile '{name}' ({how}) in {path}", f"profiles there: {known}")
    return name


def resolve(flags: Mapping[str, Any], environ: Mapping[str, str], config_path: Path | None = None,
            profile: str | None = None) -> Resolved:  # fmt: skip
    """Every key: its flag, else its environment variable, else the profile, else the file, else the default."""
    path, searched = find_file(config_path, environ)
    config = load_file(path) if path is not None else None
    chosen = choose_profile(config, path, profile, environ)
    layers: list[tuple[Profile, str]] = []
    if config is not None:
        if chosen is not None:
            layers.append((config.profile[chosen], f"profile {chosen} in {path}"))
        layers.append((config, str(path)))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        values[key.name], sources[key.name] = _one(key, flags, environ, layers)
    return Resolved(values, sources, path, chosen, searched)


def _one(key: Key, flags: Mapping[str, Any], environ: Mapping[str, str], layers: list[tuple[Profile, str]]
         ) -> tuple[Any, str]:  # fmt: skip
    flag = flags.get(key.name)
    if flag is not None:
        return flag, f"--{key.name.replace('_', '-')}"
    if key.env and environ.get(key.env):
        return environ[key.env], f"${key.env}"
    if key.name == "signing_key_file" and environ.get(INLINE_KEY_ENV):
        return None, f"${INLINE_KEY_ENV} (the key itself)"
    for layer, where in layers:
        value = getattr(layer, key.name)
        if key.name == "broker" and value is None and layer.brokers is not None:
            value = ",".join(layer.brokers)  # one value, comma-separated, as $BATCHFLEET_BROKER takes it
        if value is not None:
            return value, where
    return key.default, "default"


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="PATH",
                        help=f"config file (default ${CONFIG_ENV}, else ./{FILE_NAME}, "
                        f"~/.config/batchfleet/{FILE_NAME}, /etc/batchfleet/{FILE_NAME})")  # fmt: skip
    parser.add_argument("--profile", default=None, metavar="NAME",
                        help=f"[profile.NAME] of the config file (default ${PROFILE_ENV}, else 'default')")  # fmt: skip


def apply(ns: argparse.Namespace, environ: Mapping[str, str]) -> Resolved:
    """Fill the command's flags from the config file and defaults. A flag the command lacks is left
    alone, and so is a value from the environment: the commands read their variables themselves."""
    flags = {key.name: getattr(ns, key.name, None) for key in KEYS}
    resolved = resolve(flags, environ, getattr(ns, "config", None), getattr(ns, "profile", None))
    for key in KEYS:
        if not hasattr(ns, key.name) or resolved.sources[key.name].startswith("$"):
            continue
        value = resolved.values[key.name]
        if value is not None and key.name in PATH_KEYS:
            value = Path(value).expanduser()
        setattr(ns, key.name, value)
    ns.resolved_config = resolved
    return resolved


def child_environment(resolved: Resolved) -> dict[str, str]:
    """What a batchfleet process started by this one needs to resolve the same configuration."""
    env: dict[str, str] = {}
    if resolved.file is not None:
        env[CONFIG_ENV] = str(resolved.file.resolve())
    if resolved.profile is not None:
        env[PROFILE_ENV] = resolved.profile
    return env
