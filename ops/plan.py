"""`pinhole plan`: a load and measured figures turned into a deployment, every number traced.

The plan is a sheet of named figures. A given figure (the load, an assumption, a config
value, a figure a benchmark measured, a constant of an on-disk format) carries its source;
a computed one carries its formula and the names of its inputs, so the JSON lists, for each
computed quantity, the inputs of its formula with their values and sources. The formulas
are written once, as the lambdas below: their parameter names are the inputs they read.

Tiers (ARCHITECTURE.md): photos younger than hot_to_warm_days live in Haystack volumes on
store nodes, three replicas, their needle maps in RAM; older ones in f4 cells, RS(10,4)
stripes. Pure: no I/O here (ops/plan_cmds.py reads the files and prints).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final

from common.photo import Format, alt_key
from directory.config import DirectoryConfig
from f4.config import F4Config
from feed.config import FeedConfig
from ops.plan_inputs import Assumptions, Given, Load, assumed
from social.config import SocialConfig
from store import needle
from store.config import StoreConfig
from store.needle_run import (
    ALT_TABLE_MAX,
    KEY_BYTES,
    NEEDLE_BYTES_BESIDES_ALT,
    alt_code_bytes,
    bytes_per_needle,
)
from transformer import variants as renditions

DAY_S: Final = 86400.0
BITS_PER_BYTE: Final = 8
MB: Final = 10**6
# The needle_map benchmark's layout (bench/needle_map_bench.py): alt keys 0..8, nine
# needles per key. Its measured RAM over this format figure is the allocator's overhead.
NEEDLE_MAP_BENCH_MAX_ALT: Final = 8
NEEDLE_MAP_BENCH_NEEDLES_PER_KEY: Final = 9
# The largest alt key a photo's ladder stores: the 1080 square in the highest format code
# the ladder encodes (transformer/ladder.py: AVIF, WebP, JPEG).
LADDER_MAX_ALT: Final = alt_key(
    renditions.square(max(renditions.PHOTO_SIZES)), max(Format.AVIF, Format.WEBP, Format.JPEG)
)


@dataclass(frozen=True, slots=True)
class Computed:
    value: float
    unit: str
    formula: str
    inputs: tuple[str, ...]


class Sheet:
    """Named figures: given ones with their source, computed ones with their formula."""

    def __init__(self) -> None:
        self.given: dict[str, Given] = {}
        self.computed: dict[str, Computed] = {}

    def give(self, name: str, g: Given) -> None:
        if name in self.given or name in self.computed:
            raise KeyError(f"{name} is already on the sheet")
        self.given[name] = g

    def value(self, name: str) -> float:
        if name in self.computed:
            return self.computed[name].value
        return self.given[name].value

    def derive(self, name: str, unit: str, formula: str, fn: Callable[..., float]) -> float:
        """Computes `name` = fn(inputs), the inputs named by fn's parameters."""
        if name in self.given or name in self.computed:
            raise KeyError(f"{name} is already on the sheet")
        inputs = tuple(inspect.signature(fn).parameters)
        value = float(fn(*(self.value(i) for i in inputs)))
        self.computed[name] = Computed(value, unit, formula, inputs)
        return value

    def derive_max(self, name: str, unit: str, inputs: tuple[str, ...]) -> float:
        """`name` = the largest of `inputs` (the constraint that binds)."""
        if name in self.given or name in self.computed:
            raise KeyError(f"{name} is already on the sheet")
        value = max(self.value(i) for i in inputs)
        self.computed[name] = Computed(value, unit, f"max({', '.join(inputs)})", inputs)
        return value

    def source(self, name: str) -> str:
        if name in self.computed:
            return f"computed: {name}"
        return self.given[name].source

    def unit(self, name: str) -> str:
        return self.computed[name].unit if name in self.computed else self.given[name].unit

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": {
                n: {"value": _num(g.value), "unit": g.unit, "source": g.source}
                for n, g in self.given.items()
            },
            "quantities": {
                n: {
                    "value": _num(c.value),
                    "unit": c.unit,
                    "formula": c.formula,
                    "inputs": {
                        i: {
                            "value": _num(self.value(i)),
                            "unit": self.unit(i),
                            "source": self.source(i),
                        }
                        for i in c.inputs
                    },
                }
                for n, c in self.computed.items()
            },
        }


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 6)


@dataclass(frozen=True)
class Config:
    """The parts of pinhole.toml a plan reads (defaults when no file is given)."""

    store: StoreConfig
    directory: DirectoryConfig
    feed: FeedConfig
    f4: F4Config
    social: SocialConfig


def _config_inputs(s: Sheet, load: Load, config: Config) -> None:
    s.give(
        "volume_bytes",
        Given(config.store.volume.size_bytes_max, "B", "config: store.volume.size_bytes_max"),
    )
    s.give(
        "replicas",
        Given(config.directory.replica_count, "copies", "config: directory.placement"),
    )
    s.give(
        "volumes_per_node_max",
        Given(
            config.directory.volumes_per_node_max,
            "volumes",
            "config: directory.volumes_per_node_max",
        ),
    )
    s.give(
        "timeline_entries_max",
        Given(config.feed.timeline_entries_max, "entries", "config: feed.timeline_entries_max"),
    )
    s.give(
        "story_kept_days",
        Given(
            1 + config.social.story_reclaim_grace_s / DAY_S,
            "days",
            "config: 24 h + social.story_reclaim_grace_s",
        ),
    )
    if load.hot_to_warm_days is None:
        s.give(
            "hot_to_warm_days", Given(config.f4.age_s_min / DAY_S, "days", "config: f4.age_s_min")
        )
    else:
        s.give("hot_to_warm_days", Given(load.hot_to_warm_days, "days", "load: hot_to_warm_days"))
    s.give(
        "needle_overhead_bytes",
        Given(
            needle.HEADER_BYTES + needle.FOOTER_BYTES + needle.NEEDLE_ALIGNMENT_BYTES / 2,
            "B",
            "format: store/needle.py header + footer + half the alignment (mean padding)",
        ),
    )
    s.give(
        "needle_map_alt_bytes",
        Given(
            alt_code_bytes(max_alt=LADDER_MAX_ALT, distinct_alts=ALT_TABLE_MAX),
            "B",
            f"format: store/needle_run.py alt keys of the ladder (largest {LADDER_MAX_ALT}), "
            f"u8 codes into a run's table of at most {ALT_TABLE_MAX} distinct ones",
        ),
    )
    s.give(
        "needle_map_bytes_besides_alt",
        Given(NEEDLE_BYTES_BESIDES_ALT, "B", "format: store/needle_run.py offsets + lengths"),
    )
    s.give(
        "needle_map_key_bytes", Given(KEY_BYTES, "B", "format: store/needle_run.py keys + starts")
    )


def _load_inputs(s: Sheet, load: Load) -> None:
    for name, unit in (
        ("uploads_per_day", "uploads/day"),
        ("photo_bytes", "B"),
        ("feed_reads_per_s", "reads/s"),
        ("retention_days", "days"),
        ("timeline_users", "users"),
        ("stories_per_day", "stories/day"),
        ("story_bytes", "B"),
        ("messages_per_day", "messages/day"),
    ):
        value = getattr(load, name)
        assert value is not None, name  # plan() checked
        s.give(name, Given(float(value), unit, f"load: {name}"))
    s.give(
        "variant_bytes",
        Given(float(sum(b for _, b in load.variants)), "B", "load: variants (sum)"),
    )
    s.give("variants", Given(float(len(load.variants)), "variants", "load: variants (count)"))


ASSUMED: Final = (
    "peak_to_mean",
    "disk_bytes",
    "disks_per_node",
    "disk_fill_max",
    "disk_busy_max",
    "cpu_busy_max",
    "nic_bits_per_s",
    "nic_busy_max",
    "photo_fetches_per_feed_read",
    "cdn_hit_ratio",
    "cache_hit_ratio",
    "served_photo_bytes",
    "hot_read_share",
    "f4_cell_racks",
    "f4_hosts_per_rack",
    "redis_node_bytes",
    "redis_replicas",
    "message_row_bytes",
)
# Measured when a benchmark JSON holds them, else the assumption of the same name.
MEASURED_OR_ASSUMED: Final = (
    "redis_bytes_per_timeline_entry",
    "api_cpu_ms_per_feed_read",
    "router_cpu_us_per_photo",
    "store_cpu_us_per_read",
    "syncs_per_write",
    "ladder_photos_per_s",
    "f4_stretch",
)


def plan(
    load: Load,
    assumptions: Assumptions,
    measured: dict[str, Given],
    config: Config,
    *,
    overridden: AbstractSet[str] = frozenset(),
) -> Sheet:
    """The sheet of the deployment for `load`. Raises ValueError naming a missing load key."""
    missing = load.missing()
    if missing:
        raise ValueError(f"load: {missing[0]} is missing")
    s = Sheet()
    _load_inputs(s, load)
    _config_inputs(s, load, config)
    for name in ASSUMED:
        s.give(name, assumed(assumptions, name, overridden=overridden))
    for name in MEASURED_OR_ASSUMED:
        s.give(name, measured.get(name) or assumed(assumptions, name, overridden=overridden))
    for name in ("rand_read_iops_20k", "rand_read_iops_100k", "rand_read_mb_s_100k"):
        s.give(name, measured[name])
    s.give("seq_write_mb_s", measured["seq_write_mb_s"])
    s.give("fsync_write_per_s", measured["fsync_write_per_s"])
    if "ram_bytes_per_needle_measured" in measured:
        s.give("ram_bytes_per_needle_measured", measured["ram_bytes_per_needle_measured"])
        s.give(
            "needle_map_bench_format_bytes",
            Given(
                bytes_per_needle(
                    max_alt=NEEDLE_MAP_BENCH_MAX_ALT,
                    needles_per_key=NEEDLE_MAP_BENCH_NEEDLES_PER_KEY,
                    distinct_alts=NEEDLE_MAP_BENCH_MAX_ALT + 1,
                ),
                "B",
                "format: store/needle_run.py for bench/needle_map_bench.py's layout"
                " (u8 alts, 9 needles per key)",
            ),
        )
        s.derive(
            "ram_overhead_ratio",
            "x",
            "max(1, ram_bytes_per_needle_measured / needle_map_bench_format_bytes)",
            lambda ram_bytes_per_needle_measured, needle_map_bench_format_bytes: max(
                1.0, ram_bytes_per_needle_measured / needle_map_bench_format_bytes
            ),
        )
    else:
        s.give(
            "ram_overhead_ratio", assumed(assumptions, "ram_overhead_ratio", overridden=overridden)
        )
    _storage(s)
    _hot_tier(s)
    _warm_tier(s)
    _services(s)
    return s


def _storage(s: Sheet) -> None:
    d = s.derive
    d("needles_per_upload", "needles", "1 + variants", lambda variants: 1 + variants)
    d(
        "upload_disk_bytes",
        "B",
        "photo_bytes + variant_bytes + needles_per_upload * needle_overhead_bytes",
        lambda photo_bytes, variant_bytes, needles_per_upload, needle_overhead_bytes: (
            photo_bytes + variant_bytes + needles_per_upload * needle_overhead_bytes
        ),
    )
    d(
        "story_disk_bytes",
        "B",
        "story_bytes + needles_per_upload * needle_overhead_bytes (if any stories)",
        lambda story_bytes, needles_per_upload, needle_overhead_bytes: (
            story_bytes + needles_per_upload * needle_overhead_bytes if story_bytes else 0.0
        ),
    )
    d(
        "ingest_bytes_per_day",
        "B/day",
        "uploads_per_day * upload_disk_bytes + stories_per_day * story_disk_bytes",
        lambda uploads_per_day, upload_disk_bytes, stories_per_day, story_disk_bytes: (
            uploads_per_day * upload_disk_bytes + stories_per_day * story_disk_bytes
        ),
    )
    d(
        "ingest_bytes_per_s_peak",
        "B/s",
        "ingest_bytes_per_day / 86400 * peak_to_mean",
        lambda ingest_bytes_per_day, peak_to_mean: ingest_bytes_per_day / DAY_S * peak_to_mean,
    )
    d(
        "hot_days",
        "days",
        "min(hot_to_warm_days, retention_days)",
        lambda hot_to_warm_days, retention_days: min(hot_to_warm_days, retention_days),
    )
    d(
        "warm_days",
        "days",
        "retention_days - hot_days",
        lambda retention_days, hot_days: retention_days - hot_days,
    )

    def hot_logical_bytes(
        uploads_per_day: float,
        hot_days: float,
        upload_disk_bytes: float,
        stories_per_day: float,
        story_kept_days: float,
        story_disk_bytes: float,
    ) -> float:
        return (
            uploads_per_day * hot_days * upload_disk_bytes
            + stories_per_day * story_kept_days * story_disk_bytes
        )

    d(
        "hot_logical_bytes",
        "B",
        "uploads_per_day * hot_days * upload_disk_bytes"
        " + stories_per_day * story_kept_days * story_disk_bytes",
        hot_logical_bytes,
    )
    d(
        "hot_raw_bytes",
        "B",
        "hot_logical_bytes * replicas",
        lambda hot_logical_bytes, replicas: hot_logical_bytes * replicas,
    )
    d(
        "warm_logical_bytes",
        "B",
        "uploads_per_day * warm_days * upload_disk_bytes",
        lambda uploads_per_day, warm_days, upload_disk_bytes: (
            uploads_per_day * warm_days * upload_disk_bytes
        ),
    )
    d(
        "warm_raw_bytes",
        "B",
        "warm_logical_bytes * f4_stretch",
        lambda warm_logical_bytes, f4_stretch: warm_logical_bytes * f4_stretch,
    )
    d(
        "warm_bytes_if_replicated",
        "B",
        "warm_logical_bytes * replicas",
        lambda warm_logical_bytes, replicas: warm_logical_bytes * replicas,
    )
    d(
        "rs_saved_bytes",
        "B",
        "warm_bytes_if_replicated - warm_raw_bytes",
        lambda warm_bytes_if_replicated, warm_raw_bytes: warm_bytes_if_replicated - warm_raw_bytes,
    )
    d(
        "disk_usable_bytes",
        "B",
        "disk_bytes * disk_fill_max",
        lambda disk_bytes, disk_fill_max: disk_bytes * disk_fill_max,
    )
    d(
        "origin_photo_reads_per_s",
        "reads/s",
        "feed_reads_per_s * photo_fetches_per_feed_read"
        " * (1 - cdn_hit_ratio) * (1 - cache_hit_ratio)",
        lambda feed_reads_per_s, photo_fetches_per_feed_read, cdn_hit_ratio, cache_hit_ratio: (
            feed_reads_per_s
            * photo_fetches_per_feed_read
            * (1 - cdn_hit_ratio)
            * (1 - cache_hit_ratio)
        ),
    )
    d(
        "disk_read_iops",
        "IOPS",
        "rand_read_iops_20k if served_photo_bytes <= 20 KiB,"
        " else min(rand_read_iops_100k, rand_read_mb_s_100k * 1e6 / served_photo_bytes)",
        lambda served_photo_bytes, rand_read_iops_20k, rand_read_iops_100k, rand_read_mb_s_100k: (
            rand_read_iops_20k
            if served_photo_bytes <= 20 * 1024
            else min(rand_read_iops_100k, rand_read_mb_s_100k * MB / served_photo_bytes)
        ),
    )


def _hot_tier(s: Sheet) -> None:
    d = s.derive
    d(
        "hot_reads_per_s",
        "reads/s",
        "origin_photo_reads_per_s * hot_read_share",
        lambda origin_photo_reads_per_s, hot_read_share: origin_photo_reads_per_s * hot_read_share,
    )
    d(
        "store_disks_by_capacity",
        "disks",
        "ceil(hot_raw_bytes / disk_usable_bytes)",
        lambda hot_raw_bytes, disk_usable_bytes: math.ceil(hot_raw_bytes / disk_usable_bytes),
    )
    d(
        "store_disks_by_iops",
        "disks",
        "ceil(hot_reads_per_s / (disk_read_iops * disk_busy_max))",
        lambda hot_reads_per_s, disk_read_iops, disk_busy_max: math.ceil(
            hot_reads_per_s / (disk_read_iops * disk_busy_max)
        ),
    )
    d(
        "store_disks_by_write_bandwidth",
        "disks",
        "ceil(ingest_bytes_per_s_peak * replicas / (seq_write_mb_s * 1e6 * disk_busy_max))",
        lambda ingest_bytes_per_s_peak, replicas, seq_write_mb_s, disk_busy_max: math.ceil(
            ingest_bytes_per_s_peak * replicas / (seq_write_mb_s * MB * disk_busy_max)
        ),
    )
    # Every needle (an original, a variant, a story's media) is synced before it is
    # acknowledged; group commit lets one fdatasync cover the writes waiting for it, so the
    # syncs a disk makes are the needle writes times the share the store benchmark measured
    # (1: a sync per write, when no store benchmark is given).
    d(
        "needle_writes_per_s_peak",
        "writes/s",
        "(uploads_per_day + stories_per_day) * needles_per_upload / 86400"
        " * peak_to_mean * replicas",
        lambda uploads_per_day, stories_per_day, needles_per_upload, peak_to_mean, replicas: (
            (uploads_per_day + stories_per_day)
            * needles_per_upload
            / DAY_S
            * peak_to_mean
            * replicas
        ),
    )
    d(
        "syncs_per_s_peak",
        "syncs/s",
        "needle_writes_per_s_peak * syncs_per_write",
        lambda needle_writes_per_s_peak, syncs_per_write: (
            needle_writes_per_s_peak * syncs_per_write
        ),
    )
    d(
        "store_disks_by_fsync",
        "disks",
        "ceil(syncs_per_s_peak / (fsync_write_per_s * disk_busy_max))",
        lambda syncs_per_s_peak, fsync_write_per_s, disk_busy_max: math.ceil(
            syncs_per_s_peak / (fsync_write_per_s * disk_busy_max)
        ),
    )
    s.derive_max(
        "store_disks",
        "disks",
        (
            "store_disks_by_capacity",
            "store_disks_by_iops",
            "store_disks_by_write_bandwidth",
            "store_disks_by_fsync",
        ),
    )
    d(
        "hot_volumes",
        "volumes",
        "ceil(hot_logical_bytes / volume_bytes)",
        lambda hot_logical_bytes, volume_bytes: math.ceil(hot_logical_bytes / volume_bytes),
    )
    d(
        "hot_volume_replicas",
        "volumes",
        "hot_volumes * replicas",
        lambda hot_volumes, replicas: hot_volumes * replicas,
    )
    d(
        "store_nodes_by_disks",
        "nodes",
        "ceil(store_disks / disks_per_node)",
        lambda store_disks, disks_per_node: math.ceil(store_disks / disks_per_node),
    )
    # One `pinhole store serve` process per node: its CPU per read bounds the node's reads.
    d(
        "store_nodes_by_cpu",
        "nodes",
        "ceil(hot_reads_per_s * store_cpu_us_per_read / 1e6 / cpu_busy_max)",
        lambda hot_reads_per_s, store_cpu_us_per_read, cpu_busy_max: math.ceil(
            hot_reads_per_s * store_cpu_us_per_read / 1e6 / cpu_busy_max
        ),
    )

    def store_network_bits_per_s(
        ingest_bytes_per_s_peak: float,
        replicas: float,
        hot_reads_per_s: float,
        served_photo_bytes: float,
        ingest_bytes_per_day: float,
    ) -> float:
        return BITS_PER_BYTE * (
            ingest_bytes_per_s_peak * replicas
            + hot_reads_per_s * served_photo_bytes
            + ingest_bytes_per_day / DAY_S
        )

    d(
        "store_network_bits_per_s",
        "bit/s",
        "(ingest_bytes_per_s_peak * replicas + hot_reads_per_s * served_photo_bytes"
        " + ingest_bytes_per_day / 86400) * 8",
        store_network_bits_per_s,
    )
    d(
        "store_nodes_by_network",
        "nodes",
        "ceil(store_network_bits_per_s / (nic_bits_per_s * nic_busy_max))",
        lambda store_network_bits_per_s, nic_bits_per_s, nic_busy_max: math.ceil(
            store_network_bits_per_s / (nic_bits_per_s * nic_busy_max)
        ),
    )
    d(
        "store_nodes_by_volumes",
        "nodes",
        "ceil(hot_volume_replicas / volumes_per_node_max)",
        lambda hot_volume_replicas, volumes_per_node_max: math.ceil(
            hot_volume_replicas / volumes_per_node_max
        ),
    )
    s.derive_max(
        "store_nodes",
        "nodes",
        (
            "store_nodes_by_disks",
            "store_nodes_by_cpu",
            "store_nodes_by_network",
            "store_nodes_by_volumes",
        ),
    )
    d(
        "hot_needles",
        "needles",
        "(uploads_per_day * hot_days + stories_per_day * story_kept_days) * needles_per_upload",
        lambda uploads_per_day, hot_days, stories_per_day, story_kept_days, needles_per_upload: (
            (uploads_per_day * hot_days + stories_per_day * story_kept_days) * needles_per_upload
        ),
    )

    def needle_map_bytes_per_needle(
        needle_map_alt_bytes: float,
        needle_map_bytes_besides_alt: float,
        needle_map_key_bytes: float,
        needles_per_upload: float,
        ram_overhead_ratio: float,
    ) -> float:
        per_needle = needle_map_alt_bytes + needle_map_bytes_besides_alt
        return (per_needle + needle_map_key_bytes / needles_per_upload) * ram_overhead_ratio

    d(
        "needle_map_bytes_per_needle",
        "B",
        "(needle_map_alt_bytes + needle_map_bytes_besides_alt"
        " + needle_map_key_bytes / needles_per_upload) * ram_overhead_ratio",
        needle_map_bytes_per_needle,
    )
    d(
        "needle_map_ram_bytes",
        "B",
        "hot_needles * replicas * needle_map_bytes_per_needle",
        lambda hot_needles, replicas, needle_map_bytes_per_needle: (
            hot_needles * replicas * needle_map_bytes_per_needle
        ),
    )
    d(
        "needle_map_ram_bytes_per_node",
        "B",
        "needle_map_ram_bytes / max(store_nodes, 1)",
        lambda needle_map_ram_bytes, store_nodes: needle_map_ram_bytes / max(store_nodes, 1),
    )


def _warm_tier(s: Sheet) -> None:
    d = s.derive
    d(
        "warm_reads_per_s",
        "reads/s",
        "origin_photo_reads_per_s * (1 - hot_read_share)",
        lambda origin_photo_reads_per_s, hot_read_share: (
            origin_photo_reads_per_s * (1 - hot_read_share)
        ),
    )
    d(
        "f4_disks_by_capacity",
        "disks",
        "ceil(warm_raw_bytes / disk_usable_bytes)",
        lambda warm_raw_bytes, disk_usable_bytes: math.ceil(warm_raw_bytes / disk_usable_bytes),
    )
    d(
        "f4_disks_by_iops",
        "disks",
        "ceil(warm_reads_per_s / (disk_read_iops * disk_busy_max))",
        lambda warm_reads_per_s, disk_read_iops, disk_busy_max: math.ceil(
            warm_reads_per_s / (disk_read_iops * disk_busy_max)
        ),
    )
    s.derive_max("f4_disks", "disks", ("f4_disks_by_capacity", "f4_disks_by_iops"))
    d(
        "f4_cell_disks",
        "disks",
        "f4_cell_racks * f4_hosts_per_rack * disks_per_node",
        lambda f4_cell_racks, f4_hosts_per_rack, disks_per_node: (
            f4_cell_racks * f4_hosts_per_rack * disks_per_node
        ),
    )
    d(
        "f4_cells",
        "cells",
        "ceil(f4_disks / f4_cell_disks)",
        lambda f4_disks, f4_cell_disks: math.ceil(f4_disks / f4_cell_disks),
    )
    d(
        "f4_hosts",
        "hosts",
        "ceil(f4_disks / disks_per_node)",
        lambda f4_disks, disks_per_node: math.ceil(f4_disks / disks_per_node),
    )
    d(
        "migration_bits_per_s",
        "bit/s",
        "uploads_per_day * upload_disk_bytes / 86400 * (1 + f4_stretch) * 8",
        lambda uploads_per_day, upload_disk_bytes, f4_stretch: (
            uploads_per_day * upload_disk_bytes / DAY_S * (1 + f4_stretch) * BITS_PER_BYTE
        ),
    )


def _services(s: Sheet) -> None:
    d = s.derive
    d(
        "redis_timeline_bytes",
        "B",
        "timeline_users * timeline_entries_max * redis_bytes_per_timeline_entry",
        lambda timeline_users, timeline_entries_max, redis_bytes_per_timeline_entry: (
            timeline_users * timeline_entries_max * redis_bytes_per_timeline_entry
        ),
    )
    d(
        "redis_nodes",
        "nodes",
        "ceil(redis_timeline_bytes * (1 + redis_replicas) / redis_node_bytes)",
        lambda redis_timeline_bytes, redis_replicas, redis_node_bytes: math.ceil(
            redis_timeline_bytes * (1 + redis_replicas) / redis_node_bytes
        ),
    )
    d(
        "api_processes",
        "processes",
        "ceil(feed_reads_per_s * api_cpu_ms_per_feed_read / 1000 / cpu_busy_max)",
        lambda feed_reads_per_s, api_cpu_ms_per_feed_read, cpu_busy_max: math.ceil(
            feed_reads_per_s * api_cpu_ms_per_feed_read / 1000 / cpu_busy_max
        ),
    )
    d(
        "router_processes",
        "processes",
        "ceil(origin_photo_reads_per_s * router_cpu_us_per_photo / 1e6 / cpu_busy_max)",
        lambda origin_photo_reads_per_s, router_cpu_us_per_photo, cpu_busy_max: math.ceil(
            origin_photo_reads_per_s * router_cpu_us_per_photo / 1e6 / cpu_busy_max
        ),
    )
    # A worker process makes one ladder at a time on ENCODE_THREADS (2) threads
    # (transformer/ladder.py); the benchmark's rate is per process, so per two cores.
    d(
        "worker_processes",
        "processes",
        "ceil(uploads_per_day / 86400 * peak_to_mean / ladder_photos_per_s / cpu_busy_max)",
        lambda uploads_per_day, peak_to_mean, ladder_photos_per_s, cpu_busy_max: math.ceil(
            uploads_per_day / DAY_S * peak_to_mean / ladder_photos_per_s / cpu_busy_max
        ),
    )
    d(
        "ingest_network_bits_per_s",
        "bit/s",
        "ingest_bytes_per_s_peak * (1 + replicas) * 8",
        lambda ingest_bytes_per_s_peak, replicas: (
            ingest_bytes_per_s_peak * (1 + replicas) * BITS_PER_BYTE
        ),
    )
    d(
        "origin_egress_bits_per_s",
        "bit/s",
        "origin_photo_reads_per_s * served_photo_bytes * 8",
        lambda origin_photo_reads_per_s, served_photo_bytes: (
            origin_photo_reads_per_s * served_photo_bytes * BITS_PER_BYTE
        ),
    )
    d(
        "messages_per_s_peak",
        "messages/s",
        "messages_per_day / 86400 * peak_to_mean",
        lambda messages_per_day, peak_to_mean: messages_per_day / DAY_S * peak_to_mean,
    )
    d(
        "message_bytes_per_day",
        "B/day",
        "messages_per_day * message_row_bytes",
        lambda messages_per_day, message_row_bytes: messages_per_day * message_row_bytes,
    )


# The rows of the table, in order: (quantity, what it is).
HEADLINE: Final = (
    ("store_nodes", "store hosts (hot tier)"),
    ("store_disks", "store data disks"),
    ("hot_volumes", "logical volumes, hot"),
    ("needle_map_ram_bytes_per_node", "needle-map RAM per store host"),
    ("needle_map_ram_bytes", "needle-map RAM, all replicas"),
    ("hot_raw_bytes", "hot bytes on disk (3 replicas)"),
    ("f4_cells", "f4 cells"),
    ("f4_disks", "f4 data disks"),
    ("f4_hosts", "f4 hosts"),
    ("warm_raw_bytes", "warm bytes on disk (RS(10,4))"),
    ("rs_saved_bytes", "bytes RS(10,4) saves against 3 replicas"),
    ("redis_timeline_bytes", "Redis memory for timelines"),
    ("redis_nodes", "Redis servers (with replicas)"),
    ("api_processes", "API processes (one core each)"),
    ("router_processes", "router processes (one core each)"),
    ("worker_processes", "media worker processes (two cores each)"),
    ("ingest_network_bits_per_s", "upload network, peak"),
    ("origin_egress_bits_per_s", "origin egress to the CDN, peak"),
    ("store_network_bits_per_s", "store hosts' network, peak"),
    ("migration_bits_per_s", "f4 migration traffic"),
    ("message_bytes_per_day", "DM rows added per day"),
)
# The constraints behind a max(): the table names the one that binds.
BOUND_BY: Final = {
    "store_disks": (
        "store_disks_by_capacity",
        "store_disks_by_iops",
        "store_disks_by_write_bandwidth",
        "store_disks_by_fsync",
    ),
    "store_nodes": (
        "store_nodes_by_disks",
        "store_nodes_by_cpu",
        "store_nodes_by_network",
        "store_nodes_by_volumes",
    ),
    "f4_disks": ("f4_disks_by_capacity", "f4_disks_by_iops"),
}


def binding(s: Sheet, name: str) -> str:
    """The constraint that sets a max() quantity ("" for others)."""
    options = BOUND_BY.get(name)
    if not options:
        return ""
    best = max(options, key=s.value)
    return best.removeprefix(f"{name}_by_").replace("_", " ")


def capacity_over_time(s: Sheet, *, points: int = 200) -> dict[str, list[float]]:
    """Bytes on disk by tier as the deployment fills from empty, one point per day up to
    retention_days: hot (3 replicas), warm (RS(10,4)), and warm if kept at 3 replicas."""
    days = s.value("retention_days")
    hot_to_warm = s.value("hot_to_warm_days")
    per_day = s.value("uploads_per_day") * s.value("upload_disk_bytes")
    replicas, stretch = s.value("replicas"), s.value("f4_stretch")
    step = days / max(points - 1, 1)
    out: dict[str, list[float]] = {"day": [], "hot": [], "warm": [], "warm_if_replicated": []}
    for i in range(points):
        t = i * step
        hot_days, warm_days = min(t, hot_to_warm), max(0.0, t - hot_to_warm)
        out["day"].append(t)
        out["hot"].append(per_day * hot_days * replicas)
        out["warm"].append(per_day * warm_days * stretch)
        out["warm_if_replicated"].append(per_day * warm_days * replicas)
    return out
