"""Receive benchmark: storescu -> `dicomnode serve`, Orthanc and DCMTK storescp, same instances, one run.

500 real Sunnybrook MR instances (256x256 int16, ~130 KB each, new SOP Instance UIDs) over 1 and over 8
concurrent associations (storescu processes), TCP_NODELAY on all. Orthanc runs with SyncStorageArea (fsync before
the C-STORE response: the same promise as the node's); storescp writes without fsync and without an index. The
ratios are against Orthanc's one-association rate (issue 17: >= 1.0 on one association, >= 1.5 over 8). The node
runs once with one receiving process and once with `[node] receive_processes = 2` (dicomnode-2p). Bare pynetdicom
SCPs (bench/bare_pynetdicom_scp.py) split the node's time: with the same fsyncs on pynetdicom's polling server
(pynetdicom) and on the node's event-driven reactors (pynetdicom-event), and acknowledging without writing
(pynetdicom-ack: the library's own per-instance cost, the floor under any receiver built on it).

Also, with --e2e: end-to-end time from the last instance acknowledged to the last result stored in the
destination, minus the configured quiet time (real pipelines).

Runs inside a private network namespace (storescp and Orthanc bind 0.0.0.0); needs root. Prints a table and writes
bench/results/receive.json.

    PYTHONPATH=$PWD nice -n 10 python bench/receive.py [--instances 500] [--repeats 1] [--e2e]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.peers import OrthancServer, dcmtk, enter_private_netns, free_port  # noqa: E402 - after the path is set

SUNNYBROOK = REPO.parent / "shared" / "datasets" / "sunnybrook-scd" / "dicoms"
ENV = dict(os.environ, TCP_NODELAY="1", PYTHONPATH=str(REPO))
ASSOCIATIONS = (1, 8)
RECEIVERS = ("dicomnode", "dicomnode-2p", "pynetdicom", "pynetdicom-event", "pynetdicom-ack", "orthanc", "storescp")
#: bench/bare_pynetdicom_scp.py mode of each bare pynetdicom receiver
BARE_MODES = {"pynetdicom": "durable", "pynetdicom-event": "durable-event", "pynetdicom-ack": "ack"}


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def instances(count: int) -> list[Path]:
    files = sorted(SUNNYBROOK.rglob("*.dcm"))
    if not files:
        sys.exit(f"no Sunnybrook DICOM under {SUNNYBROOK}")
    return (files * (count // len(files) + 1))[:count]


def make_unique_copies(files: list[Path], folder: Path) -> list[Path]:
    """Copies with new SOP Instance UIDs, one study (duplicates would be stored once and skew the numbers)."""
    folder.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", message="Invalid value for VR UI")  # Sunnybrook's UIDs have leading zeros
    out = []
    study = generate_uid()
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID = study
        target = folder / f"{index:05d}.dcm"
        ds.save_as(target)
        out.append(target)
    return out


def storescu(port: int, aet: str, files: list[Path], associations: int = 1) -> float:
    """Seconds from the first association's start to the last one's release (each storescu sends its share)."""
    chunks = [files[i::associations] for i in range(associations)]
    began = time.perf_counter()
    processes = [
        subprocess.Popen([dcmtk("storescu"), "-aet", "BENCHSCU", "-aec", aet, "127.0.0.1", str(port), *map(str, chunk)],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for chunk in chunks
    ]
    errors = [process.communicate()[1] for process in processes]
    elapsed = time.perf_counter() - began
    for process, error in zip(processes, errors):
        if process.returncode != 0:
            raise RuntimeError(f"storescu failed: {error.decode()[-500:]}")
    return elapsed


class StoreSCP:
    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([dcmtk("storescp"), "-aet", "STORESCP", "-od", str(self.folder), "+B", str(self.port)],
                                        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def __exit__(self, *exc):
        stop(self.process)


class BarePynetdicom:
    """bench/bare_pynetdicom_scp.py: the receive library alone, with the same fsyncs (the node's ceiling), or
    acknowledging without writing (`mode` "ack": the library's own cost, the floor under the node)."""

    def __init__(self, folder: Path, mode: str = "durable"):
        self.folder, self.port, self.mode = folder, free_port(), mode

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, str(REPO / "bench" / "bare_pynetdicom_scp.py"), str(self.folder),
                                         str(self.port), self.mode], env=ENV, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        wait_port(self.port, timeout=60)
        return self

    def __exit__(self, *exc):
        stop(self.process)


class NodeServe:
    """`python -m dicomnode serve` with a route that analyses nothing (receive only) unless `analyse`; sending
    starts once /healthz says ready (models loaded), as Orthanc's and storescp's start-up is not measured either."""

    def __init__(self, folder: Path, quiet: float = 3600, destination_port: int | None = None, analyse: bool = False,
                 processes: int = 1):
        self.folder, self.port, self.metrics_port = folder, free_port(), free_port()
        self.processes = processes
        destinations = route_destinations = ""
        if destination_port:
            destinations = (f'[[destinations]]\nname = "pacs"\nae_title = "STORESCP"\nhost = "127.0.0.1"\n'
                            f'port = {destination_port}\n')
            route_destinations = 'destinations = ["pacs"]\n'
        self.config = folder / "bench.toml"
        folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'[node]\nae_title = "DICOMNODE"\nport = {self.port}\nstorage_dir = "{folder / "store"}"\n'
            f'allowed_calling_aes = ["*"]\nmin_free_space_mb = 10\nmax_associations = 16\n'
            f'receive_processes = {processes}\n'
            f'[studies]\nquiet_seconds = {quiet}\n'
            f'{destinations}[[routes]]\nname = "r"\n{route_destinations}[routes.match]\n'
            f'modality = "{"MR" if analyse else "NEVER"}"\n[logging]\nlevel = "WARNING"\n'
            f'[observability]\nmetrics_enabled = true\nmetrics_port = {self.metrics_port}\n')

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "dicomnode", "serve", "--config", str(self.config)],
                                        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port, timeout=120)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        while time.time() < deadline and self.processes_up() < self.processes:  # receiving helpers started
            time.sleep(0.2)
        return self

    def processes_up(self) -> int:
        """Processes of this node with a heartbeat row (each writes one once it listens)."""
        try:
            with sqlite3.connect(self.folder / "store" / "state.sqlite3", timeout=5) as connection:
                return connection.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]
        except sqlite3.Error:
            return 0

    def __exit__(self, *exc):
        stop(self.process)


def stop(process) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def receive_seconds(receiver: str, work: Path, files: list[Path], associations: int) -> float:
    folder = work / f"{receiver}-{associations}-{time.monotonic_ns()}"
    if receiver == "storescp":
        with StoreSCP(folder) as scp:
            return storescu(scp.port, "STORESCP", files, associations)
    if receiver in BARE_MODES:
        with BarePynetdicom(folder, BARE_MODES[receiver]) as scp:
            return storescu(scp.port, "BAREPYNETDICOM", files, associations)
    if receiver == "orthanc":
        with OrthancServer(folder, aet="ORTHANC", extra_config={"SyncStorageArea": True, "StorageCompression": False,
                                                               "DicomThreadsCount": 8}) as orthanc:
            return storescu(orthanc.dicom_port, "ORTHANC", files, associations)
    with NodeServe(folder, processes=2 if receiver == "dicomnode-2p" else 1) as node:
        return storescu(node.port, "DICOMNODE", files, associations)


def end_to_end(work: Path) -> dict:
    quiet = 2.0
    pacs_dir = work / "e2e-pacs"
    with StoreSCP(pacs_dir) as scp, NodeServe(work / "e2e-node", quiet, scp.port, analyse=True) as node:
        files = make_unique_copies(sorted(SUNNYBROOK.glob("SCD0000301/*.dcm")), work / "e2e-in")
        storescu(node.port, "DICOMNODE", files)
        acknowledged = time.perf_counter()
        deadline = time.time() + 600
        last_count, last_change = 0, time.perf_counter()
        while time.time() < deadline:
            count = len(list(pacs_dir.glob("*")))
            if count != last_count:
                last_count, last_change = count, time.perf_counter()
            elif count and time.perf_counter() - last_change > 5:
                break
            time.sleep(0.1)
    return {"results_received": last_count, "seconds_after_last_ack": round(last_change - acknowledged, 2),
            "quiet_seconds": quiet, "minus_quiet": round(last_change - acknowledged - quiet, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=1, help="median of this many runs per cell")
    parser.add_argument("--e2e", action="store_true", help="also measure end to end with the real pipelines")
    args = parser.parse_args()
    enter_private_netns()
    work = Path(tempfile.mkdtemp(prefix="dicomnode-bench-"))
    rates: dict[tuple[str, int], float] = {}
    seconds: dict[str, list[float]] = {}
    try:
        files = make_unique_copies(instances(args.instances), work / "in")
        mean_kb = statistics.mean(f.stat().st_size for f in files) / 1024
        for _ in range(args.repeats):  # receivers interleaved, so a slow spell of the machine hits every one
            for associations in ASSOCIATIONS:
                for receiver in RECEIVERS:  # the same files to each receiver, each on a fresh store
                    seconds.setdefault(f"{receiver}/{associations}", []).append(
                        round(receive_seconds(receiver, work, files, associations), 3))
        for associations in ASSOCIATIONS:
            for receiver in RECEIVERS:
                rates[(receiver, associations)] = args.instances / statistics.median(seconds[f"{receiver}/{associations}"])
        e2e = end_to_end(work) if args.e2e else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    orthanc_one = rates[("orthanc", 1)]
    rows = [{"associations": n, **{f"{r}_images_per_s": round(rates[(r, n)], 1) for r in RECEIVERS},
             "dicomnode_vs_orthanc_1_association": round(rates[("dicomnode", n)] / orthanc_one, 3),
             "dicomnode_2p_vs_orthanc_1_association": round(rates[("dicomnode-2p", n)] / orthanc_one, 3),
             "dicomnode_vs_orthanc_same_associations": round(rates[("dicomnode", n)] / rates[("orthanc", n)], 3)}
            for n in ASSOCIATIONS]
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version(), "load_average_at_end": os.getloadavg()}
    print(f"\nReceive benchmark: {args.instances} Sunnybrook MR instances ({mean_kb:.0f} KB mean), median of "
          f"{args.repeats}, TCP_NODELAY on all; {machine['cores']} cores, load {machine['load_average_at_end'][0]:.1f}")
    print("images/s; dicomnode-2p: [node] receive_processes = 2; ratios against Orthanc's one-association rate")
    header = ["assoc", *RECEIVERS, "node/orthanc(1)", "node-2p/orthanc(1)"]
    print(" ".join(f"{name:>{max(len(name), 7)}}" for name in header))
    for row in rows:
        cells = [row["associations"], *(row[f"{r}_images_per_s"] for r in RECEIVERS),
                 row["dicomnode_vs_orthanc_1_association"], row["dicomnode_2p_vs_orthanc_1_association"]]
        print(" ".join(f"{cell:>{max(len(name), 7)}}" for name, cell in zip(header, cells)))
    print("pynetdicom: bare SCP writing + fsyncing (polling server); pynetdicom-event: the same on the node's "
          "event-driven reactors; pynetdicom-ack: acknowledging without writing (the library's own cost)")
    print("goals (issue 17): node/orthanc(1 assoc) >= 1.0 on 1 association, >= 1.5 over 8")
    if e2e:
        print(f"end to end: last result stored {e2e['seconds_after_last_ack']} s after the last instance was acknowledged"
              f" ({e2e['minus_quiet']} s beyond the {e2e['quiet_seconds']} s quiet time; {e2e['results_received']} objects)")
    out = REPO / "bench" / "results" / "receive.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "instances": args.instances, "mean_kb": round(mean_kb, 1),
                               "receive": rows, "seconds": seconds, "end_to_end": e2e}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
