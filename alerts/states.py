"""Statuses of outbox rows and of their delivery attempts, and the transitions allowed.

The alert outbox's state machines, as `engine.states` states those of task instances and
DAG runs: `alerts.store` refuses any status change not listed here.

An outbox row (`alert`) has no "sending" status: the dispatcher claims a pending row with a
lease (its `next_attempt_at` moves past the delivery's worst case, `claimed_by` names the
dispatcher), so a claimed row is still pending, and its delivery attempt (`alert_delivery`)
says what is going on: started, then sent, failed, timeout or interrupted.
"""

from __future__ import annotations

from enum import StrEnum


class AlertStatus(StrEnum):
    """Status of one outbox row."""

    PENDING = "pending"  #: waiting for its next attempt (or claimed: its lease in the future)
    SENT = "sent"  #: delivered
    FAILED = "failed"  #: given up on after alerts.max_age, or undeliverable (its route is gone)
    SUPPRESSED = "suppressed"  #: not delivered on its own: rate limited, grouped or folded


class DeliveryStatus(StrEnum):
    """Status of one delivery attempt of an outbox row."""

    STARTED = "started"  #: recorded before the send, its outcome not known yet
    SENT = "sent"  #: the channel took it
    FAILED = "failed"  #: the channel refused it, or it could not be sent
    TIMEOUT = "timeout"  #: no answer within alerts.delivery_timeout: the outcome is unknown
    INTERRUPTED = "interrupted"  #: its dispatcher died mid-send: the channel may have it


#: Statuses an outbox row is written with: pending, or suppressed when born folded.
ALERT_INITIAL: frozenset[AlertStatus] = frozenset({AlertStatus.PENDING, AlertStatus.SUPPRESSED})
#: Statuses a delivery attempt is written with: started before its send, or its outcome
#: at once when it never started (the row could not be sent at all).
DELIVERY_INITIAL: frozenset[DeliveryStatus] = frozenset(
    {DeliveryStatus.STARTED, DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.TIMEOUT}
)
#: Outbox statuses after which the dispatcher does nothing more (an operator may resend).
ALERT_FINISHED: frozenset[AlertStatus] = frozenset(
    {AlertStatus.SENT, AlertStatus.FAILED, AlertStatus.SUPPRESSED}
)

_A = AlertStatus
#: to_status -> statuses it may be reached from.
ALERT_TRANSITIONS: dict[AlertStatus, frozenset[AlertStatus]] = {
    # pending -> pending: claimed (lease), retried after a failed attempt, deferred to its
    # group window, released from a dead dispatcher; from any other: resent by an operator.
    _A.PENDING: frozenset(AlertStatus),
    # delivered, or a timed-out attempt answered late with success
    _A.SENT: frozenset({_A.PENDING}),
    _A.FAILED: frozenset({_A.PENDING}),
    # rate limited, folded into another row of its group, or attached to an incident
    _A.SUPPRESSED: frozenset({_A.PENDING}),
}

_D = DeliveryStatus
DELIVERY_TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    _D.STARTED: frozenset(),
    _D.SENT: frozenset({_D.STARTED}),
    _D.FAILED: frozenset({_D.STARTED}),
    _D.TIMEOUT: frozenset({_D.STARTED}),
    # the next dispatcher to claim the row finds the attempt still started
    _D.INTERRUPTED: frozenset({_D.STARTED}),
}


def alert_transition_allowed(from_status: AlertStatus, to_status: AlertStatus) -> bool:
    """Whether an outbox row may move from `from_status` to `to_status`."""
    return from_status in ALERT_TRANSITIONS[to_status]


def delivery_transition_allowed(from_status: DeliveryStatus, to_status: DeliveryStatus) -> bool:
    """Whether a delivery attempt may move from `from_status` to `to_status`."""
    return from_status in DELIVERY_TRANSITIONS[to_status]
