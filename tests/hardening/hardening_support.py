"""Helpers for the hardening tests: throw-away PKI, synthetic MR instances, C-ECHO/C-STORE probes, metrics scrapes."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.node.nodeproc import ENV, REPO, NodeProcess, wait_port

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr}")


def make_pki(folder: Path, name: str = "pki") -> dict[str, Path]:
    """A CA and a server (CN/SAN 127.0.0.1, localhost) and client certificate it signed, all RSA 2048, PEM."""
    folder = Path(folder) / name
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", f"/CN=dicomnode test CA {name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    for role, extensions in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{role}.key", "-out", f"{role}.csr",
                "-subj", f"/CN={role} {name}", cwd=folder)
        (folder / f"{role}.ext").write_text(extensions)
        openssl("x509", "-req", "-in", f"{role}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{role}.crt", "-days", "2", "-extfile", f"{role}.ext", cwd=folder)
    return {item: folder / item for item in
            ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")}


def synthetic_mr(study_uid: str | None = None, series_uid: str | None = None, size: int = 64,
                 patient_name: str = "HARDENING^TEST", patient_id: str = "HT000001", instance: int = 1,
                 position: float = 0.0, fill: int | None = None) -> Dataset:
    """A valid single-frame MR Image Storage instance with geometry and pixels."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "MR"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19610423"
    ds.StudyDate = "20240101"
    ds.SeriesNumber = 7
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0.0, 0.0, float(position)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.5, 1.5]
    ds.SliceThickness = 8.0
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if fill is None:
        pixels = (np.arange(size * size, dtype=np.uint16).reshape(size, size) * 7 + instance) % 4096
    else:
        pixels = np.full((size, size), fill, dtype=np.uint16)
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def echo_status(port: int, calling: str = "SCANNER1", ssl_context=None, timeout: float = 10) -> int | None:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE",
                         tls_args=(ssl_context, "127.0.0.1") if ssl_context else None)
    if not assoc.is_established:
        return None
    try:
        response = assoc.send_c_echo()
        return int(response.Status) if response and "Status" in response else None
    finally:
        assoc.release()


def echo_round_trip(port: int, calling: str = "SCANNER1") -> float:
    """Seconds for associate + C-ECHO + release; raises AssertionError when the echo fails."""
    began = time.perf_counter()
    status = echo_status(port, calling)
    assert status == 0x0000, f"C-ECHO status {status}"
    return time.perf_counter() - began


def store_one(port: int, dataset_or_path, calling: str = "SCANNER1", raw: bool = False,
              context: tuple[str, str] | None = None) -> Dataset | None:
    """C-STORE over a fresh association; raw=True sends a file's bytes undecoded (chunked from disk)."""
    from pynetdicom import _config

    if context is None:
        if raw:
            meta = pydicom.dcmread(dataset_or_path, stop_before_pixels=True, force=True).file_meta
            context = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        else:
            context = (str(dataset_or_path.SOPClassUID), str(dataset_or_path.file_meta.TransferSyntaxUID))
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(*context)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    if not assoc.is_established:
        return None
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = raw
    try:
        return assoc.send_c_store(dataset_or_path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        if assoc.is_established:
            assoc.release()


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric_value(exposition: str, name: str, labels: str = "") -> float:
    """The value of `name{labels}` in a Prometheus text exposition (labels as written, e.g. 'state="done"')."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in exposition.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    raise KeyError(f"{wanted} not in the exposition")


class StubNodeProcess(NodeProcess):
    """`dicomnode serve` with the stand-in analyser of tests/hardening/stub_serve.py (real node otherwise)."""

    def __init__(self, *args, analysis_seconds: float = 1.0, busy: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.analysis_seconds = analysis_seconds
        self.busy = busy

    def start(self, timeout: float = 180.0) -> "StubNodeProcess":
        log = open(self.log_path, "ab")
        env = dict(ENV, PYTHONPATH=str(REPO), STUB_ANALYSIS_SECONDS=str(self.analysis_seconds),
                   STUB_ANALYSIS_BUSY="1" if self.busy else "0")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.hardening.stub_serve", "serve", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
        )
        log.close()
        wait_port(self.port, timeout, self.process)
        return self
