"""`pinhole bench ...`: benchmarks whose figures are ratios against peers measured in the
same run (bench/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from api.config import PROCESSES_MAX


@click.group()
def bench() -> None:
    """Benchmarks (figures are ratios against baselines measured in the same run)."""


def _bench_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--quick", is_flag=True, help="Small sizes, short runs (what CI runs)."),
            click.option(
                "--json",
                "json_path",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Write the figures as JSON here.",
            ),
            click.option(
                "--work",
                "work_dir",
                type=click.Path(file_okay=False, path_type=Path),
                help="Scratch directory (default: a temporary one under ./.pinhole).",
            ),
            click.option(
                "--plot",
                "plot_path",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Write a PNG chart of the figures here.",
            ),
        ]
    ):
        f = option(f)
    return f


@bench.command("store")
@_bench_options
def bench_store(
    quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> None:
    """Store node against nginx, fio and OpenStack Swift on this machine."""
    from bench.store_bench import main

    main(quick=quick, json_path=json_path, work_dir=work_dir, plot_path=plot_path)


@bench.command("cluster")
@_bench_options
def bench_cluster(
    quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> None:
    """Router, cache and replicated writes on a local cluster against one store node."""
    from bench.cluster_bench import main

    main(quick=quick, json_path=json_path, work_dir=work_dir, plot_path=plot_path)


@bench.command("media")
@_bench_options
def bench_media(
    quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> None:
    """Upload -> ladder ready on a local cluster; pyvips against Pillow; WebP/AVIF bytes."""
    from bench.media_bench import main

    main(quick=quick, json_path=json_path, work_dir=work_dir, plot_path=plot_path)


@bench.command("lookups")
@_bench_options
def bench_lookups(
    quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> None:
    """A flood of unknown volume ids against real photo latency and the directory's load."""
    from bench.lookup_bench import main

    main(quick=quick, json_path=json_path, work_dir=work_dir, plot_path=plot_path)


@bench.command("f4")
@_bench_options
def bench_f4(
    quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> None:
    """f4 against raw PyECLib and Haystack: encode, reads healthy and degraded, bytes on
    disk, rebuild against its throttle."""
    from bench.f4_bench import main

    main(quick=quick, json_path=json_path, work_dir=work_dir, plot_path=plot_path)


@bench.command("dm")
@_bench_options
def bench_dm(
    quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> None:
    """Direct messages and notifications from the API's commit to a subscribed MQTT client,
    against raw MQTT through the same broker."""
    from bench.dm_bench import main

    main(quick=quick, json_path=json_path, work_dir=work_dir, plot_path=plot_path)


@bench.command("social")
@_bench_options
def bench_social(
    quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> None:
    """The DM and notification figures of `bench dm`, the stories tray at 100,000 accounts
    with power-law follows (quick: 5,000) and story views with their SQL writes per view."""
    from bench.social_bench import main

    main(quick=quick, json_path=json_path, work_dir=work_dir, plot_path=plot_path)


@bench.command("feed")
@_bench_options
@click.option(
    "--redis-url",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="The Redis server of the timelines (keys under a per-run prefix, deleted after).",
)
@click.option(
    "--database-url",
    default=None,
    help="A postgresql+asyncpg:// URL (a scratch schema, dropped after); default SQLite.",
)
@click.option(
    "--api-processes",
    type=click.IntRange(1, PROCESSES_MAX),
    default=None,
    help="API processes of the HTTP phase ([api] processes); default: the plan's (2).",
)
def bench_feed(
    quick: bool,
    json_path: Path | None,
    work_dir: Path | None,
    plot_path: Path | None,
    redis_url: str,
    database_url: str | None,
    api_processes: int | None,
) -> None:
    """Push, pull and hybrid feeds on one power-law graph: p99, reads/s, fan-out, writes."""
    from bench.feed_bench import main

    main(
        quick=quick,
        json_path=json_path,
        work_dir=work_dir,
        plot_path=plot_path,
        redis_url=redis_url,
        database_url=database_url,
        api_processes=api_processes,
    )


@bench.command("search")
@_bench_options
def bench_search(
    quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> None:
    """Typeahead p99 over accounts, hashtags and places on SQLite FTS5 and PostgreSQL
    pg_trgm, against a plain LIKE prefix query."""
    from bench.search_bench import main

    main(quick=quick, json_path=json_path, work_dir=work_dir, plot_path=plot_path)


@bench.command("explore")
@_bench_options
def bench_explore(
    quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> None:
    """Explore's recall and NDCG at 24 on planted communities against popularity and
    random baselines, the page read's p99 and the refresh job's cost per user."""
    from bench.explore_bench import main

    main(quick=quick, json_path=json_path, work_dir=work_dir, plot_path=plot_path)


@bench.command("disk")
@click.option("--quick", is_flag=True, help="Tiny files, one 1 s run per job (what CI runs).")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the figures as JSON here (the input of `pinhole plan --bench`).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="A directory on the disk to measure (default: ./.pinhole).",
)
def bench_disk(quick: bool, json_path: Path | None, directory: Path | None) -> None:
    """fio on the disk under --dir: random reads of 20 and 100 KiB at QD16 (direct), 1 MiB
    sequential writes, fdatasync'd 20 KiB appends: the store benchmark's own jobs."""
    from bench.disk_bench import main

    main(quick=quick, json_path=json_path, directory=directory)
