"""Cluster-wide housekeeping over every store node the directory lists:
`pinhole compact --all` (each node's volumes past a garbage threshold, one node at a time,
throttled, cron-safe) and `pinhole scrub status` (each volume's last scrub pass, what it
found, when the next is due; exit 1 when any is corrupt or overdue, for cron and
monitoring)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import click

from common.credentials import Credentials
from directory.client import DirectoryClient, DirectoryError
from ops.cli_support import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    emit_json,
    exclusive_lock,
    human_bytes,
    operator_credentials,
    run,
    show_progress,
    table,
)
from ops.local_cluster import PORT_BASE_DEFAULT
from ops.volume_jobs import compact_node, compaction_lines, default_lock_path, runtime_dir
from store.client import StoreClient, StoreClientError

DEFAULT_DIRECTORY: Final = f"http://127.0.0.1:{PORT_BASE_DEFAULT}"
STORE_TIMEOUT_S: Final = 60.0
# A volume whose last pass (or first sighting, never scrubbed) is older than this many
# scrub intervals is overdue.
OVERDUE_INTERVALS: Final = 2.0


def cluster_options(f: Any) -> Any:
    f = click.option(
        "--directory",
        "directory_url",
        default=DEFAULT_DIRECTORY,
        show_default=True,
        envvar="PINHOLE_DIRECTORY",
        help="Base URL of the directory ($PINHOLE_DIRECTORY); its store nodes are visited.",
    )(f)
    f = click.option(
        "--secret-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Cluster secret (default: $PINHOLE_CLUSTER_SECRET or ./.pinhole/cluster.secret).",
    )(f)
    f = click.option("--json", "json_output", is_flag=True, help="Print JSON for scripts.")(f)
    return f


async def store_nodes(directory_url: str, creds: Credentials) -> list[dict[str, Any]]:
    """The store nodes the directory lists (alive or not), by node id. Exits 3 when the
    directory does not answer, 1 when it refuses."""
    try:
        async with DirectoryClient(directory_url, credentials=creds) as d:
            nodes = await d.nodes()
    except DirectoryError as e:
        code = EXIT_UNREACHABLE if e.status == 0 else EXIT_FAILED
        raise CliError(f"directory {directory_url}: {e}", code) from e
    return sorted((n for n in nodes if n["role"] == "store"), key=lambda n: n["node_id"])


def cluster_lock_path(directory_url: str) -> Path:
    safe = "".join(ch if ch.isalnum() else "_" for ch in directory_url)
    return runtime_dir() / f"pinhole-compact-cluster-{safe}.lock"


# -- compact --all -------------------------------------------------------------------------------


@click.command("compact")
@cluster_options
@click.option("--all", "all_", is_flag=True, help="Every store node (required: says so).")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="Garbage ratio that makes a volume due.",
)
@click.option(
    "--rate",
    "rate_mb_s",
    type=click.FloatRange(min=0.1),
    help="Copy at most this many MB/s (default: each node's setting); one compaction runs "
    "at a time in the whole cluster.",
)
@click.option(
    "--lock",
    "lock_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Lock file (default: one per directory in $XDG_RUNTIME_DIR or /tmp).",
)
def compact_all(
    directory_url: str,
    secret_file: Path | None,
    json_output: bool,
    all_: bool,
    threshold: float,
    rate_mb_s: float | None,
    lock_path: Path | None,
) -> None:
    """Compact every volume past --threshold on every store node the directory lists, one
    node and one volume at a time. Cron-safe: a lock keeps two runs apart (exit 75 when
    taken; a node whose own `pinhole volume compact` lock is held is skipped, and the run
    exits 75 unless something failed). Exit 1 when a compaction failed or a live node did
    not answer, 3 when the directory did not. Nodes the directory lists as down are
    skipped and listed."""
    if not all_:
        raise CliError("pass --all (one node: `pinhole volume compact --node URL`)", EXIT_USAGE)
    creds = operator_credentials(secret_file)
    bytes_per_s_max = rate_mb_s * 1e6 if rate_mb_s else None
    with exclusive_lock(lock_path or cluster_lock_path(directory_url), "another compaction"):
        nodes = run(store_nodes(directory_url, creds))
        results = [
            _compact_one(n, creds, threshold, bytes_per_s_max, json_output=json_output)
            for n in nodes
        ]
    failed = [r for r in results if r["state"] in ("failed", "unreachable")]
    locked = [r for r in results if r["state"] == "locked"]
    if json_output:
        emit_json({"ok": not failed and not locked, "threshold": threshold, "nodes": results})
    else:
        if not results:
            click.echo(f"the directory {directory_url} lists no store node")
        for r in results:
            _echo_node(r, threshold)
    if failed:
        raise SystemExit(EXIT_FAILED)
    if locked:
        raise SystemExit(EXIT_LOCKED)


def _compact_one(
    node: dict[str, Any],
    creds: Credentials,
    threshold: float,
    bytes_per_s_max: float | None,
    *,
    json_output: bool,
) -> dict[str, Any]:
    """One node's compaction under its own lock: {node_id, url, state, checked, compacted,
    error}; state done | failed | unreachable | locked | down."""
    result: dict[str, Any] = {
        "node_id": node["node_id"],
        "url": node["url"],
        "state": "down",
        "checked": 0,
        "compacted": [],
        "error": None,
    }
    if not node["alive"]:
        return result

    async def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with StoreClient(node["url"], credentials=creds, timeout_s=STORE_TIMEOUT_S) as c:
            return await compact_node(
                c,
                vid=None,
                threshold=threshold,
                progress=show_progress(json_output),
                bytes_per_s_max=bytes_per_s_max,
                label=f"{node['node_id']} ",
            )

    try:
        with exclusive_lock(default_lock_path(node["url"]), "another compaction"):
            vols, jobs = run(go())
    except CliError as e:
        if e.exit_code != EXIT_LOCKED:
            raise
        result.update(state="locked", error=e.format_message())
        return result
    except StoreClientError as e:
        result.update(state="unreachable" if e.status == 0 else "failed", error=str(e))
        return result
    failed = any(j["state"] != "done" for j in jobs)
    result.update(state="failed" if failed else "done", checked=len(vols), compacted=jobs)
    return result


def _echo_node(r: dict[str, Any], threshold: float) -> None:
    head = f"{r['node_id']} ({r['url']})"
    if r["state"] == "down":
        click.echo(f"{head}: down, skipped")
    elif r["state"] in ("locked", "unreachable") or (r["error"] and not r["compacted"]):
        click.echo(f"{head}: {r['state']}: {r['error']}")
    elif not r["compacted"]:
        click.echo(f"{head}: nothing to compact ({r['checked']} volumes below {threshold:.0%})")
    else:
        click.echo(f"{head}:")
        for line in compaction_lines(r["compacted"]):
            click.echo("  " + line)


# -- scrub status --------------------------------------------------------------------------------


@click.group("scrub")
def scrub_group() -> None:
    """The store nodes' background scrubber."""


def volume_flags(v: dict[str, Any], interval_s: float, now: float) -> list[str]:
    """What is wrong with one volume's scrub record: corrupt (its last pass found corrupt
    live needles), overdue (no pass for OVERDUE_INTERVALS intervals; a volume never
    scrubbed counts from its first sighting), never (not scrubbed yet)."""
    flags = []
    if v["corrupt_found"]:
        flags.append("corrupt")
    base = v["last_pass_unix_s"] or v["first_seen_unix_s"]
    if interval_s > 0 and base is not None and now - base > OVERDUE_INTERVALS * interval_s:
        flags.append("overdue")
    if v["last_pass_unix_s"] is None:
        flags.append("never")
    return flags


async def _node_scrub(node: dict[str, Any], creds: Credentials, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "node_id": node["node_id"],
        "url": node["url"],
        "state": "down",
        "interval_s": None,
        "volumes": [],
        "error": None,
    }
    if not node["alive"]:
        return out
    try:
        async with StoreClient(node["url"], credentials=creds, timeout_s=STORE_TIMEOUT_S) as c:
            scrub = (await c.status())["scrub"]
    except StoreClientError as e:
        out.update(state="unreachable", error=str(e))
        return out
    interval_s = float(scrub["interval_s"])
    volumes = [{**v, "flags": volume_flags(v, interval_s, now)} for v in scrub["volumes"]]
    out.update(state="ok", interval_s=interval_s, volumes=volumes)
    return out


def _when(unix_s: float | None, *, none: str) -> str:
    if unix_s is None:
        return none
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@scrub_group.command("status")
@cluster_options
def scrub_status(directory_url: str, secret_file: Path | None, json_output: bool) -> None:
    """Per store node and volume: the last scrub pass, the bytes it read, the corrupt live
    needles it found, when the next is due. Flags a volume never scrubbed or overdue (no
    pass for 2 scrub intervals). Exit 1 when any volume is corrupt or overdue, else 3 when
    a node is down or did not answer, else 0."""
    creds = operator_credentials(secret_file)
    now = time.time()

    async def go() -> list[dict[str, Any]]:
        nodes = await store_nodes(directory_url, creds)
        return [await _node_scrub(n, creds, now) for n in nodes]

    nodes = run(go())
    flagged = [
        v for n in nodes for v in n["volumes"] if "corrupt" in v["flags"] or "overdue" in v["flags"]
    ]
    missing = [n for n in nodes if n["state"] != "ok"]
    if json_output:
        emit_json({"ok": not flagged and not missing, "checked_unix_s": now, "nodes": nodes})
    else:
        rows = []
        for n in nodes:
            if n["state"] != "ok":
                rows.append([n["node_id"], "-", n["state"], "-", "-", "-", n["error"] or ""])
                continue
            off = "off" if not n["interval_s"] else "-"
            for v in n["volumes"]:
                rows.append(
                    [
                        n["node_id"],
                        str(v["volume_id"]),
                        _when(v["last_pass_unix_s"], none="never"),
                        human_bytes(v["bytes_scrubbed"]),
                        str(v["corrupt_found"]),
                        _when(v["next_due_unix_s"], none=off),
                        " ".join(f.upper() for f in v["flags"]),
                    ]
                )
        headers = ["node", "volume", "last pass", "bytes", "corrupt", "next due", "flags"]
        click.echo(table(rows, headers))
    if flagged:
        raise SystemExit(EXIT_FAILED)
    if missing:
        raise SystemExit(EXIT_UNREACHABLE)
