"""Receive benchmark: storescu -> `dicomnode serve` vs storescu -> DCMTK storescp, same instances, same run.

Also: 4 concurrent associations, and end-to-end time from the last instance acknowledged to the last result
stored in the destination, minus the configured quiet time (with the real pipelines, when --e2e is given).

Runs inside a private network namespace (storescp binds 0.0.0.0): the script re-executes itself under
`unshare --net` when started as root. Prints a table and writes bench/results/receive.json.

    .venv/bin/python bench/receive.py [--instances 500] [--repeats 3] [--e2e]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUNNYBROOK = REPO.parent / "shared" / "datasets" / "sunnybrook-scd" / "dicoms"
ENV = dict(os.environ, TCP_NODELAY="1")


def ensure_private_netns() -> None:
    if os.environ.get("DICOMNODE_BENCH_NETNS") == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if os.geteuid() != 0 or not shutil.which("unshare"):
        sys.exit("run as root (the benchmark isolates storescp, which binds 0.0.0.0, in a private network namespace)")
    env = dict(os.environ, DICOMNODE_BENCH_NETNS="1")
    os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, *sys.argv], env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    return (files * (count // len(files) + 1))[:count] if count > len(files) else files[:count]


def make_unique_copies(files: list[Path], folder: Path, tag: int) -> list[Path]:
    """Copies with new SOP Instance UIDs (duplicates would be stored once and skew the numbers)."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    study = generate_uid()
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID = study
        target = folder / f"{tag}_{index:05d}.dcm"
        ds.save_as(target)
        out.append(target)
    return out


def storescu(port: int, aet: str, files: list[Path], associations: int = 1) -> float:
    chunks = [files[i::associations] for i in range(associations)]
    began = time.perf_counter()
    processes = [
        subprocess.Popen(["storescu", "-aet", "BENCHSCU", "-aec", aet, "127.0.0.1", str(port), *map(str, chunk)],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for chunk in chunks
    ]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - began


def run_storescp(folder: Path):
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(folder), "+B", str(port)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return process, port


def run_node(folder: Path, quiet: float, destination_port: int | None = None, analyse: bool = False):
    port = free_port()
    destinations = ""
    route_destinations = "[]"
    if destination_port:
        destinations = f'[[destinations]]\nname = "pacs"\nae_title = "STORESCP"\nhost = "127.0.0.1"\nport = {destination_port}\n'
        route_destinations = '["pacs"]'
    modality = "MR" if analyse else "NEVER"
    config = folder / "bench.toml"
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f'[node]\nae_title = "DICOMNODE"\nport = {port}\nstorage_dir = "{folder / "store"}"\n'
        f'allowed_calling_aes = ["*"]\nmin_free_space_mb = 10\n[studies]\nquiet_seconds = {quiet}\n'
        f'{destinations}[[routes]]\nname = "r"\ndestinations = {route_destinations}\n[routes.match]\nmodality = "{modality}"\n'
        f'[logging]\nlevel = "WARNING"\n'
    )
    process = subprocess.Popen([str(REPO / ".venv" / "bin" / "dicomnode"), "serve", "--config", str(config)],
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_port(port, timeout=120)
    return process, port


def stop(process) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--e2e", action="store_true", help="also measure end to end with the real pipelines")
    args = parser.parse_args()
    ensure_private_netns()
    work = Path(tempfile.mkdtemp(prefix="dicomnode-bench-"))
    source = instances(args.instances)
    rows = []
    try:
        for associations in (1, 4):
            node_times, scp_times = [], []
            for repeat in range(args.repeats):
                files = make_unique_copies(source, work / f"in-{associations}-{repeat}", repeat)
                scp, scp_port = run_storescp(work / f"storescp-{associations}-{repeat}")
                scp_times.append(storescu(scp_port, "STORESCP", files, associations))
                stop(scp)
                node, node_port = run_node(work / f"node-{associations}-{repeat}", quiet=3600)
                node_times.append(storescu(node_port, "DICOMNODE", files, associations))
                stop(node)
            node_rate = args.instances / statistics.median(node_times)
            scp_rate = args.instances / statistics.median(scp_times)
            rows.append({"associations": associations, "instances": args.instances, "repeats": args.repeats,
                         "dicomnode_images_per_s": round(node_rate, 1), "storescp_images_per_s": round(scp_rate, 1),
                         "ratio": round(node_rate / scp_rate, 3),
                         "dicomnode_seconds": node_times, "storescp_seconds": scp_times})
        e2e = None
        if args.e2e:
            quiet = 2.0
            scp, scp_port = run_storescp(work / "e2e-pacs")
            node, node_port = run_node(work / "e2e-node", quiet=quiet, destination_port=scp_port, analyse=True)
            files = make_unique_copies(sorted(SUNNYBROOK.glob("SCD0000301/*.dcm")), work / "e2e-in", 99)
            storescu(node_port, "DICOMNODE", files)
            acknowledged = time.perf_counter()
            pacs_dir = work / "e2e-pacs"
            deadline = time.time() + 600
            last_count, last_change = 0, time.perf_counter()
            while time.time() < deadline:
                count = len(list(pacs_dir.glob("*")))
                if count != last_count:
                    last_count, last_change = count, time.perf_counter()
                elif count and time.perf_counter() - last_change > 5:
                    break
                time.sleep(0.1)
            stop(node)
            stop(scp)
            e2e = {"results_received": last_count, "seconds_after_last_ack": round(last_change - acknowledged, 2),
                   "quiet_seconds": quiet, "minus_quiet": round(last_change - acknowledged - quiet, 2)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
    print(f"\nReceive benchmark ({args.instances} real Sunnybrook MR instances 256x256 int16, median of {args.repeats},"
          f" TCP_NODELAY on both; {machine['cores']} cores)")
    print(f"{'associations':>12} {'dicomnode img/s':>16} {'storescp img/s':>15} {'ratio':>7}")
    for row in rows:
        print(f"{row['associations']:>12} {row['dicomnode_images_per_s']:>16} {row['storescp_images_per_s']:>15} {row['ratio']:>7}")
    if e2e:
        print(f"end to end: last result stored {e2e['seconds_after_last_ack']} s after the last instance was acknowledged"
              f" ({e2e['minus_quiet']} s beyond the {e2e['quiet_seconds']} s quiet time; {e2e['results_received']} objects)")
    out = REPO / "bench" / "results" / "receive.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "receive": rows, "end_to_end": e2e}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
