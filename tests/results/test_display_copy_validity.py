"""Display copies are valid MR Image objects whatever the source held (break45c #5, #6): a retired embedded overlay
(60xx,0102 OverlayBitPosition, no 60xx,3000) is not carried over (the MR IOD's Overlay Plane needs OverlayData), and
8-bit pixels (a JPEG Baseline source) are stored in 16 bits with the same values."""
from __future__ import annotations

import copy

import numpy as np
from pydicom.uid import generate_uid

from dicomnode.results.display_copy import _copy
from tests.hardening.hardening_support import synthetic_mr


def test_a_retired_embedded_overlay_is_dropped_and_an_overlay_with_its_data_kept():
    source = synthetic_mr()
    source.add_new(0x60000010, "US", int(source.Rows))
    source.add_new(0x60000011, "US", int(source.Columns))
    source.add_new(0x60000040, "CS", "G")
    source.add_new(0x60000050, "SS", [1, 1])
    source.add_new(0x60000100, "US", 1)
    source.add_new(0x60000102, "US", 12)  # the plane in bit 12 of Pixel Data
    source.add_new(0x60020010, "US", int(source.Rows))
    source.add_new(0x60020102, "US", 0)
    source.add_new(0x60023000, "OW", b"\0" * (int(source.Rows) * int(source.Columns) // 8))
    made = _copy(source, generate_uid(), 9301, "copy")
    assert not [t for t in made.keys() if t.group == 0x6000]
    assert (0x6002, 0x3000) in made and (0x6002, 0x0102) in made
    assert (0x6000, 0x0102) in source  # the source is left as it was


def test_an_8_bit_source_is_copied_in_16_bits_with_the_same_values():
    source = synthetic_mr()
    values = (np.arange(int(source.Rows) * int(source.Columns)) % 251).astype(np.uint8)
    source.BitsAllocated, source.BitsStored, source.HighBit, source.PixelRepresentation = 8, 8, 7, 0
    source.PixelData = values.tobytes()
    original = copy.deepcopy(source)
    made = _copy(source, generate_uid(), 9301, "copy")
    assert made.BitsAllocated == 16 and made.BitsStored == 8 and made.HighBit == 7
    assert np.array_equal(made.pixel_array.ravel(), values)
    assert source.BitsAllocated == 8 and source.PixelData == original.PixelData
