"""The bad-input corpus over the network: each case gets a clear DIMSE status or a `declined: reason` in its study's
record; the node answers C-ECHO after every case and a study stored before is untouched."""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

import pytest

from tests.data.bad_inputs import BadInput, generate
from tests.hardening.hardening_support import echo_status, store_one, synthetic_mr
from tests.node.nodeproc import NodeProcess
from tests.peers import free_port

def _case_names() -> list[str]:
    with tempfile.TemporaryDirectory(prefix="bad-inputs-names-") as folder:
        return [case.name for case in generate(Path(folder))]


CASE_NAMES = _case_names()


def send_case(port: int, case: BadInput) -> None:
    for path in case.files:
        try:
            status = store_one(port, path, raw=True, context=case.context)
        except ValueError:  # pynetdicom: no accepted presentation context for it
            case.statuses.append("context")
            continue
        if status is None:
            case.statuses.append("context")  # association not established: no context could be accepted
        elif "Status" not in status:
            case.statuses.append("no status (association lost)")
        else:
            case.statuses.append(int(status.Status))
        assert echo_status(port) == 0x0000, f"no C-ECHO after {case.name}"


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("badinputs")
    cases = {case.name: case for case in generate(workdir / "corpus")}
    port = free_port()
    node = NodeProcess(workdir / "node", port, pipelines=("lge", "cine"), quiet_seconds=1).start()
    try:
        control = synthetic_mr()
        control_study = control.StudyInstanceUID
        for index in range(3):
            ds = synthetic_mr(study_uid=control_study, series_uid=control.SeriesInstanceUID, instance=index,
                              position=8.0 * index)
            assert store_one(port, ds).Status == 0
        control_rows = node.db_rows("SELECT sop_instance_uid, path FROM instances WHERE study_instance_uid=?",
                                    (control_study,))
        digests = {r["path"]: hashlib.sha256((node.storage / r["path"]).read_bytes()).hexdigest() for r in control_rows}
        began = time.monotonic()
        for case in cases.values():
            send_case(port, case)
        sending_seconds = time.monotonic() - began
        node.wait_states(states=("done", "failed"), timeout=240)
        studies = {row["study_instance_uid"]: row for row in node.studies()}
        after = node.db_rows("SELECT sop_instance_uid, path FROM instances WHERE study_instance_uid=?", (control_study,))
        yield {"cases": cases, "studies": studies, "node": node, "control_before": control_rows,
               "control_after": after, "digests": digests, "sending_seconds": sending_seconds}
    finally:
        assert node.stop() == 0


def test_corpus_has_at_least_30_cases():
    assert len(CASE_NAMES) >= 30, CASE_NAMES


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_gets_a_clear_answer(corpus_run, name):
    case: BadInput = corpus_run["cases"][name]
    assert case.statuses, "nothing was sent"
    if case.expect == "refused":
        assert set(case.statuses) == {case.status}, f"statuses {case.statuses}, expected 0x{case.status:04X}"
        if case.study_uid:
            assert case.study_uid not in corpus_run["studies"], "a refused instance must not create a study"
    elif case.expect == "context":
        assert set(case.statuses) == {"context"}, case.statuses
        if case.study_uid:
            assert case.study_uid not in corpus_run["studies"]
    else:
        assert set(case.statuses) == {0x0000}, [hex(s) if isinstance(s, int) else s for s in case.statuses]
        study = corpus_run["studies"].get(case.study_uid)
        assert study is not None, "accepted instances must make a study"
        summary = json.loads(study["summary_json"]) if study["summary_json"] else {}
        said = summary.get("declined", []) + summary.get("not_analysed", [])  # not_analysed: no series for a pipeline
        reasons = [str(item.get("reason") or "") for item in said]
        reasons += [str(item.get("reason") or "") for item in summary.get("excluded_instances", [])]
        if study["state"] == "failed":
            reasons.append(str(study["reason"] or ""))
        reasons = [r for r in reasons if r.strip()]
        assert reasons, f"state {study['state']}, no declined reason in {summary}"
        print(f"{name}: {study['state']}: {reasons}")
        if case.reason:
            assert any(case.reason.lower() in r.lower() for r in reasons), reasons


def test_the_study_stored_before_the_corpus_is_untouched(corpus_run):
    node = corpus_run["node"]
    assert corpus_run["control_after"] == corpus_run["control_before"]
    for path, digest in corpus_run["digests"].items():
        assert hashlib.sha256((node.storage / path).read_bytes()).hexdigest() == digest
    assert not list(node.storage.rglob(".*.tmp"))
    assert echo_status(node.port) == 0
