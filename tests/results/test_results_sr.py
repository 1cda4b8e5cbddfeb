"""TID 1500 SR and the suggestions SR: content (codes, units, references, supersession) and validity."""
from __future__ import annotations

import re

import highdicom as hd
import pytest
from pydicom.dataset import Dataset

from dicomnode.results import codes
import numpy as np

from dicomnode.results.seg import build_seg, seg_parts
from dicomnode.analysis.cine_metrics import body_surface_area_m2 as body_surface_area
from dicomnode.results.sr import build_sr, build_suggestions_sr, node_device_uid
from synthetic import make_study, one_series_per_slice, write
from validators import assert_valid, forget_started, validate_later


#: the concepts of the %LGE of the three methods: DL, n-SD, FWHM
LGE_PERCENT_CODES = (codes.LGE_PERCENT.value, codes.LGE_PERCENT_NSD.value, codes.LGE_PERCENT_FWHM.value,
                     *(code.value for code in codes.LGE_PERCENT_NSD_BY_N.values()))


def walk(items, depth=0):
    """Yield (depth, item) over an SR content tree."""
    for item in items:
        yield depth, item
        yield from walk(item.get("ContentSequence", []), depth + 1)


def concept(item) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodeValue, code.CodingSchemeDesignator


def groups(sr: Dataset) -> list[Dataset]:
    measurements = next(i for i in sr.ContentSequence if concept(i) == ("126010", "DCM"))
    return list(measurements.ContentSequence)


def base_name(identifier: str) -> str:
    """A tracking identifier without the text it carries for readers of a viewer: the large-burden verdict of the
    scar group ("; large burden YES (HCM rule >=15 %)"), the cine phase (" (phase 1 of 5)") and the lower-bound
    qualifier of a partial stack (" (lower bound: apex cut off)")."""
    identifier = re.sub(r"; large burden .*?(?= \(outline\)| \(inner contour\)| \(another part\)|$)", "", identifier)
    identifier = re.sub(r" \((lower bound|partial stack): [^()]*\)", "", identifier)  # a stack missing part of the LV
    return re.sub(r" \(phase \d+ of \d+\)", "", identifier)


def group_named(sr: Dataset, name: str) -> Dataset:
    """The group whose tracking identifier is `name` (compared without base_name's additions)."""
    for group in groups(sr):
        for item in group.ContentSequence:
            if concept(item) == ("112039", "DCM") and base_name(item.TextValue) == name:
                return group
    raise AssertionError(f"no group {name!r}")


def nums(group: Dataset) -> list[tuple[tuple[str, str], float, str, Dataset]]:
    found = []
    for item in group.ContentSequence:
        if item.ValueType == "NUM":
            value = item.MeasuredValueSequence[0]
            found.append((concept(item), float(value.NumericValue),
                          value.MeasurementUnitsCodeSequence[0].CodeValue, item))
    return found


def modifier(item: Dataset, code: tuple[str, str]):
    for child in item.get("ContentSequence", []):
        if concept(child) == code:
            return child
    return None


def segs_of(results, context) -> dict:
    """The SEG parts of the LGE and cine results, as build_sr takes them."""
    segs = {}
    for result in results[:2]:
        segmentation = result.segmentations[0]
        sources = [i.dataset for i in segmentation.series.instances]
        segs[segmentation.key] = [(part, build_seg(segmentation, sources, context, 9001 + n, part))
                                  for n, part in enumerate(seg_parts(segmentation))]
    return segs


@pytest.fixture(scope="module")
def reports():
    study, results, context = make_study()
    segs = segs_of(results, context)
    header = study.series[0].instances[0].dataset
    earlier = {"sop_instance_uid": "1.2.826.0.1.3680043.8.498.1", "series_instance_uid": "1.2.826.0.1.3680043.8.498.2",
               "study_instance_uid": study.study_instance_uid}
    sr = build_sr(header, results, segs, context, 9100, supersedes=[earlier])
    suggestions = build_suggestions_sr(header, results[2], context, 9101)
    return study, results, context, segs, sr, suggestions, earlier


@pytest.fixture(scope="module")
def validated(request, tmp_path_factory):
    """The module's SRs written once and handed to dciodvfy and pixelmed together (validators.validate_later): their
    JVMs run side by side, and beside the module's other tests, instead of one after the other; name -> path."""
    folder = tmp_path_factory.mktemp("validated")
    picks = {"reports": -3, "not_applicable_report": -1, "no_scar_report": -1, "per_slice_report": -1,
             "warned_report": -1}
    paths = {name: validate_later(write(request.getfixturevalue(name)[index], folder / f"{name}.dcm"),
                                  "DicomSRValidator") for name, index in picks.items()}
    yield paths
    forget_started(paths.values())


def assert_valid_sr(validated, name: str, sr, tmp_path) -> list[str]:
    """assert_valid on `sr`: the findings `validated` started for fixture `name` when `sr` still encodes to the same
    bytes, else a validation of its own."""
    path = write(sr, tmp_path / "sr.dcm")
    return assert_valid(validated[name] if validated[name].read_bytes() == path.read_bytes() else path,
                        "DicomSRValidator")


def test_report_header_procedure_and_supersession(reports):
    study, _, context, _, sr, _, earlier = reports
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.StudyInstanceUID == study.study_instance_uid
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    procedure = next(i for i in sr.ContentSequence if concept(i) == ("121058", "DCM"))
    # TID 1500 row 4 takes a member of CID 100; the cardiac procedure is the study-level procedure code
    assert (procedure.ConceptCodeSequence[0].CodeValue, procedure.ConceptCodeSequence[0].CodingSchemeDesignator) == \
        ("25056-3", "LN")
    assert sr.ProcedureCodeSequence[0].CodeValue == "241620005"
    predecessor = sr.PredecessorDocumentsSequence[0]
    assert predecessor.StudyInstanceUID == earlier["study_instance_uid"]
    assert predecessor.ReferencedSeriesSequence[0].SeriesInstanceUID == earlier["series_instance_uid"]
    assert predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        earlier["sop_instance_uid"]
    assert sr.ContentDate == context.started_at.strftime("%Y%m%d")
    air = [i for i in sr.ContributingEquipmentSequence if i.PurposeOfReferenceCodeSequence[0].CodeValue == "Newcode1"]
    assert {i.ManufacturerModelName for i in air} == {"dicomnode-lge-unet", "dicomnode-cine-unet"}


def tracking_uid(group: Dataset) -> str:
    return next(i for i in group.ContentSequence if concept(i) == ("112040", "DCM")).UID


def test_lge_union_groups_carry_the_summary_numbers_on_their_outlines(reports):
    _, results, _, _, sr, _, _ = reports
    lge_result = results[0]
    summary = lge_result.summary
    segmentation = lge_result.segmentations[0]
    scar = group_named(sr, "LGE scar incl. MVO")
    assert not [i for i in scar.ContentSequence if concept(i) == ("121191", "DCM")]  # a union has no one segment
    regions = [i for i in scar.ContentSequence if i.ValueType == "SCOORD"]
    enhanced_slices = {k for k in range(segmentation.labelmap.shape[1])
                       if np.isin(segmentation.labelmap[0, k], [3, 4]).any()}
    selected = {r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions}
    assert selected == {segmentation.volume.frames[0][k].sop_instance_uid for k in enhanced_slices}
    values = nums(scar)
    # scar_volume_ml is the whole enhanced volume INCLUDING MVO (design.md): checked against the label map itself
    volume = [v for c, v, u, _ in values if c == ("118565006", "SCT")]
    enhanced_ml = np.isin(segmentation.labelmap, [3, 4]).sum() * segmentation.volume.voxel_volume_ml
    assert volume == [pytest.approx(summary["scar_volume_ml"])]
    assert volume[0] == pytest.approx(enhanced_ml, abs=0.01)
    assert summary["mvo_volume_ml"] == pytest.approx((segmentation.labelmap == 4).sum()
                                                     * segmentation.volume.voxel_volume_ml, abs=0.01)
    assert all(u == "mL" for c, _, u, _ in values if c == ("118565006", "SCT"))
    percent = {modifier(i, ("370129005", "SCT")).ConceptCodeSequence[0].CodeValue: (c[0], v)
               for c, v, u, i in values if c[0] in LGE_PERCENT_CODES}
    # each method's %LGE under a concept of its own (OHIF shows concept names only), the method as modifier too
    assert percent == {"DLSEG": ("LGEPCT", pytest.approx(summary["lge_percent"])),
                       "NSD": (f"LGEPCT{summary['nsd']['n']}SD", pytest.approx(summary["nsd"]["lge_percent"])),
                       "FWHM": ("LGEPCTFWHM", pytest.approx(summary["fwhm"]["lge_percent"]))}
    assert summary["lge_percent"] == pytest.approx(100 * summary["scar_volume_ml"] / summary["myocardium_volume_ml"],
                                                   abs=0.05)
    nsd_item = next(i for c, v, u, i in values if modifier(i, ("370129005", "SCT")).ConceptCodeSequence[0].CodeValue
                    == "NSD")
    parameters = [c.TextValue for c in nsd_item.ContentSequence if concept(c) == ("111002", "DCM")]
    assert parameters == ["n=5"]
    burden = next(i for i in scar.ContentSequence if concept(i) == (codes.LARGE_LGE_BURDEN.value, "99DICOMNODE"))
    assert burden.ConceptCodeSequence[0].CodeValue == (codes.YES if summary["large_scar_burden"] else codes.NO).value
    # the rule behind Yes/No is in the SR too: its cut-off as a number under a concept saying the verdict, its
    # comparator as the algorithm parameter
    cutoff_code = codes.LARGE_LGE_BURDEN_CUTOFF_MET if summary["large_scar_burden"] else \
        codes.LARGE_LGE_BURDEN_CUTOFF_NOT_MET
    (cutoff_item,) = [i for c, v, u, i in values if c == (cutoff_code.value, "99DICOMNODE")]
    assert float(cutoff_item.MeasuredValueSequence[0].NumericValue) == 15.0
    assert [c.TextValue for c in cutoff_item.ContentSequence if concept(c) == ("111002", "DCM")] == [
        "large burden if %LGE >= 15 % (HCM risk cut-off, Chan 2014; not validated for infarct scar)"]
    myocardium = nums(group_named(sr, "LGE LV myocardium, whole"))
    # the report supersedes an earlier one: its first group with numbers begins with that notice (break48b #8)
    assert myocardium[0][0] == ("SUPERSEDESN", "99DICOMNODE") and myocardium[0][1] == 1.0
    assert {c: (v, u) for c, v, u, _ in myocardium[1:]} == {
        ("118565006", "SCT"): (pytest.approx(summary["myocardium_volume_ml"]), "mL"),
        ("18087-7", "LN"): (pytest.approx(summary["lv_mass_g"]), "g")}


def test_lge_exclusive_groups_reference_their_segments_and_add_up(reports):
    _, results, _, segs, sr, _, _ = reports
    lge_result = results[0]
    summary = lge_result.summary
    (_, seg), = segs[lge_result.segmentations[0].key]
    volumes = {}
    for name, label in (("LGE non-enhanced myocardium", "LV myocardium, non-enhanced"),
                        ("LGE scar without MVO", "Scar (LGE) without MVO"),
                        ("LGE microvascular obstruction (not validated)", "MVO (not validated)")):
        group = group_named(sr, name)
        reference = next(i for i in group.ContentSequence if concept(i) == ("121191", "DCM"))
        assert reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
        number = reference.ReferencedSOPSequence[0].ReferencedSegmentNumber
        assert seg.SegmentSequence[number - 1].SegmentLabel == label
        assert tracking_uid(group) == seg.SegmentSequence[number - 1].TrackingUID
        # the Volume NUM (a caveat NUM may come first: the MVO not validated, test_results_ohif_caveats)
        volumes[name] = next(v for c, v, *_ in nums(group) if c == (codes.VOLUME.value, "SCT"))
    assert volumes["LGE microvascular obstruction (not validated)"] == pytest.approx(summary["mvo_volume_ml"])
    assert volumes["LGE scar without MVO"] + volumes["LGE microvascular obstruction (not validated)"] == \
        pytest.approx(summary["scar_volume_ml"], abs=0.02)
    assert sum(volumes.values()) == pytest.approx(summary["myocardium_volume_ml"], abs=0.03)


def test_every_num_is_rounded_as_summary_json_rounds_its_kind(reports):
    """Finding (break2 #8): the SR wrote whole myocardium "128.76 cm3" but non-enhanced myocardium "115.0035 cm3"
    and scar without MVO "13.5159 cm3". Every NUM of every measurement group, derived quantities included, has the
    decimals summary.json gives that kind of quantity: 3 for the body surface area, 2 for everything else."""
    *_, sr, _, _ = reports
    checked = []
    for group in groups(sr):
        for code, value, unit, item in nums(group):
            decimals = 3 if unit == "m2" else 2
            assert value == round(value, decimals), (code, value, unit)
            checked.append(code)
    derived = [nums(group_named(sr, name))[0][1] for name in ("LGE non-enhanced myocardium", "LGE scar without MVO")]
    assert len(checked) > 10 and all(v == round(v, 2) for v in derived)


def test_every_measurement_has_image_coordinates_under_its_tracking_uid(reports):
    """OHIF v3 merges measurement groups by tracking UID and lists a measurement only with a SCOORD."""
    *_, sr, _, _ = reports
    with_numbers = {tracking_uid(g) for g in groups(sr) if any(i.ValueType == "NUM" for i in g.ContentSequence)}
    with_regions = {}
    for group in groups(sr):
        for item in group.ContentSequence:
            if item.ValueType == "SCOORD":
                assert item.GraphicType == "POLYLINE"
                points = np.asarray(item.GraphicData, dtype=float).reshape(-1, 2)
                assert np.allclose(points[0], points[-1]) and len(points) >= 4
                image = item.ContentSequence[0]
                assert image.RelationshipType == "SELECTED FROM" and image.ReferencedSOPSequence
                with_regions.setdefault(tracking_uid(group), image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    assert with_numbers <= set(with_regions)
    evidence = {i.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}
    assert set(with_regions.values()) <= evidence


def test_threshold_methods_as_numbers_or_not_applicable(reports):
    from dicomnode.results.sr import _method_block

    assert _method_block(12.5) == {"lge_percent": 12.5}
    assert _method_block({"applicable": False, "reason": "magnitude image"}) == {}
    assert _method_block({"lge_percent": None, "error": "no remote"}) == {"lge_percent": None, "error": "no remote"}
    assert _method_block(None) == {}


def finding(group: Dataset):
    item = next((i for i in group.ContentSequence if concept(i) == ("121071", "DCM")), None)
    return None if item is None else (item.ConceptCodeSequence[0].CodeValue, item.ConceptCodeSequence[0].CodingSchemeDesignator)


def identifier_of(group: Dataset) -> str:
    return next(i for i in group.ContentSequence if concept(i) == ("112039", "DCM")).TextValue


def name_of(group: Dataset) -> str:
    return base_name(identifier_of(group))


def of_cine(name: str) -> bool:
    """Whether a group (by base name) belongs to the cine pipeline."""
    return name.startswith(("LV ", "RV ")) or "(ED wall thickness)" in name


def outlines_of(group: Dataset) -> set[tuple[str, tuple[float, ...]]]:
    """(source SOP UID, polyline) of every SCOORD of a group."""
    return {(i.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID, tuple(i.GraphicData))
            for i in group.ContentSequence if i.ValueType == "SCOORD"}


def lge_only_report(mutate=None, per_slice_series=False, mvo_validated=False):
    """An LGE-only report of the synthetic study, its label map changed by `mutate` (summary numbers recomputed);
    with `mvo_validated`, as from a model card that validates its MVO (summary mvo_validation)."""
    study, results, context = make_study()
    lge = results[0]
    segmentation = lge.segmentations[0]
    if mvo_validated:
        lge.summary["mvo_validation"].update(validated=True, presence_stated=True)
        segmentation.unvalidated_labels = ()
    if mutate is not None:
        segmentation.labelmap = mutate(segmentation.labelmap)
        voxel = segmentation.volume.voxel_volume_ml
        lge.summary["scar_volume_ml"] = round(float(np.isin(segmentation.labelmap, [3, 4]).sum() * voxel), 2)
        lge.summary["mvo_volume_ml"] = round(float((segmentation.labelmap == 4).sum() * voxel), 2)
        lge.summary["lge_percent"] = round(100 * lge.summary["scar_volume_ml"] / lge.summary["myocardium_volume_ml"], 2)
        lge.summary["large_scar_burden"] = False
    by_uid = one_series_per_slice(segmentation) if per_slice_series else {}
    sources = [by_uid.get(i.sop_instance_uid, i.dataset) for i in segmentation.series.instances]
    segs = {segmentation.key: [(part, build_seg(segmentation, sources, context, 9001 + n, part))
                               for n, part in enumerate(seg_parts(segmentation))]}
    return results, segs, build_sr(study.series[0].instances[0].dataset, results[:1], segs, context, 9100)


@pytest.fixture(scope="module")
def no_scar_report():
    """No enhanced voxel at all: scar and MVO 0 mL."""
    return lge_only_report(lambda labels: np.where(np.isin(labels, [3, 4]), 2, labels))


def test_a_finding_that_is_not_there_is_coded_absent_not_drawn_as_the_finding(no_scar_report):
    """F2: with no scar and no MVO, no group draws the LV myocardium as a "Late Contrast Enhancement" or "MVO"
    finding; the 0 volumes stay, measured on the myocardium under concepts that name the missing finding, and the
    finding is coded (272519000, SCT, Absent)."""
    _, _, sr = no_scar_report
    for group in groups(sr):
        assert finding(group) not in {("122664", "DCM"), ("MVO", "99DICOMNODE")}, name_of(group)
    expected = {"LGE scar incl. MVO (none found)": ("LGEVOL", ("122664", "DCM")),
                "LGE scar without MVO (none found)": ("SCARVOL", ("122664", "DCM")),
                # MVO not validated (summary mvo_validation): its absence is no finding either, its 0 cm3 stays,
                # "none segmented" (break45a finding 9: the PDF says presence / absence is not stated)
                "LGE microvascular obstruction (not validated) (none segmented)": ("MVOVOL", None)}
    myocardium = outlines_of(group_named(sr, "LGE LV myocardium, whole"))
    for name, (volume_code, absent) in expected.items():
        group = group_named(sr, name)
        assert finding(group) == ("49848007", "SCT")  # the region is the myocardium searched
        assert {c: (v, u) for c, v, u, _ in nums(group)}[(volume_code, "99DICOMNODE")] == (0.0, "mL")
        assert ("118565006", "SCT") not in {c for c, *_ in nums(group)}  # no "Volume 0" of the myocardium
        evaluations = {concept(i): i.ConceptCodeSequence[0].CodeValue for i in group.ContentSequence
                       if i.ValueType == "CODE" and i.RelationshipType == "CONTAINS"}
        if absent:
            assert evaluations[absent] == "272519000"
        assert ("MVO", "99DICOMNODE") not in evaluations  # the MVO not validated: neither present nor absent
        assert not [i for i in group.ContentSequence if concept(i) == ("121191", "DCM")]
        assert myocardium and outlines_of(group) == myocardium  # the region searched, on every slice
    scar = group_named(sr, "LGE scar incl. MVO (none found)")
    assert [v for c, v, u, i in nums(scar) if c == ("LGEPCT", "99DICOMNODE")
            and modifier(i, ("370129005", "SCT")).ConceptCodeSequence[0].CodeValue == "DLSEG"] == [0.0]
    # AHA groups outline a segment's whole myocardium: never as a scar finding
    aha = [g for g in groups(sr) if name_of(g).startswith("AHA ")]
    assert aha and {finding(g) for g in aha} == {("49848007", "SCT")}


@pytest.mark.parametrize("validated", [False, True])
def test_no_mvo_alone_is_coded_absent_only_where_validated_and_the_scar_keeps_its_segment(validated):
    """'MVO: Absent' is a finding the SR states only where the model card validates the MVO (summary
    mvo_validation.presence_stated); else the 0 cm3 stays under a group named "not validated", with no coded
    absence."""
    results, segs, sr = lge_only_report(lambda labels: np.where(labels == 4, 3, labels), mvo_validated=validated)
    mvo = group_named(sr, "LGE microvascular obstruction"
                      + (" (none found)" if validated else " (not validated) (none segmented)"))
    assert finding(mvo) == ("49848007", "SCT")
    # not validated: its first NUM says so (the agreement figure of the card, test_results_ohif_caveats)
    caveat = {} if validated else {("MVONVAGREE", "99DICOMNODE"): 69.0}
    assert {c: v for c, v, u, _ in nums(mvo)} == {("MVOVOL", "99DICOMNODE"): 0.0, **caveat}
    evaluations = {concept(i): i.ConceptCodeSequence[0].CodeValue for i in mvo.ContentSequence
                   if i.ValueType == "CODE" and i.RelationshipType == "CONTAINS"}
    assert evaluations.get(("MVO", "99DICOMNODE")) == ("272519000" if validated else None)
    scar = group_named(sr, "LGE scar without MVO")
    assert finding(scar) == ("122664", "DCM")
    assert [i for i in scar.ContentSequence if concept(i) == ("121191", "DCM")]
    assert any(i.ValueType == "SCOORD" for i in group_named(sr, "LGE scar without MVO (outline)").ContentSequence)


@pytest.fixture(scope="module")
def per_slice_report():
    """The LGE stack sent as one series per slice (Siemens style): one SEG per slice series."""
    return lge_only_report(per_slice_series=True)


def test_a_stack_wide_volume_never_references_a_one_slice_segment(per_slice_report):
    """F4: TID 1411 row 7 names one segment of one SEG; a region spread over several per-slice SEGs is given by its
    outlines on every slice instead, and a segment is referenced only where its SEG holds the whole region."""
    results, segs, sr = per_slice_report
    segmentation = results[0].segmentations[0]
    parts = segs[segmentation.key]
    assert len(parts) == segmentation.labelmap.shape[1] - 1 or len(parts) == segmentation.labelmap.shape[1]
    by_uid = {seg.SOPInstanceUID: (part, seg) for part, seg in parts}
    labels_of = {"LGE non-enhanced myocardium": [2], "LGE scar without MVO": [3],
                 "LGE microvascular obstruction (not validated)": [4]}
    for name, labels in labels_of.items():
        mask = np.isin(segmentation.labelmap[0], labels)
        slices = {int(k) for k in np.flatnonzero(mask.any(axis=(1, 2)))}
        group = group_named(sr, name)
        references = [i for i in group.ContentSequence if concept(i) == ("121191", "DCM")]
        if len(slices) > 1:
            assert not references, name
            selected = {i.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                        for i in group.ContentSequence if i.ValueType == "SCOORD"}
            assert selected == {segmentation.volume.frames[0][k].sop_instance_uid for k in slices}
            assert {c: v for c, v, u, _ in nums(group)}[("118565006", "SCT")] == pytest.approx(
                mask.sum() * segmentation.volume.voxel_volume_ml, abs=0.01)
        else:
            (reference,) = references
            part, _ = by_uid[reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID]
            assert slices <= set(part.slices)
    for group in groups(sr):  # no referenced segment anywhere covers less than the group's region
        for item in group.ContentSequence:
            if concept(item) == ("121191", "DCM"):
                part, _ = by_uid[item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID]
                assert len(part.slices) == 1 and name_of(group) == "LGE microvascular obstruction (not validated)"


def test_aha_groups_code_the_segments_of_cid_3717(reports):
    _, results, _, _, sr, _, _ = reports
    block = results[0].summary["aha_segments"]
    assert block["applicable"]
    found = {}
    for group in groups(sr):
        site = next((i for i in group.ContentSequence if concept(i) == ("363698007", "SCT")), None)
        if site is not None and site.ConceptCodeSequence[0].CodeValue in {c.value for c in codes.AHA_SEGMENTS.values()}:
            name = next(i for i in group.ContentSequence if concept(i) == ("112039", "DCM")).TextValue
            found[name] = {c[0]: v for c, v, u, _ in nums(group)}
    lge = {int(n.split()[1]): v for n, v in found.items() if n.endswith("(LGE)")}
    for values in block["segments"]:
        if values["myocardium_voxels"]:
            shown = lge[values["segment"]]  # a 0 too under the quantity's own concept (machine readers find it)
            assert shown["AHASCAR"] == pytest.approx(values["scar_extent_percent"])
            assert shown["TMURMAX"] == pytest.approx(values["transmurality_max_percent"])
    walls = {int(n.split()[1]): v["WALLTHK"] for n, v in found.items() if n.endswith("(ED wall thickness)")}
    cine_block = results[1].summary["aha_segments"]
    assert walls == {s["segment"]: pytest.approx(s["wall_thickness_mm"]) for s in cine_block["segments"]
                     if s.get("wall_thickness_mm") is not None}
    assert codes.AHA_SEGMENTS[2] == codes.Code("396482007", "SCT", "left ventricle basal anteroseptal segment")


def test_cine_groups_loinc_codes_phases_and_indexing(reports):
    study, results, _, _, sr, _, _ = reports
    summary = results[1].summary
    header = study.series[0].instances[0].dataset
    bsa = body_surface_area(float(header.PatientSize), float(header.PatientWeight), "mosteller")
    ed = group_named(sr, "LV blood pool ED")
    values = {c: (v, u) for c, v, u, _ in nums(ed)}
    assert values[("8821-1", "LN")] == (pytest.approx(summary["lv_edv_ml"]), "mL")
    assert values[("LVEDVI", "99DICOMNODE")] == (pytest.approx(summary["lv_edv_ml"] / bsa, rel=1e-3), "mL/m2")
    # 1-based like the PDF and the SEG ("phase 1"), under a concept that says so; summary.json stays 0-based
    assert values[("PHASENUM", "99DICOMNODE")][0] == summary["ed_phase"] + 1
    (number_item,) = [i for c, v, u, i in nums(ed) if c == ("PHASENUM", "99DICOMNODE")]
    assert number_item.ConceptNameCodeSequence[0].CodeMeaning.endswith("(1-based)")
    assert ("PHASEIDX", "99DICOMNODE") not in values
    es_number = {c: v for c, v, u, _ in nums(group_named(sr, "LV blood pool ES"))}[("PHASENUM", "99DICOMNODE")]
    assert es_number == summary["es_phase"] + 1
    phase = next(i for i in ed.ContentSequence if concept(i) == ("246092007", "SCT"))
    assert phase.ConceptCodeSequence[0].CodeValue == codes.END_DIASTOLE.value
    es = {c: v for c, v, u, _ in nums(group_named(sr, "RV blood pool ES"))}
    assert es[("8824-5", "LN")] == pytest.approx(summary["rv_esv_ml"])
    lv = {c: (v, u) for c, v, u, _ in nums(group_named(sr, "LV function (ED and ES)"))}
    assert lv[("8811-2", "LN")] == (pytest.approx(summary["lv_ef_percent"]), "%")
    assert lv[("90096001", "SCT")] == (pytest.approx(summary["lv_sv_ml"]), "mL")
    assert lv[("8277-6", "LN")] == (pytest.approx(bsa, rel=1e-3), "m2")
    bsa_item = next(i for c, v, u, i in nums(group_named(sr, "LV function (ED and ES)")) if c == ("8277-6", "LN"))
    assert modifier(bsa_item, ("370129005", "SCT")).ConceptCodeSequence[0].CodeValue == codes.BSA_MOSTELLER.value
    rv = {c: v for c, v, u, _ in nums(group_named(sr, "RV function (ED and ES)"))}
    assert rv[("8818-7", "LN")] == pytest.approx(summary["rv_ef_percent"])
    mass = {c: (v, u) for c, v, u, _ in nums(group_named(sr, "LV myocardium ED"))}
    assert mass[("18087-7", "LN")] == (pytest.approx(summary["lv_mass_g"]), "g")
    # papillary muscles counted in the cavity: in the volumes (included), out of the mass (excluded)
    mass_item = next(i for c, v, u, i in nums(group_named(sr, "LV myocardium ED")) if c == ("18087-7", "LN"))
    edv_item = next(i for c, v, u, i in nums(ed) if c == ("8821-1", "LN"))
    assert modifier(mass_item, ("370129005", "SCT")).ConceptCodeSequence[0].CodeValue == "122620"
    assert modifier(edv_item, ("370129005", "SCT")).ConceptCodeSequence[0].CodeValue == "122621"
    # a tracking UID is shared only by a group and its outline group
    named = [(tracking_uid(g), next(i for i in g.ContentSequence if concept(i) == ("112039", "DCM")).TextValue)
             for g in groups(sr)]
    for uid in {u for u, _ in named}:
        names = sorted(n for u, n in named if u == uid)
        assert len(names) == 1 or (len(names) == 2 and names[1] == names[0] + " (outline)"), names


def test_units_are_ucum(reports):
    *_, sr, _, _ = reports
    units = {item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodingSchemeDesignator
             for _, item in walk(sr.ContentSequence) if item.ValueType == "NUM"}
    assert units == {"UCUM"}


def test_every_volume_is_in_one_unit_as_summary_and_pdf_give_it(reports):
    """break45a F11: blood-pool volumes were `ml`, myocardium, scar and MVO volumes `cm3` in the same SR; summary.json
    and the PDF say mL throughout. Every volume NUM (LOINC volumes, SCT Volume, stroke volume, private volumes) is
    UCUM "mL", every indexed volume "mL/m2"."""
    *_, sr, _, _ = reports
    units = [(item.ConceptNameCodeSequence[0].CodeMeaning,
              item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue)
             for _, item in walk(sr.ContentSequence) if item.ValueType == "NUM"]
    volumes = [(name, unit) for name, unit in units if "volume" in name.lower() and "index" not in name.lower()
               and "fraction" not in name.lower() and "%" != unit]
    assert len({name for name, _ in volumes}) >= 5, units
    assert {unit for _, unit in volumes} == {"mL"}, volumes
    assert not [unit for _, unit in units if unit.lower() in ("ml", "cm3") and unit != "mL"]
    assert {unit for name, unit in units if "volume index" in name.lower()} <= {"mL/m2"}


def test_measurement_report_holds_only_measurements(reports):
    *_, sr, _, _ = reports
    assert not [i for _, i in walk(sr.ContentSequence) if concept(i) == ("RTSUGG", "99DICOMNODE")]


def test_stand_alone_suggestions_sr_is_titled_and_unverified(reports):
    _, results, _, _, _, suggestions, _ = reports
    assert suggestions.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert suggestions.VerificationFlag == "UNVERIFIED"
    assert suggestions.ConceptNameCodeSequence[0].CodeMeaning.endswith("(unverified)")
    texts = [i for _, i in walk(suggestions.ContentSequence) if concept(i) == ("RTTEXT", "99DICOMNODE")]
    assert [t.TextValue.split("): ", 1)[1] for t in texts] == [s["text"] for s in results[2].summary]
    first = {concept(c): c for c in texts[0].ContentSequence}
    assert float(first[("RTSCORE", "99DICOMNODE")].MeasuredValueSequence[0].NumericValue) == pytest.approx(0.81)
    assert first[("RTREPORTID", "99DICOMNODE")].TextValue == "prior-0042"


def test_bsa_formulas():
    assert body_surface_area(1.80, 80, "mosteller") == pytest.approx(2.0, abs=1e-3)
    assert body_surface_area(1.80, 80, "dubois") == pytest.approx(1.9964, abs=1e-3)
    with pytest.raises(ValueError, match="implausible"):
        body_surface_area(180, 80, "mosteller")
    with pytest.raises(ValueError, match="unknown BSA formula"):
        body_surface_area(1.8, 80, "boyd")


@pytest.mark.peers
def test_measurement_report_passes_dciodvfy_and_pixelmed(reports, validated, tmp_path):
    *_, sr, _, _ = reports
    assert_valid_sr(validated, "reports", sr, tmp_path)


def test_highdicom_reads_the_report_back(reports, tmp_path):
    import highdicom as hd

    _, results, _, segs, sr, _, _ = reports
    read = hd.sr.srread(write(sr, tmp_path / "sr.dcm"))
    found = read.content.get_volumetric_roi_measurement_groups()
    assert [base_name(g.tracking_identifier) for g in found][:4] == [
        "LGE LV myocardium, whole", "LGE LV myocardium, whole (inner contour)", "LGE scar incl. MVO",
        "LGE non-enhanced myocardium"]
    scar = found[2]
    values = sorted(m.value for m in scar.get_measurements() if m.name.value in LGE_PERCENT_CODES)
    summary = results[0].summary
    assert values == sorted([summary["lge_percent"], summary["nsd"]["lge_percent"], summary["fwhm"]["lge_percent"]])
    evidence = {item.ReferencedSOPInstanceUID for study in read.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert {seg.SOPInstanceUID for parts in segs.values() for _, seg in parts} <= evidence


@pytest.fixture(scope="module")
def not_applicable_report():
    """The same study with n-SD not applicable (8-bit input) and FWHM as a number."""
    study, results, context = make_study()
    results[0].summary["nsd"] = {"lge_percent": None, "applicable": False, "n": 5,
                                 "reason": "8-bit image: intensities windowed, no calibrated signal"}
    header = study.series[0].instances[0].dataset
    return results, build_sr(header, results, segs_of(results, context), context, 9100)


def test_a_threshold_method_that_is_not_applicable_is_said_in_the_sr(not_applicable_report):
    """Not a silently missing row: the scar group says "<method>: Not applicable" (SCT 385432009) as a coded
    evaluation, and still carries the numbers that exist (DL and FWHM %LGE)."""
    results, sr = not_applicable_report
    scar = group_named(sr, "LGE scar incl. MVO")
    lge_methods = {modifier(i, ("370129005", "SCT")).ConceptCodeSequence[0].CodeValue
                   for c, v, u, i in nums(scar) if c[0] in LGE_PERCENT_CODES}
    assert lge_methods == {"DLSEG", "FWHM"}
    evaluations = {concept(i): (i.ConceptCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodingSchemeDesignator)
                   for i in scar.ContentSequence if i.ValueType == "CODE"}
    assert evaluations[("NSD", "99DICOMNODE")] == ("385432009", "SCT")
    assert ("FWHM", "99DICOMNODE") not in evaluations


@pytest.mark.peers
def test_the_not_applicable_report_passes_dciodvfy_and_pixelmed(not_applicable_report, validated, tmp_path):
    _, sr = not_applicable_report
    assert_valid_sr(validated, "not_applicable_report", sr, tmp_path)


def test_highdicom_reads_the_not_applicable_report(not_applicable_report, tmp_path):
    import highdicom as hd

    _, sr = not_applicable_report
    read = hd.sr.srread(write(sr, tmp_path / "sr.dcm"))
    scar = next(g for g in read.content.get_volumetric_roi_measurement_groups()
                if base_name(g.tracking_identifier) == "LGE scar incl. MVO")
    assert sorted(m.name.value for m in scar.get_measurements() if m.name.value in LGE_PERCENT_CODES) == [
        "LGEPCT", "LGEPCTFWHM"]
    assert {(e.name.value, e.value.value) for e in scar.get_qualitative_evaluations()} >= {("NSD", "385432009")}


def comments(group: Dataset) -> list[str]:
    return [i.TextValue for i in group.ContentSequence if concept(i) == ("121106", "DCM") and i.ValueType == "TEXT"]


#: a cine range flag with the non-Latin-1 characters the flags use ("–" in ranges, "≤" in cut-offs)
RANGE_FLAG = "LV EDV above normal range (300.8 mL; men 106–214 mL, women 86–178 mL)"
CUTOFF_FLAG = "RVEF below the RV systolic dysfunction cut-off (35.1 %; dysfunction at ≤ 45 %, Gulati 2013)"
TIMING_FLAG = "coarse temporal resolution: 12 phases, 83 ms per phase (SCMR recommends <= 45 ms)"


@pytest.fixture(scope="module")
def warned_report():
    """LGE and cine, each with stack warnings in its summary (as volume.warnings puts them there), the cine with
    flags (two values outside their range, a timing note), on a Latin-1 (ISO_IR 100) source."""
    study, results, context = make_study()
    results[0].summary["stack_warnings"] = [
        "irregular slice spacing: median 10.00 mm, also 20.00 mm (gap: missing slice?)"]
    results[1].summary["stack_warnings"] = ["2 of 30 cardiac phases present (CardiacNumberOfImages 30)",
                                            "single slice: no SpacingBetweenSlices/SliceThickness, slice spacing set to 1 mm"]
    results[1].summary["flags"] = [RANGE_FLAG, CUTOFF_FLAG, TIMING_FLAG]
    header = study.series[0].instances[0].dataset
    header.SpecificCharacterSet, header.PatientName = "ISO_IR 100", "Müller^Zoë"
    sr = build_sr(header, results, segs_of(results, context), context, 9100)
    return results, sr


def report_comments(sr: Dataset) -> list[str]:
    """The TEXT comments of the report-level Qualitative Evaluations container (TID 1500 row 12)."""
    found = [i for i in sr.ContentSequence if concept(i) == ("C0034375", "UMLS")]
    assert len(found) <= 1 and all(i.RelationshipType == "CONTAINS" for i in found)
    return [i.TextValue for c in found for i in c.ContentSequence if concept(i) == ("121106", "DCM")]


def test_each_comment_is_said_once_at_the_level_it_applies_to(warned_report):
    """break40b F14: every cine flag and caveat was a comment in every measurement group (207 comments in one SR).
    A stack's warnings qualify all of its numbers: said once, in the report-level Qualitative Evaluations; a value
    outside its range is said in the group holding that value's number, once."""
    results, sr = warned_report
    # and the MVO's caveat (not validated, summary mvo_validation) beside every LGE number
    lge_text = ["LGE input stack: " + w for w in results[0].summary["stack_warnings"]] + \
        [f"LGE MVO {results[0].summary['mvo_validation']['note']}"]
    cine_text = ["cine input stack: " + w for w in results[1].summary["stack_warnings"]]
    at_report = report_comments(sr)
    assert set(lge_text + cine_text + [f"cine: {TIMING_FLAG}"]) <= set(at_report)
    in_groups = {name_of(group): comments(group) for group in groups(sr) if comments(group)}
    every = at_report + [text for texts in in_groups.values() for text in texts]
    assert len(every) == len(set(every)), "a comment said twice"
    assert in_groups == {"LV blood pool ED": [f"cine: {RANGE_FLAG}"],
                         "RV function (ED and ES)": [f"cine: {CUTOFF_FLAG}"]}, in_groups
    for group in groups(sr):
        for item in group.ContentSequence:
            if concept(item) == ("121106", "DCM"):
                assert item.RelationshipType == "CONTAINS"


def test_sr_text_is_written_in_a_character_set_that_holds_it(warned_report, tmp_path):
    """break40b F7: on a Latin-1 source the SR was written in ISO_IR 100, and "–" and "≤" of the flags became "?"
    ("dysfunction at ? 45 %", "men 106?214 mL"). The SR is re-encoded in UTF-8 and reads back with every character,
    the patient's name included."""
    import pydicom

    _, sr = warned_report
    read = pydicom.dcmread(write(sr, tmp_path / "sr.dcm"))
    assert read.SpecificCharacterSet == "ISO_IR 192" and str(read.PatientName) == "Müller^Zoë"
    texts = [str(item.TextValue) for _, item in walk(read.ContentSequence) if item.ValueType == "TEXT"]
    assert f"cine: {RANGE_FLAG}" in texts and f"cine: {CUTOFF_FLAG}" in texts
    assert not [t for t in texts if "?" in t and "missing slice?" not in t]


def test_a_stack_without_warnings_has_no_comment(reports):
    """No stack warning, no comment in a group: but the MVO's caveat where the card does not validate it
    (mvo_validation), said once at the report level as every note that qualifies a whole pipeline."""
    *_, sr, _, _ = reports
    assert not {c for g in groups(sr) for c in comments(g)}
    assert f"LGE MVO {reports[1][0].summary['mvo_validation']['note']}" in report_comments(sr)


def device_observers(items) -> list[str]:
    return [i.UID for i in items if concept(i) == ("121012", "DCM") and i.RelationshipType == "HAS OBS CONTEXT"]


def test_each_pipeline_names_its_own_device_observer(reports):
    """F9: with LGE and cine in one report the root observer is the node itself, not one of the models, and every
    group names the model that made its observations (HAS OBS CONTEXT device observer, TID 1002/1004)."""
    _, results, _, _, sr, _, _ = reports
    lge_uid, cine_uid = results[0].algorithms[0].device_uid, results[1].algorithms[0].device_uid
    assert device_observers(sr.ContentSequence) == [node_device_uid()]
    names = {i.TextValue for i in sr.ContentSequence if concept(i) == ("121013", "DCM")}
    assert names == {"dicomnode"}
    for group in groups(sr):
        name = name_of(group)
        cine = of_cine(name)
        assert device_observers(group.ContentSequence) == [cine_uid if cine else lge_uid], name
        algorithm = next(i.TextValue for i in group.ContentSequence if concept(i) == ("111001", "DCM"))
        assert algorithm == ("dicomnode-cine-unet" if cine else "dicomnode-lge-unet")
    assert node_device_uid() == node_device_uid() and len(node_device_uid()) <= 64


def test_one_pipeline_keeps_its_model_as_the_document_observer(no_scar_report):
    results, _, sr = no_scar_report
    assert device_observers(sr.ContentSequence) == [results[0].algorithms[0].device_uid]
    assert not [g for g in groups(sr) if device_observers(g.ContentSequence)]


def test_indexed_values_are_the_pipelines_not_recomputed_from_a_rounded_bsa():
    """F8: the SR's indices equal summary.json's (value / unrounded BSA); the BSA shown is the rounded one."""
    study, results, context = make_study()
    cine = results[1]
    bsa = body_surface_area(1.62, 58, "mosteller")  # 1.61555 m2, rounded 1.616
    summary = cine.summary
    summary.update({"lv_edv_ml": 181.43, "lv_esv_ml": 81.07, "rv_edv_ml": 220.47, "rv_esv_ml": 159.39,
                    "lv_mass_g": 80.34, "lv_sv_ml": 100.36})
    unrounded = {"lv_edvi_ml_m2": 181.4312 / bsa, "lv_esvi_ml_m2": 81.0712 / bsa, "lv_svi_ml_m2": 100.36 / bsa,
                 "lv_mass_index_g_m2": 80.3388 / bsa, "rv_edvi_ml_m2": 220.4711 / bsa, "rv_esvi_ml_m2": 159.3866 / bsa,
                 "rv_svi_ml_m2": 61.0845 / bsa}
    cine.measurements.update({"bsa_m2": round(bsa, 3), "bsa_formula": "mosteller", "indexed": unrounded})
    summary.update({"bsa_m2": round(bsa, 3), "bsa_formula": "mosteller",
                    "indexed": {k: round(v, 2) for k, v in unrounded.items()}})
    sr = build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)
    found = {}
    for name in ("LV blood pool ED", "LV blood pool ES", "RV blood pool ED", "RV blood pool ES", "LV myocardium ED",
                 "LV function (ED and ES)", "RV function (ED and ES)"):
        found.update({c[0]: v for c, v, u, _ in nums(group_named(sr, name))})
    for code, key in (("LVEDVI", "lv_edvi_ml_m2"), ("LVESVI", "lv_esvi_ml_m2"), ("LVSVI", "lv_svi_ml_m2"),
                      ("LVMI", "lv_mass_index_g_m2"), ("RVEDVI", "rv_edvi_ml_m2"), ("RVESVI", "rv_esvi_ml_m2"),
                      ("RVSVI", "rv_svi_ml_m2")):
        assert found[code] == summary["indexed"][key], code  # the pipeline's value, as summary.json rounds it
    assert found["8277-6"] == pytest.approx(1.616)
    # without the pipeline's indices (an older result) the SR still indexes, by the BSA it has
    del cine.measurements["indexed"], summary["indexed"]
    sr = build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)
    assert {c[0]: v for c, v, u, _ in nums(group_named(sr, "LV blood pool ED"))}["LVEDVI"] == \
        round(181.43 / 1.616, 2)


@pytest.mark.peers
@pytest.mark.parametrize("variant", ["no_scar_report", "per_slice_report", "warned_report"])
def test_the_changed_reports_pass_dciodvfy_and_pixelmed(variant, request, validated, tmp_path):
    """Absent findings, per-slice SEGs, stack comments and per-group device observers: still valid TID 1500 (the
    comments and observers are pixelmed "Content Item not in template" warnings, not errors)."""
    sr = request.getfixturevalue(variant)[-1]
    assert_valid_sr(validated, variant, sr, tmp_path)


@pytest.mark.parametrize("variant", ["no_scar_report", "per_slice_report", "warned_report"])
def test_highdicom_reads_the_changed_reports(variant, request, tmp_path):
    sr = request.getfixturevalue(variant)[-1]
    read = hd.sr.srread(write(sr, tmp_path / "sr.dcm"))
    found = read.content.get_volumetric_roi_measurement_groups()
    assert len(found) == len(groups(sr))
    assert all(g.tracking_identifier for g in found)


def drawn_by_ohif(sr: Dataset) -> dict[str, tuple[str, tuple[float, ...]]]:
    """Tracking UID -> (image, points) of the one outline OHIF 3.13 draws for it: groups merged by tracking UID, the
    first SCOORD of the merged content (_getMergedContentSequencesByTrackingUniqueIdentifiers,
    _processTID1410Measurement)."""
    merged: dict[str, list] = {}
    for group in groups(sr):
        merged.setdefault(tracking_uid(group), []).extend(group.ContentSequence)
    drawn = {}
    for uid, items in merged.items():
        first = next((i for i in items if i.ValueType == "SCOORD"), None)
        if first is not None:
            drawn[uid] = (first.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
                          tuple(first.GraphicData))
    return drawn


def test_every_container_is_separate_and_each_suggestion_reads_on_its_own(reports):
    """A2: OHIF renders the children of a CONTINUOUS container inline as one paragraph, and never the children of a
    TEXT item: every container is SEPARATE, and each suggestion's own text says it is an unverified suggestion
    from another patient's report, with its report bank id and the similarity score; the structured properties
    stay."""
    _, results, _, _, sr, suggestions, _ = reports
    for document in (sr, suggestions):
        containers = [document] + [i for _, i in walk(document.ContentSequence) if i.ValueType == "CONTAINER"]
        assert {c.ContinuityOfContent for c in containers} == {"SEPARATE"}
    assert len([i for _, i in walk(sr.ContentSequence) if i.ValueType == "CONTAINER"]) > 10  # measurement groups
    texts = [i for _, i in walk(suggestions.ContentSequence) if concept(i) == ("RTTEXT", "99DICOMNODE")]
    assert [t.TextValue for t in texts] == [
        "Unverified suggestion from ANOTHER patient's report (report bank id prior-0042, similarity 0.81; not a "
        "finding of this study, its numbers are not this study's): "
        "Subendocardial LGE in the anterior wall consistent with prior infarction.",
        "Unverified suggestion from ANOTHER patient's report (report bank id prior-0007, similarity 0.55; not a "
        "finding of this study, its numbers are not this study's): "
        "Normal LV size and systolic function."]
    for text, suggestion in zip(texts, results[2].summary):
        properties = {concept(c): c for c in text.ContentSequence}
        assert properties[("RTREPORTID", "99DICOMNODE")].TextValue == suggestion["report_id"]
        assert float(properties[("RTSCORE", "99DICOMNODE")].MeasuredValueSequence[0].NumericValue) == \
            pytest.approx(suggestion["score"])


def test_the_large_burden_rule_says_its_verdict_and_caveat_where_a_viewer_shows_it(reports):
    """A6: OHIF lists only NUM concept names and values (B3): the cut-off NUM's concept says the verdict and that the
    rule is an HCM rule not validated in infarct, so 15 % does not read as a measured value; the tracking identifier
    says the verdict too; the coded Yes/No evaluation stays. The three %LGE rows have distinct concept names."""
    _, results, _, _, sr, _, _ = reports
    assert results[0].summary["large_scar_burden"] is True
    scar = group_named(sr, "LGE scar incl. MVO")
    assert identifier_of(scar) == "LGE scar incl. MVO; large burden YES (HCM rule >=15 %)"
    shown = {i.ConceptNameCodeSequence[0].CodeMeaning: v for c, v, u, i in nums(scar)}
    assert shown["HCM cut-off (MET: large LGE burden; not validated in MI)"] == 15.0
    assert not [m for m in shown if m == "Large LGE burden cut-off"]
    assert len(shown) == len(nums(scar))  # no two rows a viewer would show alike
    assert {"LGE extent, % of LV myocardial volume", "LGE extent by 5-SD threshold, % of LV myocardial volume",
            "LGE extent by FWHM threshold, % of LV myocardial volume"} <= set(shown)
    burden = next(i for i in scar.ContentSequence if concept(i) == (codes.LARGE_LGE_BURDEN.value, "99DICOMNODE"))
    assert burden.ConceptCodeSequence[0].CodeValue == codes.YES.value
    for code in (codes.LARGE_LGE_BURDEN_CUTOFF_MET, codes.LARGE_LGE_BURDEN_CUTOFF_NOT_MET, codes.LGE_PERCENT_NSD,
                 *codes.LGE_PERCENT_NSD_BY_N.values(), codes.LGE_PERCENT_FWHM):
        assert len(code.meaning) <= 64 and code in codes.PRIVATE_CODES


def test_a_small_burden_says_no_in_its_cut_off_concept(no_scar_report):
    _, _, sr = no_scar_report
    scar = group_named(sr, "LGE scar incl. MVO (none found)")
    # shortened to fit 64 characters (LO)
    assert identifier_of(scar) == "LGE scar incl. MVO (none found); large burden no (>=15 %)"
    assert {c for c, *_ in nums(scar)} >= {(codes.LARGE_LGE_BURDEN_CUTOFF_NOT_MET.value, "99DICOMNODE")}
    burden = next(i for i in scar.ContentSequence if concept(i) == (codes.LARGE_LGE_BURDEN.value, "99DICOMNODE"))
    assert burden.ConceptCodeSequence[0].CodeValue == codes.NO.value
    # break49b #8: OHIF shows "<meaning>: <value>"; "Large LGE burden no; HCM rule cut-off …: 15.00 %" read as a 15 %
    # burden on a heart with next to none: the meaning names the cut-off first, and the verdict as met / not met
    (meaning,) = [i.ConceptNameCodeSequence[0].CodeMeaning for c, v, u, i in nums(scar)
                  if c == (codes.LARGE_LGE_BURDEN_CUTOFF_NOT_MET.value, "99DICOMNODE")]
    assert meaning.startswith("HCM cut-off (not met: ") and "no large LGE burden" in meaning
    for code in (codes.LARGE_LGE_BURDEN_CUTOFF_MET, codes.LARGE_LGE_BURDEN_CUTOFF_NOT_MET,
                 codes.LARGE_LGE_BURDEN_SITE_CUTOFF_MET, codes.LARGE_LGE_BURDEN_SITE_CUTOFF_NOT_MET):
        assert code.meaning.split(" (")[0] in ("HCM cut-off", "Site cut-off") and len(code.meaning) <= 64


def test_cine_groups_name_their_phase_in_the_tracking_identifier(reports):
    """A7: "ED (phase 1 of 5)" in the text a viewer shows as the group's name; the PHASENUM NUM stays."""
    _, results, _, _, sr, _, _ = reports
    summary = results[1].summary
    phases = len(results[1].segmentations[0].volume.frames)
    for name, key in (("LV blood pool ED", "ed_phase"), ("RV blood pool ED", "ed_phase"),
                      ("LV blood pool ES", "es_phase"), ("LV myocardium ED", "ed_phase")):
        group = group_named(sr, name)
        assert identifier_of(group) == f"{name} (phase {summary[key] + 1} of {phases})"
        assert {c: v for c, v, u, _ in nums(group)}[("PHASENUM", "99DICOMNODE")] == summary[key] + 1


def test_groups_sharing_a_region_are_drawn_on_different_slices(reports):
    """A8/B2: OHIF draws one outline per tracking UID with its numbers beside it; LV blood pool ED, LV myocardium ED
    and LV function (the same ED blood pool) were all drawn on one slice, their labels on top of each other. Each is
    now drawn on a slice of its own where the stack has slices holding at least half the region's largest area."""
    *_, sr, _, _ = reports
    drawn = drawn_by_ohif(sr)
    images = [drawn[tracking_uid(group_named(sr, name))][0]
              for name in ("LV blood pool ED", "LV myocardium ED", "LV function (ED and ES)")]
    assert len(set(images)) == 3
    lge = [drawn[tracking_uid(group_named(sr, name))][0]
           for name in ("LGE LV myocardium, whole", "LGE scar incl. MVO", "LGE non-enhanced myocardium")]
    assert len(set(lge)) == 3


def test_the_spread_never_draws_a_group_on_a_slice_with_less_than_half_its_largest_area():
    from dicomnode.results.sr import _SegmentIndex

    study, results, context = make_study(slices=3)
    segmentation = results[1].segmentations[0]
    index = _SegmentIndex(segmentation, segs_of(results, context)[segmentation.key])
    mask = np.zeros((3, 4, 4), bool)
    mask[0, :2, :2] = True  # 4 px
    mask[1] = True  # 16 px: the largest
    mask[2, :3, :3] = True  # 9 px
    assert [index.pick_slice(mask, 0) for _ in range(4)] == [1, 2, 1, 2]


def test_a_ring_is_drawn_as_a_ring(reports):
    """B5: OHIF draws only the first SCOORD of a tracking UID: the whole LV myocardium showed as its epicardial
    contour alone. Every outline of the drawn slice of a group is now the first outline of some tracking UID: the
    endocardial contour has a group of its own ("(inner contour)", no numbers)."""
    *_, sr, _, _ = reports
    drawn = drawn_by_ohif(sr)
    shown = set(drawn.values())
    for name in ("LGE LV myocardium, whole", "LV myocardium ED (outline)", "LGE non-enhanced myocardium (outline)"):
        group = group_named(sr, name)
        image = drawn[tracking_uid(group)][0]
        on_that_slice = [(image, tuple(i.GraphicData)) for i in group.ContentSequence if i.ValueType == "SCOORD"
                         and i.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image]
        assert len(on_that_slice) == 2 and set(on_that_slice) <= shown, name
        inner = group_named(sr, name.removesuffix(" (outline)") + " (inner contour)")
        assert not nums(inner) and tracking_uid(inner) != tracking_uid(group)
        # no text for OHIF to stack at the anchor ("363698007: Left ventricle myocardium", break43d)
        assert not [i for i in inner.ContentSequence if concept(i) == ("363698007", "SCT")]
        assert [i.GraphicData for i in inner.ContentSequence if i.ValueType == "SCOORD"] == [
            list(on_that_slice[1][1])]


@pytest.mark.peers
def test_the_source_series_concept_has_the_templates_meaning(reports, validated, tmp_path):
    """break46a #9: pixelmed warned that (121232, DCM) "Source Series for Segmentation" (highdicom's capitals) differs
    from TID 1411's "Source series for segmentation"."""
    *_, sr, _, _ = reports
    meanings = set()

    def visit(items):
        for item in items:
            for name in item.get("ConceptNameCodeSequence", []):
                if name.CodeValue == "121232":
                    meanings.add(name.CodeMeaning)
            visit(item.get("ContentSequence", []))

    visit(sr.ContentSequence)
    assert meanings == {"Source series for segmentation"}
    warnings = assert_valid_sr(validated, "reports", sr, tmp_path)
    assert not [w for w in warnings if "121232" in w], warnings
