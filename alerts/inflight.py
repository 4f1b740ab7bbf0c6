"""Deliveries recorded before they are sent, so a crash mid-send is never silent.

When the dispatcher claims a row for delivery, it records the attempt as `started` (in the
claim's transaction, before the request leaves) and the row as held by this process
(`claimed_by`, hostname:pid); the outcome then updates that attempt. A dispatcher that
dies between the two leaves a `started` attempt behind: whoever delivers the row next
records that attempt as `interrupted` and marks the row `possible_duplicate` (the channel
may have the message already), and its message says so. The delivery is at least once:
deduplicated by the channel where it takes a dedup key (the same on every attempt), marked
where it cannot be.

A row held by a process of this host that is gone (killed, crashed) is due again at
once (`release_orphans`, when a dispatcher starts and then every few seconds); one held
by another host's dispatcher waits for its lease to end.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from alerts import store as alert_store
from alerts.states import DeliveryStatus
from engine import supervision

#: An attempt recorded before its send, not finished yet.
STARTED = DeliveryStatus.STARTED
#: A started attempt whose dispatcher died before recording its outcome.
INTERRUPTED = DeliveryStatus.INTERRUPTED
INTERRUPTED_ERROR = (
    "interrupted: the dispatcher stopped during this delivery (crash or kill); the channel"
    " may have received it"
)
#: What a possibly repeated message carries.
DUPLICATE_TITLE = "[possible duplicate] "
DUPLICATE_NOTE = (
    "Possible duplicate: an earlier delivery of this alert was interrupted (the dispatcher"
    " stopped mid-send), so you may have received it already. Dedup key: {key}."
)
#: Rows looked at per release pass.
RELEASE_BATCH = 200


def identity() -> str:
    """This process, as recorded in the rows it holds."""
    return f"{socket.gethostname()}:{os.getpid()}"


def begin(
    session: Session, alert_id: int, *, attempts: int, at: datetime, by: str
) -> tuple[int, bool]:
    """Record the next attempt as started, before anything is sent (in the claim's
    transaction); `attempts`: those the row counts so far.

    Attempts an earlier dispatcher started and never finished are recorded as interrupted
    and counted. Returns (the attempts counted before this one, whether the channel may
    already have the message).
    """
    interrupted = alert_store.transition_delivery(
        session,
        alert_id,
        None,
        expected=STARTED,
        to=INTERRUPTED,
        values={"error": INTERRUPTED_ERROR},
    )
    attempts += interrupted
    alert_store.insert_delivery(
        session, alert_id, attempt=attempts + 1, at=at, status=STARTED, latency=0.0
    )
    values: dict[str, Any] = {"claimed_by": by}
    if interrupted:
        values |= {"possible_duplicate": True, "attempts": attempts}
    alert_store.set_alert(session, alert_id, **values)
    return attempts, alert_store.possible_duplicate(session, alert_id)


def finish(
    session: Session,
    alert_id: int,
    attempt: int,
    outcome: DeliveryStatus,
    *,
    at: datetime,
    latency: float,
    error: str | None,
) -> bool:
    """Record the outcome (sent, failed, timeout), when it ended, its latency and error on
    the started attempt `attempt`; False if there is none."""
    values = {"at": at, "latency": latency, "error": error}
    changed = alert_store.transition_delivery(
        session, alert_id, attempt, expected=STARTED, to=outcome, values=values
    )
    return bool(changed)


def _host_of(claimed_by: str) -> tuple[str, int | None]:
    host, _, pid = claimed_by.rpartition(":")
    return host, int(pid) if pid.isdigit() else None


def release_orphans(
    session: Session, now: datetime, *, alive: Callable[[int], bool] = supervision.pid_alive
) -> list[int]:
    """Rows held by a dead dispatcher of this host: due again now. Returns their ids."""
    host, own = socket.gethostname(), os.getpid()
    orphans = []
    for alert_id, claimed_by in alert_store.held_on_host(session, host, now, RELEASE_BATCH):
        claimed_host, pid = _host_of(claimed_by)
        if claimed_host == host and pid is not None and pid != own and not alive(pid):
            orphans.append(alert_id)
    return alert_store.release(session, orphans, now)


def mark_message(title: str, body: str, key: str) -> tuple[str, str]:
    """The title and body of a message that may repeat an interrupted delivery."""
    note = DUPLICATE_NOTE.format(key=key)
    return DUPLICATE_TITLE + title, f"{body}\n\n{note}" if body else note
