"""The lossy-compression stack warning names the ratios in a few words (break45c #3): dcmtk writes each image's own
LossyImageCompressionRatio, and a cine of 200 JPEG images then has ~200 distinct values."""
from __future__ import annotations

from dicomnode.cmr.source_encoding import Lossy, lossy_note, ratio_summary


def test_many_per_image_ratios_become_a_numeric_range():
    ratios = [f"{5 + i / 97:g}:1" for i in range(200)]  # 5:1 .. 7.05:1, most distinct
    found = [Lossy(r, "ISO_10918_1", "JPEG Baseline (Process 1)") for r in ratios]
    note = lossy_note(found, 200)
    assert "ratio 5-7.05:1, 200 distinct values;" in note
    assert len(note) < 400
    assert "5.01031:1" not in note


def test_few_ratios_are_named_in_numeric_order():
    assert ratio_summary(["5.12:1", "5.1296:1", "10:1", "5.12:1"]) == "5.12:1, 5.1296:1, 10:1"
    assert ratio_summary(["20:1"] * 3) == "20:1"
    assert ratio_summary(["10:1 then 2.5:1"]) == "10:1 then 2.5:1"
    assert ratio_summary(["", ""]) == "not stated"
