"""The `pinhole` command."""

from __future__ import annotations

from pathlib import Path

import click

from ops.backup_cmds import backup_cmd, restore_cmd
from ops.bench_cmds import bench
from ops.f4_cmds import f4_group
from ops.f4_coord_cmds import watch_cmd as _f4_watch  # noqa: F401  (registers f4 watch|rebalance)
from ops.housekeeping_cmds import compact_all, scrub_group
from ops.jobs_cmds import jobs_group
from ops.media_cmds import api, worker
from ops.plan_cmds import plan_cmd
from ops.search_cmds import search_group
from ops.service_cmds import cache, directory, router
from ops.store_cmds import store
from ops.up_cmds import down, status, up
from ops.volume_cmds import volume


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="pinhole.toml to read (default: ./pinhole.toml when present).",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """pinhole: a photo-sharing platform on its own Haystack/f4 blob store."""
    ctx.obj = {"config_path": config_path}


main.add_command(store)
main.add_command(volume)
main.add_command(directory)
main.add_command(cache)
main.add_command(router)
main.add_command(up)
main.add_command(status)
main.add_command(down)
main.add_command(bench)
main.add_command(api)
main.add_command(worker)
main.add_command(jobs_group)
main.add_command(f4_group)
main.add_command(search_group)
main.add_command(compact_all)
main.add_command(scrub_group)
main.add_command(backup_cmd)
main.add_command(restore_cmd)
main.add_command(plan_cmd)

if __name__ == "__main__":
    main()
