"""Raw disk figures from fio, run on the same file system as the store's volumes.

`run_fio` runs one job with `--output-format=json --group_reporting` and reads the read or
write section of the (only) job according to `rw`. Latency percentiles are fio's completion
latency (clat: submission to completion of one I/O); for jobs that fdatasync, the sync
call's own percentiles are in `sync_lat_p50_ms` / `sync_lat_p99_ms`.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.peers.debian import Availability, ensure_debian_packages

KiB: Final = 1024
MiB: Final = 1024 * KiB
# The disk jobs of the store benchmark, shared with `pinhole bench disk` (bench/disk_bench.py)
# so that a capacity plan reads the same figures the store is compared against: random
# reads of photo-sized blocks (a small variant, a large one) at the queue depth of the
# store's cold runs, and a volume's append of small needles, each made durable.
STORE_READ_BLOCK_BYTES: Final = (20 * KiB, 100 * KiB)
STORE_READ_QUEUE_DEPTH: Final = 16
STORE_WRITE_BLOCK_BYTES: Final = 20 * KiB
SEQ_WRITE_BLOCK_BYTES: Final = 1 * MiB
SEQ_WRITE_QUEUE_DEPTH: Final = 8

READ_MODES = frozenset({"read", "randread"})
WRITE_MODES = frozenset({"write", "randwrite", "trimwrite"})
MIXED_MODES = frozenset({"rw", "readwrite", "randrw"})
LAYOUT_BYTES_PER_S = 20e6
"""Pessimistic speed, in bytes per second, at which fio lays out a file before reading it."""


@dataclass(frozen=True, kw_only=True)
class FioJob:
    """One fio job; sizes in bytes, times in seconds. See fio(1) for each option."""

    name: str
    filename: Path | str
    rw: str
    bs_bytes: int
    size_bytes: int
    runtime_s: float
    iodepth: int = 1
    numjobs: int = 1
    direct: bool = False
    ioengine: str = "psync"
    fdatasync: int = 0
    """fio's fdatasync=N: one fdatasync(2) after every N writes (0: never)."""
    time_based: bool = False
    """Run for `runtime_s` even when `size_bytes` is done (wrapping around the file)."""
    file_append: bool = False
    """Write after the current end of the file, so it grows (fio's file_append)."""
    fallocate: str | None = None
    """fio's fallocate= (e.g. "none" so an appended file is not preallocated)."""

    def argv(self) -> list[str]:
        """fio's command-line options for this job (without the fio binary)."""
        if self.rw not in READ_MODES | WRITE_MODES | MIXED_MODES:
            raise ValueError(f"unsupported fio rw mode: {self.rw!r}")
        options = [
            f"--name={self.name}",
            f"--filename={self.filename}",
            f"--rw={self.rw}",
            f"--bs={self.bs_bytes}",
            f"--size={self.size_bytes}",
            f"--runtime={max(1, round(self.runtime_s))}s",
            f"--iodepth={self.iodepth}",
            f"--numjobs={self.numjobs}",
            f"--direct={int(self.direct)}",
            f"--ioengine={self.ioengine}",
            f"--fdatasync={self.fdatasync}",
            f"--time_based={int(self.time_based)}",
            f"--file_append={int(self.file_append)}",
            "--percentile_list=50:99",
            "--group_reporting",
            "--output-format=json",
        ]
        if self.fallocate is not None:
            options.append(f"--fallocate={self.fallocate}")
        return options


@dataclass(frozen=True)
class FioResult:
    """What one fio job achieved; latencies in milliseconds."""

    iops: float
    bw_bytes_per_s: float
    lat_p50_ms: float
    lat_p99_ms: float
    runtime_s: float
    ios: int = 0
    """I/Os completed (reads and/or writes, not syncs)."""
    sync_lat_p50_ms: float | None = None
    sync_lat_p99_ms: float | None = None


def randread_job(
    path: Path,
    *,
    bs_bytes: int,
    iodepth: int,
    size_bytes: int,
    runtime_s: float,
    direct: bool = True,
) -> FioJob:
    """Random reads of `bs_bytes` with `iodepth` in flight (libaio), for `runtime_s` seconds.

    fio first lays out `path` to `size_bytes` if it is smaller.
    """
    return FioJob(
        name="randread",
        filename=path,
        rw="randread",
        bs_bytes=bs_bytes,
        iodepth=iodepth,
        direct=direct,
        size_bytes=size_bytes,
        runtime_s=runtime_s,
        ioengine="libaio",
        time_based=True,
    )


def append_fdatasync_job(path: Path, *, bs_bytes: int, size_bytes: int, runtime_s: float) -> FioJob:
    """One writer appending `bs_bytes` writes to `path`, each followed by fdatasync.

    Like a Haystack volume's append: buffered pwrite at the end of the file (which grows;
    no preallocation), then fdatasync. Stops after `size_bytes` or `runtime_s` seconds,
    whichever comes first; the file keeps what was appended.
    """
    return FioJob(
        name="append-fdatasync",
        filename=path,
        rw="write",
        bs_bytes=bs_bytes,
        iodepth=1,
        numjobs=1,
        direct=False,
        size_bytes=size_bytes,
        runtime_s=runtime_s,
        ioengine="psync",
        fdatasync=1,
        time_based=False,
        file_append=True,
        fallocate="none",
    )


def seq_write_job(path: Path, *, size_bytes: int, runtime_s: float) -> FioJob:
    """Sequential direct writes of SEQ_WRITE_BLOCK_BYTES with SEQ_WRITE_QUEUE_DEPTH in flight
    (libaio): the disk's streaming write rate, what filling a volume or copying one is bound
    by. Stops after `size_bytes` or `runtime_s` seconds, whichever comes first."""
    return FioJob(
        name="seqwrite",
        filename=path,
        rw="write",
        bs_bytes=SEQ_WRITE_BLOCK_BYTES,
        iodepth=SEQ_WRITE_QUEUE_DEPTH,
        direct=True,
        size_bytes=size_bytes,
        runtime_s=runtime_s,
        ioengine="libaio",
    )


def ensure_fio() -> Availability:
    """Find fio, installing Debian's `fio` package when missing."""
    return ensure_debian_packages({"fio": "fio"})["fio"]


def run_fio(job: FioJob, *, timeout_s: float | None = None) -> FioResult:
    """Run `job` and parse fio's JSON report.

    Raises `PeerUnavailableError` when fio cannot be had and RuntimeError when fio fails.
    The default timeout allows `runtime_s` plus time to lay out the file, plus a minute.
    """
    binary = ensure_fio().require()
    if timeout_s is None:
        timeout_s = job.runtime_s + job.size_bytes / LAYOUT_BYTES_PER_S + 60.0
    completed = subprocess.run(
        [binary, *job.argv()],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"fio {job.name} failed (exit {completed.returncode}): "
            f"{completed.stderr.strip() or completed.stdout.strip()}"
        )
    return parse_fio_json(completed.stdout, rw=job.rw)


def parse_fio_json(stdout: str, *, rw: str) -> FioResult:
    """The `FioResult` of the first job in fio's JSON output (text before "{" is skipped)."""
    start = stdout.find("{")
    if start < 0:
        raise RuntimeError(f"fio printed no JSON: {stdout[:500]!r}")
    report = json.loads(stdout[start:])
    job = report["jobs"][0]
    if job.get("error"):
        raise RuntimeError(f"fio job {job.get('jobname')} reported error {job['error']}")
    if rw in READ_MODES:
        sections = [job["read"]]
    elif rw in WRITE_MODES:
        sections = [job["write"]]
    else:
        sections = [job["read"], job["write"]]
    sync = job.get("sync", {})
    sync_percentiles = sync.get("lat_ns", {}).get("percentile") if sync.get("lat_ns") else None
    return FioResult(
        iops=sum(float(section["iops"]) for section in sections),
        bw_bytes_per_s=sum(float(section["bw_bytes"]) for section in sections),
        lat_p50_ms=max(percentile_ms(section, "50.000000") for section in sections),
        lat_p99_ms=max(percentile_ms(section, "99.000000") for section in sections),
        runtime_s=max(float(section["runtime"]) for section in sections) / 1000.0,
        ios=sum(int(section["total_ios"]) for section in sections),
        sync_lat_p50_ms=ns_to_ms(sync_percentiles, "50.000000"),
        sync_lat_p99_ms=ns_to_ms(sync_percentiles, "99.000000"),
    )


def percentile_ms(section: dict[str, Any], key: str) -> float:
    """Completion-latency percentile `key` (e.g. "99.000000") of a read/write section, ms."""
    for latency in ("clat_ns", "lat_ns"):
        value = ns_to_ms(section.get(latency, {}).get("percentile"), key)
        if value is not None:
            return value
    return 0.0


def ns_to_ms(percentiles: dict[str, Any] | None, key: str) -> float | None:
    """`percentiles[key]` converted from nanoseconds to milliseconds, None when absent."""
    if not percentiles or key not in percentiles:
        return None
    return float(percentiles[key]) / 1e6
