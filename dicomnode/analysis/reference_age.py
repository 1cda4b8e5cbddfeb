"""Whether the adult reference ranges apply to a patient, and the cine flags that follow from it.

The node's normal ranges (cine_metrics.NORMAL_VALUES: 2015 SCMR review and Alfakih 2003, adult SSFP values) and the
HCM wall-thickness criterion (wall_thickness.HCM_SOURCE: adults) are adult references. Children's LV and RV volumes,
mass and wall thickness scale with body size and are judged by paediatric z-scores (e.g. Kawel-Boehm N et al.,
J Cardiovasc Magn Reson 2020;22:87, paediatric CMR reference values), so for a patient under ADULT_AGE_YEARS the
adult range flags are withheld and the outputs say so; the numbers themselves are kept. An unknown age (no usable
PatientAge or birth date, cmr.age) keeps the adult ranges, unless the body size is a child's (child_body_size:
height under CHILD_HEIGHT_M, BSA under CHILD_BSA_M2, or without a height a weight under CHILD_WEIGHT_KG): then the
adult range flags are withheld as for a known child, and the note says the age is unknown.

The same applies to the one coverage rule that is an adult length: a whole LV at least MIN_LV_EXTENT_MM long
(cine_metrics.stack_coverage); lv_extent_rule_withheld gives the reason it is not applied to a child.
"""
from __future__ import annotations

from dicomnode.analysis.cine_metrics import LOWER_BOUND_NOTE_START, BsaFormula, body_surface_area_m2, is_range_flag
from dicomnode.analysis.wall_thickness import WALL_THICKNESS_START
from dicomnode.cmr.age import PatientAge

ADULT_AGE_YEARS = 18.0
#: body size below which a patient of unknown age is taken for a child. CDC 2000 growth charts (Kuczmarski RJ et
#: al., Vital Health Stat 11 2002;(246)): median stature 138-140 cm and weight 31-33 kg at 10 years (boys and
#: girls), while under 1 % of adults (NHANES; the 1st percentile of adult women is about 147 cm) are shorter than
#: 1.40 m; BSA 1.1 m² is the Mosteller BSA of about 1.40 m and 31 kg. The adult normal ranges (2015 SCMR review,
#: Kawel-Boehm N et al., JCMR 2015;17:29) come from adults of BSA 1.4 m² and more
CHILD_HEIGHT_M = 1.40
CHILD_BSA_M2 = 1.1
CHILD_WEIGHT_KG = 30.0
#: start of the note (adult_ranges_note), for the outputs that list the cine's checks
ADULT_RANGES_NOT_APPLIED = "adult reference ranges not applied"
#: starts of the cine flags that every output lists with the range flags (console, SR, PDF reference row)
REFERENCE_CHECK_STARTS = (ADULT_RANGES_NOT_APPLIED, WALL_THICKNESS_START)


def child_body_size(height_m: float | None = None, weight_kg: float | None = None,
                    bsa_m2: float | None = None) -> str | None:
    """"height 1.15 m, BSA 0.80 m²" where the body size is a child's (height under CHILD_HEIGHT_M, BSA under
    CHILD_BSA_M2, or, without a height, weight under CHILD_WEIGHT_KG), else None (also where nothing is known).
    Values that are absent, not positive or not numbers count as unknown."""
    def known(value) -> float | None:
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if value > 0 and value == value else None

    height, weight, bsa = known(height_m), known(weight_kg), known(bsa_m2)
    child = (height is not None and height < CHILD_HEIGHT_M) or (bsa is not None and bsa < CHILD_BSA_M2) \
        or (height is None and weight is not None and weight < CHILD_WEIGHT_KG)
    if not child:
        return None
    parts = ([f"height {height:.2f} m"] if height is not None else []) \
        + ([f"weight {weight:g} kg"] if weight is not None else []) + ([f"BSA {bsa:.2f} m²"] if bsa is not None else [])
    return ", ".join(parts)


def adult_ranges_apply(age: PatientAge | None, child_size: str | None = None) -> bool:
    """False for a patient known to be under ADULT_AGE_YEARS, and for one of unknown age with a child's body size
    (`child_size`, child_body_size); True for an adult and where neither the age nor a child's size is known."""
    if age is None:
        return child_size is None
    return age.years >= ADULT_AGE_YEARS - 1e-9


def _patient_text(age: PatientAge | None, child_size: str | None) -> str:
    """"6 months (from PatientAge)", or for an unknown age the child's body size that decided."""
    if age is not None:
        return f"{age.text} (from {age.source})"
    return (f"of unknown age (no usable PatientAge or PatientBirthDate) with a child's body size ({child_size}; "
            f"height under {CHILD_HEIGHT_M:.2f} m or BSA under {CHILD_BSA_M2:g} m²)")


def adult_ranges_note(age: PatientAge | None, child_size: str | None = None) -> str | None:
    """"adult reference ranges not applied: patient 6 months ..." for a patient under ADULT_AGE_YEARS or of unknown
    age with a child's body size, else None."""
    if adult_ranges_apply(age, child_size):
        return None
    return (f"{ADULT_RANGES_NOT_APPLIED}: patient {_patient_text(age, child_size)}; the normal-range flags (LV and "
            "RV volumes, EF, mass index, wall thickness) are withheld: judge the values against paediatric references "
            "(z-scores for body size)")


def lv_extent_rule_withheld(age: PatientAge | None, child_size: str | None = None) -> str | None:
    """Why the coverage check's adult length rule (a whole LV at least MIN_LV_EXTENT_MM long,
    cine_metrics.stack_coverage `extent_rule_withheld`) is not applied to this patient: a child (known age under
    ADULT_AGE_YEARS, or unknown age with a child's body size), whose LV is shorter; None where it applies."""
    if adult_ranges_apply(age, child_size):
        return None
    return (f"patient {_patient_text(age, child_size)}, whose LV is shorter than an adult's; the other coverage "
            "checks (apex or base cut off, gaps) still apply")


def patient_child_size(patient, bsa_formula: BsaFormula = "mosteller") -> str | None:
    """child_body_size of a cmr patient record (height_m, weight_kg; BSA from both where plausible); None where
    there is none or its body size is not a child's."""
    height, weight = getattr(patient, "height_m", None), getattr(patient, "weight_kg", None)
    try:
        bsa = body_surface_area_m2(height, weight, bsa_formula) if height and weight else None
    except (TypeError, ValueError):
        bsa = None
    return child_body_size(height, weight, bsa)


def age_adjusted_flags(flags, age: PatientAge | None, child_size: str | None = None) -> list[str]:
    """The cine flags for this patient: as they are where the adult ranges apply; else the note first and every
    flag judging a value against an adult range (cine_metrics.is_range_flag, the wall-thickness flag, the note on
    lower limits not applied to lower bounds) left out. `child_size`: child_body_size, for an unknown age."""
    note = adult_ranges_note(age, child_size)
    if note is None:
        return list(flags)
    return [note] + [flag for flag in flags
                     if not (is_range_flag(flag) or str(flag).startswith((WALL_THICKNESS_START, LOWER_BOUND_NOTE_START)))]


def reference_ranges_summary(age: PatientAge | None, child_size: str | None = None) -> dict:
    """The summary.json `cine.reference_ranges` block: whether the adult ranges were applied, the patient's age as
    read (None: unknown), the child's body size that decided for an unknown age (None: not used) and the note where
    they were not applied."""
    return {"adult_ranges_applied": adult_ranges_apply(age, child_size),
            "patient_age": None if age is None else age.text,
            "patient_age_years": None if age is None else round(age.years, 3),
            "patient_age_source": None if age is None else age.source,
            "child_body_size": child_size if age is None else None, "note": adult_ranges_note(age, child_size)}
