"""Usage errors as one line on stderr (exit 2), instead of click's usage-plus-hint block.

Groups built with `Group` (and their subcommands) report every bad argument, missing
argument or unknown option as `error: <command path>: <what is wrong>`. The parameter
types here check values at the door: numbers within what the metastore holds, finite
seconds, non-empty ids, dates, JSON objects; each error names the value and what is
allowed.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import IO, Any

import click
from click.exceptions import NoArgsIsHelpError

from engine.config import INT_MAX, SECONDS_MAX, format_number

_NEGATIVE_NUMBER = re.compile(r"^-\d")


class OneLineUsageError(click.UsageError):
    """A usage error that prints as a single line, whatever context click attaches."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def one_line(ctx: click.Context, exc: click.UsageError) -> click.UsageError:
    """`exc` as a one-line usage error (a request for help stays what it is)."""
    if isinstance(exc, OneLineUsageError | NoArgsIsHelpError):
        return exc
    message = exc.format_message()
    if isinstance(exc, click.NoSuchOption) and _NEGATIVE_NUMBER.match(exc.option_name):
        message = _negative_number(ctx, exc.option_name)
    return OneLineUsageError(f"{ctx.command_path}: {message}", ctx)


def _negative_number(ctx: click.Context, given: str) -> str:
    """What to say when a negative number was given where an argument was expected (click
    takes it for an option): name the argument and its range when there is one to name."""
    numbers = [
        (param, param.type)
        for param in ctx.command.params
        if isinstance(param, click.Argument) and isinstance(param.type, BoundedInt)
    ]
    if len(numbers) == 1:
        ((param, bounded),) = numbers
        allowed = bounded.allowed()
        return f"Invalid value for {param.human_readable_name!r}: {given} is not {allowed}"
    return f"{given} is not allowed here: the value must not be negative"


class Command(click.Command):
    """A click command whose usage errors are one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise one_line(ctx, exc) from None


class Group(click.Group):
    """A click group whose (and whose subcommands') usage errors are one line."""

    command_class = Command
    group_class = type

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise one_line(ctx, exc) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise one_line(ctx, exc) from None


def usage_error(message: str) -> OneLineUsageError:
    """For checks inside a command body that click's parameter types cannot express."""
    ctx = click.get_current_context(silent=True)
    prefix = f"{ctx.command_path}: " if ctx is not None else ""
    return OneLineUsageError(f"{prefix}{message}", ctx)


class BoundedInt(click.ParamType):
    """A whole number within [minimum, maximum]; the maximum defaults to what an INTEGER
    column of the metastore holds, so a huge number is refused here, not by the database."""

    name = "integer"

    def __init__(self, minimum: int = 0, maximum: int = INT_MAX) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def allowed(self) -> str:
        return f"an integer from {self.minimum} to {self.maximum}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not {self.allowed()}", param, ctx)
        if not self.minimum <= number <= self.maximum:
            self.fail(f"{number} is not {self.allowed()}", param, ctx)
        return number


class BoundedSeconds(click.ParamType):
    """A finite number of seconds within [minimum, maximum] ("inf" and "nan" are not)."""

    name = "seconds"

    def __init__(self, minimum: float = 0.0, maximum: float = SECONDS_MAX) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        span = f"{format_number(self.minimum)} to {format_number(self.maximum)}"
        allowed = f"a number of seconds from {span}"
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not {allowed}", param, ctx)
        if not (math.isfinite(number) and self.minimum <= number <= self.maximum):
            self.fail(f"{value!r} is not {allowed}", param, ctx)
        return number


class BoundedText(click.ParamType):
    """Text no longer than its metastore column (an id by default); empty only if allowed."""

    name = "text"

    def __init__(self, max_length: int | None = None, *, empty: bool = False) -> None:
        self._max_length = max_length
        self.empty = empty

    @property
    def max_length(self) -> int:
        """The given length, else an id column's (the store is imported only when needed)."""
        if self._max_length is None:
            from engine.store.models import ID_LEN

            return ID_LEN
        return self._max_length

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value)
        if not self.empty and not text.strip():
            self.fail(f"{value!r} is not allowed: it must not be empty", param, ctx)
        if len(text) > self.max_length:
            self.fail(too_long(text, self.max_length), param, ctx)
        return text


def too_long(text: str, max_length: int) -> str:
    """What to say of a text longer than its column, without echoing all of it."""
    return f"{text[:20]!r}... ({len(text)} characters) is too long: at most {max_length} characters"


NON_NEGATIVE_INT = BoundedInt()
POSITIVE_INT = BoundedInt(minimum=1)
PORT = BoundedInt(maximum=65535)
SECONDS = BoundedSeconds()
NAME = BoundedText()


#: Dates the schedule arithmetic can step past in both directions (a run's interval,
#: the next run after it) without leaving the years Python's datetime holds.
YEARS = (1000, 9998)


def check_year(kind: click.ParamType, parsed: datetime, param: Any, ctx: Any) -> None:
    """Refuse a date outside `YEARS`, before any timezone or schedule arithmetic on it."""
    if not YEARS[0] <= parsed.year <= YEARS[1]:
        kind.fail(
            f"{parsed.isoformat()!r} is out of range: dates from {YEARS[0]}-01-01 to "
            f"{YEARS[1]}-12-31",
            param,
            ctx,
        )


class DateTimeParam(click.ParamType):
    """An ISO 8601 date or datetime; naive values are UTC."""

    name = "datetime"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        import pendulum  # only when a verb parses a date

        try:
            parsed = pendulum.parse(value, tz="UTC")
        except (ValueError, pendulum.parsing.exceptions.ParserError):
            self.fail(f"{value!r} is not an ISO 8601 date or datetime", param, ctx)
        if not isinstance(parsed, datetime):
            self.fail(f"{value!r} is not a date or datetime", param, ctx)
        check_year(self, parsed, param, ctx)
        return parsed.in_timezone("UTC")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large for a JSON number")
    return number


def parse_json(text: str) -> Any:
    """Strict JSON: NaN, Infinity and numbers that overflow to them are refused (the
    metastore's JSON columns and other readers reject them); raises ValueError."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None


class JsonObjectParam(click.ParamType):
    """A JSON object given on the command line."""

    name = "json"

    def convert(self, value: Any, param: Any, ctx: Any) -> dict:
        if isinstance(value, dict):
            return value
        try:
            parsed = parse_json(value)
        except ValueError as exc:
            self.fail(f"not valid JSON: {exc}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail("must be a JSON object, like '{\"key\": 1}'", param, ctx)
        return parsed


DATETIME = DateTimeParam()
JSON_OBJECT = JsonObjectParam()
