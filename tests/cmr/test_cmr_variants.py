"""Generated variants (ge / siemens / philips-enhanced x lossless encodings) give the same volume and exact mask round trips."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dicomnode.cmr import load_studies
from dicomnode.devtools.make_study import TRANSFER_SYNTAXES as SYNTAX_UIDS
from dicomnode.devtools.make_study import make_study
from cmr_helpers import TRANSFER_SYNTAXES, VARIANTS, generated, quiet_invalid_uid_warnings  # noqa: F401 (fixtures)

CASES = [(kind, variant, syntax) for kind in ("lge", "cine") for variant in VARIANTS for syntax in TRANSFER_SYNTAXES]


def _understood(study):
    (cmr,) = load_studies([study.out_dir / "dicom"])
    assert cmr.study_instance_uid == study.study_instance_uid
    assert cmr.declined == []
    return cmr


def _by_frame(volume) -> dict:
    return {(ref.sop_instance_uid, ref.frame_number): (p, s) for p, row in enumerate(volume.frames)
            for s, ref in enumerate(row)}


@pytest.fixture(scope="module")
def reference_volumes(generated):
    return {kind: _volume(generated[(kind, "ge", None)]) for kind in ("lge", "cine")}


def _volume(study):
    cmr = _understood(study)
    kind = "lge" if study.primary_role == "psir" else "cine"
    return cmr.load_volume(cmr.preferred(kind, "sax"))


@pytest.mark.parametrize("kind,variant,syntax", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_variant_gives_the_same_volume_and_masks_round_trip(generated, reference_volumes, kind, variant, syntax):
    study = generated[(kind, variant, syntax)]
    assert pydicom.dcmread(study.paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == SYNTAX_UIDS[syntax]
    _check_same_volume_and_round_trip(study, kind, reference_volumes[kind])


def test_enhanced_with_psir_and_magnitude_frames_in_one_instance(datasets, tmp_path, reference_volumes):
    study = make_study("emidec:Case_P043", tmp_path / "mixed", "philips-enhanced", "rle", datasets=datasets,
                       mixed_frames=True)
    assert len(study.paths) == 1
    (cmr,) = load_studies([study.out_dir / "dicom"])
    assert sorted(s.lge_kind for s in cmr.series) == ["magnitude", "psir"]
    assert len({s.series_instance_uid for s in cmr.series}) == 1
    assert all(len(frames) == 5 for s in cmr.series for frames in s.frames_included.values())
    _check_same_volume_and_round_trip(study, "lge", reference_volumes["lge"])
    magnitude = next(s for s in cmr.series if s.lge_kind == "magnitude")
    frames, image = study.secondary["magnitude"]
    volume = cmr.load_volume(magnitude)
    where = _by_frame(volume)
    for s, ref in enumerate(frames[0]):
        assert np.array_equal(volume.pixels[where[(ref.sop_instance_uid, ref.frame_number)]], image[0, s])


def _check_same_volume_and_round_trip(study, kind, reference):
    cmr = _understood(study)
    series = cmr.preferred(kind, "sax")
    assert series is not None, [s.summary() for s in cmr.series]
    volume = cmr.load_volume(series)
    assert volume.shape == reference.shape
    assert np.array_equal(volume.pixels, reference.pixels)  # lossless encodings: exact
    assert np.allclose(volume.affine, reference.affine, atol=1e-4)
    assert volume.pixel_spacing == pytest.approx(reference.pixel_spacing)
    assert volume.slice_spacing == pytest.approx(study.slice_spacing, abs=1e-4)
    assert volume.trigger_times == pytest.approx(reference.trigger_times)
    if kind == "cine":  # ACDC ED/ES case: 2 of the 17 cine phases of patient041 are present
        assert volume.warnings == ["2 of 17 cardiac phases present (CardiacNumberOfImages 17)"]
        assert volume.declared_phases == 17
    else:
        assert volume.warnings == []

    # values: every volume frame equals the generator's image of the same source frame
    where = _by_frame(volume)
    for p, row in enumerate(study.frames):
        for s, ref in enumerate(row):
            vp, vs = where[(ref.sop_instance_uid, ref.frame_number)]
            assert np.array_equal(volume.pixels[vp, vs], study.image[p, s])

    # masks: a label map on the volume grid, taken back through volume.frames, equals ground truth per instance
    labelmap = np.zeros(volume.shape, np.uint8)
    truth = study.mask_by_frame()
    for (sop, frame), (vp, vs) in where.items():
        if (sop, frame) in truth:
            labelmap[vp, vs] = truth[(sop, frame)]
    back = {(ref.sop_instance_uid, ref.frame_number): labelmap[p, s]
            for p, row in enumerate(volume.frames) for s, ref in enumerate(row)}
    for key, mask in truth.items():
        assert np.array_equal(back[key], mask)
    assert sum(int(m.any()) for m in truth.values()) >= 4


@pytest.mark.parametrize("variant", VARIANTS)
def test_lge_is_recognised_as_psir_and_magnitude_sax_with_psir_preferred(generated, variant):
    cmr = _understood(generated[("lge", variant, None)])
    lge = [s for s in cmr.series if s.sequence.value == "lge"]
    assert sorted(s.lge_kind for s in lge) == ["magnitude", "psir"]
    assert all(s.view.value == "sax" and s.slices == 5 and s.phases == 1 for s in lge)
    preferred = cmr.preferred("lge")
    assert preferred.lge_kind == "psir" and preferred.preferred
    assert "PSIR preferred over magnitude" in preferred.preferred_reason
    assert any("IR" in e or "InversionTime" in e for e in preferred.sequence.evidence)
    if variant == "siemens":  # one series per slice, merged into stacks
        assert len(preferred.series_instance_uids) == 5 and any("merged 5" in n for n in preferred.notes)
        # summary.json names every source series of the stack, each with its own SeriesNumber
        entry = preferred.summary()
        numbers = {str(h.dataset.SeriesInstanceUID): int(h.dataset.SeriesNumber) for h in preferred.instances}
        assert entry["merged_series"] == [{"series_instance_uid": uid, "series_number": numbers[uid]}
                                          for uid in preferred.series_instance_uids]
        assert entry["merged_series"][0]["series_instance_uid"] == entry["series_instance_uid"]
        assert len({item["series_number"] for item in entry["merged_series"]}) == 5
    else:
        assert "merged_series" not in preferred.summary()


@pytest.mark.parametrize("variant", VARIANTS)
def test_acdc_is_recognised_as_cine_sax(generated, variant):
    cmr = _understood(generated[("cine", variant, None)])
    assert [(s.sequence.value, s.view.value, s.slices, s.phases) for s in cmr.series] == [("cine", "sax", 6, 2)]
    assert cmr.patient.height_m == pytest.approx(1.6, abs=0.3) and cmr.patient.weight_kg > 0


def test_site_quirks_shared_uid_no_description_odd_dates(datasets, tmp_path):
    study = make_study("emidec:Case_P043", tmp_path / "quirks", "siemens", None, datasets=datasets,
                       no_description=True, odd_dates=True, shared_series_uid=True)
    ds = pydicom.dcmread(study.paths[0], stop_before_pixels=True)
    assert ds.SeriesDescription == "" and ds.StudyDate == "20120000"
    cmr = _understood(study)
    assert len({uid for s in cmr.series for uid in s.series_instance_uids}) == 1
    assert sorted(s.lge_kind for s in cmr.series) == ["magnitude", "psir"]
    assert all(s.sequence.value == "lge" and s.view.value == "sax" and s.slices == 5 for s in cmr.series)


def test_full_4d_cine(datasets, tmp_path):
    study = make_study("acdc4d:patient090", tmp_path / "4d", "philips-enhanced", "rle", datasets=datasets)
    cmr = _understood(study)
    series = cmr.preferred("cine")
    assert (series.slices, series.phases) == (7, 12)
    volume = cmr.load_volume(series)
    assert volume.shape == (12, 7, 224, 154)
    assert np.all(np.diff(volume.trigger_times) > 0)
    assert study.labelled.sum() == 14 and set(np.flatnonzero(study.labelled.any(axis=1))) == {3, 10}
