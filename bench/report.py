"""Render a result file as Markdown tables: ``python -m bench.report bench/reference.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "\u2013"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _name(name: str) -> str:
    return f"**{name}**" if name == "notifykit" else name


def _ratio(value: float) -> str:
    return _f(value, 2) + ("\u00d7" if value == value else "")


def capacity_table(capacity: dict[str, Any], target: float | None = 1.2) -> str:
    """The capacity mode's table (``bench.capacity`` or ``bench.run --capacity``)."""
    rows = []
    for name, data in capacity.items():
        ratio = data.get("broadcast_time_ratio_to_floor_jwt", float("nan"))
        mark = ""
        if name == "notifykit" and target and ratio == ratio:
            mark = " ✓" if ratio <= target else " ✗"
        rows.append(
            [
                _name(name),
                f"{data['ready']:,} of {data['connections']:,}",
                _f(data["connects_per_s"], 0),
                _f(data["rss_kib"] / 1024, 0),
                _f(data["kib_per_connection"], 1),
                _f(data["broadcast_ms_to_last_delivery"], 0),
                _ratio(ratio) + mark,
                str(data["broadcast_lost"]),
            ]
        )
    return (
        "Capacity: one server process filled with idle authenticated connections (clients in "
        "several processes), then broadcasts one at a time: publish call to last delivery "
        f"(median; target for notifykit: \u2264 {target}\u00d7 floor-jwt's).\n\n"
        + _table(
            [
                "variant",
                "connections",
                "connects/s",
                "RSS MiB",
                "RSS KiB / conn",
                "broadcast → last delivery ms",
                "ratio to floor-jwt",
                "lost",
            ],
            rows,
        )
    )


def render(result: dict[str, Any]) -> str:
    """The tables of one run."""
    plan = result["plan"]
    machine = result["machine"]
    parts = [
        f"Run {result['date']} on {machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_gib']} GiB, Python {machine['python']}, {machine['redis_server']}.",
        f"K={plan['instances']} instances, {plan['users']} users with 1-2 connections each; "
        f"{plan['rounds']} round(s) per figure (medians); targeted rounds of "
        f"{plan['targeted_n']} notifications, broadcast rounds of {plan['broadcast_n']}; "
        f"latency at {plan['latency_rate']:g} notifications/s; "
        f"{plan['idle_connections']} idle connections for RSS.",
    ]
    variants = result["variants"]
    rows = []
    for name, v in variants.items():
        t, b, lat, idle = v["targeted"], v["broadcast"], v["latency"], v["idle"]
        lost = t["lost"] + b["lost"] + lat["lost"] + t.get("bystander", {}).get("lost", 0)
        extra = t["extra"] + b["extra"] + lat["extra"]
        expected = t["expected"] + b["expected"] + lat["expected"]
        rows.append(
            [
                _name(name),
                _f(t["deliveries_per_s"], 0),
                _f(t["server_cpu_us_per_delivery"], 1),
                _f(b["deliveries_per_s"], 0),
                _f(b["server_cpu_us_per_delivery"], 1),
                " / ".join(_f(lat.get(f"latency_{p}_ms"), 2) for p in ("p50", "p95", "p99")),
                _f(idle.get("kib_per_connection"), 1),
                f"{lost} of {expected:,}" + (f" (+{extra} extra)" if extra else ""),
            ]
        )
    parts.append(
        _table(
            [
                "variant",
                "targeted deliveries/s",
                "server CPU µs / targeted delivery",
                "broadcast deliveries/s",
                "server CPU µs / broadcast delivery",
                "latency p50 / p95 / p99 ms",
                "RSS KiB / idle conn",
                "lost",
            ],
            rows,
        )
    )
    rows = []
    for name, v in variants.items():
        idle = v.get("idle", {})
        rows.append(
            [
                _name(name),
                _f(idle.get("cpu_us_per_connect"), 0),
                _f(idle.get("redis_commands_per_connect"), 2),
                _f(idle.get("connects_per_s"), 0),
                _f(idle.get("kib_per_connection"), 1),
            ]
        )
    parts.append(
        f"Connects: {plan['idle_connections']:,} connections (distinct users) to one fresh "
        "instance, 64 at a time per client process; server CPU and Redis commands (INFO "
        "commandstats) per connect, connect rate, then RSS per idle connection.\n\n"
        + _table(
            [
                "variant",
                "server CPU µs / connect",
                "Redis commands / connect",
                "connects/s",
                "RSS KiB / idle conn",
            ],
            rows,
        )
    )
    ratios = result.get("ratios", {})
    targets = result.get("targets", {})
    if ratios:
        figures = [
            "cpu_per_targeted_delivery",
            "cpu_per_broadcast_delivery",
            "p99_latency",
            "rss_per_idle_connection",
            "cpu_per_connect",
        ]
        rows = []
        for name, r in ratios.items():
            if name == "floor":
                continue
            cells = []
            for figure in figures:
                value = r.get(figure, float("nan"))
                mark = ""
                if name == "notifykit" and value == value and figure in targets:
                    mark = " ✓" if value <= targets[figure] else " ✗"
                cells.append(_ratio(value) + mark)
            rows.append([_name(name), *cells])
        rows.append(
            [
                "*target (notifykit)*",
                *(f"\u2264 {targets[f]}\u00d7" if f in targets else "" for f in figures),
            ]
        )
        parts.append(
            "Ratios to the floor in the same run (lower is better; CPU per delivery and latency "
            "to `floor`, memory and connect cost to `floor-jwt`):\n\n"
            + _table(
                [
                    "variant",
                    "CPU / targeted delivery",
                    "CPU / broadcast delivery",
                    "p99 latency",
                    "RSS / idle conn",
                    "CPU / connect",
                ],
                rows,
            )
        )
    storm = result.get("storm", {})
    if storm:
        storm_ratios = result.get("storm_ratios", {})
        target = targets.get("storm_seconds_to_all_welcomed")
        rows = []
        for name, data in storm.items():
            ratio = storm_ratios.get(name, {}).get("seconds_to_all_welcomed", float("nan"))
            mark = ""
            if name == "notifykit" and target and ratio == ratio:
                mark = " ✓" if ratio <= target else " ✗"
            rows.append(
                [
                    _name(name),
                    _f(data["seconds_to_all_welcomed"], 2),
                    _ratio(ratio) + mark,
                    _f(data["connects_per_s"], 0),
                    _f(data["cpu_us_per_connect"], 0),
                    _f(data["redis_commands_per_connect"], 2),
                    str(data["failures"]),
                ]
            )
        first = next(iter(storm.values()))
        parts.append(
            f"Reconnect storm: {first['connections']:,} clients connecting at once to one fresh "
            f"instance (target for notifykit: \u2264 {target}\u00d7 floor-jwt's time).\n\n"
            + _table(
                [
                    "variant",
                    "s until all welcomed",
                    "ratio to floor-jwt",
                    "connects/s",
                    "server CPU µs / connect",
                    "Redis commands / connect",
                    "failed",
                ],
                rows,
            )
        )
    if result.get("capacity"):
        parts.append(capacity_table(result["capacity"], targets.get("capacity_broadcast_time")))
    scaling = result.get("scaling", {})
    if scaling:
        rows = []
        for name, curve in scaling.items():
            for k, s in curve.items():
                per_instance = s.get("server_cpu_us_per_notification_per_instance", [])
                by = s.get("bystander", {})
                rows.append(
                    [
                        name,
                        k,
                        _f(s["deliveries_per_s"], 0),
                        _f(s["server_cpu_us_per_notification"], 1),
                        " / ".join(_f(x, 1) for x in per_instance),
                        _f(by.get("holder_cpu_us_per_notification"), 1),
                        _f(by.get("bystander_cpu_us_per_notification"), 2)
                        if k != "1"
                        else "\u2013",
                        _f(by.get("redis_cpu_us_per_notification"), 1),
                        str(s["lost"] + by.get("lost", 0)),
                    ]
                )
        parts.append(
            "Scaling. Targeted notifications over every user: deliveries/s and server CPU per "
            "notification, summed over the instances and per instance. Then notifications only "
            "for users held by instance 0: CPU per notification of that instance, of each "
            "other instance (the bystanders), and of Redis.\n\n"
            + _table(
                [
                    "variant",
                    "K",
                    "deliveries/s",
                    "server CPU µs / notification, all instances",
                    "per instance",
                    "holder µs / notif.",
                    "each bystander µs / notif.",
                    "Redis µs / notif.",
                    "lost",
                ],
                rows,
            )
        )
    if result.get("skipped"):
        parts.append(f"Skipped: {', '.join(result['skipped'])}.")
    return "\n\n".join(parts) + "\n"


def main() -> None:
    """Print the tables of the result file given on the command line."""
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.report RESULT.json")
    print(render(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
