"""Experiment: the wide model at ED-1..ED+1 and ES-1..ES+1; a slice whose wide-model volume at ED/ES jumps from the
median of its three phases falls back to the all-phase model's slice."""
import csv, numpy as np
from pathlib import Path
from engines.cine.evaluate import (OnnxModel, IDENTITY, acdc_nifti_subject, function_values, read_info_cfg,
                                   load_acdc_nifti_volume, load_sunnybrook_cine, sunnybrook_orientation, SUNNYBROOK_HELD_OUT)
from dicomnode.analysis.cine import segment_and_measure, segment_cine
from dicomnode.analysis.cine_metrics import measure_cine, trigger_phase, slice_volumes_ml
from dicomnode.cmr.orientation import canonical_inplane
from dicomnode.labels import Label
d = Path('../shared/datasets')
m = OnnxModel(Path('/tmp/refmodels'), threads=2); w = OnnxModel(Path('/tmp/refmodels'), 'cine_unet_refine', threads=2)
cines = []
info = read_info_cfg(d / 'acdc-4d-sample/patient090/Info.cfg')
px, sp, dz = load_acdc_nifti_volume(d / 'acdc-4d-sample/patient090/patient090_4d.nii.gz')
_, truth, _, _ = acdc_nifti_subject(d / 'acdc-4d-sample/patient090')
cines.append(('patient090', px, sp, dz, None, IDENTITY, function_values(truth, sp[0]*sp[1]*dz/1000)['lv_ef_percent']))
table = {r['patient_id']: r for r in csv.DictReader(open(d / 'sunnybrook-scd/reference_values_from_contours.csv'))}
for p in SUNNYBROOK_HELD_OUT:
    px, sp, dz, _, tt = load_sunnybrook_cine(d, p)
    cines.append((p, px, sp, dz, tt, canonical_inplane(sunnybrook_orientation(d, p)), float(table[p]['lv_ef_pct'])))
for tol_ml, tol_frac in [(3.0, 0.05), (3.0, 0.15), (3.0, 0.3)]:
  for name, px, sp, dz, tt, stored, ref in cines:
    vml = sp[0]*sp[1]*dz/1000
    P = stored.apply(px); S = stored.spacing(sp)
    fp = trigger_phase(tt, len(px))[0]
    meas = lambda maps, timing=None: measure_cine(stored.invert(maps), vml, trigger_times=tt, timing=timing)
    labels, small, _ = segment_and_measure(P, S, m.run, m.spec, meas, fp)
    n = len(px); ed, es = small.ed_phase, small.es_phase
    around = sorted({(p + k) % n for p in (ed, es) for k in (-1, 0, 1)})
    from dicomnode.analysis.cine import locate_heart
    centre = locate_heart(P, S, m.run, m.spec, fp)
    wide = segment_cine(P[around], S, w.run, w.spec, localise=False, centre_rc=centre)
    wmap = dict(zip(around, wide))
    plain = labels.copy(); plain[[ed, es]] = [wmap[ed], wmap[es]]
    fixed = plain.copy(); jumped = []
    for p in (ed, es):
        trio = np.stack([wmap[(p - 1) % n], wmap[p], wmap[(p + 1) % n]])
        for lab in (Label.LV_BLOOD_POOL, Label.LV_MYOCARDIUM, Label.RV_BLOOD_POOL):
            v = (trio == lab).sum(axis=(2, 3)) * vml  # (3, slices)
            med = np.median(v, axis=0)
            bad = np.abs(v[1] - med) > np.maximum(tol_ml, tol_frac * v.max(axis=0))
            for z in np.flatnonzero(bad):
                fixed[p, z] = labels[p, z]; jumped.append((p, int(z), int(lab), round(float(v[1, z]), 1), round(float(med[z]), 1)))
    r_plain = meas(plain, small.timing).lv_ef_percent; r_fixed = meas(fixed, small.timing).lv_ef_percent
    print(tol_ml, tol_frac, name, 'ref %.1f small %.1f hybrid %.1f hybrid+temporal %.1f' % (ref, small.lv_ef_percent, r_plain, r_fixed), jumped, flush=True)
