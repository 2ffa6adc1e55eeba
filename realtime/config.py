"""The [realtime] table of pinhole.toml, parsed once into a frozen RealtimeConfig."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.config import build, load_toml

ADMIN_USERNAME_DEFAULT: Final = "pinhole-api"


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    # The broker the API publishes to; "" means no broker: publishes are skipped (catch-up
    # still has everything) and POST /api/v1/realtime/credentials answers 404.
    broker_host: str = ""
    broker_port: int = 1883
    # What clients are told to connect to (MQTT over TCP, and a WebSocket URL for browsers).
    client_host: str = "127.0.0.1"
    client_port: int = 1883
    websocket_url: str = ""
    # The API's own broker account (dynamic-security admin) and the file holding its password.
    admin_username: str = ADMIN_USERNAME_DEFAULT
    admin_password_file: str = ""
    # Publishes held while the broker is unreachable; beyond it they are dropped (counted).
    publish_queue_max: int = 10_000
    # Broker credentials a user holds at once; the oldest is revoked beyond it.
    credentials_per_user_max: int = 20
    # How long a dynamic-security command may wait for the broker's answer.
    command_timeout_s: float = 5.0
    # Typing events waiting to be relayed; beyond it they are dropped (they are ephemeral).
    typing_queue_max: int = 1000
    # How often credentials of signed-out sessions are swept from the broker.
    revoke_sweep_s: float = 5.0

    def __post_init__(self) -> None:
        for name in (
            "broker_port",
            "client_port",
            "publish_queue_max",
            "credentials_per_user_max",
            "typing_queue_max",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.command_timeout_s <= 0 or self.revoke_sweep_s <= 0:
            raise ValueError("command_timeout_s and revoke_sweep_s must be > 0")
        if self.broker_host and not self.admin_password_file:
            raise ValueError("admin_password_file is required with a broker_host")

    @property
    def enabled(self) -> bool:
        return bool(self.broker_host)

    def admin_password(self) -> str:
        return Path(self.admin_password_file).expanduser().read_text().strip()


def realtime_config(document: dict[str, Any], **overrides: Any) -> RealtimeConfig:
    table = dict(document.get("realtime", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(RealtimeConfig, table, where="realtime.")


def realtime_config_file(path: Path) -> RealtimeConfig:
    """The [realtime] table of a TOML file of its own (what `pinhole up` writes)."""
    return realtime_config(load_toml(path))
