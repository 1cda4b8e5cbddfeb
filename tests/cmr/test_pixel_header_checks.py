"""Image Pixel module and header values checked before the pixels are measured, each refusal naming the attribute
(break43b #2, #6, #7): Pixel Data longer than Rows × Columns (pydicom silently cropped it: EF 29.8 % for 23.7 %),
BitsAllocated 1, an absurd RescaleSlope, NumberOfFrames beyond the frames held; RescaleSlope 0 and a non-perpendicular
ImageOrientationPatient measured with a stack warning."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dicomnode.cmr import StudyError, load_studies
from dicomnode.cmr.volume import pixel_header_problem
from cmr_helpers import generated  # noqa: F401 (fixture)


def _mutated(generated, tmp_path, change):
    source = generated[("cine", "ge", None)]
    for path in source.paths:
        dataset = pydicom.dcmread(path)
        change(dataset)
        dataset.save_as(tmp_path / path.name)
    (study,) = load_studies([tmp_path])
    return study, study.preferred("cine")


def _fewer_rows(dataset):
    dataset.Rows = int(dataset.Rows) - 10  # Pixel Data left as it is: 10 rows more than the header says


def _bit_packed(dataset):
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 1, 0


def _absurd_slope(dataset):
    dataset.RescaleSlope, dataset.RescaleIntercept = 1e30, 0


@pytest.mark.parametrize("change, named", [
    (_fewer_rows, r"Pixel Data is \d+ bytes, \d+ more than Rows \d+ × Columns \d+ × BitsAllocated 16 / 8 = \d+"),
    (_bit_packed, r"BitsAllocated 1 \(bit-packed pixels"),
    (_absurd_slope, r"RescaleSlope 1e\+30 is implausible"),
])
def test_a_header_that_does_not_describe_the_pixels_is_refused_by_name(generated, tmp_path, change, named):
    study, series = _mutated(generated, tmp_path, change)
    with pytest.raises(StudyError, match=rf"no usable pixel data \({named}"):
        study.load_volume(series)


def test_rescale_slope_zero_and_skewed_orientation_are_measured_with_a_warning(generated, tmp_path):
    def change(dataset):
        dataset.RescaleSlope, dataset.RescaleIntercept = 0, 0
        row = np.array(dataset.ImageOrientationPatient[:3], float)
        col = np.array(dataset.ImageOrientationPatient[3:], float)
        col = col + 0.3 * row
        dataset.ImageOrientationPatient = [float(v) for v in (*row, *(col / np.linalg.norm(col)))]

    study, series = _mutated(generated, tmp_path, change)
    volume = study.load_volume(series)
    assert any(w.startswith(f"RescaleSlope 0 in {len(series.instances)} image(s): invalid") for w in volume.warnings)
    (skew,) = [w for w in volume.warnings if w.startswith("ImageOrientationPatient of")]
    assert "row and column cosines at 73.3°, not 90°" in skew
    assert float(volume.pixels.max()) > 0  # read as slope 1, not 0


def test_exact_or_one_byte_padded_pixel_data_passes_and_missing_frames_are_named():
    dataset = pydicom.Dataset()
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset.Rows, dataset.Columns, dataset.BitsAllocated, dataset.SamplesPerPixel = 3, 3, 8, 1
    dataset.PixelData = bytes(9)
    assert pixel_header_problem(dataset) is None
    dataset.PixelData = bytes(10)  # the padding byte to an even length
    assert pixel_header_problem(dataset) is None
    dataset.PixelData = bytes(12)
    assert "Pixel Data is 12 bytes, 3 more than Rows 3 × Columns 3 × BitsAllocated 8 / 8 = 9" in pixel_header_problem(dataset)
    dataset.NumberOfFrames, dataset.PixelData = 5, bytes(36)
    assert pixel_header_problem(dataset).startswith("NumberOfFrames 5 but Pixel Data holds only 4 whole frame(s)")


@pytest.mark.parametrize("padding", [2, 64])
def test_trailing_padding_shorter_than_a_row_is_read_as_pydicom_reads_it_and_said_once(generated, tmp_path, caplog,
                                                                                       padding):
    """Review 43 #2: Pixel Data padded by an exporter to a word or block length (2 bytes on a 16-bit image) was
    refused with the whole series. An excess shorter than one row is padding: the image is measured as the original
    and pydicom's line on it is logged once for the series; a whole row more is refused (test above)."""
    import logging

    (original,) = load_studies([generated[("cine", "ge", None)].out_dir / "dicom"])
    expected = original.load_volume(original.preferred("cine")).pixels

    def pad(dataset):
        assert padding < int(dataset.Columns) * 2
        dataset.PixelData = dataset.PixelData + bytes(padding)

    study, series = _mutated(generated, tmp_path, pad)
    with caplog.at_level(logging.WARNING):
        pixels = study.load_volume(series).pixels
    np.testing.assert_array_equal(pixels, expected)
    said = [r.getMessage() for r in caplog.records if "excess padding" in r.getMessage()]
    assert len(said) == 1 and "logged once" in said[0], said


def test_pixel_data_longer_by_less_than_a_row_is_padding_and_by_a_row_or_more_is_refused():
    dataset = pydicom.Dataset()
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset.Rows, dataset.Columns, dataset.BitsAllocated, dataset.SamplesPerPixel = 4, 4, 16, 1
    dataset.PixelData = bytes(34)  # 2 bytes of padding
    assert pixel_header_problem(dataset) is None
    dataset.PixelData = bytes(38)  # 6 bytes: less than the 8 bytes of one row
    assert pixel_header_problem(dataset) is None
    dataset.PixelData = bytes(40)
    assert "Pixel Data is 40 bytes, 8 more than Rows 4 × Columns 4 × BitsAllocated 16 / 8 = 32" in \
        pixel_header_problem(dataset)
    dataset.Rows, dataset.Columns, dataset.PixelData = 246, 256, bytes(246 * 256 * 2 + 5120)  # break43b: 10 rows
    assert "5120 more than Rows 246 × Columns 256" in pixel_header_problem(dataset)
    dataset.PixelData = bytes(246 * 256 * 2 - 2)
    assert "fewer than Rows 246" in pixel_header_problem(dataset)


@pytest.mark.parametrize("constant", ["bits_stored", "each_image_maximum"])
def test_monochrome1_is_read_as_its_monochrome2_original_whatever_inversion_constant(generated, tmp_path, constant):
    """break43b #6: images inverted each against its own maximum (a converter's choice) and declared MONOCHROME1
    were inverted against the BitsStored range only: every image got another offset and no LV was found."""
    (original,) = load_studies([generated[("cine", "ge", None)].out_dir / "dicom"])
    expected = original.load_volume(original.preferred("cine")).pixels

    def invert(dataset):
        pixels = dataset.pixel_array.astype(np.int64)
        top = (1 << int(dataset.BitsStored)) - 1 if constant == "bits_stored" else int(pixels.max())
        dataset.PixelData = (top - pixels).astype(dataset.pixel_array.dtype).tobytes()
        dataset.PhotometricInterpretation = "MONOCHROME1"

    study, series = _mutated(generated, tmp_path, invert)
    pixels = study.load_volume(series).pixels
    background = expected.min(axis=(-2, -1), keepdims=True)  # what each MONOCHROME2 image holds as its darkest
    np.testing.assert_allclose(pixels, expected - background)


def test_a_short_axis_stack_far_longer_than_any_heart_is_not_measured_as_one_ventricle(generated, tmp_path):
    """break43b #3b: a series holding the stack repeated along its normal (900 mm) was measured as one LV (EDV
    1546 mL). A short-axis stack beyond MAX_SAX_EXTENT_MM is refused, saying how long it is and why."""
    from pydicom.uid import generate_uid

    source = generated[("cine", "ge", None)]
    for copy_index in range(2):
        for path in source.paths:
            dataset = pydicom.dcmread(path)
            if copy_index:
                row = np.array(dataset.ImageOrientationPatient[:3], float)
                col = np.array(dataset.ImageOrientationPatient[3:], float)
                shifted = np.array(dataset.ImagePositionPatient, float) + 400.0 * np.cross(row, col)
                dataset.ImagePositionPatient = [float(v) for v in shifted]
                dataset.SOPInstanceUID = generate_uid()
                dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            dataset.save_as(tmp_path / f"{copy_index}_{path.name}")
    (study,) = load_studies([tmp_path])
    series = study.preferred("cine")
    assert series is not None and series.view.value == "sax"
    with pytest.raises(StudyError, match=r"short-axis stack spans 4\d\d mm along its normal .*not measured as one "
                                         r"ventricle"):
        study.load_volume(series)
    (whole,) = load_studies([source.out_dir / "dicom"])
    assert whole.load_volume(whole.preferred("cine")).pixels.size  # the stack itself is measured


def test_pydicom_lines_said_of_every_image_are_logged_once_per_series(caplog):
    """break43b #8: pydicom's "excess padding" line was logged once per image (240 lines for one series)."""
    import logging
    import threading

    from dicomnode.cmr.volume import LibraryWarningsOnce

    library = logging.getLogger("pydicom")
    other = threading.Thread(target=lambda: library.warning("said by another analysis"))
    with caplog.at_level(logging.WARNING):
        with LibraryWarningsOnce():
            for _ in range(240):
                library.warning("The pixel data is 131072 bytes long")
            other.start()
            other.join()
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("said by another analysis") == 1
    assert [line for line in lines if "131072" in line] == [
        "pydicom: The pixel data is 131072 bytes long (said of 240 image(s) of this series, logged once)"]


def test_negative_trigger_times_are_named_and_not_read_as_seconds(tmp_path):
    """break43b #6: TriggerTime negated (-18 … -780 ms) was read as seconds (all under 5), spanned minutes and the
    cine became "sequence: other" with no word of the TriggerTime. Negative delays are taken as absent, said so."""
    from tests.data.field_inputs import demo_cine_files

    for index, path in enumerate(demo_cine_files()):
        dataset = pydicom.dcmread(path)
        if "TriggerTime" in dataset and dataset.Modality == "MR":
            dataset.TriggerTime = -float(dataset.TriggerTime) - 1.0
        dataset.save_as(tmp_path / f"{index:04d}.dcm")
    (study,) = load_studies([tmp_path])
    series = study.preferred("cine")
    assert series is not None and series.view.value == "sax"
    assert any("TriggerTime negative" in line for line in series.sequence.evidence)
    volume = study.load_volume(series)
    assert any(w.startswith("TriggerTime negative (") and "taken as absent" in w for w in volume.warnings)
