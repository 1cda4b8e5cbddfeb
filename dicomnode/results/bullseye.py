"""AHA 17-segment bullseye plot (Cerqueira et al., Circulation 2002, figure 2) of one value per segment.

Standard orientation: anterior at the top, septum on the left, lateral on the right; rings from the outside in:
basal (1-6), mid (7-12), apical (13-16), apex (17) in the centre. Basal and mid segments are 60 degrees wide with
segment 1 (7) centred at the top; apical segments are 90 degrees wide with 13 centred at the top.
"""
from __future__ import annotations

import textwrap
from typing import Mapping

import numpy as np

from dicomnode.rounding import number_text

#: (inner radius, outer radius) of each ring
RINGS = {"basal": (0.75, 1.0), "mid": (0.5, 0.75), "apical": (0.25, 0.5), "apex": (0.0, 0.25)}


def segment_geometry(number: int) -> tuple[float, float, float, float]:
    """(inner radius, outer radius, start angle, end angle in degrees CCW from 3 o'clock) of AHA segment 1..17."""
    if not 1 <= number <= 17:
        raise ValueError(f"AHA segments are numbered 1..17, got {number}")
    if number == 17:
        return (*RINGS["apex"], 0.0, 360.0)
    if number <= 12:
        ring = RINGS["basal"] if number <= 6 else RINGS["mid"]
        position = (number - 1) % 6  # 0 = anterior, counter-clockwise: septum left, inferior bottom
        centre = 90.0 + 60.0 * position
        return (*ring, centre - 30.0, centre + 30.0)
    centre = 90.0 + 90.0 * (number - 13)
    return (*RINGS["apical"], centre - 45.0, centre + 45.0)


def draw_bullseye(ax, values: Mapping[int, float | None], title: str, unit: str, vmin: float = 0.0,
                  vmax: float = 100.0, cmap: str = "YlOrRd", labels: Mapping[int, str] | None = None) -> None:
    """Draw the bullseye on `ax`: each segment coloured by its value (grey where None) and labelled with its number,
    the value (rounded as every output: dicomnode.rounding; a value above 0 that rounds to 0 reads "<1", never 0
    beside a non-zero class) and an optional extra label (e.g. the transmurality class)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import Circle, Wedge

    colour_map, norm = colormaps[cmap], Normalize(vmin=vmin, vmax=vmax)
    unit_suffix = "%" if unit.startswith("%") else ""
    for number in range(1, 18):
        inner, outer, start, end = segment_geometry(number)
        value = values.get(number)
        face = "#d9d9d9" if value is None else colour_map(norm(value))
        if number == 17:
            ax.add_patch(Circle((0, 0), outer, facecolor=face, edgecolor="black", linewidth=0.8))
            x, y = 0.0, 0.0
        else:
            ax.add_patch(Wedge((0, 0), outer, start, end, width=outer - inner, facecolor=face, edgecolor="black",
                               linewidth=0.8))
            middle = np.radians((start + end) / 2.0)
            radius = (inner + outer) / 2.0
            x, y = radius * np.cos(middle), radius * np.sin(middle)
        text = f"{number}\n" + ("n/a" if value is None else f"{number_text(value, 0, below=True)}{unit_suffix}")
        if labels and labels.get(number) and labels[number] != "0":
            text += f"\nT {labels[number]}"
        dark = value is not None and norm(value) > 0.6
        ax.text(x, y, text, ha="center", va="center", fontsize=5.5, color="white" if dark else "black",
                linespacing=0.95)
    ax.text(0, 1.08, "anterior", ha="center", va="bottom", fontsize=6)
    ax.text(-1.1, 0, "septal", ha="right", va="center", fontsize=6, rotation=90)
    ax.text(0, -1.08, "inferior", ha="center", va="top", fontsize=6)
    ax.text(1.08, 0, "lateral", ha="left", va="center", fontsize=6, rotation=270)
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title("\n".join(textwrap.wrap(f"{title} ({unit})", 34)), fontsize=8, loc="center")
    if labels:
        ax.text(-1.25, -1.25, "T: mean transmurality class (%)", fontsize=6, va="bottom")
