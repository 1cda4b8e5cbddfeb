"""dicomnode: a PACS-integrated DICOM node for cardiac MRI."""

import functools
import hashlib
import os
import subprocess
from pathlib import Path

__version__ = "0.1.0"

#: how many hex digits of the source hash name a build (48 bits: two different builds collide once in 10^14)
BUILD_ID_DIGITS = 12


@functools.lru_cache(maxsize=1)
def build_id() -> str:
    """This code's identity: the first BUILD_ID_DIGITS hex digits of a SHA-256 over every ``.py`` file of the
    installed package (sorted by path relative to the package, each path and its bytes).

    __version__ names no release (it has said 0.1.0 in every one), so processes compare this instead before working
    on one state (roles.refuse_other_versions): it changes with any change of the code, and is the same for every
    process started from the same files, whether from a wheel, a source checkout or another clone of the same commit.
    Computed once per process (about 100 files, a few ms); reads no git metadata, which an install lacks."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py"), key=lambda p: p.relative_to(package).as_posix()):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:BUILD_ID_DIGITS]


def version_text() -> str:
    """What `dicomnode --version` prints: "dicomnode 0.1.0 build 1a2b3c4d5e6f", with the git commit where the package
    runs from a git checkout ("git 741811a", "+ local changes" where its files differ from it)."""
    text = f"dicomnode {__version__} build {build_id()}"
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / ".git").exists():
        return text
    try:
        described = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty= + local changes",
                                    "--abbrev=12"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return text
    commit = described.stdout.strip()
    return f"{text} (git {commit})" if described.returncode == 0 and commit else text


def _no_vendor_telemetry() -> None:
    """ONNX Runtime (1.2x+ on Linux) records usage events, with a persistent device ID, under
    ~/.cache/Microsoft/DeveloperTools and uploads them to Microsoft unless ORT_DISABLE_TELEMETRY is set: a node that
    handles patient data makes no such connection. Set here, before any module of the package imports onnxruntime
    (inference backends, view classifier, text encoder, config check, demo); an admin's own value is kept."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


_no_vendor_telemetry()


def _tolerate_real_world_values() -> None:
    """Archives hold values that break the letter of PS3.5 (e.g. UIDs with leading zeros): read them quietly."""
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


_tolerate_real_world_values()
