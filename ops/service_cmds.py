"""`pinhole directory serve`, `pinhole cache serve`, `pinhole router serve`: run one
service of the cluster. Each reads its table of pinhole.toml ([directory], [cache],
[router]); options override single keys."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from common.config import ConfigError, build
from ops.cli_support import (
    EXIT_USAGE,
    CliError,
    credentials_options,
    load_config,
    run,
    service_credentials,
    setup_logging,
)

# role -> (config module, config class, server module)
_SERVICES = {
    "directory": ("directory.config", "DirectoryConfig", "directory.server"),
    "cache": ("cache.config", "CacheConfig", "cache.server"),
    "router": ("router.config", "RouterConfig", "router.server"),
}


def _config(ctx: click.Context, role: str, overrides: dict[str, Any]) -> Any:
    module, cls_name, _ = _SERVICES[role]
    cls = getattr(importlib.import_module(module), cls_name)
    doc = load_config(ctx.obj["config_path"], serving=True)
    table = dict(doc.get(role, {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return build(cls, table, where=f"{role}.")
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e


def _serve(
    role: str, config: Any, credentials_file: Path | None, secret_file: Path | None, root: Path
) -> None:
    if credentials_file is None and secret_file is None:
        secret_file = getattr(config, "cluster_secret_file", None)
    creds = service_credentials(
        role, credentials_file=credentials_file, secret_file=secret_file, root=root
    )
    server = importlib.import_module(_SERVICES[role][2])
    run(server.serve_forever(config, credentials=creds))


def _common_options(f: Any) -> Any:
    options: list[Callable[[Any], Any]] = [
        click.option("--host", help="Address to listen on."),
        click.option("--port", type=int, help="Port to listen on (0: any free port)."),
        credentials_options,
        click.option("--log-level", default="info", show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group()
def directory() -> None:
    """The Directory: logical volumes, replicas, node health, placement, repairs."""


@directory.command("serve")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the SQLite database lives (without --database-url).",
)
@click.option("--database-url", help="postgresql+asyncpg://... (default: SQLite under --data).")
@click.option("--placement", help='Replica placement "xyz" (other DCs, racks, hosts).')
@_common_options
@click.pass_context
def directory_serve(
    ctx: click.Context,
    data_dir: Path | None,
    database_url: str | None,
    placement: str | None,
    host: str | None,
    port: int | None,
    credentials_file: Path | None,
    secret_file: Path | None,
    root: Path,
    log_level: str,
) -> None:
    """Run a directory until SIGINT/SIGTERM (two may share one database)."""
    setup_logging(log_level, service="directory")
    config = _config(
        ctx,
        "directory",
        {
            "data_dir": str(data_dir) if data_dir else None,
            "database_url": database_url,
            "placement": placement,
            "host": host,
            "port": port,
        },
    )
    _serve("directory", config, credentials_file, secret_file, root)


@click.group()
def cache() -> None:
    """The photo Cache: byte-bounded, admission rule, request coalescing."""


@cache.command("serve")
@click.option("--node-id", help="The cache's name in the cluster.")
@click.option("--directory-url", help="The directory to register with.")
@click.option("--cache-bytes-max", help='Memory for photos, e.g. "256 MiB".')
@_common_options
@click.pass_context
def cache_serve(
    ctx: click.Context,
    node_id: str | None,
    directory_url: str | None,
    cache_bytes_max: str | None,
    host: str | None,
    port: int | None,
    credentials_file: Path | None,
    secret_file: Path | None,
    root: Path,
    log_level: str,
) -> None:
    """Run a cache node until SIGINT/SIGTERM."""
    setup_logging(log_level, service="cache")
    config = _config(
        ctx,
        "cache",
        {
            "node_id": node_id,
            "directory_url": directory_url,
            "cache_bytes_max": cache_bytes_max,
            "host": host,
            "port": port,
        },
    )
    _serve("cache", config, credentials_file, secret_file, root)


@click.group()
def router() -> None:
    """The photo Router: photo URLs to cache and store replicas."""


@router.command("serve")
@click.option("--directory-url", help="The directory to look volumes up in.")
@_common_options
@click.pass_context
def router_serve(
    ctx: click.Context,
    directory_url: str | None,
    host: str | None,
    port: int | None,
    credentials_file: Path | None,
    secret_file: Path | None,
    root: Path,
    log_level: str,
) -> None:
    """Run a router until SIGINT/SIGTERM."""
    setup_logging(log_level, service="router")
    config = _config(ctx, "router", {"directory_url": directory_url, "host": host, "port": port})
    _serve("router", config, credentials_file, secret_file, root)
