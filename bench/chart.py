"""The benchmark's chart: ``python -m bench.chart RESULT.json [--out chart.png]``.

Three panels side by side, one bar per variant, lower is better: server CPU per delivery
(targeted and broadcast), RSS per idle connection, server CPU per connect. Each bar is labelled
with its value and its ratio to the floor of the same run. ``bench.run`` draws it after every
run (next to the JSON, or ``--chart``); it needs matplotlib (in the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

FLOORS = ("floor", "floor-jwt")
DIAGNOSTIC = ("raw", "asgi", "single-channel")
NOTIFYKIT = (
    "notifykit",
    "notifykit-nohistory",
    "notifykit-websockets",
    "notifykit-channels",
    "nk-uvicorn-websockets",
    "nk-uvicorn-wsproto",
)
COLORS = {
    "floor": "#8c8c8c",
    "diagnostic": "#c7c7c7",
    "notifykit": "#1f6fb4",
    "stack": "#8fb8de",
    "peer": "#e08a2c",
}


def _color(name: str) -> str:
    if name in FLOORS:
        return COLORS["floor"]
    if name == "notifykit":
        return COLORS["notifykit"]
    if name in NOTIFYKIT:
        return COLORS["stack"]
    if name in DIAGNOSTIC:
        return COLORS["diagnostic"]
    return COLORS["peer"]


def _label(name: str) -> str:
    return {
        "notifykit-nohistory": "notifykit, history off",
        "notifykit-websockets": "notifykit, websockets adapter",
        "notifykit-channels": "notifykit, Django Channels",
        "nk-uvicorn-websockets": "notifykit, uvicorn ws=websockets",
        "nk-uvicorn-wsproto": "notifykit, uvicorn ws=wsproto",
        "socketio": "python-socketio",
    }.get(name, name)


def _get(data: dict[str, Any], part: str, key: str) -> float:
    value = data.get(part, {}).get(key)
    return float(value) if isinstance(value, int | float) else float("nan")


def draw(result: dict[str, Any], out: Path) -> None:
    """Draw ``result`` (a ``bench.run`` JSON) as a PNG at ``out``."""
    variants: dict[str, Any] = result["variants"]
    names = list(variants)
    panels: list[tuple[str, str, list[tuple[str, str, str]]]] = [
        (
            "Server CPU per delivery (µs)",
            "floor",
            [
                ("targeted", "targeted", "server_cpu_us_per_delivery"),
                ("broadcast", "broadcast", "server_cpu_us_per_delivery"),
            ],
        ),
        ("Memory per idle connection (KiB)", "floor-jwt", [("", "idle", "kib_per_connection")]),
        ("Server CPU per connect (µs)", "floor-jwt", [("", "idle", "cpu_us_per_connect")]),
    ]
    rows = len(names)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(15, 0.42 * rows + 2.2), sharey=True, layout="constrained"
    )
    positions = list(range(rows))
    for ax, (title, base_name, series) in zip(axes, panels, strict=True):
        base = variants.get(base_name, {})
        height = 0.8 / len(series)
        # Past 4x the floor a bar is cut at the axis' end (its label still says its value),
        # so one slow peer does not squeeze every other bar into a sliver.
        bases = [_get(base, part, key) for _, part, key in series]
        cap = 4 * max((b for b in bases if b == b), default=float("inf"))
        top = 0.0
        for index, (label, part, key) in enumerate(series):
            values = [_get(variants[n], part, key) for n in names]
            reference = _get(base, part, key)
            offset = (index - (len(series) - 1) / 2) * height
            ys = [p + offset for p in positions]
            colors = [_color(n) for n in names]
            bars = ax.barh(
                ys,
                [min(v, cap) if v == v else 0 for v in values],
                height=height * 0.92,
                color=colors,
                alpha=1.0 if index == 0 else 0.55,
                hatch=None if index == 0 else "///",
                edgecolor="white" if index == 0 else "#444444",
                linewidth=0.0 if index == 0 else 0.4,
            )
            for bar, value in zip(bars, values, strict=True):
                if value != value:
                    continue
                ratio = f"  {value / reference:.2f}\u00d7" if reference == reference else ""
                text = f" {value:,.1f}{ratio}" if value < 100 else f" {value:,.0f}{ratio}"
                if label:
                    text = f" {label[0]}{text}"
                clipped = value > cap
                ax.annotate(
                    f"{text.strip()} \u00bb" if clipped else text.strip(),
                    (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    xytext=(-4 if clipped else 4, 0),
                    textcoords="offset points",
                    va="center",
                    ha="right" if clipped else "left",
                    fontsize=7.5,
                    color="white" if clipped else "#222222",
                    fontweight="bold" if clipped else "normal",
                    bbox=None
                    if clipped
                    else {"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.9},
                )
            top = max([top, *(min(v, cap) for v in values if v == v)])
        floor_value = bases[0]
        if len(series) == 1 and floor_value == floor_value:  # a line at the floor's value
            ax.axvline(
                floor_value, color="#555555", linestyle=(0, (3, 3)), linewidth=0.9, zorder=0.5
            )
            ax.text(
                floor_value,
                -0.75,
                f" {base_name}",
                fontsize=7.5,
                color="#555555",
                ha="left",
                va="bottom",
            )
        ax.set_title(title, fontsize=11, loc="left", fontweight="bold")
        ax.set_xlim(0, top * 1.45 if top else 1)
        ax.grid(axis="x", color="#e6e6e6", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(axis="both", labelsize=9)
        if len(series) > 1:
            ax.legend(
                handles=[
                    Patch(facecolor="#8c8c8c", label="t: targeted"),
                    Patch(
                        facecolor="#8c8c8c",
                        alpha=0.55,
                        hatch="///",
                        edgecolor="#444444",
                        label="b: broadcast",
                    ),
                ],
                loc="lower right",
                fontsize=8,
                frameon=False,
            )
    axes[0].set_yticks(positions, [_label(n) for n in names])
    for tick, name in zip(axes[0].get_yticklabels(), names, strict=True):
        if name == "notifykit":
            tick.set_fontweight("bold")
    axes[0].invert_yaxis()
    machine = result.get("machine", {})
    fig.suptitle(
        "notifykit against the floor and its peers — lower is better; ratios to the floor "
        "(per delivery: floor; memory and connect: floor-jwt)",
        fontsize=12,
        x=0.01,
        ha="left",
    )
    fig.text(
        0.01,
        -0.01,
        f"bench.run {result.get('date', '')}: {result['plan']['instances']} instances, "
        f"{result['plan']['rounds']} round(s) per figure (medians), "
        f"{machine.get('cores', '?')} shared cores, Python {machine.get('python', '?')}. "
        "Grey: floors; light grey: diagnostics; blue: notifykit; orange: peers.",
        fontsize=8,
        color="#555555",
        ha="left",
        va="top",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    """Draw the chart of the result file given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("result", type=Path)
    parser.add_argument("--out", type=Path, help="PNG (default: the result's name, .png)")
    args = parser.parse_args()
    out = args.out or args.result.with_suffix(".png")
    draw(json.loads(args.result.read_text()), out)
    print(out)


if __name__ == "__main__":
    main()
