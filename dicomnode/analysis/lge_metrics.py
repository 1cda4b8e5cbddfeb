"""LGE scar quantification as pure functions: volumes, mass, %LGE, burden flag, n-SD and FWHM thresholds."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from dicomnode.labels import ENHANCED_LABELS, MYOCARDIUM_LABELS, Label

Comparator = Literal[">=", ">"]
NSD_FACTORS = (2, 3, 5, 6)


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
    scar_volume_ml: float
    mvo_volume_ml: float
    lge_percent: float | None  # None where the slice has no myocardium


@dataclass(frozen=True)
class LGEVolumes:
    """Volumes (mL), mass (g) and %LGE of one labelled LGE stack."""

    myocardium_volume_ml: float
    lv_mass_g: float
    scar_volume_ml: float  # scar excluding MVO
    mvo_volume_ml: float
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
    """Scar, MVO and myocardial volumes, LV mass, %LGE, burden flag and per-slice values of a label map."""
    labels = _check_labels(labels)
    voxel_volume_ml = _check_positive("voxel_volume_ml", voxel_volume_ml)
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
                myocardium_volume_ml=myo_count * voxel_volume_ml,
                scar_volume_ml=scar_count * voxel_volume_ml,
                mvo_volume_ml=mvo_count * voxel_volume_ml,
                lge_percent=percent_of(scar_count + mvo_count, myo_count) if myo_count else None,
            )
        )
    myo_voxels = int(myocardium.sum())
    enhanced_voxels = int(scar.sum() + mvo.sum())
    lge_percent = percent_of(enhanced_voxels, myo_voxels)
    myocardium_volume_ml = myo_voxels * voxel_volume_ml
    return LGEVolumes(
        myocardium_volume_ml=myocardium_volume_ml,
        lv_mass_g=myocardium_volume_ml * density_g_per_ml,
        scar_volume_ml=int(scar.sum()) * voxel_volume_ml,
        mvo_volume_ml=int(mvo.sum()) * voxel_volume_ml,
        lge_percent=lge_percent,
        large_scar_burden=large_burden(lge_percent, cutoff_percent, comparator),
        per_slice=tuple(per_slice),
    )


def endocardial_rim(labels: np.ndarray) -> np.ndarray:
    """Myocardium pixels that touch the LV blood pool in-plane (4-neighbourhood): a one-pixel partial-volume rim."""
    labels = _check_labels(labels)
    blood_pool = labels == int(Label.LV_BLOOD_POOL)
    cross = ndimage.generate_binary_structure(2, 1)[None]  # in-plane only
    touching = ndimage.binary_dilation(blood_pool, structure=cross)
    return touching & myocardium_mask(labels)


def thresholding_mask(labels: np.ndarray) -> np.ndarray:
    """Myocardium used by the threshold methods: the whole myocardium minus the endocardial rim."""
    return myocardium_mask(labels) & ~endocardial_rim(labels)


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


@dataclass(frozen=True)
class RemoteMyocardium:
    mask: np.ndarray  # bool, same shape as the labels
    mean: float
    sd: float
    voxels: int
    sectors: int  # number of (slice, sector) regions pooled


def remote_myocardium(
    image: np.ndarray, labels: np.ndarray, sectors: int = 6, quantile: float = 0.25, min_voxels: int = 5
) -> RemoteMyocardium:
    """Remote (non-enhanced) myocardium found automatically.

    The thresholding myocardium of every slice is divided into `sectors` angular sectors; the sectors whose
    mean signal is at or below the `quantile` of all sector means (the darkest, least enhanced ones) are pooled.
    """
    image = np.asarray(image, dtype=np.float64)
    labels = _check_labels(labels)
    if image.shape != labels.shape:
        raise ValueError(f"image shape {image.shape} differs from labels shape {labels.shape}")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    usable = thresholding_mask(labels)
    sector_index = myocardial_sectors(labels, sectors)
    regions = []
    for index in range(labels.shape[0]):
        for sector in range(sectors):
            region = usable[index] & (sector_index[index] == sector)
            if int(region.sum()) >= min_voxels:
                regions.append((float(image[index][region].mean()), index, region))
    if not regions:
        raise ValueError("no myocardial sector large enough to serve as remote myocardium")
    cut = float(np.quantile([r[0] for r in regions], quantile))
    mask = np.zeros(labels.shape, dtype=bool)
    chosen = 0
    for mean, index, region in regions:
        if mean <= cut:
            mask[index] |= region
            chosen += 1
    values = image[mask]
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return RemoteMyocardium(mask=mask, mean=float(values.mean()), sd=sd,
                            voxels=int(values.size), sectors=chosen)


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

    def summary(self) -> dict:
        return {"lge_percent": self.lge_percent, "threshold": self.threshold,
                "enhanced_volume_ml": self.enhanced_volume_ml,
                "enhanced_voxels": self.enhanced_voxels, **self.details}


def nsd_enhancement(image: np.ndarray, labels: np.ndarray, n: int, voxel_volume_ml: float) -> ThresholdResult:
    """n-SD method: threshold = remote mean + n × remote SD, applied to the myocardium without its endocardial rim."""
    if n not in NSD_FACTORS:
        raise ValueError(f"n must be one of {NSD_FACTORS}, got {n}")
    voxel_volume_ml = _check_positive("voxel_volume_ml", voxel_volume_ml)
    image = np.asarray(image, dtype=np.float64)
    remote = remote_myocardium(image, labels)
    threshold = remote.mean + n * remote.sd
    enhanced = thresholding_mask(labels) & (image > threshold)
    count = int(enhanced.sum())
    return ThresholdResult(
        method="nsd",
        threshold=threshold,
        enhanced_mask=enhanced,
        enhanced_voxels=count,
        enhanced_volume_ml=count * voxel_volume_ml,
        lge_percent=percent_of(count, int(myocardium_mask(labels).sum())),
        details={"n": n, "remote_mean": remote.mean, "remote_sd": remote.sd, "remote_voxels": remote.voxels,
                 "remote_sectors": remote.sectors},
    )


_FWHM_CONNECTIVITY = np.zeros((3, 3, 3), dtype=bool)
_FWHM_CONNECTIVITY[1] = True  # 8-connected in-plane
_FWHM_CONNECTIVITY[0, 1, 1] = _FWHM_CONNECTIVITY[2, 1, 1] = True  # same pixel in the neighbouring slices


def fwhm_enhancement(image: np.ndarray, labels: np.ndarray, voxel_volume_ml: float,
                     baseline: float = 0.0) -> ThresholdResult:
    """Full width at half maximum: threshold = half the maximum signal in the myocardium (without endocardial rim);
    the enhanced region is the above-threshold myocardium connected to that maximum.

    `baseline` is the signal of nulled myocardium: 0 for magnitude images (the classic method); for PSIR images,
    whose stored zero is arbitrary, pass the remote myocardium mean: threshold = baseline + (max - baseline) / 2.
    """
    voxel_volume_ml = _check_positive("voxel_volume_ml", voxel_volume_ml)
    image = np.asarray(image, dtype=np.float64)
    labels = _check_labels(labels)
    if image.shape != labels.shape:
        raise ValueError(f"image shape {image.shape} differs from labels shape {labels.shape}")
    usable = thresholding_mask(labels)
    if not usable.any():
        raise ValueError("no myocardium to threshold")
    masked = np.where(usable, image, -np.inf)
    peak = np.unravel_index(int(np.argmax(masked)), image.shape)
    maximum = float(image[peak])
    baseline = float(baseline)
    if not np.isfinite(baseline) or baseline >= maximum:
        raise ValueError(f"baseline {baseline} must be finite and below the myocardial maximum {maximum}")
    threshold = baseline + (maximum - baseline) / 2.0
    above = usable & (image >= threshold)
    components, _ = ndimage.label(above, structure=_FWHM_CONNECTIVITY)
    enhanced = components == components[peak]
    count = int(enhanced.sum())
    return ThresholdResult(
        method="fwhm",
        threshold=threshold,
        enhanced_mask=enhanced,
        enhanced_voxels=count,
        enhanced_volume_ml=count * voxel_volume_ml,
        lge_percent=percent_of(count, int(myocardium_mask(labels).sum())),
        details={"maximum": maximum, "baseline": baseline, "maximum_voxel": [int(v) for v in peak]},
    )
