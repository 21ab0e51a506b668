"""batchfleet.toml: profiles, precedence (flags > environment > profile > file > defaults), bad files,
and `batchfleet config show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchfleet.config import resolve, search_path
from common.errors import UsageError
from tests.cli_helpers import batchfleet, make_component

CONFIG = """\
# top level: every profile
store = "/data/top-store"
log_level = "INFO"

[profile.prod]
broker = "amqp://bf:prod-secret-pw@rabbit.prod:5672/"
store = "s3://jobs/prod"
signing_key_file = "/etc/batchfleet/prod.key"
processes = 8

[profile.lab]
brokers = ["amqp://bf:lab-pw-1@r1:5672/", "amqp://bf:lab-pw-2@r2:5672/"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "batchfleet.toml"
    path.write_text(CONFIG)
    return path


def isolated(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment in which no config file of this machine's user is found."""
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), **extra}


@pytest.mark.parametrize(
    ("flags", "environ", "profile", "expected", "source"),
    [
        ({}, {}, None, "/data/top-store", "file"),
        ({}, {}, "prod", "s3://jobs/prod", "profile prod"),
        ({}, {"BATCHFLEET_STORE": "/env/store"}, "prod", "/env/store", "$BATCHFLEET_STORE"),
        ({"store": "/flag/store"}, {"BATCHFLEET_STORE": "/env/store"}, "prod", "/flag/store", "--store"),
        ({}, {}, "lab", "/data/top-store", "file"),  # not in [profile.lab]: the top level
    ],
)
def test_precedence(config: Path, tmp_path: Path, flags: dict[str, str], environ: dict[str, str],
                    profile: str | None, expected: str, source: str) -> None:  # fmt: skip
    resolved = resolve(flags, isolated(tmp_path, **environ), config, profile)
    assert resolved.values["store"] == expected
    assert resolved.sources["store"].startswith(str(config) if source == "file" else source)


def test_defaults_and_typed_values(config: Path, tmp_path: Path) -> None:
    resolved = resolve({}, isolated(tmp_path), config, "prod")
    assert resolved.values["processes"] == 8 and resolved.values["grace"] == 30.0
    assert resolved.sources["grace"] == "default" and resolved.values["max_jobs"] == 4
    assert resolved.values["node_id"] is None


def test_brokers_list_is_one_comma_separated_value(config: Path, tmp_path: Path) -> None:
    resolved = resolve({}, isolated(tmp_path), config, "lab")
    assert resolved.values["broker"] == "amqp://bf:lab-pw-1@r1:5672/,amqp://bf:lab-pw-2@r2:5672/"


def test_profile_from_the_environment_and_the_default_profile(config: Path, tmp_path: Path) -> None:
    assert resolve({}, isolated(tmp_path, BATCHFLEET_PROFILE="prod"), config).profile == "prod"
    assert resolve({}, isolated(tmp_path, BATCHFLEET_PROFILE="prod"), config, "lab").profile == "lab"
    assert resolve({}, isolated(tmp_path), config).profile is None
    config.write_text(CONFIG + '\n[profile.default]\nstore = "/default/store"\n')
    resolved = resolve({}, isolated(tmp_path), config)
    assert resolved.profile == "default" and resolved.values["store"] == "/default/store"


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work, xdg = tmp_path / "work", tmp_path / "xdg"
    (xdg / "batchfleet").mkdir(parents=True)
    work.mkdir()
    (xdg / "batchfleet" / "batchfleet.toml").write_text('store = "/from/user"\n')
    monkeypatch.chdir(work)
    environ = isolated(tmp_path)
    assert search_path(environ)[:2] == [work / "batchfleet.toml", xdg / "batchfleet" / "batchfleet.toml"]
    assert resolve({}, environ).values["store"] == "/from/user"
    (work / "batchfleet.toml").write_text('store = "/from/work"\n')
    assert resolve({}, environ).values["store"] == "/from/work"  # the working folder first
    named = tmp_path / "named.toml"
    named.write_text('store = "/from/named"\n')
    assert resolve({}, environ | {"BATCHFLEET_CONFIG": str(named)}).values["store"] == "/from/named"
    assert resolve({}, environ | {"BATCHFLEET_CONFIG": str(named)}, work / "batchfleet.toml").file == (
        work / "batchfleet.toml"
    )  # --config beats $BATCHFLEET_CONFIG


@pytest.mark.parametrize(
    ("text", "profile", "needles"),
    [
        ("store = [unclosed\n", None, ["not valid TOML", "line 1"]),
        ('stor = "/x"\n', None, ["unknown key 'stor'", "top level", "did you mean store?"]),
        (
            "[profile.p]\nprocesess = 2\n",
            "p",
            ["unknown key 'procesess'", "[profile.p]", "did you mean processes?"],
        ),
        ('[profile.p]\nprocesses = "many"\n', "p", ["key 'processes' in [profile.p]", "integer"]),
        ('broker = "amqp://a"\nbrokers = ["amqp://b"]\n', None, ["broker or brokers, not both"]),
        ('log_level = "LOUD"\n', None, ["not a log level"]),
        ('store = "/x"\n', "missing", ["no profile 'missing'", "profiles there: none"]),
    ],
)
def test_bad_files_are_one_line_naming_the_file(tmp_path: Path, text: str, profile: str | None,
                                                needles: list[str]) -> None:  # fmt: skip
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        resolve({}, isolated(tmp_path), path, profile)
    line = caught.value.line()
    assert "\n" not in line and str(path) in line
    for needle in needles:
        assert needle in line, line


def test_missing_files_and_profiles_without_a_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        resolve({}, isolated(tmp_path), tmp_path / "nope.toml")
    with pytest.raises(UsageError, match="no config file was found"):
        resolve({}, isolated(tmp_path), None, "prod")


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "batchfleet.toml").write_text("[profile.x]\nbroker = 5\n")
    result = batchfleet("list", "--profile", "x", cwd=tmp_path, env=isolated(tmp_path))
    assert result.code == 2 and len(result.error_lines) == 1, result.stderr
    assert "batchfleet.toml" in result.error_lines[0] and "broker" in result.error_lines[0]


def test_config_show_masks_secrets_and_names_sources(config: Path, tmp_path: Path) -> None:
    env = isolated(tmp_path, BATCHFLEET_NODE_ID="from-env", BATCHFLEET_SIGNING_KEY="k" * 40)
    result = batchfleet("config", "show", "--profile", "prod", "--json", cwd=tmp_path, env=env)
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["file"] == str(config) and data["profile"] == "prod"
    values = data["values"]
    assert values["broker"] == {"value": "amqp://bf:***@rabbit.prod:5672/", "source": f"profile prod in {config}"}
    assert values["node_id"] == {"value": "from-env", "source": "$BATCHFLEET_NODE_ID"}
    assert values["signing_key_file"]["source"] == "$BATCHFLEET_SIGNING_KEY (the key itself)"
    assert values["store"]["source"] == f"profile prod in {config}"
    assert values["grace"] == {"value": "30.0", "source": "default"}
    table = batchfleet("config", "show", "--profile", "lab", cwd=tmp_path, env=env)
    assert table.code == 0, table.stderr
    for secret in ("prod-secret-pw", "lab-pw-1", "lab-pw-2", "k" * 40):
        assert secret not in result.stdout + table.stdout
    assert "amqp://bf:***@r1:5672/,amqp://bf:***@r2:5672/" in table.stdout.replace("\n", "").replace("│", "")


def test_commands_take_the_store_from_the_profile(tmp_path: Path) -> None:
    spec = make_component(tmp_path / "comp", files=3)
    store = tmp_path / "profile-store"
    (tmp_path / "batchfleet.toml").write_text(f'[profile.local]\nstore = "{store}"\nlog_level = "WARNING"\n')
    env = isolated(tmp_path, BATCHFLEET_PROFILE="local")
    run = batchfleet("run", spec, "--input", f"data={tmp_path / 'comp' / 'data'}", "--output",
                     f"scored={tmp_path / 'out'}", "--no-progress", cwd=tmp_path, env=env)  # fmt: skip
    assert run.code == 0, run.stderr
    job_id = run.stdout.split()[1]
    assert (store / job_id / "state.json").is_file()
    status = batchfleet("status", job_id, cwd=tmp_path, env=env)  # no --store: the profile's
    assert status.code == 0 and "succeeded" in status.stdout, status.stderr
    assert job_id in batchfleet("list", cwd=tmp_path, env=env).stdout
