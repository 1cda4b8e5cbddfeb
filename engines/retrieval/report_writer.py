"""Write a radiologist-style CMR report for one demo case from its ground-truth facts, phrasing varied by a seeded RNG."""
from __future__ import annotations

import hashlib
import random

from dicomnode.analysis.suggestions import SECTORS

from .demo_cases import Case

EF_NORMAL, EF_MILD, EF_MODERATE = 55.0, 45.0, 35.0


def _rng(case_id: str, seed: int) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest()[:16], 16))


def _ef_grade(ef: float) -> str:
    if ef >= 70:
        return "hyperdynamic"
    if ef >= EF_NORMAL:
        return "normal"
    if ef >= EF_MILD:
        return "mildly reduced"
    if ef >= EF_MODERATE:
        return "moderately reduced"
    return "severely reduced"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _scar_location(extra: dict) -> list[str]:
    shares = sorted(((extra.get(f"scar_{name}_fraction") or 0.0, name) for name in SECTORS), reverse=True)
    main = [name for share, name in shares if share >= 0.25]
    return main or [shares[0][1]]


def lge_report(case: Case, rng: random.Random) -> tuple[str, str]:
    lge = case.summary["lge"]
    extra = case.lge_extra
    percent, mvo = lge["lge_percent"], lge["mvo_percent"]
    technique = rng.choice([
        "Late gadolinium enhancement imaging, short-axis stack.",
        "Short-axis late gadolinium enhancement (LGE) images were reviewed.",
        "Delayed enhancement imaging after gadolinium, short-axis coverage of the left ventricle.",
    ])
    if percent <= 0:
        findings = rng.choice([
            "No late gadolinium enhancement is seen in the left ventricular myocardium.",
            "There is no myocardial late enhancement.",
            "No focal or diffuse late gadolinium enhancement.",
        ]) + " " + rng.choice([
            "In particular, no subendocardial or transmural scar.",
            "No evidence of myocardial infarction or fibrosis.",
            "Myocardial nulling is homogeneous.",
        ])
        impression = rng.choice([
            "No evidence of myocardial infarction on LGE imaging.",
            "Normal late enhancement study: no scar.",
            "No myocardial scar. Normal LGE.",
        ])
        return f"{technique} {findings}", impression
    transmural = extra.get("transmural_extent") or 0.0
    pattern = ("transmural" if transmural >= 0.75 else "predominantly transmural" if transmural >= 0.5
               else "subendocardial" if transmural < 0.3 else "subendocardial to mid-wall")
    locations = _scar_location(extra)
    slices = case.meta.get("slices")
    involved = round((extra.get("scar_slice_fraction") or 0.0) * slices) if slices else None
    size = "small" if percent < 10 else "moderate" if percent < 25 else "large" if percent < 40 else "very large"
    sentences = [
        rng.choice([
            f"There is {pattern} late gadolinium enhancement of the {_join(locations)} wall{'s' if len(locations) > 1 else ''}",
            f"{pattern.capitalize()} enhancement involving the {_join(locations)} segments",
            f"Late enhancement in a {pattern} distribution, {_join(locations)}",
        ]) + rng.choice([" in a coronary distribution.", ", consistent with an ischaemic pattern.", "."]),
        rng.choice([
            f"Image orientation was not verified, so the wall assignment ({_join(locations)}) is approximate.",
            f"Location approximate ({_join(locations)}); orientation of the images is not known.",
            "Wall location is approximate as the image orientation is unknown.",
        ]),
    ]
    if involved:
        sentences.append(rng.choice([
            f"Enhancement is present on {involved} of {slices} short-axis slices.",
            f"It extends over {involved} of the {slices} slices.",
            f"{involved}/{slices} slices involved.",
        ]))
    sentences.append(rng.choice([
        f"Infarct size about {percent:.0f}% of the LV myocardium.",
        f"Scar burden approximately {percent:.0f}% of left ventricular myocardial volume.",
        f"The enhanced myocardium amounts to roughly {percent:.0f}% of the LV myocardium.",
    ]))
    if mvo >= 0.5:
        sentences.append(rng.choice([
            f"A dark core of microvascular obstruction is present (about {mvo:.0f}% of the myocardium).",
            f"Microvascular obstruction (no-reflow) within the infarct, approximately {mvo:.0f}% of myocardium.",
            f"Persistent microvascular obstruction, roughly {mvo:.0f}% of the LV myocardium.",
        ]))
    elif mvo > 0:
        sentences.append(rng.choice(["Small focus of microvascular obstruction.", "Minimal microvascular obstruction."]))
    else:
        sentences.append(rng.choice(["No microvascular obstruction.", "No no-reflow zone.", "MVO absent."]))
    impression = rng.choice([
        f"{size.capitalize()} {pattern} myocardial infarction ({percent:.0f}% of LV myocardium), {_join(locations)}",
        f"Myocardial infarction of {size} extent, {pattern}, {_join(locations)} (approximate)",
        f"Ischaemic scar, {size}: {percent:.0f}% LGE, {_join(locations)} territory",
    ]) + (rng.choice([" with microvascular obstruction.", ", MVO present."]) if mvo >= 0.5 else ".")
    if lge["large_scar_burden"]:
        impression += rng.choice([" Large scar burden (at least 15% of LV mass).", " Scar burden of 15% or more."])
    return f"{technique} {' '.join(sentences)}", impression


def cine_report(case: Case, rng: random.Random) -> tuple[str, str]:
    cine = case.summary["cine"]
    bsa = case.meta.get("bsa_m2")
    edv, esv, ef = cine["lv_edv_ml"], cine["lv_esv_ml"], cine["lv_ef_percent"]
    technique = rng.choice([
        "Cine SSFP short-axis stack, volumetric analysis by summation of discs.",
        "Balanced SSFP cine imaging; ventricular volumes from short-axis contours.",
        "Short-axis cine images covering both ventricles were analysed.",
    ])
    indexed = f" ({edv / bsa:.0f} mL/m2)" if bsa else ""
    sentences = [rng.choice([
        f"LV end-diastolic volume {edv:.0f} mL{indexed}, end-systolic volume {esv:.0f} mL, ejection fraction {ef:.0f}%.",
        f"Left ventricle: EDV {edv:.0f} mL{indexed}, ESV {esv:.0f} mL, EF {ef:.0f}%.",
        f"LVEDV {edv:.0f} mL{indexed}; LVESV {esv:.0f} mL; LVEF {ef:.0f}% ({_ef_grade(ef)}).",
    ])]
    dilated_lv = edv / bsa > 105 if bsa else edv > 200
    sentences.append(rng.choice([
        f"The left ventricle is {'dilated' if dilated_lv else 'normal in size'} with {_ef_grade(ef)} systolic function.",
        f"{'Dilated' if dilated_lv else 'Non-dilated'} LV, {_ef_grade(ef)} global systolic function.",
    ]))
    if cine.get("lv_mass_g") is not None:
        mass = cine["lv_mass_g"]
        mass_text = f"{mass:.0f} g" + (f" ({mass / bsa:.0f} g/m2)" if bsa else "")
        sentences.append(rng.choice([f"LV mass {mass_text}.", f"Myocardial mass {mass_text}."]))
    thickness = case.cine_extra.get("max_wall_thickness_mm")
    if thickness is not None:
        thick = thickness >= 13
        sentences.append(rng.choice([
            f"Maximal mean wall thickness about {thickness:.0f} mm{', increased' if thick else ''}.",
            f"{'Increased' if thick else 'Normal'} LV wall thickness (about {thickness:.0f} mm at the thickest level).",
        ]))
    if cine.get("rv_edv_ml") is not None:
        rv_edv, rv_ef = cine["rv_edv_ml"], cine["rv_ef_percent"]
        rv_dilated = rv_edv / bsa > 110 if bsa else rv_edv > 220
        rv_indexed = f" ({rv_edv / bsa:.0f} mL/m2)" if bsa else ""
        sentences.append(rng.choice([
            f"Right ventricle: EDV {rv_edv:.0f} mL{rv_indexed}, EF {rv_ef:.0f}%, {'dilated' if rv_dilated else 'normal size'}.",
            f"RVEDV {rv_edv:.0f} mL{rv_indexed}, RVEF {rv_ef:.0f}% ({_ef_grade(min(rv_ef + 5, 69))} RV function).",
            f"The right ventricle is {'dilated' if rv_dilated else 'not dilated'} with {_ef_grade(min(rv_ef + 5, 69))} function (RVEF {rv_ef:.0f}%).",
        ]))
    else:
        sentences.append(rng.choice(["Right ventricle not assessed.", "No RV volumetry available."]))
    impression = _cine_impression(case, rng, dilated_lv, ef)
    return f"{technique} {' '.join(sentences)}", impression


def _cine_impression(case: Case, rng: random.Random, dilated_lv: bool, ef: float) -> str:
    group = case.group
    if group == "NOR":
        return rng.choice(["Normal biventricular size and function.", "Normal cardiac MRI: normal volumes and systolic function.",
                           "No structural or functional abnormality."])
    if group == "DCM":
        return rng.choice([f"Dilated left ventricle with {_ef_grade(ef)} systolic function, in keeping with dilated cardiomyopathy.",
                           "Dilated cardiomyopathy phenotype.", f"DCM pattern: LV dilatation, EF {ef:.0f}%."])
    if group == "HCM":
        return rng.choice(["Left ventricular hypertrophy with preserved ejection fraction, consistent with hypertrophic cardiomyopathy.",
                           "Hypertrophic cardiomyopathy phenotype.", "Increased LV wall thickness and mass: HCM pattern."])
    if group == "MINF":
        return rng.choice([f"Reduced LV systolic function (EF {ef:.0f}%) in a patient with previous myocardial infarction.",
                           "Ischaemic left ventricular dysfunction after myocardial infarction.",
                           "Post-infarction LV remodelling with impaired systolic function."])
    if group == "RV":
        return rng.choice(["Abnormal right ventricle: dilatation and/or impaired RV function.", "Right ventricular dilatation.",
                           "Abnormal RV, consider RV cardiomyopathy or volume overload."])
    if group == "HF-I":
        who = ""
        if case.meta.get("age") and case.meta.get("sex"):
            who = f" ({case.meta['sex'].lower()}, {case.meta['age']} years)"
        return rng.choice([f"Heart failure with previous infarction{who}: dilated LV with {_ef_grade(ef)} EF ({ef:.0f}%).",
                           f"Ischaemic cardiomyopathy{who}, LVEF {ef:.0f}%.",
                           f"Severely impaired LV function after infarction{who}."])
    raise ValueError(f"no impression template for group {group!r}")


def write_report(case: Case, seed: int = 0) -> dict:
    """One bank record: id, text (findings + impression), findings, impression, metadata incl. study features."""
    rng = _rng(case.case_id, seed)
    if "lge" in case.summary:
        findings, impression = lge_report(case, rng)
    else:
        findings, impression = cine_report(case, rng)
    return {
        "id": case.case_id,
        "text": f"Findings: {findings} Impression: {impression}",
        "findings": findings,
        "impression": impression,
        "metadata": {"dataset": case.dataset, "group": case.group, "licence": case.licence,
                     "study_features": case.features()},
    }
