"""The ceiling of the library the node receives with: a bare pynetdicom Storage SCP that writes each instance,
fsyncs it and its folder, then answers 0x0000 (the node's durability promise, without index, routing or checks).

Run by bench/receive.py as one of the receivers:  python bench/bare_pynetdicom_scp.py FOLDER PORT
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt

from dicomnode.net.scp import set_tcp_nodelay


def main() -> None:
    folder, port = Path(sys.argv[1]), int(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)

    def store(event):
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
    ae.start_server(("127.0.0.1", port), block=True,
                    evt_handlers=[(evt.EVT_C_STORE, store), (evt.EVT_CONN_OPEN, set_tcp_nodelay)])


if __name__ == "__main__":
    main()
