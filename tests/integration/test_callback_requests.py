"""Callbacks at least once: a request written with its cause, run after the commit, marked
done once it ran, and run by the next scheduler when the one that wrote it died first."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

from sqlalchemy import select, update

from engine.execution.attempt import run_callback_request
from engine.store.models import CallbackRecord, CallbackRequest, Job
from tests.integration import test_scheduler_tick as tick
from tests.integration.test_scheduler_tick import T0, trigger

sched_config = tick.sched_config
add_dag = tick.add_dag
make_scheduler = tick.make_scheduler

TIMED_OUT = """
def on_failure(context):
    print("the run failed:", context["reason"])

with DAG("slow_run", schedule=None, dagrun_timeout=timedelta(minutes=10),
         on_failure_callback=on_failure):
    EmptyOperator(task_id="first")
"""


def requests(store) -> list[tuple]:
    with store.session() as session:
        rows = session.scalars(select(CallbackRequest).order_by(CallbackRequest.id)).all()
        return [(r.kind, r.state, r.queued_by, r.attempts) for r in rows]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_request_is_written_with_its_cause_and_done_once_it_ran(
    store, add_dag, make_scheduler, sched_config
):
    add_dag("slow_run", TIMED_OUT)
    scheduler, stub = make_scheduler()
    trigger(store, "slow_run")
    scheduler.tick(T0)
    scheduler.tick(T0 + timedelta(minutes=11))  # the run times out: its failure callback

    (request,) = stub.callbacks
    assert request.kind == "on_failure_callback" and request.request_id is not None
    assert requests(store) == [("on_failure_callback", "pending", scheduler.job_id, 1)]

    run_callback_request(store, sched_config, request, None)  # what the executor's process does

    assert requests(store)[0][1] == "done"
    with store.session() as session:
        (record,) = session.scalars(select(CallbackRecord)).all()
    assert (record.kind, record.status) == ("on_failure_callback", "success")


def test_a_scheduler_that_died_before_running_it_leaves_it_to_the_next(
    store, add_dag, make_scheduler
):
    add_dag("slow_run", TIMED_OUT)
    first, first_stub = make_scheduler()
    trigger(store, "slow_run")
    first.tick(T0)
    first.tick(T0 + timedelta(minutes=11))
    assert len(first_stub.callbacks) == 1  # handed to an executor that dies with it

    # A live scheduler's requests are its own: another one leaves them alone.
    _, second_stub = make_scheduler()
    assert second_stub.callbacks == []

    # The first one is killed (its process is gone, its job row still says running).
    with store.session() as session:
        session.execute(update(Job).where(Job.id == first.job_id).values(pid=dead_pid()))
    third, third_stub = make_scheduler()

    (adopted,) = third_stub.callbacks
    assert adopted == first_stub.callbacks[0]  # the same callbacks, for the same run
    assert adopted.request_id == first_stub.callbacks[0].request_id
    assert requests(store) == [("on_failure_callback", "pending", third.job_id, 2)]
    _, fourth_stub = make_scheduler()
    assert fourth_stub.callbacks == []  # now the third one's, which is alive
