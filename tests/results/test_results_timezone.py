"""break50b finding 10: a result object declares one TimezoneOffsetFromUTC, which applies to every date and time in it
(PS3.3 C.12.1.1.8): the StudyDate/StudyTime copied from the source and the node's own Series, Content and Instance
Creation times alike. The objects keep the source study's offset and write the node's times in it; a study that
declares none gets the node's own offset, on the display copies too."""
from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import KeyObjectSelectionDocumentStorage

from dicomnode.config import Config
from dicomnode.results.objects import build_result_objects
from dicomnode.results.provenance import in_source_offset, utc_offset
from dicomnode.study_path import run_study
from dicomnode.types import StudyOutcome
from test_results_display_copy import with_files_and_a_localizer
from test_results_rejection_note import CONFIG, _superseded

#: an offset no test machine's clock runs in, so that the node's own offset cannot pass for it
SOURCE_OFFSET = "+0545"


class _Analyser:
    """Builds the result objects of the synthetic study at the start the study path hands it, as
    analysis.run.Analyser does."""

    def __init__(self, results, context):
        self.results, self.context = results, context

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        context = dataclasses.replace(self.context, started_at=started_at)
        datasets = build_result_objects(study, self.results, context, supersedes=supersedes, secondary_capture=True)
        return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid, "declined": []},
                            datasets=datasets)


def _when(dataset: Dataset, date_keyword: str, time_keyword: str, offset: dt.timezone) -> dt.datetime:
    text = f"{dataset.get(date_keyword)}{str(dataset.get(time_keyword)).split('.')[0]}"
    return dt.datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=offset)


@pytest.mark.parametrize("source_offset", [SOURCE_OFFSET, None], ids=["source offset", "none in the source"])
def test_every_result_object_writes_its_times_in_the_offset_it_declares(tmp_path, source_offset):
    """SR, suggestions SR, SEG, PDF, SC, display copies and the IOCM rejection note: the declared offset is the
    source's (else the node's), and the Series, Content and Instance Creation times read in it are the analysis
    start (the node's clock, in UTC here), not hours off; the copied StudyDate/StudyTime are unchanged."""
    attributes = {"StudyDate": "20240131", "StudyTime": "235959.999999"}
    if source_offset:
        attributes["TimezoneOffsetFromUTC"] = source_offset
    study, results, context = with_files_and_a_localizer(tmp_path, **attributes)
    first = build_result_objects(study, results, context, secondary_capture=True)
    started = dt.datetime.now(dt.timezone.utc)
    run = run_study(study, Config.model_validate(CONFIG), _Analyser(results, context), None, tmp_path,
                    lambda d: Path("r") / f"{d.SOPInstanceUID}.dcm", started_at=started,
                    rejects={"pacs": _superseded(first)})
    written = [pydicom.dcmread(tmp_path / w.path, stop_before_pixels=True) for w in run.written]
    assert {d.Modality for d in written} >= {"SEG", "SR", "DOC", "OT", "MR"}
    assert any(w.sop_class_uid == KeyObjectSelectionDocumentStorage for w in run.written)
    expected = source_offset or started.strftime("%z")
    finished = dt.datetime.now(dt.timezone.utc)
    for dataset in written:
        what = f"{dataset.Modality} {dataset.SOPClassUID}"
        assert dataset.get("TimezoneOffsetFromUTC") == expected, what
        offset = utc_offset(expected)
        assert (dataset.StudyDate, dataset.StudyTime) == ("20240131", "235959.999999"), what
        pairs = [("SeriesDate", "SeriesTime")] + [(d, t) for d, t in (("ContentDate", "ContentTime"), (
            "InstanceCreationDate", "InstanceCreationTime")) if dataset.Modality != "MR" and t in dataset]
        for date_keyword, time_keyword in pairs:
            when = _when(dataset, date_keyword, time_keyword, offset)
            assert started - dt.timedelta(seconds=1) <= when <= finished + dt.timedelta(seconds=1), (
                what, time_keyword, when, started)


def test_the_source_offset_is_the_one_most_instances_declare():
    started = dt.datetime(2026, 12, 7, 20, 35, 5, tzinfo=dt.timezone.utc)
    datasets = [Dataset() for _ in range(5)]
    for dataset, value in zip(datasets, ("+0100", "+0100", "-0500", "+2500", "0100")):
        dataset.TimezoneOffsetFromUTC = value  # +2500 and 0100: not an offset, ignored
    moved = in_source_offset(started, datasets)
    assert moved == started and moved.strftime("%H%M %z") == "2135 +0100"
    assert in_source_offset(started, [Dataset()]) is started
    assert utc_offset("-1200") is not None and utc_offset("+1401") is None and utc_offset("+0160") is None
