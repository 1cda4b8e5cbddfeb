"""Layout of the report pages: the key-number table wrapped inside its cells, the image grid fitted into the space
left below it, and lines shrunk to the page width, so that no block runs into another.

Positions are figure fractions (0-1 from the bottom left of the page); matplotlib is imported by the caller.
"""
from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Callable, Container, Mapping

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
MIN_WRAP = 8  # characters: the narrowest a cell is wrapped to
CELL_PAD = 0.1  # matplotlib's Cell.PAD: the text's inset, a share of the cell width, on each side
EMPHASIS_COLOUR = "#b00020"  # the banner's red: a caveat the reader must see


def wrap_cell(text: str, width: int, max_lines: int | None = None,
              fits: Callable[[str], bool] | None = None) -> str:
    """A cell's text wrapped to `width` characters, cut to `max_lines` lines with a pointer to page 2; where `fits`
    (a line measured against the cell) says a line is too wide (a long word of wide letters, e.g.
    "(CardiacNumberOfImages"), wrapped again a character narrower until every line fits. Lines break between
    words only ("an / alysis" reads as two words), unless one word alone is wider than the cell."""
    whole_words = fits is None or all(fits(word) for word in str(text).split())
    while True:
        lines = textwrap.wrap(str(text), width, break_long_words=not whole_words) or [""]
        if max_lines is not None and len(lines) > max_lines:
            lines = lines[:max(max_lines - 1, 0)] + textwrap.wrap(CLIPPED, width, break_long_words=not whole_words)
        if fits is None or width <= MIN_WRAP or all(fits(line) for line in lines):
            return "\n".join(lines)
        width -= 1


def key_table(figure: Figure, rows: list[tuple[str, str, str]], left: float, top: float, width: float,
              row_caps: Mapping[str, int] | None = None, emphasised_rows: Container[str] = (),
              font: float = TABLE_FONT) -> Table:
    """The key-number table hanging from `top` in an axes of its own, each row as tall as its longest wrapped
    cell (wrapped by characters, then measured); the value cell of a row named (first column) in `row_caps` takes
    at most that many lines (a cut one points to page 2); the cells of the rows named in `emphasised_rows`
    (caveats on the numbers) are written in EMPHASIS_COLOUR. `font` (points, TABLE_FONT or smaller): a smaller
    font puts more characters on a line (TABLE_WRAP scaled) and makes each line lower (TABLE_LINE scaled)."""
    ax = figure.add_axes((left, 0.0, width, top))
    ax.set_axis_off()
    renderer, probe = figure.canvas.get_renderer(), ax.text(0, 0, "", fontsize=font)  # measures a line
    widths = [max(MIN_WRAP, int(each * TABLE_FONT / font)) for each in TABLE_WRAP]

    def fitter(share: float) -> Callable[[str], bool]:
        room = figure.bbox.width * width * share * (1 - 2 * CELL_PAD)  # pixels

        def fits(line: str) -> bool:
            probe.set_text(line)
            return probe.get_window_extent(renderer).width <= room
        return fits

    fits = [fitter(share) for share in TABLE_COLUMNS]
    wrapped = [[wrap_cell(cell, chars, (row_caps or {}).get(row[0]) if column == 1 else None, fit)
                for column, (cell, chars, fit) in enumerate(zip(row, widths, fits))] for row in rows]
    probe.remove()
    table = ax.table(cellText=wrapped, colLabels=list(TABLE_HEADER), loc="upper left", colWidths=list(TABLE_COLUMNS),
                     cellLoc="left")
    table.AXESPAD = 0.0
    table.auto_set_font_size(False)
    table.set_fontsize(font)
    for (row, _), cell in table.get_celld().items():
        lines = 1 if row == 0 else max(text.count("\n") + 1 for text in wrapped[row - 1])
        cell.set_height(TABLE_LINE * font / TABLE_FONT * (lines + 0.35) / top)
        cell.set_linewidth(0.3)
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#eeeeee")
        elif rows[row - 1][0] in emphasised_rows:
            cell.set_text_props(color=EMPHASIS_COLOUR)
    return table


def bottom_of(artist, figure: Figure) -> float:
    """The lowest point (figure fraction) that `artist` draws, its labels included."""
    renderer = figure.canvas.get_renderer()
    box = artist.get_tightbbox(renderer) if hasattr(artist, "get_tightbbox") else artist.get_window_extent(renderer)
    return float(box.transformed(figure.transFigure.inverted()).y0)


def panel_grid(count: int, top: float, bottom: float, width: float = 0.92, gap: float = 0.01, caption: float = 0.022,
               max_height: float = 0.20, columns: int | None = None) -> tuple[int, float, float]:
    """(columns, panel width, panel height) of the largest square image panels, each with a caption above it,
    that `count` images fill between `top` and `bottom` across `width` (in `columns` columns where given); height
    0 when none fits."""
    aspect = PAGE_INCHES[0] / PAGE_INCHES[1]  # a square in figure fractions is `aspect` times as tall as it is wide
    best = (max(count, 1) if columns is None else columns, 0.0, 0.0)
    for columns in (range(1, count + 1) if columns is None else (columns,)):
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


def fit_lines(text: Text, figure: Figure, width: float, smallest: float = 5.0) -> None:
    """Fit `text` (e.g. an image title) into `width` of the page: kept on one line where it fits, else broken at
    the space that makes its longer line shortest (after a comma where that fits too), then shrunk (fit_width).
    Widths are measured with the figure's renderer, so titles side by side never run into each other."""
    renderer = figure.canvas.get_renderer()
    original = text.get_text()

    def span(candidate: str) -> float:
        text.set_text(candidate)
        return text.get_window_extent(renderer).width / figure.bbox.width

    if "\n" in original or span(original) <= width:
        text.set_text(original)
        fit_width(text, figure, width, smallest)
        return
    words = original.split(" ")
    candidates = []
    for cut in range(1, len(words)):
        candidate = " ".join(words[:cut]) + "\n" + " ".join(words[cut:])
        measured = span(candidate)
        candidates.append((measured > width, not words[cut - 1].endswith(","), measured, candidate))
    text.set_text(min(candidates)[3] if candidates else original)
    fit_width(text, figure, width, smallest)


def wrap_words(text: str, width: float, span: Callable[[str], float]) -> list[str]:
    """`text` broken between words (never inside one) into the fewest lines, each at most `width` as `span`
    measures a line (a page fraction); a word wider than `width` alone stands on a line of its own."""
    lines: list[str] = []
    for word in str(text).split():
        if lines and span(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def text_span(figure: Figure, fontsize: float) -> tuple[Callable[[str], float], Callable[[], None]]:
    """(span, done): span(line) is the width (page fraction) `line` takes at `fontsize`, measured with the figure's
    renderer by a probe text that done() removes."""
    renderer, probe = figure.canvas.get_renderer(), figure.text(0, 0, "", fontsize=fontsize)

    def span(line: str) -> float:
        probe.set_text(line)
        return probe.get_window_extent(renderer).width / figure.bbox.width
    return span, probe.remove


def caption_height(lines: int, line: float, pad: float) -> float:
    """The height (page fraction) of a caption of `lines` lines of height `line` each, `pad` between it and its
    image."""
    return lines * line + pad


def captioned_grid(captions: list[str], top: float, bottom: float, span: Callable[[str], float], line: float,
                   pad: float, gap: float = 0.01, least_lines: int = 2, width: float = 0.92
                   ) -> tuple[int, float, float, float, list[str]]:
    """(columns, panel width, panel height, caption height, captions wrapped) of the largest square image panels
    (as panel_grid) whose captions, each wrapped between words within its own panel's width (wrap_words), fit the
    caption height above each row: for each number of columns the caption takes as many lines as its panel's width
    needs (a smaller panel, a narrower caption, more lines), so that captions side by side never run into each
    other or off the page; a tie goes to more columns."""
    best: tuple[int, float, float, float, list[str]] = (max(len(captions), 1), 0.0, 0.0,
                                                         caption_height(least_lines, line, pad), list(captions))
    for columns in range(1, len(captions) + 1):
        lines = least_lines
        while True:
            height_of_caption = caption_height(lines, line, pad)
            _, panel_width, panel_height = panel_grid(len(captions), top, bottom, width, gap, height_of_caption,
                                                      columns=columns)
            if panel_height <= 0:
                break
            wrapped = [wrap_words(caption, panel_width, span) for caption in captions]
            needed = max(len(each) for each in wrapped)
            if needed <= lines:
                if panel_height > best[2] - 1e-9:
                    best = (columns, panel_width, panel_height, height_of_caption, ["\n".join(w) for w in wrapped])
                break
            lines = needed
    return best
