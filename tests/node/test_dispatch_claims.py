"""Claims of the dispatch thread (stop 67's CI run): an item whose failed attempt is recorded early in its batch is due
again (its back-off over) before that association ends. A round run then must not claim it while the lane still
holds it: such a claim was never handed to a lane, every heartbeat renewed it, and the item was never sent — the
study stayed `sending` until the node was restarted."""
from __future__ import annotations

import threading
import time

import pytest

from dicomnode import dispatch as dispatch_module
from dicomnode.config import DispatchConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.net.scu import AssociationFailed
from tests.hardening.test_send_diagnostics import mr_file, queue_results, store  # noqa: F401 (store: fixture)
from tests.node.test_dispatch_slow_destination import SlowPeer, destination


@pytest.mark.parametrize("exclude_max", [dispatch_module.HELD_EXCLUDE_MAX, 0],
                         ids=["left-out-of-the-claim", "claimed-and-given-back"])
def test_an_item_due_again_while_its_failed_batch_ends_is_sent_once_the_destination_answers(store, monkeypatch,
                                                                                           exclude_max):
    """Both ways: left out of the round's claim by id, and (past HELD_EXCLUDE_MAX held items) claimed, then its claim
    given back at once."""
    root, db = store
    monkeypatch.setattr(dispatch_module, "HELD_EXCLUDE_MAX", exclude_max)
    peer = SlowPeer(delay=0)
    try:
        queue_results(db, root, "1.5", [("pacs", peer.port, mr_file(root / "results", name)) for name in "abc"])
        dispatcher = Dispatcher(db, root, DispatchConfig(initial_backoff_seconds=0.01, max_backoff_seconds=0.05),
                                "DICOMNODE", destinations=lambda: [destination(peer.port, 10.0)])
        real_send_files = dispatch_module.send_files
        associations = []

        def send_files(paths, *args, **kwargs):
            associations.append(len(paths))
            if len(associations) == 1:  # the PACS is still down for the first association
                raise AssociationFailed("cannot connect: Connection refused")
            return real_send_files(paths, *args, **kwargs)

        monkeypatch.setattr(dispatch_module, "send_files", send_files)
        real_failed = dispatcher._failed
        rounds_between = threading.Event()
        real_claim = db.claim_sends

        def claim_sends(*args, **kwargs):
            claimed = real_claim(*args, **kwargs)
            if associations and not rounds_between.is_set() and dispatcher._held:
                rounds_between.set()  # a round ran while the failed batch still held its items
            return claimed

        def failed(row, error, **kwargs):
            real_failed(row, error, **kwargs)
            if row["sop_instance_uid"].endswith(".0"):  # the first of the batch: due again before the batch ends
                time.sleep(0.1)
                dispatcher.wake()
                assert rounds_between.wait(5)

        monkeypatch.setattr(db, "claim_sends", claim_sends)
        monkeypatch.setattr(dispatcher, "_failed", failed)
        dispatcher.idle_seconds = 0.2
        dispatcher.start()
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(row["state"] != "sent" for row in db.outbox_for("1.5")):
                time.sleep(0.05)
        finally:
            dispatcher.stop()
        rows = db.outbox_for("1.5")
        assert rounds_between.is_set()
        assert [row["state"] for row in rows] == ["sent"] * 3, [(r["state"], r["claimed_by"]) for r in rows]
        assert len(peer.received) == 3
        assert db.study("1.5")["state"] == "done"
    finally:
        peer.close()


def test_claim_sends_and_next_send_time_leave_out_the_items_a_dispatcher_still_holds(store):
    root, db = store
    queue_results(db, root, "1.6", [("pacs", 104, mr_file(root / "results", name)) for name in "ab"])
    first, second = (row["id"] for row in db.outbox_for("1.6"))
    assert db.next_send_time(exclude=[first, second]) is None
    assert db.next_send_time(exclude=[first]) is not None
    assert [row["id"] for row in db.claim_sends(exclude=[first])] == [second]
    assert db.claim_sends(exclude=[first]) == []  # claimed now
    assert [row["id"] for row in db.claim_sends()] == [first]
