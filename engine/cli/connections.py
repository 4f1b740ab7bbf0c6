"""`dagwatch connections ...`: add, get, list and delete connections."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click
from sqlalchemy import String

from engine.cli import CliContext, pass_cli
from engine.cli.output import echo_object, echo_rows, output_option
from engine.cli.usage import JSON_OBJECT, NAME, PORT, BoundedText, Group, too_long, usage_error
from engine.exceptions import NotFound
from engine.sdk.connections import Connection
from engine.store import models
from engine.store.audit import record_audit
from engine.store.connections import (
    add_connection,
    delete_connection,
    list_connections,
)

COLUMNS = (
    "conn_id",
    "conn_type",
    "host",
    "schema",
    "login",
    "password",
    "port",
    "extra",
    "description",
)


class ConnectionUri(click.ParamType):
    """An Airflow-style connection URI, checked when the command line is parsed."""

    name = "uri"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        try:
            Connection.from_uri("check", value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


def _column_length(field: str) -> int:
    column_type = models.Connection.__table__.c[field].type
    assert isinstance(column_type, String)  # the fields checked are VARCHAR columns
    return int(column_type.length or 0)


def _refuse_what_does_not_fit(connection: Connection, from_uri: bool) -> None:
    """A field parsed from --conn-uri must fit its column as the --conn-* options must."""
    for field in ("conn_type", "host", "schema", "login"):
        value = getattr(connection, field)
        if value is not None and len(value) > _column_length(field):
            where = f"the {field} of --conn-uri" if from_uri else f"--{field.replace('_', '-')}"
            raise usage_error(f"{where}: {too_long(value, _column_length(field))}")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)


@click.group(cls=Group)
def connections() -> None:
    """Where and how DAGs reach external systems (secrets encrypted in the metastore)."""


@connections.command()
@click.argument("conn_id", type=NAME)
@output_option
@pass_cli
def get(cli: CliContext, conn_id: str, output: str) -> None:
    """Show the connection CONN_ID from the secrets backends or the metastore (password and
    sensitive extra masked)."""
    from engine.execution.task_api import MetastoreTaskAPI

    connection = MetastoreTaskAPI(cli.store, cli.config).get_connection(conn_id)
    if connection is None:
        raise NotFound(f"connection {conn_id!r} does not exist")
    fields = connection.to_dict(masked=True)
    text = "\n".join(f"{name}: {_text(value)}" for name, value in fields.items())
    echo_object(fields, output, text)


@connections.command()
@click.argument("conn_id", type=NAME)
@click.option("--conn-uri", type=ConnectionUri(), help="The whole connection as a URI.")
@click.option(
    "--conn-type",
    type=BoundedText(_column_length("conn_type")),
    help="Connection type, e.g. postgres, http.",
)
@click.option("--conn-host", type=BoundedText(_column_length("host"), empty=True))
@click.option("--conn-login", type=BoundedText(_column_length("login"), empty=True))
@click.option("--conn-password")
@click.option("--conn-port", type=PORT)
@click.option("--conn-schema", type=BoundedText(_column_length("schema"), empty=True))
@click.option("--conn-extra", type=JSON_OBJECT, help="Extra options as a JSON object.")
@click.option("--conn-description")
@pass_cli
def add(
    cli: CliContext,
    conn_id: str,
    conn_uri: str | None,
    conn_type: str | None,
    conn_host: str | None,
    conn_login: str | None,
    conn_password: str | None,
    conn_port: int | None,
    conn_schema: str | None,
    conn_extra: dict[str, Any] | None,
    conn_description: str | None,
) -> None:
    """Add the connection CONN_ID, from --conn-uri or from --conn-type and the other fields."""
    fields = (conn_type, conn_host, conn_login, conn_password, conn_port, conn_schema)
    if conn_uri is not None:
        if any(value is not None for value in fields):
            raise usage_error("give --conn-uri or --conn-type and fields, not both")
        connection = Connection.from_uri(conn_id, conn_uri, description=conn_description)
        if conn_extra is not None:
            connection.extra.update(conn_extra)
    elif conn_type is None:
        raise usage_error("give --conn-uri, or --conn-type and the other --conn-* fields")
    else:
        connection = Connection(
            conn_id,
            conn_type=conn_type,
            description=conn_description,
            host=conn_host,
            login=conn_login,
            password=conn_password,
            schema=conn_schema,
            port=conn_port,
            extra=conn_extra,
        )
    _refuse_what_does_not_fit(connection, from_uri=conn_uri is not None)
    with cli.store.session() as session:
        add_connection(session, connection, config=cli.config)
        record_audit(
            session,
            actor=cli.actor,
            event="connections.add",
            extra={"conn_id": conn_id, "conn_type": connection.conn_type},
        )
    click.echo(f"connection {conn_id!r} added")


@connections.command("list")
@output_option
@pass_cli
def list_(cli: CliContext, output: str) -> None:
    """List connections (passwords and sensitive extra values masked)."""
    with cli.store.session(readonly=True) as session:
        records = list_connections(session, config=cli.config)
    rows = [Connection(**asdict(record)).to_dict(masked=True) for record in records]
    echo_rows(rows, COLUMNS, output)


@connections.command()
@click.argument("conn_id", type=NAME)
@pass_cli
def delete(cli: CliContext, conn_id: str) -> None:
    """Delete the connection CONN_ID."""
    with cli.store.session() as session:
        if not delete_connection(session, conn_id):
            raise NotFound(f"connection {conn_id!r} does not exist")
        record_audit(
            session, actor=cli.actor, event="connections.delete", extra={"conn_id": conn_id}
        )
    click.echo(f"connection {conn_id!r} deleted")
