"""Test support: run ``agentwatch collector`` as a real child process, and query its store from one.

chDB allows one engine path per process, so tests that need a fresh store (or a ``kill -9``)
run the collector as a child, and read its embedded store from another short-lived child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _paths import REPO
from _ports import free_port

ROOT = REPO


@dataclass
class CollectorProcess:
    """One collector child; ``start()`` waits for /readyz unless told not to."""

    workdir: Path
    clickhouse: str = ""
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def traces_url(self) -> str:
        return f"{self.base_url}/v1/traces"

    @property
    def log_path(self) -> Path:
        return self.workdir / "collector.log"

    def start(self, *, wait_ready: bool = True, timeout_s: float = 60.0) -> CollectorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        clickhouse = self.clickhouse or f"chdb://{self.workdir / 'clickhouse'}"
        args = [
            sys.executable,
            "-m",
            "agentwatch.collectors.cli.main",
            "collector",
            "--clickhouse",
            clickhouse,
            "--spool",
            str(self.workdir / "spool"),
            "--otlp-http",
            f"127.0.0.1:{self.http_port}",
            "--otlp-grpc",
            f"127.0.0.1:{self.grpc_port}",
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
            *self.extra_args,
        ]
        env = {**os.environ, **self.env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_listening(timeout_s)
        if wait_ready:
            self.wait_ready(timeout_s)
        return self

    def wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self.get("/healthz")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        raise TimeoutError(f"collector did not listen within {timeout_s}s:\n{self.log()}")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            status, _ = self.get("/readyz")
            if status == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"collector not ready within {timeout_s}s:\n{self.log()}")

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"collector exited with {self.process.returncode}:\n{self.log()}")

    def get(self, path: str, *, port: int | None = None, token: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port or self.http_port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def metrics_text(self) -> str:
        status, body = self.get("/metrics", port=self.metrics_port)
        assert status == 200
        return body.decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM: the collector drains its spool into the store before exiting."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


_QUERY_SCRIPT = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1])
out = []
for sql in json.loads(sys.argv[2]):
    result = client.query(sql)
    out.append([list(map(str, row)) for row in result.result_rows])
print(json.dumps(out))
"""


def query_embedded(path: Path, *queries: str) -> list[list[list[str]]]:
    """Run SQL against a chDB store in a child process (no engine opened in the test process)."""
    done = subprocess.run(
        [sys.executable, "-c", _QUERY_SCRIPT, str(path), json.dumps(list(queries))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"query failed: {done.stderr[-2000:]}")
    result: Any = json.loads(done.stdout.strip().splitlines()[-1])
    return list(result)
