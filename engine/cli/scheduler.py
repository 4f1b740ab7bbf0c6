"""`dagwatch scheduler`, `dagwatch dag-processor` and `dagwatch standalone`."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from engine.cli import CliContext, pass_cli
from engine.cli.usage import SECONDS
from engine.exceptions import DagwatchError

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.db import Store

log = logging.getLogger(__name__)


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and Ctrl-C stop the loop gracefully; a second Ctrl-C is not needed."""

    def handler(signum: int, frame: Any) -> None:
        log.warning("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_scheduler(
    cli: CliContext, *, config: Config, drain: bool, parse: bool, grace: float
) -> None:
    """Take the single-scheduler lock, start the processor thread, run the loop.

    If one of the process's own threads dies, the loop stops and this raises with the
    reason (exit code 1): a supervisor that restarts on failure then restarts it.
    """
    from engine.supervision import ThreadWatch

    logging.getLogger().setLevel(config["logging.level"])
    stop = threading.Event()
    _stop_on_signals(stop)
    with ThreadWatch(stop) as watch:
        _run_watched(cli, config=config, drain=drain, parse=parse, grace=grace, stop=stop)
    if watch.failure:
        raise DagwatchError(f"{watch.failure}; the scheduler stopped")


def _run_watched(
    cli: CliContext,
    *,
    config: Config,
    drain: bool,
    parse: bool,
    grace: float,
    stop: threading.Event,
) -> None:
    from engine.execution import get_executor
    from engine.observability.service import Telemetry
    from engine.parsing.dag_processor import start_dag_processor_thread
    from engine.scheduling.locks import scheduler_lock
    from engine.scheduling.scheduler import Scheduler

    store = cli.store
    with scheduler_lock(store):
        telemetry = Telemetry(config, store, serve=True)
        try:
            if parse:
                start_dag_processor_thread(store, config, stop)
            executor = get_executor(config["core.executor"], config, store)
            scheduler = Scheduler(store, config, executor)
            telemetry.watch_scheduler(scheduler)
            click.echo(
                f"scheduler started: executor {executor.name}, parallelism "
                f"{executor.parallelism}, metastore {store.display_url}"
            )
            if telemetry.url:
                click.echo(f"metrics: {telemetry.url}/metrics, health: {telemetry.url}/health")
            scheduler.run(stop=stop, drain=drain, grace=grace)
        finally:
            telemetry.close()
        click.echo("scheduler stopped")


_GRACE = click.option(
    "--grace",
    type=SECONDS,
    default=30.0,
    show_default=True,
    help="Seconds running attempts get to finish on shutdown before they are stopped.",
)


@click.command("scheduler")
@click.option("--drain", is_flag=True, help="Exit once no DAG run is queued or running.")
@click.option(
    "--no-parse",
    is_flag=True,
    help="Do not parse DAG files here (run `dagwatch dag-processor` separately).",
)
@_GRACE
@pass_cli
def scheduler(cli: CliContext, drain: bool, no_parse: bool, grace: float) -> None:
    """Run the scheduler: create runs, queue task instances, watch attempts."""
    if not no_parse:
        cli.dags_folder()  # a configured folder that is missing is refused before the lock
    run_scheduler(cli, config=cli.config, drain=drain, parse=not no_parse, grace=grace)


@click.command("dag-processor")
@pass_cli
def dag_processor(cli: CliContext) -> None:
    """Parse the DAG folders every scheduler.min_file_process_interval seconds."""
    from engine.observability.service import Telemetry
    from engine.parsing.dag_processor import run_dag_processor
    from engine.supervision import ThreadWatch, describe_death

    cli.dags_folder()
    stop = threading.Event()
    _stop_on_signals(stop)
    with ThreadWatch(stop) as watch:
        telemetry = Telemetry(cli.config, cli.store, serve=False)
        try:
            run_dag_processor(cli.store, cli.config, stop)
        except Exception as exc:  # a bug: one line to stderr, the traceback at DEBUG
            log.debug("the DAG processor died", exc_info=exc)
            raise DagwatchError(f"{describe_death('dag-processor', exc)}; stopped") from exc
        finally:
            telemetry.close()
    if watch.failure:
        raise DagwatchError(f"{watch.failure}; the DAG processor stopped")


@click.command("standalone")
@_GRACE
@click.option(
    "--console/--no-console",
    "with_console",
    default=True,
    show_default=True,
    help="Also serve the console (when the console plugin is installed).",
)
@pass_cli
def standalone(cli: CliContext, grace: float, with_console: bool) -> None:
    """Everything on one machine: migrate SQLite, load the examples, run the scheduler
    and the console.

    New DAGs start unpaused here, so the example DAGs run at once. Stop with Ctrl-C.
    """
    from engine.parsing.parser import process_folders
    from engine.store.migrate import migrate

    cli.dags_folder()
    config = cli.config.with_overrides(core__dags_are_paused_at_creation=False)
    migrate(cli.store, default_pool_slots=config["core.default_pool_slots"])
    if config["core.load_examples"]:
        _ensure_example_pool(cli.store)
    report = process_folders(cli.store, config)
    totals = report.totals  # what is on record, whether parsed now or earlier
    click.echo(
        f"loaded {totals.dags} DAGs from {totals.files} files "
        f"({totals.import_errors} import errors)"
    )
    console = _start_console(config) if with_console else None
    try:
        run_scheduler(cli, config=config, drain=False, parse=True, grace=grace)
    finally:
        if console is not None:
            _stop_process(console)


def _start_console(config: Config) -> subprocess.Popen[bytes] | None:
    """`dagwatch console` as a child process, when a plugin provides that verb."""
    from engine import hooks

    if not any(getattr(command, "name", None) == "console" for command in hooks.cli_commands()):
        return None
    # the console prints its own URL as it starts (`console: http://...`)
    return subprocess.Popen([sys.executable, "-m", "engine", "console"])


def _stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ensure_example_pool(store: Store) -> None:
    """example_pool_limited needs its pool; create it once, never overwrite a user's."""
    from engine.store import pools

    with store.session() as session:
        if all(pool.name != "example_pool" for pool in pools.list_pools(session)):
            pools.set_pool(session, "example_pool", 2, "Used by the example_pool_limited DAG")
