"""Real DICOM peers for tests: a private network namespace, free ports, and an Orthanc server on loopback.

Orthanc 1.10 (and DCMTK's storescp) bind 0.0.0.0 and offer no option to bind loopback only. Tests that run
them first move the test process into a private network namespace with `enter_private_netns()` (root only;
Linux `unshare(CLONE_NEWNET)` through libc, since `os.unshare` appears only in Python 3.12). Inside it only
`lo` exists, so nothing the test starts can be reached from outside the machine. The namespace is entered
once per process and stays for the rest of the pytest session; child processes (Orthanc, storescu, storescp)
and threads started afterwards from the main thread inherit it. Threads and sockets that existed before stay
in the old namespace, so call it before starting any server (`require_private_netns()` in a fixture does).

Usage:
    enter_private_netns()                     # or require_private_netns() inside a pytest fixture/test
    with OrthancServer(tmp_path, aet="ORTHANC", modalities={"DICOMNODE": ("127.0.0.1", node_port)}) as pacs:
        storescu(..., port=pacs.dicom_port)
        assert pacs.study_instances(study_uid)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CLONE_NEWNET = 0x40000000
ORTHANC_BINARY = "/usr/sbin/Orthanc"

_in_private_netns = False


class PeerError(RuntimeError):
    """A peer could not be started or answered unexpectedly; the message says what and why."""


#: DCMTK programs whose names pynetdicom's console scripts (storescu, storescp, echoscu, ...) also take in the venv
DCMTK_PROGRAMS = ("storescu", "storescp", "echoscu", "findscu", "getscu", "movescu")


def _is_python_script(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            first = handle.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def find_program(command: str) -> str | None:
    """The first `command` on PATH; for DCMTK's programs the first that is not a Python script, so an activated
    venv (whose bin/ holds pynetdicom's same-named apps, with other options) still tests against DCMTK."""
    if command not in DCMTK_PROGRAMS:
        return shutil.which(command)
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = shutil.which(command, path=folder or ".")
        if candidate and not _is_python_script(candidate):
            return candidate
    return None


def dcmtk(program: str) -> str:
    """Path of DCMTK's `program` (for scripts outside pytest); RuntimeError naming the package when missing."""
    found = find_program(program)
    if found is None:
        raise RuntimeError(f"DCMTK's {program} is not installed (Debian: dcmtk)")
    return found


def _bring_loopback_up() -> None:
    """`ip link set lo up`, or the same through an ioctl when iproute2 is missing."""
    ip = shutil.which("ip")
    if ip:
        subprocess.run([ip, "link", "set", "lo", "up"], check=True, capture_output=True)
        return
    import fcntl
    import struct

    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def private_netns_possible() -> bool:
    """True when this process is (or can become) isolated: already inside one, or running as root on Linux."""
    return _in_private_netns or (hasattr(os, "geteuid") and os.geteuid() == 0 and Path("/proc/self/ns/net").exists())


def enter_private_netns() -> None:
    """Move this process (its calling thread and everything it starts later) into a new network namespace.

    Idempotent. Raises PeerError when not root or when the kernel refuses (e.g. a seccomp profile).
    """
    global _in_private_netns
    if _in_private_netns:
        return
    if os.geteuid() != 0:
        raise PeerError("a private network namespace needs root (unshare(CLONE_NEWNET)); run the peer tests as root")
    if hasattr(os, "unshare"):  # Python >= 3.12
        os.unshare(CLONE_NEWNET)
    else:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise PeerError(f"unshare(CLONE_NEWNET) failed: {os.strerror(errno)} (errno {errno})")
    _bring_loopback_up()
    _in_private_netns = True


def require_private_netns() -> None:
    """In a test: enter the private namespace, or skip (fail under DICOMNODE_REQUIRE_PEERS=1) when impossible."""
    import pytest

    try:
        enter_private_netns()
    except (PeerError, OSError, subprocess.CalledProcessError) as exc:
        message = f"cannot isolate the network for peers that bind 0.0.0.0: {exc}"
        if os.environ.get("DICOMNODE_REQUIRE_PEERS") == "1":
            pytest.fail(message)
        pytest.skip(message)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class OrthancServer:
    """A real Orthanc on loopback with a generated config, as a child process; context manager, restartable.

    `modalities` maps an AE title to (host, port) of DICOM peers Orthanc may talk to (C-STORE/C-ECHO to them);
    Orthanc accepts stores from any AE anyway. Storage and index live under `workdir`, so a restart keeps
    what was stored (restart with `stop()` + `start()`; leaving the `with` block kills it at once unless
    kill_on_exit=False). Call `enter_private_netns()` first: Orthanc binds 0.0.0.0.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, int]] | None = None,
        dicom_port: int | None = None,
        http_port: int | None = None,
        binary: str = ORTHANC_BINARY,
        extra_config: dict | None = None,
        start_timeout: float = 30.0,
        kill_on_exit: bool = True,
    ):
        if not aet or len(aet) > 16:
            raise ValueError(f"aet {aet!r}: an AE title has 1-16 characters")
        if not Path(binary).is_file():
            raise PeerError(f"Orthanc binary {binary} not found (Debian package 'orthanc')")
        self.workdir = Path(workdir) / f"orthanc-{aet.lower()}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        if self.dicom_port == self.http_port:
            raise ValueError("dicom_port and http_port must differ")
        self.binary = binary
        self.start_timeout = start_timeout
        self.kill_on_exit = kill_on_exit
        self.config_path = self.workdir / "config.json"
        self.log_path = self.workdir / "orthanc.log"
        self.config = self._config(extra_config or {})
        self.config_path.write_text(json.dumps(self.config, indent=2), encoding="utf-8")
        self._process: subprocess.Popen | None = None
        self._log = None

    def _config(self, extra: dict) -> dict:
        config = {
            "Name": f"dicomnode-test-{self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {
                name.lower(): [name, host, int(port)] for name, (host, port) in self.modalities.items()
            },
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "Plugins": [],
            "SaveJobs": False,
            "StableAge": 1,
            "ConcurrentJobs": 1,
        }
        config.update(extra)
        return config

    # life cycle -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> "OrthancServer":
        if self.running:
            return self
        env = dict(os.environ, TCP_NODELAY="1")
        self._log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            [self.binary, str(self.config_path)], stdout=self._log, stderr=subprocess.STDOUT, env=env,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._close_log()
                raise PeerError(f"Orthanc exited with {self._process.returncode} on start:\n{self.log_tail()}")
            try:
                self.get_json("/system", timeout=1.0)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        self.stop()
        raise PeerError(f"Orthanc did not answer /system within {self.start_timeout} s:\n{self.log_tail()}")

    def stop(self, graceful: bool = True, timeout: float = 10.0) -> None:
        """Stop Orthanc. Graceful (SIGTERM) takes ~3.5 s (Orthanc's thread polling) and keeps the index
        consistent for a restart; graceful=False kills at once (fine when the data is thrown away)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            if graceful:
                self._process.terminate()
            else:
                self._process.kill()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout)
        self._process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "OrthancServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(graceful=not self.kill_on_exit)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # REST -------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                 timeout: float = 30.0) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def get_json(self, path: str, timeout: float = 30.0):
        return json.loads(self._request("GET", path, timeout=timeout))

    def post_json(self, path: str, payload, timeout: float = 30.0):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return json.loads(self._request("POST", path, body, "application/json", timeout=timeout))

    def upload(self, dicom_bytes: bytes) -> dict:
        """Store one DICOM file through REST (POST /instances); returns Orthanc's answer (ID, Status)."""
        return json.loads(self._request("POST", "/instances", dicom_bytes, "application/dicom"))

    def studies(self) -> list[str]:
        """StudyInstanceUIDs of every stored study."""
        return [study["MainDicomTags"]["StudyInstanceUID"] for study in self.get_json("/studies?expand")]

    def instances(self) -> list[dict]:
        """Every stored instance: {"ID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", ...}."""
        found = []
        for study in self.get_json("/studies?expand"):
            found.extend(self.study_instances(study["MainDicomTags"]["StudyInstanceUID"]))
        return found

    def study_instances(self, study_instance_uid: str) -> list[dict]:
        """Instances stored under one StudyInstanceUID (empty when the study is unknown)."""
        matches = self.post_json("/tools/lookup", study_instance_uid.encode())
        study_ids = [m["ID"] for m in matches if m.get("Type") == "Study"]
        found = []
        for study_id in study_ids:
            for series in self.get_json(f"/studies/{study_id}/series?expand"):
                series_tags = series["MainDicomTags"]
                for instance in self.get_json(f"/series/{series['ID']}/instances?expand"):
                    tags = instance["MainDicomTags"]
                    found.append({
                        "ID": instance["ID"],
                        "SOPInstanceUID": tags.get("SOPInstanceUID"),
                        "SeriesInstanceUID": series_tags.get("SeriesInstanceUID"),
                        "StudyInstanceUID": study_instance_uid,
                        "Modality": series_tags.get("Modality"),
                        "SeriesNumber": series_tags.get("SeriesNumber"),
                        "SeriesDescription": series_tags.get("SeriesDescription"),
                    })
        return found

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file of an instance, as Orthanc serves it."""
        return self._request("GET", f"/instances/{orthanc_id}/file")

    def wait_for_instances(self, count: int, study_instance_uid: str | None = None,
                           timeout: float = 30.0) -> list[dict]:
        """Poll until at least `count` instances are stored (in one study when given); PeerError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.study_instances(study_instance_uid) if study_instance_uid else self.instances()
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise PeerError(f"Orthanc holds {len(found)} instance(s), expected {count} within {timeout} s")
            time.sleep(0.1)


class StoreSCP:
    """DCMTK's storescp with its defaults as the PACS: it accepts every storage SOP class, but only in the
    uncompressed little endian transfer syntaxes (as many PACS and VNA configurations do), and stores each instance
    into `folder`. Enter the private network namespace first (storescp binds 0.0.0.0). Use as a context manager."""

    def __init__(self, folder: Path, aet: str = "PACS"):
        self.folder, self.aet = folder, aet
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> "StoreSCP":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([dcmtk("storescp"), "-aet", self.aet, "-od", str(self.folder), str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answered = subprocess.run([dcmtk("echoscu"), "-aec", self.aet, "127.0.0.1", str(self.port)],
                                      capture_output=True).returncode == 0
            if answered:
                return self
            time.sleep(0.2)
        self.stop()
        raise PeerError(f"storescp on port {self.port} did not answer C-ECHO within 10 s")

    def stored(self) -> list[Path]:
        """The files storescp wrote, in name order."""
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def __enter__(self) -> "StoreSCP":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
