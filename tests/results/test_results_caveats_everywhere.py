"""break45a findings 2, 3, 4, 8 and 12: a caveat or reason a user sees is the same in summary.json, the SR (its NUMs,
which OHIF shows, and its comments), the PDF and the console: the threshold methods' "not validated (r = ...)"
caveat and their names ("5-SD", "FWHM"); "not validated" never said as "not applicable"; the large-burden rule
citing Chan 2014 only where it is Chan's; the LGE SR carrying the reasons the PDF gives (AHA segments not assigned,
series left aside, threshold methods not reported); an assumed geometry stated on every output."""
from __future__ import annotations

import zipfile

import pydicom
import pytest

from dicomnode.analysis.lge import ASSUMED_GEOMETRY_NOTE, assumed_geometry_notes
from dicomnode.demo_data import demo_studies
from dicomnode.results import codes
from dicomnode.results.report import _methods_lines, key_number_table
from dicomnode.results.sr import build_sr
from dicomnode.summary_view import print_summary_table
from synthetic import make_study, write
from validators import assert_all_valid
from test_results_sr import concept, group_named, groups, identifier_of, nums, report_comments, segs_of

CAVEAT_NSD = ("not validated on the automatic myocardium: agreement with expert %LGE r = 0.48 in the model's "
              "cross-validation on real 12-bit scans (needs r >= 0.8)")
CAVEAT_FWHM = CAVEAT_NSD.replace("0.48", "0.19")
REASON_NSD = (CAVEAT_NSD.replace("0.48", "0.34")
              + "; analysis.lge.threshold_methods = 'always' computes it for research")
REASON_FWHM = REASON_NSD.replace("0.34", "0.12")
AHA_REASON = "which RV insertion point is anterior cannot be told: the stack normal is nearly orthogonal"
LEFT_ASIDE = "series 20-34 'LGE_MAG_SAX' (magnitude of the same slices) not measured: PSIR preferred"


def _report(mutate):
    study, results, context = make_study()
    mutate(results[0])
    header = study.series[0].instances[0].dataset
    return results, build_sr(header, results[:1], segs_of(results, context), context, 9100)


def _always(lge):
    """threshold_methods = 'always': both methods computed, neither validated by the card."""
    lge.summary["nsd"] = {"n": 5, "lge_percent": 20.63, "applicable": True, "validated": False, "caveat": CAVEAT_NSD}
    lge.summary["fwhm"] = {"lge_percent": 8.53, "applicable": True, "validated": False, "caveat": CAVEAT_FWHM}


def _withheld(lge):
    """threshold_methods = 'validated' (the default) with a card validating neither; AHA not assigned; a series
    left aside."""
    lge.summary["nsd"] = {"n": 5, "lge_percent": None, "applicable": False, "reason": REASON_NSD}
    lge.summary["fwhm"] = {"lge_percent": None, "applicable": False, "reason": REASON_FWHM}
    lge.summary["aha_segments"] = {"applicable": False, "reason": AHA_REASON}
    lge.summary["series_left_aside"] = [LEFT_ASIDE]


@pytest.fixture(scope="module")
def always_report():
    return _report(_always)


@pytest.fixture(scope="module")
def withheld_report():
    return _report(_withheld)


def test_an_unvalidated_method_carries_its_r_beside_its_value_in_the_sr(always_report):
    """Finding 2: OHIF shows NUMs only; the r the PDF gives beside the value is the NUM right before it."""
    results, sr = always_report
    scar = group_named(sr, "LGE scar incl. MVO")
    found = [(c[0], v) for c, v, u, _ in nums(scar)]
    nsd_at = found.index(("LGEPCT5SD", 20.63))
    fwhm_at = found.index(("LGEPCTFWHM", 8.53))
    assert found[nsd_at - 1] == (codes.NSD_NOT_VALIDATED.value, 0.48)
    assert found[fwhm_at - 1] == (codes.FWHM_NOT_VALIDATED.value, 0.19)
    # the method named as the PDF names it
    nsd_item = next(i for c, v, u, i in nums(scar) if c[0] == "LGEPCT5SD")
    names = [c.TextValue for c in nsd_item.ContentSequence if concept(c) == ("111001", "DCM")]
    assert names == ["dicomnode 5-SD threshold"]
    said = report_comments(sr)
    assert f"LGE %LGE by 5-SD threshold: {CAVEAT_NSD}" in said
    assert f"LGE %LGE by FWHM threshold: {CAVEAT_FWHM}" in said


def test_a_validated_method_has_no_caveat_num():
    _, sr = _report(lambda lge: None)
    scar = group_named(sr, "LGE scar incl. MVO")
    assert not {c[0] for c, *_ in nums(scar)} & {codes.NSD_NOT_VALIDATED.value, codes.FWHM_NOT_VALIDATED.value}


def test_a_withheld_method_is_not_validated_not_not_applicable_and_the_sr_says_why(withheld_report):
    """Findings 3 and 8: the coded answer is "Not reported: not validated", and the reasons the PDF gives (methods,
    AHA segments, series left aside) are SR comments, worded as on the PDF."""
    results, sr = withheld_report
    scar = group_named(sr, "LGE scar incl. MVO")
    evaluations = {concept(i): (i.ConceptCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodingSchemeDesignator)
                   for i in scar.ContentSequence if i.ValueType == "CODE"}
    withheld = (codes.NOT_VALIDATED_WITHHELD.value, "99DICOMNODE")
    assert evaluations[("NSD", "99DICOMNODE")] == withheld and evaluations[("FWHM", "99DICOMNODE")] == withheld
    said = report_comments(sr)
    pdf = _methods_lines(results[:1])
    for line in (f"Threshold method 5-SD not reported: {REASON_NSD}.",
                 f"Threshold method FWHM not reported: {REASON_FWHM}."):
        assert line in pdf
        assert f"LGE t{line[1:]}" in said
    assert f"LGE AHA segments not assigned: {AHA_REASON}" in said
    assert f"LGE left aside: {LEFT_ASIDE}" in said


def test_the_console_names_the_method_and_its_caveat(always_report, withheld_report, capsys):
    """Findings 2 and 3 on the console: "5-SD", the r, and "not validated" where the PDF says so."""
    for (results, _), expected in (
            (always_report, "(5-SD 20.6 % not validated (r = 0.48), FWHM 8.5 % not validated (r = 0.19))"),
            (withheld_report, "(threshold methods 5-SD, FWHM not reported - not validated (r = 0.34 / 0.12))")):
        print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [],
                                          "lge": results[0].summary}]})
        out = capsys.readouterr().out
        assert expected in out and "not applicable" not in out
    assert f"LGE AHA segments not assigned: {AHA_REASON}" in out and f"LGE left aside: {LEFT_ASIDE}" in out
    one = dict(withheld_report[0][0].summary, fwhm={"lge_percent": 4.0})
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "lge": one}]})
    assert "(5-SD not reported - not validated (r = 0.34), FWHM 4.0 %)" in capsys.readouterr().out


def _burden_report(cutoff, comparator):
    def mutate(lge):
        lge.measurements.update(large_burden_cutoff_percent=cutoff, large_burden_comparator=comparator)
        lge.summary["large_scar_burden"] = lge.summary["lge_percent"] > cutoff
    return _report(mutate)


def test_a_site_configured_burden_rule_is_not_attributed_to_chan_2014():
    """Finding 4: a 20 % / ">" rule is a site's, on the SR (concept, parameter, tracking identifier) and the PDF."""
    results, sr = _burden_report(20.0, ">")
    scar = next(g for g in groups(sr) if identifier_of(g).startswith("LGE scar incl. MVO;"))
    assert "(site rule >20 %)" in identifier_of(scar)
    cutoffs = [i for c, v, u, i in nums(scar) if c[0].startswith("LGEBURDEN")]
    assert len(cutoffs) == 1 and cutoffs[0].ConceptNameCodeSequence[0].CodeValue.startswith("LGEBURDENSITE")
    assert "HCM" not in cutoffs[0].ConceptNameCodeSequence[0].CodeMeaning
    parameters = [c.TextValue for c in cutoffs[0].ContentSequence if concept(c) == ("111002", "DCM")]
    assert parameters == ["large burden if %LGE > 20 % (site-configured cut-off; not validated for infarct scar)"]
    rows = key_number_table(results[:1], None)
    reference = next(r for q, v, r in rows if q.startswith("%LGE (DL"))
    assert "large burden if > 20 % (site-configured cut-off" in reference and "Chan" not in reference


def test_chan_2014_is_cited_where_the_rule_is_chans():
    results, sr = _burden_report(15.0, ">=")
    scar = next(g for g in groups(sr) if identifier_of(g).startswith("LGE scar incl. MVO;"))
    assert "(HCM rule >=15 %)" in identifier_of(scar)
    reference = next(r for q, v, r in key_number_table(results[:1], None) if q.startswith("%LGE (DL"))
    assert "large burden if ≥ 15 % (HCM risk cut-off, Chan 2014" in reference


def _dataset(**attributes):
    ds = pydicom.Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


class _Series:
    def __init__(self, ds):
        self.instances = [type("Instance", (), {"dataset": ds})()]


def test_an_assumed_geometry_the_header_states_becomes_a_stack_warning():
    """Finding 12: the demo's EMIDEC study says in its own header that its spacing is assumed; that note, printed
    only by the demo's console, is a stack warning (summary, PDF, SR comment, console)."""
    stated = _dataset(DerivationDescription="EMIDEC Case_P009 8-bit PNG slices; ASSUMED pixel spacing 1.2 x 1.6 mm "
                                            "(rows x columns) and slice spacing 10.0 mm")
    assert assumed_geometry_notes(_Series(stated)) == [ASSUMED_GEOMETRY_NOTE.format(where="DerivationDescription")]
    assert "mL and g are nominal" in ASSUMED_GEOMETRY_NOTE
    assert assumed_geometry_notes(_Series(_dataset(ImageComments="TI 100"))) == []
    assert assumed_geometry_notes(_Series(_dataset())) == []
    assert assumed_geometry_notes(object()) == []
    # the bundled demo study says so in its files
    archive = next(p for p in demo_studies() if "emidec" in p.name)
    with zipfile.ZipFile(archive) as opened:
        name = next(n for n in opened.namelist() if n.endswith(".dcm"))
        with opened.open(name) as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
    assert assumed_geometry_notes(_Series(ds))


def test_a_stack_warning_of_an_assumed_geometry_reaches_the_pdf_and_the_sr():
    note = ASSUMED_GEOMETRY_NOTE.format(where="DerivationDescription")
    results, sr = _report(lambda lge: lge.summary.update(stack_warnings=[note]))
    assert any(note in value for _, value, _ in key_number_table(results[:1], None))
    assert f"LGE input stack: {note}" in report_comments(sr)


@pytest.mark.peers
def test_the_reports_with_the_new_codes_pass_dciodvfy_and_pixelmed(always_report, withheld_report, tmp_path):
    assert_all_valid((write(sr, tmp_path / f"sr{n}.dcm"), "DicomSRValidator")
                     for n, (_, sr) in enumerate((always_report, withheld_report)))


@pytest.mark.parametrize("n", [2, 3, 5, 6])
def test_each_n_of_the_n_sd_method_has_a_concept_of_its_own(n):
    """break45a #2 / break46: every n-SD %LGE was one concept "LGE extent by n-SD threshold", so a viewer listing
    concept names (OHIF) did not say which n, and a registry aggregating by code mixed a 2-SD %LGE with a 5-SD one
    (about half as large). Each n the configuration allows now has its own private code and meaning."""
    def always_n(lge):
        _always(lge)
        lge.summary["nsd"]["n"] = n
    _, sr = _report(always_n)
    scar = group_named(sr, "LGE scar incl. MVO")
    (item,) = [i for c, v, u, i in nums(scar) if c[0].startswith("LGEPCT") and c[0].endswith("SD")]
    name = item.ConceptNameCodeSequence[0]
    assert (name.CodeValue, name.CodingSchemeDesignator) == (f"LGEPCT{n}SD", "99DICOMNODE")
    assert name.CodeMeaning == f"LGE extent by {n}-SD threshold, % of LV myocardial volume"
    assert codes.lge_percent_nsd(n) in codes.PRIVATE_CODES and len(name.CodeMeaning) <= 64
    assert set(codes.LGE_PERCENT_NSD_BY_N) == {2, 3, 5, 6}


def test_the_reader_gets_a_clinical_sentence_where_aha_segments_are_not_assigned(capsys):
    """break46a #1: the PDF and SR showed the reader "stack normal [-0.672, 0.666, 0.323] ... cosine -0.18" where the
    AHA segments were not assigned. They now show the block's reader_reason; the technical reason stays in
    summary.json (`reason`) and the console."""
    from types import SimpleNamespace

    import numpy as np

    from dicomnode.analysis.aha import READER_ORIENTATION, aha_summary_for_volume
    from dicomnode.results.report import _bullseye_values

    from tests.analysis.test_aha import stack

    # a stack normal orthogonal to every LV long axis the geometry knows (levocardia and apex anterior-inferior):
    # the basal end cannot be told
    labels = stack(from_apex=True)
    normal = np.array([0.0, 1.0, -1.0]) / np.sqrt(2.0)
    volume = SimpleNamespace(orientation=[1.0, 0.0, 0.0, *(np.array([0.0, -1.0, -1.0]) / np.sqrt(2.0))],
                             positions=np.array([8.0 * k * normal for k in range(labels.shape[0])]),
                             pixel_spacing=(1.5, 1.5))
    block = aha_summary_for_volume(labels, volume)
    assert block["applicable"] is False and "orthogonal" in block["reason"]
    assert block["reader_reason"] == READER_ORIENTATION

    def technical(lge):
        lge.summary["aha_segments"] = {"applicable": False, "model": "AHA", "reason": (
            "AHA segments not computed: stack normal [-0.672, 0.666, 0.323] is nearly orthogonal (cosine -0.18)"),
            "reader_reason": READER_ORIENTATION}

    results, sr = _report(technical)
    said = report_comments(sr)
    assert f"LGE AHA segments not assigned: {READER_ORIENTATION}" in said
    assert not any("cosine" in comment for comment in said)
    title = _bullseye_values(results)[2]
    assert title == f"AHA segments not assigned: {READER_ORIENTATION}" and "cosine" not in title
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [],
                                      "lge": results[0].summary}]})
    assert "cosine -0.18" in capsys.readouterr().out  # the technical detail: console, summary.json
