"""LGE scar quantification as pure functions: volumes, mass, %LGE, burden flag, n-SD and FWHM thresholds."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from dicomnode.labels import ENHANCED_LABELS, MYOCARDIUM_LABELS, Label

Comparator = Literal[">=", ">"]
NSD_FACTORS = (2, 3, 5, 6)

#: the start of summary `large_scar_burden_reason` where the flag is not given because %LGE lies within the model's
#: known error of the cut-off (`analysis.lge.indeterminate_burden_reason`); other reasons start "withheld: "
INDETERMINATE = "indeterminate"


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a (slices, rows, cols) array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got {labels.dtype}")
    return labels


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value}")
    return value


def _voxel_volumes(voxel_volume_ml, slices: int) -> np.ndarray:
    """(slices,) mL per voxel of each slice from one number for all or one per slice (a stack whose slices stand
    for discs of different thickness, cine_metrics.disc_voxel_volumes_ml); ValueError unless all are positive."""
    values = np.asarray(voxel_volume_ml, dtype=np.float64)
    if values.ndim == 0:
        return np.full(slices, _check_positive("voxel_volume_ml", float(values)))
    if values.shape != (slices,):
        raise ValueError(f"voxel_volume_ml must be one number or one per slice ({slices}), got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"voxel_volume_ml must be positive numbers, got {values.tolist()}")
    return values


def _volume_ml(mask: np.ndarray, voxel_ml: np.ndarray) -> float:
    """mL of a (slices, rows, cols) mask with each slice's voxel volume."""
    return float(mask.reshape(mask.shape[0], -1).sum(axis=1) @ voxel_ml)


def _percent(part: np.ndarray, whole: np.ndarray, voxel_ml: np.ndarray) -> float:
    """part / whole x 100 by volume (equal to the voxel ratio where every slice has one voxel volume); 0 for an
    empty whole."""
    if np.all(voxel_ml == voxel_ml[0]):
        return percent_of(int(part.sum()), int(whole.sum()))
    whole_ml = _volume_ml(whole, voxel_ml)
    return 100.0 * _volume_ml(part, voxel_ml) / whole_ml if whole_ml else 0.0


def myocardium_mask(labels: np.ndarray) -> np.ndarray:
    """Whole LV myocardium: healthy + scar + MVO."""
    return np.isin(_check_labels(labels), [int(v) for v in MYOCARDIUM_LABELS])


def enhanced_mask(labels: np.ndarray) -> np.ndarray:
    """Enhanced myocardium counted for %LGE: scar including MVO."""
    return np.isin(_check_labels(labels), [int(v) for v in ENHANCED_LABELS])


def large_burden(lge_percent: float, cutoff_percent: float = 15.0, comparator: Comparator = ">=") -> bool:
    """The large-scar-burden flag: %LGE against the cut-off with the configured comparator."""
    if comparator not in (">=", ">"):
        raise ValueError(f"comparator must be '>=' or '>', got {comparator!r}")
    cutoff_percent = _check_positive("cutoff_percent", cutoff_percent)
    return bool(lge_percent >= cutoff_percent) if comparator == ">=" else bool(lge_percent > cutoff_percent)


def percent_of(part_voxels: int, whole_voxels: int) -> float:
    """part / whole × 100; 0 when the whole is empty."""
    return 100.0 * part_voxels / whole_voxels if whole_voxels else 0.0


@dataclass(frozen=True)
class SliceValues:
    slice_index: int
    myocardium_volume_ml: float
    scar_volume_ml: float  # whole enhanced volume: scar including MVO
    mvo_volume_ml: float  # the MVO part of scar_volume_ml
    lge_percent: float | None  # None where the slice has no myocardium


@dataclass(frozen=True)
class LGEVolumes:
    """Volumes (mL), mass (g) and %LGE of one labelled LGE stack."""

    myocardium_volume_ml: float
    lv_mass_g: float
    scar_volume_ml: float  # the whole enhanced volume: scar INCLUDING MVO (cmr-reference.md: MVO counts as scar)
    mvo_volume_ml: float  # the MVO part of scar_volume_ml
    lge_percent: float  # (scar + MVO) / myocardium × 100
    large_scar_burden: bool
    per_slice: tuple[SliceValues, ...]

    def per_slice_dicts(self) -> list[dict]:
        return [asdict(s) for s in self.per_slice]


def lge_volumes(
    labels: np.ndarray,
    voxel_volume_ml: float,
    density_g_per_ml: float = 1.05,
    cutoff_percent: float = 15.0,
    comparator: Comparator = ">=",
) -> LGEVolumes:
    """Scar, MVO and myocardial volumes, LV mass, %LGE, burden flag and per-slice values of a label map.

    labels: (slices, rows, cols) node labels (dicomnode.labels); voxel_volume_ml: mL per voxel, one number or
    (slices,) one per slice (the summation of discs over a gap, cine_metrics.disc_voxel_volumes_ml). Scar volume is
    the whole enhanced volume including MVO, MVO volume its part; %LGE = scar volume / myocardial volume × 100
    (Fahmy et al., Radiology 2020). Raises ValueError on a non-integer or non-3-D label map or a non-positive
    voxel volume or density.
    """
    labels = _check_labels(labels)
    voxel_ml = _voxel_volumes(voxel_volume_ml, labels.shape[0])
    density_g_per_ml = _check_positive("density_g_per_ml", density_g_per_ml)
    myocardium = myocardium_mask(labels)
    scar = labels == int(Label.SCAR)
    mvo = labels == int(Label.MVO)
    per_slice = []
    for index in range(labels.shape[0]):
        myo_count = int(myocardium[index].sum())
        scar_count = int(scar[index].sum())
        mvo_count = int(mvo[index].sum())
        per_slice.append(
            SliceValues(
                slice_index=index,
                myocardium_volume_ml=myo_count * float(voxel_ml[index]),
                scar_volume_ml=(scar_count + mvo_count) * float(voxel_ml[index]),
                mvo_volume_ml=mvo_count * float(voxel_ml[index]),
                lge_percent=percent_of(scar_count + mvo_count, myo_count) if myo_count else None,
            )
        )
    enhanced = scar | mvo
    lge_percent = _percent(enhanced, myocardium, voxel_ml)
    myocardium_volume_ml = _volume_ml(myocardium, voxel_ml)
    return LGEVolumes(
        myocardium_volume_ml=myocardium_volume_ml,
        lv_mass_g=myocardium_volume_ml * density_g_per_ml,
        scar_volume_ml=_volume_ml(enhanced, voxel_ml),
        mvo_volume_ml=_volume_ml(mvo, voxel_ml),
        lge_percent=lge_percent,
        # decided on %LGE as reported (2 decimals, summary.json and SR), so the flag never contradicts the number
        large_scar_burden=large_burden(round(lge_percent, 2), cutoff_percent, comparator),
        per_slice=tuple(per_slice),
    )


def endocardial_rim(labels: np.ndarray) -> np.ndarray:
    """Myocardium pixels that touch the LV blood pool in-plane (4-neighbourhood): a one-pixel partial-volume rim."""
    labels = _check_labels(labels)
    blood_pool = labels == int(Label.LV_BLOOD_POOL)
    cross = ndimage.generate_binary_structure(2, 1)[None]  # in-plane only
    touching = ndimage.binary_dilation(blood_pool, structure=cross)
    return touching & myocardium_mask(labels)


def epicardial_rim(labels: np.ndarray) -> np.ndarray:
    """Myocardium pixels that touch anything outside the LV (background, RV) in-plane (4-neighbourhood): the
    one-pixel rim where epicardial fat and RV blood partial-volume into the myocardium."""
    labels = _check_labels(labels)
    outside = ~np.isin(labels, [int(v) for v in MYOCARDIUM_LABELS] + [int(Label.LV_BLOOD_POOL)])
    cross = ndimage.generate_binary_structure(2, 1)[None]
    return ndimage.binary_dilation(outside, structure=cross) & myocardium_mask(labels)


def thresholding_mask(labels: np.ndarray) -> np.ndarray:
    """Myocardium used by the threshold methods: the whole myocardium minus its endocardial and epicardial rims
    (blood-pool and fat partial volume are excluded, cmr-reference.md)."""
    return myocardium_mask(labels) & ~endocardial_rim(labels) & ~epicardial_rim(labels)


def myocardial_sectors(labels: np.ndarray, sectors: int = 6) -> np.ndarray:
    """Sector index (0..sectors-1) of every myocardium voxel, -1 elsewhere.

    Angles are measured per slice around the LV centre (blood-pool centroid, else myocardium centroid).
    """
    labels = _check_labels(labels)
    if sectors < 2:
        raise ValueError(f"sectors must be >= 2, got {sectors}")
    myocardium = myocardium_mask(labels)
    blood_pool = labels == int(Label.LV_BLOOD_POOL)
    result = np.full(labels.shape, -1, dtype=np.int16)
    for index in range(labels.shape[0]):
        if not myocardium[index].any():
            continue
        centre_source = blood_pool[index] if blood_pool[index].any() else myocardium[index]
        centre_row, centre_col = np.argwhere(centre_source).mean(axis=0)
        rows, cols = np.nonzero(myocardium[index])
        angles = np.arctan2(rows - centre_row, cols - centre_col) % (2 * np.pi)
        result[index, rows, cols] = np.minimum((angles / (2 * np.pi) * sectors).astype(np.int16), sectors - 1)
    return result


#: in-plane distance from any (DL) enhanced voxel of the same slice beyond which healthy myocardium counts as remote
REMOTE_MIN_DISTANCE_MM = 10.0
#: enhanced regions smaller than this (mm², per slice, 8-connected) are noise, not scar, for the threshold methods
MIN_REGION_MM2 = 10.0
_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True


@dataclass(frozen=True)
class RemoteMyocardium:
    mask: np.ndarray  # bool, same shape as the labels
    mean: float
    sd: float
    voxels: int
    min_distance_mm: float


def _spacing(spacing_rc) -> tuple[float, float]:
    values = tuple(float(v) for v in spacing_rc)
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing_rc must be two positive numbers (mm), got {spacing_rc!r}")
    return values


def remote_myocardium(image: np.ndarray, labels: np.ndarray, spacing_rc=(1.0, 1.0),
                      min_distance_mm: float = REMOTE_MIN_DISTANCE_MM, min_voxels: int = 20) -> RemoteMyocardium:
    """Remote myocardium for the n-SD method: healthy (label 2) myocardium without its rims that lies at least
    `min_distance_mm` in-plane from every scar/MVO voxel of its slice, i.e. myocardium that really is remote from
    the infarct the segmentation found. image, labels: (slices, rows, cols); spacing_rc: pixel spacing in mm.
    Raises ValueError when fewer than `min_voxels` voxels qualify."""
    image = np.asarray(image, dtype=np.float64)
    labels = _check_labels(labels)
    if image.shape != labels.shape:
        raise ValueError(f"image shape {image.shape} differs from labels shape {labels.shape}")
    spacing = _spacing(spacing_rc)
    mask = thresholding_mask(labels) & (labels == int(Label.LV_MYOCARDIUM))
    enhanced = enhanced_mask(labels)
    for index in range(labels.shape[0]):
        if enhanced[index].any():
            distance = ndimage.distance_transform_edt(~enhanced[index], sampling=spacing)
            mask[index] &= distance >= min_distance_mm
    values = image[mask]
    if values.size < min_voxels:
        raise ValueError(f"only {values.size} voxels of healthy myocardium lie {min_distance_mm:g} mm or more from "
                         f"the enhanced region (need {min_voxels}): no remote myocardium to reference")
    return RemoteMyocardium(mask=mask, mean=float(values.mean()), sd=float(values.std(ddof=1)),
                            voxels=int(values.size), min_distance_mm=float(min_distance_mm))


def _drop_small_regions(mask: np.ndarray, spacing: tuple[float, float], min_area_mm2: float) -> np.ndarray:
    components, count = ndimage.label(mask, structure=_IN_PLANE_8)
    if count == 0:
        return mask
    areas = ndimage.sum(mask, components, index=range(1, count + 1)) * spacing[0] * spacing[1]
    keep = np.concatenate([[False], areas >= min_area_mm2])
    return keep[components]


@dataclass(frozen=True)
class ThresholdResult:
    """Enhanced myocardium found by a signal threshold inside the (DL) myocardium."""

    method: str  # "nsd" | "fwhm"
    threshold: float
    enhanced_mask: np.ndarray
    enhanced_voxels: int
    enhanced_volume_ml: float
    lge_percent: float  # enhanced / whole myocardium × 100
    details: dict
    #: why the method had nothing to measure (FWHM with no enhanced region to take a maximum from), None where it
    #: measured: a report gives such a method as "not applicable" with this reason, not its 0 %
    not_applicable: str | None = None

    def summary(self) -> dict:
        """The values for summary.json; a threshold that was not determined (NaN) is None (JSON null)."""
        threshold = self.threshold if self.threshold is not None and math.isfinite(self.threshold) else None
        return {"lge_percent": self.lge_percent, "threshold": threshold,
                "enhanced_volume_ml": self.enhanced_volume_ml,
                "enhanced_voxels": self.enhanced_voxels, **self.details}


def nsd_enhancement(image: np.ndarray, labels: np.ndarray, n: int, voxel_volume_ml: float, spacing_rc=(1.0, 1.0),
                    min_region_mm2: float = MIN_REGION_MM2) -> ThresholdResult:
    """n-SD method: threshold = remote mean + n × remote SD (`remote_myocardium`), applied to the myocardium
    without its rims; in-plane 8-connected regions under `min_region_mm2` are dropped as noise. %LGE is over the
    whole myocardium. image, labels: (slices, rows, cols); spacing_rc in mm; raises ValueError (bad n, shapes, or
    no remote myocardium)."""
    if n not in NSD_FACTORS:
        raise ValueError(f"n must be one of {NSD_FACTORS}, got {n}")
    voxel_ml = _voxel_volumes(voxel_volume_ml, np.asarray(labels).shape[0])
    spacing = _spacing(spacing_rc)
    image = np.asarray(image, dtype=np.float64)
    remote = remote_myocardium(image, labels, spacing)
    threshold = remote.mean + n * remote.sd
    enhanced = _drop_small_regions(thresholding_mask(labels) & (image > threshold), spacing, min_region_mm2)
    count = int(enhanced.sum())
    return ThresholdResult(
        method="nsd",
        threshold=threshold,
        enhanced_mask=enhanced,
        enhanced_voxels=count,
        enhanced_volume_ml=_volume_ml(enhanced, voxel_ml),
        lge_percent=_percent(enhanced, myocardium_mask(labels), voxel_ml),
        details={"n": n, "remote_mean": remote.mean, "remote_sd": remote.sd, "remote_voxels": remote.voxels,
                 "remote_min_distance_mm": remote.min_distance_mm, "min_region_mm2": min_region_mm2},
    )


#: why FWHM measures nothing on a stack whose labels hold no scar or MVO
NO_ENHANCED_REGION = "no enhanced region to take a maximum from"


def fwhm_enhancement(image: np.ndarray, labels: np.ndarray, voxel_volume_ml: float, spacing_rc=(1.0, 1.0),
                     baseline: float = 0.0, min_region_mm2: float = MIN_REGION_MM2) -> ThresholdResult:
    """Full width at half maximum (Amado et al., JACC 2004): the maximum signal of the enhanced region (the
    scar/MVO labels, without rims) sets threshold = baseline + (maximum - baseline) / 2; the enhanced myocardium is
    every in-plane 8-connected above-threshold region of the rim-free myocardium that overlaps the labelled
    enhanced region (regions under `min_region_mm2` dropped). With no labelled enhanced region there is no maximum:
    the result is 0 % enhanced with an undetermined (NaN) threshold and `not_applicable` = NO_ENHANCED_REGION (an
    evaluation may count the 0 %; a report says "not applicable" with that reason).

    `baseline` is the signal of nulled myocardium: 0 for magnitude images (the classic method). Raises ValueError
    on mismatched shapes, an empty myocardium, or a baseline at or above the maximum."""
    spacing = _spacing(spacing_rc)
    image = np.asarray(image, dtype=np.float64)
    labels = _check_labels(labels)
    voxel_ml = _voxel_volumes(voxel_volume_ml, labels.shape[0])
    if image.shape != labels.shape:
        raise ValueError(f"image shape {image.shape} differs from labels shape {labels.shape}")
    usable = thresholding_mask(labels)
    if not usable.any():
        raise ValueError("no myocardium to threshold")
    seed = usable & enhanced_mask(labels)
    baseline = float(baseline)
    if not seed.any():
        empty = np.zeros(labels.shape, dtype=bool)
        return ThresholdResult(method="fwhm", threshold=float("nan"), enhanced_mask=empty, enhanced_voxels=0,
                               enhanced_volume_ml=0.0, lge_percent=0.0,
                               details={"maximum": None, "baseline": baseline, "maximum_voxel": None,
                                        "note": NO_ENHANCED_REGION},
                               not_applicable=NO_ENHANCED_REGION)
    masked = np.where(seed, image, -np.inf)
    peak = np.unravel_index(int(np.argmax(masked)), image.shape)
    maximum = float(image[peak])
    if not np.isfinite(baseline) or baseline >= maximum:
        raise ValueError(f"baseline {baseline} must be finite and below the enhanced maximum {maximum}")
    threshold = baseline + (maximum - baseline) / 2.0
    above = _drop_small_regions(usable & (image >= threshold), spacing, min_region_mm2)
    components, count = ndimage.label(above, structure=_IN_PLANE_8)
    touching = np.unique(components[seed & above])
    enhanced = np.isin(components, touching[touching > 0])
    voxels = int(enhanced.sum())
    return ThresholdResult(
        method="fwhm",
        threshold=threshold,
        enhanced_mask=enhanced,
        enhanced_voxels=voxels,
        enhanced_volume_ml=_volume_ml(enhanced, voxel_ml),
        lge_percent=_percent(enhanced, myocardium_mask(labels), voxel_ml),
        details={"maximum": maximum, "baseline": baseline, "maximum_voxel": [int(v) for v in peak],
                 "connectivity": "in-plane 8-connected regions overlapping the labelled enhanced region",
                 "min_region_mm2": min_region_mm2},
    )


#: share of the LV (blood pool + myocardium) at the stack's maximum stored value beyond which the image is windowed
SATURATION_LIMIT = 0.02
#: FWHM takes half the maximum above a zero baseline, which a magnitude image's air gives; a stack whose darkest value
#: is above this fraction of the LV's brightest carries an offset in its stored values (break44b: +200 moved FWHM
#: %LGE from 10.2 to 27.4 on MyoPS Case3002, whose darkest value is 0)
FWHM_MAX_FLOOR_FRACTION = 0.1


#: a stack of at least this many pixels with <= 256 distinct values is quantised: an 8-bit export or a narrow window
#: (a 12-bit scan has thousands)
EIGHT_BIT_MIN_PIXELS = 16384


def eight_bit_reason(image: np.ndarray, bits_stored: int | None, values: np.ndarray | None = None) -> str | None:
    """Why `image` is an 8-bit export of the scanner's signal (BitsStored <= 8, whole numbers within 0-255, or at
    most 256 distinct values over a stack of EIGHT_BIT_MIN_PIXELS or more: an 8-bit export stored again with a
    linear rescale, or a narrow window burnt into wider data), or None for scanner-native values. `values`: the part
    whose integrality is checked (default the whole image).
    An 8-bit export maps the scanner's 12-bit range through a window (EMIDEC's PNGs put healthy myocardium at 144
    and scar at 163 of 255)."""
    image = np.asarray(image)
    values = image.ravel() if values is None else np.asarray(values)
    if bits_stored is not None and bits_stored <= 8:
        return f"8-bit input (BitsStored {bits_stored}): the export's window compresses the scanner's signal range"
    if values.size and bool(np.all(np.mod(values, 1) == 0)) and float(image.min()) >= 0 and float(image.max()) <= 255:
        return "8-bit value range (0-255): the export's window compresses the scanner's signal range"
    if image.size >= EIGHT_BIT_MIN_PIXELS:
        levels = np.unique(image).size
        if levels <= 256:
            return (f"only {levels} distinct values in {image.size} pixels: quantised input (an 8-bit export or a "
                    f"narrow window), the export's window compresses the scanner's signal range")
    return None


def threshold_applicability(image: np.ndarray, labels: np.ndarray, bits_stored: int | None,
                            lge_kind: str | None) -> dict[str, str | None]:
    """Why each threshold method ("nsd", "fwhm") cannot be sound on this input, or None where it can.

    Signal thresholds compare the scanner's own intensities, so they are not applicable to 8-bit data (an 8-bit
    export maps the scanner's 12-bit range through a window: EMIDEC's PNGs put healthy myocardium at 144 and scar at
    163 of 255), to windowed data whose LV saturates at the maximum value, and (FWHM only) to PSIR, whose stored
    zero is arbitrary so that "half the maximum" has no fixed meaning without a magnitude reference, and to a stack
    whose darkest value lies above FWHM_MAX_FLOOR_FRACTION of the LV's brightest (an offset in the stored values).
    image, labels: (slices, rows, cols); bits_stored: BitsStored of the source (None if unknown).
    """
    image = np.asarray(image)
    labels = _check_labels(labels)
    reasons: dict[str, str | None] = {"nsd": None, "fwhm": None}
    heart = np.isin(labels, [int(Label.LV_BLOOD_POOL)] + [int(v) for v in MYOCARDIUM_LABELS])
    values = image[heart] if heart.any() else image.ravel()
    # saturation first: it is the fault that makes the thresholds unsound whenever present (a narrow window burnt
    # into 12-bit data also leaves few distinct values, but naming those would blame an 8-bit export it is not)
    common = None
    if values.size:
        saturated = float(np.mean(values >= float(image.max())))
        if saturated >= SATURATION_LIMIT:
            common = (f"windowed input: {100 * saturated:.1f} % of the LV (blood pool and myocardium) is at the "
                      f"maximum stored value, so the brightest signal is clipped")
    if common is None:
        common = eight_bit_reason(image, bits_stored, values)
    if common:
        reasons = {"nsd": common, "fwhm": common}
    if reasons["fwhm"] is None and lge_kind == "psir":
        reasons["fwhm"] = "PSIR input: the stored zero is arbitrary, so half the maximum has no fixed meaning"
    if reasons["fwhm"] is None and values.size:
        floor, top = float(image.min()), float(values.max())
        if top > 0 and floor > FWHM_MAX_FLOOR_FRACTION * top:
            reasons["fwhm"] = (f"offset in the stored values: the darkest value of the stack is {floor:g}, "
                               f"{100 * floor / top:.0f} % of the LV's brightest, where a magnitude image's air reads "
                               f"about 0, so half the maximum above 0 has no fixed meaning")
    return reasons


# ----------------------------------------------------------------------------------------------------------------
# LGE presence: where %LGE says scar is present, absent, or cannot tell
# ----------------------------------------------------------------------------------------------------------------

#: %LGE band (low, high) within which the DL segmentation cannot tell a scar-free heart from a small infarct. From
#: the shipped model's patient-level 5-fold cross-validation (engines/checkpoints/lge_soft_volumes/results.json,
#: "hard" = the label count the node reports, each case predicted by a fold model that never saw it): the 33
#: expert-normal EMIDEC hearts read median 0.66 %, mean 0.84 %, 90th percentile 2.3 %, maximum 3.61 % (27 under
#: 1.5 %, 6 in 1.5-4 %, none at 4 % or more); the 99 hearts with expert scar read under 4 % in 7 cases (1.24 % and
#: 1.69 % with expert 10 % and 13 %: delineation misses; 2.19, 2.87, 3.02, 3.26, 3.33 % with expert 4-17 %), 92 at
#: 4 % or more. Under the low edge "no significant LGE by the automatic count" is stated where no AHA segment holds a focal scar
#: (FOCAL_SEGMENT_EXTENT_PERCENT; 1 infarct of 99 reads there: a small focal scar can be missed); at or above the high
#: edge LGE is present (no expert-normal heart reads there); in between presence is uncertain (6 of 33 normals, 6 of
#: 99 infarcts). MyoPS's one scar-free heart (Case3032, oedema only) reads 8.1 % in the cross-validation, 2.0 % by
#: the shipped ensemble: no band covers such a false positive, the model's %LGE error (4-6 points MAE) is stated
#: beside every %LGE.
LGE_PRESENCE_BAND_PERCENT = (1.5, 4.0)
#: summary `lge_presence.basis`: where the band comes from, with the infarct the low edge misses
LGE_PRESENCE_BASIS = ("patient-level 5-fold cross-validation of the shipped LGE model: 33 expert-normal EMIDEC hearts "
                      "read 0-3.6 % (27 under 1.5 %), 92 of 99 hearts with expert scar read 4 % or more; 1 of those 99 "
                      "read under 1.5 % (Case_P003, 1.24 % against the experts' 10 %)")
#: scar extent (% of one AHA segment's myocardium) at or above which a segment holds a focal scar: where any segment
#: does, a %LGE under the band does not say no significant LGE (presence uncertain). 1.4 % of the LV is about a
#: quarter of one segment (1/17 = 5.9 % of the LV), so a small focal infarct keeps %LGE under the band while its
#: segment reads 20-30 %; 10 % is a stated level (the reviewer's, review49 #2), not tuned on the cross-validation
FOCAL_SEGMENT_EXTENT_PERCENT = 10.0
#: lge_presence kinds: `significant` True / False / None, and why None
PRESENCE_KINDS = ("present", "absent", "uncertain", "slices_present", "not_stated")


def lge_presence(lge_percent: float | None, absence_stated: bool = True, aha: dict | None = None,
                 not_stated_reason: str | None = None) -> dict | None:
    """Whether this %LGE (the DL label count, % of the LV myocardium, as stored: rounding.stored_value, the number
    summary.json and the SR carry, so no output shows a value on the other side of a band edge) states LGE present,
    absent or neither, against LGE_PRESENCE_BAND_PERCENT: the summary's `lge_presence` block.

    `kind` (PRESENCE_KINDS) and `significant`: "present" True at or above the high edge; in the band "uncertain"
    None. Under the low edge: "not_stated" None where `not_stated_reason` is given (a dark-blood LGE, whose %LGE is
    not validated, or a field smaller than the model was trained on, where scar is under-read: the reason is
    quoted); "slices_present" None where not `absence_stated` (the stack covers clearly less than the LV, or its base
    may be missing: no significant LGE on the slices present only); "uncertain" None where any AHA segment of `aha`
    (the LGE summary's `aha_segments`) holds FOCAL_SEGMENT_EXTENT_PERCENT or more scar, and "not_stated" None where
    the AHA segments were not assigned (a focal scar cannot be checked); else "absent" False. The absent text states
    a measurement, not a diagnosis: the level normal hearts read, and that a small focal scar can still be missed.
    Also `uncertain` (kind "uncertain": neither a scar nor a no-scar report text may be offered), `band_percent`
    [low, high], `text` (what the console, PDF and SR say) and `basis`. None where %LGE is None (not determined)."""
    if lge_percent is None:
        return None
    low, high = LGE_PRESENCE_BAND_PERCENT
    value = float(lge_percent)
    shown = _percent_text(value)
    if value >= high:
        kind, text = "present", f"LGE present (%LGE {shown} %, {high:g} % or more)"
    elif value >= low:
        kind, text = "uncertain", (f"LGE presence uncertain: %LGE {shown} % lies in {low:g} % to under {high:g} %, "
                                   "where scar-free hearts and small infarcts both read (cross-validation)")
    elif not_stated_reason:
        kind, text = "not_stated", f"LGE presence not stated (%LGE {shown} %): {not_stated_reason}"
    elif not absence_stated:
        kind, text = "slices_present", (f"%LGE {shown} % on the slices present is under {low:g} %; the LV outside "
                                        "them is not measured")
    else:
        segments = [v for v in (aha or {}).get("segments") or [] if isinstance(v, dict)] \
            if isinstance(aha, dict) and aha.get("applicable") else []
        focal = [v for v in segments if (v.get("scar_extent_percent") or 0) >= FOCAL_SEGMENT_EXTENT_PERCENT]
        if focal:
            worst = max(focal, key=lambda v: v["scar_extent_percent"])
            kind, text = "uncertain", (
                f"LGE presence uncertain: %LGE {shown} % is under {low:g} %, but AHA segment {worst['segment']} holds "
                f"{worst['scar_extent_percent']:.0f} % scar ({FOCAL_SEGMENT_EXTENT_PERCENT:g} % of a segment or more: "
                "a focal scar)")
        elif not segments:
            kind, text = "not_stated", (f"LGE presence not stated (%LGE {shown} % under {low:g} %): the AHA segments "
                                        "were not assigned, so a focal scar cannot be checked")
        else:
            kind, text = "absent", (
                f"no significant LGE by the automatic count: %LGE {shown} % is under {low:g} %, the level normal hearts "
                f"read in cross-validation, and no AHA segment holds {FOCAL_SEGMENT_EXTENT_PERCENT:g} % scar or more; "
                "a small focal scar can still be missed")
    significant = True if kind == "present" else False if kind == "absent" else None
    return {"significant": significant, "kind": kind, "uncertain": kind == "uncertain", "band_percent": [low, high],
            "text": text, "basis": LGE_PRESENCE_BASIS}


def _percent_text(value: float) -> str:
    """%LGE in presence texts, as stored (two decimals): "1.50", "4.00" (at or above the edge, where its kind puts it)."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def presence_text(block: dict | None) -> str | None:
    """What the outputs say of an LGE summary's `lge_presence` block where the node does not state LGE present: its
    `text` ("no significant LGE by the automatic count: %LGE 0.64 % is under 1.5 % ...", "LGE presence uncertain:
    ...", "LGE presence not stated ..."); None where it is present or there is no block."""
    if not isinstance(block, dict) or block.get("significant") is True or not block.get("text"):
        return None
    return str(block["text"])


def presence_short(block: dict | None) -> str | None:
    """presence_text in a few words for a title: "no significant LGE by the automatic count (< 1.5 %)", "LGE presence
    uncertain", "%LGE < 1.5 % on the slices present", "LGE presence not stated"; None where presence_text is None."""
    if presence_text(block) is None:
        return None
    low = (block.get("band_percent") or LGE_PRESENCE_BAND_PERCENT)[0]
    return {"absent": f"no significant LGE by the automatic count (< {low:g} %)",
            "slices_present": f"%LGE < {low:g} % on the slices present",
            "not_stated": "LGE presence not stated"}.get(block.get("kind"), "LGE presence uncertain")
