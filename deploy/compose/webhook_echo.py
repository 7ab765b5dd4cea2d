"""A stand-in for a pager and a chat bridge in the local stack: prints every Alertmanager notification.

Alertmanager's receivers ("pager" and "chat" in deploy/alertmanager/alertmanager.yaml) post to
``http://pager-webhook:8080/pager`` and ``http://chat-webhook:8080/chat``; docker compose points both
names at this one process, so ``docker compose logs -f webhook-echo`` shows what would have paged
someone. Standard library only: it runs in the plain ``python`` image.

Each notification becomes one JSON line on stdout: the path it arrived on (which receiver), its
status, and per alert the name, severity, agent and summary.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

MAX_BODY_BYTES = 1 << 20  # Alertmanager truncates at max_alerts; a bigger body is not a notification


def summarize(path: str, notification: dict[str, Any]) -> dict[str, Any]:
    """The lines an on-call person reads first, from Alertmanager's webhook payload."""
    alerts = notification.get("alerts") or []
    return {
        "receiver": path.strip("/") or notification.get("receiver", ""),
        "status": notification.get("status", ""),
        "alerts": [
            {
                "alertname": alert.get("labels", {}).get("alertname", ""),
                "severity": alert.get("labels", {}).get("severity", ""),
                "agent": alert.get("labels", {}).get("agent", ""),
                "status": alert.get("status", ""),
                "summary": alert.get("annotations", {}).get("summary", ""),
            }
            for alert in alerts
            if isinstance(alert, dict)
        ],
    }


class EchoHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the container's health check
        self._reply(200, b"ok\n")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(413, b"too large\n")
            return
        try:
            notification = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._reply(400, b"expected JSON\n")
            return
        if not isinstance(notification, dict):
            self._reply(400, b"expected a JSON object\n")
            return
        print(json.dumps(summarize(self.path, notification), sort_keys=True), flush=True)
        self._reply(200, b"ok\n")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # one JSON line per notification is the whole output


def _exit_on_signal(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), EchoHandler)
    print(f"webhook-echo listening on {args.host}:{server.server_port}", file=sys.stderr, flush=True)
    # as PID 1 in a container, SIGTERM has no default action: without a handler `docker stop` waits
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
