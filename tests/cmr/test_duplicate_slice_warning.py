"""A cine slice sent twice (every cardiac phase again under new SOPInstanceUIDs): one stack warning for the slice
position, naming the rule that chose the copy kept, not one per phase (break46c finding 8)."""
from __future__ import annotations

import pydicom
from pydicom.uid import generate_uid

from dicomnode.cmr import understand_study
from dicomnode.cmr.grouping import read_header
from dicomnode.cmr.volume import DUPLICATE_RULE
from tests.data.field_inputs import demo_cine_files


def test_a_duplicated_cine_slice_gives_one_warning_for_its_position(tmp_path):
    datasets = [pydicom.dcmread(p) for p in demo_cine_files()]
    datasets = [ds for ds in datasets if str(ds.SeriesNumber) == "5"]
    first = min(round(float(ds.SliceLocation), 2) for ds in datasets)
    study_uid = generate_uid()
    paths = []
    for index, ds in enumerate(datasets):
        ds.StudyInstanceUID = study_uid
        paths.append(tmp_path / f"IM{index:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=False)
        if round(float(ds.SliceLocation), 2) == first:
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = int(ds.InstanceNumber) + 1000
            paths.append(tmp_path / f"DUP{index:04d}.dcm")
            ds.save_as(paths[-1], enforce_file_format=False)
    study = understand_study([read_header(p) for p in paths])
    volume = study.load_volume(study.preferred("cine"))
    assert volume.shape[:2] == (20, 10)
    lines = [w for w in volume.warnings if w.startswith("duplicate frame")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("duplicate frames at slice") and "20 images repeat another image" in lines[0]
    assert DUPLICATE_RULE in lines[0]
