"""Image regions for the SR: closed POLYLINE outlines of a mask on its source images (TID 1411 row "Image Region").

SCOORD coordinates are image pixel coordinates (column, row) whose (0, 0) is the top-left corner of the top-left
pixel, so the centre of pixel (r, c) is (c + 0.5, r + 0.5) (PS3.3 C.18.6.1.2). Outlines follow the 0.5 iso-line of
the mask through pixel centres (contourpy, a matplotlib dependency).
"""
from __future__ import annotations

from typing import Sequence

import contourpy
import highdicom as hd
import numpy as np

from dicomnode.cmr.types import FrameRef

MIN_POINTS = 4  # a closed polyline needs at least three distinct vertices plus the repeated first one


def outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Closed outlines (N, 2) in (column, row) image coordinates of a 2D mask, longest first; [] for an empty mask.

    Each outer boundary and each hole boundary is one outline; the first vertex is repeated at the end.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {mask.shape}")
    if not mask.any():
        return []
    padded = np.pad(mask, 1).astype(np.float64)  # closes outlines that touch the image border
    lines = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate).lines(0.5)
    found = []
    for line in lines:
        line = np.asarray(line, dtype=float) - 1.0 + 0.5  # undo the padding; pixel centre = index + 0.5
        if not np.allclose(line[0], line[-1]):
            line = np.vstack([line, line[:1]])
        if len(line) >= MIN_POINTS:
            found.append(np.clip(line, 0.0, [mask.shape[1], mask.shape[0]]))
    return sorted(found, key=len, reverse=True)


def representative_slice(masks: np.ndarray) -> int | None:
    """The slice of a (slices, rows, cols) mask with the most pixels; None when the mask is empty."""
    areas = np.asarray(masks, dtype=bool).reshape(len(masks), -1).sum(axis=1)
    return int(np.argmax(areas)) if areas.any() else None


def image_regions(masks: np.ndarray, frames: Sequence[FrameRef], all_slices: bool = True,
                  first: int | None = None) -> list[hd.sr.ImageRegion]:
    """SCOORD POLYLINE outlines of a (slices, rows, cols) mask on the source frames of its slices.

    The slice `first` (default: the representative slice, largest area) comes first - viewers that draw one region
    per measurement (OHIF) draw that one - then, with `all_slices`, every other slice in stack order, so the set of
    outlines describes the whole volumetric region. On each slice the longest outline comes first.
    """
    masks = np.asarray(masks, dtype=bool)
    if len(frames) != masks.shape[0]:
        raise ValueError(f"{len(frames)} frames for {masks.shape[0]} mask slices")
    first = representative_slice(masks) if first is None else int(first)
    if first is None or not masks[first].any():
        return []
    order = [first] + ([k for k in range(len(masks)) if k != first] if all_slices else [])
    regions = []
    for k in order:
        regions += slice_regions(masks[k], frames[k])
    return regions


def slice_regions(mask: np.ndarray, ref: FrameRef) -> list[hd.sr.ImageRegion]:
    """The outlines of one slice's 2D mask as SCOORD POLYLINEs SELECTED FROM its source frame, longest first."""
    source = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=ref.sop_class_uid, referenced_sop_instance_uid=ref.sop_instance_uid,
        referenced_frame_numbers=[ref.frame_number] if ref.frame_number is not None else None)
    return [hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=np.round(line, 2),
                              source_image=source) for line in outlines(mask)]
