"""What `pinhole plan` plans from: a load, stated assumptions, and figures measured by the
benchmarks (their JSON files, as bench/report.py writes them).

Every input reaches the plan as a `Given`: its value, unit and source, a string saying
where the number comes from ("load: uploads_per_day", "bench disk: rand_read_iops_20k",
"assumption: disk_bytes (default)", "config: feed.timeline_entries_max"), so that every
computed quantity can list the inputs of its formula and where each was taken.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from common.config import ConfigError, build, parse_size


class PlanInputError(ValueError):
    """An input of the plan is missing, unreadable or out of range; one line, naming it."""


@dataclass(frozen=True, slots=True)
class Given:
    value: float
    unit: str
    source: str


# -- the load ------------------------------------------------------------------------------


# The load keys a plan cannot do without.
LOAD_REQUIRED: Final = (
    "uploads_per_day",
    "photo_bytes",
    "feed_reads_per_s",
    "retention_days",
    "timeline_users",
)


@dataclass(frozen=True, slots=True)
class Load:
    """The load to plan for. Rates are per day unless named per second (a peak); sizes in
    bytes (TOML strings such as "2 MB" are accepted for *_bytes keys). None: not given."""

    uploads_per_day: float | None = None  # photos uploaded (an original + its variants each)
    photo_bytes: int | None = None  # an original, mean
    feed_reads_per_s: float | None = None  # feed pages read per second at the peak
    retention_days: float | None = None  # how long photos are kept (the planning horizon)
    timeline_users: float | None = None  # accounts with a timeline (read within inactive_days)
    stories_per_day: float = 0.0
    story_bytes: int = 0  # one story's media, its variants included
    messages_per_day: float = 0.0
    hot_to_warm_days: float | None = None  # None: the [f4] age_s_min of the config
    # (name, bytes) of each variant stored beside the original (e.g. "640.webp", 60 KB)
    variants: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "variants":
                for name, size in value:
                    if size <= 0:
                        raise ValueError(f"variant {name} must have a positive size")
            elif value is not None and not 0 <= value < math.inf:
                raise ValueError(f"{f.name} must be a finite number >= 0 (got {value})")

    def missing(self) -> list[str]:
        return [name for name in LOAD_REQUIRED if getattr(self, name) is None]


def parse_variants(table: Mapping[str, Any], *, where: str) -> tuple[tuple[str, int], ...]:
    try:
        return tuple((str(name), parse_size(size)) for name, size in table.items())
    except ConfigError as e:
        raise PlanInputError(f"{where}: {e}") from None


def parse_variant_option(text: str) -> tuple[str, int]:
    """NAME=SIZE, as --variant takes it ("640.webp=60 KB")."""
    name, sep, size = text.partition("=")
    if not sep or not name:
        raise PlanInputError(f"--variant {text!r}: expected NAME=SIZE")
    try:
        return name.strip(), parse_size(size.strip())
    except ConfigError as e:
        raise PlanInputError(f"--variant {text!r}: {e}") from None


def load_from(table: Mapping[str, Any], overrides: Mapping[str, Any]) -> Load:
    """The [load] table of a load file with command-line values on top (None ignored)."""
    merged = {k: v for k, v in table.items() if k != "variants"}
    merged.update({k: v for k, v in overrides.items() if v is not None and k != "variants"})
    variants = parse_variants(table.get("variants", {}), where="load.variants")
    if overrides.get("variants"):
        variants = tuple(overrides["variants"])
    try:
        return dataclasses.replace(build(Load, merged, where="load."), variants=variants)
    except ConfigError as e:
        raise PlanInputError(str(e)) from None
    except ValueError as e:
        raise PlanInputError(f"load: {e}") from None


# -- assumptions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assumptions:
    """What the plan assumes where nothing measured or configured says; each is shown as
    "assumption: NAME" beside the number it feeds. docs/operations/capacity.md explains them."""

    peak_to_mean: float = 3.0  # peak rate / daily mean (seed 000: "Peak: 3x average")
    disk_bytes: int = 8 * 10**12  # one data disk
    disks_per_node: int = 12  # data disks per store (and f4) host
    disk_fill_max: float = 0.85  # share of a disk filled: room for garbage before compaction
    disk_busy_max: float = 0.7  # share of a disk's measured IOPS / bandwidth planned on
    cpu_busy_max: float = 0.7  # share of a core a process is planned to use
    nic_bits_per_s: float = 10e9  # one host's network link
    nic_busy_max: float = 0.5
    photo_fetches_per_feed_read: float = 1.0  # photos fetched per feed page read
    cdn_hit_ratio: float = 0.95  # photo fetches answered by the CDN (seed 000: 95%)
    cache_hit_ratio: float = 0.0  # CDN misses answered by pinhole's cache tier
    served_photo_bytes: int = 100 * 1024  # one fetched variant, mean
    hot_read_share: float = 0.9  # origin photo reads of photos younger than hot_to_warm_days
    f4_cell_racks: int = 14  # RS(10,4): 14 blocks of a stripe on 14 racks
    f4_hosts_per_rack: int = 15
    f4_stretch: float = 1.4  # RS(10,4): 14 blocks for 10 (measured: bench f4)
    redis_node_bytes: int = 64 * 2**30  # usable memory of one Redis server
    redis_replicas: int = 1  # replicas per Redis primary
    message_row_bytes: int = 400  # one DM in SQL with its indexes
    # Used only when no benchmark JSON measures them (each names its benchmark):
    redis_bytes_per_timeline_entry: float = 120.6  # bench feed (ARCHITECTURE.md, full run)
    api_cpu_ms_per_feed_read: float = 1.36  # bench feed: feed_http_api_cpu_ms_pinhole (full)
    router_cpu_us_per_photo: float = 193.0  # bench cluster: router + cache per cache hit
    store_cpu_us_per_read: float = 94.0  # bench store: CPU per cold GET
    ladder_photos_per_s: float = 4.9  # bench media: ladders one worker process makes per second
    ram_overhead_ratio: float = 1.0  # bench store: measured RAM / the format's bytes
    syncs_per_write: float = 1.0  # bench store: fdatasyncs per PUT (1: no group commit)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _RATIOS:
                if not 0 <= value <= 1 or (f.name.endswith("_max") and value == 0):
                    raise ValueError(f"{f.name} must be within 0..1 (got {value})")
            elif f.name in _MAY_BE_ZERO:
                if not 0 <= value < math.inf:
                    raise ValueError(f"{f.name} must be >= 0 (got {value})")
            elif not 0 < value < math.inf:
                raise ValueError(f"{f.name} must be > 0 (got {value})")


_RATIOS: Final = frozenset(
    {
        "disk_fill_max",
        "disk_busy_max",
        "cpu_busy_max",
        "nic_busy_max",
        "cdn_hit_ratio",
        "cache_hit_ratio",
        "hot_read_share",
        "syncs_per_write",
    }
)
_MAY_BE_ZERO: Final = frozenset({"redis_replicas", "photo_fetches_per_feed_read"})


def assumptions_from(table: Mapping[str, Any], overrides: Mapping[str, Any]) -> Assumptions:
    merged = {**table, **overrides}
    try:
        return build(Assumptions, merged, where="assumptions.")
    except ConfigError as e:
        raise PlanInputError(str(e)) from None


def parse_assume_option(text: str) -> tuple[str, Any]:
    """KEY=VALUE, as --assume takes it: a number, or a size for *_bytes keys."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise PlanInputError(f"--assume {text!r}: expected KEY=VALUE")
    if "bytes" in key:
        return key, value
    try:
        number = float(value)
    except ValueError:
        raise PlanInputError(f"--assume {text!r}: {value!r} is not a number") from None
    field_types = {f.name: f.type for f in dataclasses.fields(Assumptions)}
    if field_types.get(key) in (int, "int"):
        if not number.is_integer():
            raise PlanInputError(f"--assume {text!r}: {key} must be an integer")
        return key, int(number)
    return key, number


def assumed(a: Assumptions, name: str, *, overridden: AbstractSet[str]) -> Given:
    where = "given" if name in overridden else "default"
    return Given(
        float(getattr(a, name)), ASSUMPTION_UNITS.get(name, ""), f"assumption: {name} ({where})"
    )


ASSUMPTION_UNITS: Final = {
    "ladder_photos_per_s": "photos/s",
    "syncs_per_write": "syncs/write",
    "disk_bytes": "B",
    "served_photo_bytes": "B",
    "redis_node_bytes": "B",
    "message_row_bytes": "B",
    "nic_bits_per_s": "bit/s",
    "redis_bytes_per_timeline_entry": "B",
    "api_cpu_ms_per_feed_read": "ms",
    "router_cpu_us_per_photo": "us",
    "store_cpu_us_per_read": "us",
    "disks_per_node": "disks",
    "f4_cell_racks": "racks",
    "f4_hosts_per_rack": "hosts",
}


# -- measured figures ----------------------------------------------------------------------


# A measured figure the plan uses -> where each benchmark's JSON may hold it (first found
# wins, in this order). "figures.X" is a headline figure, "detail.A.B" a run's detail.
MEASURED: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "rand_read_iops_20k": (
        ("disk", "figures.rand_read_iops_20k"),
        ("store", "detail.fio_randread_20k_qd16.iops"),
    ),
    "rand_read_iops_100k": (
        ("disk", "figures.rand_read_iops_100k"),
        ("store", "detail.fio_randread_100k_qd16.iops"),
    ),
    "rand_read_mb_s_100k": (("disk", "figures.rand_read_mb_s_100k"),),
    "seq_write_mb_s": (("disk", "figures.seq_write_mb_s"),),
    "fsync_write_per_s": (
        ("disk", "figures.fsync_write_per_s"),
        ("store", "detail.fio_append_fdatasync_20k.iops"),
    ),
    "ram_bytes_per_needle_measured": (("store", "figures.ram_bytes_per_needle"),),
    "store_cpu_us_per_read": (("store", "detail.store_get_cold_20k.server_cpu_us_per_request"),),
    "syncs_per_write": (("store", "detail.store_put_20k.fdatasyncs_per_put"),),
    "ladder_photos_per_s": (("media", "figures.ladder_photos_per_s"),),
    "router_cpu_us_per_photo": (("cluster", "detail.router_cache_hit.server_cpu_us_per_request"),),
    "api_cpu_ms_per_feed_read": (("feed", "figures.feed_http_api_cpu_ms_pinhole"),),
    "redis_bytes_per_timeline_entry": (("feed", "figures.redis_bytes_per_timeline_entry"),),
    "f4_stretch": (("f4", "figures.effective_replication"),),
}
# Without these the plan has no disk to plan on.
DISK_FIGURES: Final = (
    "rand_read_iops_20k",
    "rand_read_iops_100k",
    "rand_read_mb_s_100k",
    "seq_write_mb_s",
    "fsync_write_per_s",
)
MEASURED_UNITS: Final = {
    "rand_read_iops_20k": "IOPS",
    "rand_read_iops_100k": "IOPS",
    "rand_read_mb_s_100k": "MB/s",
    "seq_write_mb_s": "MB/s",
    "fsync_write_per_s": "writes/s",
    "ram_bytes_per_needle_measured": "B",
    "store_cpu_us_per_read": "us",
    "router_cpu_us_per_photo": "us",
    "api_cpu_ms_per_feed_read": "ms",
    "redis_bytes_per_timeline_entry": "B",
    "f4_stretch": "x",
    "syncs_per_write": "syncs/write",
    "ladder_photos_per_s": "photos/s",
}


@dataclass(frozen=True)
class BenchDoc:
    path: Path
    benchmark: str
    doc: dict[str, Any] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "benchmark": self.benchmark,
            "mode": self.doc.get("mode"),
            "commit": self.doc.get("commit"),
            "date": self.doc.get("date"),
        }


def read_bench(path: Path) -> BenchDoc:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanInputError(f"bench JSON not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PlanInputError(f"{path}: not a benchmark JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmark"), str):
        raise PlanInputError(f'{path}: not a benchmark JSON (no "benchmark" field)')
    if not isinstance(doc.get("figures"), dict):
        raise PlanInputError(f'{path}: not a benchmark JSON (no "figures")')
    return BenchDoc(path, doc["benchmark"], doc)


def _dig(doc: Mapping[str, Any], dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def measured_figures(benches: list[BenchDoc]) -> dict[str, Given]:
    """The figures of MEASURED found in `benches`, each with its source. A disk figure
    missing from all of them is an error; the others fall back to assumptions."""
    found: dict[str, Given] = {}
    for name, places in MEASURED.items():
        for benchmark, dotted in places:
            for b in benches:
                if b.benchmark != benchmark:
                    continue
                value = _dig(b.doc, dotted)
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                if not value > 0:
                    raise PlanInputError(f"{b.path}: {dotted} must be positive (got {value})")
                label = dotted.removeprefix("figures.")
                found[name] = Given(
                    float(value), MEASURED_UNITS[name], f"bench {benchmark}: {label}"
                )
                break
            if name in found:
                break
    missing = [n for n in DISK_FIGURES if n not in found]
    if missing:
        raise PlanInputError(
            f"no {missing[0]} in the bench JSON given: pass the JSON of `pinhole bench disk` "
            "(run on the target disk) with --bench"
        )
    return found
