"""What every `pinhole` command shares: exit codes, one-line errors, JSON output, progress
bars only on terminals, config and secret lookup, running a coroutine on uvloop."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from common import credentials
from common.config import ConfigError, load_toml

T = TypeVar("T")

# Exit codes (docs/operations/store.md lists them for cron).
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # the operation ran and found or caused a problem
EXIT_USAGE: Final = 2  # bad arguments (click's own code)
EXIT_UNREACHABLE: Final = 3  # the node did not answer
EXIT_LOCKED: Final = 75  # another run holds the lock (EX_TEMPFAIL: try again later)

DEFAULT_ROOT: Final = Path(".pinhole")
DEFAULT_CONFIG: Final = Path("pinhole.toml")


class CliError(click.ClickException):
    """Printed as one line `pinhole: <message>` with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"pinhole: {self.format_message()}", err=True)


def run(coro: Coroutine[Any, Any, T]) -> T:
    import uvloop

    return uvloop.run(coro)


def load_config(path: Path | None) -> dict[str, Any]:
    """The parsed pinhole.toml: the given file, else ./pinhole.toml if present, else {}."""
    try:
        if path is not None:
            return load_toml(path)
        if DEFAULT_CONFIG.exists():
            return load_toml(DEFAULT_CONFIG)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    return {}


def cluster_secret(secret_file: Path | None, root: Path) -> bytes:
    try:
        return credentials.load_secret(secret_file=secret_file, default_dir=root)
    except credentials.SecretError as e:
        raise CliError(str(e), EXIT_USAGE) from e


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


def show_progress(json_output: bool) -> bool:
    return not json_output and sys.stderr.isatty()


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # libvips logs every thread pool it finishes at INFO: noise, not news.
    logging.getLogger("pyvips").setLevel(logging.WARNING)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
