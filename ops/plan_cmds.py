"""`pinhole plan`: measured figures and a load into a deployment (ops/plan.py), printed as a
table, as JSON (--json) or drawn (--plot). docs/operations/capacity.md has a worked example."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import click

from common.config import ConfigError, load_toml
from directory.config import directory_config
from f4.config import f4_config
from feed.config import feed_config
from ops.cli_support import EXIT_USAGE, CliError, emit_json, load_config, table
from ops.plan import HEADLINE, Config, Sheet, binding, capacity_over_time, plan
from ops.plan_inputs import (
    PlanInputError,
    assumptions_from,
    load_from,
    measured_figures,
    parse_assume_option,
    parse_variant_option,
    read_bench,
)
from social.config import social_config
from store.config import store_config

# Load keys that have an option of their own (--uploads-per-day ...); sizes are strings.
LOAD_OPTIONS: Final = (
    ("uploads_per_day", float, "Photos uploaded per day."),
    ("photo_bytes", str, 'Mean bytes of an original ("2 MB").'),
    ("feed_reads_per_s", float, "Feed pages read per second at the peak."),
    ("retention_days", float, "Days photos are kept (the planning horizon)."),
    ("timeline_users", float, "Accounts with a timeline (read within [feed] inactive_days)."),
    ("stories_per_day", float, "Stories posted per day."),
    ("story_bytes", str, "Mean bytes of a story's media with its variants."),
    ("messages_per_day", float, "Direct messages per day."),
    ("hot_to_warm_days", float, "Age at which volumes move to f4 (default: [f4] age_s_min)."),
)
_SI: Final = ("", "k", "M", "G", "T", "P", "E")


def _load_options(f: Any) -> Any:
    for key, kind, text in reversed(LOAD_OPTIONS):
        f = click.option(f"--{key.replace('_', '-')}", key, type=kind, help=text)(f)
    return f


def human(value: float, unit: str) -> str:
    """Bytes and bits with decimal prefixes (a disk's TB), counts with separators."""
    if unit in ("B", "B/day", "B/s", "bit/s"):
        base, _, per = unit.partition("/")
        n, i = float(value), 0
        while abs(n) >= 1000 and i < len(_SI) - 1:
            n, i = n / 1000, i + 1
        name = f"{_SI[i]}{'bit' if base == 'bit' else 'B'}"
        return f"{n:.1f} {name}" + (f"/{per}" if per else "")
    if float(value).is_integer():
        return f"{int(value):,} {unit}".rstrip()
    return f"{value:,.2f} {unit}".rstrip()


@click.command("plan")
@click.option(
    "--bench",
    "bench_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A benchmark JSON (`pinhole bench disk --json F`, also store, feed, cluster, f4);"
    " repeat for several.",
)
@click.option(
    "--load",
    "load_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A TOML file with a [load] table (and [assumptions]); options win over it.",
)
@_load_options
@click.option(
    "--variant",
    "variant_texts",
    multiple=True,
    metavar="NAME=SIZE",
    help='A variant stored beside each original ("640.webp=60 KB"); repeat. Replaces the file\'s.',
)
@click.option(
    "--assume",
    "assume_texts",
    multiple=True,
    metavar="KEY=VALUE",
    help='Override an assumption ("disk_bytes=16 TB"); repeat.',
)
@click.option("--json", "json_output", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw bytes on disk over time, hot against warm, as a PNG here.",
)
@click.pass_context
def plan_cmd(
    ctx: click.Context,
    /,
    bench_paths: tuple[Path, ...],
    load_path: Path | None,
    variant_texts: tuple[str, ...],
    assume_texts: tuple[str, ...],
    json_output: bool,
    plot_path: Path | None,
    **load_values: Any,
) -> None:
    """Store hosts, disks, needle-map RAM, volumes, f4 cells, Redis, API and router
    processes and network for a load, from measured figures; each number traced."""
    try:
        doc = _plan_document(ctx, bench_paths, load_path, variant_texts, assume_texts, load_values)
    except (PlanInputError, ConfigError, ValueError) as e:
        raise CliError(str(e), EXIT_USAGE) from None
    sheet: Sheet = doc.pop("_sheet")
    if plot_path is not None:
        write_plot(sheet, plot_path)
    if json_output:
        emit_json(doc)
    else:
        click.echo(render(sheet, doc))


def _plan_document(
    ctx: click.Context,
    bench_paths: tuple[Path, ...],
    load_path: Path | None,
    variant_texts: tuple[str, ...],
    assume_texts: tuple[str, ...],
    load_values: dict[str, Any],
) -> dict[str, Any]:
    if not bench_paths:
        raise PlanInputError("give at least one --bench FILE (`pinhole bench disk --json FILE`)")
    benches = [read_bench(p) for p in bench_paths]
    measured = measured_figures(benches)
    file: dict[str, Any] = load_toml(load_path) if load_path is not None else {}
    unknown = sorted(set(file) - {"load", "assumptions"})
    if unknown:
        raise PlanInputError(
            f"{load_path}: unknown table [{unknown[0]}] (expected [load], [assumptions])"
        )
    overrides = dict(load_values)
    if variant_texts:
        overrides["variants"] = [parse_variant_option(t) for t in variant_texts]
    load = load_from(file.get("load", {}), overrides)
    assume = dict(parse_assume_option(t) for t in assume_texts)
    assumptions = assumptions_from(file.get("assumptions", {}), assume)
    overridden = set(file.get("assumptions", {})) | set(assume)
    document = load_config((ctx.obj or {}).get("config_path"))
    config = Config(
        store=store_config(document),
        directory=directory_config(document),
        feed=feed_config(document),
        f4=f4_config(document),
        social=social_config(document),
    )
    sheet = plan(load, assumptions, measured, config, overridden=overridden)
    return {
        "command": "pinhole plan",
        "benches": [b.summary() for b in benches],
        "load_file": str(load_path) if load_path else None,
        "plan": {name: sheet.to_json()["quantities"][name]["value"] for name, _ in HEADLINE},
        **sheet.to_json(),
        "_sheet": sheet,
    }


def render(sheet: Sheet, doc: dict[str, Any]) -> str:
    rows = []
    for name, what in HEADLINE:
        bound = binding(sheet, name)
        rows.append(
            [what, human(sheet.value(name), sheet.unit(name)), f"by {bound}" if bound else "", name]
        )
    out = [table(rows, ["quantity", "value", "", "name (see --json)"])]
    out.append("")
    out.append(table(
        [[n, human(g.value, g.unit), g.source] for n, g in sheet.given.items()],
        ["input", "value", "source"],
    ))  # fmt: skip
    benches = ", ".join(f"{b['benchmark']} ({b['mode']}, {b['path']})" for b in doc["benches"])
    out.append(f"\nmeasured by: {benches}")
    return "\n".join(out)


def write_plot(sheet: Sheet, path: Path) -> None:
    """Bytes on disk by tier over the retention period, from an empty deployment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = capacity_over_time(sheet)
    pb = 1e15
    fig, ax = plt.subplots(figsize=(9, 5))
    hot = [b / pb for b in series["hot"]]
    warm = [b / pb for b in series["warm"]]
    labels = ["hot: Haystack, 3 replicas", "warm: f4, RS(10,4)"]
    ax.stackplot(series["day"], hot, warm, labels=labels, colors=["#e76f51", "#2a9d8f"])
    total_if_replicated = [
        h + w / pb for h, w in zip(hot, series["warm_if_replicated"], strict=True)
    ]
    ax.plot(series["day"], total_if_replicated, "k--", linewidth=1, label="if warm kept 3 replicas")
    days = sheet.value("hot_to_warm_days")
    ax.axvline(days, color="grey", linewidth=0.8, label=f"hot to warm: {days:g} days")
    ax.set_xlabel("days since the deployment began")
    ax.set_ylabel("bytes on disk, PB")
    ax.set_title("pinhole plan: capacity over time, hot against warm")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
