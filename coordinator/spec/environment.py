"""The spec's `environment`, read into what a worker builds: pip requirements, a python pin, and
what no worker installs (conda packages, a docker image), each reported in one line
(PythonEnvironment.notes).

Accepted, relative to the spec's folder:
  ParallelComponent: environment.conda.conda_dependencies (inline), conda_dependencies_file,
                     pip_requirements_file; environment.docker.image
  Azure ML v2:       environment.conda_file (a path or inline), environment.image
  batchfleet:        environment.requirements_file: requirements.txt
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from common.errors import SpecError
from common.messages import PythonEnvironment

# Azure ML's own runtime packages: batchfleet is the runtime, so they are not installed.
RUNTIME_PACKAGES = frozenset({"azureml-defaults", "azureml-core", "azureml-dataprep", "azureml-dataset-runtime"})


def read_environment(raw: dict[str, Any] | None, folder: Path, where: str) -> PythonEnvironment | None:
    """None when the spec names no Python packages (a named Azure ML environment included)."""
    if not raw:
        return None
    if "reference" in raw:
        return PythonEnvironment(source=f"named environment {raw['reference']} (not buildable here)")
    found = raw.get("conda")
    conda: dict[str, Any] = found if isinstance(found, dict) else {}
    image = _image(raw)
    env = PythonEnvironment(image=image)
    sources: list[str] = []
    inline = conda.get("conda_dependencies")
    conda_file = conda.get("conda_dependencies_file") or raw.get("conda_file")
    if isinstance(conda_file, dict):
        inline, conda_file = conda_file, None
    if inline is not None:
        _add_conda(env, inline, where, "environment conda dependencies")
        sources.append("inline conda dependencies")
    if conda_file:
        path = (folder / str(conda_file)).resolve()
        if _exists(env, path):
            _add_conda(env, _yaml(path, where), where, str(path.name))
            sources.append(path.name)
    for key in ("pip_requirements_file", "requirements_file"):
        name = conda.get(key) if key == "pip_requirements_file" else raw.get(key)
        listed = (folder / str(name)).resolve() if name else None
        if listed is not None and _exists(env, listed):
            env.requirements += _requirement_lines(listed)
            sources.append(listed.name)
    env.requirements = [r for r in env.requirements if _name(r) not in RUNTIME_PACKAGES]
    env.source = ", ".join(sources)
    return env if (env.requirements or env.python or env.conda_only or image or env.missing) else None


def _image(raw: dict[str, Any]) -> str | None:
    docker = raw.get("docker")
    image = docker.get("image") if isinstance(docker, dict) else raw.get("image")
    return str(image) if image else None


def _exists(env: PythonEnvironment, path: Path) -> bool:
    """A missing file is noted, not refused here: only a job that builds its environment needs it
    (see check_buildable); embedded runs in the current Python by default."""
    if path.is_file():
        return True
    env.missing.append(str(path))
    return False


def check_buildable(env: PythonEnvironment | None, where: str) -> None:
    """Refuse, at submission, a job whose workers would build an environment from a missing file."""
    if env is not None and env.missing:
        raise SpecError(
            f"{where}: environment file {env.missing[0]} does not exist",
            "it is relative to the YAML file; or pass --environment current to run in the workers' Python",
        )


def _yaml(path: Path, where: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{where}: cannot read conda file {path}: {exc}") from None


def _add_conda(env: PythonEnvironment, doc: Any, where: str, what: str) -> None:
    """conda's `dependencies:` list: `python=...`, conda packages, and a `pip:` list."""
    deps = doc.get("dependencies") if isinstance(doc, dict) else None
    if deps is None:
        return
    if not isinstance(deps, list):
        raise SpecError(f"{where}: {what}: dependencies must be a list")
    for dep in deps:
        if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            env.requirements += [str(line).strip() for line in dep["pip"] if str(line).strip()]
        elif isinstance(dep, str):
            name = _name(dep)
            if name == "python":
                env.python = dep.strip()[len("python") :].strip() or None
            elif name != "pip":
                env.conda_only.append(dep.strip())
        else:
            raise SpecError(f"{where}: {what}: cannot read dependency {dep!r}", "use a string or a pip: list")


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split(" #", 1)[0].strip()
        if text and not text.startswith("#"):
            lines.append(text)
    return lines


def _name(requirement: str) -> str:
    """The distribution name of a requirement or conda spec ('numpy>=1.2' -> 'numpy')."""
    text = requirement.strip()
    end = 0
    while end < len(text) and (text[end].isalnum() or text[end] in "-_."):
        end += 1
    return text[:end].lower().replace("_", "-")
