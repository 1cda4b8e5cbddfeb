"""`dicomnode serve` with a stand-in analyser, for delivery tests that must not depend on shipped models.

Run as `python -m tests.hardening.stub_serve serve --config FILE`. Everything is the real node (SCP, spool,
completion, state machine, result files, outbox, dispatch, reload, signals); only `Analyser.analyse` is replaced
by one that takes STUB_ANALYSIS_SECONDS (default 1.0; busy on a CPU with STUB_ANALYSIS_BUSY=1) and returns one Comprehensive 3D SR and one Secondary
Capture, with new UIDs, in the source study (as the real results are).
"""
from __future__ import annotations

import datetime as dt
import os
import sys
import time

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _result(study, sop_class: str, modality: str, series_number: int) -> Dataset:
    first = next((s.instances[0].dataset for s in study.series if s.instances), None)
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        setattr(ds, keyword, getattr(first, keyword, "") if first is not None else "")
    now = dt.datetime.now()
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    if modality == "SR":
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
        concept = Dataset()
        concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "126000", "DCM", "Imaging Measurement Report"
        ds.ConceptNameCodeSequence = [concept]
    else:
        ds.ConversionType = "WSD"
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.arange(64, dtype=np.uint8).tobytes()
    return ds


class StubAnalyser:
    """Takes a while, then returns an SR and a Secondary Capture for the study."""

    def __init__(self, config):
        self.config = config
        self.seconds = float(os.environ.get("STUB_ANALYSIS_SECONDS", "1.0"))

    def warm_up(self, names):
        return {}

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        from dicomnode.analysis.run import StudyOutcome

        if os.environ.get("STUB_ANALYSIS_BUSY") == "1":  # hold a CPU (and the GIL) like a heavy pipeline
            deadline = time.perf_counter() + self.seconds
            while time.perf_counter() < deadline:
                sum(i * i for i in range(10_000))
        else:
            time.sleep(self.seconds)
        summary = {"study_instance_uid": study.study_instance_uid, "series": study.summary_series(),
                   "stub": {"supersedes": len(supersedes or [])}, "outputs": [], "declined": []}
        datasets = [_result(study, COMPREHENSIVE_3D_SR, "SR", 901), _result(study, SECONDARY_CAPTURE, "OT", 902)]
        return StudyOutcome(summary=summary, datasets=datasets, durations={"stub": self.seconds})


def main(argv: list[str] | None = None) -> int:
    import dicomnode.node as node_module
    from dicomnode.cli import main as cli_main

    original_init = node_module.Node.__init__

    def init_with_stub(self, config, analyser=None, **options):
        original_init(self, config, analyser or StubAnalyser(config), **options)

    node_module.Node.__init__ = init_with_stub
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
