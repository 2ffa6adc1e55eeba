"""`pinhole volume ...`: operator commands acting on one store node over its HTTP API, and the
cluster-wide replica moves (ops/replication_cmds.py)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from common.photo import VOLUME_ID_MAX
from ops.cli_support import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    CliError,
    emit_json,
    exclusive_lock,
    human_bytes,
    operator_credentials,
    run,
    show_progress,
    table,
)
from ops.replication_cmds import balance, fix_replication
from ops.volume_jobs import (
    chosen_volumes,
    compact_node,
    default_lock_path,
    echo_compactions,
    run_jobs,
)
from store.client import StoreClient, StoreClientError
from store.config import DEFAULT_PORT

DEFAULT_NODE = f"http://127.0.0.1:{DEFAULT_PORT}"


def node_option(f: Any) -> Any:
    f = click.option(
        "--node",
        default=lambda: os.environ.get("PINHOLE_NODE", DEFAULT_NODE),
        show_default=f"$PINHOLE_NODE or {DEFAULT_NODE}",
        help="Base URL of the store node.",
    )(f)
    f = click.option(
        "--secret-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Cluster secret (default: $PINHOLE_CLUSTER_SECRET or ./.pinhole/cluster.secret).",
    )(f)
    f = click.option("--json", "json_output", is_flag=True, help="Print JSON for scripts.")(f)
    return f


@click.group()
def volume() -> None:
    """Volume administration on a store node."""


def _client(node: str, secret_file: Path | None) -> StoreClient:
    return StoreClient(node, credentials=operator_credentials(secret_file), timeout_s=60.0)


def _fail(e: StoreClientError) -> CliError:
    return CliError(str(e), EXIT_UNREACHABLE if e.status == 0 else EXIT_FAILED)


T = TypeVar("T")


def _call(
    node: str,
    secret_file: Path | None,
    action: Callable[[StoreClient], Awaitable[T]],
) -> T:
    """Runs one client action against the node; client errors become one-line exits."""

    async def go() -> T:
        async with _client(node, secret_file) as c:
            return await action(c)

    try:
        return run(go())
    except StoreClientError as e:
        raise _fail(e) from e


def _volume_rows(vols: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for v in sorted(vols, key=lambda v: v["volume_id"]):
        state = v["mode"] + (f" ({v['reason']})" if v["reason"] else "")
        rows.append(
            [
                str(v["volume_id"]),
                state,
                human_bytes(v["size_bytes"]),
                f"{100 * v['size_bytes'] / v['size_bytes_max']:.1f}%",
                str(v["needles_live"]),
                f"{100 * v['garbage_ratio']:.1f}%",
                str(v["compaction_revision"]),
            ]
        )
    return rows


@volume.command("list")
@node_option
def list_(node: str, secret_file: Path | None, json_output: bool) -> None:
    """List the node's volumes."""
    vols = _call(node, secret_file, lambda c: c.volumes())
    if json_output:
        emit_json({"volumes": vols})
        return
    headers = ["volume", "state", "size", "full", "needles", "garbage", "revision"]
    click.echo(table(_volume_rows(vols), headers))


@volume.command("create")
@node_option
@click.option("--volume", "vid", type=click.IntRange(0, VOLUME_ID_MAX), required=True)
def create(node: str, secret_file: Path | None, json_output: bool, vid: int) -> None:
    """Create an empty volume."""
    doc = _call(node, secret_file, lambda c: c.create_volume(vid))
    if json_output:
        emit_json(doc)
    else:
        click.echo(f"volume {vid} created on {node}")


def _set_mode(node: str, secret_file: Path | None, json_output: bool, vid: int, mode: str) -> None:
    doc = _call(node, secret_file, lambda c: c.set_mode(vid, mode))
    if json_output:
        emit_json(doc)
    else:
        click.echo(f"volume {vid} is {doc['mode']}")


@volume.command("readonly")
@node_option
@click.option("--volume", "vid", type=int, required=True)
def readonly(node: str, secret_file: Path | None, json_output: bool, vid: int) -> None:
    """Stop writes to a volume (reads and deletes go on)."""
    _set_mode(node, secret_file, json_output, vid, "read_only")


@volume.command("writable")
@node_option
@click.option("--volume", "vid", type=int, required=True)
def writable(node: str, secret_file: Path | None, json_output: bool, vid: int) -> None:
    """Take writes again (not for full or sealed volumes)."""
    _set_mode(node, secret_file, json_output, vid, "writable")


@volume.command("seal")
@node_option
@click.option("--volume", "vid", type=int, required=True)
def seal(node: str, secret_file: Path | None, json_output: bool, vid: int) -> None:
    """Seal a volume for good: reads and deletes only (what f4 migrates)."""
    _set_mode(node, secret_file, json_output, vid, "sealed")


def _require_target(vid: int | None, all_: bool) -> None:
    if vid is None and not all_:
        raise CliError("name a volume with --volume, or pass --all", 2)


@volume.command("verify")
@node_option
@click.option("--volume", "vid", type=int, help="The volume to verify.")
@click.option("--all", "all_", is_flag=True, help="Verify every volume of the node.")
def verify(
    node: str, secret_file: Path | None, json_output: bool, vid: int | None, all_: bool
) -> None:
    """Read every needle and check magic and checksum. Exit 1 when any volume is damaged."""
    _require_target(vid, all_)

    async def go(c: StoreClient) -> list[dict[str, Any]]:
        vols = await chosen_volumes(c, vid, all_)
        ids = [v["volume_id"] for v in vols]
        return await run_jobs(c, ids, "verify", progress=show_progress(json_output))

    jobs = _call(node, secret_file, go)
    bad = [j for j in jobs if j["state"] != "done" or not j["result"]["ok"]]
    if json_output:
        emit_json({"ok": not bad, "volumes": jobs})
    else:
        for j in jobs:
            r = j["result"] or {}
            if j["state"] != "done":
                click.echo(f"volume {j['volume_id']}: verify {j['state']}: {j['error']}")
                continue
            verdict = "ok" if r["ok"] else "DAMAGED"
            click.echo(
                f"volume {j['volume_id']}: {verdict}: {r['needles']} needles, "
                f"{r['live_checked']} live checked, {r['corrupt_live']} corrupt live, "
                f"{r['corrupt_dead']} corrupt dead, {r['map_mismatches']} index mismatches"
            )
            for p in r["problems"][:10]:
                click.echo(f"  {p}")
    if bad:
        raise SystemExit(EXIT_FAILED)


@volume.command("compact")
@node_option
@click.option("--volume", "vid", type=int, help="Compact this volume whatever its garbage.")
@click.option("--all", "all_", is_flag=True, help="Every volume whose garbage passes --threshold.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="Garbage ratio that makes a volume due (with --all).",
)
@click.option(
    "--rate",
    "rate_mb_s",
    type=click.FloatRange(min=0.1),
    help="Copy at most this many MB/s (default: the node's setting).",
)
@click.option(
    "--lock",
    "lock_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Lock file (default: one per node in $XDG_RUNTIME_DIR or /tmp).",
)
def compact(
    node: str,
    secret_file: Path | None,
    json_output: bool,
    vid: int | None,
    all_: bool,
    threshold: float,
    rate_mb_s: float | None,
    lock_path: Path | None,
) -> None:
    """Reclaim deleted and overwritten space. Safe under cron: a lock keeps two runs apart
    (exit 75 when taken); exit 1 when a compaction fails, 3 when the node is unreachable."""
    _require_target(vid, all_)

    async def go(c: StoreClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await compact_node(
            c,
            vid=vid,
            threshold=threshold,
            progress=show_progress(json_output),
            bytes_per_s_max=rate_mb_s * 1e6 if rate_mb_s else None,
        )

    with exclusive_lock(lock_path or default_lock_path(node), "another compaction"):
        vols, jobs = _call(node, secret_file, go)
    failed = [j for j in jobs if j["state"] != "done"]
    if json_output:
        emit_json({"ok": not failed, "checked": len(vols), "compacted": jobs})
    else:
        if not jobs:
            click.echo(f"nothing to compact ({len(vols)} volumes below {threshold:.0%} garbage)")
        echo_compactions(jobs)
    if failed:
        raise SystemExit(EXIT_FAILED)


volume.add_command(fix_replication)
volume.add_command(balance)
