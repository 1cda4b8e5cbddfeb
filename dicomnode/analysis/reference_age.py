"""Whether the adult reference ranges apply to a patient, and the cine flags that follow from it.

The node's normal ranges (cine_metrics.NORMAL_VALUES: 2015 SCMR review and Alfakih 2003, adult SSFP values) and the
HCM wall-thickness criterion (wall_thickness.HCM_SOURCE: adults) are adult references. Children's LV and RV volumes,
mass and wall thickness scale with body size and are judged by paediatric z-scores (e.g. Kawel-Boehm N et al.,
J Cardiovasc Magn Reson 2020;22:87, paediatric CMR reference values), so for a patient under ADULT_AGE_YEARS the
adult range flags are withheld and the outputs say so; the numbers themselves are kept. An unknown age (no usable
PatientAge or birth date, cmr.age) keeps the adult ranges, unless the body size is a child's (child_body_size:
height under CHILD_HEIGHT_M, BSA under CHILD_BSA_M2, or without a height a weight under CHILD_WEIGHT_KG): then the
adult range flags are withheld as for a known child, and the note says the age is unknown.

What the age data say beyond the age (cmr.age.AgeReading.note: unusable data, PatientAge disagreeing with the birth
date) and an infant's age with an adult's body size are said in one note (age_note), first among the flags.

The same applies to the one coverage rule that is an adult length: a whole LV at least MIN_LV_EXTENT_MM long
(cine_metrics.stack_coverage); lv_extent_rule_withheld gives the reason it is not applied to a child.
"""
from __future__ import annotations

from dicomnode.analysis.cine_metrics import (HEIGHT_RANGE_M, LOWER_BOUND_NOTE_START, NOT_JUDGED_START, WEIGHT_RANGE_KG,
                                             BsaFormula, body_surface_area_m2, is_range_flag, recognised_unit)
from dicomnode.analysis.wall_thickness import WALL_THICKNESS_START
from dicomnode.cmr.age import AGE_NOTE_START, AGE_UNKNOWN_START, PatientAge

ADULT_AGE_YEARS = 18.0
#: body size below which a patient of unknown age is taken for a child. CDC 2000 growth charts (Kuczmarski RJ et
#: al., Vital Health Stat 11 2002;(246)): median stature 138-140 cm and weight 31-33 kg at 10 years (boys and
#: girls), while under 1 % of adults (NHANES; the 1st percentile of adult women is about 147 cm) are shorter than
#: 1.40 m; BSA 1.1 m² is the Mosteller BSA of about 1.40 m and 31 kg. The adult normal ranges (2015 SCMR review,
#: Kawel-Boehm N et al., JCMR 2015;17:29) come from adults of BSA 1.4 m² and more
CHILD_HEIGHT_M = 1.40
CHILD_BSA_M2 = 1.1
CHILD_WEIGHT_KG = 30.0
#: under this age a body of an adult's size (height from CHILD_HEIGHT_M or weight from CHILD_WEIGHT_KG) is beyond
#: any growth chart (CDC 2000: the 97th percentile at 5 years is about 1.20 m and 24 kg): the age or the size is wrong
INFANT_CHECK_AGE_YEARS = 5.0
#: start of the note (adult_ranges_note), for the outputs that list the cine's checks
ADULT_RANGES_NOT_APPLIED = "adult reference ranges not applied"
#: starts of the cine flags that every output lists with the range flags (console, SR, PDF reference row)
REFERENCE_CHECK_STARTS = (ADULT_RANGES_NOT_APPLIED, WALL_THICKNESS_START, AGE_UNKNOWN_START, AGE_NOTE_START,
                          NOT_JUDGED_START)


def child_body_size(height_m: float | None = None, weight_kg: float | None = None,
                    bsa_m2: float | None = None) -> str | None:
    """"height 1.15 m, weight 20 kg, BSA 0.80 m²: height under 1.40 m, BSA under 1.1 m²" where the body size is a
    child's, the values known and then the criteria that decided (height under CHILD_HEIGHT_M, BSA under
    CHILD_BSA_M2, or, without a height, weight under CHILD_WEIGHT_KG), else None (also where nothing is known).
    Values that are absent, not positive or not numbers count as unknown."""
    def known(value) -> float | None:
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if value > 0 and value == value else None

    height, weight, bsa = known(height_m), known(weight_kg), known(bsa_m2)
    decided = ([f"height under {CHILD_HEIGHT_M:.2f} m"] if height is not None and height < CHILD_HEIGHT_M else []) \
        + ([f"BSA under {CHILD_BSA_M2:g} m²"] if bsa is not None and bsa < CHILD_BSA_M2 else []) \
        + ([f"weight under {CHILD_WEIGHT_KG:g} kg without a height"]
           if height is None and weight is not None and weight < CHILD_WEIGHT_KG else [])
    if not decided:
        return None
    parts = ([f"height {height:.2f} m"] if height is not None else []) \
        + ([f"weight {weight:g} kg"] if weight is not None else []) + ([f"BSA {bsa:.2f} m²"] if bsa is not None else [])
    return f"{', '.join(parts)}: {', '.join(decided)}"


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
    return f"of unknown age (no usable PatientAge or PatientBirthDate) with a child's body size ({child_size})"


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


def _body_size(patient) -> tuple[float | None, float | None, list[str]]:
    """(height m, weight kg, notes) of a cmr patient record for the body-size tests: a value entered in another unit
    that its magnitude makes clear (cine_metrics.recognised_unit: a height of 130 in centimetres, a weight of 25000
    in grams) read in that unit, with a note; None where absent or not a number."""
    values, notes = [], []
    for keyword, attribute, unit in (("PatientSize", "height_m", "m"), ("PatientWeight", "weight_kg", "kg")):
        value = getattr(patient, attribute, None)
        other = recognised_unit(keyword, value)
        if other is not None:
            notes.append(f"{keyword} {value:g} read as {other[0]:g} {unit}: it looks like {other[1]}")
            value = other[0]
        values.append(value)
    return values[0], values[1], notes


def patient_child_size(patient, bsa_formula: BsaFormula = "mosteller") -> str | None:
    """child_body_size of a cmr patient record (height_m, weight_kg; BSA from both where plausible); None where
    there is none or its body size is not a child's. A height or weight in another unit that the BSA refuses (a
    height of 130: centimetres, a weight of 25000: grams) is read in that unit for this test (_body_size), and the
    text says so: a child whose height was entered in cm is not taken for an adult."""
    height, weight, notes = _body_size(patient)
    try:
        bsa = body_surface_area_m2(height, weight, bsa_formula) if height and weight else None
    except (TypeError, ValueError):
        bsa = None
    size = child_body_size(height, weight, bsa)
    return None if size is None else size + "".join(f"; {note}" for note in notes)


def age_note(patient, bsa_formula: BsaFormula = "mosteller") -> str | None:
    """What a reader must know of the age used for the reference ranges (the first cine flag, summary
    `reference_ranges.age_note`): the age data's own note (cmr PatientInfo.age_note: PatientAge and the birth date
    disagreeing, cmr.age.AGE_NOTE_START; unusable data, AGE_UNKNOWN_START, completed here by what was then applied),
    and an age under INFANT_CHECK_AGE_YEARS with an adult's body size (height from CHILD_HEIGHT_M or weight from
    CHILD_WEIGHT_KG, read as _body_size does); None where there is nothing to say."""
    age = getattr(patient, "age", None)
    note = getattr(patient, "age_note", None)
    if note and note.startswith(AGE_UNKNOWN_START):
        note += ("; adult reference ranges applied, assuming an adult" if patient_child_size(patient, bsa_formula)
                 is None else "; the child's body size decided (adult reference ranges not applied)")
    height, weight, _ = _body_size(patient)
    adult_size = ([f"height {height:.2f} m"] if height is not None and CHILD_HEIGHT_M <= height < HEIGHT_RANGE_M[1]
                  else []) \
        + ([f"weight {weight:g} kg"] if weight is not None and CHILD_WEIGHT_KG <= weight < WEIGHT_RANGE_KG[1] else [])
    if age is not None and age.years < INFANT_CHECK_AGE_YEARS and adult_size:
        contradiction = (f"patient {age.text} (from {age.source}) with an adult's body size ({', '.join(adult_size)}),"
                         f" beyond any growth chart under {INFANT_CHECK_AGE_YEARS:g} years: the age or the size is "
                         "wrong; the child rule is kept (adult reference ranges not applied)")
        note = f"{note}; {contradiction}" if note else f"{AGE_NOTE_START}{contradiction}"
    return note


def age_adjusted_flags(flags, age: PatientAge | None, child_size: str | None = None,
                       note_on_age: str | None = None) -> list[str]:
    """The cine flags for this patient: as they are where the adult ranges apply; else the note first and every
    flag judging a value against an adult range (cine_metrics.is_range_flag, the wall-thickness flag, the note on
    lower limits not applied to lower bounds, the note on checks not made without a BSA) left out. `child_size`:
    child_body_size, for an unknown age. `note_on_age` (age_note), where given, comes first."""
    first = [note_on_age] if note_on_age else []
    note = adult_ranges_note(age, child_size)
    if note is None:
        return first + list(flags)
    return first + [note] + [flag for flag in flags if not (is_range_flag(flag) or str(flag).startswith(
        (WALL_THICKNESS_START, LOWER_BOUND_NOTE_START, NOT_JUDGED_START)))]


def reference_ranges_summary(age: PatientAge | None, child_size: str | None = None,
                             note_on_age: str | None = None) -> dict:
    """The summary.json `cine.reference_ranges` block: whether the adult ranges were applied, the patient's age as
    read (None: unknown), the child's body size that decided for an unknown age (None: not used), the note where
    they were not applied and `age_note` (age_note: unusable or disagreeing age data; None: nothing to say)."""
    return {"adult_ranges_applied": adult_ranges_apply(age, child_size),
            "patient_age": None if age is None else age.text,
            "patient_age_years": None if age is None else round(age.years, 3),
            "patient_age_source": None if age is None else age.source,
            "child_body_size": child_size if age is None else None, "note": adult_ranges_note(age, child_size),
            "age_note": note_on_age}
