"""deploy/: systemd units verified by systemd-analyze and read for their contract, and the compose file."""

from __future__ import annotations

import os
import shutil
import subprocess
import types
from pathlib import Path

import pytest
import yaml

from common.redact import secret_values_from_env
from tests.unit.deploy_helpers import COMPOSE, SYSTEMD

UNITS = ["batchfleet-worker@.service", "batchfleet-coordinator.service", "batchfleet.target"]
SERVICES = [u for u in UNITS if u.endswith(".service")]
REAL_EXE = "/opt/batchfleet/venv/bin/batchfleet"


# ---------------------------------------------------------------- systemd


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, the way systemd reads a unit (repeated keys accumulate)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is required under CI (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed on this machine")
    return exe


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units copied next to a fake executable, ExecStart pointed at it."""
    fake = tmp_path / "bin" / "batchfleet"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        (units / name).write_text(text.replace(REAL_EXE, str(fake)))
    return units


def verify(units: Path, name: str) -> subprocess.CompletedProcess[str]:
    # A template is verified through an instance; systemd finds the template next to it.
    target = units / name.replace("@.", "@1.")
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", "--recursive-errors=no", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=units,
        check=False,
    )


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies_cleanly(unit_dir: Path, name: str) -> None:
    result = verify(unit_dir, name)
    ours = [
        line for line in (result.stdout + result.stderr).splitlines() if "batchfleet" in line or str(unit_dir) in line
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert ours == []


def test_verify_would_catch_a_broken_unit(unit_dir: Path) -> None:
    """The harness itself: a typo and a missing binary are reported."""
    path = unit_dir / "batchfleet-coordinator.service"
    text = path.read_text().replace("ProtectHome=yes", "ProtectHome=yess\nRestartSecs=5")
    path.write_text(text.replace(str(unit_dir.parent / "bin" / "batchfleet"), "/nonexistent/batchfleet"))
    result = verify(unit_dir, "batchfleet-coordinator.service")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "yess" in out and "RestartSecs" in out and "/nonexistent/batchfleet" in out


@pytest.mark.parametrize("name", SERVICES)
def test_unit_security_exposure_is_low(unit_dir: Path, name: str) -> None:
    # --threshold is the exposure times ten: 20 means "2.0 of 10 or better".
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--threshold=20", str(unit_dir / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_worker_unit_contract() -> None:
    service = unit_settings(SYSTEMD / "batchfleet-worker@.service")["Service"]
    assert service["ExecStart"] == [f"{REAL_EXE} worker --node-id {{host}}-{{machine}}-%i"]
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "EnvironmentFile": "-/etc/batchfleet/batchfleet.env",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "KillMode": "mixed",
        "User": "batchfleet",
        "DynamicUser": "no",
        "StateDirectory": "batchfleet",
        "ReadWritePaths": "/var/lib/batchfleet",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
        "MemoryDenyWriteExecute": "no",
        "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert service[key] == [value], key
    stop_seconds = int(service["TimeoutStopSec"][0].rstrip("s"))
    assert stop_seconds >= 60, "TimeoutStopSec must cover the worker's stop grace period"
    assert service["RestartSec"]


@pytest.mark.parametrize("name", SERVICES)
def test_units_are_hardened(name: str) -> None:
    service = unit_settings(SYSTEMD / name)["Service"]
    for key in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "LockPersonality",
    ]:
        assert service[key] == ["yes"], key
    assert service["ProtectSystem"] == ["strict"]
    assert "yes" not in service.get("DynamicUser", [])
    # The key arrives as a systemd credential file, never as a value in the unit.
    assert service["LoadCredential"] == ["signing-key:/etc/batchfleet/signing.key"]
    assert not any(v.startswith("BATCHFLEET_SIGNING_KEY=") for v in service.get("Environment", []))


GPU_DROP_IN = SYSTEMD / "batchfleet-worker@.service.d" / "gpu.conf"


def test_gpu_drop_in_opens_only_nvidia_devices() -> None:
    service = unit_settings(GPU_DROP_IN)["Service"]
    assert service["PrivateDevices"] == ["no"] and service["DevicePolicy"] == ["closed"]
    allowed = [value.split()[0] for value in service["DeviceAllow"]]
    assert all("nvidia" in device for device in allowed), allowed
    assert {"char-nvidia-frontend", "/dev/nvidiactl", "/dev/nvidia-uvm"} <= set(allowed)
    assert all(value.endswith(" rw") for value in service["DeviceAllow"])
    readme = (SYSTEMD / "README.md").read_text()
    assert "batchfleet-worker@.service.d/gpu.conf" in readme and "CUDA_VISIBLE_DEVICES" in readme


def test_worker_unit_verifies_with_the_gpu_drop_in(unit_dir: Path) -> None:
    drop_in = unit_dir / "batchfleet-worker@.service.d"
    drop_in.mkdir()
    (drop_in / "gpu.conf").write_text(GPU_DROP_IN.read_text())
    result = verify(unit_dir, "batchfleet-worker@.service")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert not [line for line in out.splitlines() if "gpu.conf" in line], out


def test_memory_deny_write_execute_decision_is_explained() -> None:
    text = (SYSTEMD / "batchfleet-worker@.service").read_text()
    comment = text[: text.index("MemoryDenyWriteExecute=no")].rsplit("\n\n", 1)[-1][-600:]
    assert "libffi" in comment and "JIT" in comment
    assert "MemoryDenyWriteExecute" in (SYSTEMD / "README.md").read_text()


def test_env_example_is_valid_and_holds_no_secret(support: types.ModuleType) -> None:
    text = (SYSTEMD / "batchfleet.env.example").read_text()
    env = support.parse_env_text(text)
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
        assert key in env
    secrets = [*secret_values_from_env(env), env["AWS_ACCESS_KEY_ID"]]
    assert secrets and all(value == "CHANGE-ME" for value in secrets)
    for needle in ("BATCHFLEET_SIGNING_KEY_FILE", "BATCHFLEET_BROKER", "batchfleet.toml"):
        assert needle in text


@pytest.mark.parametrize("name", SERVICES)
def test_units_read_the_one_config_file(name: str) -> None:
    service = unit_settings(SYSTEMD / name)["Service"]
    assert "BATCHFLEET_CONFIG=/etc/batchfleet/batchfleet.toml" in service["Environment"]
    assert service["EnvironmentFile"] == ["-/etc/batchfleet/batchfleet.env"]  # credentials only, optional


def test_config_example_is_valid_and_holds_no_secret() -> None:
    import tomllib

    from batchfleet.config import ConfigFile
    from common.redact import url_passwords

    text = (SYSTEMD.parent / "batchfleet.toml.example").read_text()
    config = ConfigFile.model_validate(tomllib.loads(text))
    assert {"default", "lab"} <= set(config.profile)
    assert config.profile["default"].broker and config.profile["default"].store
    assert set(url_passwords(text)) == {"CHANGE-ME"}


def test_readme_documents_operations() -> None:
    text = (SYSTEMD / "README.md").read_text()
    for needle in ["useradd", "/opt/batchfleet/venv", "batchfleet-worker@{1..4}", "journalctl", "READY=1"]:
        assert needle in text


# ---------------------------------------------------------------- compose


def test_compose_file_shape() -> None:
    doc = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"rabbitmq", "minio", "minio-init", "coordinator", "worker-1", "worker-2"} <= set(services)
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["coordinator"]["build"]["dockerfile"] == "deploy/compose/Dockerfile"
    assert (COMPOSE / "Dockerfile").is_file()
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), name
        env = service.get("environment", {})
        for key, value in env.items():
            if any(word in key for word in ("PASSWORD", "SECRET", "SIGNING_KEY", "BROKER")):
                assert "${" in str(value), f"{name}.{key} must come from .env"
    node_ids = [s["command"][-1] for n, s in services.items() if n.startswith("worker-")]
    assert len(set(node_ids)) == len(node_ids)
