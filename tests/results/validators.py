"""Run dciodvfy and pixelmed's validators on a DICOM file; return their error and warning lines."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import require_peer

PIXELMED_JAR = "/usr/share/java/pixelmed.jar"
JAVA_FLAGS = ["-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0",
              "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]  # C1 only: halves the start-up-bound run time

#: pixelmed errors tolerated as false positives: none (the SR's procedure reported is a member of CID 100)
PIXELMED_KNOWN_FALSE_POSITIVES: tuple[str, ...] = ()


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


def pixelmed(path: Path, validator: str) -> Findings:
    """pixelmed's DicomSRValidator or DicomInstanceValidator; 'Error' lines (minus the documented one) are errors."""
    require_peer("pixelmed")
    run = subprocess.run(
        ["java", *JAVA_FLAGS, "-cp", PIXELMED_JAR, f"com.pixelmed.validate.{validator}", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    output = run.stdout + run.stderr
    findings = Findings(f"pixelmed {validator}", output=output)
    for line in output.splitlines():
        if line.startswith("Error") or "Exception" in line:
            if any(known in line for known in PIXELMED_KNOWN_FALSE_POSITIVES):
                findings.warnings.append("(known pixelmed false positive) " + line)
            else:
                findings.errors.append(line)
        elif line.startswith("Warning") or "unrecognized" in line:
            findings.warnings.append(line)
    return findings


def assert_valid(path: Path, pixelmed_validator: str) -> list[str]:
    """Fail on any dciodvfy or pixelmed error; return the warnings (listed in the test log)."""
    results = [dciodvfy(path), pixelmed(path, pixelmed_validator)]
    problems = [str(r) for r in results if r.errors]
    assert not problems, "\n\n".join(problems)
    warnings = [f"{r.tool}: {w}" for r in results for w in r.warnings]
    print(f"{path.name}: {len(warnings)} warning(s)\n" + "\n".join(sorted(set(warnings))))
    return warnings
