"""OpenStack Swift's object server alone, as a child process on loopback.

Swift is installed with pip into its own virtual environment, never the project's:
`$PINHOLE_BENCH_CACHE/swift-venv` (default `~/.cache/pinhole/bench/swift-venv`), created on
first use and reused while its marker file names the same requirements.

Everything Swift reads is written into `workdir`: `object-server.conf`, and `swift.conf`
(hash path prefix/suffix, one storage policy), which Swift finds through the conf's
`swift_dir = <workdir>` (swift.common.wsgi calls `set_swift_dir`, which re-points
`SWIFT_CONF_FILE`), so /etc/swift is never needed. Swift logs through a custom handler
(`log_custom_handlers`, a small module written into `workdir`) to `workdir/swift.log`
instead of syslog; per-request logging is off, as nginx's access log is.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

from bench.peers import ServerProcess, WorkerPoolServer
from bench.peers.debian import Availability, last_line

HOST = "127.0.0.1"
SWIFT_VERSION = "2.38.3"
SWIFT_REQUIREMENTS = (f"swift=={SWIFT_VERSION}", "xattr")
"""What pip installs into the Swift venv (xattr is the binding Swift's disk files need)."""
SMOKE_IMPORTS = "import eventlet, xattr, swift.obj.server; print(swift.__version__)"
INSTALL_TIMEOUT_S = 900.0
LOG_MODULE = "pinhole_swift_log"
LOG_MODULE_SOURCE = '''"""Written by bench/peers/swift.py: Swift logs to a file, not to syslog."""
import logging
import logging.handlers
import os


def to_file(conf, name, log_to_console, log_route, fmt, logger, adapted_logger):
    for handler in list(logger.handlers):
        if isinstance(handler, logging.handlers.SysLogHandler):
            logger.removeHandler(handler)
            handler.close()
    if not any(isinstance(h, logging.FileHandler) for h in logger.handlers):
        handler = logging.FileHandler(os.environ["PINHOLE_SWIFT_LOG"])
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s")
        )
        logger.addHandler(handler)
'''


def bench_cache_dir() -> Path:
    """`$PINHOLE_BENCH_CACHE`, else ~/.cache/pinhole/bench: where benchmark tools live."""
    configured = os.environ.get("PINHOLE_BENCH_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "pinhole" / "bench"


def swift_venv_dir() -> Path:
    """The virtual environment Swift is installed into."""
    return bench_cache_dir() / "swift-venv"


def ensure_swift(*, venv: Path | None = None) -> Availability:
    """`swift-object-server` from Swift's own venv, installing it with pip on first use.

    Never raises for "cannot install": the reason names the step that failed (creating
    the venv, pip install with the last line of its stderr, the import check).
    """
    venv = venv or swift_venv_dir()
    command = "swift-object-server"
    binary = venv / "bin" / command
    marker = venv / ".pinhole-swift"
    wanted = " ".join(SWIFT_REQUIREMENTS)
    if binary.exists() and marker.exists() and marker.read_text().strip() == wanted:
        return Availability(command, str(binary), None)
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        with (venv.parent / "swift-venv.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing it
            if binary.exists() and marker.exists() and marker.read_text().strip() == wanted:
                return Availability(command, str(binary), None)
            reason = install_swift(venv)
            if reason is not None:
                return Availability(command, None, reason)
            marker.write_text(wanted + "\n")
    except OSError as exc:
        return Availability(command, None, f"cannot set up the Swift venv in {venv}: {exc}")
    return Availability(command, str(binary), None)


def install_swift(venv: Path) -> str | None:
    """Create `venv` if needed and pip install Swift into it; None on success, else why."""
    python = venv / "bin" / "python"
    steps: list[tuple[str, list[str]]] = []
    if not python.exists():
        base_python = getattr(sys, "_base_executable", sys.executable)
        steps.append(("creating the venv", [base_python, "-m", "venv", str(venv)]))
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    steps.append(
        ("pip install " + " ".join(SWIFT_REQUIREMENTS), [*pip, "install", *SWIFT_REQUIREMENTS])
    )
    steps.append(("importing swift in the venv", [str(python), "-c", SMOKE_IMPORTS]))
    for step, argv in steps:
        try:
            completed = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
                env=clean_environment(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{step} failed: {exc}"
        if completed.returncode != 0:
            return f"{step} failed (exit {completed.returncode}): {last_line(completed.stderr)}"
    return None


def clean_environment() -> dict[str, str]:
    """os.environ without the variables that would tie a child to the project's venv."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")
    }


def swift_timestamp() -> str:
    """A Swift X-Timestamp for now: seconds since the epoch with five decimals."""
    return f"{time.time():.5f}"


def render_swift_conf() -> str:
    """swift.conf: the hash path prefix/suffix and a single default storage policy."""
    return (
        "# Written by bench/peers/swift.py for one benchmark run.\n"
        "[swift-hash]\n"
        "swift_hash_path_prefix = pinhole-bench\n"
        "swift_hash_path_suffix = pinhole-bench\n"
        "\n"
        "[storage-policy:0]\n"
        "name = Policy-0\n"
        "default = yes\n"
    )


def render_object_server_conf(*, devices: Path, port: int, workers: int, workdir: Path) -> str:
    """object-server.conf for one object server on 127.0.0.1:`port`."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    return (
        "# Written by bench/peers/swift.py for one benchmark run.\n"
        "[DEFAULT]\n"
        f"bind_ip = {HOST}\n"
        f"bind_port = {port}\n"
        f"workers = {workers}\n"
        f"user = {user}\n"
        f"devices = {devices}\n"
        "mount_check = false\n"
        f"swift_dir = {workdir}\n"
        "log_name = object-server\n"
        "log_level = INFO\n"
        f"log_custom_handlers = {LOG_MODULE}.to_file\n"
        "\n"
        "[pipeline:main]\n"
        "pipeline = object-server\n"
        "\n"
        "[app:object-server]\n"
        "use = egg:swift#object\n"
        "log_requests = false\n"
    )


class SwiftObjectServer(WorkerPoolServer):
    """Swift's object server storing under `devices`/`device`, at http://127.0.0.1:`port`.

    Objects live at `object_path(name)`, i.e. /<device>/<partition>/<account>/<container>/
    <name>. A PUT needs the headers of `put_headers()` plus a fresh X-Timestamp
    (`swift_timestamp()`, or wrk's `header_timestamp=True`).
    """

    display_name = "swift"

    def __init__(
        self,
        devices: Path,
        *,
        port: int,
        workers: int = 1,
        workdir: Path,
        device: str = "sda1",
        partition: int = 0,
        account: str = "AUTH_bench",
        container: str = "c",
        start_timeout_s: float = 60.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.devices = devices.resolve()
        self.port = port
        self.workers = workers
        self.workdir = workdir.resolve()
        self.device = device
        self.partition = partition
        self.account = account
        self.container = container
        self.start_timeout_s = start_timeout_s
        self.server: ServerProcess | None = None

    @property
    def config_path(self) -> Path:
        """Where this server's object-server.conf is written."""
        return self.workdir / "object-server.conf"

    def object_path(self, name: str) -> str:
        """The URL path of object `name`, e.g. "/sda1/0/AUTH_bench/c/<name>"."""
        return f"/{self.device}/{self.partition}/{self.account}/{self.container}/{name}"

    def put_headers(self) -> dict[str, str]:
        """Headers every PUT needs besides X-Timestamp and Content-Length."""
        return {"Content-Type": "application/octet-stream"}

    def start(self) -> None:
        """Write the configs, start the object server and wait until it answers HTTP.

        Installs Swift on first use; raises `PeerUnavailableError` when it cannot.
        """
        binary = ensure_swift().require()
        (self.devices / self.device).mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "swift.conf").write_text(render_swift_conf())
        (self.workdir / f"{LOG_MODULE}.py").write_text(LOG_MODULE_SOURCE)
        self.config_path.write_text(
            render_object_server_conf(
                devices=self.devices, port=self.port, workers=self.workers, workdir=self.workdir
            )
        )
        env = clean_environment()
        env["PYTHONPATH"] = str(self.workdir)
        env["PINHOLE_SWIFT_LOG"] = str(self.workdir / "swift.log")
        self.server = ServerProcess(
            [binary, str(self.config_path)],
            name="swift-object-server",
            log_path=self.workdir / "swift-object-server.out",
            env=env,
        )
        self.server.start(host=HOST, port=self.port, timeout_s=self.start_timeout_s)
        self.wait_for_workers(timeout_s=self.start_timeout_s)
