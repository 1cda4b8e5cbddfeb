"""Post-processing experiment (2026-12-06, not shipped): small enhanced (scar + MVO) components relabelled healthy
myocardium, or a whole-study %LGE floor, on the cross-validation held-out predictions of the shipped LGE fold models.

    python -m engines.lge.restore --out engines/runs/lge8_cv
    python engines/checkpoints/lge_postprocess/postprocess.py [OUT]   # predictions cached per fold under OUT

Prints one line per variant (EMIDEC and MyoPS: scar Dice per slice / 3D, MVO Dice, %LGE MAE, bias, SD, r, flag
accuracy, mean %LGE on expert-normal hearts and how many read 0) and writes OUT/results.json (results.json here).
"""
import json, sys
from pathlib import Path
import numpy as np, torch
from scipy import ndimage
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from engines.lge import evaluate as E
from engines.lge.data import load_cases
from engines.lge.train import load_model
from dicomnode.analysis.lge import LGEInputSpec, segment_stack
torch.set_num_threads(2)
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path('engines/runs/lge_postprocess'); OUT.mkdir(parents=True, exist_ok=True)
cases = {c.name: c for c in load_cases()}
spec = LGEInputSpec(crop_size=E.CROP_SIZE, pixel_spacing_mm=E.MODEL_SPACING_MM, localisation_size=E.LOCALISATION_SIZE)
pred = {}
for path in sorted(Path('engines/runs/lge8_cv').glob('fold*/model.pt')):
    cache = OUT / f'{path.parent.name}.npz'
    if cache.is_file():
        pred.update(dict(np.load(cache))); continue
    model, meta = load_model(path); s = E.model_input_spec(model, spec)
    run = lambda x: model(torch.from_numpy(x)).detach().numpy()
    got = {}
    with torch.no_grad():
        for n in meta['held_out']:
            got[n] = segment_stack(cases[n].image, cases[n].spacing_rc, run, s, 0.0).labels.astype(np.uint8)
    np.savez_compressed(cache, **got); pred.update(got); print(path, len(got), flush=True)

def drop(labels, case, min_mm2=0.0, min_ml=0.0, mode='2d'):
    out = labels.copy(); enh = np.isin(out, (3, 4))
    if mode == '2d':
        st = np.zeros((3, 3, 3), bool); st[1] = True; comp, n = ndimage.label(enh, structure=st)
        if n == 0: return out
        areas = ndimage.sum(enh, comp, range(1, n + 1)) * case.spacing_rc[0] * case.spacing_rc[1]
        small = np.concatenate([[False], areas < min_mm2])
    else:
        comp, n = ndimage.label(enh, structure=np.ones((3, 3, 3), bool))
        if n == 0: return out
        vols = ndimage.sum(enh, comp, range(1, n + 1)) * case.voxel_volume_ml
        small = np.concatenate([[False], vols < min_ml])
    out[small[comp]] = 2
    return out

def total_floor(labels, case, pct):
    """%LGE under pct -> no scar at all."""
    out = labels.copy(); myo = np.isin(out, (2, 3, 4)).sum(); enh = np.isin(out, (3, 4)).sum()
    if myo and 100.0 * enh / myo < pct: out[np.isin(out, (3, 4))] = 2
    return out

variants = {'none': lambda l, c: l}
for a in (10, 20, 40, 80):
    variants[f'2d<{a}mm2'] = (lambda a: lambda l, c: drop(l, c, min_mm2=a))(a)
for v in (0.1, 0.25, 0.5, 1.0):
    variants[f'3d<{v}mL'] = (lambda v: lambda l, c: drop(l, c, min_ml=v, mode='3d'))(v)
for p in (1.0, 2.0):
    variants[f'floor<{p}%'] = (lambda p: lambda l, c: total_floor(l, c, p))(p)
rows = {}
for name, f in variants.items():
    per = {n: E.case_metrics(cases[n], f(pred[n], cases[n])) for n in pred}
    rows[name] = {}
    for centre in ('emidec', 'myops'):
        sub = {n: m for n, m in per.items() if m['centre'] == centre}
        agg = E.aggregate(sub)
        normals = [m for n, m in sub.items() if m['truth']['lge_percent'] == 0]
        rows[name][centre] = dict(scar_slice=agg['dice_per_slice']['scar'], scar3d=agg['dice_3d']['scar'],
            mvo=agg['dice_per_slice'].get('mvo'), mae=agg['dl']['mae'], bias=agg['dl']['bias'], sd=agg['dl']['sd'], r=agg['dl']['r'],
            flag=agg['dl']['flag_accuracy'], normal_mean_pct=float(np.mean([m['predicted']['lge_percent'] for m in normals])) if normals else None,
            normal_zero=int(sum(m['predicted']['lge_percent'] == 0 for m in normals)), normals=len(normals))
    print(name, json.dumps({k: {kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()} for k, v in rows[name].items()}), flush=True)
json.dump(rows, open(OUT / 'results.json', 'w'), indent=1)
