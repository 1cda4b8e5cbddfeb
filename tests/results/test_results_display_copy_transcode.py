"""Display copies of images received compressed or in Big Endian are written in Explicit VR Little Endian with native
pixel data (break40a F1): a PACS that accepts only the uncompressed little endian syntaxes (DCMTK's storescp by
default) takes every result object of the study, copies included. Sources are converted with DCMTK (dcmcjpls,
dcmcrle, dcmcjpeg, dcmconv), as a scanner or archive sends them, and with pydicom's JPEG 2000 encoder."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (JPEG2000Lossless, ExplicitVRBigEndian, ExplicitVRLittleEndian, JPEGExtended12Bit,
                         JPEGLosslessSV1, JPEGLSLossless, RLELossless, DeflatedExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

from dicomnode.cmr.types import InstanceHeader
from dicomnode.net.scu import send_files
from dicomnode.net.transcode import TranscodeError, explicit_little_endian
from dicomnode.results.objects import build_result_objects
from dicomnode.study_path import dataset_bytes
from tests.conftest import require_peer
from tests.peers import StoreSCP, require_private_netns
from test_results_display_copy import with_files_and_a_localizer
from test_results_display_copy_enhanced import enhanced_lge

#: transfer syntax -> DCMTK command line converting IN to OUT (None: pydicom's encoder)
CONVERSIONS = {
    JPEGLSLossless: ["dcmcjpls", "+el"],
    RLELossless: ["dcmcrle"],
    ExplicitVRBigEndian: ["dcmconv", "+tb"],
    JPEGLosslessSV1: ["dcmcjpeg", "+e1"],
    DeflatedExplicitVRLittleEndian: ["dcmconv", "+td"],
    ImplicitVRLittleEndian: ["dcmconv", "+ti"],
    JPEG2000Lossless: None,
}


def convert(path: Path, syntax: str, out: Path) -> Path:
    command = CONVERSIONS[syntax]
    if command is None:
        dataset = pydicom.dcmread(path)
        dataset.compress(syntax, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        dataset.save_as(out, enforce_file_format=True)
    else:
        subprocess.run([require_peer(command[0]), *command[1:], str(path), str(out)], check=True,
                       capture_output=True)
    assert str(pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax
    return out


def study_received_as(tmp_path: Path, syntax: str):
    """The synthetic cine study sharing its series with a localizer (so it gets display copies), its images stored
    as files in `syntax` and read as the node reads them (headers without pixel data)."""
    study, results, context = with_files_and_a_localizer(tmp_path)
    cine = study.series[0]
    folder = tmp_path / "received"
    folder.mkdir()
    headers = []
    for instance in cine.instances:
        path = convert(instance.path, syntax, folder / instance.path.name)
        header = pydicom.dcmread(path, stop_before_pixels=True)
        headers.append(InstanceHeader(path, instance.sop_instance_uid, instance.sop_class_uid,
                                      instance.series_instance_uid, header))
    cine.instances[:] = headers
    segmentation = results[1].segmentations[0]
    by_uid = {h.sop_instance_uid: h for h in headers}
    results[1].segmentations[0] = replace(segmentation, series=replace(
        segmentation.series, instances=[by_uid.get(i.sop_instance_uid, i) for i in segmentation.series.instances]))
    return study, results, context


def written(tmp_path: Path, objects) -> list[Path]:
    """The result objects written as the node writes them (study_path.dataset_bytes)."""
    folder = tmp_path / "results"
    folder.mkdir(exist_ok=True)
    paths = []
    for n, dataset in enumerate(objects):
        path = folder / f"{dataset.Modality}{n}.dcm"
        path.write_bytes(dataset_bytes(dataset))
        paths.append(path)
    return paths


@pytest.mark.parametrize("syntax", list(CONVERSIONS), ids=lambda s: s.name)
def test_display_copies_are_written_explicit_little_endian_with_the_sources_pixel_values(tmp_path, syntax):
    study, results, context = study_received_as(tmp_path, syntax)
    objects = build_result_objects(study, results[1:2], context)
    copies = [o for o in objects if o.Modality == "MR"]
    assert len(copies) == 6
    sources = {h.sop_instance_uid: h.path for h in study.series[0].instances}
    for path in written(tmp_path, objects):
        copy = pydicom.dcmread(path)
        assert copy.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian, (path.name, copy.file_meta)
        if copy.Modality != "MR":
            continue
        assert not copy["PixelData"].is_undefined_length
        source = pydicom.dcmread(sources[copy.SourceImageSequence[0].ReferencedSOPInstanceUID])
        assert np.array_equal(copy.pixel_array, source.pixel_array)
        for keyword in ("Rows", "Columns", "BitsStored", "PixelRepresentation", "PhotometricInterpretation",
                        "ImagePositionPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept"):
            assert copy.get(keyword) == source.get(keyword), keyword
        assert copy.file_meta.MediaStorageSOPInstanceUID == copy.SOPInstanceUID != source.SOPInstanceUID
        assert copy.get("LossyImageCompression", "00") != "01"  # lossless sources stay unflagged


def test_the_source_is_left_as_it_was(tmp_path):
    """The copy is a shallow copy of its source: transcoding it replaces elements, it never changes the source's."""
    path = convert(with_files_and_a_localizer(tmp_path)[0].series[0].instances[0].path, ExplicitVRBigEndian,
                   tmp_path / "be.dcm")
    source = pydicom.dcmread(path)
    before = bytes(source.PixelData)
    copy = pydicom.Dataset()
    copy.update(source)
    copy.file_meta = source.file_meta
    explicit_little_endian(copy)
    assert copy.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert source.file_meta.TransferSyntaxUID == ExplicitVRBigEndian and bytes(source.PixelData) == before
    assert bytes(copy.PixelData) != before and np.array_equal(
        np.frombuffer(copy.PixelData, "<u2"), np.frombuffer(before, ">u2"))


def test_a_lossy_source_makes_a_copy_flagged_lossy(tmp_path):
    """JPEG Extended (lossy, 12-bit) decoded into the copy: the copy says it was lossy compressed (PS3.3
    C.7.6.1.1.5) even where the source header did not."""
    path = convert_lossy(with_files_and_a_localizer(tmp_path)[0].series[0].instances[0].path, tmp_path / "jpeg.dcm")
    source = pydicom.dcmread(path)
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod", "LossyImageCompressionRatio"):
        if keyword in source:
            delattr(source, keyword)
    copy = explicit_little_endian(source)
    assert copy.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert copy.LossyImageCompression == "01" and copy.LossyImageCompressionMethod == "ISO_10918_1"
    assert copy.pixel_array.shape == (copy.Rows, copy.Columns)


def convert_lossy(path: Path, out: Path) -> Path:
    subprocess.run([require_peer("dcmcjpeg"), "+ee", str(path), str(out)], check=True, capture_output=True)
    assert pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEGExtended12Bit
    return out


def test_pixel_data_no_decoder_takes_is_a_clear_error(tmp_path):
    path = convert(with_files_and_a_localizer(tmp_path)[0].series[0].instances[0].path, RLELossless,
                   tmp_path / "rle.dcm")
    source = pydicom.dcmread(path)
    source.PixelData = source.PixelData[:40]  # a truncated bitstream
    with pytest.raises(TranscodeError, match="RLE Lossless .*Explicit VR Little Endian"):
        explicit_little_endian(source)


@pytest.fixture
def storescp(tmp_path):
    for program in ("storescp", "echoscu"):
        require_peer(program)
    require_private_netns()
    with StoreSCP(tmp_path / "pacs") as peer:
        yield peer


@pytest.mark.peers
@pytest.mark.parametrize("syntax", [JPEGLSLossless, RLELossless, ExplicitVRBigEndian], ids=lambda s: s.name)
def test_every_result_of_a_study_received_compressed_reaches_a_default_storescp(tmp_path, storescp, syntax):
    study, results, context = study_received_as(tmp_path, syntax)
    objects = build_result_objects(study, results[1:2], context)
    assert {o.Modality for o in objects} >= {"MR", "SEG", "SR"}
    sent = send_files(written(tmp_path, objects), "PACS", "127.0.0.1", storescp.port, timeout=20)
    assert all(r.ok for r in sent), [(r.path.name, r.error) for r in sent if not r.ok]
    assert sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in storescp.stored()) == sorted(str(o.SOPInstanceUID) for o in objects)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=lambda s: s.name)
def test_frame_copies_of_a_compressed_tilted_enhanced_stack_are_explicit_little_endian(tmp_path, syntax):
    """A tilted Enhanced MR stack gets one single-frame copy per frame (display_copy.py): each holds its frame's
    values decoded, not the frame's bitstream in the source's syntax."""
    study, results, context, source = enhanced_lge()
    native = bytes(source.PixelData)
    source.compress(syntax, encoding_plugin="pylibjpeg" if syntax == JPEG2000Lossless else "",
                    generate_instance_uid=False)
    copies = [o for o in build_result_objects(study, results, context) if o.Modality == "MR"]
    assert len(copies) == 4
    size = int(source.Rows) * int(source.Columns) * 2
    for path in written(tmp_path, copies):
        copy = pydicom.dcmread(path)
        assert copy.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        number = int(copy.SourceImageSequence[0].ReferencedFrameNumber)
        frame = np.frombuffer(native[(number - 1) * size:number * size], "<u2").reshape(copy.Rows, copy.Columns)
        np.testing.assert_array_equal(copy.pixel_array, frame)
