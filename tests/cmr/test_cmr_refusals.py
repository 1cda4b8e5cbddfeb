"""Refusals with clear messages (single slice, mixed orientations, missing geometry, uneven phases) and declined inputs."""
from __future__ import annotations

import copy
import shutil

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomnode.cmr import StudyError, load_studies, understand_study
from dicomnode.cmr.grouping import NODE_MANUFACTURER, read_header
from cmr_helpers import generated, quiet_invalid_uid_warnings, sunnybrook_paths  # noqa: F401 (fixtures)


def _study(generated, kind="lge", variant="ge"):
    (cmr,) = load_studies([generated[(kind, variant, None)].out_dir / "dicom"])
    return cmr


def test_single_slice_where_a_stack_is_required(generated):
    study = generated[("lge", "ge", None)]
    headers = [read_header(p) for p in study.paths if "psir" in p.name][:1]
    cmr = understand_study(headers)
    (series,) = cmr.series
    with pytest.raises(StudyError, match=r"single slice .* where a stack of parallel slices is required"):
        cmr.load_volume(series)
    volume = cmr.load_volume(series, require_stack=False)
    assert volume.shape == (1, 1, 256, 256) and volume.slice_spacing == 10.0
    assert any("slice spacing taken from SpacingBetweenSlices" in w for w in volume.warnings)


def test_mixed_orientations(datasets):
    (cmr,) = load_studies(sunnybrook_paths(datasets, "SCD0000301"))
    localizer = cmr.preferred("localizer", None)
    with pytest.raises(StudyError, match=r"mixed orientations, 3 different ImageOrientationPatient values \(axial"):
        cmr.load_volume(localizer)


@pytest.mark.parametrize("keyword", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_missing_geometry_is_refused(generated, keyword):
    cmr = _study(generated)
    series = cmr.preferred("lge")
    victim = series.instances[2]
    series.instances[2] = copy.copy(victim)
    series.instances[2].dataset = copy.deepcopy(victim.dataset)
    delattr(series.instances[2].dataset, keyword)
    with pytest.raises(StudyError, match=rf"instance {victim.sop_instance_uid} has no {keyword}"):
        cmr.load_volume(series)


def test_uneven_phase_counts_are_refused_naming_the_counts(generated):
    study = generated[("cine", "ge", None)]
    headers = [read_header(p) for p in study.paths[1:]]  # drop one phase of one slice
    cmr = understand_study(headers)
    series = cmr.preferred("cine")
    with pytest.raises(StudyError, match=r"inconsistent phase counts across slices \(1 phase\(s\) in 1 slice\(s\), "
                                         r"2 phase\(s\) in 5 slice\(s\)\)"):
        cmr.load_volume(series)


def test_declined_non_dicom_non_mr_and_no_geometry(generated, tmp_path):
    study = generated[("lge", "ge", None)]
    folder = tmp_path / "mixed"
    shutil.copytree(study.out_dir / "dicom", folder)
    (folder / "notes.txt").write_text("not a DICOM file")
    ct = pydicom.dcmread(study.paths[0])
    ct.Modality = "CT"
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ct.SeriesInstanceUID = generate_uid()
    ct.save_as(folder / "ct.dcm")
    flat = pydicom.dcmread(study.paths[1])
    del flat.ImagePositionPatient
    flat.SOPInstanceUID = flat.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    flat.SeriesInstanceUID = generate_uid()
    flat.save_as(folder / "flat.dcm")

    (cmr,) = load_studies([folder])
    assert cmr.study_instance_uid == study.study_instance_uid
    reasons = {d.series_instance_uid: d.reason for d in cmr.declined}
    assert "notes.txt: not a DICOM file" in reasons[None]
    assert reasons[ct.SeriesInstanceUID] == "1 instance(s): not an MR image (Modality CT, CT Image Storage)"
    assert reasons[flat.SeriesInstanceUID] == (f"1 instance(s): no geometry in series {flat.SeriesNumber} "
                                               f"'{flat.SeriesDescription}': missing ImagePositionPatient")
    assert sorted(s.lge_kind for s in cmr.series) == ["magnitude", "psir"]  # the rest is still understood
    assert cmr.declined[0].summary()["reason"]


def test_unreadable_files_beside_several_studies_get_their_own_entry(generated, tmp_path):
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 10)
    paths = [generated[(k, "ge", None)].out_dir / "dicom" for k in ("lge", "cine")] + [tmp_path / "broken.dcm"]
    studies = load_studies(paths)
    assert len(studies) == 3 and studies[-1].study_instance_uid == "" and studies[-1].series == []
    assert "broken.dcm" in studies[-1].declined[0].reason
    assert all(s.series for s in studies[:2])


def test_understand_study_refuses_several_studies(generated):
    headers = [read_header(generated[(k, "ge", None)].paths[0]) for k in ("lge", "cine")]
    with pytest.raises(StudyError, match="got 2 studies"):
        understand_study(headers)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_cine_missing_one_image_keeps_the_phases_every_slice_has(datasets, tmp_path, damage):
    # one image of a 10-slice x 20-phase cine lost or cut short: that phase is left out at every slice (and named);
    # the other 19 phases still cover the whole stack
    folder = tmp_path / "cine"
    shutil.copytree(sunnybrook_paths(datasets, "SCD0000301")[0], folder)
    victim = folder / "45.dcm"
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:-1000])
    else:
        victim.unlink()
    (cmr,) = load_studies([folder])
    series = cmr.preferred("cine")
    volume = cmr.load_volume(series)
    assert volume.shape[:2] == (19, 10)
    lost = [w for w in volume.warnings if "is missing at slice(s)" in w]
    assert len(lost) == 1 and "left out at every slice" in lost[0]
    phase_gaps = [e for e in volume.excluded if "is missing at slice(s)" in e["reason"]]
    assert len(phase_gaps) == 9  # the same phase at the 9 other slices
    assert len(volume.excluded) == 9 + (damage == "truncated")
    assert {e["sop_instance_uid"] for e in cmr.excluded_instances} == {e["sop_instance_uid"] for e in volume.excluded}
    assert len({tuple(f.sop_instance_uid for f in phase) for phase in volume.frames}) == 19


def test_the_nodes_own_results_sent_back_are_declined_never_analysed(generated, tmp_path):
    """break1 finding 8: a PACS routing the node's results back (display copies, SEG, SR, PDF) - the display copies
    were a second LGE candidate; now each is declined as the node's own output, the copies naming their source."""
    from pydicom.dataset import Dataset

    from dicomnode.results.display_copy import node_equipment_item
    from dicomnode.results.provenance import NODE_MANUFACTURER as RESULTS_NODE_MANUFACTURER

    assert NODE_MANUFACTURER == RESULTS_NODE_MANUFACTURER
    study = generated[("lge", "ge", None)]
    folder = tmp_path / "reimport"
    shutil.copytree(study.out_dir / "dicom", folder)
    psir = [p for p in study.paths if "psir" in p.name]
    copies_uid, seg_uid = generate_uid(), generate_uid()
    for index, path in enumerate(psir):
        copy_ds = pydicom.dcmread(path)
        source = Dataset()
        source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = copy_ds.SOPClassUID, copy_ds.SOPInstanceUID
        copy_ds.SourceImageSequence = [source]
        copy_ds.ContributingEquipmentSequence = [node_equipment_item("20240101120000")]
        copy_ds.ImageType = ["DERIVED", "SECONDARY", "P"]
        copy_ds.SOPInstanceUID = copy_ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        copy_ds.SeriesInstanceUID, copy_ds.SeriesNumber = copies_uid, 9301
        copy_ds.save_as(folder / f"copy{index}.dcm")
    seg = pydicom.dcmread(psir[0])
    seg.Modality = "SEG"
    seg.SOPClassUID = seg.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    seg.SOPInstanceUID = seg.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    seg.SeriesInstanceUID = seg_uid
    item = Dataset()
    item.Manufacturer = NODE_MANUFACTURER
    seg.ContributingEquipmentSequence = [item]
    seg.save_as(folder / "seg.dcm")

    (cmr,) = load_studies([folder])
    reasons = {d.series_instance_uid: d.reason for d in cmr.declined}
    number = pydicom.dcmread(psir[0]).SeriesNumber
    assert reasons[copies_uid] == (f"{len(psir)} instance(s): this node's own display copies of series {number} (its "
                                   "result of an earlier run, sent back): never analysed")
    assert reasons[seg_uid].startswith("1 instance(s): this node's own result (Segmentation Storage")
    assert copies_uid not in {uid for s in cmr.series for uid in s.series_instance_uids}
    assert sorted(s.lge_kind for s in cmr.series) == ["magnitude", "psir"]


def test_a_one_slice_lge_is_declined_as_one_slice_not_as_another_view(generated):
    """break2 finding 9: a one-slice short-axis LGE was declined as 'LGE only in other views: ... (other)', which
    sends the reader looking for a long-axis series."""
    from dicomnode.analysis.phase_text import other_views_text

    study = generated[("lge", "ge", None)]
    cmr = understand_study([read_header(p) for p in study.paths if "psir" in p.name][:1])
    (series,) = cmr.series
    assert (series.sequence.value, series.view.value, series.slices) == ("lge", "other", 1)
    number = series.series_number
    text = other_views_text(cmr.series, "lge")
    assert text == f'; LGE of only 1 slice (a stack needs at least 2): series {number} "{series.description}"', text
    assert "other views" not in text
