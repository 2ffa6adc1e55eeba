"""The figures of `pinhole bench lookups` from its measured phases, and its plot
(bench/lookup_bench.py runs the phases; the figures are described there)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.lookup_flood import percentile_ms
from bench.report import Goals

GOALS: Final[Goals] = {"flood_p99_vs_idle": ("<=", 2.0)}
# Phases with real photo reads measured, and the floods run alone for their servers' CPU.
MEASURED: Final = ("idle", "flood", "normal_404_flood")
ALONE: Final = ("flood_alone", "normal_404_flood_alone")
# What every answer of each flood must be (bench/lookup_flood.py answer_label).
EXPECTED_ANSWER: Final = {
    "flood": "404 volume_not_found",
    "flood_alone": "404 volume_not_found",
    "normal_404_flood": "404 not_found",
    "normal_404_flood_alone": "404 not_found",
}
# The router's lookup statistics that are gauges, not counters: never differenced.
LOOKUP_GAUGES: Final = frozenset(("volumes_cached", "unknown_volumes_cached", "caches"))


@dataclass
class Phase:
    """One phase of one round."""

    kind: str
    latencies_s: list[float]  # real photo reads (none in the floods run alone)
    read_errors: int  # real photo reads not answered 200
    measure_s: float  # the idle time, or the flood's from its first request to its end
    counters_s: float  # between the two /status reads the counter deltas span
    cpu_s: dict[str, float]  # server group -> CPU seconds during measure_s
    lookup: dict[str, int]  # the router's /status lookup counters, after - before
    lookup_gauges: dict[str, int]  # ... and its gauges, after
    lookup_loads: int  # the directory's process.lookup_loads, after - before
    flood: dict[str, Any] = field(default_factory=dict)  # bench/lookup_flood.py's report

    def detail(self) -> dict[str, Any]:
        """For the JSON: everything but the latencies, which p99_ms sums up."""
        doc = {k: v for k, v in asdict(self).items() if k != "latencies_s"}
        doc["measure_s"] = round(self.measure_s, 3)
        doc["counters_s"] = round(self.counters_s, 3)
        doc["cpu_s"] = {g: round(s, 3) for g, s in self.cpu_s.items()}
        doc["p99_ms"] = percentile_ms(sorted(self.latencies_s), 0.99)
        return doc


@dataclass
class Pooled:
    """One kind of phase over every round: latencies pooled, the rest summed."""

    latencies_s: list[float]
    read_errors: int
    measure_s: float
    cpu_s: dict[str, float]
    lookup: dict[str, int]
    lookup_loads: int
    gets: int  # flood GETs (0 when idle)
    flood_s: float  # the flood client's own time, first request to last answer
    answers: dict[str, int]
    failures: dict[str, int]

    @classmethod
    def of(cls, phases: list[Phase], kind: str) -> Pooled:
        mine = [p for p in phases if p.kind == kind]

        def summed(get: Callable[[Phase], dict[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for p in mine:
                for name, n in get(p).items():
                    out[name] = out.get(name, 0) + n
            return out

        return cls(
            latencies_s=[x for p in mine for x in p.latencies_s],
            read_errors=sum(p.read_errors for p in mine),
            measure_s=sum(p.measure_s for p in mine),
            cpu_s=summed(lambda p: p.cpu_s),
            lookup=summed(lambda p: p.lookup),
            lookup_loads=sum(p.lookup_loads for p in mine),
            gets=sum(int(p.flood.get("gets", 0)) for p in mine),
            flood_s=sum(float(p.flood.get("elapsed_s", 0.0)) for p in mine),
            answers=summed(lambda p: p.flood.get("answers", {})),
            failures=summed(lambda p: p.flood.get("failures", {})),
        )

    @property
    def reads(self) -> int:
        return len(self.latencies_s)

    def per_s(self) -> float:
        """The flood's GETs per second."""
        return self.gets / self.flood_s


def latency_summary(p: Pooled) -> dict[str, Any]:
    ordered = sorted(p.latencies_s)
    return {
        "reads": len(ordered),
        "read_errors": p.read_errors,
        "measure_s": round(p.measure_s, 2),
        "reads_per_s": round(len(ordered) / p.measure_s) if p.measure_s > 0 else None,
        "p50_ms": percentile_ms(ordered, 0.50),
        "p90_ms": percentile_ms(ordered, 0.90),
        "p99_ms": percentile_ms(ordered, 0.99),
        "max_ms": round(ordered[-1] * 1000, 3) if ordered else None,
    }


def flood_summary(p: Pooled, idle_directory_cpu_per_s: float, *, alone: bool) -> dict[str, Any]:
    """A flood's outcome, the directory's part of it, and its servers' CPU; per GET only for
    a flood run `alone` (otherwise the real reads' CPU is in it too). The directory's CPU per
    GET is less its idle CPU per second (heartbeats and loops)."""
    doc = {
        "gets": p.gets,
        "gets_per_s": round(p.per_s()),
        "flood_s": round(p.flood_s, 2),
        "answers": p.answers,
        "failures": p.failures,
        "router_lookup": p.lookup,
        "directory_lookup_loads": p.lookup_loads,
        "server_cpu_s": {g: round(s, 3) for g, s in p.cpu_s.items()},
    }
    if alone:
        directory_s = max(0.0, p.cpu_s["directory"] - idle_directory_cpu_per_s * p.measure_s)
        doc.update(
            router_cpu_us_per_get=round(p.cpu_s["router"] * 1e6 / p.gets, 1),
            directory_cpu_us_per_get=round(directory_s * 1e6 / p.gets, 1),
            cache_stores_cpu_us_per_get=round(p.cpu_s["cache_stores"] * 1e6 / p.gets, 1),
        )
    return doc


def figures_of(phases: list[Phase]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(figures, detail) of the phases of every round."""
    pools = {k: Pooled.of(phases, k) for k in (*MEASURED, *ALONE)}
    idle, flood, normal = (pools[k] for k in MEASURED)
    detail: dict[str, Any] = {k: latency_summary(pools[k]) for k in MEASURED}
    idle_directory_cpu_per_s = idle.cpu_s["directory"] / idle.measure_s
    for k in ("flood", "normal_404_flood", *ALONE):
        summary = flood_summary(pools[k], idle_directory_cpu_per_s, alone=k in ALONE)
        detail.setdefault(k, {}).update(summary)
    detail["idle"].update(
        server_cpu_s={g: round(s, 3) for g, s in idle.cpu_s.items()},
        router_cpu_us_per_read=round(idle.cpu_s["router"] * 1e6 / idle.reads, 1),
        cache_stores_cpu_us_per_read=round(idle.cpu_s["cache_stores"] * 1e6 / idle.reads, 1),
        directory_cpu_ms_per_s=round(idle_directory_cpu_per_s * 1e3, 2),
    )

    figures: dict[str, Any] = {}
    for k in MEASURED:
        figures[f"{k}_p50_ms"] = detail[k]["p50_ms"]
        figures[f"{k}_p99_ms"] = detail[k]["p99_ms"]
    p99 = {k: detail[k]["p99_ms"] for k in MEASURED}
    figures["flood_p99_vs_idle"] = round(p99["flood"] / p99["idle"], 3)
    figures["flood_p99_vs_normal_404_flood"] = round(p99["flood"] / p99["normal_404_flood"], 3)
    figures["directory_lookups_per_1k_flood_gets"] = round(
        flood.lookup["lookup_fetches"] * 1000 / flood.gets, 2
    )
    figures["directory_loads_per_1k_flood_gets"] = round(flood.lookup_loads * 1000 / flood.gets, 2)
    # Server CPU from the flood run alone: during the measured one the real reads cost the
    # router far more than the flood does.
    alone = detail["flood_alone"]
    figures["router_cpu_us_per_flood_get"] = alone["router_cpu_us_per_get"]
    figures["directory_cpu_us_per_flood_get"] = alone["directory_cpu_us_per_get"]
    figures["flood_gets_per_s"] = round(flood.per_s())
    figures["normal_404_flood_gets_per_s"] = round(normal.per_s())
    figures["flood_errors"] = sum(
        pools[k].gets - pools[k].answers.get(answer, 0) for k, answer in EXPECTED_ANSWER.items()
    )
    figures["real_read_errors"] = sum(pools[k].read_errors for k in MEASURED)
    return figures, detail


def write_plot(doc: dict[str, Any], phases: list[Phase], path: Path) -> None:
    """Left: the real photos' latency distributions per measured phase (the share of reads
    at least this slow); right: their p50 and p99, with the goal (2 x idle p99)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"idle": "#2a9d8f", "flood": "#e76f51", "normal_404_flood": "#8d99ae"}
    labels = {"idle": "idle", "flood": "unknown-volume flood", "normal_404_flood": "404 flood"}
    fig, (tail, bars) = plt.subplots(1, 2, figsize=(14, 5))
    for kind in MEASURED:
        ms = sorted(x * 1000 for p in phases if p.kind == kind for x in p.latencies_s)
        if ms:
            # The share of reads slower than x: the tail, p99 included, stays readable.
            slower = [(len(ms) - i) / len(ms) for i in range(len(ms))]
            tail.plot(ms, slower, label=labels[kind], color=colours[kind])
    tail.set_xscale("log")
    tail.set_yscale("log")
    tail.set_xlabel("real photo GET through the router (ms, log scale)")
    tail.set_ylabel("share of reads this slow or slower (log scale)")
    tail.axhline(0.01, color="black", linewidth=0.5, linestyle=":")
    tail.legend(loc="lower left")
    tail.set_title("latency distribution (dotted: p99)")
    detail = doc["detail"]
    width = 0.38
    for j, q in enumerate(("p50_ms", "p99_ms")):
        xs = [i + (j - 0.5) * width for i in range(len(MEASURED))]
        values = [detail[k][q] for k in MEASURED]
        drawn = bars.bar(
            xs, values, width, color=[colours[k] for k in MEASURED], alpha=0.5 + 0.5 * j
        )
        for bar, v in zip(drawn, values, strict=True):
            where = (bar.get_x() + bar.get_width() / 2, bar.get_height())
            bars.annotate(f"{q[:3]} {v:g}", where, ha="center", fontsize=8)
    goal = detail["idle"]["p99_ms"] * GOALS["flood_p99_vs_idle"][1]
    bars.axhline(goal, color="black", linewidth=1, linestyle="--", label="goal: 2 x idle p99")
    bars.set_xticks(range(len(MEASURED)), [labels[k] for k in MEASURED])
    bars.set_ylabel("ms")
    bars.legend(loc="upper left")
    figures = doc["figures"]
    bars.set_title(
        f"flood_p99_vs_idle {figures['flood_p99_vs_idle']}; "
        f"directory lookups per 1k flood GETs {figures['directory_lookups_per_1k_flood_gets']}"
    )
    fig.suptitle(f"{doc['command']} ({doc['mode']}, {doc['date']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
