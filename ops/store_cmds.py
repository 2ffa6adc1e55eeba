"""`pinhole store serve`: run one store node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from common.config import ConfigError, parse_size
from common.credentials import Credentials
from ops.cli_support import (
    EXIT_USAGE,
    CliError,
    credentials_options,
    load_config,
    run,
    service_credentials,
    setup_logging,
)
from store.config import StoreConfig, store_config


@click.group()
def store() -> None:
    """Store nodes (Haystack's Store)."""


def resolve_store_config(ctx: click.Context, **overrides: Any) -> StoreConfig:
    doc = load_config(ctx.obj["config_path"], serving=True)
    try:
        return store_config(doc, **overrides)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e


@store.command("serve")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory of this node.",
)
@click.option("--host", help="Address to listen on.")
@click.option("--port", type=int, help="Port to listen on (0: any free port).")
@click.option("--node-id", help="The node's name in the cluster (default host:port).")
@click.option("--failure-domain", help="datacenter/rack/host label used for placement.")
@click.option("--directory-url", help="The directory to send heartbeats to.")
@click.option(
    "--advertise-url", help="The URL others reach this node at (default http://host:port)."
)
@click.option(
    "--scrub-interval", type=float, help="Seconds between scrub passes of a volume (0: off)."
)
@click.option("--scrub-rate", help='Scrub at most this many bytes/s, e.g. "8 MiB".')
@click.option("--volume-size-max", help='Size limit of new volumes, e.g. "100GB" or "64MiB".')
@credentials_options
@click.option(
    "--create-volume",
    "create_volumes",
    type=int,
    multiple=True,
    help="Create this volume at start unless it exists (repeatable).",
)
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def serve(
    ctx: click.Context,
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    node_id: str | None,
    failure_domain: str | None,
    directory_url: str | None,
    advertise_url: str | None,
    scrub_interval: float | None,
    scrub_rate: str | None,
    volume_size_max: str | None,
    credentials_file: Path | None,
    secret_file: Path | None,
    root: Path,
    create_volumes: tuple[int, ...],
    log_level: str,
) -> None:
    """Run a store node until SIGINT/SIGTERM."""
    setup_logging(log_level, service="store")
    size = None
    if volume_size_max is not None:
        try:
            size = parse_size(volume_size_max)
        except ConfigError as e:
            raise CliError(f"--volume-size-max: {e}", EXIT_USAGE) from e
    config = resolve_store_config(
        ctx,
        data_dir=str(data_dir) if data_dir else None,
        host=host,
        port=port,
        node_id=node_id,
        failure_domain=failure_domain,
        directory_url=directory_url,
        advertise_url=advertise_url,
        scrub_interval_s=scrub_interval,
        scrub_bytes_per_s_max=scrub_rate,
        cluster_secret_file=str(secret_file) if secret_file else None,
        **{"volume.size_bytes_max": size},
    )
    creds = service_credentials(
        "store",
        credentials_file=credentials_file,
        secret_file=None if credentials_file else config.cluster_secret_file,
        root=root,
    )
    run(_serve(config, creds, create_volumes))


async def _serve(
    config: StoreConfig, credentials: Credentials, create_volumes: tuple[int, ...]
) -> None:
    from store.server import serve_forever

    await serve_forever(config, credentials=credentials, create_volumes=create_volumes)
