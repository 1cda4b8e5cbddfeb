"""Paired comparison of two cine cross-validation recipes on the same held-out ACDC patients.

    python -m engines.cine.compare engines/runs/cine_long9600 --against engines/cine/evaluation.json [--evaluate]

A source is either a run folder of `engines.cine.train --folds 5` (each finished fold's held-out results in
fold<k>/heldout_evaluation.json, written by `engines.cine.evaluate`, and its whole cines in fold<k>/whole_cines.json)
or a report written by `engines.cine.evaluate --cv` (evaluation.json: its `cv.subjects` carry their fold). Patients are
paired by fold and subject, so two recipes are compared on exactly the patients both held out; for each function
value the table gives both MAEs and the mean paired difference of absolute errors ± its standard error (negative:
the first source is closer to the reference). `--evaluate` first evaluates the finished folds of a run folder that
have no results yet (held-out patients and the four whole cines, on the CPU).

Output: a Markdown table on stdout and, with --json, the numbers.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

#: function values compared as absolute errors (MAE) and as bias; (key, table name)
ERROR_KEYS = (("lv_ef_percent", "LVEF"), ("rv_ef_percent", "RVEF"), ("lv_mass_g", "LV mass"),
              ("lv_edv_ml", "LV EDV"), ("lv_esv_ml", "LV ESV"))
#: Dice compared as means; (phase, class)
DICE_KEYS = (("ED", "lv_myocardium"), ("ES", "lv_myocardium"), ("ED", "rv_blood_pool"), ("ES", "rv_blood_pool"))


def load_subjects(source: Path) -> dict[str, list[dict]]:
    """{fold name: held-out subject results} of a run folder or an evaluation.json report.

    Raises FileNotFoundError when the source holds no held-out results at all."""
    by_fold: dict[str, list[dict]] = {}
    if source.is_file():
        report = json.loads(source.read_text())
        for subject in report.get("cv", {}).get("subjects", []):
            by_fold.setdefault(subject["fold"], []).append(subject)
    else:
        for path in sorted(source.glob("fold*/heldout_evaluation.json")):
            by_fold[path.parent.name] = json.loads(path.read_text())["subjects"]
    if not by_fold:
        raise FileNotFoundError(f"{source}: no held-out results (fold*/heldout_evaluation.json, or an evaluation.json "
                                f"with cv.subjects); run with --evaluate or engines.cine.evaluate --cv first")
    return by_fold


def load_whole_cines(source: Path) -> dict[str, list[dict]]:
    """{fold name: whole-cine rows} of a run folder; a report's whole cines belong to its shipped model, not a fold."""
    if source.is_file():
        return {}
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(source.glob("fold*/whole_cines.json"))}


def _error(subject: dict, key: str) -> float | None:
    predicted, reference = subject["predicted"].get(key), subject["reference"].get(key)
    return None if predicted is None or reference is None else float(predicted) - float(reference)


def paired_errors(first: list[dict], second: list[dict], key: str) -> dict:
    """MAE, bias and SD of both sources over the subjects both hold with a value, and the paired difference of
    absolute errors (first - second) with its standard error. n = 0 when no subject pairs."""
    other = {s["subject"]: s for s in second}
    pairs = [(_error(s, key), _error(other[s["subject"]], key)) for s in first if s["subject"] in other]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return {"n": 0}
    a, b = np.array(pairs).T
    difference = np.abs(a) - np.abs(b)
    n = len(pairs)
    return {"n": n, "mae": float(np.abs(a).mean()), "other_mae": float(np.abs(b).mean()),
            "bias": float(a.mean()), "other_bias": float(b.mean()),
            "sd": float(a.std(ddof=1)) if n > 1 else None, "other_sd": float(b.std(ddof=1)) if n > 1 else None,
            "mae_difference": float(difference.mean()),
            "mae_difference_se": float(difference.std(ddof=1) / math.sqrt(n)) if n > 1 else None}


def mean_dice(subjects: list[dict], names: set[str], phase: str, label: str) -> float | None:
    values = [s["dice"][phase][label] for s in subjects if s["subject"] in names and s["dice"][phase][label] is not None]
    return float(np.mean(values)) if values else None


def compare(first: dict[str, list[dict]], second: dict[str, list[dict]]) -> dict:
    """Per fold both sources hold, and pooled over those folds: paired errors and mean Dice on the shared patients.

    Raises ValueError when no fold shares a patient."""
    rows = {}
    for fold in sorted(set(first) & set(second)):
        shared = {s["subject"] for s in first[fold]} & {s["subject"] for s in second[fold]}
        if shared:
            rows[fold] = _row(first[fold], second[fold], shared)
    if not rows:
        raise ValueError("the two sources share no held-out patient in any fold")
    pooled_first = [s | {"subject": f"{fold}/{s['subject']}"} for fold in rows for s in first[fold]]
    pooled_second = [s | {"subject": f"{fold}/{s['subject']}"} for fold in rows for s in second[fold]]
    shared = {s["subject"] for s in pooled_first} & {s["subject"] for s in pooled_second}
    rows["pooled"] = _row(pooled_first, pooled_second, shared)
    return rows


def _row(first: list[dict], second: list[dict], shared: set[str]) -> dict:
    first = [s for s in first if s["subject"] in shared]
    second = [s for s in second if s["subject"] in shared]
    return {"n": len(shared),
            "errors": {key: paired_errors(first, second, key) for key, _ in ERROR_KEYS},
            "dice": {f"{label}_{phase}": [mean_dice(first, shared, phase, label), mean_dice(second, shared, phase, label)]
                     for phase, label in DICE_KEYS}}


def _fmt(value, digits=2, sign=False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def markdown(rows: dict, whole_first: dict[str, list[dict]], whole_second: dict[str, list[dict]],
             names: tuple[str, str]) -> str:
    """The comparison as Markdown: one row per fold and the pooled row; whole cines per fold."""
    lines = [f"First: {names[0]} — second: {names[1]}. Paired on the same held-out ACDC patients; MAE first vs second "
             f"(mean difference of absolute errors ± SE; negative: the first is closer).", "",
             "| fold | n | " + " | ".join(f"{name} MAE" for _, name in ERROR_KEYS)
             + " | LVEF bias ± SD | LV mass bias | Dice myo ED / ES | Dice RV ED / ES |",
             "|---" * (len(ERROR_KEYS) + 6) + "|"]
    for fold, row in rows.items():
        cells = []
        for key, _ in ERROR_KEYS:
            e = row["errors"][key]
            cells.append("—" if not e["n"] else f"{_fmt(e['mae'])} vs {_fmt(e['other_mae'])} "
                                                 f"({_fmt(e['mae_difference'], sign=True)} ± {_fmt(e['mae_difference_se'])})")
        ef, mass, dice = row["errors"]["lv_ef_percent"], row["errors"]["lv_mass_g"], row["dice"]
        cells.append("—" if not ef["n"] else f"{_fmt(ef['bias'], 1, True)} ± {_fmt(ef['sd'], 1)} vs "
                                              f"{_fmt(ef['other_bias'], 1, True)} ± {_fmt(ef['other_sd'], 1)}")
        cells.append("—" if not mass["n"] else f"{_fmt(mass['bias'], 1, True)} vs {_fmt(mass['other_bias'], 1, True)} g")
        for label in ("lv_myocardium", "rv_blood_pool"):
            ed, es = dice[f"{label}_ED"], dice[f"{label}_ES"]
            cells.append(f"{_fmt(ed[0], 3)} / {_fmt(es[0], 3)} vs {_fmt(ed[1], 3)} / {_fmt(es[1], 3)}")
        lines.append(f"| {fold} | {row['n']} | " + " | ".join(cells) + " |")
    for title, whole in ((names[0], whole_first), (names[1], whole_second)):
        if not whole:
            continue
        lines += ["", f"Whole cines, {title} (ED / ES phase chosen vs reader's; LVEF vs reference):", "",
                  "| fold | " + " | ".join(r["subject"] for r in next(iter(whole.values()))) + " |",
                  "|---" * (1 + len(next(iter(whole.values())))) + "|"]
        for fold, cines in whole.items():
            lines.append(f"| {fold} | " + " | ".join(
                f"{r['ed_phase']}/{r['es_phase']} vs {r['reference_ed_phase']}/{r['reference_es_phase']}; "
                f"{_fmt(r['lv_ef_percent'], 1)} vs {_fmt(r['reference_lv_ef_percent'], 1)}" for r in cines) + " |")
    return "\n".join(lines)


def evaluate_missing(datasets: Path, run_dir: Path, threads: int) -> None:
    """Held-out results (engines.cine.evaluate.evaluate_cv, cached per fold) and whole cines of every finished fold."""
    from engines.cine.evaluate import TorchFoldModel, evaluate_cv, evaluate_whole_cines, fold_status

    evaluate_cv(datasets, run_dir, threads)
    for checkpoint in fold_status(run_dir)[0]:
        whole = checkpoint.parent / "whole_cines.json"
        if not whole.is_file():
            whole.write_text(json.dumps(evaluate_whole_cines(datasets, TorchFoldModel(checkpoint, threads)), default=float))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="run folder or evaluation.json")
    parser.add_argument("--against", type=Path, required=True, help="run folder or evaluation.json")
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    parser.add_argument("--evaluate", action="store_true", help="evaluate finished folds of run folders first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    for source in (args.first, args.against):
        if not source.exists():
            parser.error(f"{source} does not exist")
        if args.evaluate and source.is_dir():
            evaluate_missing(args.datasets, source, args.threads)
    try:
        rows = compare(load_subjects(args.first), load_subjects(args.against))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"compare: {error}")
    print(markdown(rows, load_whole_cines(args.first), load_whole_cines(args.against), (str(args.first), str(args.against))))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
