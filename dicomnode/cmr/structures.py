"""Anatomical plausibility of a segmentation: each heart structure is one connected body.

nnU-Net's "keep the largest connected component" post-processing (Isensee et al., Nat Methods 2021), applied to the
LV (blood pool with its myocardium, scar and MVO) and to the RV blood pool of a short-axis stack. Shared by the LGE
and the cine pipelines.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from dicomnode.labels import Label

#: labels that make up the left ventricle together (blood pool + myocardium incl. scar and MVO)
LV_LABELS = (int(Label.LV_BLOOD_POOL), int(Label.LV_MYOCARDIUM), int(Label.SCAR), int(Label.MVO))
#: the structures kept as one body each
STRUCTURES = (LV_LABELS, (int(Label.RV_BLOOD_POOL),))


def keep_largest_structures(labels: np.ndarray) -> np.ndarray:
    """The LV (labels 1-4 together) and the RV (5) each keep only their largest 3-D connected component (face
    connectivity, across slices too); every other voxel of those labels becomes background.

    labels: (slices, rows, cols) node labels (dicomnode.labels.Label) of one stack, or (phases, slices, rows, cols)
    of a cine, whose phases are treated independently (a component never spans two phases). Returns a new uint8
    array of the same shape; raises ValueError on another rank.
    """
    labels = np.array(labels, dtype=np.uint8, copy=True)
    if labels.ndim not in (3, 4):
        raise ValueError(f"labels must be (slices, rows, cols) or (phases, slices, rows, cols), got {labels.shape}")
    stacked = labels if labels.ndim == 4 else labels[None]
    foreground = stacked != int(Label.BACKGROUND)
    if not foreground.any():
        return labels
    # components never reach outside the box of the foreground
    box = (slice(None),) + tuple(
        slice(hits[0], hits[-1] + 1) for hits in (np.flatnonzero(foreground.any(axis=(0, 2, 3))),
                                                  np.flatnonzero(foreground.any(axis=(0, 1, 3))),
                                                  np.flatnonzero(foreground.any(axis=(0, 1, 2)))))
    within_phase = np.zeros((3, 3, 3, 3), bool)
    within_phase[1] = ndimage.generate_binary_structure(3, 1)
    for group in STRUCTURES:
        whole = stacked[box]
        member = (whole >= min(group)) & (whole <= max(group))  # each group is a run of consecutive labels
        if not member.any():
            continue
        # and each group's components stay inside that group's own box
        own = (slice(None),) + tuple(slice(hits[0], hits[-1] + 1) for hits in (
            np.flatnonzero(member.any(axis=(0, 2, 3))), np.flatnonzero(member.any(axis=(0, 1, 3))),
            np.flatnonzero(member.any(axis=(0, 1, 2)))))
        view, mask = whole[own], member[own]
        components, count = ndimage.label(mask, structure=within_phase)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        phase_of = np.array([found[0].start for found in ndimage.find_objects(components)])
        keep = np.zeros(count + 1, bool)
        for phase in np.unique(phase_of):
            members = np.flatnonzero(phase_of == phase) + 1
            keep[members[np.argmax(sizes[members])]] = True
        view[mask & ~keep[components]] = int(Label.BACKGROUND)
    return labels
