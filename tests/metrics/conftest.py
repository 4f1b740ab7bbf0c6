"""Real receivers on loopback for the metrics backends: a UDP socket for StatsD, an
OTLP/HTTP endpoint that decodes what the exporter posts, and a scrape helper."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import metrics


@pytest.fixture(autouse=True)
def _unconfigured_stats() -> Iterator[None]:
    """`metrics.stats` is process state: every test starts and ends with the no-op."""
    metrics.stats.install(None)
    yield
    metrics.stats.install(None)


class UdpReceiver:
    """A StatsD server stand-in: collects the lines of every datagram it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.port = self.sock.getsockname()[1]

    def lines(self, count: int) -> list[str]:
        """The next `count` lines, waiting up to 2 s for each datagram."""
        received: list[str] = []
        while len(received) < count:
            data, _ = self.sock.recvfrom(65535)
            received.extend(data.decode().split("\n"))
        return received

    def nothing_more(self) -> bool:
        self.sock.settimeout(0.1)
        try:
            self.sock.recvfrom(65535)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(2.0)
        return False


@pytest.fixture
def udp() -> Iterator[UdpReceiver]:
    receiver = UdpReceiver()
    yield receiver
    receiver.sock.close()


@dataclass
class Point:
    """One decoded OTLP data point, flattened."""

    name: str
    kind: str  # sum | gauge | histogram
    attributes: dict[str, str]
    value: float  # the sum's or gauge's value; a histogram's sum
    count: int = 0  # histograms only
    unit: str = ""
    resource: dict[str, str] = field(default_factory=dict)


def _attributes(key_values: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in key_values}


def decode(body: bytes) -> list[Point]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    request = ExportMetricsServiceRequest.FromString(body)
    points = []
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                for dp in data.data_points:
                    if kind == "histogram":
                        value, count = dp.sum, dp.count
                    else:
                        value, count = dp.as_double or dp.as_int, 0
                    attributes = _attributes(dp.attributes)
                    points.append(
                        Point(metric.name, kind, attributes, value, count, metric.unit, resource)
                    )
    return points


class OtlpReceiver:
    """An OTLP/HTTP collector stand-in on 127.0.0.1: POST /v1/metrics, protobuf decoded."""

    def __init__(self) -> None:
        self.requests: list[list[Point]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                status = 404
                if self.path == "/v1/metrics":
                    with receiver._lock:
                        receiver.requests.append(decode(body))
                    status = 200
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def points(self) -> list[Point]:
        with self._lock:
            return [point for request in self.requests for point in request]

    def wait_for(self, name: str, timeout: float = 5.0) -> list[Point]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [p for p in self.points() if p.name == name]
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{name} never arrived; got {sorted({p.name for p in self.points()})}")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


def http_get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from a real GET /metrics."""
    status, content_type, body = http_get(f"{url}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))
