"""The Orthanc test peer: starts isolated on loopback, stores, lists, restarts with its data."""
from __future__ import annotations

import subprocess
from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from tests.conftest import require_peer
from peers import OrthancServer, free_port, require_private_netns

pytestmark = pytest.mark.peers


def _tiny_mr(study_uid: str) -> bytes:
    ds = pydicom.Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "PEERS1"
    ds.PatientName = "Peers^Test"
    ds.Modality = "MR"
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(8)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_orthanc_receives_over_dicom_and_survives_restart(tmp_path):
    require_peer("orthanc")
    storescu = require_peer("storescu")
    require_private_netns()
    study_uid = generate_uid()
    path = tmp_path / "one.dcm"
    path.write_bytes(_tiny_mr(study_uid))
    with OrthancServer(tmp_path, aet="ORTHANC", modalities={"DICOMNODE": ("127.0.0.1", free_port())}) as pacs:
        assert pacs.studies() == []
        subprocess.run(
            [storescu, "-aet", "DICOMNODE", "-aec", "ORTHANC", "127.0.0.1", str(pacs.dicom_port), str(path)],
            check=True, capture_output=True, env={"TCP_NODELAY": "1"}, timeout=30,
        )
        stored = pacs.wait_for_instances(1, study_uid)
        assert [i["StudyInstanceUID"] for i in stored] == [study_uid]
        pacs.stop()
        assert not pacs.running
        pacs.start()
        assert pacs.studies() == [study_uid]
        assert len(pacs.instances()) == 1
        assert pacs.study_instances(generate_uid()) == []
        assert pydicom.dcmread(BytesIO(pacs.instance_file(stored[0]["ID"]))).StudyInstanceUID == study_uid
