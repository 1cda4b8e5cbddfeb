"""Whether a measured heart size is physiologically plausible at all, or points at wrong geometry in the header.

Pixel spacing and slice spacing scale every volume: a PixelSpacing written 1.3 x too large makes a 300 mL LV read
676 mL. The range flags (cine_metrics.NORMAL_VALUES) only say "above normal", which a dilated heart also is; a
volume beyond even severely dilated hearts gets this note instead, asking for the geometry to be checked.

The bound: MAX_PLAUSIBLE_EDV_ML, 500 mL. The largest LV EDV of the 100 ACDC training patients (Bernard O et al.,
IEEE TMI 2018;37:2514, 20 of them with dilated cardiomyopathy, LVEF < 40 % and LV EDVi > 100 mL/m²) is 374 mL
(patient016, DCM, its expert ED labels; the largest RV EDV 295 mL), so 500 mL is a third beyond the largest dilated
LV of the data the node's cine model was validated on and 2.3 x the adult upper normal limit (men 214 mL, Kawel-Boehm N
et al., JCMR 2015;17:29). A larger ventricle is possible (e.g. chronic severe aortic regurgitation), which is why
this is a caveat to check, not a refusal.
Pure functions: numbers in, notes out.
"""
from __future__ import annotations

#: ventricular EDV (mL) beyond which the note asks for the geometry to be checked (see the module docstring)
MAX_PLAUSIBLE_EDV_ML = 500.0
#: the largest EDVs of the ACDC training patients (expert ED labels), which the note quotes
ACDC_LARGEST_LV_EDV_ML = 374.0
#: how implausible_size_notes begin (outputs that group notes can find them)
IMPLAUSIBLE_SIZE_START = "implausibly large"


def implausible_size_notes(lv_edv_ml: float | None, rv_edv_ml: float | None = None) -> list[str]:
    """A note per ventricle whose EDV (mL) exceeds MAX_PLAUSIBLE_EDV_ML: the value is beyond even severely dilated
    hearts (the largest of 100 ACDC patients, 20 with dilated cardiomyopathy: ACDC_LARGEST_LV_EDV_ML) and may
    come from a wrong PixelSpacing, slice spacing or geometry. None or non-finite values give no note."""
    notes = []
    for name, value in (("LV", lv_edv_ml), ("RV", rv_edv_ml)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if value == value and value > MAX_PLAUSIBLE_EDV_ML:
            notes.append(f"{IMPLAUSIBLE_SIZE_START} {name}: {name} EDV {value:.0f} mL is beyond "
                         f"{MAX_PLAUSIBLE_EDV_ML:.0f} mL, more than even severely dilated ventricles (the largest LV "
                         f"EDV of 100 ACDC patients, 20 with dilated cardiomyopathy: {ACDC_LARGEST_LV_EDV_ML:.0f} mL) "
                         "and larger than any LV the model was validated on: check PixelSpacing, the slice spacing "
                         "and the image geometry in the header before using the volumes and mass")
    return notes
