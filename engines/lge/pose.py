"""Where each training heart's RV lies: the per-case plan that lets training show the network hearts in the pose the
node hands it.

The node turns every stack by quarter turns so that the direction from the LV's centre to the RV's lies in
dicomnode.cmr.orientation.RV_DIRECTION_WINDOW_DEG (62-152 degrees on the displayed image) before segmenting it.
Trained with any in-plane rotation, the network spends capacity on poses it is never given and its output still moves
with the pose (break46c: on MyoPS the four quarter turns of the same heart differ by 2.1 %LGE points, median). With
this plan, `engines.lge.augment.sample_patch` can restrict the random rotation to the poses the node produces.

The direction of a case is that of its whole stack on the stored grid (rows, cols as `engines.lge.data` loads them),
in mm, as `dicomnode.cmr.orientation.rv_direction_deg` measures it:
- MyoPS: from the expert LV (blood pool, myocardium, scar) and RV labels;
- EMIDEC (no RV label): from the RV the given model finds, through the node's own segment_stack in the stored pose.

    python -m engines.lge.pose --cv engines/runs/lge8_cv --out engines/lge/rv_directions.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dicomnode.analysis.lge import LGEInputSpec, segment_stack
from dicomnode.cmr.orientation import rv_direction_deg
from dicomnode.cmr.structures import LV_LABELS
from dicomnode.labels import Label
from engines.lge.data import Case, load_cases

DEFAULT_PLAN = Path(__file__).resolve().parent / "rv_directions.json"


def case_direction(labels: np.ndarray, spacing_rc: tuple[float, float]) -> float | None:
    """LV-to-RV direction in degrees (dicomnode.cmr.orientation conventions) of a (D, H, W) node-label stack over all
    its slices; None where it has no usable RV (rv_direction_deg)."""
    return rv_direction_deg(np.isin(labels, LV_LABELS), labels == Label.RV_BLOOD_POOL, spacing_rc)


def plan_directions(cases: list[Case], run_model=None, log=print) -> dict[str, dict]:
    """{case name: {"direction_deg": float | None, "source": "labels" | "model"}}. Cases whose centre labels the RV
    use their labels; the others need `run_model` ((1, 1, D, H, W) float32 -> logits, as segment_stack takes)."""
    plan: dict[str, dict] = {}
    for case in cases:
        if int(Label.RV_BLOOD_POOL) in case.labelled:
            labels, source = case.labels, "labels"
        else:
            if run_model is None:
                raise ValueError(f"{case.name}: its centre labels no RV, and no model was given to find it")
            labels = segment_stack(case.image, case.spacing_rc, run_model, LGEInputSpec(),
                                   anatomical_pose=False).labels
            source = "model"
        direction = case_direction(labels, case.spacing_rc)
        plan[case.name] = {"direction_deg": None if direction is None else round(direction, 1), "source": source}
        log(f"{case.name}: {plan[case.name]['direction_deg']} ({source})")
    return plan


def load_plan(path: Path = DEFAULT_PLAN) -> dict[str, float]:
    """{case name: direction in degrees} of a plan file, cases without a direction left out. Raises FileNotFoundError
    (with the command that writes it) where the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: write it with python -m engines.lge.pose --cv <run folder>")
    entries = json.loads(path.read_text())["cases"]
    return {name: float(entry["direction_deg"]) for name, entry in entries.items()
            if entry.get("direction_deg") is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cv", type=Path, required=True,
                        help="run folder whose fold*/model.pt together (their mean) find the RV on EMIDEC")
    parser.add_argument("--out", type=Path, default=DEFAULT_PLAN)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from engines.lge.model import LGEEnsemble
    from engines.lge.train import load_model

    paths = sorted(args.cv.glob("fold*/model.pt"))
    if not paths:
        parser.error(f"no fold*/model.pt under {args.cv}")
    ensemble = LGEEnsemble.from_members([load_model(path)[0] for path in paths])

    def run_model(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return ensemble(torch.from_numpy(x)).numpy()

    began = time.time()
    plan = plan_directions(load_cases(), run_model)
    args.out.write_text(json.dumps({
        "what": "LV-to-RV direction per LGE training case, degrees on the stored grid's display (0: towards "
                "increasing column, 90: up), engines.lge.pose",
        "rv_source": {"myops": "expert labels", "emidec": f"the mean of {len(paths)} models of {args.cv.name}"},
        "cases": plan}, indent=1) + "\n")
    missing = sorted(name for name, entry in plan.items() if entry["direction_deg"] is None)
    print(f"{len(plan)} cases in {time.time() - began:.0f} s, no direction: {missing or 'none'} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
