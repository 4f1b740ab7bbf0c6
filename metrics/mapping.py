"""The statsd_exporter mapping, generated from the catalog: `python -m metrics.mapping`.

StatsD users who run Prometheus's statsd_exporter get the same metric names and labels
as dagwatch's native `/metrics`, so one set of dashboards and alert rules serves both:
- plain mode: each legacy name template (`dagwatch.ti.finish.*.*.*`) maps its
  variables back to labels (a glob with `*` per variable, or a regex when a variable
  is only part of a segment, as in `operator_failures_{operator}`);
- dogstatsd/influxdb modes: the canonical name maps to the same Prometheus name, and
  statsd_exporter turns the tags into the labels.
A legacy name without a variable for a label (`ti_failures`, Airflow's plain name)
cannot carry that label: in plain mode those series have fewer labels.
Timers arrive in milliseconds; statsd_exporter converts them to seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from metrics.catalog import CATALOG, TIMER_BUCKETS, Catalog, Metric, template_fields

DEFAULT_PREFIX = "dagwatch"
DEFAULT_PATH = (
    Path(__file__).resolve().parents[1] / "dashboards" / "statsd_exporter" / "mapping.yml"
)
_MATCH_METRIC_TYPE = {"counter": "counter", "gauge": "gauge", "timer": "observer"}
_FIELD = re.compile(r"\{(\w+)\}")


def _legacy_entry(metric: Metric, prefix: str) -> dict[str, Any]:
    template = f"{prefix}{metric.statsd_template}"
    fields = template_fields(template)
    segments = template.split(".")
    if all("{" not in s or _FIELD.fullmatch(s) for s in segments):
        match, match_type = _FIELD.sub("*", template), "glob"
    else:
        parts = _FIELD.split(template)  # literal, field, literal, field, ..., literal
        pattern = "".join(re.escape(p) if i % 2 == 0 else "([^.]+)" for i, p in enumerate(parts))
        match, match_type = f"^{pattern}$", "regex"
    entry = _entry(metric, match, match_type)
    entry["labels"] = {field: f"${i}" for i, field in enumerate(fields, start=1)}
    return entry


def _entry(metric: Metric, match: str, match_type: str = "glob") -> dict[str, Any]:
    entry: dict[str, Any] = {"match": match}
    if match_type != "glob":
        entry["match_type"] = match_type
    entry["match_metric_type"] = _MATCH_METRIC_TYPE[metric.type]
    entry["name"] = metric.prometheus_name
    entry["help"] = metric.help
    return entry


def mapping_entries(
    catalog: Catalog = CATALOG, prefix: str = DEFAULT_PREFIX
) -> list[dict[str, Any]]:
    """Every mapping in the order statsd_exporter should try them: exact names, then globs
    with the fewest wildcards first, then regexes (which it tries after all globs)."""
    dotted = f"{prefix.strip('.')}." if prefix.strip(".") else ""
    entries: list[dict[str, Any]] = []
    for metric in catalog:
        entries.append(_entry(metric, f"{dotted}{metric.name}"))
        if metric.statsd_template != metric.name:
            entries.append(_legacy_entry(metric, dotted))

    def order(entry: dict[str, Any]) -> tuple[int, int, str]:
        regex = entry.get("match_type") == "regex"
        return (regex, entry["match"].count("*"), entry["match"])

    return sorted(entries, key=order)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def render(catalog: Catalog = CATALOG, prefix: str = DEFAULT_PREFIX) -> str:
    """The mapping file's text (YAML; strings written as JSON, which YAML reads as is)."""
    buckets = ", ".join(_number(b) for b in TIMER_BUCKETS)
    lines = [
        "# Generated from metrics/catalog.py by `python -m metrics.mapping`: do not edit.",
        f"# statsd_exporter mapping for dagwatch's StatsD metrics (prefix {prefix!r}): the",
        "# same Prometheus names and labels as dagwatch's native /metrics endpoint.",
        "defaults:",
        "  observer_type: histogram",
        "  histogram_options:",
        f"    buckets: [{buckets}]",
        "  match_type: glob",
        "  glob_disable_ordering: false",
        "  ttl: 0",
        "mappings:",
    ]
    for entry in mapping_entries(catalog, prefix):
        first = True
        for key, value in entry.items():
            lead = "  - " if first else "    "
            first = False
            if isinstance(value, dict):
                lines.append(f"{lead}{key}:")
                lines.extend(f"      {k}: {json.dumps(v)}" for k, v in value.items())
            else:
                lines.append(f"{lead}{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metrics.mapping", description="Write the statsd_exporter mapping."
    )
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="the StatsD prefix in use")
    parser.add_argument("--output", type=Path, default=DEFAULT_PATH, help="file to write")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render(prefix=args.prefix)
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is stale: run `python -m metrics.mapping`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(mapping_entries(prefix=args.prefix))} mappings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
