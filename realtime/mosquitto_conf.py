"""The generated Mosquitto configuration of a local broker (`pinhole up`, the tests):
two listeners on loopback (MQTT over TCP, and WebSockets for browsers), no anonymous
access, the dynamic-security plugin holding every account and ACL, persistence under the
broker's directory (QoS 1 messages to offline clients survive a broker restart), and
named limits on queues and message sizes (docs/operations/mqtt.md)."""

from __future__ import annotations

import getpass
import glob
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from realtime import dynsec
from realtime.config import ADMIN_USERNAME_DEFAULT

CONFIG_FILE: Final = "mosquitto.conf"
DYNSEC_FILE: Final = "dynamic-security.json"
ADMIN_PASSWORD_FILE: Final = "admin-password"
REALTIME_FILE: Final = "realtime.toml"
PLUGIN_NAME: Final = "mosquitto_dynamic_security.so"
# Debian's places for the broker and its plugin.
_BINARY_CANDIDATES: Final = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
_PLUGIN_GLOBS: Final = ("/usr/lib/*/" + PLUGIN_NAME, "/usr/lib/" + PLUGIN_NAME,
                        "/usr/local/lib/" + PLUGIN_NAME)  # fmt: skip
# Limits written into the config.
PACKET_BYTES_MAX: Final = 64 * 1024  # a payload here is a wake-up, never content
QUEUED_MESSAGES_MAX: Final = 1000  # per offline persistent client
INFLIGHT_MESSAGES_MAX: Final = 20  # QoS 1 messages in flight per client
WEBSOCKETS_PROTOCOL: Final = "websockets"


def _websocket_bind(host: str) -> str:
    return "lo" if host in ("127.0.0.1", "localhost") else host


class BrokerMissing(RuntimeError):
    """The mosquitto binary or its dynamic-security plugin is not installed."""


def binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in _BINARY_CANDIDATES if Path(p).exists()), None
    )
    if found is None:
        raise BrokerMissing("mosquitto is not installed (Debian package `mosquitto`)")
    return found


def plugin() -> str:
    for pattern in _PLUGIN_GLOBS:
        for path in sorted(glob.glob(pattern)):
            return path
    raise BrokerMissing(f"{PLUGIN_NAME} not found (Debian package `mosquitto`)")


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    root: Path
    host: str
    port: int
    websocket_port: int

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def dynsec_file(self) -> Path:
        return self.root / DYNSEC_FILE

    @property
    def admin_password_file(self) -> Path:
        return self.root / ADMIN_PASSWORD_FILE

    @property
    def realtime_file(self) -> Path:
        """The [realtime] table the API reads (`pinhole api serve --realtime-config`)."""
        return self.root / REALTIME_FILE

    @property
    def websocket_url(self) -> str:
        return f"ws://{self.host}:{self.websocket_port}"

    def argv(self) -> tuple[str, ...]:
        return (binary(), "-c", str(self.config_file))

    def config_text(self) -> str:
        return (
            "# Written by pinhole (realtime/mosquitto_conf.py); see docs/operations/mqtt.md.\n"
            # Run as root, mosquitto would switch to the `mosquitto` user, which cannot read
            # the plugin's file (mode 0600): stay the user that starts it.
            f"user {getpass.getuser()}\n"
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"plugin {plugin()}\n"
            f"plugin_opt_config_file {self.dynsec_file}\n"
            "persistence true\n"
            f"persistence_location {self.root}/\n"
            "log_dest stdout\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"max_packet_size {PACKET_BYTES_MAX}\n"
            f"max_queued_messages {QUEUED_MESSAGES_MAX}\n"
            f"max_inflight_messages {INFLIGHT_MESSAGES_MAX}\n"
            f"listener {self.port} {self.host}\n"
            # libwebsockets binds to an interface, not an address: with 127.0.0.1 mosquitto
            # 2.0.11 listens on every address (upstream issue 3045); `lo` keeps it local.
            f"listener {self.websocket_port} {_websocket_bind(self.host)}\n"
            f"protocol {WEBSOCKETS_PROTOCOL}\n"
        )

    def realtime_text(self) -> str:
        return (
            "# Written by pinhole: the API's broker (docs/operations/mqtt.md).\n"
            "[realtime]\n"
            f'broker_host = "{self.host}"\n'
            f"broker_port = {self.port}\n"
            f'client_host = "{self.host}"\n'
            f"client_port = {self.port}\n"
            f'websocket_url = "{self.websocket_url}"\n'
            f'admin_username = "{ADMIN_USERNAME_DEFAULT}"\n'
            f'admin_password_file = "{self.admin_password_file}"\n'
        )

    def write(self) -> None:
        """Writes the config, the [realtime] file and (once) the admin password and the
        plugin's starting state. Safe to run again: accounts made since are kept."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.admin_password_file.exists():
            self.admin_password_file.write_text(secrets.token_urlsafe(24) + "\n")
            self.admin_password_file.chmod(0o600)
        password = self.admin_password_file.read_text().strip()
        dynsec.write_initial(self.dynsec_file, ADMIN_USERNAME_DEFAULT, password)
        self.config_file.write_text(self.config_text())
        self.realtime_file.write_text(self.realtime_text())
