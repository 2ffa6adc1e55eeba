"""`pinhole f4 watch | rebalance`: the cell's coordinator (f4/watch.py) and moving healthy
blocks for placement (f4/rebalance.py); docs/operations/f4.md.

`watch` runs until SIGINT/SIGTERM (or one tick with --once), serving /healthz, /status and
/metrics; it runs the jobs it queues only while it can take the cell's lock. `rebalance`
holds the lock (exit 75 when another run has it) and runs `rebalance` jobs of the f4 queue,
so a killed run leaves a job (and the volume's journal) that the next run resumes.
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
from f4 import jobs as f4_jobs
from f4 import rebalance as rebalancing
from f4.errors import F4Error
from f4.index import load as load_index
from f4.watch import WatchService
from ops.cli_support import (
    EXIT_FAILED,
    EXIT_USAGE,
    CliError,
    emit_json,
    exclusive_lock,
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
