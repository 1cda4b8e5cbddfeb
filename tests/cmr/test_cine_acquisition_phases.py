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
