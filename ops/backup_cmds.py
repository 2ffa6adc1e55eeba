"""`pinhole backup` and `pinhole restore`: the metadata of a local cluster (ops/backup.py),
and the pg_dump / pg_restore commands to run instead for databases in PostgreSQL
(docs/operations/backup.md)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ops import backup as bk
from ops import local_cluster as lc
from ops.cli_support import EXIT_FAILED, EXIT_USAGE, CliError, emit_json, human_bytes, load_config
from ops.up_cmds import data_option

# The databases a deployment may keep in PostgreSQL: the table of pinhole.toml naming
# their database_url, and what they hold.
POSTGRES_TABLES = {
    "directory": "the directory's",
    "media": "the API's and the workers' (media, social, jobs)",
}


def postgres_databases(document: dict[str, Any]) -> list[dict[str, str]]:
    """The configured databases that are PostgreSQL: name, a libpq URL without password,
    schema."""
    out = []
    for table in POSTGRES_TABLES:
        section = document.get(table, {})
        url_text = section.get("database_url", "") if isinstance(section, dict) else ""
        if not url_text:
            continue
        try:
            url = make_url(url_text)
        except ArgumentError:
            continue  # the service itself refuses it at start
        if url.get_backend_name() != "postgresql":
            continue
        # Never the password: it belongs in ~/.pgpass, not in logs of printed commands.
        libpq = URL.create(
            "postgresql",
            username=url.username,
            host=url.host,
            port=url.port,
            database=url.database,
            query=url.query,
        )
        out.append(
            {
                "name": table,
                "url": libpq.render_as_string(hide_password=False),
                "schema": str(section.get("database_schema", "") or ""),
            }
        )
    return out


def pg_dump_lines(databases: list[dict[str, str]], out: str) -> list[str]:
    lines = []
    for db in databases:
        schema = f" --schema={db['schema']}" if db["schema"] else ""
        lines.append(
            f"pg_dump --format=custom{schema} --file={out}/{db['name']}.dump '{db['url']}'"
        )
    return lines


def pg_restore_lines(databases: list[dict[str, str]], source: str) -> list[str]:
    lines = []
    for db in databases:
        schema = f" --schema={db['schema']}" if db["schema"] else ""
        lines.append(
            f"pg_restore --clean --if-exists --single-transaction{schema} "
            f"--dbname='{db['url']}' {source}/{db['name']}.dump"
        )
    return lines


def _cluster_config(ctx: click.Context, root: Path) -> dict[str, Any]:
    """pinhole.toml as the cluster's services read it: --config, else the file `up
    --config` recorded for this root, else ./pinhole.toml."""
    path: Path | None = ctx.obj.get("config_path") if ctx.obj else None
    if path is None:
        layout = lc.load_layout(root)
        path = layout.config_file if layout is not None else None
    return load_config(path)


def _echo_postgres(databases: list[dict[str, str]], lines: list[str], verb: str) -> None:
    names = ", ".join(f"{POSTGRES_TABLES[d['name']]} ({d['name']})" for d in databases)
    click.echo(f"pinhole: in PostgreSQL, not {verb} by this command: {names}; run:", err=True)
    for line in lines:
        click.echo(f"  {line}", err=True)
    click.echo("  (password from ~/.pgpass or PGPASSWORD; docs/operations/backup.md)", err=True)


@click.command("backup")
@data_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="New directory for the backup (made at once; must not exist or be empty).",
)
@click.option(
    "--without-postgresql",
    is_flag=True,
    help="Databases in PostgreSQL are backed up by pg_dump elsewhere: exit 0 all the same.",
)
@click.option("--json", "json_output", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def backup_cmd(
    ctx: click.Context, root: Path, out: Path, without_postgresql: bool, json_output: bool
) -> None:
    """Copy the cluster's metadata (every SQLite database under --data: the directory's,
    the API's with the job queues, the f4 key store) with SQLite's online backup, while
    the cluster runs, plus a manifest (sizes, sha256, time, version). The f4 key store
    makes the backup sensitive: keep it like the keys it is. Databases in PostgreSQL are
    not copied: the pg_dump lines to run are printed, and the exit is 1 unless
    --without-postgresql."""
    root = root.resolve()
    postgres = postgres_databases(_cluster_config(ctx, root))
    try:
        manifest = bk.backup(root, out)
    except (bk.BackupError, sqlite3.Error, OSError) as e:
        raise CliError(str(e), EXIT_FAILED) from e
    if json_output:
        emit_json({**manifest, "postgresql_not_included": [d["name"] for d in postgres]})
    else:
        click.echo(f"backup of {root} in {out.resolve()}:")
        for f in manifest["files"]:
            note = "  (sensitive: per-blob keys)" if f["sensitive"] else ""
            click.echo(f"  {f['path']}  {human_bytes(f['size_bytes'])}  {f['name']}{note}")
    if postgres:
        _echo_postgres(postgres, pg_dump_lines(postgres, str(out)), "backed up")
        if not without_postgresql:
            raise SystemExit(EXIT_FAILED)


@click.command("restore")
@data_option
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    required=True,
    help="A directory `pinhole backup` wrote.",
)
@click.option("--json", "json_output", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def restore_cmd(ctx: click.Context, root: Path, source: Path, json_output: bool) -> None:
    """Put a metadata backup back under --data. The cluster must be stopped (exit 2
    otherwise); every file is checked against the manifest's sha256 first (exit 1 and
    nothing changed when one differs); each database is written beside its target and
    renamed over it, the replaced ones kept in <data>/restore-previous/<time>/."""
    root = root.resolve()
    running = [e.name for e in lc.read_registry(root).values() if lc.alive(e)]
    if running:
        raise CliError(
            f"the cluster in {root} is running ({', '.join(sorted(running))}): "
            f"`pinhole down --data {root}` first",
            EXIT_USAGE,
        )
    postgres = postgres_databases(_cluster_config(ctx, root))
    try:
        result = bk.restore(source, root)
    except bk.BackupDamaged as e:
        raise CliError(f"the backup is damaged, nothing restored: {e}", EXIT_FAILED) from e
    except bk.BackupError as e:
        raise CliError(f"{e}; nothing restored", EXIT_USAGE) from e
    except OSError as e:
        raise CliError(f"the restore failed: {e}", EXIT_FAILED) from e
    if json_output:
        emit_json({**result, "postgresql_not_restored": [d["name"] for d in postgres]})
    else:
        click.echo(f"restored into {root}:")
        for f in result["restored"]:
            click.echo(f"  {f['path']}  {human_bytes(f['size_bytes'])}  {f['name']}")
        if result["previous_dir"]:
            click.echo(f"the databases replaced are in {result['previous_dir']}")
        for path in result["not_in_backup"]:
            click.echo(f"not in the backup, left as it is: {path}")
        click.echo(f"start the cluster: pinhole up --data {root}")
    if postgres:
        _echo_postgres(postgres, pg_restore_lines(postgres, str(source)), "restored")
