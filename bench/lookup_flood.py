"""The flood client of `pinhole bench lookups`: GETs every path of a file once, `concurrency`
requests in flight, as fast as the server answers, and reports what came back.

    python -m bench.lookup_flood BASE_URL PATHS_FILE [--concurrency N]

It runs in a process of its own so that its CPU is neither the measuring client's nor the
servers', and it uses the lean HTTP client so that it costs the machine little. On stdout:
the line `started` just before the first request, then, when every path was asked, one
JSON object:

    gets            requests answered or failed (= the paths)
    elapsed_s       first request sent -> last answer received
    gets_per_s      gets / elapsed_s
    answers         {"<status> <error code>": count}: the error code of a JSON error body
                    ({"error": {"code": ...}}), "-" for any other body
    failures        {"<exception class>": count}: requests that got no answer
    latency_p50_ms, latency_p99_ms
    client_cpu_us_per_get   this process's CPU (user + system) per request
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

import uvloop

from common.leanhttp.client import HttpClientError, LeanHTTPClient

STARTED_LINE: Final = "started"
REQUEST_TIMEOUT_S: Final = 10.0


def answer_label(status: int, body: bytes) -> str:
    """`"<status> <error code>"`, the code of a pinhole JSON error body or "-"."""
    code = "-"
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            code = str(doc["error"].get("code", "-"))
    except ValueError:
        pass
    return f"{status} {code}"


def percentile_ms(sorted_s: list[float], q: float) -> float | None:
    """The q-th percentile (0 < q <= 1, nearest rank) of sorted seconds, in ms."""
    if not sorted_s:
        return None
    rank = max(1, math.ceil(len(sorted_s) * q))
    return round(sorted_s[rank - 1] * 1000, 3)


async def flood(base_url: str, paths: list[str], concurrency: int) -> dict[str, Any]:
    http = LeanHTTPClient(connections_per_origin_max=concurrency)
    answers: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    latencies: list[float] = []
    todo = iter(paths)

    async def worker() -> None:
        for path in todo:  # one shared iterator: each path is asked once
            t0 = time.perf_counter()
            try:
                resp = await http.request("GET", base_url + path, timeout_s=REQUEST_TIMEOUT_S)
            except HttpClientError as e:
                failures[type(e).__name__] += 1
                continue
            latencies.append(time.perf_counter() - t0)
            answers[answer_label(resp.status, resp.body)] += 1

    try:
        print(STARTED_LINE, flush=True)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
    finally:
        await http.close()
    latencies.sort()
    return {
        "gets": len(paths),
        "elapsed_s": round(elapsed, 3),
        "gets_per_s": round(len(paths) / elapsed, 1) if elapsed > 0 else None,
        "answers": dict(answers),
        "failures": dict(failures),
        "latency_p50_ms": percentile_ms(latencies, 0.50),
        "latency_p99_ms": percentile_ms(latencies, 0.99),
        "client_cpu_us_per_get": round(cpu_s * 1e6 / len(paths), 1) if paths else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lookup_flood", description=__doc__)
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8780 (the router)")
    parser.add_argument("paths_file", type=Path, help="URL paths, one a line")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    paths = args.paths_file.read_text().split()
    result = uvloop.run(flood(args.base_url.rstrip("/"), paths, args.concurrency))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
