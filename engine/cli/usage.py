"""Usage errors as one line on stderr (exit 2), instead of click's usage-plus-hint block.

Groups built with `Group` (and their subcommands) report every bad argument, missing
argument or unknown option as `error: <command path>: <what is wrong>`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import IO, Any

import click
import pendulum
from click.exceptions import NoArgsIsHelpError

_NEGATIVE_NUMBER = re.compile(r"^-\d")


class OneLineUsageError(click.UsageError):
    """A usage error that prints as a single line, whatever context click attaches."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _one_line(ctx: click.Context, exc: click.UsageError) -> OneLineUsageError:
    message = exc.format_message()
    if isinstance(exc, click.NoSuchOption) and _NEGATIVE_NUMBER.match(exc.option_name):
        message = f"{exc.option_name} is not allowed here: the value must not be negative"
    return OneLineUsageError(f"{ctx.command_path}: {message}", ctx)


class Command(click.Command):
    """A click command whose usage errors are one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except OneLineUsageError:
            raise
        except NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise _one_line(ctx, exc) from None


class Group(click.Group):
    """A click group whose (and whose subcommands') usage errors are one line."""

    command_class = Command
    group_class = type

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except (OneLineUsageError, NoArgsIsHelpError):
            raise
        except click.UsageError as exc:
            raise _one_line(ctx, exc) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _one_line(ctx, exc) from None


def usage_error(message: str) -> OneLineUsageError:
    """For checks inside a command body that click's parameter types cannot express."""
    ctx = click.get_current_context(silent=True)
    prefix = f"{ctx.command_path}: " if ctx is not None else ""
    return OneLineUsageError(f"{prefix}{message}", ctx)


class NonNegativeInt(click.ParamType):
    """An integer >= 0 (slots, ports), with plain-spoken errors."""

    name = "integer"

    def __init__(self, maximum: int | None = None) -> None:
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, bool):
            self.fail(f"{value!r} is not an integer", param, ctx)
        try:
            number = value if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not an integer", param, ctx)
        if number < 0:
            self.fail(f"{number} is negative; it must be 0 or more", param, ctx)
        if self.maximum is not None and number > self.maximum:
            self.fail(f"{number} is too large; at most {self.maximum}", param, ctx)
        return number


NON_NEGATIVE_INT = NonNegativeInt()
PORT = NonNegativeInt(maximum=65535)


class DateTimeParam(click.ParamType):
    """An ISO 8601 date or datetime; naive values are UTC."""

    name = "datetime"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = pendulum.parse(value, tz="UTC")
        except (ValueError, pendulum.parsing.exceptions.ParserError):
            self.fail(f"{value!r} is not an ISO 8601 date or datetime", param, ctx)
        if not isinstance(parsed, datetime):
            self.fail(f"{value!r} is not a date or datetime", param, ctx)
        return parsed.in_timezone("UTC")


class JsonObjectParam(click.ParamType):
    """A JSON object given on the command line."""

    name = "json"

    def convert(self, value: Any, param: Any, ctx: Any) -> dict:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"not valid JSON: {exc}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail("must be a JSON object, like '{\"key\": 1}'", param, ctx)
        return parsed


DATETIME = DateTimeParam()
JSON_OBJECT = JsonObjectParam()
