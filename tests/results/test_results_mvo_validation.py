"""How every output presents the LGE model's MVO where the model card does not validate it (summary
`lge.mvo_validation`, dicomnode.analysis.lge.mvo_validation): the MVO volume stays, beside it the reader is told that it
is not validated and how often 'MVO present' from it was wrong; 'MVO present / absent' is not stated as a finding.
The same presentations of %LGE's known error: test_results_lge_withheld.py."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from dicomnode.analysis.lge import mvo_validation_text
from dicomnode.results.report import key_number_table, overlay_legend, render_report
from dicomnode.results.seg import build_seg
from dicomnode.results.sr import mvo_comments
from dicomnode.summary_view import print_summary_table
from synthetic import make_study

MVO_ROW = "  of which MVO"


def validate(results) -> None:
    """The synthetic LGE result as from a model card whose MVO reaches the goals (validated)."""
    results[0].summary["mvo_validation"].update(validated=True, presence_stated=True)
    results[0].segmentations[0].unvalidated_labels = ()


def references(results) -> dict:
    return {quantity: reference for quantity, _, reference in key_number_table(results[:1], (2.0, "mosteller"), "M")}


def test_the_pdf_says_beside_the_mvo_volume_that_it_is_not_validated_and_how_often_it_was_wrong():
    """Page 1: the short caveat beside the MVO volume and in the overlay legend; page 2 (methods): in full."""
    from dicomnode.results.report import _methods_lines

    _, results, _ = make_study()
    note = results[0].summary["mvo_validation"]["note"]
    assert note == mvo_validation_text(results[0].summary["mvo_validation"])
    assert note.startswith("not validated: 'MVO present' from this volume agreed with the expert in 69 % of EMIDEC "
                           "cases (69-78 % with any volume floor 0-1.5 mL)")
    assert "29 of 60 hearts without MVO were given MVO" in note and "MyoPS 2020" in note
    assert references(results)[MVO_ROW] == "not validated (page 2)"
    assert f"MVO (purple): {note}. The MVO volume is given as segmented; whether MVO is present or absent is not " \
           "stated." in _methods_lines(results[:1])
    assert "purple MVO (not validated)" in overlay_legend(results[:1])
    validate(results)
    assert references(results)[MVO_ROW] == "" and "purple MVO," in overlay_legend(results[:1])
    assert not [line for line in _methods_lines(results[:1]) if line.startswith("MVO")]


def test_the_sr_comments_say_the_mvo_is_not_validated_beside_every_lge_number():
    """The comment itself; that it is in every LGE group with a number: test_results_sr.py (warned_report)."""
    _, results, _ = make_study()
    assert mvo_comments(results[0]) == [f"LGE MVO {results[0].summary['mvo_validation']['note']}"]
    assert mvo_comments(results[1]) == []  # the cine
    validate(results)
    assert mvo_comments(results[0]) == []
    withheld = make_study()[1][0]
    withheld.summary.update(determined=False, reason="not determined: the heart was not found", mvo_volume_ml=None,
                            mvo_validation=None)
    assert mvo_comments(withheld) == []  # no MVO number to qualify


def test_the_seg_names_the_mvo_segment_not_validated():
    study, results, context = make_study()
    segmentation = results[0].segmentations[0]
    sources = [i.dataset for i in segmentation.series.instances]
    seg = build_seg(segmentation, sources, context, 9001)
    described = {str(s.SegmentLabel): str(s.SegmentDescription) for s in seg.SegmentSequence}
    assert described["MVO (not validated)"] == "Microvascular obstruction (label 4), not validated"
    assert described["Scar (LGE) without MVO"] == "LGE scar without MVO (label 3)"
    validate(results)
    seg = build_seg(segmentation, sources, context, 9001)
    assert {str(s.SegmentLabel): str(s.SegmentDescription) for s in seg.SegmentSequence}["MVO"] == \
        "Microvascular obstruction (label 4)"


def test_the_console_says_beside_the_mvo_volume_that_it_is_not_validated(capsys):
    _, results, _ = make_study()
    lge = results[0].summary
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "lge": lge}]})
    out = capsys.readouterr().out
    assert f"MVO {lge['mvo_volume_ml']:.1f} mL (not validated: presence right in 69-78 % of cases), myocardium" in out
    validate(results)
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "lge": lge}]})
    assert f"MVO {lge['mvo_volume_ml']:.1f} mL, myocardium" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext not installed")
def test_the_pdf_shows_the_mvo_caveat_and_the_legend_says_not_validated(tmp_path):
    study, results, context = make_study()
    pdf, _ = render_report(study.series[0].instances[0].dataset, results, context, bsa=(2.0, "mosteller"))
    (tmp_path / "r.pdf").write_bytes(pdf)
    text = " ".join(subprocess.run(["pdftotext", str(tmp_path / "r.pdf"), "-"], capture_output=True,
                                   text=True).stdout.split())
    assert "of which MVO" in text and "not validated (page 2)" in text
    assert "MVO (purple): not validated: 'MVO present' from this volume agreed with the expert in 69 % of EMIDEC " \
           "cases" in text
    assert "purple MVO (not validated)" in text
