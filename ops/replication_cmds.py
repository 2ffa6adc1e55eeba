"""`pinhole volume fix-replication` and `pinhole volume balance`: replica moves planned by
the directory and carried out here, one volume at a time.

A move copies a healthy replica's volume file to a target node (the target pulls it from the
source, throttled), verifies every needle of the copy, then tells the directory the new
replica is ready (which drops the replica it replaces). The directory records the new
replica as "copying" before the copy starts, so deletes issued meanwhile reach it too.

Both commands are resumable: run again after an interruption, they ask the directory for
the plan again; a replica still "copying" is reused and its pull continues from the bytes
already on the target.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import click

from common.credentials import Credentials
from ops.cli_support import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    CliError,
    emit_json,
    human_bytes,
    operator_credentials,
    run,
    show_progress,
)
from ops.local_cluster import PORT_BASE_DEFAULT
from store.client import StoreClient, StoreClientError

DEFAULT_DIRECTORY: Final = f"http://127.0.0.1:{PORT_BASE_DEFAULT}"
POLL_INTERVAL_S: Final = 0.3
DEFAULT_RATE_MB_S: Final = 100.0

Progress = Callable[[int, int], None]


def directory_options(f: Any) -> Any:
    f = click.option(
        "--directory",
        "directory_url",
        default=DEFAULT_DIRECTORY,
        show_default=True,
        envvar="PINHOLE_DIRECTORY",
        help="Base URL of the directory ($PINHOLE_DIRECTORY).",
    )(f)
    f = click.option(
        "--secret-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Cluster secret (default: $PINHOLE_CLUSTER_SECRET or ./.pinhole/cluster.secret).",
    )(f)
    f = click.option(
        "--rate",
        "rate_mb_s",
        type=click.FloatRange(min=0.1),
        default=DEFAULT_RATE_MB_S,
        show_default=True,
        help="Copy at most this many MB/s per move.",
    )(f)
    f = click.option("--json", "json_output", is_flag=True, help="Print JSON for scripts.")(f)
    return f


async def _wait_job(
    c: StoreClient, vid: int, kind: str, progress: Progress | None
) -> dict[str, Any]:
    while True:
        job = await c.job(vid, kind)
        if progress is not None:
            progress(int(1000 * job.get("progress", 0.0)), 1000)
        if job["state"] != "running":
            return job
        await asyncio.sleep(POLL_INTERVAL_S)


async def carry_out(
    directory: Any,
    move: dict[str, Any],
    *,
    credentials: Credentials,
    bytes_per_s_max: float,
    progress: Progress | None,
    balancing: bool,
) -> dict[str, Any]:
    """One move: register the target as copying, pull, verify, mark ready; when balancing,
    remove the volume from the node it moved off."""
    vid = move["volume_id"]
    source, target, replaces = move["source"], move["target"], move.get("replaces")
    result: dict[str, Any] = {
        "volume_id": vid,
        "source": source["node_id"],
        "target": target["node_id"],
        "replaces": replaces,
    }
    await directory.add_replica(vid, target["node_id"], replaces=replaces)
    async with StoreClient(target["url"], credentials=credentials, timeout_s=60.0) as t:
        have = {v["volume_id"] for v in await t.volumes()}
        if vid not in have:
            try:
                await t.start_pull(vid, source["url"], bytes_per_s_max=bytes_per_s_max)
            except StoreClientError as e:
                if e.code != "busy":  # a pull of this volume already runs: wait for it
                    raise
            job = await _wait_job(t, vid, "pull", progress)
            if job["state"] != "done":
                result.update(ok=False, error=f"pull {job['state']}: {job.get('error')}")
                return result
            result["bytes_copied"] = (job.get("result") or {}).get("bytes_copied")
        await t.start_job(vid, "verify")
        job = await _wait_job(t, vid, "verify", None)
        if job["state"] != "done" or not job["result"]["ok"]:
            result.update(ok=False, error=f"the copy on {target['node_id']} failed verification")
            return result
    await directory.replica_ready(vid, target["node_id"])
    if balancing and replaces:
        old = source["url"] if source["node_id"] == replaces else None
        if old:
            async with StoreClient(old, credentials=credentials) as o:
                try:
                    await o.delete_volume(vid)
                except StoreClientError as e:
                    result["cleanup_error"] = str(e)
    result["ok"] = True
    return result


async def _run_plan(
    directory_url: str,
    credentials: Credentials,
    *,
    kind: str,
    rate_mb_s: float,
    json_output: bool,
) -> dict[str, Any]:
    from directory.client import DirectoryClient

    async with DirectoryClient(directory_url, credentials=credentials) as d:
        moves = await (d.plan_balance() if kind == "balance" else d.plan_replication())
        results: list[dict[str, Any]] = []
        bar = None
        if show_progress(json_output) and moves:
            from tqdm import tqdm

            bar = tqdm(total=len(moves) * 1000, desc=kind, unit="‰")
        try:
            for i, move in enumerate(moves):

                def progress(done: int, total: int, i: int = i) -> None:
                    if bar is not None:
                        bar.n = i * 1000 + done
                        bar.refresh()

                vid = move["volume_id"]
                reopen = False
                if kind == "balance":
                    # No write may land on the source while it is copied.
                    lv = await d.volume(vid)
                    reopen = bool(lv["writable"])
                    await d.set_readonly(vid, reason="balance")
                    await _set_replicas_mode(lv, credentials, "read_only")
                try:
                    results.append(
                        await carry_out(
                            d,
                            move,
                            credentials=credentials,
                            bytes_per_s_max=rate_mb_s * 1e6,
                            progress=progress,
                            balancing=kind == "balance",
                        )
                    )
                finally:
                    if reopen:
                        lv = await d.volume(vid)
                        await _set_replicas_mode(lv, credentials, "writable")
                        await d.set_writable(vid)
        finally:
            if bar is not None:
                bar.close()
    return {"ok": all(r.get("ok") for r in results), "moves": results}


async def _set_replicas_mode(lv: dict[str, Any], credentials: Credentials, mode: str) -> None:
    for rep in lv["replicas"]:
        if rep.get("alive", True):
            async with StoreClient(rep["url"], credentials=credentials) as c:
                await c.set_mode(lv["volume_id"], mode)


def _report(doc: dict[str, Any], json_output: bool, kind: str) -> None:
    if json_output:
        emit_json(doc)
    else:
        if not doc["moves"]:
            click.echo(f"{kind}: nothing to do")
        for r in doc["moves"]:
            what = f"volume {r['volume_id']}: {r['source']} -> {r['target']}"
            if r.get("replaces"):
                what += f" (replaces {r['replaces']})"
            if r.get("ok"):
                copied = r.get("bytes_copied")
                click.echo(what + (f", {human_bytes(copied)} copied" if copied else "") + ", ok")
            else:
                click.echo(what + f": FAILED: {r.get('error')}")
    if not doc["ok"]:
        raise SystemExit(EXIT_FAILED)


def _call(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    from directory.errors import DirectoryError

    async def go() -> dict[str, Any]:
        return await coro

    try:
        return run(go())
    except DirectoryError as e:
        raise CliError(str(e), EXIT_UNREACHABLE if e.status == 0 else EXIT_FAILED) from e
    except StoreClientError as e:
        raise CliError(str(e), EXIT_UNREACHABLE if e.status == 0 else EXIT_FAILED) from e


@click.command("fix-replication")
@directory_options
def fix_replication(
    directory_url: str, secret_file: Path | None, rate_mb_s: float, json_output: bool
) -> None:
    """Restore the replica count of every logical volume after a node is lost. Resumable;
    exit 1 when a move fails."""
    credentials = operator_credentials(secret_file)
    doc = _call(
        _run_plan(
            directory_url,
            credentials,
            kind="replication",
            rate_mb_s=rate_mb_s,
            json_output=json_output,
        )
    )
    _report(doc, json_output, "fix-replication")


@click.command("balance")
@directory_options
def balance(
    directory_url: str, secret_file: Path | None, rate_mb_s: float, json_output: bool
) -> None:
    """Spread volumes over the store nodes (after nodes are added). Resumable; exit 1 when
    a move fails."""
    credentials = operator_credentials(secret_file)
    doc = _call(
        _run_plan(
            directory_url, credentials, kind="balance", rate_mb_s=rate_mb_s, json_output=json_output
        )
    )
    _report(doc, json_output, "balance")
