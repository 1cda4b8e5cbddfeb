"""Write the pretraining cache (npz): DICOM studies -> 2-D frames on the model grid + line heatmaps + stack positions.

python -m engines.ssl.build_dataset --out engines/runs/ssl/data            # generate DICOM from shared/datasets, walk it
python -m engines.ssl.build_dataset --out DIR --spool /var/dicomnode/spool  # a site: walk its own spool only
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from dicomnode.devtools.sources import ACDC_LICENCE, SourceCase, datasets_dir
from engines.ssl.dataset import CANVAS_SIZE, LINE_SIGMA_MM, TARGET_SPACING_MM, build_samples

SUNNYBROOK_PATIENTS = ("SCD0000101", "SCD0000201", "SCD0000301")


def acdc_png_case(root: Path, patient: str) -> SourceCase:
    """One acdc-train-png subject as a 2-phase (ED, ES) cine case for make_study's writer (labels not used here)."""
    from PIL import Image

    base = root / "acdc-train-png"
    rows = [r for r in csv.DictReader(open(base / "slices.csv", newline="")) if r["patient"] == patient]
    if not rows:
        raise ValueError(f"ACDC patient {patient!r} not in {base / 'slices.csv'}")
    info = next(r for r in csv.DictReader(open(base / "patients.csv", newline="")) if r["patient"] == patient)
    phases = []
    for phase in ("ED", "ES"):
        chosen = sorted((r for r in rows if r["phase"] == phase), key=lambda r: int(r["z"]))
        phases.append(np.stack([np.asarray(Image.open(base / "images" / r["file"]), np.float32) for r in chosen]))
    images = np.stack(phases)
    first = rows[0]
    frames_total = int(info["nb_frames"])
    es_frame = int(info["es_frame"])
    return SourceCase(
        name=f"acdcpng:{patient}", kind="cine", images={"cine": images},
        labelmap=np.zeros(images.shape, np.uint8), labelled=np.zeros(images.shape[:2], bool),
        pixel_spacing=(float(first["pixel_spacing_row_mm"]), float(first["pixel_spacing_col_mm"])),
        slice_spacing=float(first["slice_spacing_mm"]),
        trigger_times=[0.0, round((es_frame - 1) * 1000.0 / frames_total, 2)], cardiac_number_of_images=frames_total,
        licence=ACDC_LICENCE,
        derivation=(f"ACDC {patient} ED and ES slices from acdc-train-png; synthetic SAX orientation (ACDC affines are "
                    "diagonal); trigger times assume RR 1000 ms; written for self-supervised pretraining (no labels)"),
    )


def generate_spool(datasets: Path, spool: Path, log=print) -> list[Path]:
    """Write every shared dataset as DICOM studies under spool/<name>/ (skips those already written)."""
    from dicomnode.devtools.make_study import _Writer, make_study

    folders = []

    def once(name: str, write) -> None:
        target = spool / name
        if not (target / "dicom").is_dir():
            write(target)
        folders.append(target / "dicom")

    for patient in SUNNYBROOK_PATIENTS:
        once(f"sunnybrook_{patient}", lambda t, p=patient: make_study(f"sunnybrook:{p}", t, datasets=datasets,
                                                                        with_localizers=True))
    for folder in sorted((datasets / "acdc-sample").glob("patient*")):
        once(f"acdc_{folder.name}", lambda t, p=folder.name: make_study(f"acdc:{p}", t, datasets=datasets))
    once("acdc4d_patient090", lambda t: make_study("acdc4d:patient090", t, datasets=datasets))
    cases = sorted({p.name.split("_slice")[0] for sub in ("train", "val")
                    for p in (datasets / "emidec-lge-png" / sub).glob("Case_*.png")})
    for case in cases:
        once(f"emidec_{case}", lambda t, c=case: make_study(f"emidec:{c}", t, datasets=datasets))
    patients = sorted({r["patient"] for r in csv.DictReader(open(datasets / "acdc-train-png" / "slices.csv"))})
    for patient in patients:
        def write(target: Path, p=patient) -> None:
            target.mkdir(parents=True, exist_ok=True)
            _Writer(acdc_png_case(datasets, p), target, "ge", None, 0, {}).write_classic("cine", [5], per_slice_series=False)
        once(f"acdcpng_{patient}", write)
    log(f"spool: {len(folders)} studies under {spool}")
    return folders


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for cache.npz + manifest.json")
    parser.add_argument("--datasets", type=Path, default=None, help="shared datasets (default: ../shared/datasets)")
    parser.add_argument("--spool", type=Path, action="append", default=None,
                        help="walk this folder of studies instead of generating from the shared datasets (repeatable)")
    parser.add_argument("--all-series", action="store_true", help="also non-preferred repeats (e.g. LGE magnitude)")
    parser.add_argument("--max-phases", type=int, default=None, help="keep at most this many phases per slice")
    args = parser.parse_args(argv)

    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.spool:
        folders = list(args.spool)
    else:
        datasets = datasets_dir(args.datasets)
        folders = generate_spool(datasets, args.out / "spool")
        # the 4th Sunnybrook patient has localizers only (three repeats): real multi-plane geometry without a cine
        folders.append(datasets / "sunnybrook-scd-localizers" / "dicoms" / "SCD0003501")
    samples = build_samples(folders, preferred_only=not args.all_series, max_phases=args.max_phases)
    arrays = samples.arrays()
    np.savez_compressed(args.out / "cache.npz", **arrays)
    sequences, counts = np.unique(arrays["sequence"], return_counts=True)
    manifest = {
        "samples": int(len(arrays["images"])), "canvas": CANVAS_SIZE, "spacing_mm": TARGET_SPACING_MM,
        "line_sigma_mm": LINE_SIGMA_MM, "with_lines": int(arrays["has_lines"].sum()),
        "with_position": int(np.isfinite(arrays["position"]).sum()),
        "sequences": {str(s): int(c) for s, c in zip(sequences, counts)},
        "subjects": int(len(set(arrays["subject"]))), "folders": [str(f) for f in folders],
        "elapsed_s": round(time.time() - started, 1),
        "licence": "derived from Sunnybrook (CC0), ACDC and EMIDEC (CC BY-NC-SA 4.0): non-commercial, share alike",
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps({k: v for k, v in manifest.items() if k != "folders"}, indent=1))


if __name__ == "__main__":
    main()
