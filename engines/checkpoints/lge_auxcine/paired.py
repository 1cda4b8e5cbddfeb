import json, sys, numpy as np
a = json.load(open(sys.argv[1]))["per_case"]; b = json.load(open(sys.argv[2]))["per_case"]
cases = sorted(set(a) & set(b))
print(len(cases), "paired cases")
def stat(centre, fn):
    xs=[fn(a[c]) for c in cases if a[c]["centre"]==centre]; ys=[fn(b[c]) for c in cases if b[c]["centre"]==centre]
    xs=np.array([x for x in xs], float); ys=np.array(ys, float); ok=~(np.isnan(xs)|np.isnan(ys))
    d=xs[ok]-ys[ok]
    return f"{np.mean(xs[ok]):.3f} vs {np.mean(ys[ok]):.3f} ({np.mean(d):+.3f} ± {np.std(d,ddof=1)/np.sqrt(len(d)):.3f}, n={ok.sum()})"
g=lambda k1,k2: (lambda r: r[k1].get(k2, float('nan')) if r[k1].get(k2) is not None else float('nan'))
for centre, metrics in (("emidec", [("myo slice", g("dice_per_slice","myocardium")), ("scar slice", g("dice_per_slice","scar")), ("mvo slice", g("dice_per_slice","mvo")), ("myo 3D", g("dice_3d","myocardium")), ("lv 3D", g("dice_3d","lv_blood_pool"))]),
                        ("myops", [("myo 3D", g("dice_3d","myocardium")), ("scar 3D", g("dice_3d","scar")), ("rv 3D", g("dice_3d","rv_blood_pool")), ("myo slice", g("dice_per_slice","myocardium"))])):
    for name, fn in metrics: print(centre, name, stat(centre, fn))
    print(centre, "%LGE abs err", stat(centre, lambda r: abs(r["predicted"]["lge_percent"]-r["truth"]["lge_percent"])))
    print(centre, "%LGE bias", stat(centre, lambda r: r["predicted"]["lge_percent"]-r["truth"]["lge_percent"]))
    print(centre, "myo mL bias", stat(centre, lambda r: r["predicted"]["myocardium_ml"]-r["truth"]["myocardium_ml"]))
