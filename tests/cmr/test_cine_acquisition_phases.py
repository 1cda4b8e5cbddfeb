"""The acquisition phase of each phase a cine volume keeps (break41a F1), and a cine slice re-acquired later in its own
series (break41a F5), on the real Sunnybrook SCD0000101 cine (series 300: 12 slices x 20 phases)."""
from __future__ import annotations

import copy
import warnings

import pytest
from pydicom.uid import generate_uid

from dicomnode.cmr import understand_study
from test_cmr_cine_phases import _cine_volume, _slice_and_phase, scd101_headers


@pytest.fixture()
def scd101(datasets):
    """Copies of the SCD0000101 cine's headers (series 300) to change."""
    with warnings.catch_warnings():  # Sunnybrook UIDs have leading-zero components; pydicom warns on every read
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        return scd101_headers(datasets)


def test_a_phase_left_out_for_one_missing_image_keeps_the_acquisition_numbers(scd101):
    # the image at slice 7, phase 8 lost in transfer: phase 8 is left out at every slice, phase 9 stays phase 9
    where = _slice_and_phase(scd101)
    _, volume = _cine_volume([h for h in scd101 if where[id(h)] != (6, 7)])
    assert volume.pixels.shape[:2] == (19, 12)
    assert volume.phase_numbers == [*range(1, 8), *range(9, 21)] and volume.acquired_phases == 20
    assert volume.acquisition_phase_numbers()[7] == 9
    # 20 phases were sent: no "19 of 20 cardiac phases present", the phase left out is named on its own
    assert not any("cardiac phases present" in w for w in volume.warnings), volume.warnings
    assert any(w.startswith("cardiac phase 8 of 20") and "left out at every slice" in w for w in volume.warnings)
    phase_of = {h.sop_instance_uid: where[id(h)][1] for h in scd101}
    assert [phase_of[row[0].sop_instance_uid] + 1 for row in volume.frames] == volume.phase_numbers


def test_a_whole_cine_numbers_its_phases_from_1(scd101):
    _, volume = _cine_volume(scd101)
    assert volume.phase_numbers == list(range(1, 21)) and volume.acquired_phases == 20


def _repeat_of_slice(headers, slice_index, *, time="235959", description="cine sax repeat", drop=0):
    """Copies of the images of one slice as a series of their own (new UIDs, SeriesNumber 301) acquired at `time`."""
    where = _slice_and_phase(headers)
    series_uid = generate_uid()
    originals = sorted((h for h in headers if where[id(h)][0] == slice_index), key=lambda h: where[id(h)][1])
    copies = []
    for header in originals[:len(originals) - drop]:
        clone = copy.copy(header)
        clone.dataset = copy.deepcopy(header.dataset)
        clone.sop_instance_uid = clone.dataset.SOPInstanceUID = generate_uid()
        clone.series_instance_uid = clone.dataset.SeriesInstanceUID = series_uid
        clone.dataset.SeriesNumber, clone.dataset.SeriesDescription = 301, description
        clone.dataset.SeriesTime = clone.dataset.AcquisitionTime = time
        copies.append(clone)
    return originals, copies


def _cine_warnings(study):
    series = study.preferred("cine", "sax")
    return series, study.load_volume(series)


def test_a_cine_slice_re_acquired_later_in_its_own_series_replaces_that_slice(scd101):
    originals, repeat = _repeat_of_slice(scd101, 6)
    study = understand_study(scd101 + repeat)
    series, volume = _cine_warnings(study)
    assert volume.pixels.shape[:2] == (20, 12)
    used = {ref.sop_instance_uid for row in volume.frames for ref in row}
    assert {h.sop_instance_uid for h in repeat} <= used
    assert not used & {h.sop_instance_uid for h in originals}
    warning = next(w for w in volume.warnings if "re-acquired" in w)
    assert 'series 301 "cine sax repeat" (20 images) used in place of the 20 images of series 300' in warning
    assert warning.endswith("the later acquisition wins")
    replaced = [s for s in study.series if s is not series and s.series_number == 300]
    assert replaced and any("replaced in their stack" in note and "not used" in note for note in replaced[0].notes)


@pytest.mark.parametrize("time, drop, why", [("000001", 0, "it was not acquired later"),
                                             ("235959", 2, "it holds 18 images against 20")])
def test_a_cine_slice_series_that_cannot_replace_its_slice_is_named_not_used(scd101, time, drop, why):
    originals, repeat = _repeat_of_slice(scd101, 6, time=time, drop=drop)
    study = understand_study(scd101 + repeat)
    series, volume = _cine_warnings(study)
    used = {ref.sop_instance_uid for row in volume.frames for ref in row}
    assert {h.sop_instance_uid for h in originals} <= used and not used & {h.sop_instance_uid for h in repeat}
    warning = next(w for w in volume.warnings if "acquired again" in w)
    assert 'series 301 "cine sax repeat": not used, as ' + why in warning
    assert warning.endswith("series 300 is measured at that position")
    single = next(s for s in study.series if s.series_number == 301)
    assert warning in single.notes


def test_a_phase_missing_at_every_slice_keeps_the_acquisition_numbers(scd101):
    # an export that dropped phase 8 at every slice: equal counts, CardiacNumberOfImages 20 - phase 9 stays phase 9,
    # placed by TriggerTime on the 40 ms step of the phases present x 20
    where = _slice_and_phase(scd101)
    _, volume = _cine_volume([h for h in scd101 if where[id(h)][1] != 7])
    assert volume.pixels.shape[:2] == (19, 12)
    assert volume.phase_numbers == [*range(1, 8), *range(9, 21)] and volume.acquired_phases == 20
    assert volume.acquisition_phase_numbers()[7] == 9
    assert "19 of 20 cardiac phases present (CardiacNumberOfImages 20)" in volume.warnings
    placed = next(w for w in volume.warnings if w.startswith("cardiac phase(s) 8 of 20"))
    assert "median TriggerTime step" in placed
    phase_of = {h.sop_instance_uid: where[id(h)][1] for h in scd101}
    assert [phase_of[row[0].sop_instance_uid] + 1 for row in volume.frames] == volume.phase_numbers


def test_an_ed_es_export_keeps_the_acquisition_numbers_by_the_rr_interval(scd101):
    # phases 1 and 9 of 20 only: one TriggerTime step of 8 phases tells nothing, NominalInterval / 20 does
    where = _slice_and_phase(scd101)
    _, volume = _cine_volume([h for h in scd101 if where[id(h)][1] in (0, 8)])
    assert volume.phase_numbers == [1, 9] and volume.acquired_phases == 20 and volume.declared_phases == 20
    assert "2 of 20 cardiac phases present (CardiacNumberOfImages 20)" in volume.warnings
    assert any(w.startswith("cardiac phase(s) 2, 3, 4, 5, 6, 7, 8 of 20") and "RR interval" in w
               for w in volume.warnings), volume.warnings


def test_an_ed_es_export_without_rr_is_numbered_by_temporal_position_identifier(scd101):
    where = _slice_and_phase(scd101)
    kept = [h for h in scd101 if where[id(h)][1] in (0, 8)]
    for header in kept:
        header.dataset.TemporalPositionIdentifier = where[id(header)][1] + 1
        for keyword in ("NominalInterval", "HeartRate"):
            if keyword in header.dataset:
                delattr(header.dataset, keyword)
    _, volume = _cine_volume(kept)
    assert volume.phase_numbers == [1, 9] and volume.acquired_phases == 20
    assert any("TemporalPositionIdentifier" in w for w in volume.warnings if w.startswith("cardiac phase(s)"))


def test_an_ed_es_export_without_rr_or_temporal_index_stays_positional(scd101):
    # nothing tells where the two phases lie in the cycle: numbered 1 and 2 of the 2 sent, the 20 declared named
    where = _slice_and_phase(scd101)
    kept = [h for h in scd101 if where[id(h)][1] in (0, 8)]
    for header in kept:
        for keyword in ("NominalInterval", "HeartRate"):
            if keyword in header.dataset:
                delattr(header.dataset, keyword)
    _, volume = _cine_volume(kept)
    assert volume.phase_numbers == [1, 2] and volume.acquired_phases == 2
    assert "2 of 20 cardiac phases present (CardiacNumberOfImages 20)" in volume.warnings
    assert not any(w.startswith("cardiac phase(s)") for w in volume.warnings)


def test_trigger_times_are_placed_on_the_declared_grid():
    # a first trigger delay under 0.7 of a step is phase 1; a time off the grid or past the cycle places nothing
    from dicomnode.cmr.volume import _grid_numbers
    assert _grid_numbers([20.0, 60.0, 140.0], 40.0, 20) == [1, 2, 4]
    assert _grid_numbers([0.0, 320.0], 40.0, 20) == [1, 9]
    assert _grid_numbers([60.0, 100.0], 40.0, 20) == [2, 3]
    assert _grid_numbers([20.0, 80.0], 40.0, 20) is None
    assert _grid_numbers([20.0, 820.0], 40.0, 20) is None


@pytest.mark.parametrize("repeated", [2, 6])
def test_a_re_acquired_slice_replaces_its_slice_when_an_image_is_missing_elsewhere(scd101, repeated):
    # slice 7 lost its phase 8 image; a later repeat of slice 3 (20 images) still replaces slice 3, and a repeat of
    # slice 7 itself (the full 20) replaces the short slice, so no phase is left out
    where = _slice_and_phase(scd101)
    kept = [h for h in scd101 if where[id(h)] != (6, 7)]
    originals, repeat = _repeat_of_slice(scd101, repeated)
    study = understand_study(kept + repeat)
    series, volume = _cine_warnings(study)
    used = {ref.sop_instance_uid for row in volume.frames for ref in row}
    # the repeat of slice 3 loses its phase 8 with every slice (phase 8 is missing at slice 7)
    assert len(used & {h.sop_instance_uid for h in repeat}) == (20 if repeated == 6 else 19)
    assert not used & {h.sop_instance_uid for h in originals}
    assert any("re-acquired" in w and "series 301" in w for w in volume.warnings), volume.warnings
    assert volume.pixels.shape[:2] == ((20 if repeated == 6 else 19), 12)
    assert volume.acquired_phases == 20


def test_a_short_repeat_beside_a_stack_with_a_missing_image_is_named_not_used(scd101):
    where = _slice_and_phase(scd101)
    kept = [h for h in scd101 if where[id(h)] != (6, 7)]
    originals, repeat = _repeat_of_slice(kept, 2, drop=3)
    study = understand_study(kept + repeat)
    series, volume = _cine_warnings(study)
    used = {ref.sop_instance_uid for row in volume.frames for ref in row}
    assert not used & {h.sop_instance_uid for h in repeat}
    warning = next(w for w in volume.warnings if "acquired again" in w)
    assert "it holds 17 images against 20 (cardiac phases) at each slice of the stack" in warning
    assert warning in next(s for s in study.series if s.series_number == 301).notes


def test_the_volume_carries_each_slice_s_rr_interval(scd101):
    """break42b F5: each slice's RR interval (NominalInterval, else HeartRate) reaches the volume, in slice order, so
    the cine can say when it varies between slices (cine_metrics.rr_variation_note)."""
    where = _slice_and_phase(scd101)
    for header in scd101:
        slice_index = where[id(header)][0]
        header.dataset.NominalInterval = 700 + 40 * slice_index
        if slice_index == 3:  # HeartRate only at this slice: 60000 / 75 = 800 ms
            del header.dataset.NominalInterval
            header.dataset.HeartRate = 75
    _, volume = _cine_volume(scd101)
    order = sorted({where[id(h)][0] for h in scd101})
    by_uid = {h.sop_instance_uid: where[id(h)][0] for h in scd101}
    slice_of = [by_uid[ref.sop_instance_uid] for ref in volume.frames[0]]
    expected = [800.0 if k == 3 else 700.0 + 40 * k for k in slice_of]
    assert volume.slice_rr_ms == pytest.approx(expected) and len(order) == len(volume.slice_rr_ms)
