"""`pinhole credentials ROLE --out FILE`: the credentials file of one service role, derived
from the cluster secret on the operator's machine, for a service on another host
(`pinhole <role> serve --credentials FILE`). The file holds only what the role needs
(common/credentials.py SERVICE_GRANTS), so the host never sees the cluster secret;
docs/operations/deploy.md."""

from __future__ import annotations

from pathlib import Path

import click

from common import credentials
from common.credentials import Credentials
from ops.cli_support import DEFAULT_ROOT, EXIT_USAGE, CliError, cluster_secret


@click.command("credentials")
@click.argument("role", type=click.Choice(sorted(credentials.SERVICE_GRANTS)))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the file (mode 0600); an existing file is kept unless --force.",
)
@click.option("--force", is_flag=True, help="Replace an existing file.")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cluster secret (default: $PINHOLE_CLUSTER_SECRET or ./.pinhole/cluster.secret).",
)
def credentials_cmd(role: str, out_path: Path, force: bool, secret_file: Path | None) -> None:
    """Write the credentials file of one service ROLE (for a service on another host)."""
    if out_path.exists() and not force:
        raise CliError(f"{out_path} exists (--force replaces it)", EXIT_USAGE)
    if not out_path.parent.is_dir():
        raise CliError(f"{out_path.parent} is not a directory", EXIT_USAGE)
    secret = cluster_secret(secret_file, DEFAULT_ROOT)
    Credentials.for_service(secret, role).write(out_path)
    click.echo(f"{role} credentials written to {out_path}")
