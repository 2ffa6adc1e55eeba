"""`pinhole bench media`: the media pipeline on this machine.

Figures (--json "figures"):
- photo_ready_p95_s: a 12 MP JPEG uploaded through the API of a local cluster (`pinhole up`
  layout, its workers) -> every variant of its ladder ready; p95 over the uploads. Goal < 2 s.
- ladder_photos_per_s (pyvips) and ladder_photos_per_s_pillow: whole ladders (8 renditions x
  AVIF, WebP, JPEG) made per second in one process, the same photo, the same run;
  ladder_pyvips_vs_pillow is their ratio.
- webp_bytes_vs_jpeg, avif_bytes_vs_jpeg: bytes of the ladder's WebP (AVIF) variants over its
  JPEG ones, summed over the ladder sizes.

The photo is synthetic (smooth gradients, shapes, fine texture and sensor-like noise, EXIF
with GPS), made once per run, so every run measures the same bytes.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from bench.report import Goals, publish, run_header
from common import credentials
from ops import local_cluster as lc
from ops.demo_account import demo_token

# Only the ready time has a goal; the other figures are measured for capacity planning.
GOALS: Final[Goals] = {"photo_ready_p95_s": ("<", 2.0)}
PHOTO_WIDTH: Final = 4000
PHOTO_HEIGHT: Final = 3000
READY_WAIT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Plan:
    uploads: int
    ladders: int
    workers: int


QUICK: Final = Plan(uploads=4, ladders=2, workers=1)
FULL: Final = Plan(uploads=30, ladders=10, workers=2)


def log(message: str) -> None:
    import sys

    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def twelve_megapixel_jpeg() -> bytes:
    """A photo-like 4000x3000 JPEG (q 92) with EXIF and GPS, made with pyvips."""
    import pyvips

    x = pyvips.Image.xyz(PHOTO_WIDTH, PHOTO_HEIGHT)
    xs, ys = x[0], x[1]
    red = (xs * (255 / PHOTO_WIDTH)).cast("uchar")
    green = (ys * (255 / PHOTO_HEIGHT)).cast("uchar")
    rings = (((xs - 2000) ** 2 + (ys - 1500) ** 2) ** 0.5 / 6).sin() * 60 + 128
    noise = pyvips.Image.gaussnoise(PHOTO_WIDTH, PHOTO_HEIGHT, sigma=6, mean=0)
    blue = (rings + noise).cast("uchar")
    image = red.bandjoin([green, blue]).copy(interpretation="srgb")
    image = image.draw_rect([30, 30, 30], 600, 500, 900, 700, fill=True)
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Model", "bench camera")
    return bytes(image.jpegsave_buffer(Q=92))


def ladder_figures(
    photo: bytes, plan: Plan, figures: dict[str, Any], detail: dict[str, Any]
) -> None:
    from common.photo import Format
    from transformer.ladder import make_photo_ladder
    from transformer.ladder_pillow import make_photo_ladder_pillow
    from transformer.limits import MediaLimits

    limits = MediaLimits()
    rates = {}
    for name, make in (("pyvips", make_photo_ladder), ("pillow", make_photo_ladder_pillow)):
        make(photo, limits=limits)  # warm up (libraries load their codecs once)
        t0 = time.perf_counter()
        for _ in range(plan.ladders):
            ladder = make(photo, limits=limits)
        elapsed = time.perf_counter() - t0
        rates[name] = plan.ladders / elapsed
        log(f"ladder {name}: {rates[name]:.2f} ladders/s ({elapsed / plan.ladders:.3f} s each)")
        by_format: dict[str, int] = {}
        for v in ladder.variants:
            key = Format(v.fmt).name.lower()
            by_format[key] = by_format.get(key, 0) + len(v.data)
        detail[f"ladder_{name}"] = {
            "seconds_per_ladder": round(elapsed / plan.ladders, 3),
            "variants": len(ladder.variants),
            "bytes_by_format": by_format,
        }
    figures["ladder_photos_per_s"] = round(rates["pyvips"], 2)
    figures["ladder_photos_per_s_pillow"] = round(rates["pillow"], 2)
    figures["ladder_pyvips_vs_pillow"] = round(rates["pyvips"] / rates["pillow"], 2)
    sizes = detail["ladder_pyvips"]["bytes_by_format"]
    figures["webp_bytes_vs_jpeg"] = round(sizes["webp"] / sizes["jpeg"], 3)
    figures["avif_bytes_vs_jpeg"] = round(sizes["avif"] / sizes["jpeg"], 3)


async def ready_times(layout: lc.Layout, photo: bytes, plan: Plan) -> list[float]:
    token = await demo_token(layout.api_url, layout.root, username="bench")
    api = layout.api_url + "/api/v1/media"
    out = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(plan.uploads + 1):  # the first one warms the workers up
            form = aiohttp.FormData()
            form.add_field("file", photo, filename="photo.jpg")
            async with http.post(f"{api}/upload", data=form) as r:
                doc = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"upload failed: {r.status} {doc}")
            accepted = time.perf_counter()
            async with http.get(f"{api}/{doc['media_id']}", params={"wait_s": READY_WAIT_S}) as r:
                doc = await r.json()
            ready_s = time.perf_counter() - accepted
            if doc["status"] != "ready":
                raise RuntimeError(f"media not ready after {READY_WAIT_S} s: {doc['status']}")
            if i:
                out.append(ready_s)
                log(f"upload {i}: ready {ready_s:.2f} s after acceptance")
    return out


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(
    *, quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    t0 = time.monotonic()
    photo = twelve_megapixel_jpeg()
    detail["photo"] = {"width": PHOTO_WIDTH, "height": PHOTO_HEIGHT, "bytes": len(photo)}
    log(f"photo: {PHOTO_WIDTH}x{PHOTO_HEIGHT} JPEG, {len(photo):,} bytes")
    ladder_figures(photo, plan, figures, detail)
    with tempfile.TemporaryDirectory(prefix="bench-media-", dir=base) as scratch:
        layout = lc.Layout(
            root=Path(scratch).resolve() / "cluster",
            port_base=lc.free_port_base(),
            stores=4,
            workers=plan.workers,
        )
        layout.root.mkdir(parents=True)
        credentials.ensure_secret_file(layout.root)
        lc.save_layout(layout)
        running, _ = lc.start_missing(layout)
        try:
            asyncio.run(lc.wait_up(layout, running))
            times = asyncio.run(ready_times(layout, photo, plan))
        finally:
            lc.stop(list(running.values()))
    figures["photo_ready_p95_s"] = round(p95(times), 3)
    detail["photo_ready"] = {
        "uploads": len(times),
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
        "workers": plan.workers,
    }
    doc = {
        **run_header("media", quick=quick),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "figures": figures,
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "detail": detail,
        "plan": {"uploads": plan.uploads, "ladders": plan.ladders, "workers": plan.workers},
    }
    publish(doc, GOALS, json_path=json_path, plot_path=plot_path)
    return doc
