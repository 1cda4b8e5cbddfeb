"""Learned sequence recognizer (ONNX Runtime): real frames it never trained on, and series with stripped tags."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.cmr import default_registry, load_studies
from dicomnode.devtools.make_study import make_study
from dicomnode.cmr.learned import LearnedSequenceRecognizer, learned_registry, tags_missing

MODELS = Path(__file__).resolve().parents[2] / "engines" / "models"
STRIPPED = ("ScanningSequence", "SequenceVariant", "SequenceName", "SeriesDescription", "ProtocolName", "TriggerTime",
            "CardiacNumberOfImages", "InversionTime", "ImageType")


@pytest.fixture(scope="module")
def recognizer():
    return LearnedSequenceRecognizer.from_models_dir(MODELS)


def dicom_frame(path: Path):
    ds = pydicom.dcmread(str(path))
    pixels = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1)
    return pixels + float(getattr(ds, "RescaleIntercept", 0) or 0), tuple(float(v) for v in ds.PixelSpacing)


def test_card_is_small_and_names_classes():
    card = json.loads((MODELS / "view_classifier.json").read_text())
    assert (MODELS / "view_classifier.onnx").stat().st_size < 5_000_000
    assert card["output"]["classes"] == ["cine", "lge", "localizer"]
    assert "SCD0000301" in card["training"]["validation_subjects"]


def test_classifies_held_out_real_frames(recognizer, datasets, tmp_path):
    # SCD0000301 (cine + localizer) and the EMIDEC validation cases were never used to train the head
    cine_dir = datasets / "sunnybrook-scd" / "dicoms" / "SCD0000301"
    cine = [dicom_frame(cine_dir / f"{n}.dcm") for n in (1, 47, 95, 143, 190)]
    localizer = [dicom_frame(p) for p in sorted((datasets / "sunnybrook-scd-localizers" / "dicoms" / "SCD0000301").glob("*.dcm"))[::3]]
    card = json.loads((MODELS / "view_classifier.json").read_text())
    cases = [s for s in card["training"]["validation_subjects"] if s.startswith("Case_")][:2]
    assert cases
    lge = []  # the PSIR series make_study writes from EMIDEC (the preferred LGE series, what the node analyses)
    for case in cases:
        study = make_study(f"emidec:{case}", tmp_path / case, datasets=datasets)
        lge += [dicom_frame(p) for p in study.paths if "psir" in p.name.lower()][::2]
    # per frame: cine and LGE >= 80 % right; the held-out localizer (the only head-first patient, 15 frames) is the
    # weak class (validation accuracy 0.6 in the card); the series decision (mean over frames) must be right for all
    for frames, expected, share in ((cine, "cine", 0.8), (localizer, "localizer", 0.6), (lge, "lge", 0.8)):
        probabilities = recognizer.classify(frames)
        predicted = [recognizer.classes[i] for i in probabilities.argmax(1)]
        assert predicted.count(expected) >= share * len(frames), (expected, predicted)
        assert recognizer.classes[int(probabilities.mean(0).argmax())] == expected


def test_learned_registry_decides_only_for_untagged_series(datasets, tmp_path):
    source = datasets / "sunnybrook-scd" / "dicoms" / "SCD0000301"
    for number in range(1, 41):  # two slice positions x 20 phases, sequence tags stripped
        ds = pydicom.dcmread(str(source / f"{number}.dcm"))
        for keyword in STRIPPED:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(tmp_path / f"{number}.dcm")
    for path in sorted((datasets / "sunnybrook-scd-localizers" / "dicoms" / "SCD0000301").glob("*.dcm")):
        shutil.copyfile(path, tmp_path / f"loc_{path.name}")  # tags kept: the rules answer
    assert not any(r.name == "learned-sequence" for r in default_registry().recognizers("sequence"))
    plain = {s.series_number: s.sequence for s in load_studies([tmp_path])[0].series}
    learned = {s.series_number: s.sequence for s in load_studies([tmp_path], learned_registry(MODELS))[0].series}
    cine_number = int(pydicom.dcmread(str(tmp_path / "1.dcm"), stop_before_pixels=True).SeriesNumber)
    assert plain[cine_number].value == "other"
    assert learned[cine_number].value == "cine"
    assert any("sequence tags missing" in e for e in learned[cine_number].evidence)
    localizer_number = next(n for n in plain if n != cine_number)
    assert plain[localizer_number].value == learned[localizer_number].value == "localizer"
    assert learned[localizer_number].confidence == plain[localizer_number].confidence  # the rule's answer won
