"""`python -m metrics.mixin [--check] [--runbook-base URL] [--grafana-url URL] [--output DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metrics.mixin import ROOT, render_all, rules


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards and alert rules, or (`--check`) exit 1 when they are stale."""
    parser = argparse.ArgumentParser(
        prog="python -m metrics.mixin",
        description="Write dagwatch's Grafana dashboards and Prometheus alert rules.",
    )
    parser.add_argument("--output", type=Path, default=ROOT, help="the dashboards/ folder")
    parser.add_argument(
        "--runbook-base",
        default=rules.DEFAULT_RUNBOOK_BASE,
        help="URL where docs/runbooks.md is published (alerts link to its sections)",
    )
    parser.add_argument(
        "--grafana-url", default=rules.DEFAULT_GRAFANA_URL, help="Grafana's URL, for links"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    files = render_all(args.runbook_base, args.grafana_url)
    stale = [
        path
        for path, text in files.items()
        if not (args.output / path).exists() or (args.output / path).read_text() != text
    ]
    if args.check:
        for path in stale:
            print(f"{args.output / path} is stale: run `python -m metrics.mixin`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        target = args.output / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    print(f"wrote {len(files)} files under {args.output} ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
