"""The public API's configuration: the [api] table of pinhole.toml, parsed once into a
frozen, validated ApiConfig. The media pipeline it feeds is configured in [media]."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from api.client_address import parse_networks
from common.config import build
from common.ids import SHARD_MAX

DEFAULT_PORT: Final = 8790
# [api] processes: API processes serving one host:port (SO_REUSEPORT), each exec'd by the
# one `pinhole api serve` started (ops/api_processes.py).
PROCESSES_MAX: Final = 16
# sockaddr_un's sun_path holds 108 bytes with the terminating NUL (Linux).
UNIX_SOCKET_PATH_BYTES_MAX: Final = 107
MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # API processes on host:port (1..PROCESSES_MAX). More than one needs Redis ([feed]
    # redis_url: the embedded hot and story stores live in one process's memory) and takes
    # the [media] id shards id_shard .. id_shard + processes - 1 (one per process).
    processes: int = 1
    # Uploads in progress (multipart spooled to disk, tus uploads) live in <data_dir>.
    data_dir: Path = Path(".pinhole/api")
    # The request line and each header field; aiohttp's parser answers 400 beyond.
    header_bytes_max: int = 8190
    # Bodies of JSON requests; uploads are limited by the media limits ([media.limits]).
    json_body_bytes_max: int = 64 * 1024
    # Multipart: non-file fields, and the number of parts.
    form_field_bytes_max: int = 1024
    form_parts_max: int = 8
    # Uploads being received at once by one API process (multipart and tus PATCH, the
    # finishing one's ingest included); beyond it 503. Per process: N processes take up to
    # N x this many.
    uploads_inflight_max: int = 32
    # Per user and sliding day: uploads made (counted from the media table whatever became
    # of them, plus incomplete tus uploads at their Upload-Length); 429 beyond. These
    # belong to the API, not to [media.limits]: they are admission policy of the one
    # process that takes uploads, like uploads_inflight_max, while [media.limits] says
    # what a single file may be and is read by the workers too.
    uploads_per_day_max: int = 500
    upload_bytes_per_day_max: int = 2 * GiB
    # An upload body (multipart, tus PATCH) has upload_body_rate_grace_s to get going; each
    # later span of that length must bring upload_body_rate_bytes_per_s_min per second, or
    # the body is cut (408), so a trickling client cannot hold an upload slot.
    upload_body_rate_bytes_per_s_min: int = 4096
    upload_body_rate_grace_s: float = 10.0
    # Bytes staged in <data_dir>: multipart spools in <data_dir>/incoming and tus part
    # files, counted across all the API processes sharing the data dir. An upload that
    # would pass it is refused with 503 and Retry-After. At least the largest upload
    # [media.limits] allows (checked when the app is made).
    staging_bytes_max: int = 8 * GiB
    # tus: an incomplete upload expires this long after its creation and is reclaimed;
    # at most tus_uploads_per_user_max incomplete uploads per user; Upload-Metadata up to
    # tus_metadata_bytes_max.
    tus_expiry_s: float = 86400.0
    tus_uploads_per_user_max: int = 20
    tus_metadata_bytes_max: int = 4096
    tus_sweep_interval_s: float = 60.0
    # A GET of a media waits at most this long for it to turn ready (?wait_s=).
    media_wait_s_max: float = 10.0
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For is believed: the
    # client address is then the right-most entry not in this list (api/client_address.py).
    trusted_proxies: tuple[str, ...] = ()
    # Public media documents (a post's photo with its URLs) remembered by the rows they are
    # made from (api/media_docs.py PublicMediaDocuments), least recently used dropped;
    # about 5 KB each (a photo with its 12-variant ladder).
    media_documents_cached_max: int = 5_000

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError("port must be within 0..65535")
        if not 1 <= self.processes <= PROCESSES_MAX:
            raise ValueError(f"processes must be within 1..{PROCESSES_MAX}")
        for name in ("tus_expiry_s", "tus_sweep_interval_s", "upload_body_rate_grace_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in (
            "header_bytes_max",
            "json_body_bytes_max",
            "form_field_bytes_max",
            "form_parts_max",
            "uploads_inflight_max",
            "uploads_per_day_max",
            "upload_bytes_per_day_max",
            "upload_body_rate_bytes_per_s_min",
            "staging_bytes_max",
            "tus_uploads_per_user_max",
            "tus_metadata_bytes_max",
            "media_documents_cached_max",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.media_wait_s_max < 0:
            raise ValueError("media_wait_s_max must not be negative")
        parse_networks(self.trusted_proxies)

    def check_staging_fits(self, largest_upload_bytes: int) -> None:
        """Raises ValueError when the largest upload the media limits allow could never be
        staged (the [api] and [media] tables disagree)."""
        if self.staging_bytes_max < largest_upload_bytes:
            raise ValueError(
                "api.staging_bytes_max must be at least the largest upload the media limits "
                f"allow ({largest_upload_bytes} bytes)"
            )

    def check_processes(self, *, redis_url: str, id_shard: int) -> None:
        """Raises ValueError when `processes` > 1 cannot be served: without Redis (the
        embedded hot and story stores are one process's memory, where another process's
        fan-out and views do not reach) or without room for one id shard per process."""
        if self.processes == 1:
            return
        if not redis_url:
            raise ValueError(
                f"api.processes = {self.processes} needs Redis: set [feed] redis_url "
                "(the embedded hot and story stores live in one process's memory)"
            )
        if id_shard + self.processes - 1 > SHARD_MAX:
            raise ValueError(
                f"api.processes = {self.processes} needs the id shards {id_shard}.."
                f"{id_shard + self.processes - 1} ([media] id_shard), beyond {SHARD_MAX}"
            )
        longest = len(os.fsencode(self.metrics_socket(self.processes - 1).absolute()))
        if longest > UNIX_SOCKET_PATH_BYTES_MAX:
            raise ValueError(
                f"api.processes = {self.processes}: the data dir's path is too long for the"
                f" processes' metrics sockets ({longest} bytes, at most"
                f" {UNIX_SOCKET_PATH_BYTES_MAX}); use a shorter [api] data_dir"
            )

    def metrics_socket(self, index: int) -> Path:
        """The Unix socket on which API process `index` answers its own metrics families
        (api/metrics.py), with [api] processes > 1."""
        return self.data_dir / f"metrics-{index}.sock"


def api_config(document: dict[str, Any], **overrides: Any) -> ApiConfig:
    """The [api] table of a parsed pinhole.toml, with command-line overrides (None values
    ignored) on top. Raises common.config.ConfigError."""
    table = dict(document.get("api", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(ApiConfig, table, where="api.")
