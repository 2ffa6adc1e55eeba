"""`pinhole f4 watch | rebalance | reclaim`: the cell's coordinator (f4/watch.py), moving
healthy blocks for placement (f4/rebalance.py) and deleting stale files (f4/stale.py);
docs/operations/f4.md.

`watch` runs until SIGINT/SIGTERM (or one tick with --once), serving /healthz, /status and
/metrics; it runs the jobs it queues only while it can take the cell's lock. `rebalance`
holds the lock (exit 75 when another run has it) and runs `rebalance` jobs of the f4 queue,
so a killed run leaves a job (and the volume's journal) that the next run resumes.
`reclaim` is a command of its own rather than an option of `rebuild` or `status`: it is the
only one that deletes data no damage caused (status only reads; rebuild writes what is
missing), so an operator runs it, or a cron job does, knowingly. It holds the lock too
(exit 75), needs no job (every decision is taken again on every run, so a killed run leaves
nothing to resume) and no metadata database.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click

from common.db import Database, migrate, open_database
from common.ids import IdGenerator
from common.jobs import JobState, JobStore
from common.jobs.local import Throttle
from f4 import jobs as f4_jobs
from f4 import rebalance as rebalancing
from f4 import stale as staleness
from f4.errors import F4Error
from f4.index import load as load_index
from f4.watch import WatchService
from ops.cli_support import (
    EXIT_FAILED,
    EXIT_USAGE,
    CliError,
    emit_json,
    exclusive_lock,
    human_bytes,
    load_config,
    metadata_database_options,
    operator_credentials,
    run,
    setup_logging,
    show_progress,
)
from ops.f4_cmds import (
    _Bars,
    _config,
    _job_outcome,
    _json_option,
    _open_cell,
    _run_jobs,
    _volume_option,
    _volumes,
    _with_jobs,
    f4_group,
)
from transformer.config import media_config

_SECRET = click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cluster secret (default: [f4] cluster_secret_file, $PINHOLE_CLUSTER_SECRET or "
    "./.pinhole/cluster.secret).",
)


# -- watch -----------------------------------------------------------------------------------


@f4_group.command("watch")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    help="Seconds between ticks (default: [f4] watch_interval_s).",
)
@click.option("--once", is_flag=True, help="One tick (queue and run what it finds), then exit.")
@click.option("--host", help="Address to listen on (default: [f4] watch_host).")
@click.option("--port", type=int, help="Port to listen on (default: [f4] watch_port; 0: any).")
@_SECRET
@_json_option
@metadata_database_options
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def watch_cmd(
    ctx: click.Context,
    interval: float | None,
    once: bool,
    host: str | None,
    port: int | None,
    secret_file: Path | None,
    json_output: bool,
    media_data: Path,
    database_url: str | None,
    log_level: str,
) -> None:
    """Watch the cell: every --interval seconds check every storage node's listing against
    the indexes and queue a rebuild as soon as a block is lost (a node that stopped
    answering only after [f4] node_lost_after_s), scrub every block against its sidecar
    every [f4] scrub_interval_s, queue rebalances every [f4] rebalance_interval_s (0:
    never), and run the queued jobs whenever the cell's lock is free. Serves /healthz,
    /status (admin) and /metrics until SIGINT/SIGTERM; --once runs one tick and prints
    what it saw."""
    from f4 import watch_server

    setup_logging(log_level, service="f4-watch")
    # A node that is down is the watcher's business, not a warning per request.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    config = _config(ctx, watch_host=host, watch_port=port)
    try:
        media = media_config(
            load_config(ctx.obj["config_path"]), data_dir=str(media_data), database_url=database_url
        )
    except Exception as e:
        raise CliError(str(e), EXIT_USAGE) from e
    if not media.database_url:
        media.data_dir.mkdir(parents=True, exist_ok=True)
    with _open_cell(config, secret_file) as cell:
        # What /status and /metrics accept: the operator's credentials.
        secret = secret_file or config.cluster_secret_file
        credentials = None if once else operator_credentials(secret)

        async def go() -> dict[str, Any] | None:
            db: Database = await open_database(media.database, schema=media.database_schema or None)
            try:
                await migrate(db, f4_jobs.COMPONENT, f4_jobs.MIGRATIONS)
                service = WatchService(
                    cell, JobStore(db), interval_s=interval or config.watch_interval_s
                )
                if once:
                    await service.tick()
                    return service.status()
                assert credentials is not None
                await watch_server.serve_forever(
                    service,
                    credentials=credentials,
                    host=config.watch_host,
                    port=config.watch_port,
                )
                return None
            finally:
                await db.close()

        doc = run(go())
    if doc is None:
        return
    if json_output:
        emit_json(doc)
        return
    last = doc["last_tick"]
    counters = doc["counters"]
    click.echo(
        f"tick {last['tick']}: {last['nodes_up']} nodes up, waiting {last['nodes_waiting']}, "
        f"lost {last['nodes_lost']}; {last['volumes']} volumes, {last['blocks']} blocks, "
        f"{last['blocks_lost']} lost; rebuilds queued {counters['rebuilds_queued']}, "
        f"jobs run {counters['jobs_run']}"
    )


# -- rebalance -------------------------------------------------------------------------------


@f4_group.command("rebalance")
@_volume_option
@click.option("--dry-run", is_flag=True, help="Say which blocks would move; change nothing.")
@_SECRET
@_json_option
@metadata_database_options
@click.pass_context
def rebalance_cmd(
    ctx: click.Context,
    volume: int | None,
    dry_run: bool,
    secret_file: Path | None,
    json_output: bool,
    media_data: Path,
    database_url: str | None,
) -> None:
    """Move healthy blocks where placement wants them: off a node holding more than [f4]
    rebalance_slack_blocks blocks more than another (after a node was added), and apart
    when a stripe keeps two blocks in one failure domain although the cell has a free one.
    Each move copies the block, checks the copy against its sidecar on the target, points
    a new index generation at it, then deletes the old copy; paced at [f4] rebuild_mb_s.
    Cron-safe (exit 75 when the cell's lock is held); a killed run resumes on the next;
    exit 1 when a move failed."""
    config = _config(ctx)
    with _open_cell(config, secret_file) as cell:
        store = cell.store
        listings = rebalancing.listings_of(store)
        loads = rebalancing.node_loads(listings)
        volumes = _volumes(cell, volume, written=True)
        planned: dict[int, list[rebalancing.Move]] = {}
        for v in volumes:
            try:
                idx = load_index(store, v, racks=config.rack_of)
            except F4Error as e:
                raise CliError(f"volume {v}: {e.message}") from e
            planned[v] = rebalancing.plan(
                listings,
                store.nodes(),
                idx,
                racks=config.rack_of,
                slack=config.rebalance_slack_blocks,
                moves_max=config.rebalance_moves_max,
            )
        journaled = {v for v in volumes if rebalancing.journal_path(config.work_dir, v).exists()}
        head = {
            "loads": loads,
            "skew": rebalancing.skew(listings),
            "slack": config.rebalance_slack_blocks,
            "throttle_mb_s": config.rebuild_mb_s,
        }
        if dry_run:
            rows = [
                {
                    "volume": v,
                    "outcome": "would move" if planned[v] else "balanced",
                    "moves": [_move_json(m) for m in planned[v]],
                }
                for v in volumes
            ]
            _report(json_output, {"dry_run": True, **head, "volumes": rows})
            return
        with exclusive_lock(config.lock_path, "another f4 migrate, rebuild or rebalance"):
            id_gen = IdGenerator(config.id_shard)

            async def use(jobs: JobStore) -> list[dict[str, Any]]:
                await f4_jobs.release_orphans(jobs)
                cell.store.clean_temporaries()
                wanted = []
                for v in volumes:
                    pending = [
                        j
                        for j in await f4_jobs.jobs_of(jobs.db, f4_jobs.REBALANCE, v)
                        if j.state != JobState.DONE
                    ]
                    if planned[v] or v in journaled or pending:
                        wanted.append(
                            await f4_jobs.enqueue(
                                jobs.db,
                                id_gen,
                                f4_jobs.REBALANCE,
                                v,
                                now=time.time(),
                                attempts_max=config.attempts_max,
                            )
                        )
                ended, outcomes = await _run_jobs(
                    jobs, cell, wanted, _Bars(show_progress(json_output), "rebalance")
                )
                return [
                    {"volume": j.subject_id, **_job_outcome(ended[j.job_id], outcomes)}
                    for j in wanted
                ]

            done = _with_jobs(ctx, media_data, database_url, use)
        after = rebalancing.listings_of(store)
    ran = {d["volume"] for d in done}
    rows = done + [{"volume": v, "outcome": "balanced"} for v in volumes if v not in ran]
    rows.sort(key=lambda r: r["volume"])
    doc = {
        "dry_run": False,
        **head,
        "loads_after": rebalancing.node_loads(after),
        "skew_after": rebalancing.skew(after),
        "volumes": rows,
    }
    _report(json_output, doc)
    if any(r["outcome"] in ("failed", "dead") for r in rows):
        raise SystemExit(EXIT_FAILED)


def _move_json(m: rebalancing.Move) -> dict[str, Any]:
    return {
        "stripe": m.stripe,
        "block": m.block,
        "from": m.source,
        "to": m.target,
        "reason": m.reason,
    }


def _report(json_output: bool, doc: dict[str, Any]) -> None:
    if json_output:
        emit_json(doc)
        return
    loads = " ".join(f"{n}:{c}" for n, c in doc["loads"].items())
    click.echo(f"blocks per node: {loads} (skew {doc['skew']}, slack {doc['slack']})")
    for r in doc["volumes"]:
        if r["outcome"] == "done":
            click.echo(
                f"volume {r['volume']}: moved {r['blocks_moved']} block(s) "
                f"({r['blocks_found_done']} found moved, {r['moves_rolled_back']} rolled back)"
            )
        elif "moves" in r:
            click.echo(f"volume {r['volume']}: {r['outcome']} {len(r['moves'])} block(s)")
            for m in r["moves"][:20]:
                click.echo(
                    f"  stripe {m['stripe']} block {m['block']}: {m['from']} -> {m['to']} "
                    f"({m['reason']})"
                )
        else:
            click.echo(f"volume {r['volume']}: {r['outcome']} {r.get('error', '')}".rstrip())
    if "skew_after" in doc:
        click.echo(f"skew after: {doc['skew_after']}")


# -- reclaim ---------------------------------------------------------------------------------


@f4_group.command("reclaim")
@click.option("--node", "nodes", multiple=True, help="Only the stale files on this node (repeat).")
@click.option("--dry-run", is_flag=True, help="List the stale files; delete nothing.")
@_SECRET
@_json_option
@click.pass_context
def reclaim_cmd(
    ctx: click.Context,
    nodes: tuple[str, ...],
    dry_run: bool,
    secret_file: Path | None,
    json_output: bool,
) -> None:
    """Delete the stale files on the storage nodes now: blocks, sidecars and index copies
    that their volume's committed index generation (by a quorum of its copies) places on
    another node, as left by a node that came back after its blocks were rebuilt
    elsewhere. Each is deleted only when the placed copy is healthy (read against its
    sidecar, at [f4] rebuild_mb_s); a volume whose index copies disagree is left alone.
    Cron-safe (exit 75 when the cell's lock is held); exit 1 when a stale file was kept
    because its placed copy is not healthy (`pinhole f4 rebuild` first)."""
    config = _config(ctx)
    unknown = sorted(set(nodes) - {n.name for n in config.nodes})
    if unknown:
        raise CliError(f"no node {', '.join(unknown)} in the cell", EXIT_USAGE)
    with _open_cell(config, secret_file) as cell:
        volumes = _volumes(cell, None, written=True)

        def survey() -> tuple[list[staleness.StaleFile], dict[tuple[str, str], int]]:
            files, sizes = staleness.survey(cell.store, volumes, racks=config.rack_of)
            return [f for f in files if not nodes or f.node in nodes], sizes

        if dry_run:
            files, sizes = survey()
            doc = _stale_doc(files, sizes)
            _report_reclaim(json_output, {"dry_run": True, **doc})
            return
        with exclusive_lock(config.lock_path, "another f4 migrate, rebuild or rebalance"):
            files, sizes = survey()
            report = staleness.reclaim(
                cell.store,
                files,
                racks=config.rack_of,
                throttle=Throttle(config.rebuild_mb_s * 1e6),
                files_max=len(files),  # an operator's run deletes all it found
            )
    doc = {
        "dry_run": False,
        **_stale_doc(files, sizes),
        "deleted": len(report.deleted),
        "bytes_deleted": report.bytes_deleted,
        "refused": [
            {"node": r.file.node, "name": r.file.name, "reason": r.reason} for r in report.refused
        ],
    }
    _report_reclaim(json_output, doc)
    if report.refused:
        raise SystemExit(EXIT_FAILED)


def _stale_doc(
    files: list[staleness.StaleFile], sizes: dict[tuple[str, str], int]
) -> dict[str, Any]:
    return {
        "files": len(files),
        "bytes": sum(sizes[(f.node, f.name)] for f in files),
        "nodes": staleness.totals(files, sizes),
        "stale": [
            {
                "node": f.node,
                "name": f.name,
                "kind": f.kind,
                "placed": f.placed,
                "bytes": sizes[(f.node, f.name)],
            }
            for f in files
        ],
    }


def _report_reclaim(json_output: bool, doc: dict[str, Any]) -> None:
    if json_output:
        emit_json(doc)
        return
    for node, row in doc["nodes"].items():
        click.echo(f"{node}: {row['files']} stale file(s), {human_bytes(row['bytes'])}")
    if doc["dry_run"]:
        for f in doc["stale"][:50]:
            where = f" (placed on {f['placed']})" if f["placed"] else ""
            click.echo(f"  {f['node']}/{f['name']}: {f['kind']}{where}")
        click.echo(f"would delete {doc['files']} file(s), {human_bytes(doc['bytes'])}")
        return
    click.echo(f"deleted {doc['deleted']} file(s), {human_bytes(doc['bytes_deleted'])}")
    for r in doc["refused"][:50]:
        click.echo(f"  kept {r['node']}/{r['name']}: {r['reason']}")
