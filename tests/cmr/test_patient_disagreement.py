"""A study whose instances disagree on the patient's size, weight, age or sex (a correction re-sent for some of its
images only, break47b #1): the value of the instances sent again after the study's earlier analysis is used (the
node), else the value most instances hold (a folder, or the node's first transmission, whatever order its sender sent
the series in: break48b #4), and the disagreement is said, never one of the values taken silently."""
from __future__ import annotations

import copy
import logging

import pytest

from dicomnode.cmr.study import load_studies, study_patient
from dicomnode.results.objects import _study_header
from tests.hardening.hardening_support import synthetic_mr

STUDY = "1.2.826.0.1.3680043.8.498.47201"


def _slices(weights: list[str]) -> list:
    slices = []
    for n, weight in enumerate(weights, start=1):
        ds = synthetic_mr(study_uid=STUDY, series_uid=STUDY + ".1", instance=n, position=8.0 * n)
        ds.PatientSize, ds.PatientWeight, ds.PatientSex, ds.PatientAge = "1.84", weight, "M", "045Y"
        slices.append(ds)
    return slices


def _write(tmp_path, datasets) -> list:
    paths = []
    tmp_path.mkdir(exist_ok=True)
    for n, ds in enumerate(datasets):
        path = tmp_path / f"{n:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_the_weight_sent_again_is_used_and_the_disagreement_said(tmp_path, caplog):
    """break47b #1: 10 of 20 instances re-sent with PatientWeight 60 (95 before): the BSA kept 95 kg, read from one
    header, and nothing said the study held two weights."""
    paths = _write(tmp_path, _slices(["95", "95.0", "60"]))  # oldest received first: the last one is the correction
    with caplog.at_level(logging.WARNING, logger="dicomnode.cmr"):
        (study,) = load_studies(paths, in_receive_order=True, resent=paths[2:])
    assert study.patient.weight_kg == 60.0 and study.patient.height_m == 1.84
    (line,) = study.patient.disagreements
    assert line.startswith("the study's instances disagree on PatientWeight (95 kg on 2 instance(s), 60 kg on 1 "
                           "instance(s)): 60 kg is used for BSA and the indexed values, the value of the instances "
                           "sent again after the earlier analysis")
    assert any(line == r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert study.patient.values_used == {"PatientWeight": "60"}
    # the result objects state the weight the numbers were computed with, whatever image they copy the patient from
    assert str(_study_header(study).PatientWeight) == "60"


def test_without_the_receive_order_the_value_most_instances_hold_is_used_and_why(tmp_path):
    (study,) = load_studies(_write(tmp_path, _slices(["95", "60", "95"])))
    assert study.patient.weight_kg == 95.0
    (line,) = study.patient.disagreements
    assert "95 kg is used for BSA and the indexed values, the value most instances hold, the order they were " \
           "received in not being known" in line
    assert str(_study_header(study).PatientWeight) == "95"
    ((tied,),) = [s.patient.disagreements for s in load_studies(_write(tmp_path / "tied", _slices(["95", "60"])))]
    assert "60 kg is used for BSA and the indexed values, as many instances hold another: the value of the file read " \
           "last (path order)" in tied


@pytest.mark.parametrize("keyword, older, newer, field, expected", [
    ("PatientSize", "1.84", "1.62", "height_m", 1.62),
    ("PatientAge", "045Y", "015Y", "age_years", 15.0),
    ("PatientSex", "F", "M", "sex", "M"),
])
def test_each_attribute_of_the_indexing_and_ranges_follows_the_latest(tmp_path, keyword, older, newer, field,
                                                                        expected):
    datasets = _slices(["80", "80", "80"])
    for ds in datasets:
        setattr(ds, keyword, older)
    setattr(datasets[-1], keyword, newer)
    paths = _write(tmp_path, datasets)
    (study,) = load_studies(paths, in_receive_order=True, resent=paths[-1:])
    assert getattr(study.patient, field) == expected
    (line,) = study.patient.disagreements
    assert line.startswith(f"the study's instances disagree on {keyword} ")


def test_instances_that_agree_say_nothing_and_keep_the_first_header():
    datasets = _slices(["70", "70.0", "70"])
    del datasets[0].PatientWeight  # absent on one: not a disagreement
    dataset, lines = study_patient(datasets, in_receive_order=True)
    assert lines == {} and dataset is datasets[0]
    changed = copy.deepcopy(datasets)
    changed[2].PatientWeight = "71"
    dataset, lines = study_patient(changed, in_receive_order=True, resent=[False, False, True])
    assert list(lines) == ["PatientWeight"] and str(dataset.PatientWeight) == "71"
    assert "PatientWeight" not in changed[0]  # the received header itself is not changed


# --- review47 #3: a late implausible value, and the node's own results sent back, are never "the value received last"

def test_a_late_height_in_centimetres_is_ignored_and_said(tmp_path):
    datasets = _slices(["80"] * 3)
    for ds in datasets:
        ds.PatientSize = "1.75"
    datasets[-1].PatientSize = "175"  # received last, in cm
    (study,) = load_studies(_write(tmp_path, datasets), in_receive_order=True)
    assert study.patient.height_m == 1.75
    (line,) = study.patient.disagreements
    assert "1.75 m is used for BSA and the indexed values, the value most instances hold" in line
    assert line.endswith("; 175 m ignored: not a height in m between 0.3 and 2.8 (another unit, or a value entered in "
                         "error)")
    assert str(_study_header(study).PatientSize) == "1.75"


def test_a_first_implausible_value_gives_way_and_none_plausible_keeps_the_first():
    datasets = _slices(["800", "80", "80"])  # the first received in an impossible unit, then corrected
    dataset, lines = study_patient(datasets, in_receive_order=False)
    assert str(dataset.PatientWeight) == "80" and "800 kg ignored" in lines["PatientWeight"]
    datasets = _slices(["800", "900"])
    dataset, lines = study_patient(datasets, in_receive_order=True)
    assert str(dataset.PatientWeight) == "800"
    assert "800 kg is used for BSA and the indexed values, none of them being plausible, the value of the first " \
           "instance" in lines["PatientWeight"]


def test_the_nodes_own_results_and_non_images_sent_back_are_not_a_correction():
    from pydicom.dataset import Dataset
    from pydicom.uid import Comprehensive3DSRStorage

    from dicomnode.cmr.grouping import NODE_MANUFACTURER

    datasets = _slices(["80", "80"])
    equipment = Dataset()
    equipment.Manufacturer = NODE_MANUFACTURER
    own_sr = copy.deepcopy(datasets[0])
    own_sr.SOPClassUID, own_sr.Modality, own_sr.PatientWeight = Comprehensive3DSRStorage, "SR", "95"
    own_sr.ContributingEquipmentSequence = [equipment]
    display_copy = copy.deepcopy(datasets[0])  # an MR image, but the node's own display copy
    display_copy.PatientWeight = "95"
    display_copy.ContributingEquipmentSequence = [equipment]
    scanner_sc = copy.deepcopy(datasets[0])  # a scanner's secondary capture: not an analysed image
    scanner_sc.SOPClassUID, scanner_sc.Modality, scanner_sc.PatientWeight = "1.2.840.10008.5.1.4.1.1.7", "OT", "95"
    dataset, lines = study_patient(datasets + [own_sr, display_copy, scanner_sc], in_receive_order=True)
    assert lines == {} and str(dataset.PatientWeight) == "80"
    dataset, lines = study_patient([own_sr] + datasets, in_receive_order=True)  # nor where it came first
    assert lines == {} and dataset is datasets[0]


# --- break48b #4: within one transmission the order the sender sends its series in decides nothing

def test_within_the_first_transmission_the_majority_decides_whatever_came_last(tmp_path):
    """break48b #4: 320 cine instances at 1.78 m / 82 kg, then 16 LGE instances at 1.62 m / 61 kg in the same storescu
    run: the node used the LGE's values (BSA 1.66 instead of 2.01 m²) because they happened to come last."""
    datasets = _slices(["82"] * 5 + ["61"] * 2)
    for ds in datasets[5:]:
        ds.PatientSize = "1.62"
    paths = _write(tmp_path, datasets)  # oldest received first: the minority came last, nothing was sent again
    (study,) = load_studies(paths, in_receive_order=True)
    assert (study.patient.weight_kg, study.patient.height_m) == (82.0, 1.84)
    # the pairs the images hold, for the BSA the other images' values give (the SR's BSADISAGR NUM)
    assert study.patient.size_weight_held == [(1.84, 82.0), (1.62, 61.0)]
    lines = study.patient.disagreements
    assert len(lines) == 2 and all("the value most instances hold, none having been sent again after an earlier "
                                   "analysis" in line for line in lines)
    # the same instances, the last two received after the earlier analysis: a real re-send corrects the others
    (study,) = load_studies(paths, in_receive_order=True, resent=paths[5:])
    assert (study.patient.weight_kg, study.patient.height_m) == (61.0, 1.62)
    # of as many on each side, the value received later (the file order of a folder likewise)
    dataset, lines = study_patient(_slices(["82", "61"]), in_receive_order=True)
    assert str(dataset.PatientWeight) == "61" and "as many instances hold another" in lines["PatientWeight"]
