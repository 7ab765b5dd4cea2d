"""Test support: real Prometheus and Alertmanager child processes, and a webhook receiver that records pages.

``Prometheus`` and ``Alertmanager`` run Debian's binaries (``/usr/bin/prometheus``,
``/usr/bin/prometheus-alertmanager``) on free loopback ports with their state and logs in a work
directory, wait for ``/-/ready``, and stop with SIGTERM then SIGKILL. Every failure message carries
the tail of the process log, because "did not become ready" alone never says why.
``WebhookReceiver`` is the paging endpoint: an HTTP server on loopback that records every JSON POST
with its arrival time, so a test can measure how long an anomaly took to reach a person.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from _paths import REPO
from _ports import free_port

ROOT = REPO
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yaml"
PROMETHEUS_BIN = Path("/usr/bin/prometheus")
ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")
AMTOOL_BIN = Path("/usr/bin/amtool")
PROMTOOL_BIN = Path("/usr/bin/promtool")

COLLECTOR_JOB = "agentwatch-collector"
LOG_TAIL_CHARS = 4000
# A freshly picked port can be taken by someone else before the child binds it; a few retries cover that race.
_BIND_ATTEMPTS = 3


def http_json(url: str, *, body: object | None = None, timeout_s: float = 10.0) -> Any:
    """GET (or POST ``body`` as JSON) and decode the JSON answer; HTTP errors raise with the server's text."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{request.method} {url} -> {exc.code}: {exc.read()[:2000]!r}") from exc
    return json.loads(raw) if raw.strip() else None


class _ChildProcess:
    """A long-running server binary with a log file, readiness probe and an orderly stop."""

    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write configuration files before each launch attempt (the port may have changed)."""

    def start(self, timeout_s: float = 60.0) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(_BIND_ATTEMPTS):
            self._prepare()
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    self._command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            try:
                self._wait_ready(timeout_s)
                return self
            except _PortTaken as taken:
                self.stop()
                if attempt == _BIND_ATTEMPTS - 1:
                    raise RuntimeError(
                        f"{self.name}: no free port after {_BIND_ATTEMPTS} tries:\n{self.log_tail()}"
                    ) from taken
                self.port = free_port()
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = self.log_tail()
                if "address already in use" in tail[-1500:]:
                    raise _PortTaken
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    # another server (say, a Prometheus of a parallel test) may hold the port we picked and
                    # answer for our child, which then dies on "address already in use": make sure it is ours
                    if response.status == 200 and _listens_on(self.process.pid, self.port):
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready within {timeout_s}s at {self.url}:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def get_json(self, path: str, params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            return http_json(f"{self.url}{path}{query}")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.name} log:\n{self.log_tail()}") from exc


def _listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the listening TCP socket of ``port`` (always true where /proc is missing)."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return True
    inodes = set()
    for table in tables:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            # fields: sl, local_address (hex ip:port), rem_address, st (0A = LISTEN), ..., inode (10th)
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    try:
        links = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:
        return False
    return any(f"socket:[{inode}]" in links for inode in inodes)


class _PortTaken(Exception):
    """The child could not bind its port."""


class Prometheus(_ChildProcess):
    """A Prometheus server scraping ``scrape_targets`` (job ``agentwatch-collector``) and evaluating ``rule_files``."""

    name = "prometheus"

    def __init__(
        self,
        workdir: Path,
        *,
        scrape_targets: Sequence[str],
        rule_files: Sequence[Path] = (),
        alertmanager_url: str | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> None:
        super().__init__(workdir)
        self.scrape_targets = list(scrape_targets)
        self.rule_files = [Path(path).resolve() for path in rule_files]
        self.alertmanager_url = alertmanager_url
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.evaluation_interval},
            "scrape_configs": [
                {
                    "job_name": COLLECTOR_JOB,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [{"targets": self.scrape_targets}],
                }
            ],
            "rule_files": [str(path) for path in self.rule_files],
        }
        if self.alertmanager_url:
            parsed = urllib.parse.urlsplit(self.alertmanager_url)
            manager: dict[str, Any] = {
                "scheme": parsed.scheme or "http",
                "static_configs": [{"targets": [parsed.netloc]}],
            }
            if parsed.path.strip("/"):
                manager["path_prefix"] = parsed.path
            config["alerting"] = {"alertmanagers": [manager]}
        return config

    def _prepare(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def _command(self) -> list[str]:
        return [
            str(PROMETHEUS_BIN),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Resend firing alerts to Alertmanager often, so a restarted or late Alertmanager catches up fast.
            "--rules.alert.resend-delay=1s",
        ]

    def reload(self, timeout_s: float = 30.0) -> None:
        """Rewrite the configuration from the attributes (targets, rules, Alertmanager) and apply it (SIGHUP)."""
        assert self.process is not None, "prometheus is not running"
        before = self.get_json("/api/v1/status/runtimeinfo")["data"]["lastConfigTime"]
        self._prepare()
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self.get_json("/api/v1/status/runtimeinfo")["data"]
            if info["lastConfigTime"] != before:
                if not info["reloadConfigSuccess"]:
                    raise RuntimeError(f"prometheus rejected the new configuration:\n{self.log_tail()}")
                return
            time.sleep(0.1)
        raise TimeoutError(f"prometheus did not reload within {timeout_s}s:\n{self.log_tail()}")

    def query(self, promql: str, time: float | None = None) -> dict[str, Any]:
        """The ``data`` of an instant query; raises unless Prometheus answered ``success``."""
        params = {"query": promql}
        if time is not None:
            params["time"] = f"{time:.3f}"
        answer = self.get_json("/api/v1/query", params)
        if answer.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {answer}")
        data: dict[str, Any] = answer["data"]
        return data

    def targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.get_json("/api/v1/targets")["data"]["activeTargets"]
        return targets

    def wait_scraped(self, timeout_s: float = 60.0) -> None:
        """Wait until every configured target is up and has been scraped at least once."""
        deadline = time.monotonic() + timeout_s
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            targets = self.targets()
            up = [t for t in targets if t.get("health") == "up" and not str(t.get("lastScrape", "")).startswith("0001")]
            if len(targets) >= len(self.scrape_targets) and len(up) == len(targets):
                return
            time.sleep(0.2)
        raise TimeoutError(f"targets not scraped within {timeout_s}s: {targets}\n{self.log_tail()}")

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) as /api/v1/alerts reports them."""
        alerts: list[dict[str, Any]] = self.get_json("/api/v1/alerts")["data"]["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.get_json("/api/v1/rules")["data"]["groups"]
        return groups


class Alertmanager(_ChildProcess):
    """An Alertmanager with clustering off, its state in ``workdir``."""

    name = "alertmanager"

    def __init__(self, workdir: Path, config_path: Path) -> None:
        super().__init__(workdir)
        self.config_path = Path(config_path).resolve()

    def _command(self) -> list[str]:
        return [
            str(ALERTMANAGER_BIN),
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Empty disables the gossip cluster, which would otherwise bind 0.0.0.0:9094 and collide across tests.
            "--cluster.listen-address=",
        ]

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Send alerts as Prometheus does (``labels``, ``annotations``, optional ``startsAt``/``endsAt``)."""
        try:
            http_json(f"{self.url}/api/v2/alerts", body=list(alerts))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nalertmanager log:\n{self.log_tail()}") from exc

    def alerts(
        self, *, active: bool = True, inhibited: bool = True, silenced: bool = True, unprocessed: bool = True
    ) -> list[dict[str, Any]]:
        """Alerts held by Alertmanager; each has ``status.state`` and ``status.inhibitedBy``."""
        params = {
            "active": str(active).lower(),
            "inhibited": str(inhibited).lower(),
            "silenced": str(silenced).lower(),
            "unprocessed": str(unprocessed).lower(),
        }
        alerts: list[dict[str, Any]] = self.get_json("/api/v2/alerts", params)
        return alerts

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.get_json("/api/v2/status")
        return status


class WebhookReceiver:
    """A loopback HTTP server recording every JSON POST; the stand-in for a pager or chat webhook.

    Each recorded notification is the decoded JSON body (Alertmanager's webhook payload: ``receiver``,
    ``status``, ``groupLabels``, ``commonLabels``, ``alerts`` ...) plus two keys the payload never has:
    ``received_at`` (Unix time of arrival) and ``path`` (the request path, so one receiver can stand in
    for several webhooks, e.g. ``/pager`` and ``/chat``).
    """

    def __init__(self) -> None:
        self._notifications: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else {}
                except json.JSONDecodeError:
                    self.send_response(400)
                    self.end_headers()
                    return
                record = dict(body) if isinstance(body, dict) else {"body": body}
                record["received_at"] = time.time()
                record["path"] = self.path
                receiver._record(record)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test prints what matters."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path: str) -> str:
        return f"{self.url}/{path.lstrip('/')}"

    def _record(self, record: dict[str, Any]) -> None:
        with self._changed:
            self._notifications.append(record)
            self._changed.notify_all()

    def notifications(self) -> list[dict[str, Any]]:
        with self._changed:
            return list(self._notifications)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        """The first notification (already received or arriving within ``timeout_s``) that ``predicate`` accepts."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for record in self._notifications:
                    if predicate(record):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    summary = [
                        (n.get("receiver"), n.get("status"), n.get("groupLabels"), n.get("path"))
                        for n in self._notifications
                    ]
                    raise TimeoutError(f"no matching notification within {timeout_s}s; received: {summary}")
                self._changed.wait(min(remaining, 1.0))

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        with contextlib.suppress(OSError):
            self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


# --- the deployed Alertmanager configuration, pointed at a test receiver --------------------------

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_TIMING_KEYS = ("group_wait", "group_interval", "repeat_interval")
_NOTIFIER_KEY = re.compile(r"^[a-z0-9]+_configs$")


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus/Alertmanager duration such as ``30s``, ``1h30m`` or ``500ms``."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def load_alertmanager_config(path: Path = ALERTMANAGER_CONFIG) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def alertmanager_config_for(
    receiver: WebhookReceiver,
    *,
    config: Mapping[str, Any] | None = None,
    time_scale: float = 1.0,
    min_seconds: float = 0.2,
) -> dict[str, Any]:
    """The deployed configuration with every receiver replaced by a webhook to ``receiver`` at ``/<name>``.

    Routes, matchers, grouping and inhibitions stay as deployed; only where notifications go and
    (with ``time_scale``) how long Alertmanager waits before sending change, so a test can run the
    same routing tree in seconds. Scaled timings never go below ``min_seconds``.
    """
    scaled = copy.deepcopy(dict(config) if config is not None else load_alertmanager_config())
    for entry in scaled["receivers"]:
        for key in [key for key in entry if _NOTIFIER_KEY.match(key)]:
            del entry[key]
        entry["webhook_configs"] = [{"url": receiver.url_for(entry["name"]), "send_resolved": True}]

    def scale(route: dict[str, Any]) -> None:
        for key in _TIMING_KEYS:
            if key in route:
                route[key] = format_duration(max(min_seconds, parse_duration(str(route[key])) * time_scale))
        for child in route.get("routes", []):
            scale(child)

    scale(scaled["route"])
    return scaled


def write_yaml(path: Path, document: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False))
    return path


__all__ = [
    "ALERTMANAGER_BIN",
    "ALERTMANAGER_CONFIG",
    "AMTOOL_BIN",
    "COLLECTOR_JOB",
    "PROMETHEUS_BIN",
    "PROMTOOL_BIN",
    "Alertmanager",
    "Prometheus",
    "WebhookReceiver",
    "alertmanager_config_for",
    "format_duration",
    "free_port",
    "http_json",
    "load_alertmanager_config",
    "parse_duration",
    "write_yaml",
]
