"""nginx serving a directory of one-file-per-photo, as a child process on loopback.

The configuration is written to `workdir/nginx.conf` for each start: static files with
sendfile and tcp_nopush, no access log, the error log, pid file and temp directories in
`workdir`, `daemon off;` so the master stays our child, and `user root;` when run as root
so workers can read any path. Debian's package puts the binary in /usr/sbin.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.peers import ServerProcess, WorkerPoolServer
from bench.peers.debian import Availability, ensure_debian_packages

HOST = "127.0.0.1"
KEEPALIVE_REQUESTS = 10_000_000
WORKER_CONNECTIONS = 4096


def ensure_nginx() -> Availability:
    """Find nginx, installing Debian's `nginx` package when missing."""
    return ensure_debian_packages({"nginx": "nginx"})["nginx"]


def quoted(path: Path) -> str:
    """`path` as a double-quoted nginx configuration string."""
    text = str(path)
    if any(char in text for char in '"\\\n$'):
        raise ValueError(f"path not usable in nginx.conf: {text!r}")
    return f'"{text}"'


def render_config(
    root: Path, *, port: int, workers: int, workdir: Path, open_file_cache_entries: int
) -> str:
    """The text of nginx.conf serving `root` on 127.0.0.1:`port` with `workers` workers."""
    user_line = "user root;\n" if os.geteuid() == 0 else ""
    temp_lines = "".join(
        f"    {kind}_temp_path {quoted(workdir / 'temp' / kind)};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    if open_file_cache_entries > 0:
        cache_lines = (
            f"    open_file_cache max={open_file_cache_entries} inactive=300s;\n"
            "    open_file_cache_valid 300s;\n"
        )
    else:
        cache_lines = "    open_file_cache off;\n"
    return (
        "# Written by bench/peers/nginx.py for one benchmark run.\n"
        f"{user_line}"
        "daemon off;\n"
        "master_process on;\n"
        f"worker_processes {workers};\n"
        f"pid {quoted(workdir / 'nginx.pid')};\n"
        f"error_log {quoted(workdir / 'error.log')} warn;\n"
        "events {\n"
        f"    worker_connections {WORKER_CONNECTIONS};\n"
        "    multi_accept on;\n"
        "}\n"
        "http {\n"
        "    access_log off;\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        "    tcp_nodelay on;\n"
        f"    keepalive_requests {KEEPALIVE_REQUESTS};\n"
        "    keepalive_timeout 300s;\n"
        "    server_tokens off;\n"
        "    default_type application/octet-stream;\n"
        f"{cache_lines}"
        f"{temp_lines}"
        "    server {\n"
        f"        listen {HOST}:{port} backlog=4096;\n"
        f"        root {quoted(root)};\n"
        "        log_not_found off;\n"
        "        location = / {\n"
        "            return 204;\n"
        "        }\n"
        "        location / {\n"
        "        }\n"
        "    }\n"
        "}\n"
    )


class NginxServer(WorkerPoolServer):
    """nginx serving the files under `root` at `url` (http://127.0.0.1:`port`).

    `open_file_cache_entries` > 0 lets nginx keep that many open file descriptors and
    stat results; the default 0 makes every request open and stat its file, as a plain
    one-file-per-photo server does.
    """

    display_name = "nginx"

    def __init__(
        self,
        root: Path,
        *,
        port: int,
        workers: int = 2,
        workdir: Path,
        open_file_cache_entries: int = 0,
        start_timeout_s: float = 30.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.root = root.resolve()
        self.port = port
        self.workers = workers
        self.workdir = workdir.resolve()
        self.open_file_cache_entries = open_file_cache_entries
        self.start_timeout_s = start_timeout_s
        self.server: ServerProcess | None = None

    @property
    def config_path(self) -> Path:
        """Where this server's nginx.conf is written."""
        return self.workdir / "nginx.conf"

    def start(self) -> None:
        """Write nginx.conf, start nginx and wait until the port answers HTTP.

        Raises `PeerUnavailableError` when nginx cannot be found or installed.
        """
        binary = ensure_nginx().require()
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / "temp" / kind).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render_config(
                self.root,
                port=self.port,
                workers=self.workers,
                workdir=self.workdir,
                open_file_cache_entries=self.open_file_cache_entries,
            )
        )
        argv = [
            binary,
            "-p",
            f"{self.workdir}/",
            "-c",
            str(self.config_path),
            "-e",
            str(self.workdir / "error.log"),
        ]
        self.server = ServerProcess(argv, name="nginx", log_path=self.workdir / "nginx.out")
        self.server.start(host=HOST, port=self.port, timeout_s=self.start_timeout_s)
        self.wait_for_workers(timeout_s=self.start_timeout_s)
