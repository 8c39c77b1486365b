"""Results out: a Markdown table per scenario (ours, each peer, ratio), JSON with the
machine description under ``bench/results/``, and a PNG chart when matplotlib exists."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, cast

from bench.scenarios import MATCHING_PATTERNS, MEMORY_VARIANT, UNFILTERED, Row

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"

Figure = tuple[str, Callable[[Row], float | str | None]]


def _field(key: str) -> Callable[[Row], float | None]:
    return lambda row: row[key]  # type: ignore[literal-required]


def _milliseconds(key: str) -> Callable[[Row], float | None]:
    def get(row: Row) -> float | None:
        value = row[key]  # type: ignore[literal-required]
        return None if value is None else float(value) * 1000

    return get


PUBSUB_FIGURES: Final[list[Figure]] = [
    ("server CPU us/delivery", lambda row: row["us_per_delivery"]),
    ("deliveries/s", lambda row: row["deliveries_per_s"] or None),
    ("publishes/s", lambda row: row["publishes_per_s"] or None),
    ("latency p50 ms", _field("p50_ms")),
    ("latency p90 ms", _field("p90_ms")),
    ("latency p99 ms", _field("p99_ms")),
    ("latency max ms", _field("max_ms")),
    ("loss check", lambda row: row["check"]),
    ("notes", lambda row: row["notes"] or None),
]
FIGURES: Final[dict[str, list[Figure]]] = {
    "fanout": PUBSUB_FIGURES,
    "topics": PUBSUB_FIGURES,
    "publishers": PUBSUB_FIGURES,
    "latency": PUBSUB_FIGURES,
    "slow": PUBSUB_FIGURES,
    "idle": [
        ("RSS KB/connection", lambda row: row["kb_per_connection"]),
        ("connections/s", lambda row: row["connects_per_s"]),
        ("check", lambda row: row["check"]),
        ("notes", lambda row: row["notes"] or None),
    ],
    "cluster": [
        ("server CPU us/delivery (nodes + Redis)", lambda row: row["us_per_delivery"]),
        ("node CPU us/delivery", lambda row: row["node_us_per_delivery"]),
        ("deliveries/s", lambda row: row["deliveries_per_s"] or None),
        ("publishes/s (acknowledged)", lambda row: row["publishes_per_s"] or None),
        ("latency p50 ms", _field("p50_ms")),
        ("latency p99 ms", _field("p99_ms")),
        ("loss check", lambda row: row["check"]),
        ("notes", lambda row: row["notes"] or None),
    ],
    "filters": [
        ("server CPU us/delivery", lambda row: row["us_per_delivery"]),
        ("filtered/unfiltered us/delivery", _field("vs_baseline")),
        ("deliveries/s", lambda row: row["deliveries_per_s"] or None),
        ("server CPU us/publish", _field("us_per_publish")),
        ("publishes/s", lambda row: row["publishes_per_s"] or None),
        ("set-up server CPU ms (connect + subscribe)", _milliseconds("setup_cpu_s")),
        ("loss check", lambda row: row["check"]),
        ("notes", lambda row: row["notes"] or None),
    ],
    "patterns": [
        ("server CPU us/publish", _field("us_per_publish")),
        ("us/publish over the smallest P's", _field("vs_baseline")),
        ("server CPU us/delivery", lambda row: row["us_per_delivery"]),
        ("publishes/s", lambda row: row["publishes_per_s"] or None),
        ("deliveries/s", lambda row: row["deliveries_per_s"] or None),
        ("set-up server CPU ms (connect + subscribe)", _milliseconds("setup_cpu_s")),
        ("loss check", lambda row: row["check"]),
        ("notes", lambda row: row["notes"] or None),
    ],
    "connect": [
        ("connections/s", lambda row: row["connects_per_s"]),
        (
            "server CPU us/connection",
            lambda row: (
                None
                if row["server_cpu_s"] is None
                else row["server_cpu_s"] * 1e6 / max(1, row["connections"])
            ),
        ),
        ("check", lambda row: row["check"]),
        ("notes", lambda row: row["notes"] or None),
    ],
}
TITLES: Final = {
    "fanout": "1 topic x S subscribers, one publisher flooding",
    "topics": "T topics x few subscribers each, one publisher round-robin",
    "publishers": "P publishers flooding one topic",
    "latency": "paced publisher, fixed deliveries/s",
    "slow": "paced, with and without one subscriber that stops reading",
    "idle": "connections held idle",
    "connect": "connection set-up (handshakes) per second",
    "cluster": (
        "memory engine vs K nodes on the Redis engine (Redis pinned to the server core too): "
        "S subscribers spread over the nodes, one publisher flooding or paced"
    ),
    "filters": (
        "1 topic x S subscribers with content filters on payload.kind (kinds cycle "
        "k0..k(C-1)), one publisher flooding or paced; beside the same messages unfiltered"
    ),
    "patterns": (
        "1 publisher flooding round-robin over topics t.g<I % 10>.<I>; subscriber "
        f"connections hold the {len(MATCHING_PATTERNS)} patterns that match every topic "
        f"({', '.join(MATCHING_PATTERNS)}; one each) plus P patterns that match none"
    ),
}
#: Said under a scenario's table.
FOOTNOTES: Final = {
    "filters": (
        "Redis and NATS have no content filters: their columns show the unfiltered fan-out "
        "only, as context (same subscribers, messages and payloads, run once); the "
        "filtered/unfiltered ratios are ours alone, each against the unfiltered row of the "
        "same pace. With C kinds, eq delivers 1/C as much per publish as unfiltered (so the "
        "publish's own cost weighs C times more per delivery) and ne (C - 1)/C. Flooded: "
        "as fast as acknowledged, the least of the repeated runs kept (its notes list them "
        "all); paced: one steady run at that message rate."
    ),
    "patterns": (
        "NATS takes the same patterns (the same `*` and `>` wildcards). Redis takes them as "
        "PSUBSCRIBE globs, a final `>` written `*` (a glob `*` also spans dots, which changes "
        "no match here). Each publish reaches the same connections at every P; the growth "
        "is each server's own, its us/publish over its smallest P's."
    ),
}


def fmt(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value.replace("|", "/")
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def ratio(ours: float | str | None, peer: float | str | None) -> str:
    if isinstance(ours, (int, float)) and isinstance(peer, (int, float)) and peer:
        return f"{ours / peer:.2f}x"
    return ""


def markdown(rows: Sequence[Row], servers: Sequence[str], notes: Sequence[str]) -> str:
    """One table per scenario: every figure for ours, each peer, and ours/peer."""
    ours, peers = servers[0], list(servers[1:])
    out: list[str] = []
    for scenario in dict.fromkeys(row["scenario"] for row in rows):
        mine = [row for row in rows if row["scenario"] == scenario]
        out.append(f"### {scenario}: {TITLES[scenario]}\n")
        header = ["", "figure", ours]
        for peer in peers:
            header += [peer, f"{ours}/{peer}"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        keys = dict.fromkeys((row["param"], row["variant"]) for row in mine)
        for param, variant in keys:
            by_server = {
                row["server"]: row
                for row in mine
                if (row["param"], row["variant"]) == (param, variant)
            }
            anyrow = next(iter(by_server.values()))
            label = f"{anyrow['param_name']}={param:,}" + (f", {variant}" if variant else "")
            for name, get in FIGURES[scenario]:
                base = by_server.get(ours)
                value = get(base) if base is not None else None
                cells = [label, name, fmt(value)]
                for peer in peers:
                    other = by_server.get(peer)
                    peer_value = get(other) if other is not None else None
                    cells += [fmt(peer_value), ratio(value, peer_value)]
                if any(cell not in ("-", "") for cell in cells[2:]):
                    out.append("| " + " | ".join(cells) + " |")
                    label = ""
        if scenario in FOOTNOTES:
            out.append("\n" + FOOTNOTES[scenario])
        out.append("")
    if notes:
        out.append("Notes:\n")
        out += [f"- {note}" for note in notes]
        out.append("")
    return "\n".join(out)


def machine(pinning_note: str, versions: dict[str, str]) -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                "",
            )
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            memory_kb = int(meminfo.readline().split()[1])
    except (OSError, ValueError, IndexError):
        memory_kb = 0
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_mb": memory_kb // 1024,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "pinning": pinning_note,
        "servers": versions,
    }


def write_json(stem: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stem}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def stem(names: Sequence[str]) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{'-'.join(names)}-{stamp}"


def figure_of(row: Row, key: str) -> float | None:
    """One numeric figure of a row by name (None when the row has none)."""
    value = cast(dict[str, Any], row).get(key)
    return float(value) if isinstance(value, int | float) else None


def chart(stem_: str, rows: Sequence[Row], servers: Sequence[str]) -> Path | str:
    """One panel per figure the run has, per server: fan-out deliveries/s and p99
    latency against subscribers, server CPU per delivery against topics, and
    server CPU per connection set-up.

    Returns the PNG's path, or why there is none."""
    fanout = [row for row in rows if row["scenario"] == "fanout"]
    topics = [row for row in rows if row["scenario"] == "topics"]
    connect = [row for row in rows if row["scenario"] == "connect"]
    if not (fanout or topics or connect):
        return "no fan-out, topics or connect rows to chart"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]')"
    # (rows, x label, the figure plotted, title)
    lines = []
    if fanout:
        lines.append((fanout, "subscribers", "deliveries_per_s", "fan-out: deliveries/s"))
        lines.append((fanout, "subscribers", "p99_ms", "fan-out: p99 latency under flood (ms)"))
    if topics:
        lines.append((topics, "topics (2 subscribers each)", "us_per_delivery",
                      "many topics: server CPU us/delivery"))  # fmt: skip
    panels = len(lines) + (1 if connect else 0)
    columns = min(panels, 2)
    figure, axes_grid = plt.subplots(
        (panels + 1) // 2, columns, figsize=(5.5 * columns, 4.5 * ((panels + 1) // 2)),
        squeeze=False,
    )  # fmt: skip
    axes_list = [axes for row_axes in axes_grid for axes in row_axes]
    for axes, (picked, xlabel, key, title) in zip(axes_list, lines, strict=False):
        for server in servers:
            points = sorted(
                (r["param"], value)
                for r in picked
                if r["server"] == server and (value := figure_of(r, key)) is not None
            )
            if points:
                axes.plot([x for x, _ in points], [y for _, y in points], marker="o",
                          label=server)  # fmt: skip
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel(xlabel)
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    if connect:
        axes = axes_list[len(lines)]
        names = [server for server in servers if any(r["server"] == server for r in connect)]
        cost = []
        for server in names:
            row = next(r for r in connect if r["server"] == server)
            cost.append((row["server_cpu_s"] or 0.0) / max(row["connections"], 1) * 1e6)
        axes.bar(names, cost, color=[f"C{servers.index(name)}" for name in names])
        axes.set_title("connection set-up: server CPU us/connection")
        axes.grid(True, axis="y", alpha=0.3)
    for axes in axes_list[panels:]:
        axes.set_visible(False)
    figure.tight_layout()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stem_}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def checklist(rows: Sequence[Row], ours: str) -> list[str]:
    """The issue's targets, with the measured values, for the rows this run has."""

    def find(scenario: str, param: int, server: str = ours, variant: str = "") -> Row | None:
        return next(
            (
                row
                for row in rows
                if (row["scenario"], row["param"], row["server"]) == (scenario, param, server)
                and (not variant or row["variant"] == variant)
            ),
            None,
        )

    def verdict(passed: bool) -> str:
        return "PASS" if passed else "MISS"

    lines = []
    row = find("fanout", 1000)
    if row is not None and row["us_per_delivery"] is not None:
        redis = find("fanout", 1000, "redis")
        cost = row["us_per_delivery"]
        text = f"fan-out S=1000: {cost:.3f} us server CPU/delivery (target <= 1)"
        passed = cost <= 1.0
        if redis is not None and redis["us_per_delivery"]:
            times = cost / redis["us_per_delivery"]
            text += f", {times:.2f}x Redis's {redis['us_per_delivery']:.3f} us (target <= 3x)"
            passed = passed and times <= 3.0
        lines.append(f"{verdict(passed)} {text}")
    row = find("fanout", 1)
    if row is not None:
        rate = row["deliveries_per_s"]
        lines.append(
            f"{verdict(rate >= 50_000)} single publisher, 1 subscriber: {rate:,.0f} msg/s "
            "end to end (target >= 50,000)"
        )
    for size, limit in ((10, 1.0), (100, 5.0)):
        row = find("latency", size, variant="2,000 deliveries/s")
        if row is not None and row["p99_ms"] is not None:
            lines.append(
                f"{verdict(row['p99_ms'] <= limit)} latency 2,000 deliveries/s S={size}: "
                f"p99 {row['p99_ms']:.3f} ms (target <= {limit:g} ms)"
            )
    row = find("idle", 10_000)
    if row is not None and row["kb_per_connection"] is not None:
        kb = row["kb_per_connection"]
        lines.append(
            f"{verdict(kb <= 16 and row['exact'])} idle: {kb:.1f} KB/connection (target <= 16), "
            f"{row['connections']:,} connections held ({row['check']})"
        )
    slow_rows = [row for row in rows if row["scenario"] == "slow" and row["server"] == ours]
    quiet = next((r for r in slow_rows if r["variant"] == "no stalled subscriber"), None)
    stalled = next((r for r in slow_rows if r["variant"] == "with a stalled subscriber"), None)
    if quiet and stalled and quiet["p99_ms"] and stalled["p99_ms"] is not None:
        times = stalled["p99_ms"] / quiet["p99_ms"]
        lines.append(
            f"{verdict(times <= 2.0)} slow: fast subscribers' p99 {stalled['p99_ms']:.3f} ms with "
            f"a stalled subscriber vs {quiet['p99_ms']:.3f} ms without ({times:.2f}x, target <= 2x)"
        )
    lines += cluster_checklist(rows, ours)
    lines += filters_checklist(rows, ours)
    lines += patterns_checklist(rows, ours)
    return lines


#: Issue targets that are reported beside the numbers, never judged.
FILTERED_TARGET: Final = 1.5
PATTERN_GROWTH_TARGET: Final = 2.0


def filters_checklist(rows: Sequence[Row], ours: str) -> list[str]:
    """Our filtered/unfiltered CPU per delivery: reported against the target, not judged."""
    mine = [row for row in rows if row["scenario"] == "filters" and row["server"] == ours]
    lines = []
    for row in mine:
        base = next(
            (
                other
                for other in mine
                if other["paced"] == row["paced"] and other["variant"].endswith(UNFILTERED)
            ),
            None,
        )
        if base is None or base["us_per_delivery"] is None:
            continue
        if row["vs_baseline"] is None or row["us_per_delivery"] is None:
            continue
        lines.append(
            f"REPORTED filters S={row['param']:,}, {row['variant']}: "
            f"{row['us_per_delivery']:.3f} us server CPU/delivery, "
            f"{row['deliveries_per_s']:,.0f} deliveries/s; unfiltered "
            f"{base['us_per_delivery']:.3f} us, {base['deliveries_per_s']:,.0f} deliveries/s: "
            f"filtered/unfiltered {row['vs_baseline']:.2f}x (issue target <= "
            f"{FILTERED_TARGET:g}x; reported, not judged)"
            + ("" if row["exact"] and base["exact"] else f"; loss check {row['check']}")
        )
    return lines


def patterns_checklist(rows: Sequence[Row], ours: str) -> list[str]:
    """Each server's growth of CPU per publish from the smallest to the largest pattern
    count: ours against the target, the peers beside it; reported, not judged."""
    picked = [row for row in rows if row["scenario"] == "patterns"]
    servers = list(dict.fromkeys([ours, *(row["server"] for row in picked)]))
    texts = []
    for server in servers:
        mine = sorted((r for r in picked if r["server"] == server), key=lambda r: r["param"])
        if len(mine) < 2 or mine[0]["us_per_publish"] is None:
            continue
        low, high = mine[0], mine[-1]
        if high["us_per_publish"] is None or high["vs_baseline"] is None:
            continue
        exact = all(row["exact"] for row in mine)
        text = (
            f"{server} {low['us_per_publish']:.3f} -> {high['us_per_publish']:.3f} us "
            f"server CPU/publish, {high['vs_baseline']:.2f}x"
        )
        low_setup, high_setup = low["setup_cpu_s"], high["setup_cpu_s"]
        if low_setup is not None and high_setup is not None and high["param"] > low["param"]:
            each = (high_setup - low_setup) * 1e6 / (high["param"] - low["param"])
            text += (
                f" (set-up {low_setup * 1000:,.0f} -> {high_setup * 1000:,.0f} ms server CPU, "
                f"~{each:,.1f} us per extra pattern subscribe)"
            )
        texts.append(text + ("" if exact else " (a loss check failed)"))
    if not texts or not texts[0].startswith(ours):
        return []
    low_p = min(row["param"] for row in picked)
    high_p = max(row["param"] for row in picked)
    return [
        f"REPORTED patterns P={low_p:,} -> {high_p:,} non-matching patterns: "
        + "; ".join(texts)
        + f" (issue target for ours <= {PATTERN_GROWTH_TARGET:g}x; reported, not judged)"
    ]


#: The issue's cluster targets on the 2-core development machine.
CLUSTER_PUBLISHES: Final = 30_000
CLUSTER_NODE_US: Final = 0.5
CLUSTER_P99_MS: Final = 3.0
CLUSTER_RATE: Final = 2_000


def cluster_checklist(rows: Sequence[Row], ours: str) -> list[str]:
    """The cluster targets, read from our rows on the Redis engine (variant ``redis
    engine, K nodes``), the memory engine's value beside each."""
    mine = [row for row in rows if row["scenario"] == "cluster" and row["server"] == ours]
    clustered = [row for row in mine if row["variant"].startswith("redis engine")]
    if not clustered:
        return []

    def memory(row: Row) -> Row | None:
        return next(
            (
                other
                for other in mine
                if other["variant"] == MEMORY_VARIANT
                and (other["param"], other["paced"]) == (row["param"], row["paced"])
            ),
            None,
        )

    def verdict(passed: bool) -> str:
        return "PASS" if passed else "MISS"

    def counts(row: Row) -> str:
        return "" if row["exact"] else f"; loss check {row['check']}"

    lines = []
    for row in clustered:
        where = f"cluster, {row['variant']}"
        beside = memory(row)
        if row["paced"] == 0 and row["param"] == 1:
            rate = row["publishes_per_s"]
            text = f"{rate:,.0f} msg/s acknowledged (target >= {CLUSTER_PUBLISHES:,})"
            if beside is not None:
                text += f", memory engine {beside['publishes_per_s']:,.0f}"
            lines.append(
                f"{verdict(rate >= CLUSTER_PUBLISHES)} {where}: single publisher, "
                f"1 subscriber: {text}{counts(row)}"
            )
        elif row["paced"] == 0 and row["param"] == 1000 and row["node_us_per_delivery"]:
            cost = row["node_us_per_delivery"]
            text = f"{cost:.3f} us node CPU/delivery (target <= {CLUSTER_NODE_US:g})"
            if row["us_per_delivery"] is not None:
                text += f", {row['us_per_delivery']:.3f} with Redis"
            if beside is not None and beside["us_per_delivery"] is not None:
                text += f", memory engine {beside['us_per_delivery']:.3f}"
            lines.append(
                f"{verdict(cost <= CLUSTER_NODE_US)} {where}: 1,000 subscribers: "
                f"{text}{counts(row)}"
            )
        elif row["paced"] and round(row["paced"] * row["param"]) == CLUSTER_RATE:
            if row["p99_ms"] is None:
                continue
            p99 = row["p99_ms"]
            text = f"p99 {p99:.3f} ms (target <= {CLUSTER_P99_MS:g} ms)"
            if beside is not None and beside["p99_ms"] is not None:
                text += f", memory engine {beside['p99_ms']:.3f} ms"
            lines.append(
                f"{verdict(p99 <= CLUSTER_P99_MS)} {where}: {CLUSTER_RATE:,} deliveries/s "
                f"S={row['param']:,}: {text}{counts(row)}"
            )
    return lines
