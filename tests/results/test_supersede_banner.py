"""A supersede notice naming a correction ("10 instance(s) sent again with PatientWeight 95 kg corrected to 60 kg,
replacing the copies that report was made from", break47b #5) is longer than one line of the red banner holds at a
legible size: it is broken onto two lines inside the banner, never cut at the page's edges."""
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dicomnode.results.provenance import supersede_text
from dicomnode.results.report import BANNER, PAGE_INCHES, SUPERSEDE_SMALLEST, mark_superseding

CORRECTED = ("10 instance(s) sent again with PatientSize 1.84 m corrected to 1.8 m and PatientWeight 95 kg corrected "
             "to 60 kg, replacing the copies that report was made from and 2 instance(s) received after that report")


@pytest.mark.parametrize("reason, lines", [("2 instance(s) received after that report", 1), (CORRECTED, 2)])
def test_the_supersede_notice_stays_inside_the_page_and_the_banner(reason, lines):
    figure = Figure(figsize=PAGE_INCHES)
    FigureCanvasAgg(figure)
    figure.text(0.5, 0.977, BANNER, ha="center", va="center", fontsize=12, weight="bold")
    notice = supersede_text([{"report_time": "2026-12-07 10:57", "series_number": 9100, "pdf_series_number": 9200,
                              "reason": reason}])
    mark_superseding(figure, notice)
    line = figure.texts[-1]
    box = line.get_window_extent(figure.canvas.get_renderer()).transformed(figure.transFigure.inverted())
    assert 0.0 <= box.x0 and box.x1 <= 1.0, (box, line.get_fontsize())
    assert 0.955 <= box.y0 and box.y1 <= 0.982  # inside the red band, below the BANNER line
    assert line.get_text().count("\n") == lines - 1 and " ".join(line.get_text().split()) == notice
    assert line.get_fontsize() >= (SUPERSEDE_SMALLEST if lines == 1 else 5.0)
