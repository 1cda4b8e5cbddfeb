"""A real StorageSCP on an OS-chosen port over a throw-away spool: the receive path without a node process."""
from __future__ import annotations

from dicomnode.config import Config
from dicomnode.net.scp import StorageSCP
from dicomnode.spool import Spool
from dicomnode.state import StateDB


def scp_maker(tmp_path, stop_timeout: float | None = None, **defaults):
    """Generator for a fixture: yields make(**node settings) -> a started StorageSCP storing under tmp_path/store
    (`defaults` under the test's own settings); stops every one made, then closes its state database."""
    made = []

    def make(**node):
        settings = {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                    "allowed_calling_aes": ["*"], **defaults, **node}
        db = StateDB(tmp_path / "store" / "state.sqlite3")
        scp = StorageSCP(Config.model_validate({"node": settings}), Spool(tmp_path / "store", db, min_free_space_mb=0))
        scp.start()
        made.append((scp, db))
        return scp

    yield make
    for scp, db in made:
        scp.stop() if stop_timeout is None else scp.stop(stop_timeout)
        db.close()
