"""What every `pinhole` command shares: exit codes, one-line errors, JSON output, progress
bars only on terminals, config and secret lookup, running a coroutine on uvloop."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from common import credentials, json_logs
from common.config import ConfigError, load_toml
from common.credentials import Credentials

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


def load_config(path: Path | None, *, serving: bool = False) -> dict[str, Any]:
    """The parsed pinhole.toml: the given file, else ./pinhole.toml if present, else {}.
    `serving`: a service is about to start on it, so the size limits of every tier must
    agree (ops/limits_check.py); a mismatch exits 2 with one line."""
    try:
        if path is not None:
            document = load_toml(path)
        elif DEFAULT_CONFIG.exists():
            document = load_toml(DEFAULT_CONFIG)
        else:
            document = {}
        if serving:
            from ops.limits_check import check_upload_path

            check_upload_path(document)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    return document


def cluster_secret(secret_file: Path | None, root: Path) -> bytes:
    try:
        return credentials.load_secret(secret_file=secret_file, default_dir=root)
    except credentials.SecretError as e:
        raise CliError(str(e), EXIT_USAGE) from e


def operator_credentials(secret_file: Path | None, root: Path = DEFAULT_ROOT) -> Credentials:
    """Every credential: the operator's commands hold the cluster secret."""
    return Credentials.from_secret(cluster_secret(secret_file, root))


def service_credentials(
    role: str, *, credentials_file: Path | None, secret_file: Path | None, root: Path
) -> Credentials:
    """What the service `role` holds: its credentials file (what `pinhole up` hands each
    service), else its share of the cluster secret (created under `root` for a local
    cluster when none is configured)."""
    if credentials_file is not None:
        if secret_file is not None:
            raise CliError("give either --credentials or --secret-file, not both", EXIT_USAGE)
        try:
            return Credentials.read(credentials_file)
        except credentials.CredentialError as e:
            raise CliError(str(e), EXIT_USAGE) from e
    if secret_file is None and not os.environ.get(credentials.SECRET_ENV):
        credentials.ensure_secret_file(root)
    return Credentials.for_service(cluster_secret(secret_file, root), role)


def credentials_options(f: Any) -> Any:
    """--credentials, --secret-file and --root, for the commands that run a service."""
    for option in reversed(
        [
            click.option(
                "--credentials",
                "credentials_file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="This service's credentials file (what `pinhole up` writes for it).",
            ),
            click.option(
                "--secret-file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Cluster secret file (the service takes only its share of it).",
            ),
            click.option(
                "--root",
                type=click.Path(file_okay=False, path_type=Path),
                default=DEFAULT_ROOT,
                show_default=True,
                help="Where the local cluster's secret lives when none is given.",
            ),
        ]
    ):
        f = option(f)
    return f


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


def show_progress(json_output: bool) -> bool:
    return not json_output and sys.stderr.isatty()


def setup_logging(level: str, *, service: str = "pinhole") -> None:
    """A service's logs: JSON lines on stderr, one per event (common/json_logs.py)."""
    json_logs.setup(level, service=service)
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


def metadata_database_options(f: Any) -> Any:
    """--media-data / --database-url: where the metadata database (and its job queues) is."""
    for option in reversed(
        [
            click.option(
                "--media-data",
                type=click.Path(file_okay=False, path_type=Path),
                default=DEFAULT_ROOT / "media",
                show_default=True,
                help="Where the metadata database lives (the API's [media] data_dir).",
            ),
            click.option("--database-url", help="postgresql+asyncpg://... instead."),
        ]
    ):
        f = option(f)
    return f


@contextlib.contextmanager
def exclusive_lock(path: Path, holder: str) -> Iterator[None]:
    """An exclusive lock (flock) that a second run finds taken: it fails with EXIT_LOCKED,
    saying that `holder` (e.g. "another compaction") has it. Cron-safe: the lock goes with
    the process, however it ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CliError(f"{holder} holds {path}", EXIT_LOCKED) from None
        yield
    finally:
        os.close(fd)
