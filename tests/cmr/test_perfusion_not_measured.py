"""A first-pass perfusion series is recognised and said in `declined` as recognised but not measured, as T1 / T2 maps
are (break42b F9): by its name, and by its dynamics alone (many images per slice at one trigger delay over more than
a breath-hold). Built from the demo LGE magnitude slices (tests/data)."""
from __future__ import annotations

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomnode.analysis.phase_text import maps_not_measured
from dicomnode.cmr import understand_study
from dicomnode.cmr.grouping import read_header
from tests.data.field_inputs import demo_lge_files


def _perfusion(tmp_path, description: str, dynamics: int = 40) -> list:
    """3 short-axis slices x `dynamics` dynamics, one per heartbeat (AcquisitionTime 1 s apart), saturation recovery
    at one trigger delay per slice, in one series."""
    series_uid, paths = generate_uid(), []
    for slice_index, source in enumerate(demo_lge_files()[1:4]):
        for dynamic in range(dynamics):
            ds = pydicom.dcmread(source)
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, 40, description
            ds.ProtocolName = description
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
            ds.ScanningSequence, ds.SequenceName, ds.InversionTime = "GR", "*tfl2d1", 100
            ds.TriggerTime = 50 + 150 * slice_index
            ds.AcquisitionTime = f"12{dynamic // 60:02d}{dynamic % 60:02d}"
            ds.InstanceNumber = slice_index * dynamics + dynamic + 1
            path = tmp_path / f"perf_{slice_index}_{dynamic:02d}.dcm"
            ds.save_as(path, enforce_file_format=False)
            paths.append(path)
    return paths


@pytest.mark.parametrize("description", ["Perfusion_SR_stress", "SAX dynamic"], ids=["named", "by_its_dynamics"])
def test_a_perfusion_series_is_recognised_but_not_measured(tmp_path, description):
    study = understand_study([read_header(p) for p in _perfusion(tmp_path, description)])
    (series,) = study.series
    assert series.sequence.value == "perfusion", series.sequence.evidence
    ((uid, reason),) = maps_not_measured(study.series)
    assert uid == series.series_instance_uid
    assert reason.startswith(f'series 40 "{description}" (perfusion, ')
    assert "first-pass perfusion series (3 slice position(s) x 40 dynamics) recognised but not measured" in reason
    assert "this version measures LGE and cine only" in reason
