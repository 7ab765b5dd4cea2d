"""deploy/: the collector image, the compose stack and the Kubernetes manifests, checked as far as this machine can.

No Docker daemon and no cluster here, so the checks run the real tools that do run (promtool, amtool,
kustomize through kubectl, the collector's settings resolver and argument parser, a real collector
process for the health checks) and otherwise read the files: images pinned, health checks present,
ports, mounts and secrets that resolve, and compose and Kubernetes agreeing on what the collector
runs with.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _collector_proc import CollectorProcess
from _deploy_model import (
    COMPOSE_FILE,
    DEPLOY,
    DOCKERFILE,
    K8S,
    ROOT,
    CollectorRun,
    Manifests,
    UnknownSettingError,
    check_setting_names,
    compose_environment,
    compose_mounts,
    compose_variables,
    container,
    dockerfile_env,
    dockerfile_instructions,
    exec_form,
    final_stage,
    healthcheck_command,
    interpolate,
    k8s_args,
    k8s_environment,
    load_compose,
    parse_quantity,
    published_ports,
)
from _ports import free_port

from agentwatch.collectors.config.auth import Authenticator
from agentwatch.collectors.config.settings import ENV_PREFIX, CollectorSettings, parse_address
from agentwatch.collectors.store.schema import SchemaOptions, render
from agentwatch.dashboards.datasources import DASHBOARDS_MOUNT_PATH, DATASOURCE_TYPES
from agentwatch.dashboards.deploy_sync import (
    DeployLayout,
    SyncError,
    alert_groups,
    alert_rule_files,
    derived_manifests,
    replace_block,
)

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

LAYOUT = DeployLayout(ROOT)
COLLECTOR_CONFIG = LAYOUT.collector_config
CLICKHOUSE_FILES = LAYOUT.clickhouse_files
PROMETHEUS_RULE = LAYOUT.prometheus_rule
GRAFANA_DATASOURCES = LAYOUT.grafana_datasources
GRAFANA_PROVIDER = LAYOUT.grafana_provider
GRAFANA_DASHBOARDS = LAYOUT.grafana_dashboards
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yaml"
TOKENS_EXAMPLE = DEPLOY / "collector" / "tokens.example.yaml"
CLICKHOUSE_ENV_EXAMPLE = K8S / "secrets" / "clickhouse.env.example"
README = DEPLOY / "README.md"
METRICS_TOKEN_EXAMPLE = K8S / "secrets" / "metrics-token.example"
SECRET_FILES = {
    "secrets/tokens.yaml": TOKENS_EXAMPLE,
    "secrets/clickhouse.env": CLICKHOUSE_ENV_EXAMPLE,
    "secrets/metrics-token": METRICS_TOKEN_EXAMPLE,
}

COLLECTOR_PORTS = {4317, 4318, 9464}
# container ports each compose service must publish (on 127.0.0.1: the stack's credentials are defaults)
COMPOSE_PORTS = {
    "collector": COLLECTOR_PORTS,
    "clickhouse": {8123},
    "prometheus": {9090},
    "alertmanager": {9093},
    "grafana": {3000},
    "webhook-echo": set(),
}
# settings that legitimately differ: the server's address, and the cluster only Kubernetes has
SETTINGS_THAT_DIFFER = {"clickhouse", "cluster"}


def _has_tool(name: str) -> bool:
    return shutil.which(name) is not None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return Manifests.load(secret_files=SECRET_FILES)


def _collector_pod(manifests: Manifests) -> dict[str, Any]:
    spec: dict[str, Any] = manifests.get("Deployment", "agentwatch-collector")["spec"]["template"]["spec"]
    return spec


def _compose_run(compose: dict[str, Any]) -> CollectorRun:
    service = compose["services"]["collector"]
    # nothing set in the shell: every ${VAR:-default} takes its own default, as on a fresh machine
    environ = {**dockerfile_env(dockerfile_instructions()), **compose_environment(service, {})}
    config_mount = next(m for m in compose_mounts(service) if m.target == "/etc/agentwatch/agentwatch.yaml")
    config_text = (DEPLOY / config_mount.source).read_text(encoding="utf-8")
    return CollectorRun(args=list(service["command"]), environ=environ, config_text=config_text)


def _k8s_run(manifests: Manifests) -> CollectorRun:
    spec = container(_collector_pod(manifests), "collector")
    pod_env = k8s_environment(spec, manifests)
    environ = {**dockerfile_env(dockerfile_instructions()), **pod_env}
    config_text = manifests.config_value("agentwatch-collector-config", "agentwatch.yaml")
    return CollectorRun(args=k8s_args(spec, pod_env), environ=environ, config_text=config_text)


# -- every file parses ------------------------------------------------------------------------------


def test_every_yaml_file_under_deploy_parses() -> None:
    files = sorted({*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")})
    assert COMPOSE_FILE in files
    assert PROMETHEUS_CONFIG in files
    for path in files:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert any(doc is not None for doc in documents), f"{path.relative_to(ROOT)} is empty"


def test_derived_manifests_are_current() -> None:
    stale = [str(manifest.path.relative_to(ROOT)) for manifest in derived_manifests(LAYOUT) if manifest.stale()]
    assert stale == [], "run `agentwatch generate` to refresh them"


def test_replace_block_swaps_only_the_named_literal_block() -> None:
    text = "data:\n  a.yaml: |\n    old: 1\n\n    more: 2\n  b.yaml: |\n    keep: 3\n"
    assert (
        replace_block(text, "a.yaml", "new: 1\n", where="t")
        == "data:\n  a.yaml: |\n    new: 1\n  b.yaml: |\n    keep: 3\n"
    )
    assert yaml.safe_load(replace_block(text, "b.yaml", "x\n\ny\n", where="t"))["data"]["b.yaml"] == "x\n\ny\n"
    with pytest.raises(SyncError):
        replace_block(text, "c.yaml", "x\n", where="t")
    with pytest.raises(SyncError):
        replace_block(text, "a.yaml", " indented first line\n", where="t")


# -- Prometheus and Alertmanager --------------------------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(not _has_tool("promtool"), reason="promtool is not installed (Debian package prometheus)")
def test_promtool_accepts_the_prometheus_config_with_the_repository_rules(
    tmp_path: Path, compose: dict[str, Any]
) -> None:
    # syntax only: the collector job's token file exists in the container alone (a compose config)
    done = _promtool("check", "config", "--syntax-only", str(PROMETHEUS_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    for job in config["scrape_configs"]:
        if "credentials_file" in job.get("authorization", {}):
            stand_in = tmp_path / Path(job["authorization"]["credentials_file"]).name
            stand_in.write_text("token", encoding="utf-8")
            job["authorization"]["credentials_file"] = str(stand_in)
    # the rule glob points where compose mounts ../alerts; check it against the repository's files
    rules_mount = next(m for m in compose_mounts(compose["services"]["prometheus"]) if m.source == "../alerts")
    assert [str(Path(rule).parent) for rule in config["rule_files"]] == [rules_mount.target]
    rule_files = alert_rule_files(LAYOUT)
    assert rule_files, "alerts/*.yaml is empty: Prometheus would load no rules"
    config["rule_files"] = [str(path) for path in rule_files]
    mapped = tmp_path / "prometheus.yml"
    mapped.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = _promtool("check", "config", str(mapped))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rule_files)} rule files found" in done.stdout
    for path in rule_files:
        assert f"Checking {path}" in done.stdout


def test_prometheus_scrapes_the_job_the_rules_select(compose: dict[str, Any], manifests: Manifests) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    selected = set()
    for path in alert_rule_files(LAYOUT):
        selected |= set(re.findall(r'job="([^"]+)"', path.read_text(encoding="utf-8")))
    assert "agentwatch-collector" in selected
    assert selected <= set(jobs)
    # compose: the collector job scrapes the collector service's metrics port
    [target] = [t for sc in jobs["agentwatch-collector"]["static_configs"] for t in sc["targets"]]
    host, port = parse_address(target, setting="target")
    assert host == "collector"
    assert port == 9464
    # Kubernetes: the ServiceMonitor's job label defaults to the Service's name
    monitor = manifests.get("ServiceMonitor", "agentwatch-collector")
    assert "jobLabel" not in monitor["spec"]
    services = [
        s
        for s in manifests.all("Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        and any(p["name"] == "metrics" for p in s["spec"]["ports"])
    ]
    assert [s["metadata"]["name"] for s in services] == ["agentwatch-collector"]
    # the Alertmanager Prometheus notifies is the compose service
    [am_target] = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert parse_address(am_target, setting="alertmanager") == ("alertmanager", 9093)


@pytest.mark.skipif(not _has_tool("amtool"), reason="amtool is not installed (Debian package prometheus-alertmanager)")
def test_amtool_accepts_the_alertmanager_config() -> None:
    assert ALERTMANAGER_CONFIG.is_file(), "deploy/alertmanager/alertmanager.yaml is missing"
    done = subprocess.run(
        ["amtool", "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alertmanager_webhooks_reach_a_compose_service(compose: dict[str, Any]) -> None:
    assert ALERTMANAGER_CONFIG.is_file(), "deploy/alertmanager/alertmanager.yaml is missing"
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    urls = [hook["url"] for receiver in config["receivers"] for hook in receiver.get("webhook_configs") or []]
    assert urls
    names: dict[str, str] = {}
    for name, service in compose["services"].items():
        names[name] = name
        for alias in ((service.get("networks") or {}).get("default") or {}).get("aliases") or []:
            names[alias] = name
    for url in urls:
        match = re.fullmatch(r"http://([^:/]+):(\d+)/.*", url)
        assert match, url
        service = compose["services"][names[match.group(1)]]
        assert "--port" in service["command"]
        assert service["command"][service["command"].index("--port") + 1] == match.group(2)


# -- docker compose ---------------------------------------------------------------------------------


def _image_tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    assert name, f"{image}: no tag"
    assert "/" not in tag, f"{image}: no tag"
    return tag


def test_compose_images_are_pinned_and_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == set(COMPOSE_PORTS)
    for name, service in compose["services"].items():
        tag = _image_tag(service["image"])
        assert tag != "latest", f"{name}: image {service['image']} is not pinned"
        assert re.search(r"\d", tag), f"{name}: image {service['image']} is not pinned"
        assert healthcheck_command(service), name
        assert not service["healthcheck"].get("disable"), name


def test_compose_publishes_the_expected_ports_on_loopback(compose: dict[str, Any]) -> None:
    for name, expected in COMPOSE_PORTS.items():
        ports = published_ports(compose["services"][name])
        assert set(ports) == expected, name
        assert set(ports.values()) <= {"127.0.0.1"}, f"{name} publishes beyond loopback"


def test_compose_mounts_exist_in_the_repository(compose: dict[str, Any]) -> None:
    declared_volumes = set(compose.get("volumes") or {})
    mounted: set[Path] = set()
    for name, service in compose["services"].items():
        for mount in compose_mounts(service):
            if mount.is_bind:
                source = (DEPLOY / mount.source).resolve()
                assert source.exists(), f"{name}: {mount.source} does not exist"
                assert mount.read_only, f"{name}: {mount.source} should be mounted read-only"
                mounted.add(source)
            else:
                assert mount.source in declared_volumes, f"{name}: volume {mount.source} is not declared"
    # every server override the store settings ship is mounted (single files: the entrypoint writes users.d)
    for path in CLICKHOUSE_FILES.values():
        assert path.resolve() in mounted, path
    for directory in ("config.d", "users.d"):
        for path in (DEPLOY / "clickhouse" / directory).iterdir():
            assert path.resolve() in mounted, f"{path.relative_to(ROOT)} is not mounted into ClickHouse"
    build = compose["services"]["collector"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_waits_only_on_services_with_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["collector"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert healthcheck_command(services[dependency])


def test_compose_collector_is_ready_checked_on_readyz(compose: dict[str, Any]) -> None:
    command = healthcheck_command(compose["services"]["collector"])
    assert "http://127.0.0.1:4318/readyz" in " ".join(command)


def test_every_compose_variable_has_a_default_and_is_documented(compose: dict[str, Any]) -> None:
    variables = compose_variables()
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) == set(variables)
    # one default per variable: two services reading one secret must agree on it
    for name, default in variables.items():
        assert set(re.findall(rf"\$\{{{name}:-([^}}]*)\}}", text)) == {default}, name
    readme = README.read_text(encoding="utf-8")
    assert [name for name in variables if name not in readme] == []
    assert interpolate("${A:-x} ${B-y} $$ ${C}", {"B": "", "C": "c"}) == "x  $ c"


def test_compose_tokens_config_loads_as_a_tokens_file(tmp_path: Path, compose: dict[str, Any]) -> None:
    service = compose["services"]["collector"]
    [config_ref] = service["configs"]
    settings = _compose_run(compose).settings(tmp_path)
    assert config_ref["target"] == settings.tokens
    content = interpolate(compose["configs"][config_ref["source"]]["content"], {})
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(content, encoding="utf-8")
    assert Authenticator.from_file(tokens).enabled
    assert Authenticator.from_file(TOKENS_EXAMPLE).enabled


# -- the collector's settings -----------------------------------------------------------------------


def test_compose_collector_settings_resolve(tmp_path: Path, compose: dict[str, Any]) -> None:
    run = _compose_run(compose)
    settings = run.settings(tmp_path)
    assert settings.clickhouse.startswith("http://agentwatch:")
    assert settings.clickhouse.endswith("@clickhouse:8123/agentwatch")
    assert run.parsed().config == "/etc/agentwatch/agentwatch.yaml"
    assert settings.cluster == ""
    assert {
        parse_address(getattr(settings, n), setting=n)[1] for n in ("otlp_http", "otlp_grpc", "metrics")
    } == COLLECTOR_PORTS


def test_kubernetes_collector_settings_resolve(tmp_path: Path, manifests: Manifests) -> None:
    run = _k8s_run(manifests)
    settings = run.settings(tmp_path)
    chi = manifests.get("ClickHouseInstallation")
    assert settings.cluster == chi["spec"]["configuration"]["clusters"][0]["name"]
    # the URL names the installation's Service (generateName clickhouse-{chi}) and carries the Secret's password
    password = manifests.secret_value("agentwatch-clickhouse", "collector_password")
    service = chi["spec"]["templates"]["serviceTemplates"][0]["generateName"].replace("{chi}", chi["metadata"]["name"])
    assert settings.clickhouse == f"http://agentwatch:{password}@{service}:8123/agentwatch"
    # every non-setting variable exists only to be expanded into a setting
    pod_env = container(_collector_pod(manifests), "collector")["env"]
    indirect = [e["name"] for e in pod_env if not e["name"].startswith(ENV_PREFIX)]
    values = " ".join(str(e.get("value", "")) for e in pod_env)
    assert all(f"$({name})" in values for name in indirect)


def test_a_misspelt_setting_fails_the_checks(tmp_path: Path, compose: dict[str, Any]) -> None:
    with pytest.raises(UnknownSettingError):
        check_setting_names(["AGENTWATCH_SPOOL_MAX_BYTE"])
    run = _compose_run(compose)
    with pytest.raises(UnknownSettingError):
        CollectorRun(run.args, {**run.environ, "AGENTWATCH_CLICKHOUSE_URL": "x"}, run.config_text).settings(tmp_path)
    with pytest.raises(SystemExit):
        CollectorRun([*run.args, "--spool-max-bites", "1"], run.environ, run.config_text).settings(tmp_path)


def test_compose_and_kubernetes_run_the_collector_alike(
    tmp_path: Path, compose: dict[str, Any], manifests: Manifests
) -> None:
    compose_run, k8s_run = _compose_run(compose), _k8s_run(manifests)
    (tmp_path / "compose").mkdir()
    (tmp_path / "k8s").mkdir()
    compose_settings = compose_run.settings(tmp_path / "compose")
    k8s_settings = k8s_run.settings(tmp_path / "k8s")
    differ = {
        name
        for name in CollectorSettings.__dataclass_fields__
        if getattr(compose_settings, name) != getattr(k8s_settings, name)
    }
    assert differ <= SETTINGS_THAT_DIFFER
    assert compose_run.args == k8s_run.args
    assert compose_run.config_text == k8s_run.config_text == COLLECTOR_CONFIG.read_text(encoding="utf-8")
    assert {k for k in compose_run.environ if k.startswith(ENV_PREFIX)} - {"AGENTWATCH_CLICKHOUSE"} == {
        k for k in k8s_run.environ if k.startswith(ENV_PREFIX)
    } - {"AGENTWATCH_CLICKHOUSE", "AGENTWATCH_CLUSTER"}


def test_images_and_ports_agree_everywhere(compose: dict[str, Any], manifests: Manifests) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    collector_image = f"agentwatch/collector:{version}"
    pod = _collector_pod(manifests)
    assert compose["services"]["collector"]["image"] == collector_image
    assert {c["image"] for c in [*pod["containers"], *pod["initContainers"]]} == {collector_image}
    ports = {p["name"]: p["containerPort"] for p in container(pod, "collector")["ports"]}
    assert set(ports.values()) == set(published_ports(compose["services"]["collector"])) == COLLECTOR_PORTS
    exposed = {
        int(p) for i in final_stage(dockerfile_instructions()) if i.keyword == "EXPOSE" for p in i.arguments.split()
    }
    assert exposed == COLLECTOR_PORTS
    env = dockerfile_env(dockerfile_instructions())
    for setting, port_name in (("OTLP_HTTP", "otlp-http"), ("OTLP_GRPC", "otlp-grpc"), ("METRICS", "metrics")):
        assert parse_address(env[ENV_PREFIX + setting], setting=setting) == ("0.0.0.0", ports[port_name])
    # the same ClickHouse release in compose, in the cluster and for its Keeper
    server = compose["services"]["clickhouse"]["image"]
    chi_pod = manifests.get("ClickHouseInstallation")["spec"]["templates"]["podTemplates"][0]["spec"]
    keeper_pod = manifests.get("ClickHouseKeeperInstallation")["spec"]["templates"]["podTemplates"][0]["spec"]
    assert chi_pod["containers"][0]["image"] == server
    assert _image_tag(keeper_pod["containers"][0]["image"]) == _image_tag(server)


# -- the Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_collector_image_with_a_spool_volume() -> None:
    instructions = dockerfile_instructions()
    runtime = final_stage(instructions)
    assert {i.arguments.split()[0] for i in instructions if i.keyword == "FROM"} == {"python:3.11-slim"}
    [user] = [i.arguments for i in runtime if i.keyword == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    [arg_uid] = [i.arguments for i in runtime if i.keyword == "ARG" and i.arguments.startswith("UID=")]
    assert user == "${UID}:${UID}"
    assert int(arg_uid.partition("=")[2]) >= 10000
    env = dockerfile_env(instructions)
    check_setting_names(env)
    [volume] = [exec_form(i.arguments) for i in runtime if i.keyword == "VOLUME"]
    assert volume == [env["AGENTWATCH_SPOOL"]]
    assert exec_form(next(i.arguments for i in runtime if i.keyword == "ENTRYPOINT")) == ["agentwatch"]
    install = next(i.arguments for i in instructions if i.keyword == "RUN" and "pip install" in i.arguments)
    assert '".[${EXTRAS}]"' in install
    assert "ARG EXTRAS=collector" in {f"{i.keyword} {i.arguments}" for i in instructions}


def test_dockerfile_copies_what_the_package_build_needs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", pyproject["project"]["readme"], *wheel["sources"], *wheel["force-include"]}
    copied = set()
    for instruction in dockerfile_instructions():
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from"):
            copied.update(instruction.arguments.split()[:-1])
    assert needed <= copied, f"missing from the image build: {needed - copied}"
    # the Dockerfile-specific ignore file must let every copied path through
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[[line.strip() for line in ignore].index("*")] == "*"
    included = {line[1:] for line in ignore if line.startswith("!")}
    assert copied <= included, f"excluded from the build context: {copied - included}"
    for path in copied:
        assert (ROOT / path).exists(), path


def test_config_file_sets_nothing_the_image_environment_overrides() -> None:
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text(encoding="utf-8"))["collector"]
    image_settings = {
        name[len(ENV_PREFIX) :].lower()
        for name in dockerfile_env(dockerfile_instructions())
        if name.startswith(ENV_PREFIX)
    }
    assert image_settings
    assert not set(config) & image_settings, "the environment wins: these file values would be dead"


@pytest.fixture(scope="module")
def running_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    collector = CollectorProcess(tmp_path_factory.mktemp("collector")).start()
    try:
        yield collector
    finally:
        collector.stop()


def _run_check(command: list[str], *, env: dict[str, str] | None = None) -> int:
    argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False).returncode


def test_health_checks_pass_against_a_running_collector_and_fail_without_one(
    running_collector: CollectorProcess, compose: dict[str, Any]
) -> None:
    runtime = final_stage(dockerfile_instructions())
    [healthcheck] = [i.arguments for i in runtime if i.keyword == "HEALTHCHECK"]
    image_check = exec_form(healthcheck.partition(" CMD ")[2])
    compose_check = healthcheck_command(compose["services"]["collector"])
    port = running_collector.http_port
    env = {"AGENTWATCH_OTLP_HTTP": f"0.0.0.0:{port}"}
    assert _run_check(image_check, env=env) == 0
    assert _run_check([arg.replace(":4318/", f":{port}/") for arg in compose_check]) == 0
    idle = free_port()
    assert _run_check(image_check, env={"AGENTWATCH_OTLP_HTTP": f"0.0.0.0:{idle}"}) != 0
    assert _run_check([arg.replace(":4318/", f":{idle}/") for arg in compose_check]) != 0


def test_webhook_echo_prints_each_notification(compose: dict[str, Any]) -> None:
    port = free_port()
    script = DEPLOY / "compose" / "webhook_echo.py"
    process = subprocess.Popen(
        [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        check = healthcheck_command(compose["services"]["webhook-echo"])
        deadline = time.monotonic() + 10
        while _run_check([arg.replace(":8080/", f":{port}/") for arg in check]) != 0:
            assert time.monotonic() < deadline, "webhook-echo did not answer its health check"
            time.sleep(0.1)
        notification = {
            "receiver": "pager",
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "AgentBudgetBurnFast", "severity": "page", "agent": "support"},
                    "annotations": {"summary": "support burns its budget"},
                }
            ],
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/pager", data=json.dumps(notification).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        assert process.stdout is not None
        printed = json.loads(process.stdout.readline())
        assert printed == {
            "receiver": "pager",
            "status": "firing",
            "alerts": [
                {
                    "alertname": "AgentBudgetBurnFast",
                    "severity": "page",
                    "agent": "support",
                    "status": "firing",
                    "summary": "support burns its budget",
                }
            ],
        }
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


# -- Kubernetes -------------------------------------------------------------------------------------


def _object_key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _references(node: object) -> Iterator[tuple[str, str, str]]:
    """(kind, name, key) of every secretKeyRef / configMapKeyRef anywhere in ``node``."""
    if isinstance(node, dict):
        for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if isinstance(node.get(field), dict):
                yield kind, node[field]["name"], node[field]["key"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


@pytest.mark.skipif(not _has_tool("kubectl"), reason="kubectl (with its built-in kustomize) is not installed")
def test_kustomize_renders_the_same_objects_with_every_reference_resolved(tmp_path: Path, manifests: Manifests) -> None:
    directory = tmp_path / "kubernetes"
    shutil.copytree(K8S, directory)
    for relative, source in SECRET_FILES.items():
        shutil.copy(source, directory / relative)
    done = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert sorted(map(_object_key, rendered)) == sorted(map(_object_key, manifests.objects))
    names = {_object_key(obj): obj for obj in rendered}
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "agentwatch", _object_key(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "agentwatch", _object_key(obj)
    # every Secret and ConfigMap a pod or the ClickHouseInstallation names exists, with the key it wants
    references = list(_references(rendered))
    assert ("Secret", "agentwatch-clickhouse", "grafana_password") in references
    for kind, name, wanted in references:
        data = names[(kind, name)].get("data") or {}
        assert wanted in data, f"{kind} {name} has no key {wanted}"
    pod = names[("Deployment", "agentwatch-collector")]["spec"]["template"]["spec"]
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert ("Secret", volume["secret"]["secretName"]) in names
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in names


def test_schema_init_targets_the_cluster_the_installation_defines(manifests: Manifests) -> None:
    pod = _collector_pod(manifests)
    init = container(pod, "schema", init=True)
    init_env = k8s_environment(init, manifests)
    args = CollectorRun(k8s_args(init, init_env), init_env, "").parsed()
    assert args.command == "schema"
    assert args.apply
    collector_env = k8s_environment(container(pod, "collector"), manifests)
    assert args.clickhouse == collector_env["AGENTWATCH_CLICKHOUSE"]
    assert args.cluster == collector_env["AGENTWATCH_CLUSTER"]
    chi = manifests.get("ClickHouseInstallation")
    [cluster] = chi["spec"]["configuration"]["clusters"]
    assert cluster["name"] == args.cluster
    assert (cluster["layout"]["shardsCount"], cluster["layout"]["replicasCount"]) == (2, 2)
    ddl = "\n".join(render(SchemaOptions(database="agentwatch", cluster=args.cluster)))
    assert f"ON CLUSTER `{args.cluster}`" in ddl
    assert f"Distributed('{args.cluster}', 'agentwatch'" in ddl
    assert "{shard}" in ddl
    assert "{replica}" in ddl


def test_clickhouse_cluster_uses_its_keeper_and_the_small_host_settings(manifests: Manifests) -> None:
    chi = manifests.get("ClickHouseInstallation")["spec"]
    keeper = manifests.get("ClickHouseKeeperInstallation")
    [node] = chi["configuration"]["zookeeper"]["nodes"]
    assert node["host"] == f"keeper-{keeper['metadata']['name']}"
    assert str(node["port"]) == keeper["spec"]["configuration"]["settings"]["keeper_server/tcp_port"]
    assert keeper["spec"]["configuration"]["clusters"][0]["layout"]["replicasCount"] % 2 == 1
    files = chi["configuration"]["files"]
    assert {key: files[key] for key in CLICKHOUSE_FILES} == {
        key: path.read_text(encoding="utf-8") for key, path in CLICKHOUSE_FILES.items()
    }
    # each user's profile is one the embedded users.d file defines
    profiles = set(
        re.findall(r"<(\w+)>", files["users.d/agentwatch-limits.xml"].split("<profiles>")[1].split("</profiles>")[0])
    )
    users = chi["configuration"]["users"]
    for key, value in users.items():
        if key.endswith("/profile"):
            assert value in profiles, key
    assert users["grafana/profile"] == "agentwatch_readonly"
    compose_user = (DEPLOY / "compose" / "clickhouse-grafana-user.xml").read_text(encoding="utf-8")
    assert "<profile>agentwatch_readonly</profile>" in compose_user


def test_prometheus_rule_holds_the_alert_files_groups(tmp_path: Path) -> None:
    groups = alert_groups(LAYOUT)
    assert groups, "alerts/*.yaml holds no rule groups"
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == groups
    if _has_tool("promtool"):
        embedded = tmp_path / "embedded-rules.yaml"
        embedded.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
        done = _promtool("check", "rules", str(embedded))
        assert done.returncode == 0, done.stdout + done.stderr


def test_servicemonitor_scrapes_the_collector_metrics_port(manifests: Manifests) -> None:
    monitor = manifests.get("ServiceMonitor", "agentwatch-collector")["spec"]
    service = manifests.get("Service", "agentwatch-collector")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["endpoints"]
    [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    pod = _collector_pod(manifests)
    container_ports = {p["name"]: p["containerPort"] for p in container(pod, "collector")["ports"]}
    assert container_ports[port["targetPort"]] == port["port"] == 9464
    assert (
        service["spec"]["selector"].items()
        <= manifests.get("Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == container_ports
    grpc = manifests.get("Service", "agentwatch-collector-grpc")["spec"]
    assert grpc["clusterIP"] == "None"
    assert [p["port"] for p in grpc["ports"]] == [4317]


def test_autoscaling_and_disruption_budget_target_the_collector(manifests: Manifests) -> None:
    deployment = manifests.get("Deployment", "agentwatch-collector")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = manifests.get("HorizontalPodAutoscaler", "agentwatch-collector")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agentwatch-collector"}
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    requests = container(deployment["spec"]["template"]["spec"], "collector")["resources"]["requests"]
    assert "cpu" in requests, "CPU utilization is a share of the request"
    pdb = manifests.get("PodDisruptionBudget", "agentwatch-collector")["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["maxUnavailable"] < hpa["minReplicas"]


def test_spool_volume_and_mounts_fit_the_settings(tmp_path: Path, manifests: Manifests) -> None:
    pod = _collector_pod(manifests)
    settings = _k8s_run(manifests).settings(tmp_path)
    mounts = {m["name"]: m for m in container(pod, "collector")["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["spool"]["mountPath"] == settings.spool
    claim = volumes["spool"]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert parse_quantity(claim["resources"]["requests"]["storage"]) > settings.spool_max_bytes
    assert Path(settings.tokens).parent == Path(mounts["tokens"]["mountPath"])
    assert volumes["tokens"]["secret"]["secretName"] == "agentwatch-collector-tokens"
    assert Path(mounts["config"]["mountPath"]).name == mounts["config"]["subPath"] == "agentwatch.yaml"
    security = container(pod, "collector")["securityContext"]
    assert security["readOnlyRootFilesystem"]
    assert not security["allowPrivilegeEscalation"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["runAsUser"] >= 10000
    probes = container(pod, "collector")
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] >= 60


# -- Grafana ----------------------------------------------------------------------------------------


def _datasources(provisioning: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {ds["uid"]: ds for ds in provisioning["datasources"]}


def test_grafana_provisioning_matches_the_compose_stack(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    text = GRAFANA_DATASOURCES.read_text(encoding="utf-8")
    datasources = _datasources(yaml.safe_load(text))
    assert {uid: ds["type"] for uid, ds in datasources.items()} == DATASOURCE_TYPES
    # the addresses are compose services on their container ports
    prometheus = datasources["agentwatch-prometheus"]["url"]
    assert prometheus == "http://prometheus:9090"
    clickhouse = datasources["agentwatch-clickhouse"]["jsonData"]
    assert clickhouse["host"] in compose["services"]
    assert clickhouse["port"] in published_ports(compose["services"][clickhouse["host"]])
    # Grafana's ClickHouse user is the read-only one, with the password the server was given
    environment = compose_environment(grafana, {})
    server_env = compose_environment(compose["services"]["clickhouse"], {})
    for variable in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
        assert variable in environment, f"Grafana's environment lacks {variable}"
    password = re.fullmatch(r"\$\{(\w+)\}", datasources["agentwatch-clickhouse"]["secureJsonData"]["password"])
    assert password is not None
    user_file = (DEPLOY / "compose" / "clickhouse-grafana-user.xml").read_text(encoding="utf-8")
    [server_variable] = re.findall(r'<password from_env="(\w+)"/>', user_file)
    assert environment[password.group(1)] == server_env[server_variable]
    assert f"<{clickhouse['username']}>" in user_file
    assert clickhouse["defaultDatabase"] == server_env["CLICKHOUSE_DB"]
    # the dashboards are mounted where the provider looks
    provider = yaml.safe_load(GRAFANA_PROVIDER.read_text(encoding="utf-8"))
    [path] = [p["options"]["path"] for p in provider["providers"]]
    dashboards = next(m for m in compose_mounts(grafana) if m.source == "./grafana/dashboards")
    assert path == dashboards.target == DASHBOARDS_MOUNT_PATH
    plugin, _, version = grafana["environment"]["GF_INSTALL_PLUGINS"].partition(" ")
    assert plugin == "grafana-clickhouse-datasource"
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "pin the plugin's version"


def test_kubernetes_grafana_provisioning_points_at_the_cluster(manifests: Manifests) -> None:
    compose_sources = _datasources(yaml.safe_load(GRAFANA_DATASOURCES.read_text(encoding="utf-8")))
    config = manifests.get("ConfigMap", "agentwatch-grafana-datasources")
    assert config["metadata"]["labels"]["grafana_datasource"] == "1"
    cluster_sources = _datasources(yaml.safe_load(config["data"]["agentwatch.yaml"]))
    assert {uid: ds["type"] for uid, ds in cluster_sources.items()} == {
        uid: ds["type"] for uid, ds in compose_sources.items()
    }
    chi = manifests.get("ClickHouseInstallation")
    service = chi["spec"]["templates"]["serviceTemplates"][0]["generateName"].replace("{chi}", chi["metadata"]["name"])
    clickhouse = cluster_sources["agentwatch-clickhouse"]["jsonData"]
    assert clickhouse["host"] == f"{service}.agentwatch.svc"
    assert clickhouse["username"] == "grafana"
    assert "grafana/password" in chi["spec"]["configuration"]["users"]
    provider = manifests.get("ConfigMap", "agentwatch-grafana-dashboard-provider")
    assert provider["data"]["agentwatch.yaml"] == GRAFANA_PROVIDER.read_text(encoding="utf-8")
    # every dashboard, each in a ConfigMap of its own (their content: test_derived_manifests_are_current)
    dashboards = [
        key
        for cm in manifests.all("ConfigMap")
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
        for key in cm["data"]
    ]
    assert sorted(dashboards) == sorted(p.name for p in GRAFANA_DASHBOARDS.glob("*.json"))
    assert dashboards
