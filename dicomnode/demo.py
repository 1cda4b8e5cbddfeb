"""`dicomnode demo`: the node on a temporary spool, an embedded PACS, the bundled studies sent, results shown."""
from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path

from dicomnode import strict_json
from dicomnode.config import Config, DestinationConfig, LoggingConfig, NodeConfig, StudiesConfig
from dicomnode.demo_data import extract_demo
from dicomnode.net.receiver import EmbeddedReceiver
from dicomnode.net.scu import send_files
from dicomnode.node import Node, summary_of
from dicomnode.observe import configure_logging
from dicomnode.process import find_files
from dicomnode.summary_view import print_summary_table

DEMO_QUIET_SECONDS = 3.0


#: what a reader of the demo must know about a bundled study (dicomnode/demo_data/README.md)
DEMO_NOTES = {
    "emidec_Case_P009_lge": "EMIDEC ships 8-bit PNGs without geometry; this LGE study was made from them with an "
                            "assumed voxel (pixels 1.21 x 1.62 mm, the aspect that makes the LV round, 10 mm "
                            "slices), so its mL and g are nominal (the %LGE is not affected)",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _outputs_relative_to(summary: dict, spool: Path, folder: Path) -> dict:
    """A study's summary with its outputs, which the node records relative to its spool, relative to `folder` (where
    summary.json is written, as `process` writes them relative to OUT_DIR)."""
    moved = dict(summary)
    if "outputs" in summary:
        moved["outputs"] = [(Path(spool) / output).relative_to(folder).as_posix() for output in summary["outputs"]]
    if "studies" in summary:  # several studies under one grouping key
        moved["studies"] = [_outputs_relative_to(study, spool, folder) for study in summary["studies"]]
    return moved


def run_demo(clean: bool = False, workdir: Path | None = None, timeout: float = 900.0) -> int:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="dicomnode-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"dicomnode demo — working folder {root}")
    pacs = EmbeddedReceiver(root / "pacs", ae_title="DEMOPACS")
    pacs_port = pacs.start()
    config = Config(
        node=NodeConfig(ae_title="DICOMNODE", host="127.0.0.1", port=_free_port(), storage_dir=root / "node",
                        allowed_calling_aes=["DEMOSCANNER"], min_free_space_mb=50),
        studies=StudiesConfig(quiet_seconds=DEMO_QUIET_SECONDS),
        destinations=[DestinationConfig(name="pacs", ae_title="DEMOPACS", host="127.0.0.1", port=pacs_port)],
        logging=LoggingConfig(level="WARNING"),
    )
    config.routes[0].destinations = ["pacs"]
    configure_logging(config.logging)
    node = Node(config)
    print("loading models ...")
    node.start()
    try:
        studies = extract_demo(root / "input")
        sent = 0
        for folder in studies:
            files = find_files(folder)
            name = folder.parent.name if folder.name == "dicom" else folder.name
            print(f"scanner DEMOSCANNER -> DICOMNODE: sending {len(files)} instances of {name}")
            if name in DEMO_NOTES:
                print(f"  note: {DEMO_NOTES[name]}")
            began = time.perf_counter()
            results = send_files(files, "DICOMNODE", "127.0.0.1", config.node.port, calling_ae_title="DEMOSCANNER")
            failed = [r for r in results if not r.ok]
            if failed:
                print(f"  {len(failed)} instance(s) refused, first: {failed[0].error}")
            sent += len(results) - len(failed)
            print(f"  {len(results) - len(failed)} acknowledged in {time.perf_counter() - began:.1f} s")
        print(f"waiting for completion ({DEMO_QUIET_SECONDS:.0f} s quiet or expected counts), analysis and delivery ...")
        deadline = time.time() + timeout
        while time.time() < deadline:
            states = [row["state"] for row in node.db.studies()]
            if states and all(state in ("done", "failed") for state in states):
                break
            time.sleep(0.5)
        summaries = [summary_of(node.db, row["study_key"]) for row in node.db.studies()]
        summary = {"studies": [_outputs_relative_to(s, config.node.storage_dir, root) for s in summaries if s]}
        (root / "summary.json").write_text(strict_json.dumps(summary, "summary.json", indent=2))
        print_summary_table(summary)
        print("\nstudy states:")
        for row in node.db.studies():
            print(f"  {row['study_instance_uid']}: {row['state']}{' — ' + row['reason'] if row['reason'] else ''}")
        print(f"\nthe embedded PACS received {len(pacs.received)} result object(s) in {root / 'pacs'}")
        for path in pacs.received:
            print(f"  {path.name}")
        print(f"summary: {root / 'summary.json'}")
        ok = all(row["state"] == "done" for row in node.db.studies())
    finally:
        node.stop()
        pacs.stop()
        if clean and workdir is None:
            print(f"(removed {root})")
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1
