"""Edges between tasks: `>>`/`<<`, Label and chain.

Any edge end (task, XComArg, task group) exposes the tasks edges attach to: `roots` when
it is the downstream end, `leaves` when it is the upstream end.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.exceptions import DagDefinitionError

if TYPE_CHECKING:
    from engine.sdk.tasks import BaseOperator


class DependencyMixin:
    """`>>`, `<<` and set_upstream/set_downstream for anything that can be an edge end."""

    @property
    def roots(self) -> list[BaseOperator]:
        raise NotImplementedError

    @property
    def leaves(self) -> list[BaseOperator]:
        raise NotImplementedError

    def set_downstream(self, other: Any) -> None:
        for item in _as_items(other):
            _link(self, item)

    def set_upstream(self, other: Any) -> None:
        for item in _as_items(other):
            _link(item, self)

    def __rshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return other

    def __lshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: Any) -> Any:
        """`[a, b] >> self`."""
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: Any) -> Any:
        """`[a, b] << self`."""
        self.set_downstream(other)
        return self


def _as_items(other: Any) -> list[DependencyMixin]:
    items = list(other) if isinstance(other, list | tuple | set | frozenset) else [other]
    for item in items:
        if not isinstance(item, DependencyMixin):
            raise TypeError(
                f"cannot set a dependency on {type(item).__name__} {item!r}: use tasks, "
                "task groups, XComArgs, Labels or lists of them"
            )
    return items


def _link(up: DependencyMixin, down: DependencyMixin) -> None:
    if isinstance(up, Label) and isinstance(down, Label):
        raise TypeError(f"{up!r} >> {down!r}: a Label must sit between two tasks")
    if isinstance(down, Label):
        down._add_upstream(up)
    elif isinstance(up, Label):
        up._add_downstream(down)
    else:
        _connect(up, down, None)


def _connect(up: DependencyMixin, down: DependencyMixin, label: str | None) -> None:
    for upstream in up.leaves:
        for downstream in down.roots:
            upstream._add_edge(downstream, label)


class Label(DependencyMixin):
    """`a >> Label("when x") >> b`: an edge with a label (see `DAG.edge_info`)."""

    def __init__(self, label: str) -> None:
        self.label = str(label)
        self._upstreams: list[DependencyMixin] = []
        self._downstreams: list[DependencyMixin] = []

    def __repr__(self) -> str:
        return f"Label({self.label!r})"

    @property
    def roots(self) -> list[BaseOperator]:
        raise TypeError(f"{self!r} must sit between two tasks: a >> Label(...) >> b")

    leaves = roots

    def _add_upstream(self, up: DependencyMixin) -> None:
        self._upstreams.append(up)
        for down in self._downstreams:
            _connect(up, down, self.label)

    def _add_downstream(self, down: DependencyMixin) -> None:
        self._downstreams.append(down)
        for up in self._upstreams:
            _connect(up, down, self.label)


def chain(*tasks: DependencyMixin | Sequence[DependencyMixin]) -> None:
    """Chain tasks in order; two adjacent lists of equal length pair up element-wise."""
    for up, down in itertools.pairwise(tasks):
        if isinstance(up, DependencyMixin):
            up.set_downstream(down)
        elif isinstance(down, DependencyMixin):
            down.set_upstream(up)
        elif isinstance(up, Sequence) and isinstance(down, Sequence):
            if len(up) != len(down):
                raise DagDefinitionError(
                    f"chain() pairs adjacent lists element-wise; got lists of length "
                    f"{len(up)} and {len(down)}"
                )
            for left, right in zip(up, down, strict=True):
                left.set_downstream(right)
        else:
            kinds = f"{type(up).__name__} and {type(down).__name__}"
            raise TypeError(f"chain() does not support {kinds}")
