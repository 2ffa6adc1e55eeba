"""Find the peers' commands and install the missing ones from Debian with apt-get.

Nothing here raises because a package cannot be had: every command comes back as an
`Availability` whose `reason` says why it is missing (not root and no password-less sudo,
apt-get failed with the last line of its stderr, the package installed no such command...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Debian puts daemons such as nginx in the sbin directories, which a non-root PATH lacks.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
APT_TIMEOUT_S = 900.0
"""Upper bound, in seconds, for one apt-get invocation (update or install)."""


class PeerUnavailableError(RuntimeError):
    """A benchmark peer is needed but cannot be found or installed here."""


@dataclass(frozen=True)
class Availability:
    """Whether `command` can be run: `path` when it can, `reason` (one line) when not."""

    command: str
    path: str | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when the command was found."""
        return self.path is not None

    def require(self) -> str:
        """Return the command's path, or raise `PeerUnavailableError` with the reason."""
        if self.path is None:
            raise PeerUnavailableError(f"{self.command}: {self.reason or 'not available'}")
        return self.path


def find_command(command: str) -> str | None:
    """The absolute path of `command` on PATH or in the sbin directories, else None."""
    found = shutil.which(command)
    if found:
        return found
    for directory in SBIN_DIRS:
        candidate = os.path.join(directory, command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def privilege_prefix() -> tuple[list[str] | None, str | None]:
    """The argv prefix that runs a command as root (`[]` or `["sudo", "-n"]`), or a reason."""
    if os.geteuid() == 0:
        return [], None
    sudo = shutil.which("sudo")
    if sudo is None:
        return None, "not root and sudo is not installed"
    probe = subprocess.run(
        [sudo, "-n", "true"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        return None, f"not root and `sudo -n` refused: {last_line(probe.stderr)}"
    return [sudo, "-n"], None


def last_line(text: str) -> str:
    """The last non-blank line of `text` (a process's stderr), or a placeholder."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def run_apt(prefix: Sequence[str], args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run apt-get non-interactively with `args`; waits for the dpkg lock up to 5 minutes."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", NEEDRESTART_MODE="a")
    argv = [
        *prefix,
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "-y",
        "-q",
        "-o",
        "DPkg::Lock::Timeout=300",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        *args,
    ]
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env,
            timeout=APT_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(argv, 124, "", stderr + "\napt-get timed out")


def install_packages(packages: Sequence[str]) -> str | None:
    """Install Debian `packages` (no recommends); None on success, else the reason."""
    prefix, reason = privilege_prefix()
    if prefix is None:
        return reason
    if find_command("apt-get") is None:
        return "apt-get is not installed (not a Debian-like system)"
    install = ["install", "--no-install-recommends", *packages]
    result = run_apt(prefix, install)
    if result.returncode != 0:
        # Most often the package lists are missing or stale: refresh them once and retry.
        update = run_apt(prefix, ["update"])
        if update.returncode != 0:
            return f"apt-get update failed (exit {update.returncode}): {last_line(update.stderr)}"
        result = run_apt(prefix, install)
    if result.returncode != 0:
        return (
            f"apt-get install {' '.join(packages)} failed (exit {result.returncode}): "
            f"{last_line(result.stderr)}"
        )
    return None


def ensure_debian_packages(commands: Mapping[str, str]) -> dict[str, Availability]:
    """Map each command name to its `Availability`, installing missing Debian packages.

    `commands` maps a command (e.g. "nginx") to the Debian package providing it. Commands
    already on PATH or in an sbin directory are not touched. Never raises for a package that
    cannot be installed: its `Availability.reason` explains why.
    """
    found = {command: find_command(command) for command in commands}
    missing = [command for command, path in found.items() if path is None]
    failure: str | None = None
    if missing:
        packages = sorted({commands[command] for command in missing})
        failure = install_packages(packages)
    result: dict[str, Availability] = {}
    for command, package in commands.items():
        path = found[command] or find_command(command)
        if path is not None:
            result[command] = Availability(command, path, None)
        elif failure is not None:
            result[command] = Availability(command, None, f"package {package}: {failure}")
        else:
            reason = f"package {package} installed but provides no `{command}` command"
            result[command] = Availability(command, None, reason)
    return result
