"""A stack acquired in two breath-hold blocks, each block its own series (break46c finding 2): complementary slice
positions on one grid merge into one stack (grouping.merge_complementary_stacks); overlapping, gapped or otherwise
incompatible series stay alternatives, and the preference text never claims "the same coverage" for series whose
slice positions differ. Real-shaped DICOM (the demo Sunnybrook cine and the demo LGE stack) through the study code."""
from __future__ import annotations

import pydicom
from pydicom.uid import generate_uid

from dicomnode.cmr import understand_study
from dicomnode.cmr.grouping import read_header
from tests.data.field_inputs import demo_cine_files, lge_variant


def _demo_cine(dest, change) -> list:
    """The demo cine short-axis series (10 slices x 20 phases) under dest, change(ds, slice, phase) applied;
    change returning False leaves that image out."""
    datasets = [pydicom.dcmread(p) for p in demo_cine_files()]
    datasets = [ds for ds in datasets if str(ds.SeriesNumber) == "5"]
    by_slice: dict = {}
    for ds in datasets:
        by_slice.setdefault(round(float(ds.SliceLocation), 2), []).append(ds)
    dest.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    paths = []
    for slice_index, position in enumerate(sorted(by_slice)):
        for phase, ds in enumerate(sorted(by_slice[position], key=lambda d: float(d.TriggerTime))):
            ds.StudyInstanceUID = study_uid
            if change(ds, slice_index, phase) is False:
                continue
            path = dest / f"IM{slice_index:02d}{phase:02d}.dcm"
            ds.save_as(path, enforce_file_format=False)
            paths.append(path)
    return paths


def _second_block(from_slice: int, same_number: bool = False):
    uid = generate_uid()

    def change(ds, slice_index, _phase=None):
        if slice_index >= from_slice:
            ds.SeriesInstanceUID = uid
            ds.SeriesNumber = int(ds.SeriesNumber) + (0 if same_number else 1)
    return change


def test_a_cine_split_in_two_series_is_merged_into_one_stack(tmp_path):
    paths = _demo_cine(tmp_path, _second_block(5))
    study = understand_study([read_header(p) for p in paths])
    cines = [s for s in study.series if s.sequence.value == "cine"]
    assert len(cines) == 1, [s.summary() for s in study.series]
    cine = study.preferred("cine")
    assert (cine.view.value, cine.slices, cine.phases) == ("sax", 10, 20)
    assert len(cine.series_instance_uids) == 2 and cine.series_number == 5
    assert any(note.startswith("merged 2 series (SeriesNumber 5, 6") and "5 + 5 slice positions, none in common"
               in note and "20 image(s) per slice position" in note for note in cine.notes), cine.notes
    volume = study.load_volume(cine)
    assert volume.shape[:2] == (20, 10)


def test_a_cine_split_under_one_series_number_is_merged(tmp_path):
    paths = _demo_cine(tmp_path, _second_block(4, same_number=True))
    study = understand_study([read_header(p) for p in paths])
    cine = study.preferred("cine")
    assert (cine.slices, cine.phases, len(cine.series_instance_uids)) == (10, 20, 2)
    assert [s.key for s in study.series if s.sequence.value == "cine"] == [cine.key]


def test_an_lge_stack_split_in_two_series_is_merged(tmp_path):
    """The demo LGE (one series per slice) stored as two series of 4 slices each."""
    uids = generate_uid(), generate_uid()

    def change(ds, index):
        ds.SeriesInstanceUID, ds.SeriesNumber = uids[index >= 12], 21 + (index >= 12)

    paths = lge_variant(tmp_path, change, indices=range(8, 16))
    study = understand_study([read_header(p) for p in paths])
    lge = [s for s in study.series if s.sequence.value == "lge"]
    assert [s.slices for s in lge] == [8], [s.summary() for s in study.series]
    assert any("4 + 4 slice positions" in note for note in lge[0].notes)


def test_cine_blocks_of_other_phase_counts_stay_apart(tmp_path):
    """The second block with 10 of the 20 phases: its cardiac phases are not the first block's, so no merge."""
    block = _second_block(5)

    def change(ds, slice_index, phase):
        block(ds, slice_index)
        return slice_index < 5 or phase % 2 == 0

    paths = _demo_cine(tmp_path, change)
    study = understand_study([read_header(p) for p in paths])
    cines = [s for s in study.series if s.sequence.value == "cine"]
    assert sorted((s.slices, s.phases) for s in cines) == [(5, 10), (5, 20)]
    assert not any(note.startswith("merged 2 series") for s in cines for note in s.notes)


def _lge_halves(tmp_path, first: range, second: range):
    """Two series of the demo LGE stack (PSIR slices 8-15, one series per slice as sent): `first` from one copy as
    series 21 and `second` from another copy as series 22, in one study, one SeriesTime (the time decides nothing)."""
    uids = generate_uid(), generate_uid()

    def one_series(ds, _index):
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesTime = uids[0], 21, "083000"

    a = lge_variant(tmp_path / "a", one_series, indices=first)
    study_uid = pydicom.dcmread(a[0], stop_before_pixels=True).StudyInstanceUID
    frame_uid = pydicom.dcmread(a[0], stop_before_pixels=True).FrameOfReferenceUID

    def change(ds, _index):
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = study_uid, frame_uid
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesTime = uids[1], 22, "083000"

    b = lge_variant(tmp_path / "b", change, indices=second)
    return understand_study([read_header(p) for p in a + b])


def test_overlapping_series_stay_alternatives(tmp_path):
    study = _lge_halves(tmp_path, range(8, 14), range(12, 16))
    lge = [s for s in study.series if s.sequence.value == "lge"]
    assert sorted(s.slices for s in lge) == [4, 6]
    assert not any(note.startswith("merged 2 series") for s in lge for note in s.notes)


def test_series_with_a_gap_between_them_stay_alternatives_and_are_not_called_the_same_coverage(tmp_path):
    """Slices 8-10 and 13-15: complementary but not one regular stack (two slices missing between them), so they stay
    apart; the text saying why one was left aside names the other positions, never "the same coverage"."""
    study = _lge_halves(tmp_path, range(8, 11), range(13, 16))
    lge = [s for s in study.series if s.sequence.value == "lge"]
    assert sorted(s.slices for s in lge) == [3, 3]
    texts = [note for s in lge for note in s.notes if "left aside" in note]
    assert texts, [s.notes for s in lge]
    assert all("the same coverage" not in text for text in texts), texts
    assert any("at other slice positions" in text and "it has no slice at" in text for text in texts), texts
