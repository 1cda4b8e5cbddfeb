"""Cine training recipe: stratified subject-level folds, checkpoint-resume, bf16 only where the CPU has it."""
import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.cine import train
from engines.cine.augment import augment_batch
from engines.cine.data import (BIT, CANVAS_SIZE, LabelledSlice, acdc_folds, build_canvas, load_acdc_png, load_sunnybrook,
                               pair_first_phase, stack_neighbours, sunnybrook_stack_positions)
from dicomnode.labels import Label


def test_acdc_folds_are_disjoint_stratified_and_cover_all_100():
    folds = acdc_folds(5)
    flat = [p for fold in folds for p in fold]
    assert len(flat) == 100 and len(set(flat)) == 100
    for fold in folds:
        numbers = [int(p[-3:]) for p in fold]
        assert [sum((n - 1) // 20 == g for n in numbers) for g in range(5)] == [4, 4, 4, 4, 4]
    assert acdc_folds(5) == folds  # fixed seed
    with pytest.raises(ValueError, match="divide"):
        acdc_folds(3)


def test_bf16_only_with_native_support(tmp_path):
    plain = tmp_path / "cpuinfo"
    plain.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    amx = tmp_path / "cpuinfo_amx"
    amx.write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    assert not train.cpu_has_native_bf16(plain)
    assert train.cpu_has_native_bf16(amx)
    assert not train.cpu_has_native_bf16(tmp_path / "missing")


def _data(n=6):
    rng = np.random.default_rng(0)
    images = rng.random((n, CANVAS_SIZE, CANVAS_SIZE)).astype(np.float32) * 100
    allowed = np.full((n, CANVAS_SIZE, CANVAS_SIZE), BIT[Label.BACKGROUND], np.uint8)
    allowed[:, 80:110, 80:110] = BIT[Label.LV_BLOOD_POOL]
    subjects = np.array(["patient001", "patient002", "patient003", "SCD0000401", "Case3002", "patient004"])
    sources = np.array(["acdc", "acdc", "acdc", "sunnybrook", "myops", "acdc"])
    basal = np.array([True, False, False, False, False, False])
    return images, allowed, subjects, sources, basal


def _args(out: Path, steps: int, context: str = "none", sunnybrook_weight: float = 4.0, myops_weight: float = 1.0,
          dice_weight: float = 1.0, basal_weight: float = 1.0):
    return argparse.Namespace(out=out, steps=steps, save_every=1, batch=2, lr=1e-3, threads=1, seed=1,
                              sunnybrook_weight=sunnybrook_weight, myops_weight=myops_weight, context=context,
                              dice_weight=dice_weight, basal_weight=basal_weight)


def test_a_stopped_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "WIDTHS", (4, 8))
    torch.manual_seed(0)
    data = _data()
    path = train.train_one("fold0", ["patient004"], data, _args(tmp_path, 2), torch.device("cpu"))
    first = torch.load(path, weights_only=False)
    assert first["iterations"] == 2 and first["final"]
    assert "patient004" in first["test_subjects"] and "patient004" not in first["train_subjects"]
    assert {"Case3002", "SCD0000401"} <= set(first["train_subjects"])
    # a longer budget continues from iteration 2 (model, optimiser, sampler) instead of starting over
    path = train.train_one("fold0", ["patient004"], data, _args(tmp_path, 4), torch.device("cpu"))
    second = torch.load(path, weights_only=False)
    assert second["iterations"] == 4 and second["optimiser"]["state"][0]["step"].item() == 4
    assert first["history"] == [] and second["history"] == [{"iterations": 2, "steps": 2, "continued_to": 4}]
    assert not torch.equal(first["state_dict"]["head.weight"], second["state_dict"]["head.weight"])
    # a finished run is not trained again
    train.train_one("fold0", ["patient004"], data, _args(tmp_path, 4), torch.device("cpu"))
    assert torch.load(path, weights_only=False)["elapsed_s"] == second["elapsed_s"]


def test_the_dice_weight_scales_only_the_dice_term():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    allowed = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 8, 8)), 4).permute(0, 3, 1, 2).float()
    allowed[0, :, :2] = 1.0  # partly labelled pixels: no Dice there, only the marginal cross-entropy
    ce_only = train.partial_label_loss(logits, allowed, dice_weight=0.0)
    full, half = train.partial_label_loss(logits, allowed), train.partial_label_loss(logits, allowed, dice_weight=0.5)
    assert float(full) > float(half) > float(ce_only) > 0
    assert torch.allclose(full - ce_only, 2 * (half - ce_only), atol=1e-6)


def test_the_dice_weight_is_recorded_and_a_change_of_it_kept_in_the_history(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "WIDTHS", (4, 8))
    data = _data()
    path = train.train_one("fold0", ["patient004"], data, _args(tmp_path, 1), torch.device("cpu"))
    assert torch.load(path, weights_only=False)["dice_weight"] == 1.0
    path = train.train_one("fold0", ["patient004"], data, _args(tmp_path, 2, dice_weight=0.25), torch.device("cpu"))
    saved = torch.load(path, weights_only=False)
    assert saved["dice_weight"] == 0.25
    assert {"iterations": 1, "dice_weight": 1.0, "dice_weight_from_here": 0.25} in saved["history"]
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "run"), "--dice-weight", "-1"])
    assert "--dice-weight must be >= 0" in capsys.readouterr().err


def test_a_run_resumed_under_another_precision_records_where_it_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "WIDTHS", (4, 8))
    data = _data()
    monkeypatch.setattr(train, "autocast_dtype", lambda device: None)
    train.train_one("fold0", ["patient004"], data, _args(tmp_path, 1), torch.device("cpu"))
    monkeypatch.setattr(train, "autocast_dtype", lambda device: torch.bfloat16)
    path = train.train_one("fold0", ["patient004"], data, _args(tmp_path, 2), torch.device("cpu"))
    saved = torch.load(path, weights_only=False)
    assert saved["autocast"] == "torch.bfloat16"
    assert {"iterations": 1, "autocast": "None", "autocast_from_here": "torch.bfloat16"} in saved["history"]
    path = train.train_one("fold0", ["patient004"], data, _args(tmp_path, 3), torch.device("cpu"))
    assert sum("autocast_from_here" in entry for entry in torch.load(path, weights_only=False)["history"]) == 1


def test_a_source_weighted_zero_is_not_training_data(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "WIDTHS", (4, 8))
    path = train.train_one("fold0", ["patient004"], _data(), _args(tmp_path, 1, sunnybrook_weight=0, myops_weight=0),
                           torch.device("cpu"))
    assert set(torch.load(path, weights_only=False)["train_subjects"]) == {"patient001", "patient002", "patient003"}


def test_the_source_weights_are_recorded_and_a_resume_under_others_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "WIDTHS", (4, 8))
    path = train.train_one("fold0", ["patient004"], _data(), _args(tmp_path, 1, myops_weight=0.3), torch.device("cpu"))
    assert torch.load(path, weights_only=False)["sampling_weights"] == {"sunnybrook": 4.0, "myops": 0.3, "acdc_basal": 1.0}
    with pytest.raises(SystemExit, match="sampling weights"):
        train.train_one("fold0", ["patient004"], _data(), _args(tmp_path, 2, myops_weight=1.0), torch.device("cpu"))
    path = train.train_one("fold0", ["patient004"], _data(), _args(tmp_path, 2, myops_weight=0.3), torch.device("cpu"))
    assert torch.load(path, weights_only=False)["iterations"] == 2


def test_es_slices_get_the_ed_image_of_the_same_slice_as_first_phase_context():
    def item(subject, phase, z, value):
        return LabelledSlice(subject, "acdc", phase, z, np.full((40, 50), value, np.float32),
                             np.full((40, 50), BIT[Label.BACKGROUND], np.uint8), (1.5, 1.5), 8.0)

    slices = pair_first_phase([item("p1", "ED", 0, 1), item("p1", "ES", 0, 2), item("p1", "ES", 1, 3),
                               item("p2", "ED", 0, 4), item("p2", "ES", 0, 5)])
    assert slices[0].first_phase is None  # ED is its own first phase
    assert slices[1].first_phase[0, 0] == 1 and slices[4].first_phase[0, 0] == 4
    assert slices[2].first_phase is None  # no ED image of that slice: it stays its own context
    images, _, context = build_canvas(slices, 1.5, 64, first_phase=True)
    assert np.array_equal(context[0], images[0]) and np.array_equal(context[2], images[2])
    assert np.array_equal(context[1], images[0]) and np.array_equal(context[4], images[3])


def test_both_channels_get_the_same_spatial_transform():
    rng = np.random.default_rng(2)
    canvas = np.zeros((4, 2, CANVAS_SIZE, CANVAS_SIZE), np.float32)
    canvas[:, :, 70:120, 60:100] = 300.0
    canvas += rng.random(canvas.shape).astype(np.float32)
    canvas[:, 1] *= 3.0  # another intensity scale: each channel is normalised on its own
    allowed = np.full((4, CANVAS_SIZE, CANVAS_SIZE), BIT[Label.BACKGROUND], np.uint8)
    x, target = augment_batch(torch.from_numpy(canvas), torch.from_numpy(allowed), 96, 4, torch.Generator().manual_seed(3))
    assert x.shape == (4, 2, 96, 96) and target.shape == (4, 4, 96, 96)
    bright = x > 0.5
    overlap = (bright[:, 0] & bright[:, 1]).sum() / bright[:, 0].sum()
    assert overlap > 0.97  # the same rotation, scale, flip, shift and deformation for the slice and its context
    assert torch.allclose(x.mean(dim=(2, 3)), torch.zeros(4, 2), atol=1e-4)


@pytest.mark.parametrize("context,channels", [("first_phase", 2), ("neighbours", 3)])
def test_a_context_run_has_its_input_channels_and_refuses_to_mix(tmp_path, monkeypatch, context, channels):
    monkeypatch.setattr(train, "WIDTHS", (4, 8))
    images, allowed, subjects, sources, basal = _data()
    data = (np.stack([images] + [images[::-1]] * (channels - 1), axis=1), allowed, subjects, sources, basal)
    path = train.train_one("fold0", ["patient004"], data, _args(tmp_path, 2, context), torch.device("cpu"))
    saved = torch.load(path, weights_only=False)
    assert saved["in_channels"] == channels and saved["context"] == context
    assert saved["state_dict"]["encoders.0.0.weight"].shape[1] == channels
    with pytest.raises(SystemExit, match=f"trained with --context {context}"):
        train.train_one("fold0", ["patient004"], (images, allowed, subjects, sources, basal), _args(tmp_path, 4),
                        torch.device("cpu"))


def test_canvas_cache_survives_two_folds_building_it_at_once(tmp_path, monkeypatch):
    """Folds started side by side in one run folder both build the cache; the second to finish must not fail."""
    class Slice:
        def __init__(self, subject):
            self.subject, self.source, self.phase, self.z = subject, "acdc", "ED", 0
            self.allowed = np.zeros((4, 4), np.uint8)

    monkeypatch.setattr(train, "training_slices", lambda datasets, acdc, **kwargs: [Slice("patient001"), Slice("patient002")])
    monkeypatch.setattr(train, "build_canvas", lambda slices, spacing, size, **context: (
        np.full((len(slices), 4, 4), 7, np.float32), np.ones((len(slices), 4, 4, 3), bool)))
    real_savez, nested = np.savez, []

    def savez_while_another_fold_finishes_first(file, **arrays):
        real_savez(file, **arrays)
        if not nested:
            nested.append(None)
            nested[0] = train.load_cache(tmp_path / "datasets", tmp_path / "run")

    monkeypatch.setattr(train.np, "savez", savez_while_another_fold_finishes_first)
    images, allowed, subjects, sources, basal = train.load_cache(tmp_path / "datasets", tmp_path / "run")
    assert images.shape == (2, 4, 4) and list(subjects) == ["patient001", "patient002"]
    assert nested and nested[0][0].shape == (2, 4, 4)
    left = [p.name for p in (tmp_path / "run").iterdir()]
    assert len(left) == 1 and left[0].startswith("canvas_cache_") and left[0].endswith(".npz")
    assert "partial" not in left[0]
    cached = train.load_cache(tmp_path / "datasets", tmp_path / "run")
    assert np.array_equal(cached[0], images)


def test_myops_wall_borders_become_partial_labels_of_the_two_classes_that_meet_there():
    from engines.cine.data import BIT, soften_wall_borders

    labels = np.zeros((32, 32), np.uint8)
    rr, cc = np.mgrid[:32, :32]
    radius = np.hypot(rr - 16, cc - 16)
    labels[radius < 12] = Label.LV_MYOCARDIUM
    labels[radius < 6] = Label.LV_BLOOD_POOL
    labels[:, :3] = Label.RV_BLOOD_POOL
    allowed = np.vectorize(lambda v: BIT[int(v)])(labels).astype(np.uint8)
    assert soften_wall_borders(allowed, 0) is allowed
    soft = soften_wall_borders(allowed, 2)
    myo, pool = BIT[Label.LV_MYOCARDIUM], BIT[Label.LV_BLOOD_POOL]
    assert soft[16, 16] == pool and soft[16, 16 + 9] == myo  # centre of the pool and of the wall: as labelled
    assert soft[16, 16 + 5] == pool | myo and soft[16, 16 + 6] == pool | myo  # either side of the inner border
    assert soft[16, 16 + 11] & myo and soft[16, 16 + 11] & BIT[Label.BACKGROUND]  # inside the outer border
    assert soft[16, 16 + 12] == BIT[Label.BACKGROUND] | myo  # just outside it: its own class or myocardium
    assert soft[0, 0] == BIT[Label.RV_BLOOD_POOL] and soft[16, 31] == BIT[Label.BACKGROUND]  # far away: unchanged
    assert (soft & allowed).all() == (allowed > 0).all()  # every pixel keeps its labelled class


# ------------------------------------------------------------------ 2.5-D: neighbouring slices as channels
def test_stack_neighbours_repeat_the_slice_at_either_end():
    stack = np.arange(3)[:, None, None] * np.ones((3, 4, 5), np.float32)
    assert [(a[0, 0], b[0, 0]) for a, b in (stack_neighbours(stack, z) for z in range(3))] == [(0, 1), (0, 2), (1, 2)]
    single = stack[:1]
    assert all(np.array_equal(n, single[0]) for n in stack_neighbours(single, 0))


def test_neighbours_canvas_resamples_each_neighbour_like_its_slice():
    def item(z, value, neighbours):
        return LabelledSlice("p1", "acdc", "ED", z, np.full((40, 50), value, np.float32),
                             np.full((40, 50), BIT[Label.BACKGROUND], np.uint8), (1.5, 1.5), 8.0, neighbours=neighbours)

    plane = lambda v: np.full((40, 50), v, np.float32)
    slices = [item(0, 1.0, (plane(1.0), plane(2.0))), item(1, 2.0, (plane(1.0), plane(3.0))), item(2, 3.0, None)]
    images, _, around = build_canvas(slices, 1.5, 64, neighbours=True)
    assert around.shape == (3, 2, 64, 64)
    assert np.array_equal(around[0, 1], images[1]) and np.array_equal(around[1, 0], images[0])
    assert np.array_equal(around[2, 0], images[2]) and np.array_equal(around[2, 1], images[2])  # none set: itself
    with pytest.raises(ValueError, match="one context"):
        build_canvas(slices, 1.5, 64, first_phase=True, neighbours=True)


def test_swap_neighbours_swaps_previous_and_next_in_about_half_the_batch():
    x = torch.arange(3.0).view(1, 3, 1, 1).expand(400, 3, 2, 2).clone()
    out = train.swap_neighbours(x, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], x[:, 0])
    swapped = out[:, 1, 0, 0] == 2
    assert torch.equal(out[swapped][:, 2], torch.ones_like(out[swapped][:, 2]))
    assert torch.equal(out[~swapped], x[~swapped])
    assert 150 < int(swapped.sum()) < 250


def test_acdc_slices_carry_their_stack_neighbours(datasets):
    slices = [s for s in load_acdc_png(datasets, {"patient002"}) if s.phase == "ED"]
    by_z = {s.z: s for s in slices}
    assert sorted(by_z) == list(range(len(slices))) and len(slices) > 3
    middle = by_z[2]
    assert np.array_equal(middle.neighbours[0], by_z[1].image) and np.array_equal(middle.neighbours[1], by_z[3].image)
    assert np.array_equal(by_z[0].neighbours[0], by_z[0].image)  # the first slice has no previous one
    last = by_z[len(slices) - 1]
    assert np.array_equal(last.neighbours[1], last.image)


def test_sunnybrook_contoured_slices_get_their_neighbours_from_the_whole_series(datasets):
    """The contoured frames are single images; their neighbours come from the same phase of the series' stack."""
    patient = "SCD0000401"
    slices = load_sunnybrook(datasets, {patient})
    pixels, where = sunnybrook_stack_positions(datasets, patient)
    assert slices and all(s.neighbours is not None for s in slices)
    inner = [s for s in slices if 0 < where[s.z][1] < pixels.shape[1] - 1]
    assert inner
    for item in inner:
        phase, z = where[item.z]
        assert np.array_equal(pixels[phase, z], item.image)
        assert np.array_equal(item.neighbours[0], pixels[phase, z - 1])
        assert np.array_equal(item.neighbours[1], pixels[phase, z + 1])


def test_basal_slices_are_the_two_nearest_the_base_of_each_acdc_stack_that_hold_lv():
    from engines.cine.data import LabelledSlice, basal_slices

    def item(subject, phase, z, holds_lv, source="acdc"):
        allowed = np.full((8, 8), BIT[Label.BACKGROUND], np.uint8)
        if holds_lv:
            allowed[2:5, 2:5] = BIT[Label.LV_MYOCARDIUM]
        return LabelledSlice(subject, source, phase, z, np.zeros((8, 8), np.float32), allowed, (1.0, 1.0), 8.0)

    slices = [item("patient001", "ED", 3, True), item("patient001", "ED", 0, False), item("patient001", "ED", 1, True),
              item("patient001", "ED", 2, True), item("patient001", "ES", 2, True), item("SCD0000401", "ED", 0, True,
              "sunnybrook"), item("Case3002", "C0", 0, True, "myops")]
    assert basal_slices(slices).tolist() == [False, False, True, True, True, False, False]
    assert basal_slices(slices, count=0).sum() == 0
    with pytest.raises(ValueError, match="count"):
        basal_slices(slices, count=-1)


def test_the_basal_weight_multiplies_the_sampling_weight_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "WIDTHS", (4, 8))
    drawn = []
    real_multinomial = torch.multinomial

    def recording_multinomial(weights, *args, **kwargs):
        drawn.append(weights.clone())
        return real_multinomial(weights, *args, **kwargs)

    monkeypatch.setattr(train.torch, "multinomial", recording_multinomial)
    path = train.train_one("fold0", ["patient004"], _data(), _args(tmp_path, 1, basal_weight=3.0), torch.device("cpu"))
    # kept: patient001 (basal), 002, 003 (ACDC 1.0), SCD0000401 (Sunnybrook 4.0), Case3002 (MyoPS 1.0)
    assert drawn[0].tolist() == [3.0, 1.0, 1.0, 4.0, 1.0]
    assert torch.load(path, weights_only=False)["sampling_weights"]["acdc_basal"] == 3.0
    with pytest.raises(SystemExit, match="--basal-weight"):
        train.train_one("fold0", ["patient004"], _data(), _args(tmp_path, 2), torch.device("cpu"))


def test_a_run_recorded_before_the_basal_weight_resumes_at_weight_one(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "WIDTHS", (4, 8))
    path = train.train_one("fold0", ["patient004"], _data(), _args(tmp_path, 1), torch.device("cpu"))
    saved = torch.load(path, weights_only=False)
    saved["sampling_weights"] = {"sunnybrook": 4.0, "myops": 1.0}
    torch.save(saved, path)
    assert torch.load(train.train_one("fold0", ["patient004"], _data(), _args(tmp_path, 2), torch.device("cpu")),
                      weights_only=False)["iterations"] == 2


def test_the_widths_are_recorded_and_a_resume_under_others_refused(tmp_path):
    args = _args(tmp_path, 1)
    args.widths = [4, 8, 16]
    path = train.train_one("fold0", ["patient004"], _data(), args, torch.device("cpu"))
    saved = torch.load(path, weights_only=False)
    assert tuple(saved["widths"]) == (4, 8, 16) and saved["state_dict"]["head.weight"].shape[1] == 4
    args.widths, args.steps = [8, 16, 32], 2
    with pytest.raises(SystemExit, match="--widths 4 8 16"):
        train.train_one("fold0", ["patient004"], _data(), args, torch.device("cpu"))


def test_the_widths_option_refuses_more_poolings_than_the_crop_allows(capsys):
    with pytest.raises(SystemExit):
        train.main(["--widths", *["4"] * 9])
    assert "--widths" in capsys.readouterr().err


def _canvas_heart(direction_deg: float, n: int = 24):
    """(n, S, S) canvases at 1.5 mm with a round LV in the middle and an RV 30 mm towards `direction_deg`."""
    import math

    rows, cols = np.mgrid[:CANVAS_SIZE, :CANVAS_SIZE]
    y_mm, x_mm = (rows - CANVAS_SIZE / 2) * 1.5, (cols - CANVAS_SIZE / 2) * 1.5
    allowed = np.full((CANVAS_SIZE, CANVAS_SIZE), BIT[Label.BACKGROUND], np.uint8)
    allowed[np.hypot(y_mm, x_mm) < 18] = BIT[Label.LV_MYOCARDIUM]
    allowed[np.hypot(y_mm, x_mm) < 11] = BIT[Label.LV_BLOOD_POOL]
    theta = math.radians(direction_deg)
    allowed[np.hypot(y_mm + 30 * math.sin(theta), x_mm - 30 * math.cos(theta)) < 10] = BIT[Label.RV_BLOOD_POOL]
    allowed = np.repeat(allowed[None], n, axis=0)
    return allowed.astype(np.float32) * 50, allowed


def test_a_pose_window_shows_every_rv_inside_it_and_any_rotation_does_not():
    """Crops sampled with the pose window show each slice's RV inside it (flips included), slices without an RV
    keep any rotation, and without the window the directions cover the circle."""
    from dicomnode.cmr.orientation import rv_direction_deg
    from engines.cine.data import CHANNEL_LABELS, canvas_rv_directions

    images, allowed = _canvas_heart(250.0)
    directions = canvas_rv_directions(allowed, 1.5)
    assert directions == pytest.approx(np.full(len(allowed), 250.0), abs=2)
    window = (42.0, 172.0)

    def shown(planned, seed):
        _, target = augment_batch(torch.from_numpy(images), torch.from_numpy(allowed), 96, 4,
                                  torch.Generator().manual_seed(seed),
                                  directions=None if planned is None else torch.from_numpy(planned),
                                  window_deg=window)
        labels = np.asarray(CHANNEL_LABELS)[target.argmax(dim=1).numpy()]
        return np.array([rv_direction_deg(np.isin(label, (1, 2)), label == 5, (1.5, 1.5)) for label in labels],
                        dtype=float)

    inside = shown(directions, 4)
    assert ((inside > window[0] - 5) & (inside < window[1] + 5)).all(), np.sort(inside)
    anywhere = shown(None, 4)
    assert ((anywhere < window[0] - 5) | (anywhere > window[1] + 5)).sum() >= 6
    unplanned = directions.copy()
    unplanned[::2] = np.nan
    mixed = shown(unplanned, 5)
    assert ((mixed[1::2] > window[0] - 5) & (mixed[1::2] < window[1] + 5)).all()


def test_a_pose_margin_is_recorded_and_a_change_kept_in_the_history(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "WIDTHS", (4, 8))
    images, allowed, subjects, sources, basal = _data()
    allowed[:, 80:110, 115:130] = BIT[Label.RV_BLOOD_POOL]
    data = (images, allowed, subjects, sources, basal)
    args = _args(tmp_path, 2)
    args.pose_margin = 20.0
    path = train.train_one("fold0", ["patient004"], data, args, torch.device("cpu"))
    assert torch.load(path, weights_only=False)["pose_margin_deg"] == 20.0
    path = train.train_one("fold0", ["patient004"], data, _args(tmp_path, 3), torch.device("cpu"))
    saved = torch.load(path, weights_only=False)
    assert saved["pose_margin_deg"] is None
    assert {"iterations": 2, "pose_margin_deg": 20.0, "pose_margin_deg_from_here": None} in saved["history"]


def test_the_distillation_term_is_zero_for_the_teacher_itself_and_trains_only_the_student():
    teacher = torch.randn(2, 4, 8, 8)
    assert train.distillation_loss(teacher.clone(), teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(2, 4, 8, 8, requires_grad=True)
    teacher.requires_grad_(True)
    loss = train.distillation_loss(student, teacher, 2.0)
    loss.backward()
    assert loss.item() > 0 and student.grad.abs().sum() > 0 and teacher.grad is None
    # T^2 scaling: at a higher temperature the soft targets flatten, the factor keeps the term on the same scale
    assert train.distillation_loss(student, teacher, 4.0).item() > 0
    with pytest.raises(ValueError, match="differ in shape"):
        train.distillation_loss(student, teacher[:, :3], 2.0)
    with pytest.raises(ValueError, match="temperature"):
        train.distillation_loss(student, teacher, 0.0)


def test_a_teacher_of_the_same_fold_is_distilled_and_one_of_another_fold_refused(tmp_path):
    teacher_args = _args(tmp_path / "teacher", 1)
    teacher_args.widths = [8, 16]
    train.train_one("fold0", ["patient004"], _data(), teacher_args, torch.device("cpu"))
    train.train_one("fold1", ["patient003"], _data(), teacher_args, torch.device("cpu"))
    args = _args(tmp_path / "student", 2)
    args.widths, args.teacher, args.distill_weight, args.distill_temperature = [4, 8], tmp_path / "teacher", 1.0, 2.0
    path = train.train_one("fold0", ["patient004"], _data(), args, torch.device("cpu"))
    saved = torch.load(path, weights_only=False)
    assert saved["distillation"] == {"teacher": str(tmp_path / "teacher"), "weight": 1.0, "temperature": 2.0}
    # the teacher of fold 1 has seen fold 0's held-out patient: refused (it would leak into the held-out results)
    (tmp_path / "teacher" / "fold1").rename(tmp_path / "teacher" / "fold2")
    with pytest.raises(SystemExit, match="holds out other patients"):
        train.train_one("fold2", ["patient004"], _data(), args, torch.device("cpu"))
    # a run resumed without the teacher (or with another weight) is refused, not silently mixed
    args.teacher, args.distill_weight, args.steps = None, 0.0, 3
    with pytest.raises(SystemExit, match="distillation"):
        train.train_one("fold0", ["patient004"], _data(), args, torch.device("cpu"))


def test_the_teacher_options_go_together(capsys):
    with pytest.raises(SystemExit):
        train.main(["--teacher", "engines/checkpoints/cine_w32", "--steps", "1"])
    assert "go together" in capsys.readouterr().err
