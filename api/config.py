"""The public API's configuration: the [api] table of pinhole.toml, parsed once into a
frozen, validated ApiConfig. The media pipeline it feeds is configured in [media]."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from api.client_address import parse_networks
from common.config import build

DEFAULT_PORT: Final = 8790
MiB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Uploads in progress (multipart spooled to disk, tus uploads) live in <data_dir>.
    data_dir: Path = Path(".pinhole/api")
    # Bodies of JSON requests; uploads are limited by the media limits ([media.limits]).
    json_body_bytes_max: int = 64 * 1024
    # Multipart: non-file fields, and the number of parts.
    form_field_bytes_max: int = 1024
    form_parts_max: int = 8
    # Uploads being received at once (multipart and tus PATCH); beyond it 503.
    uploads_inflight_max: int = 32
    # tus: an incomplete upload expires this long after its creation and is reclaimed;
    # at most tus_uploads_per_user_max incomplete uploads per user.
    tus_expiry_s: float = 86400.0
    tus_uploads_per_user_max: int = 20
    tus_sweep_interval_s: float = 60.0
    # A GET of a media waits at most this long for it to turn ready (?wait_s=).
    media_wait_s_max: float = 10.0
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For is believed: the
    # client address is then the right-most entry not in this list (api/client_address.py).
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError("port must be within 0..65535")
        for name in ("tus_expiry_s", "tus_sweep_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in (
            "json_body_bytes_max",
            "form_field_bytes_max",
            "form_parts_max",
            "uploads_inflight_max",
            "tus_uploads_per_user_max",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.media_wait_s_max < 0:
            raise ValueError("media_wait_s_max must not be negative")
        parse_networks(self.trusted_proxies)


def api_config(document: dict[str, Any], **overrides: Any) -> ApiConfig:
    """The [api] table of a parsed pinhole.toml, with command-line overrides (None values
    ignored) on top. Raises common.config.ConfigError."""
    table = dict(document.get("api", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(ApiConfig, table, where="api.")
