"""Layout of the report pages: the key-number table wrapped inside its cells, the image grid fitted into the space
left below it, and lines shrunk to the page width, so that no block runs into another.

Positions are figure fractions (0-1 from the bottom left of the page); matplotlib is imported by the caller.
"""
from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Container

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.table import Table
    from matplotlib.text import Text

PAGE_INCHES = (8.27, 11.69)  # A4 portrait
TABLE_HEADER = ("Key numbers", "Value", "Reference")
TABLE_COLUMNS = (0.38, 0.29, 0.33)  # shares of the table's width
TABLE_WRAP = (30, 22, 22)  # characters per line of each column at TABLE_FONT
TABLE_FONT = 7.4
TABLE_LINE = 0.0139  # height of one text line at TABLE_FONT
CLIPPED = "… (in full on page 2)"


def wrap_cell(text: str, width: int, max_lines: int | None = None) -> str:
    """A cell's text wrapped to `width` characters, cut to `max_lines` lines with a pointer to page 2."""
    lines = textwrap.wrap(str(text), width) or [""]
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max(max_lines - 1, 0)] + textwrap.wrap(CLIPPED, width)
    return "\n".join(lines)


def key_table(figure: Figure, rows: list[tuple[str, str, str]], left: float, top: float, width: float,
              max_cell_lines: int | None = None, clipped_rows: Container[str] = ()) -> Table:
    """The key-number table hanging from `top` in an axes of its own, each row as tall as its longest wrapped
    cell; the cells of the rows named (first column) in `clipped_rows` take at most `max_cell_lines` lines."""
    ax = figure.add_axes((left, 0.0, width, top))
    ax.set_axis_off()
    wrapped = [[wrap_cell(cell, chars, max_cell_lines if row[0] in clipped_rows else None)
                for cell, chars in zip(row, TABLE_WRAP)] for row in rows]
    table = ax.table(cellText=wrapped, colLabels=list(TABLE_HEADER), loc="upper left", colWidths=list(TABLE_COLUMNS),
                     cellLoc="left")
    table.AXESPAD = 0.0
    table.auto_set_font_size(False)
    table.set_fontsize(TABLE_FONT)
    for (row, _), cell in table.get_celld().items():
        lines = 1 if row == 0 else max(text.count("\n") + 1 for text in wrapped[row - 1])
        cell.set_height(TABLE_LINE * (lines + 0.35) / top)
        cell.set_linewidth(0.3)
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#eeeeee")
    return table


def bottom_of(artist, figure: Figure) -> float:
    """The lowest point (figure fraction) that `artist` draws, its labels included."""
    renderer = figure.canvas.get_renderer()
    box = artist.get_tightbbox(renderer) if hasattr(artist, "get_tightbbox") else artist.get_window_extent(renderer)
    return float(box.transformed(figure.transFigure.inverted()).y0)


def panel_grid(count: int, top: float, bottom: float, width: float = 0.92, gap: float = 0.01, caption: float = 0.022,
               max_height: float = 0.20) -> tuple[int, float, float]:
    """(columns, panel width, panel height) of the largest square image panels, each with a caption above it,
    that `count` images fill between `top` and `bottom` across `width`; height 0 when none fits."""
    aspect = PAGE_INCHES[0] / PAGE_INCHES[1]  # a square in figure fractions is `aspect` times as tall as it is wide
    best = (max(count, 1), 0.0, 0.0)
    for columns in range(1, count + 1):
        rows = math.ceil(count / columns)
        height = min((width / columns - gap) * aspect, max_height, (top - bottom) / rows - caption)
        if height > best[2] - 1e-9:  # a tie goes to more columns: fewer rows
            best = (columns, height / aspect, height)
    return best


def fit_width(text: Text, figure: Figure, width: float, smallest: float = 5.0) -> None:
    """Shrink `text`'s font until it spans at most `width` of the page (not below `smallest` points)."""
    renderer = figure.canvas.get_renderer()
    span = text.get_window_extent(renderer).width / figure.bbox.width
    if span > width:
        text.set_fontsize(max(smallest, text.get_fontsize() * width / span))
