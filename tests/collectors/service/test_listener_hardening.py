"""The collector's HTTP listeners against slow clients, and /metrics against readers without a token.

Slowloris-style clients (a request head or body dripped a byte at a time) must be cut off after
``header_timeout_seconds`` / ``body_timeout_seconds`` while other clients are served; /metrics
follows the receivers' bind rule (beyond loopback only with tokens or ``insecure_allow_remote``)
and, with tokens, wants a ``metrics``-scoped token when it listens beyond loopback. The deploy
stack's Prometheus scrapes with such a token.
"""

from __future__ import annotations

import http.client
import math
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from _deploy_model import Manifests, compose_variables, interpolate, load_compose
from _otlp_clients import Collector, http_request, running_collector
from _paths import REPO
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.collectors.config.auth import Authenticator, AuthError, Scope
from agentwatch.collectors.config.settings import CollectorSettings, SettingsError, resolve
from agentwatch.collectors.service.collector import CollectorService

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

HEADER_S = 0.5
BODY_S = 0.5
# scheduling slack on a busy two-core machine; the old listeners never closed at all
MARGIN_S = 1.5
GIVE_UP_S = 8.0
DRIP_EVERY_S = 0.2  # faster than either timeout: a timer reset by every byte would never fire

DEPLOY = REPO / "deploy"
K8S_SECRET_FILES = {
    "secrets/tokens.yaml": DEPLOY / "collector" / "tokens.example.yaml",
    "secrets/clickhouse.env": DEPLOY / "kubernetes" / "secrets" / "clickhouse.env.example",
    "secrets/metrics-token": DEPLOY / "kubernetes" / "secrets" / "metrics-token.example",
}


@pytest.fixture
def collector(clickhouse_url: str, tmp_path: Path) -> Iterator[Collector]:
    """Both HTTP listeners with half-second read timeouts; the store need not be ready."""
    with running_collector(
        clickhouse_url,
        tmp_path,
        wait_ready=False,
        metrics="127.0.0.1:0",
        header_timeout_seconds=HEADER_S,
        body_timeout_seconds=BODY_S,
    ) as running:
        yield running


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _drip_until_closed(sock: socket.socket) -> tuple[float, bytes]:
    """Send one byte every DRIP_EVERY_S until the server closes; (seconds it took, bytes it sent back)."""
    start = time.monotonic()
    received = bytearray()
    next_drip = start + DRIP_EVERY_S
    while time.monotonic() - start < GIVE_UP_S:
        readable, _, _ = select.select([sock], [], [], max(0.0, next_drip - time.monotonic()))
        if readable:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return time.monotonic() - start, bytes(received)
            received += chunk
            continue
        try:
            sock.sendall(b"a")
        except OSError:  # broken pipe or reset: closed before we saw the FIN
            return time.monotonic() - start, bytes(received)
        next_drip = time.monotonic() + DRIP_EVERY_S
    pytest.fail(f"the server kept a dripping connection open for {GIVE_UP_S} s ({bytes(received)!r})")


def _is_open(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable  # a closed connection reads as EOF at once


# --- header and body timeouts --------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["otlp_http", "metrics"])
def test_a_dripped_request_head_is_cut_off_after_the_header_timeout(collector: Collector, listener: str) -> None:
    port = collector.service.http_port if listener == "otlp_http" else collector.service.metrics_port
    with _connect(port) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: collector\r\nX-Slow: ")
        elapsed, reply = _drip_until_closed(sock)
    assert HEADER_S - 0.1 <= elapsed <= HEADER_S + MARGIN_S
    assert reply.startswith(b"HTTP/1.1 408 "), reply


def test_a_stalled_request_body_is_cut_off_after_the_body_timeout(collector: Collector) -> None:
    with _connect(collector.service.http_port) as sock:
        head = (
            b"POST /v1/traces HTTP/1.1\r\nHost: collector\r\n"
            b"Content-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(head + b"0123456789")
        elapsed, reply = _drip_until_closed(sock)
    assert BODY_S - 0.1 <= elapsed <= BODY_S + MARGIN_S
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    # the receiver is unharmed, and the abandoned export was never acknowledged
    assert collector.get("/healthz").status == 200
    assert collector.service.metrics.registry.get_sample_value(
        "agentwatch_collector_spans_received_total", {"transport": "http"}
    ) in (None, 0.0)


def test_a_connection_that_never_speaks_is_closed_without_an_answer(collector: Collector) -> None:
    with _connect(collector.service.http_port) as sock:
        start = time.monotonic()
        readable, _, _ = select.select([sock], [], [], GIVE_UP_S)
        assert readable, "an idle connection stayed open"
        assert sock.recv(4096) == b""  # no 408 that a request sent at this moment could take for its answer
        assert time.monotonic() - start <= HEADER_S + MARGIN_S


def test_a_slow_head_after_a_kept_alive_request_is_timed_too(collector: Collector) -> None:
    with _connect(collector.service.http_port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: collector\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.endswith(b"}"):
            first += sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ")
        elapsed, reply = _drip_until_closed(sock)
    assert HEADER_S - 0.1 <= elapsed <= HEADER_S + MARGIN_S
    assert reply.startswith(b"HTTP/1.1 408 "), reply


def test_an_idle_kept_alive_connection_outlives_the_header_timeout(collector: Collector) -> None:
    """Between requests the keep-alive timeout (30 s) applies, not the header timeout."""
    connection = http.client.HTTPConnection("127.0.0.1", collector.service.http_port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b'{"status":"ok"}'
        kept = connection.sock
        time.sleep(HEADER_S * 3)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
        assert connection.sock is kept
    finally:
        connection.close()


def test_other_clients_are_served_while_slow_ones_are_pending(clickhouse_url: str, tmp_path: Path) -> None:
    with running_collector(
        clickhouse_url, tmp_path, wait_ready=False, metrics="127.0.0.1:0", header_timeout_seconds=5.0
    ) as collector:
        slow = [_connect(collector.service.http_port) for _ in range(20)]
        try:
            for sock in slow:
                sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: collector\r\nX-Slow: ")
            start = time.monotonic()
            assert collector.get("/healthz").status == 200
            assert http_request(f"http://127.0.0.1:{collector.service.metrics_port}/metrics", None).status == 200
            assert time.monotonic() - start < 2.0
            assert all(_is_open(sock) for sock in slow)
        finally:
            for sock in slow:
                sock.close()


@pytest.mark.parametrize("name", ["header_timeout_seconds", "body_timeout_seconds"])
def test_read_timeouts_are_positive_finite_settings(name: str) -> None:
    assert getattr(CollectorSettings(), name) == {"header_timeout_seconds": 10.0, "body_timeout_seconds": 30.0}[name]
    for bad in (0.0, -1.0, math.inf, math.nan):
        changes: dict[str, Any] = {name: bad}
        with pytest.raises(SettingsError, match=name):
            replace(CollectorSettings(), **changes).validate()
    assert getattr(resolve(environ={f"AGENTWATCH_{name.upper()}": "2.5"}), name) == 2.5


# --- /metrics exposure ------------------------------------------------------------------------------


def _write_tokens(path: Path) -> Path:
    entries = [
        {"token": "ingest-token", "tenant": "acme", "scopes": ["ingest"]},
        {"token": "read-token", "tenant": "acme", "scopes": ["read"]},
        {"token": "metrics-token", "tenant": "monitoring", "scopes": ["metrics"]},
    ]
    path.write_text(yaml.safe_dump({"tokens": entries}), encoding="utf-8")
    return path


def test_metrics_beyond_loopback_without_tokens_is_refused(clickhouse_url: str, tmp_path: Path) -> None:
    settings = CollectorSettings(
        clickhouse=clickhouse_url,
        spool=str(tmp_path / "spool"),
        otlp_http="127.0.0.1:0",
        otlp_grpc="",
        metrics="0.0.0.0:0",
    ).validate()
    with pytest.raises(SettingsError, match=r"metrics=0\.0\.0\.0:0 .*--tokens.*--insecure-allow-remote"):
        CollectorService(settings)
    assert not (tmp_path / "spool").exists(), "nothing may start before the exposure check"
    for address in ("[::]:9464", ":9464", "192.0.2.1:9464"):
        with pytest.raises(SettingsError, match="metrics"):
            CollectorSettings(metrics=address).check_exposure()
    CollectorSettings(metrics="0.0.0.0:9464", insecure_allow_remote=True).check_exposure()
    CollectorSettings(metrics="0.0.0.0:9464", tokens="tokens.yaml").check_exposure()


def test_metrics_beyond_loopback_want_a_metrics_token(clickhouse_url: str, tmp_path: Path) -> None:
    tokens = _write_tokens(tmp_path / "tokens.yaml")
    # bound beyond loopback (judged by the bind address), reached through 127.0.0.1
    with running_collector(
        clickhouse_url, tmp_path, wait_ready=False, metrics="0.0.0.0:0", tokens=str(tokens)
    ) as collector:
        for path in ("/metrics", "/"):
            url = f"http://127.0.0.1:{collector.service.metrics_port}{path}"
            anonymous = http_request(url, None)
            assert anonymous.status == 401
            headers = {name.lower(): value for name, value in anonymous.headers.items()}
            assert headers["www-authenticate"].startswith("Bearer")
            assert http_request(url, None, {"Authorization": "Bearer nonsense"}).status == 401
            for other in ("ingest-token", "read-token"):
                assert http_request(url, None, {"Authorization": f"Bearer {other}"}).status == 403
            reply = http_request(url, None, {"Authorization": "Bearer metrics-token"})
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/plain")
            families = {family.name: family for family in text_string_to_metric_families(reply.body.decode())}
            assert "agentwatch_collector_store_up" in families
            assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)
        # the receivers keep their own scopes: a metrics token sends no spans
        assert collector.post(b"", {"Authorization": "Bearer metrics-token"}).status == 403


def test_metrics_on_loopback_stay_open_with_tokens(clickhouse_url: str, tmp_path: Path) -> None:
    tokens = _write_tokens(tmp_path / "tokens.yaml")
    with running_collector(
        clickhouse_url, tmp_path, wait_ready=False, metrics="127.0.0.1:0", tokens=str(tokens)
    ) as collector:
        base = f"http://127.0.0.1:{collector.service.metrics_port}"
        reply = http_request(f"{base}/metrics", None)
        assert reply.status == 200
        assert list(text_string_to_metric_families(reply.body.decode()))
        assert http_request(f"{base}/elsewhere", None).status == 404
        # prometheus_client's own app: content negotiation and ?name[]= work
        open_metrics = http_request(f"{base}/metrics", None, {"Accept": "application/openmetrics-text"})
        assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text")
        assert open_metrics.body.rstrip().endswith(b"# EOF")
        one = http_request(f"{base}/metrics?name[]=agentwatch_collector_store_up", None).body.decode()
        assert {family.name for family in text_string_to_metric_families(one)} == {"agentwatch_collector_store_up"}
    assert collector.service.metrics_port != 0


# --- the deploy stack scrapes with a metrics token ------------------------------------------------


def _authenticates_for_metrics(tokens_text: str, token: str, tmp_path: Path) -> bool:
    file = tmp_path / "tokens.yaml"
    file.write_text(tokens_text, encoding="utf-8")
    try:
        Authenticator.from_file(file).authenticate(f"Bearer {token}", Scope.METRICS)
    except AuthError:
        return False
    return True


def test_compose_prometheus_scrapes_the_collector_with_a_metrics_token(tmp_path: Path) -> None:
    compose: dict[str, Any] = load_compose()
    assert "AGENTWATCH_METRICS_TOKEN" in compose_variables()
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "agentwatch-collector"]
    credentials_file = job["authorization"]["credentials_file"]
    assert job["authorization"].get("type", "Bearer") == "Bearer"
    [mounted] = [c for c in compose["services"]["prometheus"]["configs"] if c["target"] == credentials_file]
    token = interpolate(compose["configs"][mounted["source"]]["content"], {})
    [collector_tokens] = compose["services"]["collector"]["configs"]
    tokens_text = interpolate(compose["configs"][collector_tokens["source"]]["content"], {})
    assert _authenticates_for_metrics(tokens_text, token, tmp_path)
    # and one set in the environment reaches both sides
    environ = {"AGENTWATCH_METRICS_TOKEN": "from-the-environment"}
    token = interpolate(compose["configs"][mounted["source"]]["content"], environ)
    tokens_text = interpolate(compose["configs"][collector_tokens["source"]]["content"], environ)
    assert token == "from-the-environment"
    assert _authenticates_for_metrics(tokens_text, token, tmp_path)


def test_kubernetes_servicemonitor_scrapes_with_a_generated_token_secret() -> None:
    manifests = Manifests.load(secret_files=K8S_SECRET_FILES)
    [endpoint] = manifests.get("ServiceMonitor", "agentwatch-collector")["spec"]["endpoints"]
    credentials = endpoint["authorization"]["credentials"]
    assert endpoint["authorization"].get("type", "Bearer") == "Bearer"
    token = manifests.secret_value(credentials["name"], credentials["key"])
    assert token
    assert token == token.strip(), "a trailing newline would become part of the header"
    tokens = yaml.safe_load((DEPLOY / "collector" / "tokens.example.yaml").read_text(encoding="utf-8"))
    assert any(Scope.METRICS.value in entry["scopes"] for entry in tokens["tokens"])
    ignored = (DEPLOY / "kubernetes" / "secrets" / ".gitignore").read_text(encoding="utf-8").split()
    assert "metrics-token" in ignored
