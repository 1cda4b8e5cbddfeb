"""LGE training recipe: a stopped run resumes from its checkpoint, and a finished run asked for more steps
continues from its weights (the way the shipped fold models were carried from 3000 steps further)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

pytestmark = pytest.mark.torch

FILTERS = (4, 8, 16, 32)


def _cases():
    from engines.lge.data import Case

    rng = np.random.default_rng(0)
    cases = []
    for index, centre in enumerate(("emidec", "myops")):
        labels = np.zeros((2, 64, 64), np.uint8)
        labels[:, 20:44, 20:44] = 2
        labels[:, 26:38, 26:38] = 1
        labels[:, 20:26, 30:40] = 3
        image = rng.normal(100, 10, labels.shape).astype(np.float32) + 60 * (labels == 1) + 90 * (labels == 3)
        cases.append(Case(f"case{index}", image, labels, (1.5, 1.5), 10.0, centre))
    return cases


def _train(folder, steps, log):
    from engines.lge.train import train_run

    return train_run(_cases(), folder, steps, seed=3, device=torch.device("cpu"), log=log, filters=FILTERS,
                     checkpoint_every=1, metadata={"fold": 0})


def _weights(folder):
    return torch.load(folder / "model.pt", weights_only=True)


def _one_step_then_resumed(folder, first: dict, then: dict) -> tuple[dict, dict]:
    """Metadata of a one-step run with the options `first`, and after it is resumed to two steps with `then`."""
    from engines.lge.train import train_run

    torch.set_num_threads(1)
    common = {"seed": 3, "device": torch.device("cpu"), "log": lambda m: None, "filters": FILTERS, "batch_size": 2}
    train_run(_cases(), folder, 1, **common, **first)
    before = _weights(folder)["metadata"]
    train_run(_cases(), folder, 2, **common, **then)
    return before, _weights(folder)["metadata"]


def test_stopped_run_resumes_and_finished_run_continues(tmp_path):
    torch.set_num_threads(1)
    messages: list[str] = []
    folder = tmp_path / "fold0"
    _train(folder, 2, messages.append)
    first = _weights(folder)
    assert first["metadata"]["steps"] == 2 and "history" not in first["metadata"]
    # with its checkpoint the run resumes (model, optimiser, RNG) at step 2
    _train(folder, 3, messages.append)
    assert any("resumed at step 2/3" in m for m in messages)
    history = _weights(folder)["metadata"]["history"]  # the finished 2-step run carried on is recorded
    assert history["continued_at_step"] == 2 and history["optimiser at step 2"].startswith("kept")
    # without a checkpoint (only model.pt kept, as for the shipped members) it continues from the weights
    (folder / "checkpoint.pt").unlink()
    kept = _weights(folder)
    _train(folder, 5, messages.append)
    assert any("continued from model.pt at step 3/5" in m for m in messages)
    continued = _weights(folder)
    assert continued["metadata"]["steps"] == 5
    assert continued["metadata"]["history"]["continued_at_step"] == 3
    name = "net.input_block.conv1.conv.weight"
    assert not torch.equal(kept["state_dict"][name], continued["state_dict"][name])
    # a run that already has the steps asked for is not trained again, and its file is left as it was
    (folder / "checkpoint.pt").unlink()
    before = (folder / "model.pt").stat().st_mtime_ns
    _train(folder, 5, messages.append)
    assert (folder / "model.pt").stat().st_mtime_ns == before
    assert any("already has 5 >= 5 steps" in m for m in messages)


def test_continued_with_a_larger_patch_records_the_earlier_sizes(tmp_path):
    from engines.lge.train import train_run

    torch.set_num_threads(1)
    folder = tmp_path / "fold0"
    common = dict(seed=3, device=torch.device("cpu"), log=lambda _: None, filters=FILTERS, checkpoint_every=1,
                  metadata={"fold": 0})
    train_run(_cases(), folder, 1, patch_size=32, batch_size=2, **common)
    train_run(_cases(), folder, 2, patch_size=48, batch_size=3, **common)
    metadata = _weights(folder)["metadata"]
    assert (metadata["patch_size"], metadata["batch_size"]) == (48, 3)
    assert metadata["history"]["steps 0-1"]["patch_size"] == 32
    assert metadata["history"]["steps 0-1"]["batch_size"] == 2


def test_the_dice_weight_is_recorded_and_a_change_of_it_kept_in_the_history(tmp_path, capsys):
    from engines.lge.train import main, train_run

    torch.set_num_threads(1)
    folder = tmp_path / "fold0"
    common = dict(seed=3, device=torch.device("cpu"), log=lambda _: None, filters=FILTERS, checkpoint_every=1,
                  metadata={"fold": 0}, patch_size=32, batch_size=2)
    train_run(_cases(), folder, 1, **common)
    assert _weights(folder)["metadata"]["dice_weight"] == 1.0
    train_run(_cases(), folder, 2, dice_weight=0.0, **common)
    metadata = _weights(folder)["metadata"]
    assert metadata["dice_weight"] == 0.0 and metadata["history"]["steps 0-1"]["dice_weight"] == 1.0
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "run"), "--dice-weight", "-1"])
    assert "--dice-weight must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [("--patch-size", "40", "multiple of 16"),
                                                  ("--patch-size", "16", "at least 32"),
                                                  ("--batch-size", "1", "at least 2")])
def test_training_refuses_sizes_the_network_cannot_take(tmp_path, capsys, flag, value, message):
    from engines.lge.train import main

    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "run"), flag, value])
    assert message in capsys.readouterr().err


def test_a_time_limit_lowers_the_steps_once_and_records_it(tmp_path, monkeypatch):
    import engines.lge.train as train

    torch.set_num_threads(1)
    monkeypatch.setattr(train, "RATE_PROBE_STEPS", 2)
    messages: list[str] = []
    train.train_run(_cases(), tmp_path / "fold0", 1000, seed=3, device=torch.device("cpu"), log=messages.append,
                    filters=FILTERS, checkpoint_every=1000, batch_size=2, time_limit_s=1e-3)
    metadata = _weights(tmp_path / "fold0")["metadata"]
    # the rate is measured over batches 50-52; nothing more fits in the spent budget, so it ends one batch later
    assert metadata["steps"] == 53
    assert metadata["history"] == {"time_limited_from": 1000, "time_limit_s": 1e-3}
    assert any("1000 -> 53 steps" in m for m in messages)


def test_batches_prepared_by_loader_workers_train_and_are_recorded(tmp_path):
    from engines.lge.train import train_run

    torch.set_num_threads(1)
    train_run(_cases(), tmp_path / "fold0", 2, seed=3, device=torch.device("cpu"), log=lambda m: None,
              filters=FILTERS, batch_size=2, loader_workers=1)
    metadata = _weights(tmp_path / "fold0")["metadata"]
    assert metadata["steps"] == 2 and metadata["loader_workers"] == 1


def test_zoom_probability_zero_keeps_the_model_spacing_and_is_recorded(tmp_path):
    from engines.lge.augment import sample_patch

    image = np.zeros((48, 48), np.float32)
    labels = np.zeros((48, 48), np.uint8)
    labels[14:34, 14:34] = 2  # 400 pixels at the model spacing
    rng = np.random.default_rng(0)

    def areas(probability):  # the patch covers the whole slice wherever it is centred, at any zoom
        return np.array([(sample_patch(image, labels, (1.5, 1.5), 1.5, 192, rng, zoom_probability=probability)[1]
                          > 0).sum() for _ in range(40)])

    assert np.all(np.abs(areas(0.0) - 400) < 40)  # rotation and nearest-neighbour sampling only
    zoomed = areas(1.0)
    assert zoomed.min() < 330 and zoomed.max() > 500  # zoom 0.7-1.4 scales the area 0.5-2x

    first, metadata = _one_step_then_resumed(tmp_path / "fold0", {"zoom_probability": 0.2}, {"zoom_probability": 1.0})
    assert first["zoom_probability"] == 0.2
    assert "zoom_probability" not in metadata
    assert metadata["history"]["zoom_probability at step 1"] == {"was": 0.2, "now": 1.0}


def test_intensity_probability_zero_keeps_the_resampled_intensities_and_is_recorded(tmp_path):
    from engines.lge.augment import sample_patch

    image = np.full((48, 48), 0.5, np.float32)  # a flat slice stays flat through any rotation, zoom and flip
    labels = np.zeros((48, 48), np.uint8)
    labels[14:34, 14:34] = 2
    rng = np.random.default_rng(0)

    def changed(probability):
        return sum(not np.allclose(sample_patch(image, labels, (1.5, 1.5), 1.5, 64, rng,
                                                intensity_probability=probability)[0], 0.5) for _ in range(40))

    assert changed(0.0) == 0
    assert changed(1.0) >= 5  # brightness, bias field, noise, quantisation each touch some patches

    first, metadata = _one_step_then_resumed(tmp_path / "fold0", {"intensity_probability": 0.0}, {})
    assert first["intensity_probability"] == 0.0
    assert "intensity_probability" not in metadata
    assert metadata["history"]["intensity_probability at step 1"] == {"was": 0.0, "now": 1.0}


def test_a_2p5d_run_sees_each_slice_with_its_neighbours_and_cannot_resume_as_2d(tmp_path):
    from engines.lge.augment import sample_patch
    from engines.lge.model import LGESliceUNet, with_neighbours
    from engines.lge.train import SliceSampler, load_model, train_run

    stack = torch.arange(4.0).reshape(1, 1, 4, 1, 1).expand(1, 1, 4, 2, 2)
    np.testing.assert_array_equal(with_neighbours(stack)[0, :, :, 0, 0].numpy(),
                                  [[0, 1, 2, 3], [0, 0, 1, 2], [1, 2, 3, 3]])  # (slice, previous, next)
    # the channels share one spatial transform and one intensity augmentation draw; channel 0 is the 2-D patch
    image = np.random.default_rng(1).normal(size=(48, 48)).astype(np.float32)
    labels = np.zeros((48, 48), np.uint8)
    labels[10:30, 12:20] = 2
    alone = sample_patch(image, labels, (1.2, 1.4), 1.5, 32, np.random.default_rng(5))
    three = sample_patch(np.stack([image, image, -image]), labels, (1.2, 1.4), 1.5, 32, np.random.default_rng(5))
    np.testing.assert_array_equal(alone[1], three[1])
    assert three[0].shape == (3, 32, 32) and np.allclose(three[0][1], three[0][0], atol=1e-5)
    cases = _cases()
    sampler = SliceSampler(cases, np.random.default_rng(0), 32, context=1)
    images, *_ = sampler.batch(4)
    assert images.shape == (4, 3, 32, 32)
    first = sampler.by_centre["emidec"][0][0]
    assert first.shape == (3, 64, 64) and np.array_equal(first[2], sampler.by_centre["emidec"][1][0][0])

    torch.set_num_threads(1)
    folder = tmp_path / "fold0"
    train_run(_cases(), folder, 1, seed=3, device=torch.device("cpu"), log=lambda m: None, filters=FILTERS,
              batch_size=2, context=1)
    model, metadata = load_model(folder / "model.pt")
    assert metadata["context"] == 1 and model.config["context"] == 1
    assert model(torch.zeros(1, 1, 3, 32, 32)).shape == (1, 6, 3, 32, 32)
    assert isinstance(model, LGESliceUNet)
    with pytest.raises(ValueError, match="slice context 1"):
        train_run(_cases(), folder, 2, seed=3, device=torch.device("cpu"), log=lambda m: None, filters=FILTERS,
                  batch_size=2, context=0)


def test_per_sample_dice_is_recorded(tmp_path):
    from engines.lge.train import train_run

    torch.set_num_threads(1)
    train_run(_cases(), tmp_path / "fold0", 1, seed=3, device=torch.device("cpu"), log=lambda m: None,
              filters=FILTERS, batch_size=2, dice_per_sample=True)
    assert _weights(tmp_path / "fold0")["metadata"]["dice_per_sample"] is True


def test_folds_trained_on_one_centre_keep_both_centres_held_out_cases(tmp_path, monkeypatch, capsys):
    import json

    import engines.lge.train as train
    from engines.lge.data import Case

    cases = _cases() + [Case(f"{c.name}b", c.image, c.labels, c.spacing_rc, c.slice_spacing_mm, c.centre)
                        for c in _cases()]
    monkeypatch.setattr(train, "load_cases", lambda: cases)
    common = ["--out", str(tmp_path), "--folds", "2", "--only-folds", "0", "--steps", "1", "--filters", "4,8,16,32",
              "--patch-size", "32", "--batch-size", "2", "--threads", "1"]
    assert train.main(common + ["--fold-centres", "emidec"]) == 0
    metadata = _weights(tmp_path / "fold0")["metadata"]
    held_out = json.loads((tmp_path / "folds.json").read_text())["folds"][0]
    assert metadata["train_centres"] == ["emidec"] and metadata["held_out"] == held_out
    assert {c.centre for c in cases if c.name in held_out} == {"emidec", "myops"}
    assert "1 training cases of ['emidec']" in capsys.readouterr().out  # the other emidec case; no myops case
    with pytest.raises(SystemExit):
        train.main(common + ["--fold-centres", "emidek"])
    assert "no cases of ['emidek']" in capsys.readouterr().err


def test_cine_stacks_fill_their_share_of_each_batch_and_never_teach_scar(tmp_path):
    """Auxiliary cine cases (`--aux-cine-share`): the last patches of every batch, scored with scar and MVO counted
    as myocardium (a cine image does not show infarct), never held out; the share is recorded."""
    from dicomnode.labels import Label
    from engines.lge.data import CINE_LABELLED, Case
    from engines.lge.losses import merge_matrix
    from engines.lge.train import SliceSampler, train_run

    cine = [Case(f"cine{c.name}", c.image, c.labels, c.spacing_rc, c.slice_spacing_mm, "acdc_cine",
                 labelled=CINE_LABELLED) for c in _cases()]
    sampler = SliceSampler(_cases(), np.random.default_rng(0), 32, auxiliary=cine, auxiliary_share=0.25)
    _, _, merges, available = sampler.batch(8)
    scar, mvo, myocardium = int(Label.SCAR), int(Label.MVO), int(Label.LV_MYOCARDIUM)
    assert not available[-2:, scar].any() and available[:6, scar].all()
    assert merges[-1, scar, myocardium] == 1 and merges[-1, mvo, myocardium] == 1 and merges[-1, scar, scar] == 0
    assert torch.equal(merges[0], merge_matrix(_cases()[0].labelled, 6))
    torch.set_num_threads(1)
    train_run(_cases(), tmp_path / "fold0", 1, seed=3, device=torch.device("cpu"), log=lambda m: None,
              filters=FILTERS, batch_size=4, auxiliary=cine, auxiliary_share=0.25)
    metadata = _weights(tmp_path / "fold0")["metadata"]
    assert metadata["auxiliary_cine_share"] == 0.25 and metadata["auxiliary_cine_stacks"] == 2


def test_a_class_that_cannot_be_folded_into_a_labelled_one_is_refused():
    from engines.lge.losses import merge_matrix

    with pytest.raises(ValueError, match="class 2 is not labelled"):
        merge_matrix(frozenset({0, 1}), 6)


def test_acdc_cine_stacks_load_as_auxiliary_cases_in_real_spacing(datasets):
    from engines.lge.data import CINE_LABELLED, load_acdc_cine

    cases = load_acdc_cine(datasets)
    assert len(cases) >= 180 and {c.centre for c in cases} == {"acdc_cine"}
    assert {c.name.rsplit("_", 1)[1] for c in cases} == {"ED", "ES"}
    for case in cases[:: 20]:
        assert case.labelled == CINE_LABELLED and case.image.shape == case.labels.shape
        assert set(np.unique(case.labels)) <= CINE_LABELLED and (case.labels == 2).any()
        assert 0.5 < min(case.spacing_rc) <= max(case.spacing_rc) < 3 and case.slice_spacing_mm >= 5


def _heart(direction_deg: float, spacing_rc=(1.5, 1.5), size: int = 96):
    """A (size, size) slice with a round LV (1, 2) at the centre and an RV (5) 30 mm away towards `direction_deg`."""
    import math

    rows, cols = np.mgrid[:size, :size]
    y_mm, x_mm = (rows - size / 2) * spacing_rc[0], (cols - size / 2) * spacing_rc[1]
    labels = np.zeros((size, size), np.uint8)
    labels[np.hypot(y_mm, x_mm) < 18] = 2
    labels[np.hypot(y_mm, x_mm) < 11] = 1
    theta = math.radians(direction_deg)
    rv_y, rv_x = -30 * math.sin(theta), 30 * math.cos(theta)
    labels[np.hypot(y_mm - rv_y, x_mm - rv_x) < 10] = 5
    return labels.astype(np.float32) * 10, labels


@pytest.mark.parametrize("spacing_rc", [(1.5, 1.5), (1.2, 1.9)])
def test_a_pose_window_puts_the_rv_where_the_node_turns_it_and_any_rotation_does_not(spacing_rc):
    """Patches sampled with the pose window show the stack's RV inside it (flips included; non-square pixels too);
    without it the directions cover the whole circle."""
    from dicomnode.cmr.orientation import rv_direction_deg
    from engines.lge.augment import sample_patch
    from engines.lge.pose import case_direction

    image, labels = _heart(200.0, spacing_rc)
    planned = case_direction(labels[None], spacing_rc)
    assert planned == pytest.approx(200.0, abs=3)
    rng = np.random.default_rng(1)
    window = (42.0, 172.0)
    inside, anywhere = [], []
    for _ in range(60):
        _, patch = sample_patch(image, labels, spacing_rc, 1.5, 96, rng, rv_direction_deg=planned,
                                pose_window_deg=window)
        inside.append(rv_direction_deg(np.isin(patch, (1, 2)), patch == 5, (1.5, 1.5)))
        _, patch = sample_patch(image, labels, spacing_rc, 1.5, 96, rng)
        anywhere.append(rv_direction_deg(np.isin(patch, (1, 2)), patch == 5, (1.5, 1.5)))
    inside = np.array([d for d in inside if d is not None])
    anywhere = np.array([d for d in anywhere if d is not None])
    assert len(inside) > 40 and len(anywhere) > 40
    assert ((inside > window[0] - 5) & (inside < window[1] + 5)).all(), np.sort(inside)
    assert ((anywhere < window[0] - 5) | (anywhere > window[1] + 5)).sum() > 10


def test_a_pose_margin_is_recorded_and_needs_the_plan(tmp_path):
    from engines.lge.train import train_run

    cases = _cases()
    with pytest.raises(ValueError, match="RV directions"):
        train_run(cases, tmp_path / "none", 1, seed=3, device=torch.device("cpu"), log=lambda m: None,
                  filters=FILTERS, pose_margin_deg=20.0)
    train_run(cases, tmp_path / "run", 2, seed=3, device=torch.device("cpu"), log=lambda m: None, filters=FILTERS,
              checkpoint_every=1, pose_margin_deg=20.0, rv_directions={"case1": 180.0})
    metadata = _weights(tmp_path / "run")["metadata"]
    assert metadata["pose_margin_deg"] == 20.0 and metadata["pose_window_deg"] == [42.0, 172.0]
    assert metadata["pose_planned_cases"] == 1
    train_run(cases, tmp_path / "run", 3, seed=3, device=torch.device("cpu"), log=lambda m: None, filters=FILTERS,
              checkpoint_every=1)
    assert _weights(tmp_path / "run")["metadata"]["history"]["pose_margin_deg at step 2"] == {"was": 20.0, "now": None}
