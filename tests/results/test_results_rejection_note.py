"""break46a #2: a re-analysis left the results it supersedes looking current in the viewer. It now sends an IHE IOCM
Rejection Note (Key Object Selection Document, (113001, DCM, "Rejected for Quality Reasons")) listing exactly the
superseded SEG, SR, PDF and SC, with the new results, one note per destination listing what that destination
received (review46 #3), the superseded display copies where the new results have their own (review46 #9), unless
analysis.rejection_note is false; summary.json says which objects it retired where (or that it did not)."""
from __future__ import annotations

import copy

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import KeyObjectSelectionDocumentStorage

from dicomnode.config import Config
from dicomnode.results.objects import build_result_objects
from dicomnode.results.rejection import DISPLAY_COPY_CLASSES, REJECTED_SOP_CLASSES, build_rejection_note
from dicomnode.study_path import outbox_items, run_study
from dicomnode.types import StudyOutcome
from synthetic import make_study, write
from validators import assert_valid

CONFIG = {"destinations": [{"name": "pacs", "ae_title": "PACS", "host": "10.0.0.1", "port": 104},
                          {"name": "archive", "ae_title": "ARCHIVE", "host": "10.0.0.2", "port": 104}],
          "routes": [{"name": "mr", "destinations": ["pacs", "archive"]}]}


def _superseded(objects, copies: bool = False) -> list[dict]:
    classes = REJECTED_SOP_CLASSES | (DISPLAY_COPY_CLASSES if copies else frozenset())
    return [{"sop_instance_uid": str(d.SOPInstanceUID), "series_instance_uid": str(d.SeriesInstanceUID),
             "sop_class_uid": str(d.SOPClassUID), "study_instance_uid": str(d.StudyInstanceUID),
             "display_copy": str(d.SOPClassUID) in DISPLAY_COPY_CLASSES}
            for d in objects if str(d.SOPClassUID) in classes]


def _listed(note) -> dict[str, str]:
    """{referenced SOP Instance UID: its value type in the content tree}; the evidence lists the same instances."""
    items = {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID): item.ValueType
             for item in note.ContentSequence}
    evidence = {str(item.ReferencedSOPInstanceUID) for study in note.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == set(items)
    return items


@pytest.fixture(scope="module")
def analyses():
    study, results, context = make_study(slices=3, cine_phases=5)
    first = build_result_objects(study, results, context, secondary_capture=True)
    earlier = [{"sop_instance_uid": str(first[-1].SOPInstanceUID), "series_instance_uid": "1.2.4",
                "study_instance_uid": study.study_instance_uid, "report_time": "2026-12-07 07:25"}]
    second = build_result_objects(study, results, context, supersedes=earlier, secondary_capture=True)
    return study, context, first, second, earlier


@pytest.mark.peers
def test_the_rejection_note_lists_exactly_the_superseded_results_and_validates(analyses, tmp_path):
    study, context, first, _, _ = analyses
    superseded = _superseded(first)
    assert {d.Modality for d in first} >= {"SEG", "SR", "DOC", "OT", "MR"}  # display copies (MR) are not listed
    note = build_rejection_note(first[0], superseded, context.started_at, 10102, "2026-12-07 07:25:14", 9100, 9200, 2)
    assert note.SOPClassUID == KeyObjectSelectionDocumentStorage and note.Modality == "KO"
    title = note.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "113001", "DCM", "Rejected for Quality Reasons")
    listed = _listed(note)
    assert set(listed) == {entry["sop_instance_uid"] for entry in superseded}
    kinds = {str(d.SOPInstanceUID): d.Modality for d in first}
    assert {kinds[uid]: kind for uid, kind in listed.items()} == {"SEG": "IMAGE", "OT": "IMAGE", "SR": "COMPOSITE",
                                                                 "DOC": "COMPOSITE"}
    assert str(note.StudyInstanceUID) == study.study_instance_uid
    assert (note.PatientID, note.PatientName) == (first[0].PatientID, first[0].PatientName)
    # break48b #8: the title keeps IOCM's code, the description says what is retired and by what, in OHIF's ~22
    assert note.SeriesDescription == "Superseded by AI run 2: series 9001-9200 of 2026-12-07 07:25:14"
    assert note.Manufacturer == "dicomnode project"
    assert_valid(write(note, tmp_path / "rejection.dcm"), "DicomInstanceValidator")


def test_a_rejection_note_refuses_another_study_or_an_object_not_the_nodes_result(analyses):
    _, context, first, _, _ = analyses
    entry = _superseded(first)[0]
    with pytest.raises(ValueError, match="belongs to study 1.2.999"):
        build_rejection_note(first[0], [{**entry, "study_instance_uid": "1.2.999"}], context.started_at, 9102)
    with pytest.raises(ValueError, match="is not one of the node's result objects"):
        build_rejection_note(first[0], [{**entry, "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2"}], context.started_at,
                             9102)  # CT: not an object the node makes
    with pytest.raises(ValueError, match="at least one"):
        build_rejection_note(first[0], [], context.started_at, 9102)


class _Analyser:
    """Hands the study path the second analysis's result objects, as analysis.run.Analyser builds them."""

    def __init__(self, datasets):
        self.datasets = datasets

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid, "declined": []},
                            datasets=list(self.datasets))


def test_a_reanalysis_sends_each_destination_a_note_of_what_it_received(analyses, tmp_path):
    """review46 #3: "pacs" received every earlier result, "archive" the SEG only (its SR send died), "old" is no
    longer routed: "pacs" and "archive" each get their own note listing what they hold, "old" none."""
    study, context, first, second, earlier = analyses
    superseded = _superseded(first)
    seg = [e for e in superseded if e["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.66.4"]
    segs = [e["sop_instance_uid"] for e in seg]
    assert segs and len(segs) < len(superseded)
    run = run_study(study, Config.model_validate(CONFIG), _Analyser(second), None, tmp_path,
                    lambda d: Path("r") / f"{d.SOPInstanceUID}.dcm", started_at=context.started_at,
                    supersedes=earlier, rejects={"pacs": superseded, "archive": seg, "old": seg})
    notes = {w.destination: w for w in run.written if w.sop_class_uid == KeyObjectSelectionDocumentStorage}
    assert set(notes) == {"pacs", "archive"} and len(run.written) == len(second) + 2
    assert all(w.destination is None for w in run.written if w.sop_class_uid != KeyObjectSelectionDocumentStorage)
    entry = run.summary["rejection_note"]
    assert entry["rejected"] == [e["sop_instance_uid"] for e in superseded]
    assert entry["destinations"] == {
        "pacs": {"sop_instance_uid": notes["pacs"].sop_instance_uid, "rejected": entry["rejected"]},
        "archive": {"sop_instance_uid": notes["archive"].sop_instance_uid, "rejected": segs},
        "old": {"sop_instance_uid": None, "rejected": segs,
                "reason": "not a destination of this study's route"}}
    for name, written in notes.items():
        note = dcmread(tmp_path / written.path)
        assert set(_listed(note)) == set(entry["destinations"][name]["rejected"])
        assert int(note.SeriesNumber) == 10102  # beside the rerun's SR 10100 and suggestions SR 10101
    items = outbox_items(Config.model_validate(CONFIG), run.route, run.written, None)
    results = {w.sop_instance_uid for w in run.written if w.destination is None}
    for name in ("pacs", "archive"):
        assert {i.sop_instance_uid for i in items if i.destination == name} == results | {
            notes[name].sop_instance_uid}


def test_the_sender_gets_a_note_only_where_the_new_results_go_back_to_it(analyses, tmp_path, caplog):
    """review47 #4: the earlier results went back to the sender; the MR images now came from two peers, so nothing
    goes back: no note is written for the sender (it would never be sent), and the summary and log say why."""
    study, context, first, second, earlier = analyses
    superseded = _superseded(first)
    config = Config.model_validate({**CONFIG, "routes": [{"name": "mr", "destinations": ["pacs"],
                                                          "send_to_sender": True, "sender_port": 11112}]})
    with caplog.at_level("WARNING"):
        run = run_study(study, config, _Analyser(second), None, tmp_path / "two",
                        lambda d: Path("r") / f"{d.SOPInstanceUID}.dcm", started_at=context.started_at,
                        supersedes=earlier, rejects={"pacs": superseded, "sender": superseded},
                        senders=[("SCANNER1", "10.0.0.9"), ("SCANNER2", "10.0.0.66")])
    notes = {w.destination for w in run.written if w.sop_class_uid == KeyObjectSelectionDocumentStorage}
    assert notes == {"pacs"}
    entry = run.summary["rejection_note"]["destinations"]["sender"]
    assert entry["sop_instance_uid"] is None
    assert entry["reason"].startswith("nothing is sent back to the sender: the analysed images came from 2 peers "
                                      "(SCANNER1@10.0.0.9, SCANNER2@10.0.0.66)")
    assert "delivered to the sender stay visible there" in caplog.text
    run = run_study(study, config, _Analyser(second), None, tmp_path / "one",
                    lambda d: Path("r") / f"{d.SOPInstanceUID}.dcm", started_at=context.started_at,
                    supersedes=earlier, rejects={"pacs": superseded, "sender": superseded},
                    senders=[("SCANNER1", "10.0.0.9")])
    (note,) = [w for w in run.written if w.destination == "sender"]
    assert [(i.destination, i.ae_title, i.host) for i in outbox_items(config, run.route, run.written, run.sender)
            if i.sop_instance_uid == note.sop_instance_uid] == [("sender", "SCANNER1", "10.0.0.9")]


def test_superseded_display_copies_are_listed_only_where_the_new_results_have_their_own(analyses, tmp_path):
    """review46 #9: every analysis writes its display copies under new UIDs; the superseded SEG was their only
    user. A re-analysis that writes its own copies lists the earlier ones; one that writes none leaves them."""
    study, context, first, second, earlier = analyses
    superseded = _superseded(first, copies=True)
    copies = {e["sop_instance_uid"] for e in superseded if e["display_copy"]}
    assert copies and {d.Modality for d in second if str(d.SOPClassUID) in DISPLAY_COPY_CLASSES} == {"MR"}
    run = run_study(study, Config.model_validate(CONFIG), _Analyser(second), None, tmp_path / "with",
                    lambda d: Path("r") / f"{d.SOPInstanceUID}.dcm", started_at=context.started_at,
                    supersedes=earlier, rejects={"pacs": superseded})
    (note,) = [w for w in run.written if w.sop_class_uid == KeyObjectSelectionDocumentStorage]
    listed = _listed(dcmread(tmp_path / "with" / note.path))
    assert set(listed) == {e["sop_instance_uid"] for e in superseded} and copies <= set(listed)
    assert {listed[uid] for uid in copies} == {"IMAGE"}
    without = [d for d in second if str(d.SOPClassUID) not in DISPLAY_COPY_CLASSES]
    run = run_study(study, Config.model_validate(CONFIG), _Analyser(without), None, tmp_path / "without",
                    lambda d: Path("r") / f"{d.SOPInstanceUID}.dcm", started_at=context.started_at,
                    supersedes=earlier, rejects={"pacs": superseded})
    assert not copies & set(run.summary["rejection_note"]["rejected"])
    assert set(run.summary["rejection_note"]["rejected"]) == {e["sop_instance_uid"] for e in superseded
                                                              if not e["display_copy"]}


@pytest.mark.peers
def test_a_note_listing_display_copies_validates(analyses, tmp_path):
    study, context, first, _, _ = analyses
    note = build_rejection_note(first[0], _superseded(first, copies=True), context.started_at, 10102)
    assert_valid(write(note, tmp_path / "rejection.dcm"), "DicomInstanceValidator")


def test_switched_off_no_rejection_note_is_sent_and_the_summary_says_so(analyses, tmp_path, caplog):
    study, context, first, second, earlier = analyses
    config = Config.model_validate({**CONFIG, "analysis": {"rejection_note": False}})
    with caplog.at_level("WARNING"):
        run = run_study(study, config, _Analyser(second), None, tmp_path,
                        lambda d: Path("r") / f"{d.SOPInstanceUID}.dcm", supersedes=earlier,
                        rejects={"pacs": _superseded(first)})
    assert not [w for w in run.written if w.sop_class_uid == KeyObjectSelectionDocumentStorage]
    assert len(run.written) == len(second)
    assert run.summary["rejection_note"]["destinations"]["pacs"]["sop_instance_uid"] is None
    assert run.summary["rejection_note"]["reason"] == "analysis.rejection_note = false"
    assert "delete them there by hand" in caplog.text


def test_a_first_analysis_sends_no_rejection_note(analyses, tmp_path):
    study, _, first, _, _ = analyses
    run = run_study(study, Config.model_validate(CONFIG), _Analyser(first), None, tmp_path,
                    lambda d: Path("r") / f"{d.SOPInstanceUID}.dcm", rejects={})
    assert "rejection_note" not in run.summary
    assert not [w for w in run.written if w.sop_class_uid == KeyObjectSelectionDocumentStorage]


def test_a_source_birth_date_that_is_no_date_does_not_stop_the_note(analyses, tmp_path):
    """A Sunnybrook study carries PatientBirthDate "00000000": the note of its re-analysis failed in highdicom
    ("year 0 is out of range") and the whole re-analysis with it (full suite, test_delivery_outage)."""
    _, context, first, _, _ = analyses
    header = copy.deepcopy(first[0])
    header.PatientBirthDate = "00000000"
    note = build_rejection_note(header, _superseded(first), context.started_at, 10102)
    assert note.PatientBirthDate == ""
    assert first[0].PatientBirthDate != "00000000" and header.PatientBirthDate == "00000000"  # the header untouched
    assert_valid(write(note, tmp_path / "rejection.dcm"), "DicomInstanceValidator")
