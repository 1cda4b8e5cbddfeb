"""Experiment (2026-12-07, not shipped): the RV blood pool / background decision alone moved (grow: +, shrink: -),
cross-fitted on CV folds by RVEF MAE.

    python engines/checkpoints/cine_epicardium/rv_offset.py engines/runs/cine_basal3 2   # folds as in EPICARDIUM.md
"""
import json, sys
from pathlib import Path
import numpy as np
from dicomnode.analysis.cine import locate_heart, preprocess_cine, softmax
from dicomnode.cmr.structures import keep_largest_structures
from dicomnode.labels import Label
from engines.cine.data import acdc_nifti_dirs
from engines.cine.evaluate import TorchFoldModel, acdc_nifti_subject, acdc_png_subject, fold_status, function_values, agreement

GRID = (-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5)
datasets = Path(__file__).resolve().parents[4] / "shared" / "datasets"; run = Path(sys.argv[1]); threads = int(sys.argv[2])
nifti = {f.name: f for f in acdc_nifti_dirs(datasets)}
finished, _ = fold_status(run)
subjects = []
for ck in finished:
    model = TorchFoldModel(ck, threads); spec = model.spec
    lookup = np.asarray(spec.channel_labels, np.uint8); rv = list(lookup).index(int(Label.RV_BLOOD_POOL)); bg = 0
    for patient in [s for s in model.checkpoint["test_subjects"] if s.startswith("patient")]:
        pixels, truth, spacing, dz = acdc_nifti_subject(nifti[patient]) if patient in nifti else acdc_png_subject(datasets, patient)
        centre = locate_heart(pixels, spacing, model.run, spec, 0)
        inputs, res = preprocess_cine(pixels, spacing, spec, 0, centre)
        p = softmax(model.run(inputs).reshape(pixels.shape[:2] + (len(lookup), spec.crop_size, spec.crop_size)), axis=2)
        scores = res.inverse_probabilities(p); scores[:, :, 0] += scores.sum(axis=2) == 0
        base = np.argmax(scores, axis=2)
        vox = spacing[0] * spacing[1] * dz / 1000
        pred = {}
        for d in GRID:
            dec = base.copy()
            if d < 0:
                dec[(base == rv) & (scores[:, :, bg] * np.exp(-d) >= scores[:, :, rv])] = bg
            elif d > 0:
                dec[(base == bg) & (scores[:, :, rv] * np.exp(d) >= scores[:, :, bg])] = rv
            pred[f"{d:.2f}"] = function_values(keep_largest_structures(lookup[dec]), vox)
        subjects.append({"fold": ck.parent.name, "subject": patient, "reference": function_values(truth, vox), "predicted": pred})
        print(ck.parent.name, patient, flush=True)
def mae(ss, k, q="rv_ef_percent"):
    return float(np.mean([abs(s["predicted"][k][q] - s["reference"][q]) for s in ss if s["predicted"][k][q] is not None and s["reference"][q] is not None]))
folds = sorted({s["fold"] for s in subjects})
chosen = {f: min((f"{d:.2f}" for d in GRID), key=lambda k: mae([s for s in subjects if s["fold"] != f], k)) for f in folds}
for q in ("rv_ef_percent", "rv_edv_ml", "rv_esv_ml", "lv_ef_percent"):
    before = agreement([(s["predicted"]["0.00"][q], s["reference"][q]) for s in subjects])
    after = agreement([(s["predicted"][chosen[s["fold"]]][q], s["reference"][q]) for s in subjects])
    print(q, "before", {k: round(v, 2) for k, v in before.items() if isinstance(v, float)}, "after", {k: round(v, 2) for k, v in after.items() if isinstance(v, float)})
print("chosen", chosen, {f"{d:.2f}": round(mae(subjects, f"{d:.2f}"), 2) for d in GRID})
json.dump({"chosen": chosen, "subjects": subjects}, open(run / "rv_offset.json", "w"), default=float)
