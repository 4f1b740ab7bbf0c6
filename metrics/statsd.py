"""StatsD over UDP, written here rather than taken from the `statsd` package.

The `statsd` package is unmaintained, knows no tags (dogstatsd or influxdb), and its
client can raise from `__init__` on a name that does not resolve; the line format is a
few lines and one UDP socket, and owning them lets a send never raise into a caller.

Three naming modes:
- "none" (plain): Airflow's legacy names with the label values inside the name,
  `dagwatch.ti.finish.my_dag.my_task.success:1|c`, so Airflow dashboards carry over;
- "dogstatsd": the canonical name and tags, `dagwatch.ti.finish:1|c|#dag_id:my_dag,...`;
- "influxdb": the canonical name and tags, `dagwatch.ti.finish,dag_id=my_dag,...:1|c`.
Timers are sent in milliseconds (`|ms`), as StatsD expects.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping
from typing import Literal

from metrics.catalog import Metric
from metrics.guard import MAX_STATSD_NAME_LENGTH, legacy_name

log = logging.getLogger(__name__)

TagsMode = Literal["none", "dogstatsd", "influxdb"]
TAGS_MODES: tuple[TagsMode, ...] = ("none", "dogstatsd", "influxdb")
#: Seconds before retrying a host name that did not resolve.
RESOLVE_RETRY = 30.0


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(round(float(value), 6))


class StatsdBackend:
    """Sends one datagram per value to `host:port`; losses and errors are logged, never raised."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8125,
        prefix: str = "dagwatch",
        tags_mode: TagsMode = "none",
        *,
        max_name_length: int = MAX_STATSD_NAME_LENGTH,
    ) -> None:
        if tags_mode not in TAGS_MODES:
            raise ValueError(f"statsd tags mode {tags_mode!r}: allowed values: {TAGS_MODES}")
        self.host, self.port, self.tags_mode = host, port, tags_mode
        self.prefix = f"{prefix.strip('.')}." if prefix.strip(".") else ""
        self.max_name_length = max_name_length
        self._address: tuple[int, tuple[str, int]] | None = None
        self._resolve_after = 0.0
        self._socket: socket.socket | None = None
        self._failed = False

    def count(self, metric: Metric, value: float, labels: Mapping[str, str]) -> None:
        self._send(self._line(metric, labels, f"{_number(value)}|c"))

    def gauge(
        self, metric: Metric, value: float, labels: Mapping[str, str], *, delta: bool
    ) -> None:
        if delta:
            self._send(self._line(metric, labels, f"{'+' if value >= 0 else ''}{_number(value)}|g"))
        elif value < 0:
            # A leading '-' means "decrement" to StatsD: set 0 first, then go down.
            zero = self._line(metric, labels, "0|g")
            self._send(f"{zero}\n{self._line(metric, labels, f'{_number(value)}|g')}")
        else:
            self._send(self._line(metric, labels, f"{_number(value)}|g"))

    def timing(self, metric: Metric, seconds: float, labels: Mapping[str, str]) -> None:
        self._send(self._line(metric, labels, f"{_number(seconds * 1000)}|ms"))

    def forget(self, metric: Metric, labels: Mapping[str, str]) -> None:
        """StatsD cannot delete a series: a forgotten one is simply no longer sent."""

    def flush(self) -> None:
        """Nothing is buffered: each value leaves in its own datagram."""

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _line(self, metric: Metric, labels: Mapping[str, str], value_and_type: str) -> str:
        if self.tags_mode == "none":
            limit = self.max_name_length - len(self.prefix)
            name = legacy_name(metric.statsd_template, labels, limit)
            return f"{self.prefix}{name}:{value_and_type}"
        name = f"{self.prefix}{metric.name}"
        if not labels:
            return f"{name}:{value_and_type}"
        if self.tags_mode == "dogstatsd":
            tags = ",".join(f"{key}:{value}" for key, value in labels.items())
            return f"{name}:{value_and_type}|#{tags}"
        tags = ",".join(f"{key}={value}" for key, value in labels.items())
        return f"{name},{tags}:{value_and_type}"

    def _send(self, line: str) -> None:
        try:
            address = self._resolve()
            if address is None:
                return
            family, sockaddr = address
            if self._socket is None or self._socket.family != family:
                self.close()
                self._socket = socket.socket(family, socket.SOCK_DGRAM)
                self._socket.setblocking(False)  # a full buffer drops a value, never blocks
            self._socket.sendto(line.encode(), sockaddr)
            self._failed = False
        except OSError as exc:
            if not self._failed:  # once per run of failures, not once per value
                log.warning("statsd send to %s:%s failed: %s", self.host, self.port, exc)
            self._failed = True

    def _resolve(self) -> tuple[int, tuple[str, int]] | None:
        """Look the host up once; after a failure, again only every RESOLVE_RETRY seconds."""
        if self._address is not None:
            return self._address
        now = time.monotonic()
        if now < self._resolve_after:
            return None
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
        except OSError as exc:
            self._resolve_after = now + RESOLVE_RETRY
            log.warning("statsd host %s does not resolve: %s", self.host, exc)
            return None
        self._address = (family, (str(sockaddr[0]), int(sockaddr[1])))
        return self._address
