"""Where a notification goes, described without the secret itself.

A target names Apprise URLs, `env:VAR` references to URLs kept in the environment, a
Connection whose extra holds the URLs (`{"urls": [...]}`) or whose URI is the Apprise URL
itself, or a tag of the Apprise configuration file (`alerts.apprise_config`). Only the
reference is stored with an alert; URLs written inline are stored encrypted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "env:"


@dataclass(frozen=True)
class Target:
    """A notification destination: inline URLs, a Connection, or an Apprise config tag."""

    urls: tuple[str, ...] = ()
    conn_id: str | None = None
    tag: str | None = None

    def __post_init__(self) -> None:
        if not (self.urls or self.conn_id or self.tag):
            raise ValueError("a notification target needs urls, conn_id or tag")

    @classmethod
    def from_fields(
        cls, urls: str | Iterable[str] | None, conn_id: str | None, tag: str | None
    ) -> Target:
        if isinstance(urls, str):
            urls = [part.strip() for part in urls.split(",")]
        return cls(tuple(u for u in (urls or ()) if u), conn_id or None, tag or None)

    def describe(self) -> str:
        """A text naming the target without any secret (logs, CLI, console)."""
        parts = []
        if self.urls:
            refs = [u for u in self.urls if u.startswith(ENV_PREFIX)]
            inline = len(self.urls) - len(refs)
            parts += refs + ([f"{inline} inline URL(s)"] if inline else [])
        if self.conn_id:
            parts.append(f"connection {self.conn_id}")
        if self.tag:
            parts.append(f"tag {self.tag}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"urls": list(self.urls), "conn_id": self.conn_id, "tag": self.tag}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        return cls(tuple(data.get("urls") or ()), data.get("conn_id"), data.get("tag"))
