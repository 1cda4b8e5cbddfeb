"""%LGE from the class probabilities instead of the label count, on the shipped ensemble's 5-fold CV (no training).

Each held-out case is segmented by its CV fold model through the node's segment_stack (no scar offset, as shipped);
%LGE is then taken from the hard labels (what the node reports) and from the probabilities: summed scar + MVO over
summed myocardium + scar + MVO probability everywhere (soft_all), inside the hard myocardium (soft_in_hardmyo) or
within 2 pixels of it (soft_near_myo); the mean conditional scar probability P(scar | myocardium) inside the hard
myocardium (cond_mean_hardmyo), and that conditional thresholded at 0.3-0.6 (cond_th*).

    python -m engines.lge.restore --out engines/runs/lge8_cv
    python engines/checkpoints/lge_soft_volumes/soft_lge.py engines/checkpoints/lge_soft_volumes/results.json
    python engines/checkpoints/lge_soft_volumes/soft_lge.py engines/checkpoints/lge_soft_volumes/results.json --summary
"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
from scipy import ndimage
from dicomnode.analysis.lge import LGEInputSpec, segment_stack
from engines.lge.data import load_cases
from engines.lge.export import CROP_SIZE, LOCALISATION_SIZE
from engines.lge.train import MODEL_SPACING_MM, load_model



def summary(results: dict) -> str:
    lines = []
    keys = [k for k in next(iter(results.values())) if k not in ("centre", "truth", "sec") and not k.startswith("myo_ml")]
    for centre in ("emidec", "myops", "all"):
        rows = [v for v in results.values() if centre == "all" or v["centre"] == centre]
        truth = np.array([v["truth"] for v in rows])
        lines.append(f"{centre} ({len(rows)} cases)")
        for k in keys:
            p = np.array([v[k] for v in rows]); e = p - truth
            flag = np.mean((p >= 15) == (truth >= 15))
            lines.append(f"  {k:18s} %LGE MAE {np.abs(e).mean():.2f} bias {e.mean():+.2f} SD {e.std():.2f} "
                         f"r {np.corrcoef(p, truth)[0, 1]:.3f} flag accuracy {flag:.3f}")
    return "\n".join(lines)


out = Path(sys.argv[1])
if "--summary" in sys.argv:
    print(summary(json.loads(out.read_text())))
    sys.exit(0)
torch.set_num_threads(1)
run = Path("engines/runs/lge8_cv")
cases = {c.name: c for c in load_cases()}
spec = LGEInputSpec(crop_size=CROP_SIZE, pixel_spacing_mm=MODEL_SPACING_MM, localisation_size=LOCALISATION_SIZE)
results = json.loads(out.read_text()) if out.is_file() else {}
for path in sorted(run.glob("fold*/model.pt")):
    model, meta = load_model(path)
    def run_model(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    for name in meta["held_out"]:
        if name in results:
            continue
        case = cases[name]
        t = time.time()
        seg = segment_stack(case.image, case.spacing_rc, run_model, spec, 0.0)
        p = seg.probabilities  # (S, C, H, W)
        lab = seg.labels
        truth = case.labels
        myo_t = np.isin(truth, (2, 3, 4)); scar_t = np.isin(truth, (3, 4))
        r = {"centre": case.centre, "truth": 100 * scar_t.sum() / max(myo_t.sum(), 1)}
        myo_h = np.isin(lab, (2, 3, 4)); scar_h = np.isin(lab, (3, 4))
        r["hard"] = 100 * scar_h.sum() / max(myo_h.sum(), 1)
        ps = p[:, 3] + p[:, 4]; pm = p[:, 2] + ps
        r["soft_all"] = 100 * ps.sum() / pm.sum()
        r["soft_in_hardmyo"] = 100 * ps[myo_h].sum() / max(pm[myo_h].sum(), 1e-6)
        dil = ndimage.binary_dilation(myo_h, structure=np.ones((1, 3, 3), bool), iterations=2)
        r["soft_near_myo"] = 100 * ps[dil].sum() / max(pm[dil].sum(), 1e-6)
        # scar fraction within hard myocardium by P(scar|myo-like)
        cond = ps / np.maximum(pm, 1e-6)
        r["cond_mean_hardmyo"] = 100 * float(cond[myo_h].mean()) if myo_h.any() else 0.0
        for th in (0.3, 0.4, 0.5, 0.6):
            r[f"cond_th{th}"] = 100 * float((cond[myo_h] > th).mean()) if myo_h.any() else 0.0
        r["myo_ml_t"] = float(myo_t.sum() * case.voxel_volume_ml); r["myo_ml_h"] = float(myo_h.sum() * case.voxel_volume_ml)
        r["myo_ml_soft"] = float(pm.sum() * case.voxel_volume_ml)
        r["sec"] = time.time() - t
        results[name] = r
        out.write_text(json.dumps(results, default=float))
        print(path.parent.name, name, {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
