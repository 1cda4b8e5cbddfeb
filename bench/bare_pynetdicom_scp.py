"""The ceiling of the library the node receives with: a bare pynetdicom Storage SCP.

Modes (bench/receive.py runs each as one of its receivers):
- ``durable``: writes each instance, fsyncs it and its folder, then answers 0x0000 (the node's durability promise,
  without index, routing or checks), on pynetdicom's own polling server;
- ``durable-event``: the same on the node's event-driven association reactors (dicomnode.net.reactor);
- ``ack``: answers 0x0000 without writing anything, on the event-driven reactors: what pynetdicom's PDU, DIMSE and
  state-machine work costs per instance on its own, the floor under any receiver built on it.

Every mode turns pynetdicom's per-message logging handlers off, as the node does below DEBUG.

    python bench/bare_pynetdicom_scp.py FOLDER PORT [durable|durable-event|ack]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom import _config as pynetdicom_config

from dicomnode.net.reactor import EventDrivenServer
from dicomnode.net.scp import set_tcp_nodelay

MODES = ("durable", "durable-event", "ack")


def main() -> None:
    folder, port = Path(sys.argv[1]), int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "durable"
    if mode not in MODES:
        sys.exit(f"mode {mode!r} is not one of {MODES}")
    folder.mkdir(parents=True, exist_ok=True)
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"  # as the node runs it (dicomnode.observe): no per-message log text
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)

    def store(event):
        if mode == "ack":
            return 0x0000
        path = folder / f"{event.request.AffectedSOPInstanceUID}.dcm"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, event.encoded_dataset())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.fsync(directory)
        return 0x0000

    ae = AE(ae_title="BAREPYNETDICOM")
    ae.maximum_associations = 16
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax)
    handlers = [(evt.EVT_C_STORE, store), (evt.EVT_CONN_OPEN, set_tcp_nodelay)]
    if mode == "durable":
        ae.start_server(("127.0.0.1", port), block=True, evt_handlers=handlers)
    else:
        ae.make_server(("127.0.0.1", port), evt_handlers=handlers, server_class=EventDrivenServer).serve_forever()


if __name__ == "__main__":
    main()
