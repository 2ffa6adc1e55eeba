"""`pinhole f4 migrate | status | verify | rebuild`: the operator's commands on the f4 cell
of the [f4] config (f4/config.py), docs/operations/f4.md.

`migrate` and `rebuild` hold the cell's lock (exit 75 when another run has it) and run
their work as jobs of the f4 queue (f4/jobs.py) on the metadata database (the one in
[media], or --media-data / --database-url), so a killed run leaves a job that the next run
resumes; holding the lock, a run first queues such orphaned jobs again and removes the
temporary block files their writers left. `status` and `verify` only read. Exit codes:
ops/cli_support.py.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from common.config import ConfigError
from common.db import Database, migrate, open_database
from common.ids import IdGenerator
from common.jobs import Job, JobRunner, JobState, JobStore
from common.jobs.local import Throttle
from common.photo import VOLUME_ID_MAX
from f4 import jobs as f4_jobs
from f4.cell import Candidate, Cell, StripeHealth
from f4.config import F4Config, f4_config
from f4.erasure import Codec
from f4.errors import F4Error
from f4.rebuild import RebuildProgress, VerifyReport, verify
from f4.stale import survey as stale_survey
from f4.stale import totals as stale_totals
from f4.watch import STATE_FILE as WATCH_STATE_FILE
from ops.cli_support import (
    EXIT_FAILED,
    EXIT_USAGE,
    CliError,
    credentials_options,
    emit_json,
    exclusive_lock,
    human_bytes,
    load_config,
    metadata_database_options,
    operator_credentials,
    run,
    service_credentials,
    setup_logging,
    show_progress,
    table,
)
from ops.f4_service_cmds import node_group
from transformer.config import media_config

T = TypeVar("T")


@click.group("f4")
def f4_group() -> None:
    """The f4 warm tier: migrate sealed volumes into it, see its health, repair it."""


f4_group.add_command(node_group)


def _json_option(f: Any) -> Any:
    return click.option("--json", "json_output", is_flag=True, help="Print JSON for scripts.")(f)


def _volume_option(f: Any) -> Any:
    return click.option(
        "--volume", "volume", type=click.IntRange(0, VOLUME_ID_MAX), help="Only this volume."
    )(f)


def _config(ctx: click.Context, **overrides: Any) -> F4Config:
    try:
        return f4_config(load_config(ctx.obj["config_path"]), **overrides)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e


@contextlib.contextmanager
def _open_cell(config: F4Config, secret_file: Path | None = None) -> Iterator[Cell]:
    """The cell, holding the operator's credentials (the cluster secret: --secret-file or
    the default) when it needs them: storage nodes take the blocks credential, and the
    directory the admin one to announce migrations and switch reads."""
    needs = config.directory_url or config.haystack_url or any(n.url for n in config.nodes)
    if secret_file is None:
        secret_file = config.cluster_secret_file
    credentials = operator_credentials(secret_file) if needs else None
    try:
        cell = Cell(config, credentials=credentials)
    except OSError as e:
        raise CliError(f"cannot open the f4 cell at {config.cell_root}: {e}") from e
    except F4Error as e:
        raise CliError(e.message) from e
    try:
        yield cell
    finally:
        cell.close()


def _with_jobs(
    ctx: click.Context,
    media_data: Path,
    database_url: str | None,
    use: Callable[[JobStore], Awaitable[T]],
) -> T:
    try:
        media = media_config(
            load_config(ctx.obj["config_path"]),
            data_dir=str(media_data),
            database_url=database_url,
        )
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    if not media.database_url and not media.data_dir.is_dir():
        raise CliError(f"no metadata directory {media.data_dir} (is --media-data right?)")

    async def go() -> T:
        db: Database = await open_database(media.database, schema=media.database_schema or None)
        try:
            await migrate(db, f4_jobs.COMPONENT, f4_jobs.MIGRATIONS)
            return await use(JobStore(db))
        finally:
            await db.close()

    return run(go())


class _Bars:
    """One tqdm bar per volume, on a terminal only."""

    def __init__(self, enabled: bool, verb: str) -> None:
        self.enabled = enabled
        self.verb = verb
        self._bars: dict[int, Any] = {}

    def fraction(self, volume: int, done: float) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self._bars.get(volume)
        if bar is None:
            bar = self._bars[volume] = tqdm(total=1000, desc=f"{self.verb} v{volume}", unit="‰")
        bar.n = min(1000, int(done * 1000))
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


async def _run_jobs(
    store: JobStore, cell: Cell, wanted: list[Job], bars: _Bars, *, parity: bool = False
) -> tuple[dict[int, Job], f4_jobs.Outcomes]:
    """Runs the f4 jobs due now; returns the wanted jobs as they ended, and what each did."""
    config = cell.config
    outcomes = f4_jobs.Outcomes()

    def on_rebuild(volume: int, p: RebuildProgress) -> None:
        bars.fraction(volume, p.blocks_done / max(1, p.blocks_total))

    runner = JobRunner(
        store,
        f4_jobs.handlers(
            cell, outcomes, on_migrate=bars.fraction, on_rebuild=on_rebuild, parity=parity
        ),
        queues=[f4_jobs.QUEUE],
        worker=f4_jobs.worker_name(),
        lease_s=config.lease_s,
        policies={k.name: f4_jobs.retry_policy(config) for k in f4_jobs.KINDS},
    )
    try:
        await runner.drain()
    finally:
        bars.close()
    return await f4_jobs.current(store.db, [j.job_id for j in wanted]), outcomes


def _job_outcome(job: Job, outcomes: f4_jobs.Outcomes) -> dict[str, Any]:
    doc: dict[str, Any] = {"job_id": str(job.job_id), "attempts": job.attempts}
    if job.state == JobState.DONE:
        doc["outcome"] = "done"
        doc.update(outcomes.results.get(job.job_id, {}))
    elif job.state == JobState.DEAD:
        doc["outcome"] = "dead"
        doc["error"] = job.last_error or ""
    else:
        doc["outcome"] = "failed" if job.job_id in outcomes.errors else "waiting"
        doc["error"] = outcomes.errors.get(job.job_id, job.last_error or "")
        doc["retry_in_s"] = round(max(0.0, job.run_after_unix_s - time.time()), 1)
    return doc


# -- migrate ---------------------------------------------------------------------------------


@f4_group.command("migrate")
@_volume_option
@click.option("--dry-run", is_flag=True, help="Say what would migrate; change nothing.")
@click.option(
    "--haystack-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The store node's volume directory (default: [f4] haystack_dir).",
)
@click.option(
    "--haystack-url",
    help="Read the sealed volumes through this store node's HTTP API instead, from another "
    "host (default: [f4] haystack_url).",
)
@click.option(
    "--directory-url",
    help="Announce migrations to this directory and switch reads to the cell "
    "(default: [f4] directory_url).",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cluster secret (default: $PINHOLE_CLUSTER_SECRET or ./.pinhole/cluster.secret).",
)
@_json_option
@metadata_database_options
@click.pass_context
def migrate_cmd(
    ctx: click.Context,
    volume: int | None,
    dry_run: bool,
    haystack_dir: Path | None,
    haystack_url: str | None,
    directory_url: str | None,
    secret_file: Path | None,
    json_output: bool,
    media_data: Path,
    database_url: str | None,
) -> None:
    """Migrate the sealed volumes whose newest needle is older than [f4] age_s_min (or
    only --volume), each checked blob by blob against Haystack before it counts as
    migrated; with a directory, the volume's reads then switch to the cell and its
    Haystack replicas are released. Cron-safe: exit 75 when another run holds the cell's
    lock; exit 1 when a migration failed (it is retried by a later run)."""
    config = _config(
        ctx,
        haystack_dir=None if haystack_dir is None else str(haystack_dir),
        haystack_url=haystack_url,
        directory_url=directory_url,
    )
    with _open_cell(config, secret_file) as cell:
        now = time.time()
        try:
            ids = [volume] if volume is not None else cell.haystack_volumes()
            candidates = [cell.candidate(v, now) for v in ids]
        except F4Error as e:
            raise CliError(e.message) from e
        if volume is not None and not candidates[0].due:
            if candidates[0].reason == "already migrated":
                _report_migrate(json_output, dry_run, [_skipped(candidates[0])])
                return
            raise CliError(f"volume {volume} is not due: {candidates[0].reason}")
        due = [c for c in candidates if c.due]
        skipped = [_skipped(c) for c in candidates if not c.due]
        if dry_run:
            planned = []
            for c in due:
                try:
                    p = cell.plan(c.volume)
                except F4Error as e:
                    raise CliError(f"volume {c.volume}: {e.message}") from e
                planned.append(
                    {
                        "volume": c.volume,
                        "outcome": "would migrate",
                        "age_s": round(c.age_s),
                        "blobs": p.blobs,
                        "plaintext_bytes": p.plaintext_bytes,
                        "stripes": p.stripes,
                        "damaged_needles": p.damaged_needles,
                    }
                )
            _report_migrate(json_output, True, planned + skipped)
            return
        with exclusive_lock(config.lock_path, "another f4 migrate or rebuild"):
            id_gen = IdGenerator(config.id_shard)

            async def use(store: JobStore) -> list[dict[str, Any]]:
                await f4_jobs.release_orphans(store)
                cell.store.clean_temporaries()
                wanted = [
                    await f4_jobs.enqueue(
                        store.db,
                        id_gen,
                        f4_jobs.MIGRATE,
                        c.volume,
                        now=time.time(),
                        attempts_max=config.attempts_max,
                    )
                    for c in due
                ]
                ended, outcomes = await _run_jobs(
                    store, cell, wanted, _Bars(show_progress(json_output), "migrate")
                )
                return [
                    {"volume": j.subject_id, **_job_outcome(ended[j.job_id], outcomes)}
                    for j in wanted
                ]

            done = _with_jobs(ctx, media_data, database_url, use)
    for d in done:
        if d["outcome"] == "done":
            d["outcome"] = "migrated"
    _report_migrate(json_output, False, done + skipped)
    if any(d["outcome"] in ("failed", "dead") for d in done):
        raise SystemExit(EXIT_FAILED)


def _skipped(c: Candidate) -> dict[str, Any]:
    return {"volume": c.volume, "outcome": "skipped", "reason": c.reason}


def _report_migrate(json_output: bool, dry_run: bool, rows: list[dict[str, Any]]) -> None:
    rows = sorted(rows, key=lambda r: r["volume"])
    if json_output:
        emit_json({"dry_run": dry_run, "volumes": rows})
        return
    if not rows:
        click.echo("no Haystack volumes")
        return
    lines = []
    for r in rows:
        if "plaintext_bytes" in r:
            detail = (
                f"{r['blobs']} blobs, {human_bytes(r['plaintext_bytes'])}, {r['stripes']} stripes"
            )
            if r.get("switched"):
                detail += f"; reads switched, {human_bytes(r['bytes_released'])} released"
        else:
            detail = r.get("reason") or r.get("error") or ""
        lines.append([str(r["volume"]), r["outcome"], detail])
    click.echo(table(lines, ["volume", "outcome", "detail"]))


# -- status ----------------------------------------------------------------------------------


def _stripe_row(volume: int, s: StripeHealth) -> list[str]:
    def survives(n: int) -> str:
        return "LOST" if n < 0 else str(n)

    return [
        str(volume),
        str(s.stripe),
        f"{s.blocks_present}/14",
        f"{s.blocks_healthy}/14",
        survives(s.node_losses_survived),
        survives(s.rack_losses_survived),
    ]


def _volumes(cell: Cell, volume: int | None, *, written: bool = False) -> list[int]:
    """The cell's volumes (or just `volume`); `written`: only those whose index has been
    written (a migration in progress has nothing to verify or rebuild yet)."""
    known = cell.f4_volumes()
    if volume is not None:
        if volume not in known:
            raise CliError(f"volume {volume} is not in the f4 cell at {cell.config.cell_root}")
        known = [volume]
    return [v for v in known if not written or cell.state(v) != "migrating"]


def _health(cell: Cell, volume: int, *, parity: bool = False) -> tuple[VerifyReport | None, str]:
    try:
        return cell.verify(volume, parity=parity), ""
    except F4Error as e:
        return None, e.message


def _watcher_state(config: F4Config) -> dict[str, Any] | None:
    """What `pinhole f4 watch` saw last (its <work>/watch.json), or None."""
    try:
        doc: dict[str, Any] = json.loads((config.work_dir / WATCH_STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return doc


@f4_group.command("status")
@_volume_option
@_json_option
@click.pass_context
def status_cmd(ctx: click.Context, volume: int | None, json_output: bool) -> None:
    """Per volume and stripe: blocks present and healthy, and how many node and rack
    losses each stripe survives with today's placement; per node, the stale files (blocks,
    sidecars, index copies no committed index places there) `pinhole f4 reclaim` deletes."""
    config = _config(ctx)
    with _open_cell(config) as cell:
        domains = cell.failure_domains()
        volumes = []
        known = _volumes(cell, volume)
        stale = stale_report(cell, [v for v in known if cell.state(v) != "migrating"])
        for v in known:
            report, error = _health(cell, v)
            doc: dict[str, Any] = {"volume": v, "state": cell.state(v)}
            if report is None:
                doc.update(error=error, stripes=[])
            else:
                doc.update(
                    index_copies_ok=report.index_copies_ok,
                    index_copies_expected=report.index_copies_expected,
                    stripes=[s.as_json() for s in cell.stripe_health(v, report)],
                )
            volumes.append(doc)
    watcher = _watcher_state(config)
    if json_output:
        emit_json({"cell": domains, "volumes": volumes, "stale": stale, "watcher": watcher})
        return
    click.echo(
        f"cell {config.cell_root}: {domains['nodes']} nodes ({domains['nodes_up']} up) "
        f"in {domains['racks']} racks"
    )
    if domains["note"]:
        click.echo(f"note: {domains['note']}")
    rows = []
    for d in volumes:
        if d.get("error"):
            click.echo(f"volume {d['volume']} ({d['state']}): {d['error']}")
            continue
        click.echo(
            f"volume {d['volume']} ({d['state']}): index copies "
            f"{d['index_copies_ok']}/{d['index_copies_expected']}"
        )
        rows += [_stripe_row(d["volume"], StripeHealth(**s)) for s in d["stripes"]]
    if rows:
        headers = ["volume", "stripe", "present", "healthy", "node losses ok", "rack losses ok"]
        click.echo(table(rows, headers))
    if stale["files"]:
        per_node = ", ".join(
            f"{n} {r['files']} ({human_bytes(r['bytes'])})" for n, r in stale["nodes"].items()
        )
        click.echo(
            f"stale files: {stale['files']} ({human_bytes(stale['bytes'])}; "
            f"`pinhole f4 reclaim` deletes them): {per_node}"
        )


def stale_report(cell: Cell, volumes: list[int]) -> dict[str, Any]:
    """The stale files of the written `volumes` (f4.stale.survey): totals and per node."""
    files, sizes = stale_survey(cell.store, volumes, racks=cell.config.rack_of)
    return {
        "files": len(files),
        "bytes": sum(sizes.values()),
        "nodes": stale_totals(files, sizes),
    }


# -- verify ----------------------------------------------------------------------------------


@f4_group.command("verify")
@_volume_option
@click.option(
    "--parity",
    is_flag=True,
    help="Also recompute every stripe's parity from its data blocks and compare it.",
)
@_json_option
@click.pass_context
def verify_cmd(ctx: click.Context, volume: int | None, parity: bool, json_output: bool) -> None:
    """Check every block of every f4 volume (or --volume) against its sidecar, and its
    index copies on their placement; with --parity, also recompute each stripe's parity
    from its data blocks and compare it byte for byte. Reads at most [f4] rebuild_mb_s.
    Exit 1 when a block or index copy is missing or corrupt, or parity disagrees."""
    config = _config(ctx)
    throttle = Throttle(config.rebuild_mb_s * 1e6)
    codec = Codec(config.code)
    with _open_cell(config) as cell:
        volumes: list[dict[str, Any]] = []
        for v in _volumes(cell, volume, written=True):
            try:
                report = verify(
                    cell.store,
                    v,
                    parity=parity,
                    throttle=throttle,
                    codec=codec,
                    racks=config.rack_of,
                )
            except F4Error as e:
                volumes.append({"volume": v, "ok": False, "error": e.message, "damage": []})
                continue
            lost = [s.stripe for s in cell.stripe_health(v, report) if s.node_losses_survived < 0]
            volumes.append(
                {
                    "volume": v,
                    "ok": report.ok,
                    "blocks_checked": report.blocks_checked,
                    "parity_checked": report.parity_checked,
                    "bytes_read": report.bytes_read,
                    "damage": [
                        {"stripe": d.stripe, "block": d.block, "problem": d.problem}
                        for d in report.damage
                    ],
                    "stripes_lost": lost,
                    "index_copies_ok": report.index_copies_ok,
                    "index_copies_expected": report.index_copies_expected,
                }
            )
    ok = all(d["ok"] for d in volumes)
    if json_output:
        emit_json({"ok": ok, "parity": parity, "volumes": volumes})
    else:
        for d in volumes:
            if d.get("error"):
                click.echo(f"volume {d['volume']}: {d['error']}")
                continue
            verdict = "ok" if d["ok"] else "DAMAGED"
            checked = "blocks and parity checked" if d["parity_checked"] else "blocks checked"
            click.echo(
                f"volume {d['volume']}: {verdict}, {d['blocks_checked']} {checked}, "
                f"index copies {d['index_copies_ok']}/{d['index_copies_expected']}"
                + (f", stripes LOST: {d['stripes_lost']}" if d["stripes_lost"] else "")
            )
            for p in d["damage"][:20]:
                click.echo(f"  stripe {p['stripe']} block {p['block']}: {p['problem']}")
    if not ok:
        raise SystemExit(EXIT_FAILED)


# -- rebuild ---------------------------------------------------------------------------------


@f4_group.command("rebuild")
@_volume_option
@click.option(
    "--parity",
    is_flag=True,
    help="Also find and rewrite blocks whose stripe's parity disagrees (reads every block).",
)
@_json_option
@metadata_database_options
@click.pass_context
def rebuild_cmd(
    ctx: click.Context,
    volume: int | None,
    parity: bool,
    json_output: bool,
    media_data: Path,
    database_url: str | None,
) -> None:
    """Rebuild the damaged blocks of every f4 volume (or --volume) at [f4] rebuild_mb_s,
    put index copies on their rack placement, then verify them (with --parity, parity
    mismatches count as damage too). Cron-safe (exit 75 when the cell's lock is held); a
    killed rebuild resumes on the next run; exit 1 when damage remains."""
    config = _config(ctx)
    with (
        _open_cell(config) as cell,
        exclusive_lock(config.lock_path, "another f4 migrate or rebuild"),
    ):
        volumes = _volumes(cell, volume, written=True)
        damaged: list[int] = []
        healthy: list[int] = []
        unreadable: list[dict[str, Any]] = []
        for v in volumes:
            report, error = _health(cell, v, parity=parity)
            if report is None:
                unreadable.append({"volume": v, "outcome": "failed", "error": error})
            else:
                (healthy if report.ok else damaged).append(v)
        id_gen = IdGenerator(config.id_shard)

        async def use(store: JobStore) -> list[dict[str, Any]]:
            await f4_jobs.release_orphans(store)
            cell.store.clean_temporaries()
            wanted = []
            for v in damaged + healthy:
                pending = [
                    j
                    for j in await f4_jobs.jobs_of(store.db, f4_jobs.REBUILD, v)
                    if j.state != JobState.DONE
                ]
                if v in damaged or pending:
                    wanted.append(
                        await f4_jobs.enqueue(
                            store.db,
                            id_gen,
                            f4_jobs.REBUILD,
                            v,
                            now=time.time(),
                            attempts_max=config.attempts_max,
                        )
                    )
            ended, outcomes = await _run_jobs(
                store, cell, wanted, _Bars(show_progress(json_output), "rebuild"), parity=parity
            )
            return [
                {"volume": j.subject_id, **_job_outcome(ended[j.job_id], outcomes)} for j in wanted
            ]

        done = _with_jobs(ctx, media_data, database_url, use)
    rebuilt = {d["volume"] for d in done}
    rows: list[dict[str, Any]] = (
        done
        + unreadable
        + [{"volume": v, "outcome": "healthy"} for v in healthy if v not in rebuilt]
    )
    rows.sort(key=lambda r: r["volume"])
    throttle = f"throttle {config.rebuild_mb_s} MB/s" if config.rebuild_mb_s else "unthrottled"
    if json_output:
        emit_json({"throttle_mb_s": config.rebuild_mb_s, "volumes": rows})
    else:
        for r in rows:
            if r["outcome"] == "done":
                click.echo(
                    f"volume {r['volume']}: rebuilt {r['blocks_rebuilt']} block(s), "
                    f"{human_bytes(r['bytes_written'])} at {r['mb_per_s']} MB/s ({throttle})"
                )
            else:
                click.echo(f"volume {r['volume']}: {r['outcome']} {r.get('error', '')}".rstrip())
    if any(r["outcome"] in ("failed", "dead") for r in rows):
        raise SystemExit(EXIT_FAILED)


# -- the name node ---------------------------------------------------------------------------


@f4_group.group("name")
def name_group() -> None:
    """The f4 name node: serves the cell's migrated blobs (decrypted) to caches and routers
    under the store's read protocol, and takes their deletes."""


@name_group.command("serve")
@click.option("--host", help="Address to listen on (default: [f4] name_host).")
@click.option("--port", type=int, help="Port to listen on (default: [f4] name_port; 0: any).")
@click.option("--node-id", help="Its id in the directory (default: [f4] name_node_id).")
@click.option("--directory-url", help="The directory to heartbeat to (default: [f4]).")
@credentials_options
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def name_serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    node_id: str | None,
    directory_url: str | None,
    credentials_file: Path | None,
    secret_file: Path | None,
    root: Path,
    log_level: str,
) -> None:
    """Run the f4 name node until SIGINT/SIGTERM."""
    from f4 import name_server

    setup_logging(log_level, service="f4-name")
    config = _config(
        ctx, name_host=host, name_port=port, name_node_id=node_id, directory_url=directory_url
    )
    creds = service_credentials(
        "f4-name", credentials_file=credentials_file, secret_file=secret_file, root=root
    )
    run(name_server.serve_forever(config, credentials=creds))
