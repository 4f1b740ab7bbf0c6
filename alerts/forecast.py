"""Early warning: runs forecast to miss their deadline, told before they miss it.

The forecast learns from each task's last `alerts.forecast_history` successful attempts
(one query over task_try, cached and refreshed at most every `HISTORY_REFRESH` seconds).
A task not started yet is expected to take their `alerts.forecast_quantile` quantile
(default p90). A running task is judged by how long it has already run: its remaining
time is that quantile of the recorded runs that lasted at least as long, minus what it
has run (a task 5 s into a history of 6 s runs has about 1 s left, one 5 s into a history
of 2 s and 30 s runs has about 25 s left). A task that has run longer than every one of
its (at least `OVERRUN_MIN_SAMPLES`) recorded runs is *overrunning*: nothing in its
history says when it ends, so it is expected to run as long again as it already has (a
task usually done in 6 s, still running at 7 s, is expected to end at 14 s at the
earliest); a deadline it, or the work after it, then cannot meet is at risk, and the
warning names the overrunning task. A run's predicted finish is now plus the longest
path through its unfinished tasks in the serialized DAG; a task without history counts
as instant, so a DAG never warns on what it has not learned. Tasks a branch will skip
still count: the forecast errs towards warning.

When the prediction is past the run's deadline (or past a task's SLA deadline, for that
task's path), `deadline_at_risk` is written once per run (or task) while the deadline is
still ahead; the outbox fingerprint keeps it once across restarts. Gauges per DAG:
`deadline.at_risk` (runs predicted to miss) and `deadline.slack_seconds` (deadline minus
predicted finish of the run with the nearest deadline; negative once missed).

The scheduler's `sla` tick hook hands the active runs and their deadlines to the
`ForecastService`, a thread of the scheduler that forecasts them every
`FORECAST_INTERVAL` second on its own clock, outside the tick, so a warning window of a
few seconds is not missed however long a tick takes. Each pass is a fixed number of
batched queries (the task instances of CHUNK runs per statement, the history at most
every `HISTORY_REFRESH` seconds). Where no service runs (a scheduler without its
services, `dags test`), the tick hook forecasts inline, at the same interval.
"""

from __future__ import annotations

import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alerts import outbox
from alerts.events import Event
from alerts.routes import Route, compose, dag_details, run_link, wanted_events
from engine import hooks
from engine.clock import SYSTEM, Clock
from engine.hooks import TickContext
from engine.states import TASK_FINISHED, TaskState
from engine.store.models import TaskInstance, TaskTry
from engine.store.scheduling import pairs_in
from metrics import Sample, stats
from metrics.gauges import GaugeSet

if TYPE_CHECKING:
    from alerts.sla import Target
    from engine.config import Config
    from engine.store.db import Store

log = logging.getLogger(__name__)

#: Seconds between two forecasts while a run with a deadline is active.
FORECAST_INTERVAL = 1.0
#: Recorded runs a task needs before running longer than all of them counts as overrunning.
OVERRUN_MIN_SAMPLES = 3
#: The quantile of the recorded runs at least as long as a running task has run that it
#: is expected to last (their median: the history already says it is a long one).
RUNNING_QUANTILE = 0.5
#: Seconds between two reads of the task duration history.
HISTORY_REFRESH = 45.0
#: Runs per statement.
CHUNK = 200

_FINISHED = frozenset(state.value for state in TASK_FINISHED)
#: States whose start_date is the current try's: running, or a sensor between pokes in
#: reschedule mode (its try, and its past durations, include the waits)
_STARTED = frozenset({TaskState.RUNNING.value, TaskState.UP_FOR_RESCHEDULE.value})


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values` (linear interpolation between the closest ranks)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * min(max(q, 0.0), 1.0)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def remaining_after(samples: Sequence[float], elapsed: float, q: float) -> float | None:
    """Seconds a task that has run `elapsed` seconds still needs: the q-quantile of the
    recorded durations (sorted) that lasted at least that long, minus `elapsed`.

    None when it has run longer than every one of at least OVERRUN_MIN_SAMPLES recorded
    runs (overrunning: its history cannot say when it ends); 0.0 with a shorter history.
    """
    longer = samples[bisect_left(samples, elapsed) :]
    if not longer:
        return None if len(samples) >= OVERRUN_MIN_SAMPLES else 0.0
    return max(0.0, quantile(longer, q) - elapsed)


def remaining_path(
    order: Sequence[Any],
    tasks: Mapping[str, tuple[str, datetime | None]],
    expected: Mapping[str, float],
    now: datetime,
    samples: Mapping[str, Sequence[float]] | None = None,
    q: float = 0.9,
    overrunning: set[str] | None = None,
) -> dict[str, float]:
    """Seconds from now until each unfinished task is predicted to end.

    `order`: the plan's tasks, upstream first; `tasks`: task_id -> (state, start_date).
    A task ends after its slowest unfinished upstream task plus its own remaining time:
    `expected` less what it has run, or, given its recorded durations (`samples`,
    sorted), the q-quantile of those at least as long as what it has run, less that.
    A running task past all its recorded runs is added to `overrunning` and expected to
    run as long again as it already has.
    """
    finish: dict[str, float] = {}
    for task in order:
        state, started = tasks.get(task.task_id, (TaskState.NONE.value, None))
        if state in _FINISHED:
            continue
        own = expected.get(task.task_id, 0.0)
        if state in _STARTED and started is not None:
            elapsed = (now - started).total_seconds()
            history = samples.get(task.task_id) if samples is not None else None
            if history:
                left = remaining_after(history, elapsed, RUNNING_QUANTILE)
                if left is None and overrunning is not None:
                    overrunning.add(task.task_id)
                own = elapsed if left is None else left
            else:
                own = max(0.0, own - elapsed)
        after = max((finish[up] for up in task.upstream_task_ids if up in finish), default=0.0)
        finish[task.task_id] = after + own
    return finish


@dataclass(frozen=True)
class Forecast:
    """One active run's predicted finish against its deadlines."""

    dag_id: str
    run_id: str
    deadline: datetime | None
    finish: datetime
    #: task_id -> (its SLA deadline, its predicted end), for tasks predicted late
    late_tasks: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    #: running tasks past every recorded run of theirs: task_id -> seconds run so far
    overrunning: dict[str, float] = field(default_factory=dict)

    @property
    def slack(self) -> float | None:
        """Seconds between the deadline and the predicted finish (negative: late)."""
        if self.deadline is None:
            return None
        return (self.deadline - self.finish).total_seconds()

    def at_risk(self, now: datetime) -> bool:
        """Predicted to miss a deadline that has not passed yet."""
        return self.deadline is not None and self.finish > self.deadline > now


def forecast_run(
    target: Target,
    tasks: Mapping[str, tuple[str, datetime | None]],
    expected: Mapping[str, float],
    order: Sequence[Any],
    now: datetime,
    samples: Mapping[str, Sequence[float]] | None = None,
    q: float = 0.9,
) -> Forecast:
    """The run's predicted finish, and the SLA tasks predicted to end after their deadline."""
    overrunning: set[str] = set()
    finish = remaining_path(order, tasks, expected, now, samples, q, overrunning)
    end = now + timedelta(seconds=max(finish.values(), default=0.0))
    late = {}
    for task_id, deadline in target.task_deadlines.items():
        if task_id in finish:
            predicted = now + timedelta(seconds=finish[task_id])
            if predicted > deadline > now:
                late[task_id] = (deadline, predicted)
    ran = {
        task_id: (now - started).total_seconds()
        for task_id in sorted(overrunning)
        if (started := tasks[task_id][1]) is not None
    }
    return Forecast(target.run.dag_id, target.run.run_id, target.deadline, end, late, ran)


class TaskDurations:
    """Expected seconds per (dag_id, task_id): a quantile of recent successful attempts."""

    def __init__(self, history: int, q: float, refresh: float = HISTORY_REFRESH) -> None:
        self.history = history
        self.q = q
        self.refresh = timedelta(seconds=refresh)
        self._expected: dict[str, dict[str, float]] = {}
        self._samples: dict[str, dict[str, list[float]]] = {}
        self._at: datetime | None = None

    def expected(self, session: Session, dag_ids: Iterable[str], now: datetime) -> None:
        """Refresh the cache if it is stale or misses a DAG (one query for all DAGs)."""
        wanted = set(dag_ids)
        fresh = self._at is not None and now - self._at < self.refresh
        if wanted and (not fresh or not wanted <= set(self._expected)):
            self._samples = self._read(session, wanted | set(self._expected))
            self._expected = {
                dag_id: {task_id: quantile(values, self.q) for task_id, values in tasks.items()}
                for dag_id, tasks in self._samples.items()
            }
            self._at = now

    def of(self, dag_id: str) -> dict[str, float]:
        """task_id -> expected seconds of a task not started yet."""
        return self._expected.get(dag_id, {})

    def samples(self, dag_id: str) -> dict[str, list[float]]:
        """task_id -> its recorded durations, shortest first."""
        return self._samples.get(dag_id, {})

    def _read(self, session: Session, dag_ids: set[str]) -> dict[str, dict[str, list[float]]]:
        rank = (
            func.row_number()
            .over(
                partition_by=(TaskTry.dag_id, TaskTry.task_id),
                order_by=(TaskTry.end_date.desc(), TaskTry.id.desc()),
            )
            .label("rank")
        )
        ranked = (
            select(TaskTry.dag_id, TaskTry.task_id, TaskTry.duration, rank)
            .where(
                TaskTry.dag_id.in_(sorted(dag_ids)),
                TaskTry.state == TaskState.SUCCESS.value,
                TaskTry.duration.is_not(None),
            )
            .subquery()
        )
        statement = select(ranked.c.dag_id, ranked.c.task_id, ranked.c.duration).where(
            ranked.c.rank <= self.history
        )
        samples: dict[tuple[str, str], list[float]] = {}
        for dag_id, task_id, duration in session.execute(statement):
            samples.setdefault((dag_id, task_id), []).append(duration)
        found: dict[str, dict[str, list[float]]] = {dag_id: {} for dag_id in dag_ids}
        for (dag_id, task_id), values in samples.items():
            found[dag_id][task_id] = sorted(values)
        return found


def task_instance_times(
    session: Session, runs: Iterable[tuple[str, str]]
) -> Iterator[tuple[str, str, str, str, datetime | None, datetime | None]]:
    """(dag_id, run_id, task_id, state, start_date, end_date) of every task instance of
    these runs, in one indexed query per CHUNK runs (the SLA check reads them too)."""
    keys = sorted(set(runs))
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        yield from session.execute(
            select(
                TaskInstance.dag_id,
                TaskInstance.run_id,
                TaskInstance.task_id,
                TaskInstance.state,
                TaskInstance.start_date,
                TaskInstance.end_date,
            ).where(pairs_in(TaskInstance.dag_id, TaskInstance.run_id, chunk))
        )


def task_states(
    session: Session, runs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, tuple[str, datetime | None]]]:
    """(dag_id, run_id) -> task_id -> (state, start_date)."""
    found: dict[tuple[str, str], dict[str, tuple[str, datetime | None]]] = {}
    for dag_id, run_id, task_id, state, started, _ in task_instance_times(session, runs):
        tasks = found.setdefault((dag_id, run_id), {})
        previous = tasks.get(task_id)
        # mapped tasks: the least advanced map index stands for the task
        if previous is None or previous[0] in _FINISHED:
            tasks[task_id] = (state, started)
    return found


def gauge_samples(at_risk: Mapping[str, int], slack: Mapping[str, float | None]) -> list[Sample]:
    """deadline.at_risk per DAG with a run that has a deadline, and the slack when known.

    Sent as one set (`GaugeSet`): once a DAG's last run with a deadline ends, its
    at_risk is zeroed once and its slack dropped (the catalog's rules).
    """
    samples = []
    for dag_id, count in sorted(at_risk.items()):
        samples.append(Sample("deadline.at_risk", count, {"dag_id": dag_id}))
        seconds = slack.get(dag_id)
        if seconds is not None:
            samples.append(Sample("deadline.slack_seconds", seconds, {"dag_id": dag_id}))
    return samples


class Forecaster:
    """Forecasts the active runs every `interval` seconds and warns of deadlines at risk.

    The SLA checker hands it the active runs (`check`); while a `ForecastService` runs,
    the forecast itself happens on the service's thread (`run`), else inline.
    """

    def __init__(
        self, routes: Mapping[str, Route], config: Config, interval: float = FORECAST_INTERVAL
    ) -> None:
        self.routes = {n: r for n, r in routes.items() if Event.DEADLINE_AT_RISK in r.events}
        self.config = config
        self.interval = interval
        self.wanted = Event.DEADLINE_AT_RISK in wanted_events(self.routes)
        self.needs_details = any(route.needs_dag_details for route in self.routes.values())
        self.durations = TaskDurations(
            config["alerts.forecast_history"], config["alerts.forecast_quantile"]
        )
        self._last: datetime | None = None
        self._warned: set[tuple[str, str, str]] = set()
        self._gauges = GaugeSet(stats)
        self._orders: dict[str, tuple[Any, list[Any]]] = {}
        self._lock = threading.Lock()
        #: the latest active runs handed over, for the service
        self._targets: list[Target] = []
        self.background = False

    @property
    def targets(self) -> list[Target]:
        """The active runs (with a deadline or an SLA) the SLA checker saw last."""
        return self._targets

    def check(self, ctx: TickContext, targets: Sequence[Target]) -> list[Forecast]:
        """From the SLA checker's pass: remember the runs; forecast them now unless a
        service does it on its own clock."""
        self._targets = list(targets)
        if self.background:
            return []
        return self.run(ctx.store, self._targets, ctx.now)

    def run(
        self, store: Store, targets: Sequence[Target], now: datetime, *, force: bool = False
    ) -> list[Forecast]:
        """Forecast these runs (at most once per interval unless `force`) and warn."""
        with self._lock:
            if (
                not force
                and self._last is not None
                and (now - self._last).total_seconds() < self.interval
            ):
                return []
            self._last = now
            if not targets and not self._gauges.remembered:
                return []
            with store.session() as session:
                forecasts = self._forecast(session, targets, now) if targets else []
                warnings = self._warnings(session, targets, forecasts, now)
                outbox.enqueue(session, warnings, now)
            self._gauge(targets, forecasts, now)
            live = {(t.run.dag_id, t.run.run_id) for t in targets}
            self._warned = {key for key in self._warned if (key[0], key[1]) in live}
            return forecasts

    def _order(self, target: Target) -> list[Any]:
        plan = target.spec.plan
        cached = self._orders.get(target.run.dag_id)
        if cached is None or cached[0] is not plan:
            cached = (plan, plan.topological_sort())
            self._orders[target.run.dag_id] = cached
        return cached[1]

    def _forecast(
        self, session: Session, targets: Sequence[Target], now: datetime
    ) -> list[Forecast]:
        self.durations.expected(session, {t.run.dag_id for t in targets}, now)
        states = task_states(session, [(t.run.dag_id, t.run.run_id) for t in targets])
        return [
            forecast_run(
                target,
                states.get((target.run.dag_id, target.run.run_id), {}),
                self.durations.of(target.run.dag_id),
                self._order(target),
                now,
                self.durations.samples(target.run.dag_id),
                self.durations.q,
            )
            for target in targets
        ]

    def _warnings(
        self,
        session: Session,
        targets: Sequence[Target],
        forecasts: Sequence[Forecast],
        now: datetime,
    ) -> list[outbox.NewAlert]:
        risky: list[tuple[Forecast, str, datetime, datetime]] = []
        for f in forecasts:
            if (
                f.deadline is not None  # at risk: it has one
                and f.at_risk(now)
                and (f.dag_id, f.run_id, "") not in self._warned
            ):
                risky.append((f, "", f.deadline, f.finish))
            for task_id, (task_deadline, predicted) in f.late_tasks.items():
                if (f.dag_id, f.run_id, task_id) not in self._warned:
                    risky.append((f, task_id, task_deadline, predicted))
        if not risky:
            return []
        ids = {f.dag_id for f, *_ in risky}
        details = dag_details(session, ids) if self.wanted and self.needs_details else {}
        rows: list[outbox.NewAlert] = []
        for f, task_id, deadline, predicted in risky:
            self._warned.add((f.dag_id, f.run_id, task_id))
            self._log(f, task_id, deadline, predicted)
            if self.wanted:
                rows += self._compose(f, task_id, deadline, predicted, details, now)
        return rows

    def _log(self, f: Forecast, task_id: str, deadline: Any, predicted: datetime) -> None:
        log.warning(
            "%s %s: %s",
            f.dag_id,
            f.run_id,
            risk_text(f, task_id, deadline, predicted),
            extra={"action": "deadline_at_risk"},
        )

    def _compose(
        self,
        f: Forecast,
        task_id: str,
        deadline: datetime,
        predicted: datetime,
        details: Mapping[str, Any],
        now: datetime,
    ) -> list[outbox.NewAlert]:
        kind = "task_sla" if task_id else "dag_deadline"
        payload = {
            "kind": kind,
            "dag_id": f.dag_id,
            "run_id": f.run_id,
            "task_id": task_id or None,
            "deadline": deadline.isoformat(),
            "predicted_finish": predicted.isoformat(),
            "slack": (deadline - predicted).total_seconds(),
            "at": now.isoformat(),
            "overrunning": sorted(f.overrunning) or None,
            "message": f"{f.dag_id} {f.run_id}: {risk_text(f, task_id, deadline, predicted)}",
            "link": run_link(self.config, f.dag_id, f.run_id),
        }
        return compose(
            self.routes,
            Event.DEADLINE_AT_RISK,
            payload=payload,
            dag_id=f.dag_id,
            run_id=f.run_id,
            task_id=task_id or None,
            details=details.get(f.dag_id, ((), None)),
            extra=kind,
        )

    def _gauge(
        self, targets: Sequence[Target], forecasts: Sequence[Forecast], now: datetime
    ) -> None:
        at_risk: dict[str, int] = {}
        nearest: dict[str, Forecast] = {}
        for f in forecasts:
            if f.deadline is None:
                continue
            at_risk[f.dag_id] = at_risk.get(f.dag_id, 0) + int(f.at_risk(now))
            best = nearest.get(f.dag_id)
            if best is None or f.deadline < best.deadline:  # type: ignore[operator]
                nearest[f.dag_id] = f
        slack = {dag_id: f.slack for dag_id, f in nearest.items()}
        self._gauges.send(gauge_samples(at_risk, slack))


def risk_text(f: Forecast, task_id: str, deadline: datetime, predicted: datetime) -> str:
    """Why a deadline is at risk, in a sentence."""
    what = f"task {task_id}" if task_id else "the run"
    late = (predicted - deadline).total_seconds()
    text = (
        f"{what} is predicted to end at {predicted.isoformat()}, {late:.0f} s after its"
        f" deadline {deadline.isoformat()}"
    )
    if f.overrunning:
        slow = ", ".join(f"{name} has run {ran:.0f} s" for name, ran in f.overrunning.items())
        text += f" ({slow}, longer than any of its recorded runs)"
    return text


class ForecastService:
    """The forecast on its own clock: a scheduler thread that re-forecasts the active runs
    with a deadline every `forecaster.interval` seconds, outside the scheduler's tick.

    `registry` ties the thread to the plugin installation that made it: once that is
    replaced or removed (`engine.runtime.reset`), the thread stops by itself.
    """

    name = "deadline-forecast"

    def __init__(
        self,
        forecaster: Forecaster,
        store: Store,
        *,
        clock: Clock = SYSTEM,
        registry: hooks.Registry | None = None,
    ) -> None:
        self.forecaster = forecaster
        self.store = store
        self.clock = clock
        self._registry = registry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.forecaster.background = True
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, name="dagwatch-deadline-forecast", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.forecaster.background = False

    def run_once(self, now: datetime | None = None) -> list[Forecast]:
        """One forecast of the runs the SLA checker handed over last, at `now`."""
        targets = self.forecaster.targets
        return self.forecaster.run(self.store, targets, now or self.clock.now(), force=True)

    def _owned(self) -> bool:
        return self._registry is None or hooks.current() is self._registry

    def _serve(self) -> None:
        while not self._stop.is_set() and self._owned():
            started = self.clock.monotonic()
            try:
                self.run_once()
            except Exception as exc:  # the metastore is away: try again next interval
                log.error("deadline forecast failed: %s", exc)
            spent = self.clock.monotonic() - started
            self._stop.wait(max(0.05, self.forecaster.interval - spent))  # a real sleep
