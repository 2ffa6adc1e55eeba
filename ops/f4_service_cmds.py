"""`pinhole f4 node serve`: run one f4 storage node process, serving the block directories
of the nodes (failure domains, its disks) named with --node, `<blocks>/<node>` where blocks
is --blocks or [f4] cell_root/blocks of pinhole.toml. The cell reaches them at the url its
[f4] nodes give (docs/operations/f4.md)."""

from __future__ import annotations

from pathlib import Path

import click

from common.config import ConfigError
from f4.config import f4_config
from f4.node_disk import node_name_ok
from f4.node_server import DEFAULT_PORT
from ops.cli_support import (
    EXIT_USAGE,
    CliError,
    credentials_options,
    load_config,
    run,
    service_credentials,
    setup_logging,
)

ROLE = "f4-node"


@click.group("node")
def node_group() -> None:
    """f4 storage nodes: processes serving blocks over HTTP."""


@node_group.command("serve")
@click.option(
    "--node",
    "nodes",
    multiple=True,
    required=True,
    help="A node (failure domain) to serve; repeat for each disk of this process.",
)
@click.option(
    "--blocks",
    "blocks_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the nodes' directories are (default: <[f4] cell_root>/blocks).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@credentials_options
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def serve(
    ctx: click.Context,
    nodes: tuple[str, ...],
    blocks_dir: Path | None,
    host: str,
    port: int,
    credentials_file: Path | None,
    secret_file: Path | None,
    root: Path,
    log_level: str,
) -> None:
    """Serve the nodes' block directories until SIGINT/SIGTERM."""
    setup_logging(log_level, service="f4-node")
    for name in nodes:
        if not node_name_ok(name):
            raise CliError(
                f"--node {name!r}: 1..64 letters, digits, '-', '_', '.' (not first)", EXIT_USAGE
            )
    if len(set(nodes)) != len(nodes):
        raise CliError("--node names must be distinct", EXIT_USAGE)
    if blocks_dir is None:
        try:
            blocks_dir = f4_config(load_config(ctx.obj["config_path"])).blocks_dir
        except ConfigError as e:
            raise CliError(str(e), EXIT_USAGE) from e
    creds = service_credentials(
        ROLE, credentials_file=credentials_file, secret_file=secret_file, root=root
    )
    from f4.node_server import serve_forever

    try:
        run(serve_forever(blocks_dir, nodes, credentials=creds, host=host, port=port))
    except OSError as e:
        raise CliError(f"cannot serve on {host}:{port} from {blocks_dir}: {e}") from e
