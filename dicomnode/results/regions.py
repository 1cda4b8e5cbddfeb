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

#: the relative difference between row and column pixel spacing above which pixels count as not square: a viewer
#: exchanging the two spacings (OHIF v3) then misplaces a point 128 pixels from the image corner by over a pixel
NON_SQUARE_TOLERANCE = 0.01
#: what the SR and the PDF say where the outlines are drawn on images with pixels that are not square
NON_SQUARE_NOTE = ("the images have non-square pixels (PixelSpacing {spacing} mm): OHIF v3 draws the SR outlines of "
                   "such images stretched and shifted off the structure measured (the row and column spacings "
                   "exchanged); the SEG on the same images is placed right: read the regions from the SEG")
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


def non_square_aspect(pixel_spacing) -> float | None:
    """The pixel aspect ratio (row spacing / column spacing, from PixelSpacing (between rows, between columns) in mm)
    where the pixels are not square (differing by over NON_SQUARE_TOLERANCE), rounded to 3 decimals; None for square
    pixels or a spacing that is missing or not positive."""
    try:
        row_mm, col_mm = (float(v) for v in pixel_spacing)
    except (TypeError, ValueError):
        return None
    if not (row_mm > 0 and col_mm > 0) or abs(row_mm - col_mm) <= NON_SQUARE_TOLERANCE * max(row_mm, col_mm):
        return None
    return round(row_mm / col_mm, 3)


def non_square_note(pixel_spacing) -> str | None:
    """NON_SQUARE_NOTE for a PixelSpacing (between rows, between columns, mm) that is not square; None else."""
    if non_square_aspect(pixel_spacing) is None:
        return None
    return NON_SQUARE_NOTE.format(spacing="\\".join(f"{float(v):g}" for v in pixel_spacing))
