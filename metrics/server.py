"""The scheduler's HTTP endpoint: `GET /metrics` for Prometheus, `GET /health` for probes.

Standard library only (http.server in a daemon thread): two routes do not justify a web
framework, and prometheus_client's own server has no room for a second route.
`/health` runs each check given to `add_health_check` and answers 200 when all pass,
503 otherwise, with a JSON body naming every check, so a probe and a person both see why.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

#: A health check returns whether it passes and details worth showing (JSON-serialisable).
HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: MetricsServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/health":
            healthy, body = self.server.app.health()
            self._reply(200 if healthy else 503, "application/json", json.dumps(body).encode())
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics or /health\n")

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            output = encoder(self.server.app.registry)
        except Exception:
            log.exception("metrics scrape failed")
            self._reply(500, "text/plain; charset=utf-8", b"metrics collection failed\n")
            return
        self._reply(200, content_type, output)

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


class MetricsServer:
    """Serves a registry and health checks on host:port until `stop()`."""

    def __init__(
        self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9112
    ) -> None:
        self.registry = registry
        self.host = host
        self.requested_port = port
        self._checks: dict[str, HealthCheck] = {}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add_health_check(self, name: str, check: HealthCheck) -> None:
        """Run `check()` on every GET /health; a check that raises counts as failing."""
        self._checks[name] = check

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(all checks pass, the JSON body)."""
        results: dict[str, Any] = {}
        for name, check in list(self._checks.items()):
            try:
                ok, detail = check()
                detail = json.loads(json.dumps(dict(detail), default=str))
            except Exception as exc:
                ok, detail = False, {"error": f"{type(exc).__name__}: {exc}"}
            results[name] = {"ok": bool(ok), "detail": detail}
        healthy = all(result["ok"] for result in results.values())
        return healthy, {"status": "healthy" if healthy else "unhealthy", "checks": results}

    def start(self) -> MetricsServer:
        server_class: type[_Server] = _Server
        if ":" in self.host:  # an IPv6 literal
            server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        self._httpd = server_class((self.host, self.requested_port), _Handler)
        self._httpd.app = self
        self._pid = os.getpid()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(0.1,),  # how often it checks for stop(): stopping takes at most this long
            name="dagwatch-metrics-http",
            daemon=True,
        )
        self._thread.start()
        log.info("serving /metrics and /health on %s", self.url)
        return self

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return self._httpd.server_address[1] if self._httpd else self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving; in a forked child (which has no serving thread) only let go."""
        if self._httpd is None:
            return
        if self._pid == os.getpid():
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None
