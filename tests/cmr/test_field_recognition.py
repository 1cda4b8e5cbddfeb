"""Recognition of short series real sites send (issue 14, review defect 6): an LGE short-axis stack of only 2
slices, a cine holding only its ED and ES phases (CardiacNumberOfImages = 2)."""
from __future__ import annotations

from collections import defaultdict

import pydicom
import pytest

from dicomnode.cmr.grouping import read_header
from dicomnode.cmr.study import understand_study
from tests.data.field_inputs import demo_cine_files, demo_lge_files


def _headers(paths):
    return [read_header(p) for p in paths]


def test_two_parallel_lge_slices_are_a_short_axis_stack():
    psir = [p for p in demo_lge_files() if "PSIR" in pydicom.dcmread(p, stop_before_pixels=True).ImageType]
    study = understand_study(_headers(psir[3:5]))
    series = study.preferred("lge")
    assert series is not None and series.view.value == "sax", [s.summary() for s in study.series]
    assert series.slices == 2
    assert any("2 slices" in note for note in series.notes)


@pytest.mark.parametrize("declared", [2, 25, None])
def test_a_cine_of_only_ed_and_es_is_a_short_axis_cine(declared):
    # whatever the export says in CardiacNumberOfImages: 2, the original 25, or nothing
    by_slice = defaultdict(list)
    for path in demo_cine_files():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if str(ds.SeriesNumber) == "5":
            by_slice[round(float(ds.SliceLocation), 1)].append((float(ds.TriggerTime), path))
    headers = []
    for members in by_slice.values():
        members.sort()
        for trigger, path in (members[0], members[len(members) // 2 - 2]):  # ED and (about) ES
            header = read_header(path)
            if declared is None:
                if "CardiacNumberOfImages" in header.dataset:
                    del header.dataset.CardiacNumberOfImages
            else:
                header.dataset.CardiacNumberOfImages = declared
            headers.append(header)
    study = understand_study(headers)
    series = study.preferred("cine")
    assert series is not None, [s.summary() for s in study.series]
    assert series.view.value == "sax" and series.phases == 2
    assert any("only 2 phases" in note for note in series.notes)
    assert series.sequence.value == "cine"
    expected = "ED and ES phases only" if declared != 25 else "2 of 25 cardiac phases present"
    assert any(expected in line for line in series.sequence.evidence), series.sequence.evidence
