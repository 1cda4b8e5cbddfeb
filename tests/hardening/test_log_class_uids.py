"""The UID filter of the logs: SOP Class and Transfer Syntax UIDs stay readable wherever a log line has them,
private and unknown ones included (the node is told they are classes, it does not guess from pydicom's registry),
while Study, Series and SOP Instance UIDs stay hashed."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dicomnode.net.scu import context_refusal
from dicomnode.node import Node
from dicomnode.observe import PatientDataFilter, UIDFilter, class_uid, class_uids, hash_uids, sop_class_name
from dicomnode.uids import short_hash
from tests.hardening.hardening_support import synthetic_mr
from tests.node.test_interrupted_transfers import NoAnalysis, _config

#: a vendor's private SOP class no registry knows (private-enterprise root), and a private transfer syntax
PRIVATE_CLASS = "1.3.6.1.4.1.99999.7.1.2.4.1"
PRIVATE_SYNTAX = "1.3.46.670589.33.1.4.1"


class Lines(logging.Handler):
    """The lines as a handler of the node's logging writes them (the patient-data and UID filters applied)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.addFilter(PatientDataFilter())
        self.addFilter(UIDFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def fresh_class_uids():
    """No class told yet: a process that has seen none of them."""
    class_uids.clear()
    yield
    class_uids.clear()


def test_a_dropped_object_of_an_unknown_private_sop_class_is_named_readably(tmp_path, fresh_class_uids):
    node = Node(_config(tmp_path, node={"non_mr_objects": "drop"}), analyser=NoAnalysis())
    node.start(warm_up=False)
    lines = Lines()
    logger = logging.getLogger("dicomnode.net.scp")
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    dataset = synthetic_mr()
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = PRIVATE_CLASS
    instance = str(dataset.SOPInstanceUID)
    try:
        ae = AE(ae_title="SCANNER1")
        ae.add_requested_context(PRIVATE_CLASS, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="DICOMNODE")
        assert assoc.is_established
        assert assoc.send_c_store(dataset).Status == 0
        assoc.release()
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
        node.stop()
    dropped = [line for line in lines.lines if "acknowledged and dropped" in line]
    assert dropped == [f"C-STORE of SOP class {PRIVATE_CLASS} from SCANNER1 acknowledged and dropped "
                       "(node.non_mr_objects = drop)"], lines.lines
    # told by the protocol: any later line of this process keeps it, however it is worded
    assert hash_uids(f"object {PRIVATE_CLASS} of {instance}") == f"object {PRIVATE_CLASS} of uid:{short_hash(instance)}"


def test_a_class_uid_marked_in_the_log_call_stays_readable_and_instance_uids_are_hashed(fresh_class_uids):
    study, sop = generate_uid(), generate_uid()
    record = logging.LogRecord("dicomnode.x", logging.WARNING, __file__, 1, "object %s of study %s (%s) refused",
                               (sop, study, class_uid(PRIVATE_CLASS)), None)
    assert UIDFilter().filter(record)
    assert record.getMessage() == (f"object uid:{short_hash(sop)} of study uid:{short_hash(study)} ({PRIVATE_CLASS}) "
                                   "refused")
    class_uids.clear()  # not marked: an unknown UID is taken for an instance's, as before
    assert hash_uids(f"object {PRIVATE_CLASS}") == f"object uid:{short_hash(PRIVATE_CLASS)}"


def test_messages_composed_in_one_process_keep_their_class_uids_readable_in_another(fresh_class_uids):
    """A refusal reason is stored (the outbox's last_error) and logged or shown by other processes, which were told
    none of its classes: it writes an unknown class or syntax as 'SOP class …' / 'transfer syntax …'."""
    assert sop_class_name(PRIVATE_CLASS) == f"SOP class {PRIVATE_CLASS}"
    assert sop_class_name("1.2.840.10008.5.1.4.1.1.4") == "MR Image Storage (1.2.840.10008.5.1.4.1.1.4)"
    assoc = SimpleNamespace(rejected_contexts=[], accepted_contexts=[
        SimpleNamespace(abstract_syntax=PRIVATE_CLASS, transfer_syntax=[ExplicitVRLittleEndian])])
    reason = context_refusal(assoc, PRIVATE_CLASS, PRIVATE_SYNTAX)
    rejected = SimpleNamespace(accepted_contexts=[], rejected_contexts=[
        SimpleNamespace(abstract_syntax=PRIVATE_CLASS, transfer_syntax=[PRIVATE_SYNTAX], result=0x04)])
    offered = context_refusal(rejected, PRIVATE_CLASS)
    class_uids.clear()  # another process
    for text in (reason, offered):
        assert hash_uids(text) == text, hash_uids(text)
        assert PRIVATE_CLASS in text and PRIVATE_SYNTAX in text
