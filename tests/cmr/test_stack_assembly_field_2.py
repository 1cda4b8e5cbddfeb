"""Stack assembly and choice, second round (rebreak defects 4, 6 and 8): a sparse repeat over the same heart does not
beat a contiguous stack; a slice re-acquired inside its own LGE series at another TI is a re-acquisition, not mapping
source images or a second phase; a series received twice under new UIDs (a PACS re-route, new SOP Instance UIDs or
the same ones) is counted once, never 'left aside for itself' and never a sender reusing UIDs."""
from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicomnode.cmr import understand_study
from dicomnode.cmr.frames import are_repeats, frames_of, images_per_slice, reacquired
from dicomnode.cmr.grouping import read_header
from dicomnode.cmr.study import PREFERENCE_RULE, Coverage

ROWS = COLS = 16
#: a short-axis plane (row, column direction) as a scanner plans it; positions lie along its normal
SAX = np.array([-0.104592, 0.346381, -0.932245, -0.733192, -0.660188, -0.163037])
NORMAL = np.cross(SAX[:3], SAX[3:]) / np.linalg.norm(np.cross(SAX[:3], SAX[3:]))


def _tm(seconds: float) -> str:
    return f"{int(seconds // 3600):02d}{int(seconds // 60 % 60):02d}{seconds % 60:09.6f}"


class Scan:
    """Small classic MR LGE images of one study; slice positions in mm along NORMAL; pixel values per position
    (`value`) so that two images of one position hold the same pixels unless told otherwise."""

    def __init__(self, folder):
        self.folder = folder
        self.study_uid, self.frame_uid = generate_uid(), generate_uid()
        self.series_uids: dict[int, str] = {}
        self.paths = []

    def image(self, number: int, at_mm: float, *, description: str = "LGE_SAX", time: float = 9 * 3600 + 1800,
              inversion: float | None = 300.0, instance: int = 1, thickness: str | None = "12", value: int | None = None,
              series_uid: str | None = None, sop_uid: str | None = None, image_type=("ORIGINAL", "PRIMARY", "M"),
              trigger: float = 400.0, name: str | None = None) -> pydicom.Dataset:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.Modality = MRImageStorage, "MR"
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = self.study_uid, self.frame_uid
        ds.SeriesInstanceUID = series_uid or self.series_uids.setdefault(number, generate_uid())
        ds.SeriesNumber, ds.InstanceNumber = number, instance
        ds.SeriesDescription = ds.ProtocolName = description
        ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _tm(time)
        ds.ImageType = list(image_type)
        ds.ScanningSequence, ds.SequenceVariant, ds.SequenceName = ["GR", "IR"], ["SK", "SP", "MP"], "*tfi2d1"
        if inversion is not None:
            ds.InversionTime = f"{inversion:g}"
        ds.TriggerTime = f"{trigger:g}"
        ds.RepetitionTime, ds.EchoTime, ds.FlipAngle, ds.MRAcquisitionType = "700", "2", "25", "2D"
        if thickness is not None:
            ds.SliceThickness = thickness
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in SAX]
        position = -40.0 * (SAX[:3] + SAX[3:]) + NORMAL * at_mm
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.PixelSpacing = [5.0, 5.0]
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        pixels = np.full((ROWS, COLS), 100 + int(round(at_mm)) if value is None else value, np.int64)
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        path = self.folder / (name or f"S{number:04d}_I{instance:03d}_{len(self.paths):03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        self.paths.append(path)
        return ds

    def study(self, paths=None):
        return understand_study([read_header(p) for p in (paths or self.paths)])


def _lge(study):
    return [s for s in study.series if s.sequence.value == "lge" and s.view.value == "sax"]


def _used(volume) -> set[str]:
    return {ref.sop_instance_uid for row in volume.frames for ref in row}


# --- defect 4: coverage must not favour a sparse repeat --------------------------------------------------------------

@pytest.mark.parametrize("thickness", ["12", "8", None])
def test_a_sparse_later_repeat_does_not_beat_a_contiguous_stack_over_the_same_heart(tmp_path, thickness):
    """#12: 6 slices 12 mm apart (0-60 mm); #14 ten minutes later: 4 slices 20 mm apart over the same 60 mm.
    positions x spacing made #14 'cover' 80 mm against 72; it samples less of the heart: #12 is analysed, and the
    warning says why (SliceThickness 12, 8, or absent: the finer repeat's spacing stands in)."""
    scan = Scan(tmp_path)
    for k in range(6):
        scan.image(12, 12.0 * k, instance=k + 1, thickness=thickness)
    for j in range(4):
        scan.image(14, 20.0 * j, description="LGE_SAX_repeat", time=9 * 3600 + 2400, instance=j + 1,
                   thickness=thickness)
    study = scan.study()
    chosen = study.preferred("lge")
    assert (chosen.series_number, chosen.slices) == (12, 6), [s.preferred_reason for s in study.series]
    volume = study.load_volume(chosen)
    (warning,) = [w for w in volume.warnings if "left aside" in w]
    assert "series 14 'LGE_SAX_repeat'" in warning and "more sparsely" in warning
    # thin slices: it samples less (4 x 8 mm slabs + gaps counted 12 mm each); 12 mm slices: about as much, with
    # fewer positions over the same 60 mm
    assert "4 slice position(s)" in warning, warning
    assert ("against 6 (" if thickness == "8" else "against 6 of this series over the 60 mm") in warning, warning
    # the contiguous stack does sample the positions of the sparse one: no 'this stack has no slice at' warning
    assert not any("this stack has no slice" in w for w in volume.warnings), volume.warnings
    (repeat,) = [s for s in study.series if s.series_number == 14]
    assert not repeat.preferred and any("not preferred" in n and "more sparsely" in n for n in repeat.notes)


def test_a_later_repeat_reaching_further_is_still_preferred(tmp_path):
    """#12: 5 slices 12 mm apart (0-48 mm); #14 later: 6 slices 16 mm apart (0-80 mm), 8 mm slices: #14 samples more
    of the heart (its gaps count up to 12 mm each) and is analysed; the positions only #12 samples are named."""
    scan = Scan(tmp_path)
    for k in range(5):
        scan.image(12, 12.0 * k, instance=k + 1, thickness="8")
    for k in range(6):
        scan.image(14, 16.0 * k, description="LGE_SAX_repeat", time=9 * 3600 + 2400, instance=k + 1, thickness="8")
    study = scan.study()
    chosen = study.preferred("lge")
    assert chosen.series_number == 14
    warnings = study.load_volume(chosen).warnings
    assert any("series 12 'LGE_SAX'" in w and "5 slice position(s)" in w for w in warnings), warnings


def test_coverage_counts_the_heart_sampled_not_positions_times_spacing(tmp_path):
    scan = Scan(tmp_path)
    for k in range(6):
        scan.image(1, 12.0 * k, instance=k + 1)  # contiguous
        scan.image(3, 12.0 * k, instance=k + 1) if k != 2 else None  # one slice missing
    for j in range(4):
        scan.image(2, 20.0 * j, instance=j + 1)  # sparse
    frames = {n: [f for p in scan.paths for f in frames_of(read_header(p))
                  if int(f.header.dataset.SeriesNumber) == n] for n in (1, 2, 3)}
    cover = {n: Coverage.of(fs) for n, fs in frames.items()}
    assert cover[1].length_mm == pytest.approx(12 + 5 * 12, abs=0.01)
    assert cover[2].length_mm == pytest.approx(12 + 3 * 18, abs=0.01)  # 20 mm gaps count max(1.5 x 12, 12 + 4)
    assert cover[3].length_mm == pytest.approx(12 + 3 * 12 + 18, abs=0.01)  # a missing slice shortens it
    assert cover[2].wide_gaps and not cover[1].wide_gaps
    assert cover[2].sparser_than(cover[1])[:2] == (4, 6)
    assert cover[1].sparser_than(cover[2]) is None
    assert "1.5 x SliceThickness" in PREFERENCE_RULE


# --- defect 6: a slice re-acquired inside its own LGE series ----------------------------------------------------------

def _reacquired_series(scan, extra_tis, slice_k=3, gap_s=20.0):
    start = 9 * 3600 + 1800
    for k in range(6):
        scan.image(12, 12.0 * k, instance=k + 1, time=start + 20 * k)
    sops = []
    for j, ti in enumerate(extra_tis):
        ds = scan.image(12, 12.0 * slice_k, instance=7 + j, inversion=ti, time=start + 140 + gap_s * j,
                        trigger=380.0, value=900 + j)
        sops.append(ds.SOPInstanceUID)
    return sops


@pytest.mark.parametrize("extra_tis", [[340], [340, 380]], ids=["once", "twice"])
def test_a_slice_reacquired_in_its_series_at_another_ti_replaces_its_position(tmp_path, extra_tis):
    """One LGE series of 6 slices; slice 3 acquired again at the end of the series at TI 340 (and 380): an LGE of
    6 x 1 (not 6 x 2 'phases', not T1-mapping source images), the volume uses the latest image at that position, and
    the stack warnings and excluded_instances name the re-acquisition."""
    scan = Scan(tmp_path)
    latest = _reacquired_series(scan, extra_tis)[-1]
    study = scan.study()
    (series,) = study.series
    assert series.sequence.value == "lge", series.sequence.evidence
    assert (series.slices, series.phases) == (6, 1)
    assert any("re-acquisition of that slice" in n for n in series.notes), series.notes
    volume = study.load_volume(study.preferred("lge"))
    assert volume.shape[:2] == (1, 6)
    assert latest in _used(volume)
    (warning,) = [w for w in volume.warnings if "re-acquisition" in w]
    assert "slice at 36.00 mm acquired" in warning and f"InversionTime {extra_tis[-1]} ms" in warning
    assert f"kept the latest, instance {latest}" in warning
    assert len([e for e in study.excluded_instances if "re-acquisition" in e["reason"]]) == len(extra_tis)


def test_a_slice_reacquired_in_its_series_after_replanning_by_a_millimetre_replaces_its_position(tmp_path):
    """As above, the re-acquired slice planned 0.8 mm beside the first (a quarter of the 12 mm slice is 3 mm): not a
    seventh slice 0.8 mm from the sixth, but that slice acquired again; the volume has 6 slices, the latest used."""
    scan = Scan(tmp_path)
    start = 9 * 3600 + 1800
    for k in range(6):
        scan.image(12, 12.0 * k, instance=k + 1, time=start + 20 * k)
    later = scan.image(12, 36.8, instance=7, inversion=340, time=start + 140, value=900)
    study = scan.study()
    (series,) = study.series
    assert (series.sequence.value, series.slices, series.phases) == ("lge", 6, 1)
    volume = study.load_volume(series)
    assert volume.shape[:2] == (1, 6) and later.SOPInstanceUID in _used(volume)
    assert any("slice at 36.80 mm acquired 2 times" in w for w in volume.warnings), volume.warnings
    assert not any("irregular slice spacing" in w for w in volume.warnings), volume.warnings


def test_a_slice_reacquired_in_its_own_one_slice_series_at_another_ti_joins_the_stack(tmp_path):
    """One series per slice (20-25); series 23 holds slice 3 twice, the second 90 s later at TI 350: one stack of 6
    slices, the later image used."""
    scan = Scan(tmp_path)
    start = 9 * 3600 + 1800
    for k in range(6):
        scan.image(20 + k, 12.0 * k, description="LGE_single", time=start + 20 * k)
    later = scan.image(23, 36.0, description="LGE_single", time=start + 150, inversion=350, instance=2, value=777)
    study = scan.study()
    chosen = study.preferred("lge")
    assert chosen.slices == 6 and chosen.phases == 1, [s.summary() for s in study.series]
    volume = study.load_volume(chosen)
    assert volume.shape[:2] == (1, 6) and later.SOPInstanceUID in _used(volume)


def test_images_of_one_breath_hold_at_another_ti_are_not_a_reacquisition(tmp_path):
    """Three images of one position 1 s apart at TI 100 / 180 / 260 (one Look-Locker / MOLLI breath-hold) stay distinct
    images, in a one-image stack too; 80 s apart (separate breath-holds) they are a re-acquired slice."""
    scan = Scan(tmp_path)
    scan.image(1, 0.0)
    header = read_header(scan.paths[0])
    (frame,) = frames_of(header)
    base = frame.acquisition_time
    one_hold = [dataclasses.replace(frame, inversion_time=ti, acquisition_time=base + k)
                for k, ti in enumerate((100.0, 180.0, 260.0))]
    assert not reacquired(one_hold) and not are_repeats(one_hold, one_per_slice=True)
    assert images_per_slice([one_hold, [frame]]) == [3, 1]
    separate = [dataclasses.replace(frame, inversion_time=ti, acquisition_time=base + 80.0 * k)
                for k, ti in enumerate((300.0, 340.0))]
    assert reacquired(separate) and are_repeats(separate, one_per_slice=True)
    assert not are_repeats(separate)  # without the one-image stack around it, another TI is not a repeat
    assert images_per_slice([separate, [frame]]) == [1, 1]
    # another reconstruction, or no AcquisitionTime, is never a re-acquisition
    assert not reacquired([separate[0], dataclasses.replace(separate[1], image_type=("ORIGINAL", "PRIMARY", "P"))])
    assert not reacquired([dataclasses.replace(f, acquisition_time=None) for f in separate])


# --- defect 8: a series received twice under new UIDs ----------------------------------------------------------------

def _reroute(scan, paths, same_sops: bool, folder, keep=None):
    """Copies of `paths` under a new SeriesInstanceUID (and new SOP Instance UIDs unless `same_sops`), as a PACS
    re-route sends them."""
    folder.mkdir()
    new_series = generate_uid()
    copies = []
    for i, path in enumerate(paths):
        if keep is not None and i not in keep:
            continue
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = new_series
        if not same_sops:
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        copies.append(folder / path.name)
        ds.save_as(copies[-1], enforce_file_format=True)
    return copies, new_series


@pytest.mark.parametrize("same_sops", [False, True], ids=["new-sop-uids", "same-sop-uids"])
@pytest.mark.parametrize("copy_first", [False, True])
def test_a_series_rerouted_under_new_uids_is_counted_once(tmp_path, same_sops, copy_first):
    """The LGE #12 received twice, the second copy re-routed by a PACS with a new SeriesInstanceUID (and new SOP
    Instance UIDs, or the same ones): one 6-slice LGE, one note 'series 12 received twice (a re-send under new
    UIDs...)', no 'left aside for series 12', no declined or excluded image, whatever copy is read first."""
    scan = Scan(tmp_path)
    for k in range(6):
        scan.image(12, 12.0 * k, instance=k + 1)
    original = list(scan.paths)
    copies, new_series = _reroute(scan, original, same_sops, tmp_path / "copy")
    study = scan.study(copies + original if copy_first else original + copies)
    stacks = _lge(study)
    assert len(stacks) == 1 and stacks[0].slices == 6, [s.summary() for s in study.series]
    (stack,) = stacks
    assert study.declined == [] and study.excluded_instances == []
    (note,) = [n for n in stack.notes if "received twice" in n]
    assert note.startswith("series 12 received twice (a re-send under ") and note.endswith("counted once")
    assert ("same SOP Instance UIDs" in note) == same_sops
    volume = study.load_volume(stack)
    assert volume.shape[:2] == (1, 6)
    assert not any("left aside" in w for w in volume.warnings), volume.warnings
    assert not any("left aside" in n for s in study.series for n in s.notes)
    assert len({h.series_instance_uid for h in stack.instances}) == 1


def test_a_reroute_that_renames_the_series_is_counted_once(tmp_path):
    """The PACS re-route also changed the SeriesDescription (a routing prefix): the images are the same, counted once."""
    scan = Scan(tmp_path)
    for k in range(6):
        scan.image(12, 12.0 * k, instance=k + 1)
    copies, _ = _reroute(scan, list(scan.paths), False, tmp_path / "copy")
    for path in copies:
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "ROUTED LGE_SAX"
        ds.save_as(path, enforce_file_format=True)
    study = scan.study(scan.paths + copies)
    (stack,) = study.series
    assert stack.slices == 6 and any(n.startswith("series 12 received twice") for n in stack.notes)


def test_a_partial_reroute_is_counted_once(tmp_path):
    """Only 4 of the 6 images re-routed under new UIDs: still one series, no 4-slice 'repeat' left aside."""
    scan = Scan(tmp_path)
    for k in range(6):
        scan.image(12, 12.0 * k, instance=k + 1)
    copies, _ = _reroute(scan, list(scan.paths), False, tmp_path / "copy", keep={0, 1, 2, 3})
    study = scan.study(scan.paths + copies)
    (stack,) = study.series
    assert stack.slices == 6 and any("series 12 received twice" in n and "4 image(s)" in n for n in stack.notes)


def test_a_per_slice_export_rerouted_is_one_stack_with_one_note(tmp_path):
    """One series per slice (100-105), the whole export re-routed under new UIDs: one 6-slice stack, one note."""
    scan = Scan(tmp_path)
    for k in range(6):
        scan.image(100 + k, 12.0 * k, description="LGE_single")
    copies, _ = _reroute(scan, list(scan.paths), False, tmp_path / "copy")
    study = scan.study(scan.paths + copies)
    stacks = _lge(study)
    assert [s.slices for s in stacks] == [6], [s.summary() for s in study.series]
    (note,) = [n for n in stacks[0].notes if "received twice" in n]
    assert note.startswith("series 100-105 (6 series) received twice") and "6 image(s)" in note
    assert not any("left aside" in w for w in study.load_volume(stacks[0]).warnings)


def test_same_number_and_times_but_other_pixel_data_is_not_a_resend(tmp_path):
    """A second SeriesInstanceUID of series 12 with the same positions and times but other pixel values (a
    re-reconstruction): both series stay, the choice between them is the preference's."""
    scan = Scan(tmp_path)
    for k in range(6):
        scan.image(12, 12.0 * k, instance=k + 1)
    other = generate_uid()
    for k in range(6):
        scan.image(12, 12.0 * k, instance=k + 1, series_uid=other, value=500 + k)
    study = scan.study()
    assert len(_lge(study)) == 2
    assert not any("received twice" in n for s in study.series for n in s.notes)
    # named apart by SeriesInstanceUID and said to be two copies of one acquisition, not 'taken in series order'
    (warning,) = [w for w in study.load_volume(study.preferred("lge")).warnings if "left aside" in w]
    assert f"SeriesInstanceUID {other}" in warning and "ImageType" not in warning
    assert "a second copy of the same acquisition" in warning and "series order" in warning


def test_one_sop_uid_for_another_image_in_a_new_series_is_still_a_sender_error(tmp_path):
    """The same SOPInstanceUID under another SeriesInstanceUID of the same number, but other pixel data: a UID
    collision (declined, 'the sender reuses UIDs'), not a re-route."""
    scan = Scan(tmp_path)
    first = scan.image(12, 0.0)
    scan.image(12, 12.0, instance=2)
    scan.image(12, 0.0, series_uid=generate_uid(), sop_uid=first.SOPInstanceUID, value=4000, name="collision.dcm")
    study = scan.study()
    (declined,) = study.declined
    assert "two different images share SOPInstanceUID" in declined.reason and "sender reuses UIDs" in declined.reason
    assert "pixel data differ" in declined.reason
