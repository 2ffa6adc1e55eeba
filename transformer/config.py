"""The media pipeline's configuration: the [media] table of pinhole.toml (shared by the API,
which ingests uploads, and the job workers, which make the variants), parsed once into a
frozen, validated MediaConfig. Durations are seconds, sizes bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import build
from transformer.limits import MediaLimits


@dataclass(frozen=True, slots=True)
class MediaConfig:
    # The SQLite file <data_dir>/media.sqlite3 lives here when database_url is empty, and
    # the workers' scratch space (<data_dir>/work) too.
    data_dir: Path = Path(".pinhole/media")
    # "" = SQLite in data_dir; else a postgresql+asyncpg:// URL.
    database_url: str = ""
    database_schema: str = ""
    # Where blobs are written (the directory hands out writable volumes) and read back
    # (the router serves every variant at its photo URL).
    directory_url: str = "http://127.0.0.1:8700"
    router_url: str = "http://127.0.0.1:8780"
    # Prefix of the photo URLs handed to clients ("" = router_url).
    public_photo_url: str = ""
    # Photos of private accounts are handed out as signed URLs (common/signed_photo.py)
    # that expire signed_url_ttl_s after they are made, rounded up to a multiple of
    # signed_url_step_s (so one viewer keeps the same URLs, and browser-cached bytes, for a
    # while): an unfollow, a block or a switch to private reaches every URL handed out
    # before it within signed_url_ttl_s + signed_url_step_s.
    signed_url_ttl_s: float = 600.0
    signed_url_step_s: int = 60
    # The cluster secret: when unset, PINHOLE_CLUSTER_SECRET or ./.pinhole/cluster.secret.
    cluster_secret_file: Path | None = None
    # Media not attached to a post within this long expires and its needles are deleted.
    unattached_ttl_s: float = 86400.0
    # How often a worker looks for expired media; at most expire_batch_max per pass.
    expire_interval_s: float = 60.0
    expire_batch_max: int = 100
    # Jobs: a job that failed is retried after backoff_s_base * 2^(attempt-1) seconds
    # (capped at backoff_s_max) and dead-lettered after attempts_max attempts. A claimed job
    # is leased for lease_s and the lease renewed every lease_s / 3 while it runs: a worker
    # killed mid-job loses its lease and the job runs again elsewhere.
    attempts_max: int = 5
    backoff_s_base: float = 2.0
    backoff_s_max: float = 300.0
    lease_s: float = 30.0
    # An idle worker looks for jobs after poll_interval_s, then less and less often, up to
    # every poll_interval_s_max (the most a new job waits for an idle worker).
    poll_interval_s: float = 0.05
    poll_interval_s_max: float = 0.25
    # Puts of one job's variants in flight at once.
    puts_inflight_max: int = 8
    # One video transcode (ffmpeg) is killed beyond this.
    transcode_timeout_s: float = 900.0
    # Id shard of the process that makes media ids (distinct per API process).
    id_shard: int = 1
    limits: MediaLimits = field(default_factory=MediaLimits)

    def __post_init__(self) -> None:
        for name in ("directory_url", "router_url"):
            if not getattr(self, name).startswith("http://"):
                raise ValueError(f"{name} must be an http:// URL")
        positive = (
            "unattached_ttl_s",
            "expire_interval_s",
            "backoff_s_base",
            "backoff_s_max",
            "lease_s",
            "poll_interval_s",
            "poll_interval_s_max",
            "transcode_timeout_s",
            "signed_url_ttl_s",
            "signed_url_step_s",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("attempts_max", "expire_batch_max", "puts_inflight_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def database(self) -> str:
        return self.database_url or str(self.data_dir / "media.sqlite3")

    @property
    def photo_url_base(self) -> str:
        return (self.public_photo_url or self.router_url).rstrip("/")

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"


def media_config(document: dict[str, Any], **overrides: Any) -> MediaConfig:
    """The [media] table of a parsed pinhole.toml, with command-line overrides (None values
    ignored) on top. Raises common.config.ConfigError."""
    table = dict(document.get("media", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(MediaConfig, table, where="media.")
