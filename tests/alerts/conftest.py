"""Real notification receivers on loopback: an HTTP server for Apprise's json:// and an SMTP
sink for mailto://, plus helpers to write outbox rows and read them back."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from alerts import outbox
from alerts.events import Event
from alerts.routes import compose, load_routes, run_link
from engine import runtime
from engine.store.models import Alert, AlertDelivery

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Post:
    """One request the receiver got: its path, Apprise's JSON and the status it answered
    (0: the connection was reset instead)."""

    path: str
    title: str
    message: str
    type: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class HttpReceiver:
    """A threaded HTTP server taking Apprise json:// posts.

    `script` holds the status codes of the next answers (then 200 for good; 0 resets the
    connection without an answer); with `hang` set, requests are held until the test ends
    (a channel that never answers), and `delay` answers late.
    """

    server: ThreadingHTTPServer
    script: list[int] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    hang: bool = False
    delay: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    @property
    def delivered(self) -> list[Post]:
        return [post for post in self.posts if post.status < 300]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Post]:
        """Block until `count` requests arrived (or fail the test)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.posts) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.posts)} of {count} requests after {timeout} s")
                self.arrived.wait(left)
        return list(self.posts)

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        data = json.loads(handler.rfile.read(length) or b"{}")
        status = self.script.pop(0) if self.script else 200
        post = Post(
            handler.path,
            data.get("title", ""),
            data.get("message", ""),
            data.get("type", ""),
            status,
            dict(handler.headers),
            data,
        )
        with self.arrived:
            self.posts.append(post)
            self.arrived.notify_all()
        if self.hang:
            self.release.wait(30)
            return
        if status == 0:  # reset: close at once, unanswered (SO_LINGER 0 sends an RST)
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            handler.close_connection = True
            handler.connection.close()
            return
        if self.delay:
            time.sleep(self.delay)
        handler.send_response(status)
        handler.end_headers()


def start_receiver(port: int = 0) -> HttpReceiver:
    """An HTTP receiver listening on loopback `port` (0: any free port); `stop_receiver` ends it."""
    holder: list[HttpReceiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            holder[0].answer(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    holder.append(HttpReceiver(server))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return holder[0]


def stop_receiver(receiver: HttpReceiver) -> None:
    receiver.release.set()
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    started = start_receiver()
    yield started
    stop_receiver(started)


@pytest.fixture
def dead_url() -> str:
    """A json:// URL on a loopback port nothing listens on (connection refused)."""
    return f"json://127.0.0.1:{free_port()}/dead"


class SmtpSink:
    """An aiosmtpd handler keeping every message it receives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        )
        return "250 OK"

    def url(self, to: str = "oncall@example.com") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=dagwatch@example.com&to={to}"

    def texts(self) -> list[str]:
        return [
            str(message["Subject"]) + "\n" + message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            for message in self.messages
        ]


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    from aiosmtpd.controller import Controller

    sink = SmtpSink(free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


@pytest.fixture
def alerts_config(store):
    """`configure(**overrides)`: the runtime's config (pointing at `store`) with alert options,
    installed as the process's configuration (what the notifier and connections read).

    Routes page alert by alert here (`alerts.group_by` empty), the delivery path these
    tests look at; incidents (the default) are tested in test_incidents.py."""

    def configure(**overrides: Any):
        overrides.setdefault("alerts__group_by", "")
        config = runtime.get_config().with_overrides(**overrides)
        runtime.configure(config, store)
        return config

    return configure


def raise_alert(
    store: Any,
    config: Any,
    *,
    event: Event = Event.TASK_FAILED,
    dag_id: str = "etl",
    run_id: str = "manual__1",
    task_id: str | None = "load",
    attempt: int | None = 1,
    now: datetime = T0,
    **payload: Any,
) -> list[int]:
    """Outbox rows for `event`, as the transition listener writes them."""
    context = {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "state": "failed",
        "attempt": attempt,
        "exception": "ValueError: bad rows",
        "link": run_link(config, dag_id, run_id),
        **payload,
    }
    rows = compose(
        load_routes(config),
        event,
        payload=context,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        attempt=attempt,
    )
    with store.session() as session:
        return outbox.enqueue(session, rows, now)


def alert_rows(store: Any, **where: Any) -> list[Alert]:
    with store.session(readonly=True) as session:
        rows = list(session.scalars(select(Alert).filter_by(**where).order_by(Alert.id)))
        session.expunge_all()
    return rows


def delivery_rows(store: Any, alert_id: int) -> list[AlertDelivery]:
    with store.session(readonly=True) as session:
        statement = (
            select(AlertDelivery)
            .where(AlertDelivery.alert_id == alert_id)
            .order_by(AlertDelivery.id)
        )
        rows = list(session.scalars(statement))
        session.expunge_all()
    return rows
