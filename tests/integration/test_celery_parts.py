"""The celery executor's parts on SQLite and PostgreSQL, without a broker: message ids
committed with the queued state, stale messages refused by the runner, re-sends by
compare-and-set, the executor's view of attempts in flight, workers' heartbeats in
/metrics, /health and the console's queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from console.queries.workers import queue_capacity, worker_slots
from engine.clock import FakeClock
from engine.execution import runner
from engine.execution.attempt import load_dag
from engine.execution.celery.executor import CeleryExecutor
from engine.execution.celery.relay import decode_metrics, encode_metrics
from engine.execution.stub import StubExecutor
from engine.observability.workers import worker_samples, workers_check
from engine.scheduling.scheduler import Scheduler
from engine.states import TaskState
from engine.store import transitions, workers
from engine.store.models import TaskInstance
from metrics.relay import Relayed
from tests.integration import test_scheduler_tick as tick_tests
from tests.integration.test_scheduler_tick import trigger

# the tick tests' fixtures: a scheduler config on `store`, a DAG file writer
sched_config = tick_tests.sched_config
add_dag = tick_tests.add_dag

NOW = datetime.now(UTC)


class IdStub(StubExecutor):
    """The stub executor, giving message ids as the celery executor does."""

    name = "celery"

    def assign_external_ids(self, ti_ids):
        return {ti_id: f"msg-{ti_id}-1" for ti_id in ti_ids}


@dataclass
class FakeApp:
    """What the executor calls on a Celery app, recorded."""

    sent: list[tuple[str, dict]] = field(default_factory=list)
    revoked: list[Any] = field(default_factory=list)

    def send_task(self, name: str, args: list, task_id: str, **options: Any) -> None:
        self.sent.append((task_id, {"name": name, "args": args, **options}))

    @property
    def control(self) -> FakeApp:
        return self

    def revoke(self, ids: Any, **options: Any) -> None:
        self.revoked.append(ids)

    def close(self) -> None:
        self.closed = True

    def AsyncResult(self, message_id: str) -> Any:
        raise ConnectionError("no result backend in this test")


@pytest.fixture
def queued(store, sched_config, add_dag):
    """Two tasks queued by a real scheduler tick: (scheduler, stub, {task_id: row})."""
    add_dag(
        "two",
        """
        with DAG("two", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
            EmptyOperator(task_id="a")
            EmptyOperator(task_id="b", queue="big")
        """,
    )
    stub = IdStub()
    scheduler = Scheduler(store, sched_config, stub, clock=FakeClock(NOW))
    scheduler.start()
    trigger(store, "two", NOW)
    for _ in range(3):
        scheduler.tick(NOW)
    with store.session() as session:
        rows = {ti.task_id: ti for ti in session.scalars(select(TaskInstance))}
        session.expunge_all()
    return scheduler, stub, rows


def test_message_ids_are_committed_with_the_queued_state(queued):
    _, stub, rows = queued
    assert {r.task_id: r.state for r in rows.values()} == {"a": "queued", "b": "queued"}
    for request in stub.history:
        assert request.external_id == f"msg-{request.ti_id}-1"
        assert rows[request.task_id].external_executor_id == request.external_id
    assert {r.task_id: r.queue for r in stub.history} == {"a": "default", "b": "big"}


def test_the_runner_refuses_a_message_the_task_instance_is_not_queued_under(
    store, sched_config, queued
):
    _, stub, _ = queued
    request = next(r for r in stub.history if r.task_id == "a")
    dag = load_dag(request.fileloc, request.dag_id, request.task_id, None)
    with pytest.raises(runner.StaleMessage, match="not queued with message stale"):
        runner.run_attempt(store, sched_config, dag, request.ti_id, external_id="stale")
    with store.session() as session:
        assert session.get(TaskInstance, request.ti_id).state == "queued"

    result = runner.run_attempt(
        store, sched_config, dag, request.ti_id, external_id=request.external_id
    )
    assert result.state is TaskState.SUCCESS
    # a copy of the same message, delivered again, starts nothing
    with pytest.raises(runner.StaleMessage, match="is success"):
        runner.run_attempt(store, sched_config, dag, request.ti_id, external_id=request.external_id)


def test_a_resend_swaps_the_message_id_only_while_queued_under_the_old_one(store, queued):
    _, _, rows = queued
    ti = rows["a"]
    with store.session() as session:
        assert not workers.swap_external_id(session, ti.id, "someone-else", "new")
        assert workers.swap_external_id(session, ti.id, ti.external_executor_id, "new")
    with store.session() as session:
        assert workers.current_external_id(session, ti.id) == ("queued", "new")
        transitions.transition_task_instances(
            session, [ti.id], expected=TaskState.QUEUED, to=TaskState.SCHEDULED, at=NOW
        )
    with store.session() as session:
        assert not workers.swap_external_id(session, ti.id, "new", "newer")


def test_the_executor_resends_late_messages_reports_ends_and_lets_stale_heartbeats_go(
    store, sched_config, queued
):
    _, stub, rows = queued
    config = sched_config.with_overrides(
        celery__requeue_timeout=30, scheduler__heartbeat_timeout=10
    )
    executor = CeleryExecutor(config, store)
    executor.app = app = FakeApp()
    executor.queue(stub.history)
    assert [(m, o["queue"]) for m, o in app.sent] == [
        (r.external_id, {"default": config["celery.default_queue"]}.get(r.queue, r.queue))
        for r in stub.history
    ]
    assert executor.running_ti_ids() == {rows["a"].id, rows["b"].id}
    assert executor.open_slots == executor.parallelism - 2

    # "a" was sent 31 s ago and never started: a new message id, sent again, old revoked
    a, b = rows["a"], rows["b"]
    executor._inflight[a.id].sent_at -= 31
    executor.wait(0)
    with store.session() as session:
        _, new_id = workers.current_external_id(session, a.id)
    assert new_id != a.external_executor_id
    assert app.sent[-1][0] == new_id
    assert a.external_executor_id in app.revoked
    assert executor.resent == 1

    # "b" starts with a heartbeat that then goes stale: let go (the zombie check takes it)
    with store.session() as session:
        transitions.transition_task_instances(
            session, [b.id], expected=TaskState.QUEUED, to=TaskState.RUNNING, at=NOW,
            values={"last_heartbeat": datetime.now(UTC) - timedelta(seconds=11), "pid": 4242},
        )  # fmt: skip
    executor.wait(0)
    assert executor.running_ti_ids() == {a.id}
    assert b.external_executor_id in app.revoked

    # "a" ends: one event with the recorded state
    with store.session() as session:
        transitions.transition_task_instances(
            session, [a.id], expected=TaskState.QUEUED, to=TaskState.FAILED, at=NOW
        )
    assert executor.wait(1.0)
    (event,) = executor.collect()
    assert (event.ti_id, event.state, event.lost) == (a.id, TaskState.FAILED, False)
    assert executor.running_ti_ids() == set()
    executor.end(0)  # a result backend that fails loses metrics, nothing else


def test_relayed_metrics_survive_json():
    records = [
        Relayed("count", "ti.start", "counter", 1.0, (("dag_id", "d"), ("task_id", "t"))),
        Relayed("timing", "task.duration", "timer", 0.25, ()),
    ]
    import json

    assert decode_metrics(json.loads(json.dumps(encode_metrics(records)))) == records


def _worker(store, name: str, queues: str, concurrency: int, running: dict, at: datetime) -> None:
    with store.session() as session:
        worker_id = workers.start_worker(
            session, name=name, hostname="h1", pid=1, queues=queues.split(","),
            concurrency=concurrency, now=at,
        )  # fmt: skip
        workers.heartbeat_worker(session, worker_id, at, running)


def test_worker_slots_in_metrics_health_and_the_console(store, sched_config, queued):
    now = datetime.now(UTC)
    _worker(store, "a@h1", "default", 4, {"default": 1}, now)
    _worker(store, "b@h1", "default,big", 2, {"big": 2}, now)
    _worker(store, "gone@h2", "default", 8, {}, now - timedelta(minutes=5))  # stale heartbeat

    with store.session() as session:
        live = workers.live_workers(session, now - timedelta(seconds=60))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in worker_samples(live)}
    assert (
        samples[("executor.worker.running_slots", (("queue", "default"), ("worker", "a@h1")))] == 1
    )
    assert samples[("executor.worker.open_slots", (("queue", "default"), ("worker", "a@h1")))] == 3
    assert samples[("executor.worker.running_slots", (("queue", "big"), ("worker", "b@h1")))] == 2
    assert samples[("executor.worker.open_slots", (("queue", "default"), ("worker", "b@h1")))] == 0
    assert samples[("executor.workers", ())] == 2

    ok, detail = workers_check(store, sched_config)()
    assert ok and detail["live_workers"] == 2
    assert detail["queues"]["default"] == {"workers": 2, "slots": 6, "running": 1, "open": 3}

    table = worker_slots(store, heartbeat_timeout=60, now=now)
    assert list(zip(table.worker, table.queue, table.running, table.open, strict=True)) == [
        ("a@h1", "default", 1, 3),
        ("b@h1", "default", 0, 0),
        ("b@h1", "big", 2, 0),
    ]
    # the fixture's two queued attempts: one on "default", one on "big"
    capacity = queue_capacity(store, heartbeat_timeout=60, now=now + timedelta(seconds=30))
    by_queue = capacity.set_index("queue")
    assert by_queue.loc["default", "backlog"] == 1 and by_queue.loc["big", "backlog"] == 1
    assert by_queue.loc["default", "open"] == 3 and by_queue.loc["big", "workers"] == 1
    assert by_queue.loc["big", "oldest_wait_s"] >= 29


def test_health_fails_without_a_live_worker(store, sched_config):
    ok, detail = workers_check(store, sched_config)()
    assert not ok and "no worker heartbeat" in detail["error"]
