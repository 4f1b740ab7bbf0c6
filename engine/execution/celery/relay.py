"""An attempt's relayed metrics as JSON, the only content a Celery result carries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from metrics.relay import Relayed


def encode_metrics(records: Iterable[Relayed]) -> list[list[Any]]:
    return [[r.kind, r.name, r.type, r.value, [list(pair) for pair in r.labels]] for r in records]


def decode_metrics(rows: Iterable[Any]) -> list[Relayed]:
    out = []
    for kind, name, type_, value, labels in rows:
        out.append(Relayed(kind, name, type_, float(value), tuple((k, v) for k, v in labels)))
    return out
