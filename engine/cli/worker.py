"""`dagwatch worker`: a Celery worker running the attempts the celery executor sends."""

from __future__ import annotations

import logging
import re

import click

from engine.cli import CliContext, pass_cli
from engine.cli.usage import BoundedInt, usage_error
from engine.exceptions import DagwatchError

#: what a queue name may hold (Redis keys and AMQP queue names both take these)
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
#: a node name: name@host, as Celery writes them
NODE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,120}(@[A-Za-z0-9_.:-]{1,120})?$")


def parse_queues(raw: str | None, default: str) -> list[str]:
    """The comma-separated queue names, checked; the default queue when none is given."""
    if raw is None:
        return [default]
    queues = [name.strip() for name in raw.split(",")]
    bad = [name for name in queues if not QUEUE_NAME.match(name)]
    if bad or not queues:
        raise usage_error(
            f"--queues {raw!r}: each comma-separated name must be 1-200 letters, digits or _ . : -"
        )
    return list(dict.fromkeys(queues))


@click.command("worker")
@click.option(
    "--queues",
    "-q",
    default=None,
    help="Comma-separated Celery queues to take attempts from (a task's queue=); "
    "default: celery.default_queue.",
)
@click.option(
    "--concurrency",
    "-c",
    type=BoundedInt(1, 1024),
    default=None,
    help="Attempts run at once; default: celery.worker_concurrency.",
)
@click.option("--name", default=None, help="Node name; default dagwatch-<pid>@<host>.")
@pass_cli
def worker(cli: CliContext, queues: str | None, concurrency: int | None, name: str | None) -> None:
    """Run a Celery worker: take attempts from the broker and run them (core.executor =
    celery). Stop it with SIGTERM: running attempts finish first."""
    config = cli.config
    chosen = parse_queues(queues, config["celery.default_queue"])
    if name is not None and not NODE_NAME.match(name):
        raise usage_error(f"--name {name!r}: letters, digits, _ . : - and one @")
    cli.dags_folder()
    from engine.execution.celery.worker import run_worker

    logging.getLogger().setLevel(config["logging.level"])
    concurrency = concurrency or config["celery.worker_concurrency"]
    click.echo(
        f"worker starting: queues {', '.join(chosen)}, concurrency {concurrency}, "
        f"metastore {cli.store.display_url}"
    )
    code = run_worker(config, cli.store, queues=chosen, concurrency=concurrency, name=name)
    if code:
        raise DagwatchError(f"the worker exited with code {code}")
