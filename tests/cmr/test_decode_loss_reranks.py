"""A series that loses images while its pixel data is decoded ranks again among its repeats, as a series missing those
images does (break49a findings 1 and 2): the demo LGE (magnitude 0-7 and PSIR 8-15, one series per slice) with one
PSIR image whose pixel data cannot be decoded or used is measured on the whole magnitude stack, and the reason the
image is left out is one line naming the instance and its transfer syntax."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from dicomnode.cmr.study import load_studies
from dicomnode.cmr.types import StudyError
from dicomnode.cmr.volume import decode_instances
from tests.data.field_inputs import lge_variant

#: the mid-stack PSIR image of the demo LGE made unusable
DAMAGED = 11


def _cut_j2k(ds, index):
    """The image stored as JPEG 2000 whose codestream is cut to 200 bytes of nothing (a broken transfer)."""
    if index == DAMAGED:
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\x00" * 200])
        ds["PixelData"].VR = "OB"


def _colour(ds, index):
    """The image stored as 8-bit RGB (a screen capture relabelled as MR): pixel data that cannot be used."""
    if index == DAMAGED:
        rgb = np.zeros((int(ds.Rows), int(ds.Columns), 3), np.uint8)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PhotometricInterpretation = 3, 0, "RGB"
        ds.PixelData = rgb.tobytes()
        for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
            if keyword in ds:
                del ds[keyword]


@pytest.mark.parametrize("change,reason", [(_cut_j2k, "pixel data cannot be decoded (JPEG 2000"),
                                           (_colour, "colour image")])
def test_a_psir_losing_an_image_while_decoding_gives_way_to_the_whole_magnitude_stack(tmp_path, change, reason):
    paths = lge_variant(tmp_path, change)
    (study,) = load_studies([tmp_path])
    chosen = study.preferred("lge")
    assert chosen.lge_kind == "psir" and chosen.slices == 8  # the headers alone rank the PSIR first
    series, volume = study.load_preferred(chosen)
    assert series.lge_kind == "magnitude" and volume.pixels.shape[:2] == (1, 8)
    assert study.preferred("lge").key == series.key
    assert [s["preferred"] for s in study.summary_series() if s["sequence"] == "lge"].count(True) == 1
    damaged = next(h for h in chosen.instances if str(h.path) == str(paths[DAMAGED]))
    (note,) = [w for w in volume.warnings if damaged.sop_instance_uid in w]
    assert reason in note and "ranked again without it" in note and "\n" not in note
    assert any("left aside" in w and "psir" in w for w in volume.warnings)
    # nothing lost: the image stays named among the excluded instances, its file untouched
    (entry,) = [e for e in study.excluded_instances if e["sop_instance_uid"] == damaged.sop_instance_uid]
    assert reason in entry["reason"] and paths[DAMAGED].exists()


def test_without_a_repeat_the_series_is_measured_with_its_gap(tmp_path):
    """No other reconstruction to take: the PSIR is measured without the image, which the warnings name."""
    lge_variant(tmp_path, _cut_j2k, indices=range(8, 16))
    (study,) = load_studies([tmp_path])
    chosen = study.preferred("lge")
    series, volume = study.load_preferred(chosen)
    assert series is chosen and volume.pixels.shape[:2] == (1, 7)
    assert any("left out: pixel data cannot be decoded (JPEG 2000" in w for w in volume.warnings)


def test_a_psir_none_of_whose_images_decode_gives_way_to_the_magnitude(tmp_path):
    """Before, the LGE was declined ('no usable pixel data') although the magnitude stack was whole."""
    lge_variant(tmp_path, lambda ds, index: _cut_j2k(ds, DAMAGED) if index >= 8 else None)
    (study,) = load_studies([tmp_path])
    with pytest.raises(StudyError, match="no usable pixel data"):
        study.load_volume(study.preferred("lge"))
    series, volume = study.load_preferred(study.preferred("lge"))
    assert series.lge_kind == "magnitude" and volume.pixels.shape[:2] == (1, 8)


def test_the_decode_reason_is_one_line_naming_the_transfer_syntax_and_no_error_is_logged(tmp_path, caplog):
    paths = lge_variant(tmp_path, _cut_j2k, indices=[DAMAGED])
    with caplog.at_level(logging.DEBUG):
        arrays, unusable = decode_instances([str(paths[0])])
    (reason,) = unusable.values()
    assert not arrays and "\n" not in reason and " object at 0x" not in reason
    assert reason.startswith("pixel data cannot be decoded (JPEG 2000 Image Compression (Lossless Only) "
                             "(1.2.840.10008.1.2.4.90)): ")
    # pydicom logs each plugin's failure at ERROR with a traceback; handled here, so DEBUG at most
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert not [r for r in caplog.records if r.exc_info]


def test_decode_failure_trims_pydicom_plugin_dump():
    from dicomnode.cmr.volume import decode_failure

    error = RuntimeError("Unable to decode as exceptions were raised by all available plugins:\n"
                         "  pylibjpeg: No matching JPEG 2000 format found\n"
                         "  pillow: cannot identify image file <_io.BytesIO object at 0x7f79022afe70>")
    assert decode_failure(error, None) == ("file cannot be read: pylibjpeg: No matching JPEG 2000 format found; "
                                           "pillow: cannot identify image file")
    assert len(decode_failure(RuntimeError("x" * 5000), None)) < 400


def test_summary_series_say_which_series_was_measured_after_ranking_again(tmp_path):
    """summary.json `series[].preferred` is written after the pipelines, so it names the series measured."""
    from dicomnode.analysis.run import Analyser
    from dicomnode.config import Config
    from dicomnode.types import Declined, PipelineResult

    class LoadsThePreferredLGE:
        def run(self, study, context):
            series, _ = study.load_preferred(study.preferred("lge"))
            return PipelineResult(name="lge", summary=None, declined=[Declined(series.series_instance_uid, "stub")])

    lge_variant(tmp_path, _cut_j2k)
    (study,) = load_studies([tmp_path])
    analyser = Analyser(Config(), runtime=object())
    analyser._pipelines["lge"] = LoadsThePreferredLGE()
    outcome = analyser.analyse(study, ["lge"])
    preferred = [s for s in outcome.summary["series"] if s["preferred"] and s["sequence"] == "lge"]
    assert [s["lge_kind"] for s in preferred] == ["magnitude"]
