"""Printing benchmark figures as a table against their goals, and plotting them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Goals = dict[str, tuple[str, float]]


def meets(value: float, op: str, goal: float) -> bool:
    return {">=": value >= goal, "<=": value <= goal, "<": value < goal, ">": value > goal}[op]


def print_table(doc: dict[str, Any], goals: Goals) -> None:
    figures = doc["figures"]
    print(f"\n{doc['command']}  ({doc['mode']}, commit {doc['commit']}, {doc['elapsed_s']} s)")
    print(f"{'figure':32} {'value':>10}  {'goal':>8}  ")
    for name in sorted(figures):
        value = figures[name]
        goal = goals.get(name)
        if goal is None:
            print(f"{name:32} {value:>10}")
            continue
        op, target = goal
        verdict = "ok" if meets(value, op, target) else "MISSED"
        print(f"{name:32} {value:>10}  {op + ' ' + str(target):>8}  {verdict}")
    missing = [g for g in goals if g not in figures]
    for name in missing:
        print(f"{name:32} {'n/a':>10}  (a peer was unavailable: see 'peers')")
    runs = {k: d for k, d in doc["detail"].items() if isinstance(d, dict)}
    if any("requests_per_s" in d or "iops" in d for d in runs.values()):
        print(f"\n{'server run':32} {'req/s':>10} {'CPU us/req':>11} {'p99 ms':>8}")
    for label, d in sorted(runs.items()):
        if "requests_per_s" in d:
            print(
                f"{label:32} {d['requests_per_s']:>10,} {d['server_cpu_us_per_request']:>11}"
                f" {d['latency_p99_ms']:>8}"
            )
        elif "iops" in d:
            print(f"{label:32} {d['iops']:>10,} {'(IOPS)':>11}")
    for peer, where in sorted(doc.get("peers", {}).items()):
        if where.startswith("unavailable"):
            print(f"peer {peer}: {where}")


def write_plot(doc: dict[str, Any], goals: Goals, path: Path) -> None:
    """Bars: each ratio as a multiple of its goal (1.0 = the goal met exactly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, values, colours = [], [], []
    for name, (op, target) in goals.items():
        value = doc["figures"].get(name)
        if value is None:
            continue
        score = value / target if op.startswith(">") else target / value if value else 0.0
        names.append(f"{name}\n{value} ({op} {target})")
        values.append(score)
        colours.append("#2a9d8f" if meets(value, op, target) else "#e76f51")
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(names) + 1.5))
    ax.barh(names, values, color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("figure / goal, log scale (right of the line: goal met)")
    ax.set_title(f"{doc['command']} ({doc['mode']}, {doc['date']})")
    ax.invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_header(benchmark: str, *, quick: bool) -> dict[str, Any]:
    """The fields every benchmark's JSON starts with: what ran, when, on what."""
    import os
    import platform
    import subprocess
    import time

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "benchmark": benchmark,
        "mode": "quick" if quick else "full",
        "command": f"pinhole bench {benchmark}" + (" --quick" if quick else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": commit,
        "machine": {
            "cpus": os.cpu_count() or 0,
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
    }


def publish(
    doc: dict[str, Any], goals: Goals, *, json_path: Path | None, plot_path: Path | None
) -> None:
    """Prints the table, and writes the JSON and the chart when asked to."""
    import json

    print_table(doc, goals)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
    if plot_path is not None:
        write_plot(doc, goals, plot_path)
