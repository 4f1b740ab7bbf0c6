"""Built-in operators; BashOperator runs real subprocesses."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from engine import (
    DAG,
    BashOperator,
    BranchPythonOperator,
    EmptyOperator,
    PythonOperator,
    ShortCircuitOperator,
    TaskGroup,
)
from engine.exceptions import DagDefinitionError, SkipTask, TaskError, TaskTimeout
from engine.sdk.templating import make_jinja_env


class FakeTI:
    def __init__(self) -> None:
        self.skipped: list[str] = []

    def xcom_pull(self, task_ids=None, key="return_value", default=None):
        return default

    def skip_downstream(self, task_ids):
        self.skipped.extend(task_ids)


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (reparented zombies may linger)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


# -- Python operators --------------------------------------------------------------------


def test_python_operator_passes_args_kwargs_and_requested_context():
    calls = {}

    def work(a, b, *, scale=1, ds=None, templates_dict=None):
        calls.update(ds=ds, templates_dict=templates_dict)
        return (a + b) * scale

    op = PythonOperator(
        task_id="py",
        python_callable=work,
        op_args=[1, 2],
        op_kwargs={"scale": 10},
        templates_dict={"day": "{{ ds }}"},
    )
    context = {"ds": "2026-01-01", "ti": FakeTI(), "unused": object()}
    op.render_template_fields(context, make_jinja_env(None))
    assert op.execute(context) == 30
    assert calls == {"ds": "2026-01-01", "templates_dict": {"day": "2026-01-01"}}


def test_python_operator_with_kwargs_gets_the_whole_context():
    op = PythonOperator(task_id="py", python_callable=lambda **kw: sorted(kw))
    assert op.execute({"ds": "x", "ti": None}) == ["ds", "templates_dict", "ti"]


def test_python_operator_with_a_builtin_without_signature():
    op = PythonOperator(task_id="builtin", python_callable=max, op_args=[3, 9, 4])
    assert op.execute({"ds": "2026-01-01"}) == 9


def test_python_operator_requires_a_callable():
    with pytest.raises(DagDefinitionError, match="task 'py': python_callable must be callable"):
        PythonOperator(task_id="py", python_callable="not callable")


def test_empty_operator_returns_nothing():
    assert EmptyOperator(task_id="e").execute({}) is None


def _branch_dag(result):
    with DAG("branch") as d:
        branch = BranchPythonOperator(task_id="branch", python_callable=lambda: result)
        a, b, c = (EmptyOperator(task_id=t) for t in "abc")
        with TaskGroup("grp"):
            g1 = EmptyOperator(task_id="g1")
            g2 = EmptyOperator(task_id="g2")
            g1 >> g2
        branch >> [a, b, c]
        branch >> g1
        a >> b  # b is also reachable through a
    return d, branch


@pytest.mark.parametrize(
    ("result", "skipped"),
    [
        ("a", ["c", "grp.g1"]),  # b is downstream of a: not skipped
        ("c", ["a", "b", "grp.g1"]),
        (["b", "c"], ["a", "grp.g1"]),
        ("grp", ["a", "b", "c"]),
        ("grp.g2", ["a", "b", "c", "grp.g1"]),  # not a direct downstream: all direct skip
        (None, ["a", "b", "c", "grp.g1"]),
    ],
)
def test_branch_python_operator_skip_sets(result, skipped):
    _, branch = _branch_dag(result)
    ti = FakeTI()
    assert branch.execute({"ti": ti}) == result
    assert ti.skipped == skipped


@pytest.mark.parametrize(("result", "message"), [("zzz", "'zzz'"), (5, "must return a task id")])
def test_branch_python_operator_invalid_results(result, message):
    _, branch = _branch_dag(result)
    with pytest.raises(TaskError, match=message):
        branch.execute({"ti": FakeTI()})


def _short_circuit_dag(condition, ignore):
    with DAG("sc"):
        check = ShortCircuitOperator(
            task_id="check",
            python_callable=lambda: condition,
            ignore_downstream_trigger_rules=ignore,
        )
        a, b, c = (EmptyOperator(task_id=t) for t in "abc")
        check >> a >> b
        check >> c
    return check


@pytest.mark.parametrize(
    ("condition", "ignore", "skipped"),
    [
        (False, True, ["a", "b", "c"]),
        (0, False, ["a", "c"]),
        ([], True, ["a", "b", "c"]),
        (True, True, []),
        ("yes", False, []),
    ],
)
def test_short_circuit_operator(condition, ignore, skipped):
    check = _short_circuit_dag(condition, ignore)
    ti = FakeTI()
    assert check.execute({"ti": ti}) == condition
    assert ti.skipped == skipped


# -- BashOperator ------------------------------------------------------------------------


def test_bash_returns_last_line_and_logs_each_line(caplog):
    op = BashOperator(task_id="echo", bash_command="echo first; echo second")
    with caplog.at_level(logging.INFO, logger="engine.task"):
        assert op.execute({}) == "second"
    messages = [r.getMessage() for r in caplog.records if r.name == "engine.task"]
    assert "first" in messages and "second" in messages
    assert op.subprocess_pid is not None


def test_bash_non_zero_exit_fails():
    op = BashOperator(task_id="fail", bash_command="echo oops; exit 3")
    with pytest.raises(
        TaskError, match=r"^Bash command failed\. The command returned a non-zero exit code 3\.$"
    ):
        op.execute({})


def test_bash_skip_exit_code():
    with pytest.raises(SkipTask, match="exit code 99"):
        BashOperator(task_id="skip", bash_command="exit 99").execute({})
    custom = BashOperator(task_id="skip2", bash_command="exit 7", skip_on_exit_code=[7, 8])
    with pytest.raises(SkipTask):
        custom.execute({})
    never = BashOperator(task_id="skip3", bash_command="exit 99", skip_on_exit_code=None)
    with pytest.raises(TaskError, match="exit code 99"):
        never.execute({})


def test_bash_templated_env_replaces_the_environment():
    with DAG("env") as d:
        op = BashOperator(
            task_id="env",
            bash_command='echo "$GREETING ${HOME:-nohome} $DAGWATCH_CTX_RUN_ID"',
            env={"GREETING": "hello {{ params.who }}"},
        )
    context = {"params": {"who": "ann"}, "run_id": "manual__1", "ti": FakeTI()}
    run_copy = op.prepare_for_execution()
    run_copy.render_template_fields(context, make_jinja_env(d))
    assert run_copy.env == {"GREETING": "hello ann"}
    assert op.env == {"GREETING": "hello {{ params.who }}"}
    assert run_copy.execute(context) == "hello ann nohome manual__1"


def test_bash_append_env_keeps_the_parent_environment(monkeypatch):
    monkeypatch.setenv("FROM_PARENT", "parent")
    op = BashOperator(
        task_id="append",
        bash_command='echo "$FROM_PARENT $MINE"',
        env={"MINE": "x"},
        append_env=True,
    )
    assert op.execute({}) == "parent x"


def test_bash_cwd(tmp_path):
    assert BashOperator(task_id="cwd", bash_command="pwd", cwd=str(tmp_path)).execute({}) == str(
        tmp_path
    )
    scratch = BashOperator(task_id="tmp", bash_command="pwd").execute({})
    assert "dagwatch-bash-" in scratch and not os.path.exists(scratch)
    with pytest.raises(TaskError, match="is not a directory"):
        BashOperator(task_id="bad", bash_command="pwd", cwd=str(tmp_path / "nope")).execute({})


def test_bash_env_values_must_be_strings():
    op = BashOperator(task_id="env", bash_command="true", env={"N": 1})
    with pytest.raises(TaskError, match="env\\['N'\\] must be a string"):
        op.execute({})


def test_bash_interrupted_kills_the_whole_process_group(caplog):
    """A timeout signal raised while waiting must not leave the command (or its children)."""
    op = BashOperator(task_id="slow", bash_command="sleep 30 & echo $!; sleep 30")
    op.kill_grace_period = 2.0

    def expire(signum, frame):
        raise TaskTimeout("timed out")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    started = time.monotonic()
    try:
        with caplog.at_level(logging.INFO, logger="engine.task"), pytest.raises(TaskTimeout):
            op.execute({})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 10
    background = int(next(r.getMessage() for r in caplog.records if r.getMessage().isdigit()))
    assert _wait_gone(background), "the background child survived"
    assert _wait_gone(op.subprocess_pid)


def test_bash_on_kill_stops_a_running_command():
    op = BashOperator(task_id="killed", bash_command="sleep 30")
    errors: list[BaseException] = []

    def run():
        try:
            op.execute({})
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 5
    while op._process is None and time.monotonic() < deadline:
        time.sleep(0.01)
    op.on_kill()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], TaskError)
    assert "exit code -15" in str(errors[0])
    op.on_kill()  # a second call is harmless
