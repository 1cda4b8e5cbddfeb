"""Negative values in a lossy-compressed magnitude series that dip only slightly below 0 are the codec's undershoot,
and the stack warning says so instead of sending the reader to the rescale (break45c #7)."""
from __future__ import annotations

from types import SimpleNamespace

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset

from dicomnode.analysis.cine import lossy_series
from dicomnode.cmr.intensity import magnitude_floor_note


def test_lossy_undershoot_is_not_blamed_on_the_rescale():
    note = magnitude_floor_note(29.0, "cine", [], lossy=True, peak=721.0)
    assert "lossy-compressed magnitude cine" in note and "undershoot of the lossy codec" in note
    assert "-29" in note and "+29" in note and "rescale error" in note
    assert "check the series' rescale" not in note


def test_a_large_offset_or_a_negative_intercept_still_points_to_the_rescale():
    for note in (magnitude_floor_note(300.0, "cine", [], lossy=True, peak=721.0),  # 42 % of the maximum: an offset
                 magnitude_floor_note(29.0, "cine", [-29.0], lossy=True, peak=721.0),
                 magnitude_floor_note(29.0, "cine", [], lossy=False, peak=721.0)):
        assert "check the series' rescale" in note and "undershoot" not in note


def _instance(flag: str | None, syntax: str = "1.2.840.10008.1.2.1"):
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax
    if flag is not None:
        dataset.LossyImageCompression = flag
    return SimpleNamespace(dataset=dataset)


def test_lossy_series_reads_the_flag_and_the_transfer_syntax():
    assert lossy_series(SimpleNamespace(instances=[_instance("00"), _instance("01")]))
    assert lossy_series(SimpleNamespace(instances=[_instance(None, "1.2.840.10008.1.2.4.50")]))
    assert not lossy_series(SimpleNamespace(instances=[_instance(None), _instance("00")]))
