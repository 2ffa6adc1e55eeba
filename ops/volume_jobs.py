"""Volume jobs on one store node, as the operator commands run them: start a job per volume,
wait for it (with a progress bar on a terminal), and the compaction of one node by garbage
threshold. Shared by `pinhole volume verify|compact` (one node) and `pinhole compact --all`
(every store node the directory lists)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any, Final

import click

from ops.cli_support import CliError, human_bytes
from store.client import StoreClient, StoreClientError

POLL_INTERVAL_S: Final = 0.5


async def run_jobs(
    c: StoreClient,
    vids: list[int],
    kind: str,
    *,
    progress: bool,
    bytes_per_s_max: float | None = None,
    label: str = "",
) -> list[dict[str, Any]]:
    """Runs the job on each volume in turn and waits for it, with a progress bar named
    `label` + kind + volume. A job of the kind already running on a volume (409 busy: the
    node's own background compaction) is waited for instead of started."""
    results = []
    for vid in vids:
        try:
            await c.start_job(vid, kind, bytes_per_s_max=bytes_per_s_max)
        except StoreClientError as e:
            if e.code != "busy":
                raise
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=1000, desc=f"{label}{kind} v{vid}", unit="‰", leave=True)
        try:
            while True:
                job = await c.job(vid, kind)
                if bar is not None:
                    bar.n = int(1000 * job["progress"])
                    bar.refresh()
                if job["state"] != "running":
                    break
                await asyncio.sleep(POLL_INTERVAL_S)
        finally:
            if bar is not None:
                bar.close()
        results.append(job)
    return results


async def chosen_volumes(c: StoreClient, vid: int | None, all_: bool) -> list[dict[str, Any]]:
    """The node's volume `vid`, or with `all_` every volume of the node."""
    vols = await c.volumes()
    if vid is not None:
        chosen = [v for v in vols if v["volume_id"] == vid]
        if not chosen:
            raise CliError(f"volume {vid} is not on {c.base_url}")
        return chosen
    if not all_:
        raise CliError("name a volume with --volume, or pass --all", 2)
    return vols


async def compact_node(
    c: StoreClient,
    *,
    vid: int | None,
    threshold: float,
    progress: bool,
    bytes_per_s_max: float | None,
    label: str = "",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Compacts volume `vid` whatever its garbage, or (vid None) every volume of the node
    whose garbage ratio is at least `threshold`, one at a time. Returns (the volumes
    checked, the finished jobs)."""
    vols = await chosen_volumes(c, vid, True)
    due = vols if vid is not None else [v for v in vols if v["garbage_ratio"] >= threshold]
    jobs = await run_jobs(
        c,
        [v["volume_id"] for v in due],
        "compact",
        progress=progress,
        bytes_per_s_max=bytes_per_s_max,
        label=label,
    )
    return vols, jobs


def compaction_lines(jobs: list[dict[str, Any]]) -> list[str]:
    """One line per compaction: sizes and time, or why it failed."""
    lines = []
    for j in jobs:
        r = j["result"]
        if j["state"] == "done" and r:
            saved = r["size_before"] - r["size_after"]
            lines.append(
                f"volume {j['volume_id']}: {human_bytes(r['size_before'])} -> "
                f"{human_bytes(r['size_after'])} ({human_bytes(saved)} reclaimed) "
                f"in {r['elapsed_s']:.1f} s"
            )
        else:
            lines.append(f"volume {j['volume_id']}: compaction {j['state']}: {j['error']}")
    return lines


def echo_compactions(jobs: list[dict[str, Any]], *, indent: str = "") -> None:
    for line in compaction_lines(jobs):
        click.echo(indent + line)


def runtime_dir() -> Path:
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())


def default_lock_path(node: str) -> Path:
    """The compaction lock of one node (every compaction command of that node takes it)."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in node)
    return runtime_dir() / f"pinhole-compact-{safe}.lock"
