"""`dicomnode retry --all [--destination NAME]` (break41c finding 3): after a destination's outage outlasted the
back-off, every dead letter whose last error was transient is re-queued in one command; permanent refusals are
listed, not re-queued. Both state backends (tests/state_backends.py). With dispatch.resume_dead_letters the
dispatcher does the same by itself once the destination answers a C-ECHO again."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from dicomnode.cli import main
from dicomnode.config import DestinationConfig, DispatchConfig
from dicomnode.dispatch import PERMANENT_NOTE, Dispatcher, transient_dead_letter
from dicomnode.net.scu import refusal_text
from dicomnode.state import COMPLETE, FAILED, SENDING, InstanceRow, StateDB, prepare_storage_dir
from tests.hardening.hardening_support import save, synthetic_mr
from tests.hardening.test_send_diagnostics import store  # noqa: F401 (fixture: a storage folder and its state)
from tests.node.test_send_echo_cli import pacs  # noqa: F401 (fixture: a PACS with C-ECHO)
from tests.node.test_status_retry import node_state  # noqa: F401 (fixture: a state and its config file)
from tests.node.nodeproc import ENV, REPO
from tests.node.test_storage_safety import wait_for
from tests.peers import free_port
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)

SR = "1.2.840.10008.5.1.4.1.1.88.34"
REFUSED = "association with PACS1@127.0.0.1:12200 failed: cannot connect: Connection refused"
TIMEOUT = ("no response within 30 s: the destination accepted the association but did not answer the C-STORE "
           "(hung?); it may have stored the instance")
NO_CONTEXT = ("the destination accepts no presentation context for Segmentation Storage "
              "(1.2.840.10008.5.1.4.1.1.66.4): configure it to accept that SOP class or stop sending it")


def dead_letters(db: StateDB, study: str, items: list[tuple[str, str]]) -> None:
    """Study `study` analysed into one object per (destination, last error), each a dead letter."""
    db.add_instance(InstanceRow(f"{study}.1", study, study, f"{study}.0", "1.2.840.10008.5.1.4.1.1.4",
                                "1.2.840.10008.1.2.1", "MR", f"spool/{study}.dcm", 1, "SCANNER1", time.time()))
    db.set_study_state(study, COMPLETE)
    analysis = db.start_analysis(study, 0)
    written = [(f"{study}.9.{n}", f"{study}.8", SR, f"results/{study}.{n}.dcm") for n in range(len(items))]
    queued = [{"destination": name, "ae_title": "PACS1", "host": "127.0.0.1", "port": 12200,
               "sop_instance_uid": uid, "path": path} for (name, _), (uid, _, _, path) in zip(items, written)]
    db.finish_analysis(analysis, study, 0, {"outputs": []}, written, queued)
    errors = {uid: error for (_, error), (uid, _, _, _) in zip(items, written)}
    for row in db.outbox_for(study):
        db.mark_failed_send(row["id"], errors[row["sop_instance_uid"]], time.time(), dead=True)


def states(db: StateDB, study: str) -> dict[str, str]:
    return {row["sop_instance_uid"]: row["state"] for row in db.outbox_for(study)}


def test_transient_dead_letters_are_told_from_permanent_refusals():
    assert transient_dead_letter(REFUSED) and transient_dead_letter(TIMEOUT)
    assert transient_dead_letter("refused with 0xA700 (Out of Resources): disk full")
    assert not transient_dead_letter(NO_CONTEXT + PERMANENT_NOTE)
    assert not transient_dead_letter("result file /srv/store/results/x.dcm is missing")


def test_only_errors_that_say_they_are_transient_are_transient():
    """A local error is not re-queued by `retry --all` or resume_dead_letters to fail again (review41b F7)."""
    assert transient_dead_letter(refusal_text(0xA700, "disk full")) and transient_dead_letter(refusal_text(0xA710))
    assert transient_dead_letter("association with PACS1@10.0.0.9:104 failed: rejected by the peer: "
                                 "local-limit-exceeded (rejected-transient, service-provider (presentation))")
    assert transient_dead_letter("the destination aborted the association (A-ABORT, DUL service-user: reason not "
                                 "specified) instead of answering the C-STORE")
    assert transient_dead_letter("the connection was lost before the destination answered the C-STORE (closed by "
                                 "the destination or dropped by the network)")
    assert transient_dead_letter("connection failed: ConnectionResetError: [Errno 104] Connection reset by peer")
    assert not transient_dead_letter("AttributeError: 'FileMetaDataset' object has no attribute 'TransferSyntaxUID'")
    assert not transient_dead_letter("ValueError: more than 128 presentation contexts in one batch; split it")
    assert not transient_dead_letter("With tag (0028,0010) got exception: required argument is not an integer")
    assert not transient_dead_letter("result file /srv/store/results/x.dcm cannot be read: no TransferSyntaxUID "
                                     "(not DICOM, or cut short); `dicomnode retry STUDY --reanalyse` makes new "
                                     "result files")
    assert not transient_dead_letter("") and not transient_dead_letter(None)
    assert not transient_dead_letter(refusal_text(0xA900) + PERMANENT_NOTE)
    # an association rejected-permanent: the AE titles are at fault, which the admin fixes (break46b #2)
    assert transient_dead_letter(REJECTED) and transient_dead_letter(REJECTED + PERMANENT_NOTE)


def test_retry_all_leaves_local_errors_dead(node_state, capsys):
    db, config = node_state
    local = "AttributeError: 'FileMetaDataset' object has no attribute 'TransferSyntaxUID'"
    dead_letters(db, "1.1", [("pacs", local), ("pacs", REFUSED)])
    assert main(["retry", "--all", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "re-queued 1 dead letter(s)" in out and "not re-queued, 1 dead letter(s)" in out and local in out
    assert states(db, "1.1") == {"1.1.9.0": "dead", "1.1.9.1": "pending"}


def test_retry_all_requeues_the_transient_dead_letters_of_every_study(node_state, capsys):
    db, config = node_state
    dead_letters(db, "1.1", [("pacs", REFUSED), ("pacs", NO_CONTEXT + PERMANENT_NOTE), ("archive", REFUSED)])
    dead_letters(db, "1.2", [("pacs", TIMEOUT)])
    assert db.study("1.1")["state"] == db.study("1.2")["state"] == FAILED

    assert main(["retry", "--all", "--destination", "pacs", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "re-queued 2 dead letter(s) to pacs of 2 stud(ies)" in out
    assert "not re-queued, 1 dead letter(s) that sending again cannot help" in out and "no presentation context for Segmentation" in out
    assert states(db, "1.1") == {"1.1.9.0": "pending", "1.1.9.1": "dead", "1.1.9.2": "dead"}
    assert states(db, "1.2") == {"1.2.9.0": "pending"}
    assert db.study("1.1")["state"] == db.study("1.2")["state"] == SENDING
    assert all(row["attempts"] == 0 for row in db.outbox_for("1.2"))

    assert main(["retry", "--all", "--config", str(config)]) == 0  # the other destination's too
    assert "re-queued 1 dead letter(s) of 1 stud(ies)" in capsys.readouterr().out
    assert states(db, "1.1") == {"1.1.9.0": "pending", "1.1.9.1": "dead", "1.1.9.2": "pending"}


REJECTED = ("association with WRONGAE@127.0.0.1:12620 failed: rejected by the peer: Called AE title not recognised "
            "(Rejected Permanent, Service User)")


def test_retry_all_requeues_the_dead_letters_of_a_rejected_association(node_state, capsys):
    """break46b #2: a destination whose AE title was wrong refused every study's association; once the admin fixed
    it and reloaded, one `retry --all` re-queues them all, dead letters written before this release (which called
    the rejection permanent) included, while a permanent refusal of an object stays dead."""
    db, config = node_state
    dead_letters(db, "1.1", [("pacs", REJECTED), ("pacs", REJECTED + PERMANENT_NOTE)])
    dead_letters(db, "1.2", [("pacs", REJECTED + PERMANENT_NOTE), ("pacs", NO_CONTEXT + PERMANENT_NOTE)])
    assert main(["retry", "--all", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "re-queued 3 dead letter(s) of 2 stud(ies)" in out
    assert states(db, "1.1") == {"1.1.9.0": "pending", "1.1.9.1": "pending"}
    assert states(db, "1.2") == {"1.2.9.0": "pending", "1.2.9.1": "dead"}


def test_retry_all_that_requeues_nothing_says_so_and_fails_while_dead_letters_remain(node_state, capsys):
    """break46b #2: nothing re-queued is said in words, and the exit status is 1 where dead letters remain (a script
    running it sees that nothing will be sent), 0 where there are none."""
    db, config = node_state
    assert main(["retry", "--all", "--config", str(config)]) == 0
    assert "nothing re-queued: no dead letter" in capsys.readouterr().out
    dead_letters(db, "1.1", [("pacs", NO_CONTEXT + PERMANENT_NOTE)])
    assert main(["retry", "--all", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "nothing re-queued: none of the 1 dead letter(s) failed for a reason sending again can help" in out
    assert "not re-queued, 1 dead letter(s) that sending again cannot help" in out
    assert states(db, "1.1") == {"1.1.9.0": "dead"}


def test_retry_all_refuses_what_it_cannot_mean(node_state, capsys):
    db, config = node_state
    dead_letters(db, "1.1", [("pacs", REFUSED)])
    assert main(["retry", "--all", "--destination", "nosuch", "--config", str(config)]) == 2
    assert "unknown destination 'nosuch'" in capsys.readouterr().err
    assert main(["retry", "--config", str(config)]) == 2
    assert "give either a STUDY or --all" in capsys.readouterr().err
    assert main(["retry", "1.1", "--destination", "pacs", "--config", str(config)]) == 2
    assert main(["retry", "--all", "--resend", "--config", str(config)]) == 2
    assert states(db, "1.1") == {"1.1.9.0": "dead"}


# --- dispatch.resume_dead_letters: re-queued by themselves once the destination answers a C-ECHO again -----------


def test_dead_letters_resume_once_the_destination_answers_a_c_echo(store, pacs):
    root, db = store
    dead_letters(db, "1.1", [("pacs", REFUSED), ("pacs", NO_CONTEXT + PERMANENT_NOTE), ("gone", REFUSED)])
    for row in db.outbox_for("1.1"):
        save(synthetic_mr(), root / row["path"])
    port = {"pacs": free_port()}  # the PACS is down: nothing listens where it is configured
    gone = free_port()

    def destinations():
        return [DestinationConfig(name="pacs", ae_title="PACS", host="127.0.0.1", port=port["pacs"]),
                DestinationConfig(name="gone", ae_title="PACS", host="127.0.0.1", port=gone)]
    config = DispatchConfig(max_attempts=3, initial_backoff_seconds=60, resume_dead_letters=True,
                            resume_check_seconds=0.2)
    dispatcher = Dispatcher(db, root, config, "DICOMNODE", destinations=destinations)
    assert dispatcher.resume_dead_letters() == 0  # no C-ECHO answer: they stay dead
    assert states(db, "1.1") == {"1.1.9.0": "dead", "1.1.9.1": "dead", "1.1.9.2": "dead"}
    port["pacs"] = pacs.port  # back
    dispatcher.start()
    try:
        assert wait_for(lambda: states(db, "1.1")["1.1.9.0"] == "sent", 20), db.outbox_for("1.1")
    finally:
        dispatcher.stop(10)
    assert states(db, "1.1") == {"1.1.9.0": "sent", "1.1.9.1": "dead", "1.1.9.2": "dead"}
    assert len(pacs.received) == 1


def test_dead_letters_stay_dead_without_resume_dead_letters(store, pacs):
    root, db = store
    dead_letters(db, "1.1", [("pacs", REFUSED)])
    destination = DestinationConfig(name="pacs", ae_title="PACS", host="127.0.0.1", port=pacs.port)
    dispatcher = Dispatcher(db, root, DispatchConfig(resume_check_seconds=0.01), "DICOMNODE",
                            destinations=lambda: [destination])
    dispatcher.start()
    try:
        time.sleep(1.0)
    finally:
        dispatcher.stop(10)
    assert states(db, "1.1") == {"1.1.9.0": "dead"}


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_commands_into_a_pipe_the_reader_closed_end_quietly(tmp_path, unbuffered):
    """`dicomnode retry --all ... | head -3` (break51a #6), `log-id ... | head`: a reader that left ends the
    command with exit 1 and no BrokenPipeError traceback; what the command did (the re-queue) is done. Buffered
    stdout (a pipe, as a shell gives it) and unbuffered (PYTHONUNBUFFERED) alike."""
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    dead_letters(db, "1.2.3.51", [("pacs", REFUSED)] * 40 + [("pacs", NO_CONTEXT + PERMANENT_NOTE)] * 400)
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{store}"\n[[destinations]]\nname = "pacs"\nae_title = "PACS1"\n'
                      f'host = "127.0.0.1"\nport = 12200\n')
    env = dict(ENV, PYTHONUNBUFFERED=unbuffered)
    for command in (["retry", "--all", "--destination", "pacs", "--config", str(config)],
                    ["log-id", *(f"1.2.3.{n}" for n in range(2000))]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # `| head -3` that has already gone
        try:
            done = subprocess.run([sys.executable, "-m", "dicomnode", *command], cwd=REPO, env=env, stdout=write_end,
                                  stderr=subprocess.PIPE, text=True, timeout=120)
        finally:
            os.close(write_end)
        assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, (command, done.stderr)
        assert done.returncode == 1, command
    assert list(states(db, "1.2.3.51").values()).count("pending") == 40
    db.close()
