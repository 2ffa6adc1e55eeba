"""The `pinhole` command.

Each subcommand's module is imported when that subcommand runs (`pinhole --help` imports
them all for their one-line help): a service process started as `pinhole store serve`
imports the store's code, not the f4 cell's, the social layer's and the benchmarks'. With
every service of `pinhole up` a process of its own, that is most of a start's CPU.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Final

import click

# name -> (module, attribute); "f4" also loads the modules that add commands to its group.
COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "api": ("ops.media_cmds", "api"),
    "backup": ("ops.backup_cmds", "backup_cmd"),
    "bench": ("ops.bench_cmds", "bench"),
    "cache": ("ops.service_cmds", "cache"),
    "compact": ("ops.housekeeping_cmds", "compact_all"),
    "credentials": ("ops.credentials_cmds", "credentials_cmd"),
    "directory": ("ops.service_cmds", "directory"),
    "down": ("ops.up_cmds", "down"),
    "f4": ("ops.f4_cmds", "f4_group"),
    "jobs": ("ops.jobs_cmds", "jobs_group"),
    "plan": ("ops.plan_cmds", "plan_cmd"),
    "restore": ("ops.backup_cmds", "restore_cmd"),
    "router": ("ops.service_cmds", "router"),
    "scrub": ("ops.housekeeping_cmds", "scrub_group"),
    "search": ("ops.search_cmds", "search_group"),
    "status": ("ops.up_cmds", "status"),
    "store": ("ops.store_cmds", "store"),
    "up": ("ops.up_cmds", "up"),
    "volume": ("ops.volume_cmds", "volume"),
    "worker": ("ops.media_cmds", "worker"),
}
# Modules that register more commands on a group when imported.
EXTENDS: Final[dict[str, tuple[str, ...]]] = {"f4": ("ops.f4_coord_cmds",)}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = COMMANDS[cmd_name]
        command: Any = getattr(importlib.import_module(module), attribute)
        for extension in EXTENDS.get(cmd_name, ()):
            importlib.import_module(extension)
        assert isinstance(command, click.Command), (module, attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


if __name__ == "__main__":
    main()
