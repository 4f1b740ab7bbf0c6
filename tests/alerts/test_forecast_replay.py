"""Warnings before the miss: the forecast on its own clock, judged over a replayed history.

The scheduler runs with a stub executor on an injected clock; a replay starts each queued
attempt at once and ends it after the duration the scenario gives it, recording its try
as a worker does (so the history the forecast learns from grows as the runs go by). The
forecast runs as the scheduler's `ForecastService` does, once a second of that clock.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, select

from alerts import forecast
from alerts.forecast import ForecastService
from engine.clock import FakeClock
from engine.states import TaskState
from engine.store import pools
from engine.store.models import Alert, DagRun, SlaMiss, TaskInstance, TaskTry
from tests.alerts import test_sla
from tests.alerts.test_forecast import seed_history
from tests.alerts.test_sla import finish_attempt, start_attempt
from tests.integration import test_scheduler_tick as tick
from tests.integration.test_scheduler_tick import T0, trigger

sched_config = tick.sched_config
add_dag = tick.add_dag
start_scheduler = test_sla.start_scheduler

NO_ZOMBIES = {"scheduler__heartbeat_timeout": 10**6}  # stub attempts never heartbeat
STEP = 0.25  # seconds of the injected clock between two scheduler ticks

SINGLE = """
with DAG("single", schedule=None,
         deadline=Deadline(DeadlineReference.DAGRUN_QUEUED_AT, timedelta(seconds=10))):
    EmptyOperator(task_id="work")
"""
CHAIN = """
with DAG("chain", schedule=None,
         deadline=Deadline(DeadlineReference.DAGRUN_QUEUED_AT, timedelta(seconds=10))):
    chain(*(EmptyOperator(task_id=name) for name in ("extract", "transform", "load")))
"""
POOLED = """
with DAG("pooled", schedule=None,
         deadline=Deadline(DeadlineReference.DAGRUN_QUEUED_AT, timedelta(seconds=8))):
    EmptyOperator(task_id="left", pool="narrow")
    EmptyOperator(task_id="right", pool="narrow")
"""
HOG = """
with DAG("hog", schedule=None):
    EmptyOperator(task_id="hold", pool="narrow")
"""


def test_a_running_task_is_judged_by_how_long_it_has_run():
    history = [2.0, 3.0, 30.0, 31.0]
    assert forecast.remaining_after(history, 0.0, 0.5) == pytest.approx(16.5)
    # 5 s in, only the 30 s runs lasted as long: about 25 s are left, not "done now"
    assert forecast.remaining_after(history, 5.0, 0.5) == pytest.approx(25.5)
    assert forecast.remaining_after(history, 31.0, 0.9) == 0.0
    assert forecast.remaining_after(history, 31.5, 0.9) is None  # overrunning
    assert forecast.remaining_after([6.0, 6.0], 9.0, 0.9) == 0.0  # too little history to tell


@dataclass
class Outcome:
    run_id: str
    warned_at: datetime | None
    missed_at: datetime | None
    messages: list[str] = field(default_factory=list)

    @property
    def warned_in_time(self) -> bool:
        return self.warned_at is not None and (
            self.missed_at is None or self.warned_at < self.missed_at
        )


class Replay:
    """Runs DAG runs through the scheduler on the injected clock; the forecast every second."""

    def __init__(self, store, start_scheduler, **overrides) -> None:
        self.store = store
        self.clock = FakeClock(T0)
        self.scheduler, self.stub = start_scheduler(self.clock, **NO_ZOMBIES, **overrides)
        checker = next(h for h in self.scheduler.registry.tick_hooks if h.name == "sla").run
        self.service = ForecastService(checker.__self__.forecaster, store, clock=self.clock)
        self.service.forecaster.background = True  # the service forecasts, not the tick
        self._running: dict[int, tuple[datetime, float]] = {}
        self._last_forecast: datetime | None = None

    def run(self, dag_id: str, durations: dict[str, float], deadline: float, **others) -> Outcome:
        """One run of `dag_id` whose tasks take `durations`; `others`: runs of other DAGs
        started just before it ({dag_id: durations})."""
        self.clock.advance(timedelta(seconds=60))
        took = {}
        for other, other_durations in others.items():
            trigger(self.store, other, self.clock.now())
            took[other] = other_durations
            self.clock.advance(timedelta(seconds=0.01))
        start = self.clock.now()
        run_id = trigger(self.store, dag_id, start)
        took[dag_id] = durations
        end = start + timedelta(seconds=max(deadline, sum(durations.values())) + 2 * STEP)
        while self.clock.now() < end or self.stub.held or self._active():
            self._step(took)
        return self._outcome(dag_id, run_id)

    def _step(self, took: dict[str, dict[str, float]]) -> None:
        now = self.clock.now()
        self.scheduler.tick(now)
        for ti_id, request in list(self.stub.held.items()):
            if ti_id not in self._running:
                start_attempt(self.store, ti_id, now)
                self._running[ti_id] = (now, took[request.dag_id][request.task_id])
            started, seconds = self._running[ti_id]
            if now >= started + timedelta(seconds=seconds):
                finish_attempt(self.store, self.stub, ti_id, TaskState.SUCCESS, now)
                record_try(self.store, ti_id, started, now)
                del self._running[ti_id]
        if self._last_forecast is None or now - self._last_forecast >= timedelta(seconds=1):
            self.service.run_once(now)
            self._last_forecast = now
        self.clock.set(now + timedelta(seconds=STEP))

    def _active(self) -> bool:
        with self.store.session() as session:
            return bool(
                session.scalar(select(DagRun.id).where(DagRun.state.in_(["queued", "running"])))
            )

    def _outcome(self, dag_id: str, run_id: str) -> Outcome:
        with self.store.session() as session:
            warnings = session.execute(
                select(Alert.created_at, Alert.payload).where(
                    Alert.event == "deadline_at_risk",
                    Alert.dag_id == dag_id,
                    Alert.run_id == run_id,
                    Alert.task_id.is_(None),
                )
            ).all()
            missed = session.scalar(
                select(SlaMiss.detected_at).where(
                    SlaMiss.kind == "dag_deadline",
                    SlaMiss.dag_id == dag_id,
                    SlaMiss.run_id == run_id,
                )
            )
        warned = min((at for at, _ in warnings), default=None)
        return Outcome(run_id, warned, missed, [payload["message"] for _, payload in warnings])


def record_try(store, ti_id: int, started: datetime, ended: datetime) -> None:
    """The try row a worker writes when an attempt ends (the forecast's history)."""
    with store.session() as session:
        ti = session.get(TaskInstance, ti_id)
        session.execute(
            insert(TaskTry).values(
                ti_id=ti_id, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                try_number=ti.try_number, state="success", start_date=started, end_date=ended,
                duration=(ended - started).total_seconds(),
            )
        )  # fmt: skip


def test_a_single_overrunning_task_is_warned_before_its_miss(store, add_dag, start_scheduler):
    """Usually 6 s, this time 20 s, deadline 10 s: warned while the deadline is ahead."""
    add_dag("single", SINGLE)
    seed_history(store, "single", {"work": [5.8, 6.0, 6.1, 5.9, 6.0, 6.2, 5.9, 6.0]})
    replay = Replay(store, start_scheduler)

    outcome = replay.run("single", {"work": 20.0}, deadline=10)

    assert outcome.missed_at is not None and outcome.warned_at is not None, outcome
    assert outcome.warned_in_time, outcome
    # Told within a second of the task passing its longest run (6.2 s), well ahead
    started = outcome.missed_at - timedelta(seconds=10)
    assert outcome.warned_at <= started + timedelta(seconds=6.2 + 1 + STEP)
    assert outcome.missed_at - outcome.warned_at >= timedelta(seconds=2.5)
    (message,) = outcome.messages
    assert "work has run" in message and "longer than any of its recorded runs" in message

    # The same task in its usual time: no warning, no miss
    in_time = replay.run("single", {"work": 6.0}, deadline=10)
    assert (in_time.warned_at, in_time.missed_at) == (None, None)


def test_replayed_history_warns_before_most_misses_and_rarely_otherwise(
    store, add_dag, start_scheduler
):
    """Single overrunning tasks, slow chains and a blocked pool miss their deadline (9 runs);
    runs in their usual times (27, drawn from the same spread as their history) do not.
    The late runs enter the history the forecast learns from, as they would."""
    for name, source in (("single", SINGLE), ("chain", CHAIN), ("pooled", POOLED), ("hog", HOG)):
        add_dag(name, source)
    with store.session() as session:
        pools.set_pool(session, "narrow", 1)
    rng = random.Random(19)

    def usual(base: float) -> float:
        return round(base * rng.uniform(0.85, 1.15), 2)

    seed_history(store, "single", {"work": [usual(6) for _ in range(10)]})
    steps = ("extract", "transform", "load")
    seed_history(store, "chain", {step: [usual(2) for _ in range(10)] for step in steps})
    seed_history(
        store, "pooled", {side: [usual(2.5) for _ in range(10)] for side in ("left", "right")}
    )
    # The forecast learns from each task's last 20 runs: a DAG late twice in its last 10
    # runs would otherwise be forecast late (its p90) on the next run as well.
    replay = Replay(store, start_scheduler, alerts__forecast_history=20)

    late, in_time = [], []
    for i in range(3):  # three rounds: each DAG runs in its usual time three times, then late
        for _ in range(3):
            in_time.append(replay.run("single", {"work": usual(6)}, deadline=10))
            in_time.append(replay.run("chain", {step: usual(2) for step in steps}, deadline=10))
            in_time.append(
                replay.run("pooled", {"left": usual(2.5), "right": usual(2.5)}, deadline=8)
            )
        late.append(replay.run("single", {"work": 20.0 - 3 * i}, deadline=10))
        late.append(replay.run("chain", dict.fromkeys(steps, 4.0 + 0.5 * i), deadline=10))
        blocked = {"left": usual(2.5), "right": usual(2.5)}
        late.append(replay.run("pooled", blocked, deadline=8, hog={"hold": 5.0 + i}))

    assert all(outcome.missed_at is not None for outcome in late), late
    assert all(outcome.missed_at is None for outcome in in_time), in_time
    warned_first = sum(outcome.warned_in_time for outcome in late)
    false_warnings = sum(outcome.warned_at is not None for outcome in in_time)
    print(  # the figures docs/alerts.md quotes (pytest -s shows them)
        f"replay: warned before {warned_first} of {len(late)} misses,"
        f" {false_warnings} false warning(s) in {len(in_time)} runs in time"
    )
    assert warned_first / len(late) >= 0.8, late
    assert false_warnings <= len(in_time) / 10, in_time


def test_the_service_forecasts_on_its_own_clock_between_ticks(store, add_dag, start_scheduler):
    """Once the SLA check has handed it the run, the service thread warns with no more
    ticks: a scheduler stuck in a long tick still warns."""
    add_dag("single", SINGLE)
    seed_history(store, "single", {"work": [0.5, 0.5, 0.5, 0.5]})
    clock = FakeClock(T0)
    scheduler, stub = start_scheduler(clock, **NO_ZOMBIES)
    checker = next(h for h in scheduler.registry.tick_hooks if h.name == "sla").run.__self__
    service = ForecastService(checker.forecaster, store, clock=clock)
    run_id = trigger(store, "single", T0)
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    start_attempt(store, ti_id, T0)
    scheduler.tick(T0)  # the SLA check sees the run: the service has its target
    service.start()
    try:
        # 6 s in, past every 0.5 s run: overrunning, expected to need 6 s more (deadline 10 s)
        clock.set(T0 + timedelta(seconds=6))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with store.session() as session:
                found = session.scalars(
                    select(Alert.run_id).where(Alert.event == "deadline_at_risk")
                ).all()
            if found:
                break
            time.sleep(0.1)
    finally:
        service.stop(5)
    assert found == [run_id]
    assert not checker.forecaster.background  # stopped: the tick forecasts again
