"""The SR's phase number (PHASENUM), the SEG's segment descriptions and the PDF's ED / ES row name the acquisition's
phases (break41a F1): with phase 3 of 6 left out at every slice, the volume's index 3 is phase 5, not phase 4."""
from __future__ import annotations

from dicomnode.results.report import _phase_label, _phases_text
from dicomnode.results.seg import build_seg, seg_parts
from dicomnode.results.sr import build_sr
from synthetic import make_study
from test_results_sr import group_named, identifier_of, nums, segs_of

NUMBERS = [1, 2, 4, 5, 6]  # the 5 phases of the synthetic cine as acquired: phase 3 of 6 left out


def _gapped_study():
    study, results, context = make_study()
    cine = results[1]
    volume = cine.segmentations[0].volume
    volume.phase_numbers, volume.acquired_phases = list(NUMBERS), 6
    cine.summary.update({"phase_numbers": list(NUMBERS), "phases_acquired": 6,
                         "ed_phase_number": NUMBERS[cine.summary["ed_phase"]],
                         "es_phase_number": NUMBERS[cine.summary["es_phase"]]})
    return study, results, context


def test_sr_phase_number_and_group_text_are_the_acquisition_phase():
    study, results, context = _gapped_study()
    summary = results[1].summary
    assert (summary["ed_phase"], summary["es_phase"]) == (0, 3)
    sr = build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)
    es_number = {c: v for c, v, u, _ in nums(group_named(sr, "LV blood pool ES"))}[("PHASENUM", "99DICOMNODE")]
    ed_number = {c: v for c, v, u, _ in nums(group_named(sr, "LV blood pool ED"))}[("PHASENUM", "99DICOMNODE")]
    assert (ed_number, es_number) == (1, 5)
    # the tracking identifier a viewer shows as the group's name
    assert identifier_of(group_named(sr, "LV blood pool ES")) == "LV blood pool ES (phase 5 of 6)"
    assert identifier_of(group_named(sr, "LV blood pool ED")) == "LV blood pool ED (phase 1 of 6)"


def test_seg_descriptions_name_the_acquisition_phase():
    _, results, context = _gapped_study()
    segmentation = results[1].segmentations[0]
    sources = [i.dataset for i in segmentation.series.instances]
    descriptions = [s.SegmentDescription for part in seg_parts(segmentation)
                    for s in build_seg(segmentation, sources, context, 9001, part).SegmentSequence]
    assert any("phase 5 (1-based)" in d for d in descriptions), descriptions
    assert not any("phase 4 (1-based)" in d for d in descriptions)


def test_pdf_phase_row_and_panel_labels_name_the_acquisition_phase():
    _, results, _ = _gapped_study()
    summary = dict(results[1].summary, lv_volume_curve_ml=[100.0, 90.0, 70.0, 50.0, 80.0])
    assert _phases_text(summary) == "1 / 5 of 6 (counted from 1)"
    assert _phase_label(summary, 3) == "phase 5"
