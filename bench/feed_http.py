"""`pinhole bench feed`, the path a client sees: the hydrated home timeline over HTTP from
real API processes (`pinhole api serve` with [api] processes), both APIs: pinhole's
`GET /api/v1/feed` and Mastodon's `GET /api/v1/timelines/home`, first page of PAGE_LIMIT
posts.

On the benchmark's graph (bench/feed_bench.py; the hybrid strategy, its own Redis prefix),
every backlog post gets one ready photo (a media row with the PHOTO_SIZES x three formats
ladder of variant rows: hydration builds every URL as for a real post), each reader of the
reader set a session. The API is started on that database and Redis prefix, as the plan's
number of processes on one port (ops/api_processes.py); per
API, every reader first reads once (their timelines built, as in the ids-only reads), then
wrk (bench/wrk/get_auth_paths.lua) sends each request as a random reader, `connections`
connections at once: first for `settle_seconds`, untimed (reported apart as `settle`:
right after the warm-up has filled a process's caches, its first full collections walk
them, and each process learns its readers' memos; whichever API ran first showed a p99 two
to five times the second's, for that reason and not for its own), then for `seconds`,
measured. Reported per API: p50, p99 and requests/s (closed
loop: the rate the p99 was taken at), the API's CPU time per request (summed over its
processes, the one that starts them included), and the
ratios to the ids-only read (feed_bench.reads, Feed.page in the benchmark's process) of
the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from bench.peers.wrk import SCRIPT_DIR, WrkResult, ensure_wrk, parse_summary, whole_seconds
from common.credentials import ensure_secret_file
from common.db import Database
from common.photo import Format
from ops.local_cluster import profiled_argv
from social import sessions
from social.schema import post_media, posts
from transformer.schema import media, variants
from transformer.variants import PHOTO_SIZES

REPO: Final = Path(__file__).resolve().parents[1]
SCRIPT: Final = SCRIPT_DIR / "get_auth_paths.lua"
PAGE_LIMIT: Final = 20
APIS: Final = {
    "pinhole": f"/api/v1/feed?limit={PAGE_LIMIT}",
    "mastodon": f"/api/v1/timelines/home?limit={PAGE_LIMIT}",
}
API_START_S_MAX: Final = 60.0
API_STOP_S_MAX: Final = 15.0
WRK_TIMEOUT_S: Final = 5.0
SESSIONS_PER_USER_MAX: Final = 10
BATCH_ROWS: Final = 5_000
PHOTO_FMTS: Final = (Format.JPEG, Format.WEBP, Format.AVIF)
PHOTO_WIDTH: Final = 1080
PHOTO_HEIGHT: Final = 1350
BLURHASH: Final = "LEHV6nWB2yk8pyo0adR*.7kCMdnj"
SHARD_STEP: Final = 1 << 10  # one logical shard up: a post id's media id (common/ids.py)
_LISTENING: Final = re.compile(r"api listening on (http://[^/\s]+)")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def add_photos(db: Database) -> int:
    """One ready photo (media row, variant ladder, post_media row) on every post without
    one; returns how many posts got one."""
    async with db.snapshot() as conn:
        rows = (
            await conn.execute(
                sa.select(posts.c.post_id, posts.c.author_id).where(
                    posts.c.post_id.not_in(sa.select(post_media.c.post_id))
                )
            )
        ).all()
    now = time.time()
    media_rows, variant_rows, link_rows = [], [], []
    for post_id, author_id in rows:
        media_id = int(post_id) + SHARD_STEP
        media_rows.append(
            {
                "media_id": media_id,
                "owner_id": int(author_id),
                "media_type": "image",
                "status": "ready",
                "fmt": int(Format.JPEG),
                "size_bytes": 400_000,
                "width": PHOTO_WIDTH,
                "height": PHOTO_HEIGHT,
                "duration_s": None,
                "filter_id": None,
                "cookie_hex": secrets.token_hex(8),
                "original_volume_id": 1,
                "placeholder": BLURHASH,
                "error_code": None,
                "created_unix_s": now,
                "ready_unix_s": now,
                "expires_unix_s": None,
                "attached_unix_s": now,
                "original_cookie_hex": secrets.token_hex(8),
                "pending_cookie_hex": None,
            }
        )
        for size in PHOTO_SIZES:
            for fmt in PHOTO_FMTS:
                variant_rows.append(
                    {
                        "media_id": media_id,
                        "rendition": size,
                        "fmt": int(fmt),
                        "volume_id": 1,
                        "size_bytes": size * size // 8,
                        "width": size * PHOTO_WIDTH // PHOTO_HEIGHT,
                        "height": size,
                    }
                )
        link_rows.append(
            {"post_id": int(post_id), "position": 0, "media_id": media_id, "alt_text": None}
        )
    for table, batch in ((media, media_rows), (variants, variant_rows), (post_media, link_rows)):
        for i in range(0, len(batch), BATCH_ROWS):
            async with db.transaction(lock="social") as conn:
                await conn.execute(table.insert(), batch[i : i + BATCH_ROWS])
    return len(rows)


async def open_sessions(db: Database, readers: Sequence[int]) -> list[tuple[int, str]]:
    return [
        (
            reader,
            await sessions.open_session(
                db,
                reader,
                per_user_max=SESSIONS_PER_USER_MAX,
                user_agent="pinhole bench feed",
                address="127.0.0.1",
            ),
        )
        for reader in readers
    ]


def _config_toml(
    *, prefix: str, fanout_threshold: int, database_schema: str | None, processes: int
) -> str:
    lines = [
        "[api]",
        f"processes = {processes}",
        "[feed]",
        f"redis_prefix = {json.dumps(prefix)}",
        'strategy = "hybrid"',
        f"fanout_threshold = {fanout_threshold}",
    ]
    if database_schema:
        lines += ["[media]", f"database_schema = {json.dumps(database_schema)}"]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def api_process(
    scratch: Path,
    *,
    database_url: str,
    database_schema: str | None,
    redis_url: str,
    prefix: str,
    fanout_threshold: int,
    processes: int,
) -> AsyncIterator[tuple[str, int]]:
    """`pinhole api serve` ([api] processes = `processes`) on the benchmark's database and
    Redis prefix, on a free port: yields (its base URL, its pid: with several processes the
    one that started them, api_pids); SIGTERM and a wait on exit."""
    config = scratch / "pinhole.toml"
    config.write_text(
        _config_toml(
            prefix=prefix,
            fanout_threshold=fanout_threshold,
            database_schema=database_schema,
            processes=processes,
        )
    )
    secret = ensure_secret_file(scratch / "secret")
    for d in ("api", "media"):
        (scratch / d).mkdir(exist_ok=True)
    unreachable = "http://127.0.0.1:9"  # no blob is written or read: the feed needs neither
    argv = [
        sys.executable, "-m", "ops.cli", "--config", str(config), "api", "serve",
        "--host", "127.0.0.1", "--port", "0", "--data", str(scratch / "api"),
        "--media-data", str(scratch / "media"), "--database-url", database_url,
        "--directory-url", unreachable, "--router-url", unreachable,
        "--secret-file", str(secret), "--redis-url", redis_url, "--log-level", "warning",
    ]  # fmt: skip
    stderr = (scratch / "api.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *profiled_argv(argv, "api"),  # under cProfile when PINHOLE_PROFILE_DIR is set
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + API_START_S_MAX
        base = None
        while base is None:
            left = deadline - time.monotonic()
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=max(left, 0.1))
            if not line:
                tail = (scratch / "api.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the API process exited before listening: {tail}")
            found = _LISTENING.search(line.decode(errors="replace"))
            if found:
                base = found.group(1)
        yield base, proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=API_STOP_S_MAX)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        stderr.close()


def api_pids(pid: int) -> list[int]:
    """The API's processes: `pid` and the processes it started (ops/api_processes.py)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_rss_mb(pids: Sequence[int], field: str = "RssAnon") -> float:
    """rss_mb summed over the API's processes."""
    return round(sum(rss_mb(p, field) for p in pids), 1)


def rss_mb(pid: int, field: str = "RssAnon") -> float:
    """Resident memory of a process, MiB (/proc/<pid>/status): by default its own memory
    (RssAnon), not the database pages it maps (VmRSS counts those too)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} for process {pid}")


def wrk(base: str, lines: Path, *, connections: int, seconds: float) -> WrkResult:
    binary = ensure_wrk().require()
    argv = [
        binary, "--threads=1", f"--connections={connections}",
        f"--duration={whole_seconds(seconds)}s", f"--timeout={whole_seconds(WRK_TIMEOUT_S)}s",
        f"--script={SCRIPT}", base + "/", "--", str(lines), "1",
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=whole_seconds(seconds) + WRK_TIMEOUT_S + 60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stderr}{done.stdout}")
    return parse_summary(done.stdout)


async def warm_up(
    base: str, path: str, tokens: Sequence[str], concurrency: int
) -> tuple[float, int]:
    """Every reader reads its first page once (their timelines built, as the ids-only
    warm-up does); every answer must be 200. Returns the seconds it took and how many
    distinct posts the pages showed (the working set the load then reads)."""
    import aiohttp

    queue = iter(tokens)
    shown: set[str] = set()
    t0 = time.perf_counter()

    async def worker(http: aiohttp.ClientSession) -> None:
        for token in queue:
            async with http.get(base + path, headers={"Authorization": f"Bearer {token}"}) as r:
                if r.status != 200:
                    raise RuntimeError(f"warm-up GET {path} answered {r.status}")
                body = await r.json()
            items = body["posts"] if isinstance(body, dict) else body
            shown.update(p["post_id"] if "post_id" in p else p["id"] for p in items)

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return time.perf_counter() - t0, len(shown)


async def _check_page(base: str, path: str, token: str) -> dict[str, Any]:
    """One request as a reader: 200, posts with photos (the load measures real pages)."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.get(base + path, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"GET {path} answered {r.status}: {body}")
    items = body["posts"] if isinstance(body, dict) else body
    media_key = "media" if isinstance(body, dict) else "media_attachments"
    return {
        "status": r.status,
        "posts": len(items),
        "photos": sum(len(p[media_key]) for p in items),
    }


async def run_http(
    db: Database,
    readers: Sequence[int],
    *,
    database_url: str,
    database_schema: str | None,
    redis_url: str,
    prefix: str,
    fanout_threshold: int,
    connections: int,
    seconds: float,
    processes: int,
    settle_seconds: float,
) -> dict[str, Any]:
    """The HTTP phase (see the module docstring); the caller deletes the Redis prefix."""
    t0 = time.perf_counter()
    photos = await add_photos(db)
    tokens = await open_sessions(db, readers)
    log(f"http: {photos} posts given a photo, {len(tokens)} sessions")
    out: dict[str, Any] = {
        "photos_added": photos,
        "readers": len(tokens),
        "connections": connections,
        "seconds": seconds,
        "api_processes": processes,
        "setup_s": round(time.perf_counter() - t0, 1),
    }
    with tempfile.TemporaryDirectory(prefix="bench-feed-http-") as tmp:
        scratch = Path(tmp)
        async with api_process(
            scratch,
            database_url=database_url,
            database_schema=database_schema,
            redis_url=redis_url,
            prefix=prefix,
            fanout_threshold=fanout_threshold,
            processes=processes,
        ) as (base, pid):
            pids = api_pids(pid)
            if len(pids) != (1 if processes == 1 else processes + 1):
                raise RuntimeError(f"the API runs as processes {pids}, not {processes}")
            for api, path in APIS.items():
                lines = scratch / f"{api}.txt"
                lines.write_text("".join(f"{path}\t{token}\n" for _, token in tokens))
                check = await _check_page(base, path, tokens[0][1])
                warm_s, shown = await warm_up(base, path, [t for _, t in tokens], connections)
                settle = await asyncio.to_thread(
                    wrk, base, lines, connections=connections, seconds=settle_seconds
                )
                cpu0 = [cpu_s(p) for p in pids]
                got = await asyncio.to_thread(
                    wrk, base, lines, connections=connections, seconds=seconds
                )
                cpu_by = [cpu_s(p) - c for p, c in zip(pids, cpu0, strict=True)]
                cpu = sum(cpu_by)
                rss = api_rss_mb(pids)
                out[api] = {
                    "path": path.split("?")[0],
                    "first_page": check,
                    "warmup_s": round(warm_s, 1),
                    "warmup_distinct_posts": shown,
                    # The untimed run before the measured one: the process settling after
                    # the warm-up filled its caches (the first full collections of what they
                    # hold, the per-process memos of the readers).
                    "settle": {
                        "seconds": settle_seconds,
                        "req_per_s": round(settle.requests_per_s, 1),
                        "p99_ms": round(settle.latency_p99_ms, 2),
                        "max_ms": round(settle.latency_max_ms, 2),
                        "errors": settle.errors,
                    },
                    "requests": got.requests,
                    "req_per_s": round(got.requests_per_s, 1),
                    "p50_ms": round(got.latency_p50_ms, 2),
                    "p90_ms": round(got.latency_p90_ms, 2),
                    "p99_ms": round(got.latency_p99_ms, 2),
                    "max_ms": round(got.latency_max_ms, 2),
                    "errors": got.errors,
                    "api_cpu_ms_per_request": round(cpu / max(got.requests, 1) * 1000, 3),
                    # Each process's CPU seconds under the load (the starter first, idle):
                    # how evenly the kernel spread the connections.
                    "api_cpu_s_by_process": [round(c, 2) for c in cpu_by],
                    "api_rss_mb": rss,
                    "api_vm_rss_mb": api_rss_mb(pids, "VmRSS"),
                    "wrk": asdict(got),
                }
                log(
                    f"http {api}: {got.requests_per_s:.0f} req/s, p50 {got.latency_p50_ms:.1f} "
                    f"ms, p99 {got.latency_p99_ms:.1f} ms, {connections} connections, "
                    f"API CPU {cpu / max(got.requests, 1) * 1000:.2f} ms/request, "
                    f"RSS {rss:.0f} MiB over {processes} process(es), {shown} distinct posts "
                    "in the warm-up"
                )
    return out


def figures_of(http: dict[str, Any], ids_only: dict[str, Any]) -> dict[str, Any]:
    """feed_http_* per API, and the ratios to the ids-only read (the hybrid strategy's
    Feed.page reads of the same run): p99 over p99, req/s over reads/s."""
    figures: dict[str, Any] = {}
    for api in APIS:
        row = http[api]
        figures[f"feed_http_p99_ms_{api}"] = row["p99_ms"]
        figures[f"feed_http_p50_ms_{api}"] = row["p50_ms"]
        figures[f"feed_http_req_per_s_{api}"] = row["req_per_s"]
        figures[f"feed_http_api_cpu_ms_{api}"] = row["api_cpu_ms_per_request"]
        figures[f"feed_http_api_rss_mb_{api}"] = row["api_rss_mb"]
        figures[f"feed_http_vs_ids_p99_{api}"] = round(row["p99_ms"] / ids_only["feed_p99_ms"], 2)
        figures[f"feed_http_vs_ids_rate_{api}"] = round(
            row["req_per_s"] / ids_only["feed_reads_per_s"], 3
        )
    return figures
