"""8 concurrent associations (4 DCMTK storescu + 4 pynetdicom) of synthetic 256x256 MR instances while analyses
hold a CPU: nothing lost, no deadlock, C-ECHO stays answered within a bounded round trip."""
from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from copy import deepcopy

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from tests.conftest import require_peer
from tests.hardening.hardening_support import MR_IMAGE_STORAGE, StubNodeProcess, echo_round_trip, synthetic_mr
from tests.node.nodeproc import ENV
from tests.peers import free_port

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SENDERS = 8
#: 500 per association as the issue asks (8 x 500 took 21 s of sending, 85 s for the whole test on 2 shared
#: cores); DICOMNODE_LOAD_INSTANCES scales it down on slower machines
PER_SENDER = int(os.environ.get("DICOMNODE_LOAD_INSTANCES", "500"))
ECHO_BOUND_SECONDS = 5.0


def series(count: int, study_uid: str) -> list:
    template = synthetic_mr(study_uid=study_uid, size=256)
    series_uid = generate_uid()
    datasets = []
    for index in range(count):
        ds = deepcopy(template)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(index)]
        datasets.append(ds)
    return datasets


def pynetdicom_sender(port: int, datasets: list, outcome: dict, key: str) -> None:
    ae = AE(ae_title="SCANNER1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(MR_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    statuses = []
    try:
        assert assoc.is_established
        for ds in datasets:
            response = assoc.send_c_store(ds)
            statuses.append(int(response.Status) if response and "Status" in response else None)
    finally:
        if assoc.is_established:
            assoc.release()
        outcome[key] = statuses


def test_eight_concurrent_senders_lose_nothing_and_echo_stays_responsive(tmp_path):
    require_peer("storescu")
    port = free_port()
    node = StubNodeProcess(tmp_path / "node", port, pipelines=("cine",), quiet_seconds=1, analysis_seconds=5.0,
                           busy=True).start()
    try:
        # a study that completes first, so that busy analyses run while the load arrives
        warm_study = generate_uid()
        (tmp_path / "warm").mkdir()
        warm = []
        for ds in series(5, warm_study):
            path = tmp_path / "warm" / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            warm.append(path)
        assert subprocess.run([require_peer("storescu"), "-aet", "SCANNER1", "-aec", "DICOMNODE", "127.0.0.1", str(port),
                               *map(str, warm)], env=ENV, capture_output=True).returncode == 0

        studies = [generate_uid() for _ in range(SENDERS)]
        loads = [series(PER_SENDER, study) for study in studies]
        storescu_folders = []
        for index in range(SENDERS // 2):
            folder = tmp_path / f"storescu{index}"
            folder.mkdir()
            for ds in loads[index]:
                ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
            storescu_folders.append(folder)
        deadline = time.monotonic() + 60
        while not any(s["state"] in ("analysing", "done") for s in node.studies()):
            assert time.monotonic() < deadline, "the warm-up study never reached analysis"
            time.sleep(0.1)

        echo_times: list[float] = []
        stop_probe = threading.Event()

        def probe():
            while not stop_probe.is_set():
                echo_times.append(echo_round_trip(port))
                time.sleep(0.25)

        outcome: dict[str, list] = {}
        began = time.monotonic()
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        processes = [subprocess.Popen([require_peer("storescu"), "-aet", "SCANNER1", "-aec", "DICOMNODE", "+sd", "127.0.0.1",
                                       str(port), str(folder)], env=ENV, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
                     for folder in storescu_folders]
        threads = [threading.Thread(target=pynetdicom_sender, args=(port, loads[i], outcome, f"pynetdicom{i}"))
                   for i in range(SENDERS // 2, SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
            assert not thread.is_alive(), "a pynetdicom sender hangs (deadlock?)"
        for process in processes:
            output, _ = process.communicate(timeout=600)
            assert process.returncode == 0, output[-2000:]
        seconds = time.monotonic() - began
        stop_probe.set()
        prober.join(30)

        for key, statuses in outcome.items():
            assert statuses == [0] * PER_SENDER, f"{key}: {[hex(s) for s in statuses if s != 0][:5]}"
        total = SENDERS * PER_SENDER
        for study in studies:
            rows = node.db_rows("SELECT COUNT(*) AS n FROM instances WHERE study_instance_uid=?", (study,))
            assert rows[0]["n"] == PER_SENDER
        assert len(echo_times) >= 3
        assert max(echo_times) < ECHO_BOUND_SECONDS, f"C-ECHO took up to {max(echo_times):.2f} s"
        analyses = node.db_rows("SELECT COUNT(*) AS n FROM analyses")[0]["n"]
        print(f"\n{SENDERS} x {PER_SENDER} instances (256x256) in {seconds:.1f} s = {total / seconds:.0f} inst/s; "
              f"C-ECHO round trip median {statistics.median(echo_times) * 1000:.0f} ms, max {max(echo_times) * 1000:.0f} ms"
              f" over {len(echo_times)} probes; analyses started meanwhile: {analyses}")
        node.wait_states(states=("done",), count=SENDERS + 1, timeout=300)
    finally:
        assert node.stop() == 0
