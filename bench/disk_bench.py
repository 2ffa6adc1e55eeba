"""`pinhole bench disk`: the raw figures of the disk under a directory, for `pinhole plan`.

It runs the fio jobs `pinhole bench store` compares the store node with (bench/peers/fio.py:
the same block sizes, queue depth and durability), on a scratch file in `--dir`, so a
capacity plan for a target disk rests on the figures the store was measured against:

    rand_read_iops_20k, rand_read_mb_s_20k, rand_read_p99_ms_20k     20 KiB random reads,
    rand_read_iops_100k, rand_read_mb_s_100k, rand_read_p99_ms_100k  100 KiB, both direct
                                   I/O at queue depth 16 (libaio): one photo read per I/O
    seq_write_mb_s                 1 MiB direct sequential writes, queue depth 8
    fsync_write_per_s, fsync_write_p99_ms   20 KiB appends, each followed by fdatasync: a
                                   volume's durable write with no group commit to share it

Sizes: MB is 10**6 bytes. Each figure is the median of the plan's runs; every run is in
"detail". There are no goals: these are the disk's own figures, not a comparison.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.peers.fio import (
    SEQ_WRITE_BLOCK_BYTES,
    SEQ_WRITE_QUEUE_DEPTH,
    STORE_READ_BLOCK_BYTES,
    STORE_READ_QUEUE_DEPTH,
    STORE_WRITE_BLOCK_BYTES,
    FioJob,
    FioResult,
    KiB,
    MiB,
    append_fdatasync_job,
    ensure_fio,
    randread_job,
    run_fio,
    seq_write_job,
)
from bench.report import publish, run_header
from bench.store_fixtures import disk_of

MB: Final = 10**6
FIGURES: Final = (
    "rand_read_iops_20k",
    "rand_read_mb_s_20k",
    "rand_read_p99_ms_20k",
    "rand_read_iops_100k",
    "rand_read_mb_s_100k",
    "rand_read_p99_ms_100k",
    "seq_write_mb_s",
    "fsync_write_per_s",
    "fsync_write_p99_ms",
)


@dataclass(frozen=True)
class Plan:
    mode: str
    read_file_bytes: int  # the file random reads go over (laid out by fio first)
    write_bytes_max: int  # a write job stops here or at runtime_s, whichever comes first
    runtime_s: float
    runs: int


QUICK: Final = Plan("quick", 32 * MiB, 32 * MiB, 1.0, 1)
FULL: Final = Plan("full", 4 * 1024 * MiB, 4 * 1024 * MiB, 10.0, 3)


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _tag(block_bytes: int) -> str:
    return f"{block_bytes // KiB}k"


def _median(results: list[FioResult], attr: str) -> float:
    return float(statistics.median(getattr(r, attr) for r in results))


def _runs(job: FioJob, runs: int, *, scratch: Path | None = None) -> list[FioResult]:
    """`job` `runs` times; `scratch` (a write job's file) is removed after each run."""
    results = []
    for _ in range(runs):
        results.append(run_fio(job))
        if scratch is not None:
            scratch.unlink(missing_ok=True)
    return results


def _detail(job: FioJob, results: list[FioResult]) -> dict[str, Any]:
    return {
        "rw": job.rw,
        "bs_bytes": job.bs_bytes,
        "iodepth": job.iodepth,
        "direct": job.direct,
        "fdatasync": job.fdatasync,
        "iops": round(_median(results, "iops")),
        "mb_s": round(_median(results, "bw_bytes_per_s") / MB, 1),
        "lat_p99_ms": round(_median(results, "lat_p99_ms"), 3),
        "runs": [round(r.iops) for r in results],
    }


def measure(plan: Plan, work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(figures, detail) of the fio jobs run in `work`."""
    figures: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    read_file = work / "randread"
    for block in STORE_READ_BLOCK_BYTES:
        tag = _tag(block)
        job = randread_job(
            read_file,
            bs_bytes=block,
            iodepth=STORE_READ_QUEUE_DEPTH,
            size_bytes=plan.read_file_bytes // block * block,
            runtime_s=plan.runtime_s,
        )
        results = _runs(job, plan.runs)
        row = detail[f"fio_randread_{tag}_qd{STORE_READ_QUEUE_DEPTH}"] = _detail(job, results)
        figures[f"rand_read_iops_{tag}"] = row["iops"]
        figures[f"rand_read_mb_s_{tag}"] = row["mb_s"]
        figures[f"rand_read_p99_ms_{tag}"] = row["lat_p99_ms"]
        _log(f"randread {tag} QD{STORE_READ_QUEUE_DEPTH}: {row['iops']:,} IOPS, {row['mb_s']} MB/s")
    read_file.unlink(missing_ok=True)

    seq_file = work / "seqwrite"
    job = seq_write_job(seq_file, size_bytes=plan.write_bytes_max, runtime_s=plan.runtime_s)
    row = _detail(job, _runs(job, plan.runs, scratch=seq_file))
    detail[f"fio_seqwrite_{SEQ_WRITE_BLOCK_BYTES // MiB}m_qd{SEQ_WRITE_QUEUE_DEPTH}"] = row
    figures["seq_write_mb_s"] = row["mb_s"]
    _log(f"seqwrite 1 MiB QD{SEQ_WRITE_QUEUE_DEPTH}: {row['mb_s']} MB/s")

    append_file = work / "append"
    job = append_fdatasync_job(
        append_file,
        bs_bytes=STORE_WRITE_BLOCK_BYTES,
        size_bytes=plan.write_bytes_max,
        runtime_s=plan.runtime_s,
    )
    results = _runs(job, plan.runs, scratch=append_file)
    row = detail[f"fio_append_fdatasync_{_tag(STORE_WRITE_BLOCK_BYTES)}"] = _detail(job, results)
    syncs = [r.sync_lat_p99_ms for r in results if r.sync_lat_p99_ms is not None]
    row["sync_lat_p99_ms"] = round(statistics.median(syncs), 3) if syncs else None
    figures["fsync_write_per_s"] = row["iops"]
    figures["fsync_write_p99_ms"] = row["sync_lat_p99_ms"] or row["lat_p99_ms"]
    _log(f"append+fdatasync {_tag(STORE_WRITE_BLOCK_BYTES)}: {row['iops']:,} writes/s")
    return figures, detail


def main(*, quick: bool, json_path: Path | None, directory: Path | None) -> dict[str, Any]:
    """Runs the jobs in a scratch directory under `directory` (default ./.pinhole: the disk
    the local cluster's volumes live on), prints the table, writes the JSON if asked."""
    plan = QUICK if quick else FULL
    fio = ensure_fio().require()
    base = directory or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-disk-", dir=base) as scratch:
        figures, detail = measure(plan, Path(scratch))
    doc = {
        **run_header("disk", quick=quick),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "figures": figures,
        "goals": {},
        "detail": detail,
        "peers": {"fio": fio},
        "disk": {"dir": str(base.resolve()), "device": disk_of(base)},
        "plan": {
            "read_file_bytes": plan.read_file_bytes,
            "write_bytes_max": plan.write_bytes_max,
            "runtime_s": plan.runtime_s,
            "runs": plan.runs,
        },
    }
    publish(doc, {}, json_path=json_path, plot_path=None)
    return doc
