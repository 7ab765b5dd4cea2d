"""Read the deployment files the way their tools do: Dockerfile, docker compose, Kubernetes manifests.

No Docker daemon or cluster runs here, so ``tests/test_deploy.py`` checks the files themselves. The
parsing is deliberately close to the real tools' rules where they matter for the checks: compose's
``${VAR:-default}`` interpolation, Kubernetes' ``$(VAR)`` expansion of earlier env entries and
``secretKeyRef`` lookups, the Dockerfile's ``ENV``/``EXPOSE``/``COPY`` instructions, and the
collector's own settings resolver (``agentwatch.collectors.config.settings``) and argument parser for what
the collector container will actually run with.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _paths import REPO

from agentwatch.collectors.cli.main import build_parser
from agentwatch.collectors.config.settings import ENV_PREFIX, SETTING_TYPES, CollectorSettings, resolve

ROOT = REPO
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE_FILE = DEPLOY / "docker-compose.yaml"


# -- Dockerfile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped; ``stage`` counts FROMs."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions = []
    stage = -1
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(instruction.stage for instruction in instructions)
    return [instruction for instruction in instructions if instruction.stage == last]


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    """ENV of the runtime stage (``KEY=VALUE`` form only; ``${VAR}`` references left as written)."""
    env: dict[str, str] = {}
    for instruction in final_stage(instructions):
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {instruction.arguments!r}: use KEY=VALUE"
                env[key] = value
    return env


def exec_form(arguments: str) -> list[str]:
    """``["a", "b"]`` of CMD/ENTRYPOINT/HEALTHCHECK CMD (JSON array, as Docker reads exec form)."""
    value = json.loads(arguments)  # not valid JSON: Docker would run it through a shell instead
    assert isinstance(value, list), arguments
    assert all(isinstance(item, str) for item in value), arguments
    return list(value)


# -- docker compose -----------------------------------------------------------------------------

_COMPOSE_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Compose's interpolation: ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``$$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return environ.get(match.group("named"), "")
        expression = match.group("braced")
        for operator in (":-", "-", ":?", "?"):
            name, sep, default = expression.partition(operator)
            if sep:
                value = environ.get(name)
                if operator == ":-":
                    return value if value else default
                if operator == "-":
                    return value if value is not None else default
                if value is None or (operator == ":?" and not value):
                    raise KeyError(f"{name}: {default}")
                return value
        return environ.get(expression, "")

    return _COMPOSE_VARIABLE.sub(substitute, text)


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def compose_variables(path: Path = COMPOSE_FILE) -> dict[str, str]:
    """Every ``${VAR:-default}`` the compose file reads, with its default."""
    text = path.read_text(encoding="utf-8")
    return {match[0]: match[1] for match in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}", text)}


def compose_environment(service: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    return {str(key): interpolate(str(value), environ) for key, value in raw.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/"))


def compose_mounts(service: Mapping[str, Any]) -> list[Mount]:
    mounts = []
    for volume in service.get("volumes") or []:
        assert isinstance(volume, str), f"long-form volume syntax is not used here: {volume!r}"
        parts = volume.split(":")
        mounts.append(Mount(parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return mounts


def published_ports(service: Mapping[str, Any]) -> dict[int, str]:
    """container port -> host address it is published on ("" when on every interface)."""
    ports: dict[int, str] = {}
    for entry in service.get("ports") or []:
        parts = str(entry).split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        ports[int(parts[-1].split("/")[0])] = host_ip
    return ports


def healthcheck_command(service: Mapping[str, Any]) -> list[str]:
    test = (service.get("healthcheck") or {}).get("test")
    assert isinstance(test, list), f"no healthcheck command: {test!r}"
    assert test[:1] in (["CMD"], ["CMD-SHELL"]), f"no usable healthcheck: {test!r}"
    return [str(item) for item in test[1:]]


# -- Kubernetes -----------------------------------------------------------------------------------


def env_file(path: Path) -> dict[str, str]:
    """A kustomize ``envs:`` file: KEY=VALUE lines, ``#`` comments."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


@dataclass
class Manifests:
    """The objects of ``deploy/kubernetes`` (its kustomization's resources and generated secrets)."""

    objects: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path = K8S, *, secret_files: Mapping[str, Path] | None = None) -> Manifests:
        """Read the resources; generate the secrets from ``secret_files`` (kustomization path -> file)."""
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
        objects: list[dict[str, Any]] = []
        for resource in kustomization["resources"]:
            text = (directory / resource).read_text(encoding="utf-8")
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
        sources = dict(secret_files or {})
        for generator in kustomization.get("secretGenerator") or []:
            data: dict[str, str] = {}
            for entry in generator.get("files") or []:
                key, _, relative = entry.partition("=")
                data[key] = sources.get(relative, directory / relative).read_text(encoding="utf-8")
            for relative in generator.get("envs") or []:
                data.update(env_file(sources.get(relative, directory / relative)))
            objects.append(
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"]}, "stringData": data}
            )
        return cls(objects)

    def get(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [obj for obj in self.objects if obj["kind"] == kind and name in (None, obj["metadata"]["name"])]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def secret_value(self, name: str, key: str) -> str:
        secret = self.get("Secret", name)
        data = secret.get("stringData") or {}
        assert key in data, f"Secret {name} has no key {key!r} (keys: {sorted(data)})"
        return str(data[key])

    def config_value(self, name: str, key: str) -> str:
        data = self.get("ConfigMap", name).get("data") or {}
        assert key in data, f"ConfigMap {name} has no key {key!r}"
        return str(data[key])


def container(pod_spec: Mapping[str, Any], name: str, *, init: bool = False) -> dict[str, Any]:
    containers = pod_spec["initContainers" if init else "containers"]
    found = [c for c in containers if c["name"] == name]
    assert len(found) == 1, f"no container {name!r}"
    result: dict[str, Any] = found[0]
    return result


_K8S_REFERENCE = re.compile(r"\$\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


def expand_k8s(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)``: defined names are replaced, unknown ones stay as written, ``$$`` is ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name")
        return variables.get(name, match.group(0))

    return _K8S_REFERENCE.sub(substitute, text)


def k8s_environment(spec: Mapping[str, Any], manifests: Manifests) -> dict[str, str]:
    """A container's environment as the kubelet builds it (in order; earlier names expand in later values)."""
    env: dict[str, str] = {}
    for entry in spec.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = expand_k8s(str(entry["value"]), env)
            continue
        reference = entry["valueFrom"]
        if "secretKeyRef" in reference:
            ref = reference["secretKeyRef"]
            env[entry["name"]] = manifests.secret_value(ref["name"], ref["key"])
        elif "configMapKeyRef" in reference:
            ref = reference["configMapKeyRef"]
            env[entry["name"]] = manifests.config_value(ref["name"], ref["key"])
        else:
            raise AssertionError(f"unsupported env source {reference}")
    return env


def k8s_args(spec: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    return [expand_k8s(str(arg), env) for arg in [*spec.get("command", []), *spec.get("args", [])]]


def parse_quantity(value: str) -> int:
    """Bytes of a Kubernetes quantity like ``10Gi`` or ``512M``."""
    units = {
        "Ki": 1 << 10,
        "Mi": 1 << 20,
        "Gi": 1 << 30,
        "Ti": 1 << 40,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
    }
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", value)
    assert match, value
    return int(match.group(1)) * (units[match.group(2)] if match.group(2) else 1)


# -- the collector's settings ---------------------------------------------------------------------


class UnknownSettingError(AssertionError):
    """An ``AGENTWATCH_*`` variable that names no collector setting: the resolver would ignore it."""


def check_setting_names(environ: Iterable[str], *, ignore: Iterable[str] = ()) -> None:
    """Every ``AGENTWATCH_*`` name must be a setting (the resolver silently skips others: a typo)."""
    unknown = sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and name not in set(ignore)
        and name[len(ENV_PREFIX) :].lower() not in SETTING_TYPES
    )
    if unknown:
        raise UnknownSettingError(f"not collector settings: {unknown} (known: {sorted(SETTING_TYPES)})")


@dataclass(frozen=True)
class CollectorRun:
    """What one collector container runs with: its arguments, environment and settings file."""

    args: list[str]
    environ: dict[str, str]
    config_text: str

    def parsed(self) -> argparse.Namespace:
        # the real command line parser: an unknown or misspelt flag fails here as it would in the container
        return build_parser().parse_args(self.args)

    def settings(self, workdir: Path) -> CollectorSettings:
        args = self.parsed()
        assert args.command == "collector", self.args
        check_setting_names(self.environ)
        config = workdir / "agentwatch.yaml"
        config.write_text(self.config_text, encoding="utf-8")
        overrides = {name: getattr(args, name) for name in SETTING_TYPES if getattr(args, name, None) is not None}
        settings = resolve(config_file=config, overrides=overrides, environ=self.environ)
        settings.check_exposure()
        return settings
