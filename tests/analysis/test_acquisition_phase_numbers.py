"""Phase numbers a reader sees are the acquisition's (break41a F1): a phase left out at every slice for one missing
image does not renumber the phases after it in summary.json, flags, notes, the SR, the PDF and the console."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from dicomnode.analysis.cine import CinePipeline
from dicomnode.analysis.cine_metrics import find_cardiac_phases
from dicomnode.analysis.ed_es_check import ed_es_objections
from dicomnode.analysis.phase_text import cycle_phases, phase_name, phase_number, phases_name, summary_phase_numbers
from dicomnode.config import Config
from dicomnode.summary_view import print_summary_table
from test_cine_pipeline import FakeRuntime, FakeStudy, FakeVolume, context, disc


@dataclass
class GappedVolume(FakeVolume):
    """A FakeVolume whose phases carry acquisition phase numbers, as cmr.volume.build_volume sets them."""

    phase_numbers: list | None = None
    acquired_phases: int | None = None

    def acquisition_phase_numbers(self):
        return list(self.phase_numbers)


def test_phase_text_names_the_acquisition_phase_of_an_index():
    numbers = [1, 2, 3, 4, 5, 6, 7, 9, 10]
    assert phase_number(7, numbers) == 9 and phase_number(7) == 8
    assert phase_name(7, numbers) == "phase 9"
    assert phases_name([6, 7], numbers) == "phases 7 and 9"
    assert summary_phase_numbers({"phase_numbers": numbers}) == numbers
    assert summary_phase_numbers({}) is None and summary_phase_numbers(None) is None


def test_phases_sent_count_a_phase_left_out_at_every_slice():
    # 20 phases sent, phase 8 left out at every slice for an image missing at one slice: 19 curve points
    curve = [100.0] * 19
    assert cycle_phases({"lv_volume_curve_ml": curve, "phases_acquired": 20}) == (20, None)
    assert cycle_phases({"lv_volume_curve_ml": curve}) == (19, None)
    # fewer phases sent than the cycle declares still reads as a part of the cycle
    assert cycle_phases({"lv_volume_curve_ml": [150.0, 60.0], "phases_acquired": 2,
                         "stack_warnings": ["2 of 30 cardiac phases present (CardiacNumberOfImages 30)"]}) == (2, 30)
    # phases kept numbered on the declared cycle (phases_acquired 20): the phases sent come from the stack warning
    assert cycle_phases({"lv_volume_curve_ml": curve, "phases_acquired": 20,
                         "stack_warnings": ["19 of 20 cardiac phases present (CardiacNumberOfImages 20)"]}) == (19, 20)
    assert cycle_phases({"lv_volume_curve_ml": [150.0, 60.0], "phases_acquired": 20, "phase_numbers": [1, 9],
                         "stack_warnings": ["2 of 20 cardiac phases present (CardiacNumberOfImages 20)"]}) == (2, 20)


def test_timing_notes_name_acquisition_phases():
    # 12 phases acquired, phase 4 (index 3) left out: index 3 of the volume is acquisition phase 5
    numbers = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]
    volumes = np.array([[40.0 - 20.0 * np.sin(np.pi * min(n - 1, 8) / 8.0)] for n in numbers])
    volumes[5, 0] = 80.0  # a jump at index 5 = acquisition phase 7
    found = find_cardiac_phases(volumes, None, phase_numbers=numbers)
    assert 5 in found.flagged_phases
    assert any(note.startswith("phase 7: LV volume") for note in found.notes), found.notes
    assert not any(note.startswith("phase 6: LV volume") for note in found.notes)
    objections = ed_es_objections(1, 0, [50.0, 60.0], [0.0, 300.0], 800.0, [3, 9])
    assert any("(phase 9, TriggerTime" in text or "(phase 3, TriggerTime" in text for text in objections), objections


def _gapped_cine(left_out: int):
    """14 acquired phases of a synthetic cosine cycle (ED at phase 1, ES at phase 6), phase `left_out` (1-based) not
    in the volume, as cmr.volume leaves out a phase an image is missing at."""
    shape, spacing = (160, 160), (1.5, 1.5)
    numbers = [n for n in range(1, 15) if n != left_out]
    areas = [20.0 ** 2 + (34.0 ** 2 - 20.0 ** 2) * (1 + np.cos(np.pi * (p / 5 if p <= 5 else (14 - p) / 9))) / 2
             for p in (n - 1 for n in numbers)]
    pixels = np.full((len(numbers), 3, *shape), 100.0, np.float32)
    for index, area in enumerate(areas):
        pixels[index, :, disc(shape, (79.5, 79.5), float(np.sqrt(area)), spacing)] = 400.0
    return GappedVolume(pixels, spacing, 8.0, trigger_times=[40.0 * (n - 1) for n in numbers], phase_numbers=numbers,
                        acquired_phases=14)


def test_summary_numbers_the_measured_phases_as_the_acquisition(capsys):
    volume = _gapped_cine(left_out=4)
    runtime = FakeRuntime()
    result = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime))
    summary = result.summary
    # the indices of design.md index the 13-point curve; the numbers are the acquisition's: ES is phase 6, index 4
    assert (summary["ed_phase"], summary["es_phase"]) == (0, 4)
    assert (summary["ed_phase_number"], summary["es_phase_number"]) == (1, 6)
    assert summary["phase_numbers"] == volume.phase_numbers and len(summary["lv_volume_curve_ml"]) == 13
    assert summary["phases_acquired"] == 14
    assert summary["phase_numbers"][summary["es_phase"]] == summary["es_phase_number"]
    # break45a F10: an integrator doing ed_phase + 1 is warned: the gap is listed and the numbering says what counts
    assert summary["phases_not_measured"] == [4]
    assert summary["es_phase"] + 1 != summary["es_phase_number"]
    assert "not a phase number" in summary["phase_numbering"] and "phases_not_measured" in summary["phase_numbering"]
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "cine": summary}]})
    out = capsys.readouterr().out
    assert "(ED phase 1, ES phase 6 of 14, counted from 1 as the report)" in out, out


@pytest.mark.parametrize("left_out", [2, 10])
def test_a_phase_left_out_elsewhere_keeps_the_numbers_of_the_phases_measured(left_out):
    volume = _gapped_cine(left_out=left_out)
    runtime = FakeRuntime()
    summary = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime)).summary
    # ES is acquisition phase 6 whether the phase left out lies before it (index 4) or after it (index 5)
    assert summary["es_phase_number"] == 6 and summary["es_phase"] == (4 if left_out == 2 else 5)
    assert summary["ed_phase_number"] == summary["phase_numbers"][summary["ed_phase"]] in (1, 14)
