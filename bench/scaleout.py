"""Scale-out benchmark: studies per hour and last-instance-to-PACS time with 1 and 2 analysis workers, SQLite vs
PostgreSQL state, and receive rate with 1 and 2 receivers; side by side in one run.

Every configuration runs separate `dicomnode serve --roles …` processes sharing one spool folder: one process
`receive,complete,dispatch` (two for the receive rows) and N `analyse` processes with one worker thread each, so
"2 workers" means two processes claiming studies from the shared state. Studies are copies of Sunnybrook
SCD0000301 (cine SAX 200 images + localizer 15) with new UIDs, sent concurrently by storescu; the cine pipeline
runs on each; Orthanc is the PACS. PostgreSQL is a throw-away initdb on a Unix socket (fsync on, like production).

Runs inside a private network namespace (Orthanc binds 0.0.0.0): re-executes itself under `unshare --net` as root.
Prints a table and writes bench/results/scaleout.json.

    PYTHONPATH=. .venv/bin/python bench/scaleout.py [--studies 4] [--receive-studies 4] [--backends sqlite,postgresql]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.receive import ensure_private_netns  # noqa: E402
from dicomnode.state import StateDB  # noqa: E402
from tests.peers import OrthancServer, dcmtk, free_port  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402
from tests.scaleout.cluster import (  # noqa: E402
    cluster_config, start_cluster, state_upgrade, wait_for_heartbeats, wait_states,
)

DATASETS = Path(os.environ.get("DICOMNODE_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
SOURCE = [DATASETS / "sunnybrook-scd" / "dicoms" / "SCD0000301",
          DATASETS / "sunnybrook-scd-localizers" / "dicoms" / "SCD0000301"]


def make_studies(count: int, folder: Path) -> list[list[Path]]:
    """`count` copies of the source study, each with new Study/Series/SOP Instance UIDs."""
    import pydicom
    from pydicom.uid import generate_uid

    files = [f for source in SOURCE for f in sorted(source.glob("*.dcm"))]
    if not files:
        sys.exit(f"no source study under {SOURCE[0]} (set DICOMNODE_SHARED_DATASETS)")
    studies = []
    for index in range(count):
        study_uid = generate_uid()
        series_uids: dict[str, str] = {}
        out = folder / f"study{index:02d}"
        out.mkdir(parents=True)
        paths = []
        for number, path in enumerate(files):
            dataset = pydicom.dcmread(path)
            dataset.StudyInstanceUID = study_uid
            series_uids.setdefault(dataset.SeriesInstanceUID, generate_uid())
            dataset.SeriesInstanceUID = series_uids[dataset.SeriesInstanceUID]
            dataset.SOPInstanceUID = generate_uid()
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            target = out / f"{number:04d}.dcm"
            dataset.save_as(target, enforce_file_format=True)
            paths.append(target)
        studies.append(paths)
    return studies


def storescu(port: int, files: list[Path]) -> float:
    """Send with one association; returns the wall time (s)."""
    started = time.perf_counter()
    result = subprocess.run([dcmtk("storescu"), "-aet", "SCANNER1", "-aec", "DICOMNODE", "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr[-1000:]}")
    return time.perf_counter() - started


def concurrently(sends: list[tuple[int, list[Path]]]) -> tuple[list[threading.Thread], list[str]]:
    """Start one storescu per (port, files) at once; returns the threads and the list their errors go to."""
    errors: list[str] = []

    def send(port: int, files: list[Path]) -> None:
        try:
            storescu(port, files)
        except Exception as exc:  # noqa: BLE001 - reported with the results
            errors.append(str(exc))

    threads = [threading.Thread(target=send, args=item, daemon=True) for item in sends]
    for thread in threads:
        thread.start()
    return threads, errors


def send_all(ports: list[int], studies: list[list[Path]]) -> float:
    """Every study on its own association, concurrently, round-robin over the receivers; wall time (s)."""
    started = time.perf_counter()
    threads, errors = concurrently([(ports[i % len(ports)], files) for i, files in enumerate(studies)])
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} send(s) failed: {errors[0]}")
    return time.perf_counter() - started


def run_cluster(workdir: Path, url: str | None, receivers: int, workers: int, studies: list[list[Path]],
                analyse: bool) -> dict:
    storage = workdir / "spool"
    ports = [free_port() for _ in range(receivers)]
    with OrthancServer(workdir, aet="ORTHANC") as orthanc:
        pacs = {"ORTHANC": ("127.0.0.1", orthanc.dicom_port)}
        quiet = 2.0

        def config(port: int) -> str:
            return cluster_config(storage, url, port, pacs, pipelines=("cine",), quiet_seconds=quiet,
                                  lease_seconds=30, heartbeat_seconds=2, poll_seconds=0.3)

        if url:
            _upgrade(workdir, config(0))
        receiving, analysing = start_cluster(workdir, config, ports, workers=workers if analyse else 0)
        processes = receiving + analysing
        db = None
        try:
            deadline = time.time() + 120
            while db is None:
                try:
                    db = StateDB(url or storage / "state.sqlite3", upgrade=False)
                except Exception:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
            wait_for_heartbeats(db, processes)
            images = sum(len(s) for s in studies)
            send_seconds = send_all(ports, studies)
            row = {"receivers": receivers, "images": images, "send_seconds": round(send_seconds, 2),
                   "receive_img_per_s": round(images / send_seconds, 1)}
            if not analyse:
                return row
            finished = wait_states(db, ("done",), len(studies), timeout=3600, processes=processes)
            first_sent = min(s["first_received"] for s in finished)
            last_done = max(s["updated_at"] for s in finished)
            # includes the completion wait (expected counts + 2 s grace here, else quiet_seconds)
            latencies = [s["updated_at"] - s["last_received"] for s in finished]
            done_by = [a["worker"] for s in finished for a in db.analyses_of(s["study_key"]) if a["state"] == "done"]
            delivered = len(orthanc.instances())
            row.update(workers=workers, studies=len(studies),
                       studies_per_hour=round(len(studies) / (last_done - first_sent) * 3600, 1),
                       last_instance_to_pacs_s_median=round(statistics.median(latencies), 1),
                       last_instance_to_pacs_s_max=round(max(latencies), 1),
                       analyses_done=len(done_by), analyses_per_worker=sorted(
                           {w: done_by.count(w) for w in done_by}.values()),
                       results_in_pacs=delivered)
            return row
        finally:
            for process in processes:
                process.stop()
            if db is not None:
                db.close()


def run_goal(workdir: Path, url: str, studies: list[list[Path]], kill_after_s: float = 1.0) -> dict:
    """The issue's goal: PostgreSQL, 2 receivers + 2 workers, every study sent at once (each split over both
    receivers), the worker holding the first claim killed -9 mid-analysis; counts what reaches the PACS."""
    import pydicom

    SR, SEG = "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.66.4"
    storage = workdir / "spool"
    ports = [free_port(), free_port()]
    with OrthancServer(workdir, aet="ORTHANC") as orthanc:
        pacs = {"ORTHANC": ("127.0.0.1", orthanc.dicom_port)}

        def config(port: int) -> str:
            return cluster_config(storage, url, port, pacs, pipelines=("cine",), quiet_seconds=3,
                                  lease_seconds=10, heartbeat_seconds=2, poll_seconds=0.3)

        _upgrade(workdir, config(0))
        db = StateDB(url)
        receivers, workers = start_cluster(workdir, config, ports, workers=2)
        processes = receivers + workers
        try:
            wait_for_heartbeats(db, processes)
            started = time.perf_counter()
            # every study at once, each on two associations: even files to one receiver, odd files to the other
            senders, errors = concurrently([(ports[i], files[i::2]) for files in studies for i in range(2)])
            claim = None
            while claim is None and time.perf_counter() - started < 1800:
                claim = next((c for c in db.claims() if c["claimed_by"]), None)
                time.sleep(0.05)
            time.sleep(kill_after_s)
            victim = next(w for w in workers if claim["claimed_by"].endswith(f":{w.pid}"))
            victim_state = db.study(claim["study_key"])["state"]
            victim.kill9()
            for sender in senders:
                sender.join()
            if errors:
                raise RuntimeError(f"{len(errors)} send(s) failed: {errors[0]}")
            finished = wait_states(db, ("done",), len(studies), timeout=7200, processes=processes)
            wall = time.perf_counter() - started
            per_study = []
            for files in studies:
                uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
                results = [i for i in orthanc.study_instances(uid) if i["Modality"] in ("SEG", "SR")]
                classes = [orthanc.get_json(f"/instances/{i['ID']}/simplified-tags").get("SOPClassUID")
                           for i in results]
                per_study.append((classes.count(SR), classes.count(SEG)))
            done = [a for s in finished for a in db.analyses_of(s["study_key"]) if a["state"] == "done"]
            return {"kind": "goal", "backend": "postgresql", "receivers": 2, "workers": 2, "studies": len(studies),
                    "images": sum(len(s) for s in studies), "associations": len(senders), "wall_s": round(wall, 1),
                    "killed_worker_study_state": victim_state,
                    "studies_with_one_sr_and_one_seg_set": sum(1 for sr, seg in per_study if sr == 1 and seg == 2),
                    "studies_with_missing_results": sum(1 for sr, seg in per_study if sr == 0 or seg == 0),
                    "studies_with_duplicates": sum(1 for sr, seg in per_study if sr > 1 or seg > 2),
                    "analyses_done": len(done)}
        finally:
            for process in processes:
                process.stop()
            db.close()


def _upgrade(workdir: Path, config_text: str) -> None:
    path = workdir / "upgrade.toml"
    path.write_text(config_text)
    result = state_upgrade(path)
    if result.returncode != 0:
        raise RuntimeError(f"dicomnode state upgrade failed: {result.stdout}{result.stderr}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=4, help="studies per analysis configuration")
    parser.add_argument("--receive-studies", type=int, default=4, help="studies per receive configuration")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--goal", type=int, default=0, metavar="N",
                        help="only the goal run: N studies at once, PostgreSQL, 2 receivers + 2 workers, kill -9")
    args = parser.parse_args()
    ensure_private_netns()
    backends = args.backends.split(",")
    root = Path(tempfile.mkdtemp(prefix="dn-scaleout-"))
    server = PostgresServer().start(fsync=True) if "postgresql" in backends else None
    rows = []
    try:
        if args.goal:
            server = server or PostgresServer().start(fsync=True)
            row = run_goal(root / "goal", server.create_database(), make_studies(args.goal, root / "studies"))
            print(json.dumps(row, indent=2))
            out = REPO / "bench" / "results" / "scaleout_goal.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(row, indent=2))
            return 0
        studies = make_studies(max(args.studies, args.receive_studies), root / "studies")
        for backend in backends:
            for receivers in (1, 2):
                url = server.create_database() if backend == "postgresql" else None
                row = run_cluster(root / f"recv-{backend}-{receivers}", url, receivers, 0,
                                  studies[:args.receive_studies], analyse=False)
                rows.append({"kind": "receive", "backend": backend, **row})
                print(rows[-1], flush=True)
            for workers in map(int, args.workers.split(",")):
                url = server.create_database() if backend == "postgresql" else None
                row = run_cluster(root / f"analyse-{backend}-{workers}", url, 1, workers,
                                  studies[:args.studies], analyse=True)
                rows.append({"kind": "analyse", "backend": backend, **row})
                print(rows[-1], flush=True)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    machine = f"{platform.node()}: {os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}, shared"
    print(f"\nmachine: {machine}")
    print(f"{'kind':<8} {'state':<11} {'recv':>4} {'wrk':>3} {'studies':>7} {'img/s':>7} {'studies/h':>9} "
          f"{'to PACS med':>11} {'max':>6}  per worker")
    for row in rows:
        print(f"{row['kind']:<8} {row['backend']:<11} {row['receivers']:>4} {row.get('workers', '-'):>3} "
              f"{row.get('studies', row['images'] // 215):>7} {row['receive_img_per_s']:>7} "
              f"{row.get('studies_per_hour', '-'):>9} {row.get('last_instance_to_pacs_s_median', '-'):>11} "
              f"{row.get('last_instance_to_pacs_s_max', '-'):>6}  {row.get('analyses_per_worker', '')}")
    out = REPO / "bench" / "results" / "scaleout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"\n{out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
