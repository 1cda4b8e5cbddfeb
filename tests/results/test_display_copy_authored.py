"""break46a #5: display copies are objects the node authors: General Equipment names dicomnode (the scanner moves
into a Contributing Equipment item, purpose Acquisition Equipment), no empty Laterality nor Per-frame Functional
Groups Sequence nor retired attribute carried from the source, Body Part Examined HEART where the source gives none;
dciodvfy finds no error (nor the Laterality warning) on copies of real Sunnybrook SCD0000101 / SCD0000301 images."""
from __future__ import annotations

import pydicom
import pytest
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from dicomnode.results.display_copy import ACQUISITION_EQUIPMENT, PROCESSING_EQUIPMENT, _copy
from dicomnode.results.provenance import NODE_MANUFACTURER, NODE_MODEL_NAME
from synthetic import write
from validators import dciodvfy


def _source(datasets, patient: str):
    folder = datasets / "sunnybrook-scd" / "dicoms" / patient
    if not folder.is_dir():
        pytest.skip(f"sunnybrook-scd/{patient} not in the shared datasets")
    return pydicom.dcmread(folder / "1.dcm")


@pytest.mark.peers
@pytest.mark.parametrize("patient", ["SCD0000101", "SCD0000301"])
def test_a_copy_of_a_real_sunnybrook_image_passes_dciodvfy(datasets, patient, tmp_path):
    source = _source(datasets, patient)
    made = _copy(source, generate_uid(), 9301, "ED copy of CINE for AI SEG", made_at="20261207074500")
    findings = dciodvfy(write(made, tmp_path / "copy.dcm"))
    # Sunnybrook's own Study / SOP Instance UIDs have leading zeros (the copy must reference them), and dciodvfy
    # sums them up in one more line: the only errors left
    zeros = [line for line in findings.errors if "Leading zeroes" in line]
    errors = [line for line in findings.errors if line not in zeros
              and not (zeros and line == "Error - Dicom dataset contains invalid data values for Value Representations")]
    assert not errors, findings.output
    assert not [w for w in findings.warnings if "Laterality" in w or "Functional Groups" in w], findings.output


def test_the_copy_names_the_node_as_its_equipment_and_the_scanner_as_acquisition_equipment():
    from tests.hardening.hardening_support import synthetic_mr

    source = synthetic_mr()
    source.Manufacturer, source.ManufacturerModelName, source.StationName = "GE MEDICAL SYSTEMS", "Signa", "MR1"
    source.SoftwareVersions, source.DeviceSerialNumber = "24", "0815"
    source.Laterality = ""
    source.PerFrameFunctionalGroupsSequence = Sequence([])
    source.StudyStatusID, source.StudyPriorityID = "NONE", "LOW"  # retired (PS3.6)
    made = _copy(source, generate_uid(), 9301, "copy", made_at="20261207074500")
    assert (made.Manufacturer, made.ManufacturerModelName) == (NODE_MANUFACTURER, NODE_MODEL_NAME)
    assert "StationName" not in made and "DeviceSerialNumber" not in made and made.SoftwareVersions
    scanner, node = made.ContributingEquipmentSequence[-2:]
    purposes = [item.PurposeOfReferenceCodeSequence[0].CodeValue for item in (scanner, node)]
    assert purposes == [ACQUISITION_EQUIPMENT.value, PROCESSING_EQUIPMENT.value]
    assert (scanner.Manufacturer, scanner.ManufacturerModelName, scanner.StationName, scanner.SoftwareVersions,
            scanner.DeviceSerialNumber) == ("GE MEDICAL SYSTEMS", "Signa", "MR1", "24", "0815")
    for keyword in ("Laterality", "PerFrameFunctionalGroupsSequence", "StudyStatusID", "StudyPriorityID"):
        assert keyword not in made, keyword
    assert made.BodyPartExamined == "HEART"
    assert source.Manufacturer == "GE MEDICAL SYSTEMS" and "StudyStatusID" in source  # the source is left alone
    source.Laterality, source.BodyPartExamined = "L", "CHEST"
    kept = _copy(source, generate_uid(), 9301, "copy")
    assert (kept.Laterality, kept.BodyPartExamined) == ("L", "CHEST")  # a value the source gives is the source's
