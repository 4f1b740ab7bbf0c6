"""FileSensor, TimeDeltaSensor/DateTimeSensor, LatestOnlyOperator and user-defined macros and
filters, each in a DAG file run by the real scheduler loop (local executor, drain mode)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pendulum
from sqlalchemy import select

from engine.sdk.connections import Connection
from engine.store import runs
from engine.store.connections import add_connection
from engine.store.models import DagRun, TaskTry
from tests.integration import test_scheduler_loop as loop_tests
from tests.integration.test_scheduler_loop import drain, entries, run_state, trigger

# the real-loop fixtures of test_scheduler_loop: a config on `store`, a DAG file writer
loop_config = loop_tests.loop_config
ledger = loop_tests.ledger
add_dag = loop_tests.add_dag


def states(store, dag_id: str, run_id: str) -> dict[str, str]:
    with store.session() as session:
        return {ti.task_id: ti.state for ti in runs.get_task_instances(session, dag_id, run_id)}


def xcom(store, dag_id: str, run_id: str, task_id: str):
    with store.session() as session:
        found = runs.get_xcoms(
            session, dag_id=dag_id, run_id=run_id, task_ids=[task_id], key="return_value"
        )
    return found.get(task_id)


def tries(store, dag_id: str, task_id: str) -> list[TaskTry]:
    with store.session() as session:
        rows = session.execute(
            select(TaskTry).where(TaskTry.dag_id == dag_id, TaskTry.task_id == task_id)
        ).scalars()
        found = list(rows)
        session.expunge_all()
    return found


def test_file_sensor_succeeds_once_the_file_appears(store, loop_config, add_dag, ledger, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    with store.session() as session:
        add_connection(
            session,
            Connection("fs_landing", conn_type="fs", extra={"path": str(landing)}),
            config=loop_config,
        )
    logs = loop_config["logging.base_log_folder"]
    constants = f"LANDING = {str(landing)!r}\nLOGS = {str(logs)!r}\n"
    add_dag(
        "file_wait",
        constants
        + textwrap.dedent(
            """
        import glob

        def deliver(ds):
            # deliver only once the sensor has poked in vain, however slowly it started
            pattern = os.path.join(LOGS, "file_wait", "*", "wait", "attempt=1.log")
            deadline = time.time() + 20
            poked = False
            while not poked and time.time() < deadline:
                time.sleep(0.05)
                for path in glob.glob(pattern):
                    with open(path) as log:
                        poked = "poking for file" in log.read()
            folder = os.path.join(LANDING, ds)
            os.makedirs(folder)
            with open(os.path.join(folder, "orders.csv"), "w") as out:
                out.write("1")
            record("deliver")

        with DAG("file_wait", schedule=None, params={"name": "orders"}):
            PythonOperator(task_id="deliver", python_callable=deliver)
            wait = FileSensor(task_id="wait", filepath="{{ ds }}/{{ params.name }}.*",
                              fs_conn_id="fs_landing", poke_interval=0.2, timeout=30)
            wait >> PythonOperator(task_id="after", python_callable=record, op_args=["after"])
        """
        ),
    )
    run_id = trigger(store, "file_wait", when=datetime(2026, 3, 1, tzinfo=UTC))
    drain(store, loop_config)
    assert states(store, "file_wait", run_id) == {
        "deliver": "success",
        "wait": "success",
        "after": "success",
    }
    spans = {span["task"]: span for span in entries(ledger)}
    assert spans["after"]["start"] >= spans["deliver"]["end"]
    (attempt,) = tries(store, "file_wait", "wait")
    log_text = Path(attempt.log_path).read_text()
    pokes = log_text.count(f"poking for file {landing}/2026-03-01/orders.*")
    assert pokes >= 2, log_text  # it waited: the file was not there at the first poke
    assert f"found file {landing}/2026-03-01/orders.csv" in log_text


def test_time_sensors_succeed_skip_and_fail(store, loop_config, add_dag):
    add_dag(
        "time_wait",
        """
        with DAG("time_wait", schedule=None):
            passed = DateTimeSensor(task_id="passed", target_time="{{ macros.ds_add(ds, -1) }}",
                                    poke_interval=0.2, timeout=10)
            passed >> EmptyOperator(task_id="after_passed")
            later = TimeDeltaSensor(task_id="later", delta=timedelta(days=1), poke_interval=0.2,
                                    timeout=1, soft_fail=True)
            later >> EmptyOperator(task_id="after_later")
            never = DateTimeSensor(task_id="never", target_time="2999-01-01T00:00:00+00:00",
                                   poke_interval=0.2, timeout=0.5)
            never >> EmptyOperator(task_id="after_never")
        """,
    )
    run_id = trigger(store, "time_wait")
    drain(store, loop_config)
    assert states(store, "time_wait", run_id) == {
        "passed": "success",
        "after_passed": "success",
        "later": "skipped",
        "after_later": "skipped",
        "never": "failed",
        "after_never": "upstream_failed",
    }
    (skipped,) = tries(store, "time_wait", "later")
    assert skipped.duration >= 1.0
    (failed,) = tries(store, "time_wait", "never")
    assert "task 'never': Sensor has timed out" in failed.error
    assert run_state(store, "time_wait", run_id) == "failed"


LATEST_ONLY_DAG = """
with DAG("latest", schedule="@daily", catchup=True,
         start_date=pendulum.today("UTC").subtract(days=3)):
    latest_only = LatestOnlyOperator(task_id="latest_only")
    task1 = EmptyOperator(task_id="task1")
    task2 = EmptyOperator(task_id="task2")
    task3 = EmptyOperator(task_id="task3")
    task4 = EmptyOperator(task_id="task4", trigger_rule=TriggerRule.ALL_DONE)
    latest_only >> task1 >> [task3, task4]
    task2 >> [task3, task4]
"""


def test_latest_only_skips_older_scheduled_intervals_but_not_manual_runs(
    store, loop_config, add_dag
):
    today = pendulum.today("UTC")
    add_dag("latest", LATEST_ONLY_DAG)
    drain(store, loop_config)  # catch-up creates the three daily runs up to today
    with store.session() as session:
        scheduled = {
            run.data_interval_end: run.run_id
            for run in session.execute(select(DagRun).where(DagRun.dag_id == "latest")).scalars()
        }
    assert sorted(scheduled) == [today.subtract(days=n) for n in (2, 1, 0)]
    skipped_older = {
        "latest_only": "success",
        "task1": "skipped",
        "task2": "success",
        "task3": "skipped",  # all_success: the skip of task1 carries on
        "task4": "success",  # all_done runs anyway
    }
    everything = dict.fromkeys(skipped_older, "success")
    for end, run_id in scheduled.items():
        expected = everything if end == today else skipped_older
        assert states(store, "latest", run_id) == expected, end
        assert run_state(store, "latest", run_id) == "success"
        followed = [] if end != today else ["task1"]
        assert xcom(store, "latest", run_id, "latest_only") == followed

    manual = trigger(store, "latest", when=today.subtract(days=10))
    drain(store, loop_config)
    assert states(store, "latest", manual) == everything


def test_user_defined_macros_and_filters_through_the_loop(store, loop_config, add_dag):
    folder = loop_config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "greet.sh").write_text("echo hello {{ env_name | shout }} {{ ds }}\n")
    add_dag(
        "macros",
        """
        def shout(value, mark="!"):
            return value.upper() + mark

        @task
        def show(label, value):
            return f"{label}:{value!r}"

        with DAG("macros", schedule=None,
                 user_defined_macros={"env_name": "prod", "double": lambda x: x * 2},
                 user_defined_filters={"shout": shout}):
            BashOperator(task_id="inline",
                         bash_command="echo {{ env_name | shout('?') }}-{{ double(21) }}")
            BashOperator(task_id="from_file", bash_command="greet.sh")
            show.override(task_id="python")("{{ env_name | shout }}", "{{ double(2) }}")
            BashOperator(task_id="undefined", bash_command="echo {{ env_name }} {{ target }}")

        with DAG("macros_native", schedule=None, render_template_as_native_obj=True,
                 user_defined_macros={"double": lambda x: x * 2}):
            show.override(task_id="python")("native", "{{ double([1, 2]) }}")
        """,
    )
    run_id = trigger(store, "macros", when=datetime(2026, 3, 1, tzinfo=UTC))
    native_run = trigger(store, "macros_native")
    drain(store, loop_config)
    assert states(store, "macros", run_id) == {
        "inline": "success",
        "from_file": "success",
        "python": "success",
        "undefined": "failed",
    }
    assert xcom(store, "macros", run_id, "inline") == "PROD?-42"
    assert xcom(store, "macros", run_id, "from_file") == "hello PROD! 2026-03-01"
    assert xcom(store, "macros", run_id, "python") == "PROD!:'4'"
    (failed,) = tries(store, "macros", "undefined")
    assert failed.error == (
        "task 'undefined': could not render field 'bash_command': "
        "UndefinedError: 'target' is undefined"
    )
    assert states(store, "macros_native", native_run) == {"python": "success"}
    assert xcom(store, "macros_native", native_run, "python") == "native:[1, 2, 1, 2]"
