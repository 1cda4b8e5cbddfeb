"""Dice + cross-entropy with deep supervision, marginalised per centre over the classes a centre does not label
(Shi et al., "Marginal loss and exclusion loss for partially supervised multi-organ segmentation", MedIA 2021):
EMIDEC labels no RV, so for its pixels P(background) + P(RV) is scored against background; MyoPS labels MVO inside
scar, so P(scar) + P(MVO) is scored against scar."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dicomnode.labels import Label

#: weights of the deep-supervision heads, full resolution first (nnU-Net halves them per level)
HEAD_WEIGHTS = (1.0, 0.5, 0.25, 0.125)


#: where a class a source does not label is counted: an unlabelled RV is background (EMIDEC), an unlabelled MVO is
#: scar (MyoPS), an unlabelled scar is myocardium (a cine image, where infarct is not visible); followed until a
#: labelled class is reached (a cine source's MVO -> scar -> myocardium)
FOLDS = {int(Label.RV_BLOOD_POOL): int(Label.BACKGROUND), int(Label.MVO): int(Label.SCAR),
         int(Label.SCAR): int(Label.LV_MYOCARDIUM)}


def merge_matrix(labelled: frozenset, classes: int) -> torch.Tensor:
    """(classes, classes) matrix M with merged_j = sum_i M[i, j] p_i for a source labelling `labelled`: each
    unlabelled class folds into the first labelled class along `FOLDS`; others stay.

    Raises ValueError when an unlabelled class has no labelled class to fold into."""
    matrix = torch.eye(classes)
    for source in range(classes):
        if source in labelled:
            continue
        target = source
        while target not in labelled:
            if target not in FOLDS:
                raise ValueError(f"class {source} is not labelled and cannot be folded into a labelled class "
                                 f"(labelled: {sorted(labelled)})")
            target = FOLDS[target]
        matrix[source, source] = 0.0
        matrix[source, target] = 1.0
    return matrix


def marginal_dice_ce(logits: torch.Tensor, labels: torch.Tensor, merges: torch.Tensor,
                     available: torch.Tensor, dice_weight: float = 1.0, per_sample: bool = False) -> torch.Tensor:
    """Loss of one head. logits (B, C, H, W); labels (B, H, W) int64 node labels; merges (B, C, C) from
    `merge_matrix`; available (B, C) bool, the classes each sample's centre labels. Cross-entropy on the merged
    probabilities plus `dice_weight` x soft Dice (batch dice) over the foreground classes, each over the samples
    that label it. Soft Dice can bias volumes where boundaries are uncertain, cross-entropy does not (Bertels et
    al., "Optimization with soft Dice can lead to a volumetric bias", MICCAI BrainLes 2019): a smaller
    `dice_weight` trades overlap for volume calibration. With `per_sample` the Dice is taken per patch and class,
    over the (patch, class) pairs whose patch holds that class, and averaged: every patch weighs the same whatever
    the size of its structures (as EMIDEC's per-slice Dice does; batch Dice lets large mid-ventricular slices
    dominate small apical ones)."""
    probabilities = torch.softmax(logits.float(), dim=1)
    merged = torch.einsum("bihw,bij->bjhw", probabilities, merges)
    ce = F.nll_loss(torch.log(merged.clamp(min=1e-7)), labels)
    one_hot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).float()
    weight = available.float()[:, :, None, None]
    foreground = available.any(dim=0).clone()
    foreground[0] = False
    if per_sample:
        intersection = (merged * one_hot).sum(dim=(2, 3))
        denominator = (merged + one_hot).sum(dim=(2, 3))
        pairs = available & (one_hot.sum(dim=(2, 3)) > 0)
        pairs[:, 0] = False
        if not pairs.any():
            return ce
        dice = (2 * intersection + 1e-5) / (denominator + 1e-5)
        return ce + dice_weight * (1 - dice[pairs]).mean()
    intersection = (merged * one_hot * weight).sum(dim=(0, 2, 3))
    denominator = ((merged + one_hot) * weight).sum(dim=(0, 2, 3))
    dice = (2 * intersection + 1e-5) / (denominator + 1e-5)
    return ce + dice_weight * (1 - dice[foreground]).mean()


def deep_supervision_loss(outputs: torch.Tensor, labels: torch.Tensor, merges: torch.Tensor,
                          available: torch.Tensor, dice_weight: float = 1.0,
                          per_sample: bool = False) -> torch.Tensor:
    """outputs (B, heads, C, H, W) from DynUNet in training mode (every head at full size)."""
    heads = outputs.shape[1]
    weights = torch.tensor(HEAD_WEIGHTS[:heads])
    weights = weights / weights.sum()
    return sum(w * marginal_dice_ce(outputs[:, k], labels, merges, available, dice_weight, per_sample)
               for k, w in enumerate(weights))
