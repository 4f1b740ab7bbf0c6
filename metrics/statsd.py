"""StatsD over UDP through the `statsd` package's client (the one Airflow uses).

Three naming modes:
- "none" (plain): Airflow's legacy names with the label values inside the name,
  `dagwatch.ti.finish.my_dag.my_task.success:1|c`, so Airflow dashboards carry over;
- "dogstatsd": the canonical name and tags, `dagwatch.ti.finish:1|c|#dag_id:my_dag,...`;
- "influxdb": the canonical name and tags, `dagwatch.ti.finish,dag_id=my_dag,...:1|c`.
Timers are sent in milliseconds (`|ms`), as StatsD expects.

The package's `StatsClient` adds the prefix, formats counters and gauges (a negative
absolute gauge is sent as `0|g` then the value, in one pipeline) and owns the socket. In the
plain and influxdb modes the tags are part of the name, so its public methods serve as they
are. What dagwatch adds on top, in `_Client`:
- the DogStatsD `|#key:value` suffix, which comes after the type and which the package's
  methods cannot express (it has no tags): those lines go through its `_send_stat`, the
  step its own methods and pipelines end in;
- timers as a plain number of milliseconds (`1250|ms`) where `timing()` pads to six
  decimals (`1250.000000|ms`);
- its send: the socket is non-blocking (a full buffer drops a value, never blocks the
  scheduler) and a failure is logged once per run of failures, where the package's send
  drops errors silently;
- the host is looked up lazily and again every RESOLVE_RETRY seconds after a failure:
  the package resolves it in its constructor and raises when it does not resolve.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Literal

import statsd

from metrics.catalog import Metric
from metrics.guard import MAX_STATSD_NAME_LENGTH, legacy_name

log = logging.getLogger(__name__)

TagsMode = Literal["none", "dogstatsd", "influxdb"]
TAGS_MODES: tuple[TagsMode, ...] = ("none", "dogstatsd", "influxdb")
#: Seconds before retrying a host name that did not resolve.
RESOLVE_RETRY = 30.0


def _number(value: float) -> int | float:
    """A value as StatsD lines show it: an integer when whole (`12`, not `12.0`)."""
    value = float(value)
    return int(value) if value.is_integer() else round(value, 6)


class _Client(statsd.StatsClient):  # type: ignore[misc]  # the package has no type hints
    """The package's UDP client with dagwatch's send, timer format and DogStatsD tags."""

    def __init__(
        self,
        address: tuple[int, tuple[str, int]],
        prefix: str | None,
        sent: Callable[[OSError | None], None],
    ) -> None:
        family, (host, port) = address
        super().__init__(host, port, prefix, ipv6=family == socket.AF_INET6)
        self._sock.setblocking(False)  # a full buffer drops a value, never blocks
        self._sent = sent

    def _send(self, data: str) -> None:
        try:
            self._sock.sendto(data.encode(), self._addr)
        except OSError as exc:
            self._sent(exc)
        else:
            self._sent(None)

    def timing(self, stat: str, delta: float, rate: float = 1) -> None:
        self._send_stat(stat, f"{_number(delta)}|ms", rate)

    def tagged(self, stat: str, value_and_type: str, tags: str) -> None:
        """One DogStatsD line: `stat:value|type|#tags`."""
        self._send_stat(stat, f"{value_and_type}|#{tags}", 1)

    def tagged_pair(self, stat: str, first: str, second: str, tags: str) -> None:
        """Two DogStatsD lines of one stat in one datagram (a negative absolute gauge)."""
        with self.pipeline() as pipe:
            pipe._send_stat(stat, f"{first}|#{tags}", 1)
            pipe._send_stat(stat, f"{second}|#{tags}", 1)


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
        self._client: _Client | None = None
        self._failed = False

    def count(self, metric: Metric, value: float, labels: Mapping[str, str]) -> None:
        number = _number(value)
        self._emit(metric, labels, f"{number}|c", lambda client, name: client.incr(name, number))

    def gauge(
        self, metric: Metric, value: float, labels: Mapping[str, str], *, delta: bool
    ) -> None:
        client, name, tags = self._target(metric, labels)
        if client is None:
            return
        number = _number(value)
        if not tags:
            client.gauge(name, number, delta=delta)
        elif delta:
            client.tagged(name, f"{'+' if number >= 0 else ''}{number}|g", tags)
        elif number < 0:
            # A leading '-' means "decrement" to StatsD: set 0 first, then go down.
            client.tagged_pair(name, "0|g", f"{number}|g", tags)
        else:
            client.tagged(name, f"{number}|g", tags)

    def timing(self, metric: Metric, seconds: float, labels: Mapping[str, str]) -> None:
        ms = seconds * 1000
        self._emit(
            metric, labels, f"{_number(ms)}|ms", lambda client, name: client.timing(name, ms)
        )

    def forget(self, metric: Metric, labels: Mapping[str, str]) -> None:
        """StatsD cannot delete a series: a forgotten one is simply no longer sent."""

    def flush(self) -> None:
        """Nothing is buffered: each value leaves in its own datagram."""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _emit(
        self,
        metric: Metric,
        labels: Mapping[str, str],
        value_and_type: str,
        plain: Callable[[_Client, str], None],
    ) -> None:
        """Send one value: a DogStatsD line with its tags, else `plain(client, name)`."""
        client, name, tags = self._target(metric, labels)
        if client is None:
            return
        if tags:
            client.tagged(name, value_and_type, tags)
        else:
            plain(client, name)

    def _target(self, metric: Metric, labels: Mapping[str, str]) -> tuple[_Client | None, str, str]:
        """(the client, the name without the prefix, DogStatsD tags or "")."""
        if self.tags_mode == "none":
            limit = self.max_name_length - len(self.prefix)
            name = legacy_name(metric.statsd_template, labels, limit)
        elif self.tags_mode == "influxdb" and labels:
            tags = ",".join(f"{key}={value}" for key, value in labels.items())
            name = f"{metric.name},{tags}"
        else:
            name = metric.name
        tags = ""
        if self.tags_mode == "dogstatsd" and labels:
            tags = ",".join(f"{key}:{value}" for key, value in labels.items())
        return self._connect(), name, tags

    def _connect(self) -> _Client | None:
        if self._client is None:
            address = self._resolve()
            if address is None:
                return None
            try:
                self._client = _Client(address, self.prefix.rstrip(".") or None, self._sent)
            except OSError as exc:
                self._sent(exc)
                return None
        return self._client

    def _sent(self, error: OSError | None) -> None:
        if error is None:
            self._failed = False
            return
        if not self._failed:  # once per run of failures, not once per value
            log.warning("statsd send to %s:%s failed: %s", self.host, self.port, error)
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
