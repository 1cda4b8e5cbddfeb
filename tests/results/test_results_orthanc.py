"""A real Orthanc on loopback accepts every result object over C-STORE and lists it under the source study."""
from __future__ import annotations

import pytest
from pynetdicom import AE
from pydicom.uid import ExplicitVRLittleEndian

from tests.conftest import require_peer
from dicomnode.results.objects import build_result_objects
from peers import OrthancServer, free_port, require_private_netns
from synthetic import make_study

pytestmark = pytest.mark.peers


def test_orthanc_stores_every_result_object_under_the_source_study(tmp_path):
    require_peer("orthanc")
    require_private_netns()
    study, results, context = make_study(slices=4, cine_phases=4)
    objects = build_result_objects(study, results, context, secondary_capture=True)
    with OrthancServer(tmp_path, aet="ORTHANC", modalities={"DICOMNODE": ("127.0.0.1", free_port())}) as pacs:
        ae = AE(ae_title="DICOMNODE")
        for sop_class in sorted({o.SOPClassUID for o in objects}):
            ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
        association = ae.associate("127.0.0.1", pacs.dicom_port, ae_title="ORTHANC")
        assert association.is_established, pacs.log_tail()
        try:
            statuses = [association.send_c_store(o).Status for o in objects]
        finally:
            association.release()
        assert statuses == [0x0000] * len(objects)
        stored = pacs.wait_for_instances(len(objects), study.study_instance_uid)
        assert {i["SOPInstanceUID"] for i in stored} == {o.SOPInstanceUID for o in objects}
        # MR: the display copies of the cine's ED and ES images, which its SEGs reference (display_copy.py)
        assert {i["Modality"] for i in stored} == {"SEG", "SR", "DOC", "OT", "MR"}
        assert pacs.studies() == [study.study_instance_uid]
