"""Whether the adult reference ranges apply to a patient, and the cine flags that follow from it.

The node's normal ranges (cine_metrics.NORMAL_VALUES: 2015 SCMR review and Alfakih 2003, adult SSFP values) and the
HCM wall-thickness criterion (wall_thickness.HCM_SOURCE: adults) are adult references. Children's LV and RV volumes,
mass and wall thickness scale with body size and are judged by paediatric z-scores (e.g. Kawel-Boehm N et al.,
J Cardiovasc Magn Reson 2020;22:87, paediatric CMR reference values), so for a patient under ADULT_AGE_YEARS the
adult range flags are withheld and the outputs say so; the numbers themselves are kept. An unknown age (no usable
PatientAge or birth date, cmr.age) keeps the adult ranges, as before.
"""
from __future__ import annotations

from dicomnode.analysis.cine_metrics import LOWER_BOUND_NOTE_START, is_range_flag
from dicomnode.analysis.wall_thickness import WALL_THICKNESS_START
from dicomnode.cmr.age import PatientAge

ADULT_AGE_YEARS = 18.0
#: start of the note (adult_ranges_note), for the outputs that list the cine's checks
ADULT_RANGES_NOT_APPLIED = "adult reference ranges not applied"
#: starts of the cine flags that every output lists with the range flags (console, SR, PDF reference row)
REFERENCE_CHECK_STARTS = (ADULT_RANGES_NOT_APPLIED, WALL_THICKNESS_START)


def adult_ranges_apply(age: PatientAge | None) -> bool:
    """False for a patient known to be under ADULT_AGE_YEARS; True for an adult and where the age is unknown."""
    return age is None or age.years >= ADULT_AGE_YEARS - 1e-9


def adult_ranges_note(age: PatientAge | None) -> str | None:
    """"adult reference ranges not applied: patient 6 months ..." for a patient under ADULT_AGE_YEARS, else None."""
    if adult_ranges_apply(age):
        return None
    return (f"{ADULT_RANGES_NOT_APPLIED}: patient {age.text} (from {age.source}); the normal-range flags (LV and RV "
            "volumes, EF, mass index, wall thickness) are withheld: judge the values against paediatric references "
            "(z-scores for body size)")


def age_adjusted_flags(flags, age: PatientAge | None) -> list[str]:
    """The cine flags for this patient: as they are where the adult ranges apply; else the note first and every
    flag judging a value against an adult range (cine_metrics.is_range_flag, the wall-thickness flag, the note on
    lower limits not applied to lower bounds) left out."""
    note = adult_ranges_note(age)
    if note is None:
        return list(flags)
    return [note] + [flag for flag in flags
                     if not (is_range_flag(flag) or str(flag).startswith((WALL_THICKNESS_START, LOWER_BOUND_NOTE_START)))]


def reference_ranges_summary(age: PatientAge | None) -> dict:
    """The summary.json `cine.reference_ranges` block: whether the adult ranges were applied, the patient's age as
    read (None: unknown) and the note where they were not."""
    return {"adult_ranges_applied": adult_ranges_apply(age), "patient_age": None if age is None else age.text,
            "patient_age_years": None if age is None else round(age.years, 3),
            "patient_age_source": None if age is None else age.source, "note": adult_ranges_note(age)}
