"""HTTP load with wrk, driven by the Lua scripts in bench/wrk/.

GET (or HEAD) requests pick a random path from a list (`get_paths.lua`); PUT (or POST)
requests fill a path template's "{n}" with a counter unique across wrk's threads so each
one creates a new object (`put_paths.lua`). Both scripts' `done()` print one JSON line,
which is all that is parsed here; wrk's human-readable summary is ignored.

wrk takes whole seconds only, so `duration_s` and `timeout_s` are rounded up to integers.
`non_2xx` is wrk's `errors.status`: responses with a status above 399.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bench.peers.debian import Availability, ensure_debian_packages

SCRIPT_DIR = Path(__file__).resolve().parent.parent / "wrk"
GET_SCRIPT = SCRIPT_DIR / "get_paths.lua"
PUT_SCRIPT = SCRIPT_DIR / "put_paths.lua"
SUMMARY_PREFIX = '{"pinhole_wrk"'
NO_HEADERS: Mapping[str, str] = MappingProxyType({})
READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"PUT", "POST"})


@dataclass(frozen=True)
class WrkResult:
    """One wrk run; rates per second of the measured duration, latencies in milliseconds."""

    requests: int
    requests_per_s: float
    bytes_per_s: float
    """Response bytes (headers and bodies) received per second."""
    latency_p50_ms: float
    latency_p99_ms: float
    errors_connect: int
    errors_read: int
    errors_write: int
    errors_timeout: int
    non_2xx: int
    """Responses with status > 399 (wrk's errors.status)."""
    duration_s: float = 0.0
    latency_mean_ms: float = 0.0
    latency_p90_ms: float = 0.0
    latency_p999_ms: float = 0.0
    latency_max_ms: float = 0.0

    @property
    def errors(self) -> int:
        """All socket errors, timeouts and non-2xx responses."""
        return (
            self.errors_connect
            + self.errors_read
            + self.errors_write
            + self.errors_timeout
            + self.non_2xx
        )


def ensure_wrk() -> Availability:
    """Find wrk, installing Debian's `wrk` package when missing."""
    return ensure_debian_packages({"wrk": "wrk"})["wrk"]


def whole_seconds(seconds: float) -> int:
    """`seconds` rounded up to a whole number, at least 1 (wrk's time resolution)."""
    return max(1, math.ceil(seconds - 1e-9))


def run_wrk(
    base_url: str,
    *,
    paths: Sequence[str] | Path,
    connections: int,
    threads: int = 1,
    duration_s: float,
    method: str = "GET",
    body_bytes: int = 0,
    headers: Mapping[str, str] = NO_HEADERS,
    timeout_s: float = 5,
    header_timestamp: bool = False,
    seed: int = 1,
    order: str = "random",
) -> WrkResult:
    """Load `base_url` (e.g. "http://127.0.0.1:8080") with wrk for `duration_s` seconds.

    GET/HEAD: `paths` is a list of URL paths, or a file of them (one per line); each
    request picks one at random, or with order="sequential" each thread walks the list
    from its own starting point (distinct paths until it wraps). PUT/POST: `paths` is one
    path template containing "{n}" (a str, or a one-element list); each request gets a
    fresh number and a random body of `body_bytes` bytes. `header_timestamp` adds a
    strictly increasing X-Timestamp to each PUT (Swift). `headers` go with every request.
    `timeout_s` is wrk's per-request timeout.

    Raises `PeerUnavailableError` when wrk cannot be had, RuntimeError when wrk fails.
    """
    binary = ensure_wrk().require()
    method = method.upper()
    if connections < threads or threads < 1:
        raise ValueError(f"need connections >= threads >= 1, got {connections}, {threads}")
    with tempfile.TemporaryDirectory(prefix="pinhole-wrk-") as scratch:
        if method in READ_METHODS:
            script = GET_SCRIPT
            if order not in ("random", "sequential"):
                raise ValueError(f"order must be random or sequential, not {order!r}")
            script_args = [str(paths_file(paths, Path(scratch))), str(seed), method, order]
        elif method in WRITE_METHODS:
            script = PUT_SCRIPT
            template = path_template(paths)
            timestamp_flag = "1" if header_timestamp else "0"
            script_args = [template, str(body_bytes), timestamp_flag, str(seed), method]
        else:
            raise ValueError(f"unsupported method {method!r}")
        argv = [
            binary,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={whole_seconds(duration_s)}s",
            f"--timeout={whole_seconds(timeout_s)}s",
            f"--script={script}",
        ]
        for name, value in headers.items():
            argv += ["--header", f"{name}: {value}"]
        argv += [base_url.rstrip("/") + "/", "--", *script_args]
        completed = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=whole_seconds(duration_s) + whole_seconds(timeout_s) + 60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    if completed.returncode != 0:
        output = (completed.stderr + completed.stdout).strip()
        raise RuntimeError(f"wrk failed (exit {completed.returncode}): {output}")
    return parse_summary(completed.stdout)


def paths_file(paths: Sequence[str] | Path, scratch: Path) -> Path:
    """`paths` itself when it is a file, else a file in `scratch` listing them."""
    if isinstance(paths, Path):
        return paths
    listed = [paths] if isinstance(paths, str) else list(paths)
    if not listed:
        raise ValueError("no paths to GET")
    bad = [path for path in listed if not path.startswith("/") or "\n" in path]
    if bad:
        raise ValueError(f"paths must start with / and be one line: {bad[0]!r}")
    target = scratch / "paths.txt"
    target.write_text("\n".join(listed) + "\n")
    return target


def path_template(paths: Sequence[str] | Path) -> str:
    """The one path template, containing "{n}", that a PUT run was given."""
    if isinstance(paths, Path):
        raise ValueError("PUT takes a path template such as '/c/obj-{n}', not a file")
    templates = [paths] if isinstance(paths, str) else list(paths)
    if len(templates) != 1 or "{n}" not in templates[0] or not templates[0].startswith("/"):
        raise ValueError(f"PUT needs exactly one path template with {{n}}: {templates!r}")
    return templates[0]


def parse_summary(stdout: str) -> WrkResult:
    """The `WrkResult` from the JSON line the Lua scripts' done() print."""
    for line in stdout.splitlines():
        if line.startswith(SUMMARY_PREFIX):
            summary: dict[str, Any] = json.loads(line)
            break
    else:
        raise RuntimeError(f"wrk printed no pinhole summary line: {stdout[-1000:]!r}")
    duration_s = float(summary["duration_us"]) / 1e6
    requests = int(summary["requests"])
    return WrkResult(
        requests=requests,
        requests_per_s=requests / duration_s if duration_s > 0 else 0.0,
        bytes_per_s=float(summary["bytes"]) / duration_s if duration_s > 0 else 0.0,
        latency_p50_ms=float(summary["latency_p50_us"]) / 1e3,
        latency_p99_ms=float(summary["latency_p99_us"]) / 1e3,
        errors_connect=int(summary["errors_connect"]),
        errors_read=int(summary["errors_read"]),
        errors_write=int(summary["errors_write"]),
        errors_timeout=int(summary["errors_timeout"]),
        non_2xx=int(summary["errors_status"]),
        duration_s=duration_s,
        latency_mean_ms=float(summary["latency_mean_us"]) / 1e3,
        latency_p90_ms=float(summary["latency_p90_us"]) / 1e3,
        latency_p999_ms=float(summary["latency_p999_us"]) / 1e3,
        latency_max_ms=float(summary["latency_max_us"]) / 1e3,
    )
