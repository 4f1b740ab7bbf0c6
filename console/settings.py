"""The console's settings (`console.*`) and the rule that keeps an open console on loopback."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.exceptions import ConfigError

if TYPE_CHECKING:
    from engine.config import Config

ROLES = ("viewer", "operator", "admin")
#: what each role may do, cumulatively
CAN_ACT = frozenset({"operator", "admin"})
CAN_ADMIN = frozenset({"admin"})


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; anything else (0.0.0.0, a name, an address) is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsoleSettings:
    """Where the console listens, how it refreshes and who may use it."""

    host: str
    port: int
    refresh_seconds: float
    auth: str
    grid_runs: int

    @classmethod
    def from_config(cls, config: Config) -> ConsoleSettings:
        """Read `console.*` from the loaded configuration."""
        return cls(
            host=config["console.host"],
            port=config["console.port"],
            refresh_seconds=config["console.refresh_seconds"],
            auth=config["console.auth"],
            grid_runs=config["console.grid_runs"],
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def check_bind(self) -> None:
        """Refuse a console without auth on an address other machines can reach."""
        if self.auth == "none" and not is_loopback(self.host):
            raise ConfigError(
                f"console.host = {self.host!r} is not a loopback address and console.auth is "
                "'none': set console.auth to 'password' or 'oidc', or bind to 127.0.0.1"
            )
