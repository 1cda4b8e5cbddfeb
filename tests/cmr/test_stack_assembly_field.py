"""Stack assembly and choice as scanners send LGE: one-series-per-slice exports of two reconstructions (GE / Philips,
the same ImageType value 3), a reconstruction with a missing image, a repeat with fewer slices, a single slice
re-acquired in its own series, and magnitude + PSIR images in ONE series (lgebreak defects 5, 6 and 8)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicomnode.cmr import understand_study
from dicomnode.cmr.frames import frames_of
from dicomnode.cmr.grouping import read_header
from dicomnode.cmr.types import StudyError
from dicomnode.cmr.volume import build_volume

SLICES = 6
SPACING_MM = 10.0
ROWS = COLS = 16
#: a short-axis plane (row, column direction) as a scanner plans it; positions lie along its normal from 0 mm
SAX = np.array([-0.104592, 0.346381, -0.932245, -0.733192, -0.660188, -0.163037])
NORMAL = np.cross(SAX[:3], SAX[3:]) / np.linalg.norm(np.cross(SAX[:3], SAX[3:]))


class Scan:
    """Writes small classic MR images of one study: short-axis planes SPACING_MM apart (slice k at k x SPACING_MM
    along the normal), 16x16 pixels."""

    def __init__(self, folder):
        self.folder = folder
        self.study_uid, self.frame_uid = generate_uid(), generate_uid()
        self.series_uids: dict[int, str] = {}
        self.paths = []

    def image(self, number: int, k: int, *, description: str = "MDE SAX", image_type=("ORIGINAL", "PRIMARY", "OTHER"),
              signed: bool = False, time: str = "090000", inversion: float = 300.0, instance: int = 1,
              shift_mm: float = 0.0, date: str | None = None,
              time_keywords=("SeriesTime", "AcquisitionTime", "ContentTime")) -> None:
        """Slice k of series `number`; `signed` stores the values with RescaleIntercept -4096 (a PSIR). `time` goes
        into `time_keywords` as written (AcquisitionDateTime: `date` + `time`), `date` into SeriesDate,
        AcquisitionDate and ContentDate where those times are given."""
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.Modality = MRImageStorage, "MR"
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = self.study_uid, self.frame_uid
        ds.SeriesInstanceUID = self.series_uids.setdefault(number, generate_uid())
        ds.SeriesNumber, ds.InstanceNumber = number, instance
        ds.SeriesDescription = ds.ProtocolName = description
        for keyword in time_keywords:
            if keyword == "AcquisitionDateTime":
                ds.AcquisitionDateTime = (date or "") + time
                continue
            ds[keyword] = pydicom.DataElement(pydicom.datadict.tag_for_keyword(keyword), "TM", time)
            if date is not None:
                setattr(ds, keyword.replace("Time", "Date"), date)
        ds.ImageType = list(image_type)
        ds.ScanningSequence, ds.SequenceVariant, ds.SequenceName = ["GR", "IR"], ["SP", "MP"], "fgre"
        ds.InversionTime, ds.TriggerTime = f"{inversion:g}", "400"
        ds.RepetitionTime, ds.EchoTime, ds.FlipAngle, ds.MRAcquisitionType = "700", "2", "25", "2D"
        ds.SliceThickness = "8"
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in SAX]
        position = -40.0 * (SAX[:3] + SAX[3:]) + NORMAL * (SPACING_MM * k + shift_mm)
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.PixelSpacing = [5.0, 5.0]
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        values = np.full((ROWS, COLS), 100 + k, np.int64)
        if signed:
            ds.RescaleIntercept, ds.RescaleSlope = "-4096", "1"
            values = values - 150 + 4096
        ds.PixelData = values.astype(np.uint16).tobytes()
        path = self.folder / f"S{number:04d}_I{instance:03d}_{len(self.paths):03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        self.paths.append(path)

    def study(self):
        return understand_study([read_header(p) for p in self.paths])


def _lge(study):
    return [s for s in study.series if s.sequence.value == "lge" and s.view.value == "sax"]


def _numbers(volume, study) -> set[int]:
    """SeriesNumbers of the instances a volume was built from."""
    header = {h.sop_instance_uid: h.dataset for s in study.series for h in s.instances}
    return {int(header[ref.sop_instance_uid].SeriesNumber) for row in volume.frames for ref in row}


# --- defect 5: one series per slice, two reconstructions -------------------------------------------------------------

@pytest.mark.parametrize("cue", ["description", "sign", "image_type_value4"])
def test_per_slice_reconstructions_with_one_image_type_value3_are_not_merged_into_one_stack(tmp_path, cue):
    """GE-like per-slice export, PSIR and magnitude of each slice in their own series numbered in reconstruction
    order (PSIR first on even slices, magnitude first on odd ones), ImageType value 3 'OTHER' for both: told apart by
    the description, the sign of the values or ImageType value 4; never one stack of alternating reconstructions."""
    scan = Scan(tmp_path)
    number = 100
    for k in range(SLICES):
        for role in (("P", "M") if k % 2 == 0 else ("M", "P")):
            psir = role == "P"
            scan.image(number, k,
                       description=("MDE PSIR" if psir else "MDE MAG") if cue == "description" else "MDE SAX",
                       signed=psir and cue != "image_type_value4",
                       image_type=("ORIGINAL", "PRIMARY", "OTHER") + (("PSIR" if psir else "MAG",)
                                                                    if cue == "image_type_value4" else ()))
            number += 1
    study = scan.study()
    stacks = _lge(study)
    assert sorted(s.slices for s in stacks) == [SLICES, SLICES], [s.summary() for s in study.series]
    psir_numbers = {100, 103, 104, 107, 108, 111}
    members = [{int(h.dataset.SeriesNumber) for h in s.instances} for s in stacks]
    assert psir_numbers in members and set(range(100, 112)) - psir_numbers in members
    chosen = study.preferred("lge")
    assert {int(h.dataset.SeriesNumber) for h in chosen.instances} == psir_numbers
    volume = study.load_volume(chosen)
    assert _numbers(volume, study) == psir_numbers
    # the other reconstruction of the same slices, in its own series, is a note (as for every Siemens pair), not a
    # stack warning: the stack analysed is whole and of one reconstruction
    assert any("left aside" in n and "101-110" in n for n in chosen.notes), chosen.notes
    assert not any("left aside" in w for w in volume.warnings), volume.warnings
    # ... and one line for the LGE block, no caution on the numbers, so that nobody wonders which was measured
    # (break2 finding 6)
    description = "MDE MAG" if cue == "description" else "MDE SAX"
    assert study.left_aside == {chosen.key: [
        f"series 101-110 '{description}' (magnitude of the same slices) not measured: PSIR preferred"]}


def test_a_missing_image_of_one_reconstruction_does_not_pull_in_the_other(tmp_path):
    """Magnitude then PSIR per slice, the magnitude of slice 2 not sent: the PSIR stack keeps all 6 slices, the
    magnitude stack has 5 and says which position it lacks; the complete PSIR stack is analysed."""
    scan = Scan(tmp_path)
    number = 100
    for k in range(SLICES):
        for psir in (False, True):
            if not (k == 2 and not psir):
                scan.image(number, k, description="MDE PSIR" if psir else "MDE MAG", signed=psir)
            number += 1
    study = scan.study()
    by_description = {s.description: s for s in _lge(study)}
    psir, magnitude = by_description["MDE PSIR"], by_description["MDE MAG"]
    assert (psir.slices, magnitude.slices) == (SLICES, SLICES - 1)
    assert {int(h.dataset.SeriesNumber) for h in psir.instances} == {101, 103, 105, 107, 109, 111}
    assert study.preferred("lge") is psir
    assert any("no slice at 20.00 mm" in n for n in magnitude.notes), magnitude.notes
    volume = study.load_volume(psir)
    assert volume.shape[:2] == (1, SLICES)
    assert any("MDE MAG" in w and "no slice at 20.00 mm" in w for w in volume.warnings), volume.warnings


def test_the_chosen_stack_says_which_position_a_sibling_reconstruction_has_and_it_lacks(tmp_path):
    """The PSIR of slice 3 was not sent: the complete magnitude stack is analysed (a stack missing a slice is not
    preferred, PSIR or not) and the warning names the PSIR stack and why; had the PSIR been taken, its missing slice
    would have shortened the volumes."""
    scan = Scan(tmp_path)
    for k in range(SLICES):
        scan.image(20 + k, k, description="LGE MAG", image_type=("ORIGINAL", "PRIMARY", "M"))
        if k != 3:
            scan.image(40 + k, k, description="LGE PSIR", image_type=("DERIVED", "PRIMARY", "PSIR"), signed=True)
    study = scan.study()
    chosen = study.preferred("lge")
    assert (chosen.description, chosen.slices) == ("LGE MAG", SLICES)
    volume = study.load_volume(chosen)
    (warning,) = [w for w in volume.warnings if "left aside" in w]
    assert "LGE PSIR" in warning and "5 slice position(s)" in warning and "no slice at 30.00 mm" in warning


# --- defect 6: which repeat ----------------------------------------------------------------------------------------

def test_a_later_repeat_with_fewer_slices_does_not_beat_the_complete_stack(tmp_path):
    """Full 6-slice stack #12, then repeat #14 six minutes later over 5 of the positions (another TI): #12 is
    analysed and its stack warnings name #14, what it covers and the position it lacks."""
    scan = Scan(tmp_path)
    for k in range(SLICES):
        scan.image(12, k, description="LGE_SAX", image_type=("ORIGINAL", "PRIMARY", "M"), instance=k + 1)
    for k in range(SLICES - 1):
        scan.image(14, k, description="LGE_SAX_repeat", image_type=("ORIGINAL", "PRIMARY", "M"), time="090600",
                   inversion=320, instance=k + 1)
    study = scan.study()
    chosen = study.preferred("lge")
    assert chosen.series_number == 12 and chosen.slices == SLICES
    volume = study.load_volume(chosen)
    (warning,) = [w for w in volume.warnings if "left aside" in w]
    assert "series 14 'LGE_SAX_repeat'" in warning and "5 slice position(s)" in warning
    assert "no slice at 50.00 mm" in warning
    (repeat,) = [s for s in study.series if s.series_number == 14]
    assert not repeat.preferred and any("not preferred" in n and "5 slice position(s)" in n for n in repeat.notes)
    # the preferred series named as a viewer lists it, not by the internal stack key (UID#number#kind)
    (note,) = [n for n in repeat.notes if "not preferred" in n]
    assert "(series 12 'LGE_SAX' (6 slice(s), magnitude) is preferred)" in note
    assert chosen.key not in note and "#" not in note


def test_of_equally_complete_repeats_the_latest_is_analysed_and_the_earlier_named(tmp_path):
    scan = Scan(tmp_path)
    for number, time in ((12, "090000"), (14, "090600")):
        for k in range(SLICES):
            scan.image(number, k, description="LGE_SAX", image_type=("ORIGINAL", "PRIMARY", "M"), time=time,
                       instance=k + 1)
    study = scan.study()
    chosen = study.preferred("lge")
    assert chosen.series_number == 14
    warnings = study.load_volume(chosen).warnings
    assert any("series 12 'LGE_SAX'" in w and "acquired earlier" in w for w in warnings), warnings


def _left_aside(study) -> list[str]:
    return [w for w in study.load_volume(study.preferred("lge")).warnings if "left aside" in w]


def test_of_repeats_either_side_of_midnight_the_one_of_the_next_day_is_analysed(tmp_path):
    """break50b finding 1: series 12 at 00:05 on 2024-02-01, series 14 at 23:55 the day before. The date decides
    (SeriesDate + SeriesTime etc.), not the time of day alone, and the text shows the dates."""
    scan = Scan(tmp_path)
    for number, date, time in ((12, "20240201", "000500"), (14, "20240131", "235500")):
        for k in range(SLICES):
            scan.image(number, k, description="LGE_SAX", image_type=("ORIGINAL", "PRIMARY", "M"), time=time,
                       date=date, instance=k + 1)
    study = scan.study()
    assert study.preferred("lge").series_number == 12
    (warning,) = _left_aside(study)
    assert "series 14 'LGE_SAX'" in warning
    assert "acquired earlier (2024-01-31 23:55:00.000 against 2024-02-01 00:05:00.000)" in warning, warning


@pytest.mark.parametrize("keywords, times", [
    (("AcquisitionDateTime",), ("103000", "100000")),
    (("SeriesTime", "AcquisitionTime", "ContentTime"), ("10:30:00", "10:00:00")),  # PS3.5 6.2: the old colon form
], ids=["AcquisitionDateTime only", "colon TM"])
def test_a_repeat_timed_by_acquisition_datetime_or_colon_times_is_ordered_by_that_time(tmp_path, keywords, times):
    """break50b finding 2: the later repeat (10:30) numbered 4, the earlier (10:00) numbered 5: series 4 is analysed
    and the text says the times, never "the same coverage and time"."""
    scan = Scan(tmp_path)
    for number, time in zip((4, 5), times):
        for k in range(SLICES):
            scan.image(number, k, description="LGE_SAX", image_type=("ORIGINAL", "PRIMARY", "M"), time=time,
                       date="20240131", time_keywords=keywords, instance=k + 1)
    study = scan.study()
    assert study.preferred("lge").series_number == 4
    (warning,) = _left_aside(study)
    assert "series 5 'LGE_SAX'" in warning and "acquired earlier (10:00:00.000 against 10:30:00.000)" in warning, \
        warning


def test_a_repeat_without_any_time_is_never_said_to_have_the_same_time(tmp_path):
    """Series 12 without SeriesTime, AcquisitionTime, ContentTime or AcquisitionDateTime, series 14 at 09:06: the
    timed series is analysed, and the text says that series 12 has no time instead of "the same ... time"."""
    scan = Scan(tmp_path)
    for number, keywords in ((12, ()), (14, ("SeriesTime", "AcquisitionTime", "ContentTime"))):
        for k in range(SLICES):
            scan.image(number, k, description="LGE_SAX", image_type=("ORIGINAL", "PRIMARY", "M"), time="090600",
                       time_keywords=keywords, instance=k + 1)
    study = scan.study()
    assert study.preferred("lge").series_number == 14
    (warning,) = _left_aside(study)
    assert "same coverage and time" not in warning and "time" in warning
    assert "the same coverage; no acquisition time in it (this series: 09:06:00.000)" in warning, warning


def test_a_single_slice_reacquired_after_midnight_replaces_that_position(tmp_path):
    """One series per slice (20-25) at 23:55 on 2024-01-31; slice 3 acquired again at 00:10 the next day as series
    40: the date makes it the later image, which the stack uses."""
    scan = Scan(tmp_path)
    for k in range(SLICES):
        scan.image(20 + k, k, description="LGE_SAX_single", image_type=("ORIGINAL", "PRIMARY", "M"), time="235500",
                   date="20240131")
    scan.image(40, 3, description="LGE_SAX_single", image_type=("ORIGINAL", "PRIMARY", "M"), time="001000",
               date="20240201", shift_mm=0.8)
    study = scan.study()
    volume = study.load_volume(study.preferred("lge"))
    assert _numbers(volume, study) == {20, 21, 22, 24, 25, 40}
    (warning,) = [w for w in volume.warnings if w.startswith("slice at 30.00 mm re-acquired")]
    assert "2024-02-01 00:10:00.000" in warning and "2024-01-31 23:55:00.000" in warning, warning


def test_a_single_slice_reacquired_in_its_own_series_replaces_that_position(tmp_path):
    """One series per slice (20-25); slice 3 acquired again 15 min later as series 40: the stack uses series 40 at
    that position, says so, and the earlier image (series 23) is kept as its own series with a note."""
    scan = Scan(tmp_path)
    for k in range(SLICES):
        scan.image(20 + k, k, description="LGE_SAX_single", image_type=("ORIGINAL", "PRIMARY", "M"))
    scan.image(40, 3, description="LGE_SAX_single", image_type=("ORIGINAL", "PRIMARY", "M"), time="091500",
               shift_mm=0.8)
    study = scan.study()
    chosen = study.preferred("lge")
    assert chosen.slices == SLICES
    volume = study.load_volume(chosen)
    assert volume.shape[:2] == (1, SLICES)
    assert _numbers(volume, study) == {20, 21, 22, 24, 25, 40}
    assert any(w.startswith("slice at 30.00 mm re-acquired: series 40 used in place of series 23") for w in
               volume.warnings), volume.warnings
    (earlier,) = [s for s in study.series if s.series_number == 23]
    assert any("replaced in its stack by the later re-acquisition in series 40" in n for n in earlier.notes)


def test_a_resent_single_slice_with_the_same_acquisition_time_does_not_replace_it(tmp_path):
    """Series 40 at slice 3 acquired at the same time as series 23 (a re-export, not a re-acquisition): the stack
    keeps series 23 and names series 40 as not used."""
    scan = Scan(tmp_path)
    for k in range(SLICES):
        scan.image(20 + k, k, description="LGE_SAX_single", image_type=("ORIGINAL", "PRIMARY", "M"))
    scan.image(40, 3, description="LGE_SAX_single", image_type=("ORIGINAL", "PRIMARY", "M"))
    study = scan.study()
    volume = study.load_volume(study.preferred("lge"))
    assert _numbers(volume, study) == {20, 21, 22, 23, 24, 25}
    assert any("series 40 repeat(s) the slice position(s) at 30.00 mm" in w and "not used" in w
               for w in volume.warnings), volume.warnings


def test_a_single_slice_reacquired_after_a_multislice_series_replaces_that_position(tmp_path):
    """Stack #12 in one series; slice 2 acquired again 10 min later, sent as series 30: the volume uses series 30 at
    that position and says so; the replaced image of #12 is listed as its own series with a note."""
    scan = Scan(tmp_path)
    for k in range(SLICES):
        scan.image(12, k, description="LGE_SAX", image_type=("ORIGINAL", "PRIMARY", "M"), instance=k + 1)
    scan.image(30, 2, description="LGE_SAX", image_type=("ORIGINAL", "PRIMARY", "M"), time="091000")
    study = scan.study()
    chosen = study.preferred("lge")
    assert chosen.series_number == 12 and chosen.slices == SLICES
    volume = study.load_volume(chosen)
    assert _numbers(volume, study) == {12, 30}
    assert any(w.startswith("slice at 20.00 mm re-acquired: series 30 used in place of series 12") for w in
               volume.warnings), volume.warnings
    (replaced,) = [s for s in study.series if s.series_number == 12 and s is not chosen]
    assert replaced.slices == 1 and any("replaced in its stack" in n for n in replaced.notes)


# --- defect 8: magnitude and PSIR in one series -------------------------------------------------------------------

@pytest.mark.parametrize("order", ["magnitude first", "psir first"])
def test_magnitude_and_psir_in_one_series_are_two_stacks_and_psir_is_analysed(tmp_path, order):
    """GE-like: ImageType ORIGINAL\\PRIMARY\\OTHER\\MAG and ...\\OTHER\\PSIR (signed) of each slice in ONE series, at
    the same position, TriggerTime and TI: two stacks of 6 x 1 (not 6 x 2 phases, no 'duplicate frame'), the PSIR
    analysed whatever the instance order, the magnitude named as left aside."""
    scan = Scan(tmp_path)
    instance = 1
    for k in range(SLICES):
        roles = (False, True) if order == "magnitude first" else (True, False)
        for psir in roles:
            scan.image(12, k, image_type=("ORIGINAL", "PRIMARY", "OTHER", "PSIR" if psir else "MAG"), signed=psir,
                       instance=instance)
            instance += 1
    study = scan.study()
    stacks = _lge(study)
    assert [(s.slices, s.phases) for s in stacks] == [(SLICES, 1), (SLICES, 1)], [s.summary() for s in study.series]
    chosen = study.preferred("lge")
    assert chosen.lge_kind == "psir"
    assert {frame.image_type[3] for h in chosen.instances for frame in frames_of(h)} == {"PSIR"}
    volume = study.load_volume(chosen)
    assert volume.shape[:2] == (1, SLICES)
    assert not any("duplicate frame" in w for w in volume.warnings)
    assert any("left aside" in w and "MAG" in w for w in volume.warnings), volume.warnings
    assert (volume.pixels < 0).any()  # the signed PSIR values, not the magnitude
    assert any("holds 2 reconstructions" in n for n in chosen.notes)


def test_a_volume_of_two_reconstructions_at_one_position_is_refused_not_chosen_by_instance_order(tmp_path):
    """Built directly (not through grouping), a series holding magnitude and PSIR of the same slices is refused with
    both named, instead of keeping one per slice as a 'duplicate frame'."""
    scan = Scan(tmp_path)
    for k in range(SLICES):
        for psir in (False, True):
            scan.image(12, k, image_type=("ORIGINAL", "PRIMARY", "OTHER", "PSIR" if psir else "MAG"), signed=psir,
                       instance=2 * k + psir + 1)
    study = scan.study()
    first, second = _lge(study)
    both = dataclasses.replace(first, instances=first.instances + second.instances)
    with pytest.raises(StudyError, match=r"two reconstructions at slice -?0.00 mm with the same timing \(ImageType "
                                         r"OTHER\\MAG.*ImageType OTHER\\PSIR, signed values"):
        build_volume(both)


def test_a_signed_frame_is_told_from_a_magnitude_one(tmp_path):
    scan = Scan(tmp_path)
    scan.image(1, 0, signed=True)
    scan.image(2, 0)
    signed, unsigned = (frames_of(read_header(p))[0] for p in scan.paths)
    assert signed.signed and not unsigned.signed
    assert signed.reconstruction != unsigned.reconstruction
    ds = pydicom.dcmread(scan.paths[1])
    ds.PixelRepresentation = 1
    ds.add_new("SmallestImagePixelValue", "SS", -20)
    ds.save_as(scan.paths[1])
    assert frames_of(read_header(scan.paths[1]))[0].signed
