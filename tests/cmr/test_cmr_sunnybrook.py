"""Real Sunnybrook studies: localizer split from the cine sharing its SeriesInstanceUID, cine found as one SAX stack."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from dicomnode.cmr import load_studies
from cmr_helpers import quiet_invalid_uid_warnings, sunnybrook_paths, sunnybrook_studies  # noqa: F401 (fixtures)

EXPECTED = {"SCD0000101": (12, 20, 10.0), "SCD0000201": (13, 20, 10.0), "SCD0000301": (10, 20, 8.0)}


@pytest.mark.parametrize("patient", sorted(EXPECTED))
def test_cine_and_localizer_are_separated(sunnybrook_studies, patient):
    slices, phases, spacing = EXPECTED[patient]
    (study,) = sunnybrook_studies[patient]
    assert study.declined == []
    assert len(study.series) == 2
    cine = study.preferred("cine", "sax")
    localizer = study.preferred("localizer", None)
    assert cine is not None and localizer is not None
    assert (cine.slices, cine.phases) == (slices, phases)
    assert cine.sequence.confidence >= 0.8 and cine.view.confidence >= 0.8
    assert any("SSFP" in e for e in cine.sequence.evidence)
    assert sorted(localizer.planes) == ["axial", "coronal", "sagittal"]
    assert len(localizer.instances) == 15 and localizer.series_number == 1
    # the quirk: both share one SeriesInstanceUID, told apart only by SeriesNumber
    assert cine.series_instance_uid == localizer.series_instance_uid
    assert len(cine.instances) == slices * phases
    summary = {s["sequence"]: s for s in study.summary_series()}
    assert summary["cine"]["view"] == "sax" and summary["cine"]["slices"] == slices
    assert summary["localizer"]["view"] == "other"


@pytest.mark.parametrize("patient", sorted(EXPECTED))
def test_cine_volume_geometry(sunnybrook_studies, patient):
    slices, phases, spacing = EXPECTED[patient]
    (study,) = sunnybrook_studies[patient]
    volume = study.load_volume(study.preferred("cine"))
    assert volume.shape == (phases, slices, 256, 256)
    assert volume.slice_spacing == pytest.approx(spacing, abs=1e-3)
    assert volume.warnings == []
    normal = np.cross(volume.orientation[:3], volume.orientation[3:])
    distances = volume.positions @ normal
    assert np.all(np.diff(distances) > 0)
    # affine maps voxel (0, 0, k) to each slice's ImagePositionPatient
    for k in range(slices):
        assert np.allclose(volume.affine @ [0, 0, k, 1], np.append(volume.positions[k], 1), atol=1e-2)
    # phases ordered by trigger time within each slice; the frame map names each instance exactly once
    assert all(np.diff([t for t in volume.trigger_times]) > 0)
    refs = {ref.sop_instance_uid for row in volume.frames for ref in row}
    assert len(refs) == slices * phases
    header = {h.sop_instance_uid: h.dataset for h in study.preferred("cine").instances}
    for phase in (0, phases - 1):
        for k in range(slices):
            ds = header[volume.frames[phase][k].sop_instance_uid]
            assert np.allclose([float(v) for v in ds.ImagePositionPatient], volume.positions[k])
    assert volume.pixels.dtype == np.float32 and volume.pixels.max() > 100


def test_repeated_localizers_split_and_latest_preferred(sunnybrook_studies):
    (study,) = sunnybrook_studies["SCD0003501"]
    localizers = [s for s in study.series if s.sequence.value == "localizer"]
    assert sorted(s.series_number for s in localizers) == [1, 2, 5]
    assert len({s.series_instance_uid for s in localizers}) == 1
    assert all(len(s.instances) == 21 and sorted(s.planes) == ["axial", "coronal", "sagittal"] for s in localizers)
    preferred = [s for s in localizers if s.preferred]
    assert [s.series_number for s in preferred] == [5]
    assert "latest complete acquisition" in preferred[0].preferred_reason
    assert study.preferred("localizer", None).series_number == 5
    assert all("not preferred" in " ".join(s.notes) for s in localizers if not s.preferred)


def test_recognition_is_logged(datasets, caplog):
    with caplog.at_level(logging.INFO, logger="dicomnode.cmr"):
        load_studies(sunnybrook_paths(datasets, "SCD0000301"))
    messages = [r.getMessage() for r in caplog.records if r.name == "dicomnode.cmr"]
    assert any("recognised sequence" in m and " as cine " in m for m in messages)
    assert any("recognised sequence" in m and " as localizer " in m for m in messages)
    assert any("recognised view" in m and " as sax " in m for m in messages)
