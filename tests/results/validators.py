"""Run dciodvfy and pixelmed's validators on a DICOM file; return their error and warning lines.

pixelmed's DicomSRValidator takes 20-70 s of one core per report (it parses its 660 kB context group table again for
each coded item it checks) and validates one file per JVM, so a test or module with several files starts them all
with `validate_later` (at most JOBS JVMs at once, in the background) and then collects each with `assert_valid`:
the same checks, on as many cores as the machine has, while the test goes on.
"""
from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from tests.conftest import require_peer

PIXELMED_JAR = "/usr/share/java/pixelmed.jar"
JAVA_FLAGS = ["-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0",
              "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",  # C1 only: halves the start-up-bound run time
              # UTF-8 output whatever the locale (under LANG=C Java prints a non-ASCII name as '?')
              "-Dsun.stdout.encoding=UTF-8", "-Dsun.stderr.encoding=UTF-8", "-Dstdout.encoding=UTF-8",
              "-Dstderr.encoding=UTF-8"]

#: pixelmed errors tolerated as false positives, each only where its guard (known_false_positive) shows the case
#: (the SR's procedure reported is a member of CID 100, not one of them):
#: - "Illegal character(s) '...' in value of PN VR": pixelmed 20220618's DicomInstanceValidator tests every PN value
#:   of an IOD it knows against printable ASCII only, whatever the Specific Character Set (0008,0005) says: its rule
#:   com/pixelmed/validate/CommonDicomIODValidationRules.xsl, template CheckAttributeVR, `when @vr = 'PN'`, deletes
#:   the ASCII characters with translate(., ' !"#$%&()*+,-./0-9:;<=>?@A-Z[]^_`a-z{|}~', '') and reports whatever is
#:   left. PS3.5 6.1.2.2 and 6.2 allow the repertoire of (0008,0005) in PN (ISO_IR 100 "Müller^Zoë", ISO_IR 192
#:   Greek); the SR with the same bytes passes only because DicomSRValidator checks templates, not PN characters,
#:   and DicomInstanceValidator does not know the Comprehensive 3D SR IOD ("IOD (SOP Class) unrecognized").
#:   test_results_seg.test_pixelmed_pn_error_is_a_false_positive shows it on one SEG: ASCII name clean, the same
#:   SEG with the Latin-1 name and ISO_IR 100 flagged. Guard: every flagged character is non-ASCII and the file
#:   declares a Specific Character Set.
#: - "Illegal character(s) '...' in value of LO VR" (and SH): the same rule's `when @vr = 'LO' or @vr = 'SH'` branch
#:   deletes the same printable ASCII characters and reports the rest, so a Latin-1 / UTF-8 / ISO 2022
#:   StudyDescription or InstitutionName (LO, copied from the source into every result object, bytes and Specific
#:   Character Set unchanged) is flagged in the SEG although PS3.5 6.1.2.2 extends SH / LO / ST / LT / UC / UT to the
#:   repertoire of (0008,0005). The SR passes for the reason above; the source MR image only because
#:   DicomInstanceValidator does not validate MR Image Storage either ("IOD (SOP Class) unrecognized").
#:   test_results_seg.test_pixelmed_lo_error_is_a_false_positive shows it on one SEG (break49a finding 4). Guard: as
#:   for PN.
#: - "GeneralSeriesModule/Laterality/: : Missing conditional attribute": PS3.3 C.7.3.1 requires Laterality (0020,0060)
#:   only "if the body part examined is a paired structure" (and no Image/Frame Laterality is present); pixelmed's
#:   DicomIODDescriptionsCompiled.xsl (GeneralSeriesModule) tests only `count(ImageLaterality) = 0 and
#:   count(//FrameLaterality) = 0`, so it asks every SEG of the (unpaired) heart for it. The SEG used to carry a Frame
#:   Anatomy functional group (Frame Laterality U) to quiet this, which the Segmentation IOD (A.51) does not have.
#:   Guard: no Body Part Examined, or one of the unpaired ones below.
PIXELMED_KNOWN_FALSE_POSITIVES: tuple[str, ...] = (
    "' in value of PN VR - value is :",
    "GeneralSeriesModule/Laterality/: : Missing conditional attribute",
    "' in value of LO VR - value is :",
    "' in value of SH VR - value is :",
)
_PN_ILLEGAL = re.compile(r"Illegal character\(s\) '(?P<chars>.*)' in value of PN VR - value is :")
_TEXT_ILLEGAL = re.compile(r"Illegal character\(s\) '(?P<chars>.*)' in value of (?:LO|SH) VR - value is :")
_UNPAIRED_BODY_PARTS = {"HEART", "CHEST", "THORAX"}


@dataclass
class Findings:
    tool: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""

    def __str__(self) -> str:
        return f"{self.tool}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)\n" + "\n".join(self.errors)


def dciodvfy(path: Path) -> Findings:
    """dciodvfy's findings; an 'Error' line is an error."""
    command = require_peer("dciodvfy")
    run = subprocess.run([command, str(path)], capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    findings = Findings("dciodvfy", output=output)
    for line in output.splitlines():
        if line.startswith("Error"):
            findings.errors.append(line)
        elif line.startswith("Warning"):
            findings.warnings.append(line)
    return findings


def pn_error_is_a_known_false_positive(line: str, path: Path) -> bool:
    """True for pixelmed's PN "Illegal character(s)" error (PIXELMED_KNOWN_FALSE_POSITIVES) when every character it
    flags is outside ASCII and the file declares the Specific Character Set that encodes them; a control or other
    ASCII character pixelmed flags stays an error."""
    return _non_ascii_in_declared_charset(_PN_ILLEGAL.search(line), path)


def text_error_is_a_known_false_positive(line: str, path: Path) -> bool:
    """True for pixelmed's LO / SH "Illegal character(s)" error (PIXELMED_KNOWN_FALSE_POSITIVES) under the PN
    error's guard: every character flagged outside ASCII, and the file declares a Specific Character Set."""
    return _non_ascii_in_declared_charset(_TEXT_ILLEGAL.search(line), path)


def _non_ascii_in_declared_charset(found: re.Match | None, path: Path) -> bool:
    if not found or not found.group("chars") or any(ord(c) < 128 for c in found.group("chars")):
        return False
    charset = pydicom.dcmread(path, stop_before_pixels=True).get("SpecificCharacterSet")
    return bool(charset) and any(bool(term) for term in ([charset] if isinstance(charset, str) else list(charset)))


def known_false_positive(line: str, path: Path) -> bool:
    """True for a pixelmed error line of PIXELMED_KNOWN_FALSE_POSITIVES whose guard holds for the file."""
    if PIXELMED_KNOWN_FALSE_POSITIVES[0] in line:
        return pn_error_is_a_known_false_positive(line, path)
    if PIXELMED_KNOWN_FALSE_POSITIVES[1] in line:
        body_part = str(pydicom.dcmread(path, stop_before_pixels=True).get("BodyPartExamined", "") or "")
        return body_part.strip().upper() in _UNPAIRED_BODY_PARTS | {""}
    if any(pattern in line for pattern in PIXELMED_KNOWN_FALSE_POSITIVES[2:]):
        return text_error_is_a_known_false_positive(line, path)
    return False


def pixelmed(path: Path, validator: str) -> Findings:
    """pixelmed's DicomSRValidator or DicomInstanceValidator; 'Error' lines (minus the documented one) are errors."""
    require_peer("pixelmed")
    run = subprocess.run(
        ["java", *JAVA_FLAGS, "-cp", PIXELMED_JAR, f"com.pixelmed.validate.{validator}", str(path)],
        # an SR takes 20-70 s of one core alone, several times that on a busy machine beside a second validation
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900,
    )
    output = run.stdout + run.stderr
    findings = Findings(f"pixelmed {validator}", output=output)
    if run.returncode != 0:  # it exits 0 after any finding: anything else (killed, out of memory) checked nothing
        findings.errors.append(f"pixelmed {validator} exited with {run.returncode}")
    for line in output.splitlines():
        if line.startswith("Error") or "Exception" in line:
            if known_false_positive(line, path):
                findings.warnings.append("(known pixelmed false positive) " + line)
            else:
                findings.errors.append(line)
        elif line.startswith("Warning") or "unrecognized" in line:
            findings.warnings.append(line)
    return findings


#: validations running at once in this process (one JVM or dciodvfy each): the machine's cores shared among the
#: pytest-xdist workers, at most 2
JOBS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)))
_executor: ThreadPoolExecutor | None = None
_started: dict[tuple[str, str], Future] = {}


def _validate(path: Path, pixelmed_validator: str) -> list[Findings]:
    return [dciodvfy(path), pixelmed(path, pixelmed_validator)]


def validate_later(path: Path, pixelmed_validator: str) -> Path:
    """Start dciodvfy and pixelmed's `pixelmed_validator` on `path` in the background (JOBS at a time); the
    `assert_valid(path, pixelmed_validator)` that follows waits for them and judges their findings. Skips (fails
    under DICOMNODE_REQUIRE_PEERS=1) at once where a validator is missing. Returns `path`."""
    global _executor
    require_peer("dciodvfy")
    require_peer("pixelmed")
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=JOBS, thread_name_prefix="validators")
    key = (str(path), pixelmed_validator)
    if key not in _started:
        _started[key] = _executor.submit(_validate, Path(path), pixelmed_validator)
    return path


def forget_started(paths) -> None:
    """Drop the validations of `paths` (their findings; those no test collected and not yet running never start)."""
    wanted = {str(path) for path in paths}
    for key in [key for key in _started if key[0] in wanted]:
        _started.pop(key).cancel()


def assert_valid(path: Path, pixelmed_validator: str) -> list[str]:
    """Fail on any dciodvfy or pixelmed error; return the warnings (listed in the test log). Collects what
    `validate_later` started for the same file and validator (kept until forget_started: a second test of the same
    file reads the same findings), or runs both validators now."""
    started = _started.get((str(path), pixelmed_validator))
    results = started.result() if started is not None else _validate(path, pixelmed_validator)
    problems = [str(r) for r in results if r.errors]
    assert not problems, "\n\n".join(problems)
    warnings = [f"{r.tool}: {w}" for r in results for w in r.warnings]
    print(f"{path.name}: {len(warnings)} warning(s)\n" + "\n".join(sorted(set(warnings))))
    return warnings


def assert_all_valid(files) -> list[list[str]]:
    """assert_valid on each (path, pixelmed validator) of `files`, all started at once (validate_later); the
    warnings of each, in order."""
    files = list(files)
    for path, validator in files:
        validate_later(path, validator)
    try:
        return [assert_valid(path, validator) for path, validator in files]
    finally:
        forget_started(path for path, _ in files)
