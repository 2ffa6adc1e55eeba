"""Hot 20 KiB GETs with the store's C read path against the pure-Python path, interleaved.

    python -m bench.store_native_ab [ROUNDS [SECONDS]]

Two store nodes on copies of one volume (20,000 needles of 20 KiB, warm in the page cache),
one with the C read path (store/native) and one with PINHOLE_STORE_NATIVE=0, loaded in turn
by wrk (64 connections, SECONDS each, 3 by default) ROUNDS times each (8 by default), the
order alternating every round. Prints each path's server CPU per request and req/s (medians
and every run) and native_cpu_vs_python. Interleaving keeps the comparison fair on a machine
whose load changes from minute to minute, where `pinhole bench store --quick`'s one-second
runs do not.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Final

from bench.peers.cpu import ProcessCpu, cpu_us_per_request
from bench.peers.pagecache import warm
from bench.peers.wrk import run_wrk
from bench.store_fixtures import load_store, object_sets, shuffled_paths_file
from bench.store_node import StoreNodeProcess
from common import credentials
from store import native

NEEDLES: Final = 20_000
NEEDLE_BYTES: Final = 20 * 1024
CONNECTIONS: Final = 64


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    duration_s = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    Path(".pinhole").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-native-ab-", dir=".pinhole"))
    try:
        sets = object_sets({NEEDLE_BYTES: NEEDLES})
        load_store(work / "c", sets)
        shutil.copytree(work / "c", work / "python")
        secret = credentials.ensure_secret_file(work)
        paths = shuffled_paths_file(work / "paths", sets[0].store_paths(), 1)
        cpus: dict[str, list[float]] = {"c": [], "python": []}
        rates: dict[str, list[float]] = {"c": [], "python": []}
        python_env = {**os.environ, native.ENV_SWITCH: "0"}
        with (
            StoreNodeProcess(work / "c", secret, work / "c.log") as c_node,
            StoreNodeProcess(
                work / "python", secret, work / "python.log", env=python_env
            ) as py_node,
        ):
            for name in ("c", "python"):
                warm(work / name / "volumes" / "v1.dat")
            nodes = [("c", c_node), ("python", py_node)]
            for i in range(rounds):
                for name, node in nodes if i % 2 == 0 else nodes[::-1]:
                    cpu = ProcessCpu([node.pid])
                    cpu.start()
                    result = run_wrk(
                        node.url,
                        paths=paths,
                        connections=CONNECTIONS,
                        duration_s=duration_s,
                        headers={"Authorization": node.read_authorization},
                        seed=i + 1,
                    )
                    spent = cpu.stop()
                    if result.non_2xx or result.errors:
                        raise RuntimeError(f"{name}: {result.non_2xx} non-2xx, {result.errors}")
                    cpus[name].append(cpu_us_per_request(spent, result.requests))
                    rates[name].append(result.requests_per_s)
        for name in ("c", "python"):
            runs = " ".join(f"{x:.1f}" for x in cpus[name])
            print(
                f"{name:6s} server CPU us/req median {statistics.median(cpus[name]):.1f}"
                f" (runs {runs}); req/s median {statistics.median(rates[name]):,.0f}"
            )
        ratio = statistics.median(cpus["c"]) / statistics.median(cpus["python"])
        print(f"native_cpu_vs_python {ratio:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
