"""A minimal Storage SCP that stands in for the PACS in `dicomnode demo`: it accepts any storage class."""
from __future__ import annotations

import threading
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from dicomnode.net.scp import set_tcp_nodelay
from dicomnode.spool import write_durably
from dicomnode.uids import check_uid


class EmbeddedReceiver:
    """Stores every received instance as <folder>/<SOP Instance UID>.dcm; `.received` lists them in order."""

    def __init__(self, folder: Path, ae_title: str = "DEMOPACS", host: str = "127.0.0.1", port: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.host = host
        self.requested_port = port
        self.received: list[Path] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server = None

    def _store(self, event):
        sop = check_uid(event.request.AffectedSOPInstanceUID, "SOP Instance UID")
        path = self.folder / f"{sop}.dcm"
        write_durably(path, event.encoded_dataset(), mode=0o644)
        with self._arrived:
            self.received.append(path)
            self._arrived.notify_all()
        return 0x0000

    def start(self) -> int:
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        ae.add_supported_context(Verification)
        self._server = ae.start_server((self.host, self.requested_port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_CONN_OPEN, set_tcp_nodelay)])
        return self.port

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.received) >= count, timeout=timeout)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
