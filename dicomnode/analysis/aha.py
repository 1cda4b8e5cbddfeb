"""AHA 17-segment model of the LV on a short-axis label map: segments, scar extent, transmurality, wall thickness.

Cerqueira MD et al., "Standardized myocardial segmentation and nomenclature for tomographic imaging of the heart",
Circulation 2002;105:539-542: basal, mid and apical thirds of the LV; 6 x 60 degree sectors at base and mid, 4 x 90
degree sectors at the apex, 17 = apical cap. The anterior and inferior RV insertion points bound the septum: the
anterior one at the 1|2 (7|8) boundary, the inferior one at the 3|4 (9|10) boundary; the apical septal segment 14 is
centred on the septum. Numbering counter-clockwise as seen from the apex (in a normally placed heart): 1 anterior,
2 anteroseptal, 3 inferoseptal, 4 inferior, 5 inferolateral, 6 anterolateral (7-12 the same at mid), 13 anterior,
14 septal, 15 inferior, 16 lateral.

Anterior and inferior are anatomical directions, named from the heart itself: the RV contact arc gives the two RV
insertion points and the septum between them, and seen from the apex a normal heart runs counter-clockwise from the
anterior one across the septum to the inferior one. That handedness survives any rigid rotation of the heart or of
the patient frame (a proper rotation cannot mirror a heart), so the segments do not move with where the heart lies
in the patient. ImageOrientationPatient serves to recognise a mirror image (situs inversus, mirror-image
dextrocardia: the RV to the patient's left of the LV and the apex to the right), whose segments run clockwise seen
from the apex, with MIRRORED_CAVEAT; the basal end of the stack (basal_end_for_volume), from the anterior-inferior
pointing of the apex, which holds whatever the heart's side; and the caveats where the anatomy and the patient axes
disagree otherwise (unusual_turn_caveat, naming the disagreement found) or the RV lies neither left nor right of the LV (MIDLINE_CAVEAT). Angles
are measured in millimetres (PixelSpacing), so non-square pixels do not move segments.

Pure functions: numpy in, numbers out. Node labels (dicomnode.labels): 1 LV blood pool, 2 healthy myocardium,
3 scar, 4 MVO, 5 RV blood pool. Slices must be ordered along n = row direction x column direction (the dicomnode
Volume convention: ascending position along the stack normal), so that the displayed image is seen looking along +n.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

from dicomnode.analysis.cine_metrics import MIN_LV_EXTENT_MM, base_unconfirmed_only
from dicomnode.labels import ENHANCED_LABELS, MYOCARDIUM_LABELS, Label

BasalEnd = Literal["first", "last"]
MODEL_NAME = "AHA 17-segment model (Cerqueira et al., Circulation 2002)"

SEGMENT_NAMES = {
    1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal", 4: "basal inferior",
    5: "basal inferolateral", 6: "basal anterolateral", 7: "mid anterior", 8: "mid anteroseptal",
    9: "mid inferoseptal", 10: "mid inferior", 11: "mid inferolateral", 12: "mid anterolateral",
    13: "apical anterior", 14: "apical septal", 15: "apical inferior", 16: "apical lateral", 17: "apex",
}
#: coronary territories (Cerqueira 2002, figure 3)
TERRITORIES = {"LAD": (1, 2, 7, 8, 13, 14, 17), "RCA": (3, 4, 9, 10, 15), "LCx": (5, 6, 11, 12, 16)}
#: transmurality classes used in CMR reports (0 / 1-25 / 26-50 / 51-75 / 76-100 %)
TRANSMURALITY_CLASSES = ((0.0, "0"), (25.0, "1-25"), (50.0, "26-50"), (75.0, "51-75"), (100.0, "76-100"))
#: base -> apex direction of a typical heart in patient LPS coordinates (apex points left, anterior, inferior)
APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)
#: the same for a mirrored heart (situs inversus / mirror-image dextrocardia: apex right, anterior, inferior) and for
#: a heart whose side is unknown (anterior and inferior only: true of levo-, meso- and dextrocardia)
APEX_DIRECTIONS_LPS = {"left": APEX_DIRECTION_LPS, "right": np.array([-1.0, -1.0, -1.0]) / np.sqrt(3.0),
                       None: np.array([0.0, -1.0, -1.0]) / np.sqrt(2.0)}
#: patient anterior in DICOM LPS (PS3.3 C.7.6.2.1.1: +y points posterior)
PATIENT_ANTERIOR_LPS = np.array([0.0, -1.0, 0.0])
#: the patient geometry tells the RV insertion points apart where one lies at least this much further anterior than
#: the other (difference of the -y components of their unit directions from the LV centre; about 1 in a short-axis
#: plane, 0 where the plane holds no anterior-posterior direction): it then checks the anatomy's anterior one
#: (heart_handedness)
MIN_ANTERIOR_SEPARATION = 0.2
#: the RV centre must lie at least this far (mm, along the patient's left-right axis) from the LV centre for its
#: side to count (a normal heart: RV some 30-50 mm to the patient's right)
MIN_RV_SIDE_OFFSET_MM = 5.0
#: a base-to-apex direction points to the patient's left or right where its LPS x component is at least this
#: fraction of its length (a normal heart's apex: about 0.6 to the left)
MIN_APEX_SIDE_COMPONENT = 0.2
#: `caveat` of a result where the RV lies to the patient's left of the LV and the apex to the right (a mirror image)
#: or neither left nor right (heart_handedness)
MIRRORED_CAVEAT = ("RV to the left of the LV: dextrocardia / situs inversus? AHA segments named from the patient "
                   "geometry: confirm")
#: `caveat` of a result where the RV lies neither to the right nor to the left of the LV (its centre within
#: MIN_RV_SIDE_OFFSET_MM of the LV's along the patient's left-right axis: straight in front of or behind it)
MIDLINE_CAVEAT = ("RV neither to the right nor to the left of the LV: mesocardia or an unusual heart position? AHA "
                  "segments named from the heart's own anatomy: confirm")
#: how the `caveat` begins where the heart's anatomy and the patient axes disagree without making a mirror image
#: (heart_handedness, unusual_turn_caveat): a proper rotation cannot mirror a heart, so the segments keep a normal
#: heart's handedness
UNUSUAL_TURN_START = "the heart lies unusually for the patient axes (ImageOrientationPatient: "
#: the disagreements unusual_turn_caveat names, each the one found (heart_handedness)
UNUSUAL_TURN_RV_AND_APEX_LEFT = "the RV lies to the patient's left of the LV while the apex points to the left"
UNUSUAL_TURN_APEX_RIGHT = "the apex points to the patient's right while the RV lies to the right of the LV"
UNUSUAL_TURN_ANTERIOR_POSTERIOR = ("the RV insertion point the anatomy makes anterior lies further posterior than "
                                   "the other")


def unusual_turn_caveat(found: Sequence[str]) -> str:
    """The `caveat` where the heart's anatomy and the patient axes disagree without making a mirror image, naming
    the disagreements `found` (UNUSUAL_TURN_RV_AND_APEX_LEFT, UNUSUAL_TURN_APEX_RIGHT,
    UNUSUAL_TURN_ANTERIOR_POSTERIOR), not every one that could have been; begins with UNUSUAL_TURN_START."""
    return f"{UNUSUAL_TURN_START}{' and '.join(found)}{UNUSUAL_TURN_END}"


#: how unusual_turn_caveat ends
UNUSUAL_TURN_END = ("): a rotated heart or image frame, or an unusual basal end of the stack; AHA segments named from "
                    "the heart's own anatomy, counter-clockwise seen from the apex: confirm")


#: `caveat` of a result whose stack misses a slice inside the LV (a gap in the slice positions)
GAP_CAVEAT = ("a slice position inside the LV holds no slice (a gap: slice missing?): the basal, mid and apical thirds "
              "are counted on the stack's slice grid, and the segments at the gap lack that slice: confirm")

RAY_STEP_PX = 0.25
RAYS_PER_DEGREE = 1.0


def transmurality_class(percent: float | None) -> str | None:
    """The reporting class (0 / 1-25 / 26-50 / 51-75 / 76-100 %) of a transmurality in percent."""
    if percent is None:
        return None
    if percent <= 0:
        return "0"
    for upper, name in TRANSMURALITY_CLASSES[1:]:
        if percent <= upper + 1e-9:
            return name
    return "76-100"


def basal_end_from_geometry(stack_normal_lps: Sequence[float], apex_side: str | None = "left") -> BasalEnd:
    """Which end of a slice order ascending along `stack_normal_lps` is basal, from the typical LV long axis.

    The LV apex points anterior and inferior (LPS -y, -z) and, `apex_side` "left" (levocardia), to the patient's
    left (+x); "right": to the patient's right (-x, a mirrored heart: situs inversus / dextrocardia); None: the side
    is unknown and only the anterior-inferior direction is used. If the normal points towards the apex, slice
    positions increase towards the apex and the first slice is basal. Raises ValueError when the normal is nearly
    orthogonal to that axis (not a short-axis stack one can orient this way).
    """
    normal = np.asarray(stack_normal_lps, dtype=float)
    if normal.shape != (3,) or not np.isfinite(normal).all() or np.linalg.norm(normal) == 0:
        raise ValueError(f"stack normal must be a finite non-zero 3-vector, got {stack_normal_lps}")
    if apex_side not in APEX_DIRECTIONS_LPS:
        raise ValueError(f"apex_side must be 'left', 'right' or None, got {apex_side!r}")
    cosine = float(normal @ APEX_DIRECTIONS_LPS[apex_side] / np.linalg.norm(normal))
    if abs(cosine) < 0.2:
        axis = {"left": "the usual LV long axis (apex left, anterior, inferior)",
                "right": "the long axis of a mirrored heart (apex right, anterior, inferior: the RV lies to the left "
                         "of the LV, dextrocardia / situs inversus?)",
                None: "an LV long axis pointing anterior and inferior"}[apex_side]
        raise ValueError(f"stack normal {np.round(normal, 3).tolist()} is nearly orthogonal to {axis} (cosine "
                         f"{cosine:.2f}), so the geometry cannot tell the basal end of the stack")
    return "first" if cosine > 0 else "last"


#: what the report tells its reader where the segments are not assigned (AHAResult.reader_reason): a short clinical
#: sentence; the technical reason (`reason`: vectors, cosines, labels) stays in summary.json and the log
READER_NO_LV = "the left ventricle was not segmented well enough to divide it into segments"
READER_NO_INSERTION = "the right ventricle's insertion points, which locate the septum, were not found"
READER_ORIENTATION = ("the heart's orientation could not be determined from these images (unusual imaging plane or "
                      "heart position)")
READER_GEOMETRY = "the images lack the position information the segment model needs"
READER_SHORT_STACK = ("the images cover clearly less than the left ventricle, so its basal, mid and apical thirds "
                      "cannot be told")


@dataclass(frozen=True)
class SegmentValues:
    """Values of one AHA segment; None where not measured."""

    segment: int
    name: str
    slices: tuple[int, ...]
    myocardium_voxels: int
    scar_voxels: int | None = None
    scar_extent_percent: float | None = None
    transmurality_max_percent: float | None = None
    transmurality_mean_percent: float | None = None
    # the mean over the rays that cross scar only: how deep the scarred part of the segment is
    transmurality_scarred_mean_percent: float | None = None
    transmurality_class: str | None = None
    wall_thickness_mm: float | None = None

    def summary(self) -> dict:
        out = {"segment": self.segment, "name": self.name, "slices": list(self.slices),
               "myocardium_voxels": self.myocardium_voxels}
        if self.scar_voxels is not None:
            out.update(scar_voxels=self.scar_voxels, scar_extent_percent=_round(self.scar_extent_percent),
                       transmurality_max_percent=_round(self.transmurality_max_percent),
                       transmurality_mean_percent=_round(self.transmurality_mean_percent),
                       transmurality_scarred_mean_percent=_round(self.transmurality_scarred_mean_percent),
                       transmurality_class=self.transmurality_class)
        if self.wall_thickness_mm is not None:
            out["wall_thickness_mm"] = _round(self.wall_thickness_mm)
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


@dataclass(frozen=True)
class AHAResult:
    """The 17 segments of one stack, or why they could not be made (`applicable` False with `reason`)."""

    applicable: bool
    reason: str | None = None
    segments: tuple[SegmentValues, ...] = ()
    segment_map: np.ndarray | None = None  # (slices, rows, cols) int8: AHA segment 1..17 of each myocardium voxel, 0
    thirds: dict = field(default_factory=dict)  # "basal" | "mid" | "apical" | "apex" -> slice indices
    rv_insertion: dict = field(default_factory=dict)
    basal_end: str | None = None
    caveat: str | None = None  # e.g. MIRRORED_CAVEAT: the segments stand, a reader confirms them
    reader_reason: str | None = None  # not applicable: why, in a sentence for the report's reader (READER_*)

    def summary(self) -> dict:
        if not self.applicable:
            return {"applicable": False, "reason": self.reason, "reader_reason": self.reader_reason,
                    "model": MODEL_NAME}
        out = {"applicable": True, "model": MODEL_NAME, "basal_end": self.basal_end,
               "thirds": {k: list(v) for k, v in self.thirds.items()},
               "rv_insertion": self.rv_insertion, "segments": [s.summary() for s in self.segments]}
        if self.caveat:
            out["caveat"] = self.caveat
        return out


def _check(labels: np.ndarray, pixel_spacing_rc, slice_positions_mm, basal_end) -> tuple[np.ndarray, tuple, np.ndarray]:
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer (slices, rows, cols) array, got {labels.dtype} {labels.shape}")
    spacing = tuple(float(v) for v in pixel_spacing_rc)
    if len(spacing) != 2 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ValueError(f"pixel_spacing_rc must be two positive numbers, got {pixel_spacing_rc}")
    positions = np.asarray(slice_positions_mm, dtype=float).reshape(-1)
    if positions.shape[0] != labels.shape[0]:
        raise ValueError(f"{positions.shape[0]} slice positions for {labels.shape[0]} slices")
    if positions.size > 1 and not (np.all(np.diff(positions) > 0) or np.all(np.diff(positions) < 0)):
        raise ValueError("slice positions must be strictly monotonic (one stack, no duplicates)")
    if basal_end not in ("first", "last"):
        raise ValueError(f"basal_end must be 'first' or 'last', got {basal_end!r}")
    return labels, spacing, positions


def _angles(rows: np.ndarray, cols: np.ndarray, centre: tuple[float, float], from_apex: bool,
            spacing: tuple[float, float]) -> np.ndarray:
    """Angle in degrees [0, 360), counter-clockwise as seen from the apex, of pixels (row, column indices) about
    `centre` (row, column), measured in millimetres: the offsets scaled by PixelSpacing `spacing` (row spacing,
    column spacing; mm), so that non-square pixels do not turn the angles."""
    dy, dx = (rows - centre[0]) * spacing[0], (cols - centre[1]) * spacing[1]
    # on screen (x right, y down) the image is seen looking along +n; seen from the apex when +n points to the base
    angle = np.degrees(np.arctan2(-dy, dx)) if from_apex else np.degrees(np.arctan2(dy, dx))
    return angle % 360.0


def _rv_arc_ends(myocardium: np.ndarray, rv: np.ndarray, centre, from_apex: bool, spacing: tuple[float, float]
                 ) -> tuple[float, float] | None:
    """The RV insertion angles: the ends of the arc of RV blood pool touching the myocardium (RV pixels 4-adjacent
    to LV myocardium, angles from the LV centre), as (start, end) with the arc running counter-clockwise from start
    to end (in a normally placed heart seen from the apex: anterior, inferior)."""
    if not rv.any():
        return None
    touching = ndimage.binary_dilation(myocardium, structure=ndimage.generate_binary_structure(2, 1)) & rv
    if touching.sum() < 2:
        return None
    rows, cols = np.nonzero(touching)
    angles = np.sort(_angles(rows, cols, centre, from_apex, spacing))
    gaps = np.diff(np.concatenate([angles, [angles[0] + 360.0]]))
    widest = int(np.argmax(gaps))
    if gaps[widest] < 30.0:
        return None  # RV all around the LV: no septal arc
    return float(angles[(widest + 1) % len(angles)]), float(angles[widest])


def _inplane_axes(orientation: Sequence[float], spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """LPS displacement (mm) of one step down a column (row index + 1) and one step along a row (column index + 1)
    from ImageOrientationPatient (row direction, column direction; PS3.3 C.7.6.2.1.1) and PixelSpacing."""
    values = np.asarray(orientation, dtype=float).reshape(-1)
    if values.shape != (6,) or not np.isfinite(values).all() or np.linalg.norm(values[:3]) == 0 \
            or np.linalg.norm(values[3:]) == 0:
        raise ValueError(f"ImageOrientationPatient must be six finite numbers, got {orientation}")
    return spacing[0] * values[3:] / np.linalg.norm(values[3:]), spacing[1] * values[:3] / np.linalg.norm(values[:3])


def _direction_lps(angle_deg: float, from_apex: bool, axes) -> np.ndarray:
    """Unit LPS direction of an in-plane angle of `_angles` (from the LV centre; an angle in millimetres, so each
    `_inplane_axes` step is taken per mm)."""
    theta = np.radians(angle_deg)
    dy = -np.sin(theta) if from_apex else np.sin(theta)
    vector = dy * axes[0] / np.linalg.norm(axes[0]) + np.cos(theta) * axes[1] / np.linalg.norm(axes[1])
    return vector / np.linalg.norm(vector)


def rv_side_offset_mm(labels: np.ndarray, pixel_spacing_rc: Sequence[float], orientation: Sequence[float]
                      ) -> float | None:
    """How far the RV blood pool's centre lies towards the patient's left of the LV blood pool's centre: the mean
    over the slices holding both of the LPS x component (mm; + = patient's left) of the centre-to-centre vector, from
    ImageOrientationPatient and PixelSpacing. Normal anatomy: negative (RV to the right); a mirrored heart (situs
    inversus / mirror-image dextrocardia): positive. None where no slice holds both. Raises ValueError on a bad
    orientation."""
    labels = np.asarray(labels)
    spacing = tuple(float(v) for v in pixel_spacing_rc)
    axes = _inplane_axes(orientation, spacing)
    offsets = []
    for k in range(labels.shape[0]):
        pool, rv = labels[k] == int(Label.LV_BLOOD_POOL), labels[k] == int(Label.RV_BLOOD_POOL)
        if pool.any() and rv.any():
            d_row, d_col = np.argwhere(rv).mean(axis=0) - np.argwhere(pool).mean(axis=0)
            offsets.append(float((d_row * axes[0] + d_col * axes[1])[0]))
    return float(np.mean(offsets)) if offsets else None


def rv_side(offset_mm: float | None) -> str | None:
    """"left" / "right" (the patient's) of an `rv_side_offset_mm`, None where unknown or within
    MIN_RV_SIDE_OFFSET_MM of the LV centre."""
    if offset_mm is None or abs(offset_mm) < MIN_RV_SIDE_OFFSET_MM:
        return None
    return "left" if offset_mm > 0 else "right"


def apex_side(apex_lps: Sequence[float]) -> str | None:
    """"left" / "right" (the patient's) towards which a base-to-apex direction (LPS) points, None where its
    left-right component is under MIN_APEX_SIDE_COMPONENT of its length (apex straight anterior / inferior)."""
    apex = np.asarray(apex_lps, dtype=float)
    x = float(apex[0] / np.linalg.norm(apex))
    return None if abs(x) < MIN_APEX_SIDE_COMPONENT else ("left" if x > 0 else "right")


def heart_handedness(side: str | None, apex: str | None, separation: float) -> tuple[int, str | None]:
    """(direction, caveat): whether the AHA segments run counter-clockwise (1, a normal heart's handedness) or
    clockwise (-1, a mirror image) seen from the apex from the anterior RV insertion point, and the caveat to add.

    A proper rotation cannot mirror a heart, so its handedness comes from the anatomy and the patient geometry decides
    only a mirror image: the RV to the patient's left of the LV (`side`, rv_side) and the apex to the right (`apex`,
    apex_side) together, as in situs inversus / mirror-image dextrocardia (MIRRORED_CAVEAT). The RV to the left with
    the apex side unknown (apex straight anterior or inferior) may be either: MIRRORED_CAVEAT, and the handedness
    mirrored only where `separation` (how much further anterior, LPS -y, the arc's end lies than its start; see
    MIN_ANTERIOR_SEPARATION) shows the anatomy's anterior insertion point clearly further posterior. Any other heart keeps the normal handedness (an RV of unknown side or neither left nor right
    without a caveat here: MIDLINE_CAVEAT is the caller's); unusual_turn_caveat where the patient axes disagree,
    naming which of these it found (the RV and the apex both left, the apex right alone, the insertion point the
    anatomy makes anterior lying clearly further posterior): a rotated heart or image frame."""
    if side == "left" and apex == "right":
        return -1, MIRRORED_CAVEAT
    if side == "left" and apex is None:
        return (-1 if separation >= MIN_ANTERIOR_SEPARATION else 1), MIRRORED_CAVEAT
    if side is None:
        return 1, None  # the RV straight in front of or behind the LV: MIDLINE_CAVEAT says so
    found = ([UNUSUAL_TURN_RV_AND_APEX_LEFT] if side == "left" else []) + (
        [UNUSUAL_TURN_APEX_RIGHT] if apex == "right" else []) + (
        [UNUSUAL_TURN_ANTERIOR_POSTERIOR] if separation >= MIN_ANTERIOR_SEPARATION else [])
    return 1, unusual_turn_caveat(found) if found else None


def _circular_mean(degrees: Sequence[float]) -> float:
    radians = np.radians(np.asarray(degrees, dtype=float))
    return float(np.degrees(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean())) % 360.0)


def _sector_of(angle: np.ndarray, anterior: float, inferior: float, apical: bool, direction: int = 1) -> np.ndarray:
    """Sector index (0-based within the ring: 6 at base/mid, 4 at the apex) of each angle; the segments run from
    the anterior RV insertion point across the septum: counter-clockwise (`direction` 1) or clockwise (-1)."""
    angle = (direction * np.asarray(angle, dtype=float)) % 360.0
    anterior, inferior = (direction * anterior) % 360.0, (direction * inferior) % 360.0
    septal = (inferior - anterior) % 360.0
    if apical:
        centre = (anterior + septal / 2.0) % 360.0
        relative = (angle - (centre - 135.0)) % 360.0  # 0 at the anterior start of segment 13
        return np.minimum((relative // 90.0).astype(int), 3)
    relative = (angle - anterior) % 360.0  # 0 at the anterior RV insertion point, towards the septum
    free = 360.0 - septal
    sector = np.where(relative < septal, 1 + (relative >= septal / 2.0),
                      3 + np.minimum(((relative - septal) // (free / 4.0)).astype(int), 3))
    return np.where(sector == 6, 0, sector)  # the last free-wall quarter is segment 1 (anterior)


def _ray_profiles(myocardium: np.ndarray, scar: np.ndarray, centre, spacing, angles_deg: np.ndarray,
                  from_apex: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per ray: (wall length in mm, scar fraction of the wall in %); NaN where the ray crosses no myocardium. The rays
    leave `centre` at `angles_deg` measured in millimetres (`_angles`), sampled every RAY_STEP_PX of the finer pixel
    spacing."""
    rows, cols = myocardium.shape
    step_mm = RAY_STEP_PX * min(spacing)
    reach = float(np.hypot(rows * spacing[0], cols * spacing[1]))
    steps = np.arange(0.0, reach, step_mm)
    theta = np.radians(angles_deg)[:, None]
    dy = (-np.sin(theta) if from_apex else np.sin(theta)) * steps / spacing[0]
    dx = np.cos(theta) * steps / spacing[1]
    r = np.rint(centre[0] + dy).astype(int)
    c = np.rint(centre[1] + dx).astype(int)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    r, c = np.clip(r, 0, rows - 1), np.clip(c, 0, cols - 1)
    on_wall = myocardium[r, c] & inside
    on_scar = scar[r, c] & inside
    wall_samples = on_wall.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        length = np.where(wall_samples > 0, wall_samples * step_mm, np.nan)
        fraction = np.where(wall_samples > 0, 100.0 * on_scar.sum(axis=1) / wall_samples, np.nan)
    return length, fraction


def _thirds(ring_slices: list[int], positions: np.ndarray) -> tuple[list[list[int]], int]:
    """The basal, mid and apical thirds of the slices with LV cavity (`ring_slices`, base to apex) counted on the
    stack's slice grid: each slice's place is its distance from the basal one in median steps of `positions` (mm
    along the normal), so a slice missing inside the LV keeps its place and the others keep their third (on an even
    stack the same as dividing the slices). Returns the thirds and how many grid places inside the LV hold no
    slice."""
    if len(ring_slices) < 2 or positions.size < 2:
        return [list(part) for part in np.array_split(np.asarray(ring_slices, dtype=int), 3)], 0
    step = float(np.median(np.abs(np.diff(np.sort(positions)))))
    places = np.rint(np.abs(positions[ring_slices] - positions[ring_slices[0]]) / step).astype(int)
    bounds = [part[-1] if part.size else -1 for part in np.array_split(np.arange(places[-1] + 1), 3)]
    thirds: list[list[int]] = [[], [], []]
    for k, place in zip(ring_slices, places):
        thirds[next(i for i, bound in enumerate(bounds) if place <= bound)].append(int(k))
    return thirds, int(places[-1] + 1 - len(set(places.tolist())))


def aha_segments(
    labels: np.ndarray,
    pixel_spacing_rc: Sequence[float],
    slice_positions_mm: Sequence[float],
    basal_end: BasalEnd,
    *,
    scar: bool = True,
    wall_thickness: bool = False,
    orientation: Sequence[float] | None = None,
) -> AHAResult:
    """The AHA 17 segments of a short-axis label map (slices, rows, cols) with per-segment values.

    `slice_positions_mm`: position of each slice along the stack normal (monotonic); `basal_end`: which end of the
    given slice order is the base ("first" = slice 0). `scar`: scar extent (% of the segment's myocardium voxels,
    scar incl. MVO) and transmurality (scar share of the wall along rays from the LV centre, one per degree:
    maximum and mean over the segment's rays, in %); `wall_thickness`: mean wall length along the same rays in mm
    (meaningful on an end-diastolic label map). Segment 17 (apical cap: myocardium slices beyond the cavity) has
    scar extent only. Without an RV blood pool (label 5) in any slice the insertion points are unknown: the result
    is not applicable and says why.

    `orientation`: the stack's ImageOrientationPatient. The anterior RV insertion point is the one from which the
    RV arc runs counter-clockwise seen from the apex (a normal heart's handedness, which no rotation changes); with
    the orientation, a mirror image (RV to the patient's left, apex to the right) runs clockwise with
    MIRRORED_CAVEAT, and the anatomy disagreeing with the patient axes otherwise gives unusual_turn_caveat
    (heart_handedness), an RV neither left nor right of the LV MIDLINE_CAVEAT. Angles are in millimetres
    (PixelSpacing).
    """
    labels, spacing, positions = _check(labels, pixel_spacing_rc, slice_positions_mm, basal_end)
    axes = None if orientation is None else _inplane_axes(orientation, spacing)
    myocardium = np.isin(labels, [int(v) for v in MYOCARDIUM_LABELS])
    enhanced = np.isin(labels, [int(v) for v in ENHANCED_LABELS])
    pool = labels == int(Label.LV_BLOOD_POOL)
    rv = labels == int(Label.RV_BLOOD_POOL)
    order = list(range(labels.shape[0])) if basal_end == "first" else list(range(labels.shape[0]))[::-1]
    with_myocardium = [k for k in order if myocardium[k].any()]
    if not with_myocardium:
        return AHAResult(False, "no LV myocardium in any slice", reader_reason=READER_NO_LV)
    if not rv.any():
        return AHAResult(False, "no RV blood pool (label 5) in the label map: the RV insertion points that bound the "
                                "septum are unknown, so AHA segments are not assigned",
                         reader_reason=READER_NO_INSERTION)
    # apical cap (17): myocardium slices at the apical end beyond the last slice with LV cavity
    with_cavity = [k for k in with_myocardium if pool[k].any()]
    if not with_cavity:
        return AHAResult(False, "no slice with LV blood pool: the LV centre and the thirds are undefined",
                         reader_reason=READER_NO_LV)
    last_cavity = with_myocardium.index(with_cavity[-1])
    ring_slices = with_myocardium[:last_cavity + 1]
    cap_slices = with_myocardium[last_cavity + 1:]
    thirds, missing = _thirds(ring_slices, positions)
    names = ("basal", "mid", "apical")
    # slices ascend along +n; basal last means +n points apex -> base, so the displayed image is seen from the apex
    from_apex = basal_end == "last"

    centres, arcs = {}, {}
    for k in ring_slices:
        source = pool[k] if pool[k].any() else myocardium[k]
        centres[k] = tuple(np.argwhere(source).mean(axis=0))
        found = _rv_arc_ends(myocardium[k], rv[k], centres[k], from_apex, spacing)
        if found is not None:
            arcs[k] = found
    if not arcs:
        return AHAResult(False, "the RV blood pool touches the LV myocardium in no slice (or surrounds it): the RV "
                                "insertion points are unknown, so AHA segments are not assigned",
                         reader_reason=READER_NO_INSERTION)
    # which end of the RV arc is anterior: from the heart's own anatomy (a heart's handedness survives any rotation),
    # mirrored only where the patient geometry shows a mirror image (heart_handedness)
    direction, caveats, side = 1, [GAP_CAVEAT] if missing else [], None
    if axes is not None:
        separation = float(np.mean([
            (_direction_lps(end, from_apex, axes) - _direction_lps(start, from_apex, axes)) @ PATIENT_ANTERIOR_LPS
            for start, end in arcs.values()]))
        offset = rv_side_offset_mm(labels, spacing, orientation)
        side = rv_side(offset)
        normal = np.cross(np.asarray(orientation, float)[:3], np.asarray(orientation, float)[3:])
        direction, caveat = heart_handedness(side, apex_side(normal if basal_end == "first" else -normal),
                                             separation)
        caveats += [caveat] if caveat else []
        if side is None and offset is not None:
            caveats.append(MIDLINE_CAVEAT)
    insertion = {k: (ends if direction == 1 else ends[::-1]) for k, ends in arcs.items()}  # (anterior, inferior)
    default = (_circular_mean([a for a, _ in insertion.values()]), _circular_mean([b for _, b in insertion.values()]))

    segment_map = np.zeros(labels.shape, dtype=np.int8)
    rays: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {s: [] for s in range(1, 17)}
    for third_index, slices in enumerate(thirds):
        apical = third_index == 2
        first_segment = (1, 7, 13)[third_index]
        for k in slices:
            anterior, inferior = insertion.get(k, default)
            rows, cols = np.nonzero(myocardium[k])
            sector = _sector_of(_angles(rows, cols, centres[k], from_apex, spacing), anterior, inferior, apical,
                                direction)
            segment_map[k, rows, cols] = first_segment + sector
            if scar or wall_thickness:
                ray_angles = np.arange(0.0, 360.0, 1.0 / RAYS_PER_DEGREE) + 0.5 / RAYS_PER_DEGREE
                length, fraction = _ray_profiles(myocardium[k], enhanced[k], centres[k], spacing, ray_angles,
                                                 from_apex)
                ray_sector = _sector_of(ray_angles, anterior, inferior, apical, direction)
                for s in np.unique(ray_sector):
                    chosen = ray_sector == s
                    rays[first_segment + int(s)].append((length[chosen], fraction[chosen]))
    for k in cap_slices:
        segment_map[k][myocardium[k]] = 17

    segments = []
    for number in range(1, 18):
        voxels = segment_map == number
        slices = tuple(int(k) for k in np.nonzero(voxels.any(axis=(1, 2)))[0])
        count = int(voxels.sum())
        values = dict(segment=number, name=SEGMENT_NAMES[number], slices=slices, myocardium_voxels=count)
        if scar:
            scar_count = int((voxels & enhanced).sum())
            values.update(scar_voxels=scar_count, scar_extent_percent=100.0 * scar_count / count if count else None)
        profiles = rays.get(number, [])
        lengths = np.concatenate([p[0] for p in profiles]) if profiles else np.array([])
        fractions = np.concatenate([p[1] for p in profiles]) if profiles else np.array([])
        if scar and number != 17 and np.isfinite(fractions).any():
            scarred = fractions[np.isfinite(fractions) & (fractions > 0)]
            values.update(transmurality_max_percent=float(np.nanmax(fractions)),
                          transmurality_mean_percent=float(np.nanmean(fractions)),
                          transmurality_scarred_mean_percent=float(scarred.mean()) if scarred.size else 0.0)
            # the segment's class from its mean over the rays (the segmental extent of hyperenhancement that predicts
            # recovery, Kim et al. NEJM 2000), not its single worst ray, which overstates a patchy segment
            values["transmurality_class"] = transmurality_class(values["transmurality_mean_percent"])
        elif scar and number == 17:
            values["transmurality_class"] = None
        if wall_thickness and number != 17 and np.isfinite(lengths).any():
            values["wall_thickness_mm"] = float(np.nanmean(lengths))
        segments.append(SegmentValues(**values))
    thirds_out = {name: [int(k) for k in part] for name, part in zip(names, thirds)}
    thirds_out["apex"] = [int(k) for k in cap_slices]
    rv_info = {"slices_with_insertion_points": sorted(int(k) for k in insertion),
               "slices_using_mean_insertion_points": sorted(int(k) for k in ring_slices if k not in insertion),
               "anterior_deg": round(default[0], 1), "inferior_deg": round(default[1], 1),
               "angle_convention": "degrees counter-clockwise seen from the apex, 0 = image row direction, "
                                   "measured in mm (PixelSpacing)",
               "anterior_from": "the heart's anatomy (counter-clockwise seen from the apex from the anterior RV "
                                "insertion point), checked against the patient geometry (ImageOrientationPatient)"
               if axes is not None else "a normally placed heart's handedness (no patient geometry given)",
               "segments_run": ("counter-clockwise" if direction == 1 else "clockwise") + " seen from the apex",
               "rv_side": side}
    return AHAResult(True, None, tuple(segments), segment_map, thirds_out, rv_info, basal_end,
                     "; ".join(caveats) or None)


def geometry_warnings(block: dict | None) -> list[str]:
    """The stack warnings (every output lists them) that an `aha_segments` block's geometry caveats give: "AHA
    segments: " + MIRRORED_CAVEAT / unusual_turn_caveat's text / MIDLINE_CAVEAT where present."""
    caveat = str((block or {}).get("caveat") or "")
    start = caveat.find(UNUSUAL_TURN_START)
    end = caveat.find(UNUSUAL_TURN_END, start) if start >= 0 else -1
    turned = [caveat[start:end + len(UNUSUAL_TURN_END)]] if end >= 0 else []
    return [f"AHA segments: {text}" for text in [MIRRORED_CAVEAT] * (MIRRORED_CAVEAT in caveat) + turned
            + [MIDLINE_CAVEAT] * (MIDLINE_CAVEAT in caveat)]


def aha_summary(
    labels: np.ndarray,
    pixel_spacing_rc: Sequence[float],
    slice_positions_mm: Sequence[float],
    basal_end: BasalEnd,
    *,
    scar: bool = True,
    wall_thickness: bool = False,
    orientation: Sequence[float] | None = None,
) -> dict:
    """The summary.json block of `aha_segments` (`lge.aha_segments` / `cine.aha_segments`); never raises on a label
    map that merely lacks what the model needs: {"applicable": false, "reason": ...} instead."""
    try:
        return aha_segments(labels, pixel_spacing_rc, slice_positions_mm, basal_end, scar=scar,
                            wall_thickness=wall_thickness, orientation=orientation).summary()
    except ValueError as error:
        return _not_computed(error)


def stack_geometry(orientation: Sequence[float], positions_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the slices along the stack normal in mm, the normal) from ImageOrientationPatient and the
    slices' ImagePositionPatient (PS3.3 C.7.6.2.1.1: normal = row direction x column direction)."""
    orientation = np.asarray(orientation, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return np.asarray(positions_lps, dtype=float).reshape(-1, 3) @ normal, normal


def basal_end_for_volume(labels: np.ndarray, volume) -> BasalEnd:
    """The basal end of a dicomnode Volume's stack from its geometry (basal_end_from_geometry): from the anterior-
    inferior pointing of the apex, which levo-, meso- and dextrocardia share and a rotation about the stack normal
    does not change; only where the stack normal is nearly orthogonal to that (a normal along the patient's left-right
    axis) from the apex pointing away from the RV's side: to the patient's left where the RV lies to the right of the
    LV, to the right where it lies to the left. Raises ValueError (or TypeError) where the geometry is missing or
    cannot tell."""
    orientation, positions_lps = getattr(volume, "orientation", None), getattr(volume, "positions", None)
    if orientation is None or positions_lps is None:
        raise ValueError("the stack has no patient geometry")
    _, normal = stack_geometry(orientation, positions_lps)
    try:
        return basal_end_from_geometry(normal, None)
    except ValueError:
        side = rv_side(rv_side_offset_mm(labels, volume.pixel_spacing, orientation))
        if side is None:
            raise
        return basal_end_from_geometry(normal, {"left": "right", "right": "left"}[side])


def aha_segments_for_volume(labels: np.ndarray, volume, *, scar: bool = True, wall_thickness: bool = False
                            ) -> AHAResult:
    """`aha_segments` on a dicomnode Volume's geometry: positions along its normal, the basal end from
    basal_end_for_volume and the anterior RV insertion point from ImageOrientationPatient. Raises ValueError (or
    TypeError) where the geometry is missing or cannot tell the basal end."""
    orientation = getattr(volume, "orientation", None)
    basal_end = basal_end_for_volume(labels, volume)
    positions, _ = stack_geometry(orientation, volume.positions)
    return aha_segments(labels, volume.pixel_spacing, positions, basal_end, scar=scar, wall_thickness=wall_thickness,
                        orientation=orientation)


def aha_summary_for_volume(labels: np.ndarray, volume, *, scar: bool = True, wall_thickness: bool = False) -> dict:
    """The summary.json block of `aha_segments_for_volume`; {"applicable": false, "reason": ...} where the stack's
    geometry is missing or cannot orient the segments."""
    try:
        return aha_segments_for_volume(labels, volume, scar=scar, wall_thickness=wall_thickness).summary()
    except (TypeError, ValueError) as error:
        return _not_computed(error)


def _not_computed(error: Exception) -> dict:
    """The summary block of a stack whose geometry or labels the segment model refused (ValueError / TypeError)."""
    orientation = "orthogonal" in str(error)  # basal_end_from_geometry: the stack's long axis is not the usual one
    return {"applicable": False, "reason": f"AHA segments not computed: {error}",
            "reader_reason": READER_ORIENTATION if orientation else READER_GEOMETRY, "model": MODEL_NAME}


#: how the reason ends where a stack's AHA segments are withheld for its coverage (aha_summary_for_stack)
WHOLE_STACK_NEEDED = "the basal, mid and apical thirds need a stack from base to apex"
#: `caveat` of a stack whose coverage block says it does not hold the whole LV (aha_summary_for_stack)
PARTIAL_STACK_CAVEAT = ("the stack does not hold the whole LV (coverage): the basal, mid and apical thirds divide the "
                        "slices present, and segments beyond the stack are missing")
#: PARTIAL_STACK_CAVEAT where the base is only not confirmed covered (cine_metrics.base_unconfirmed_only)
BASE_UNCONFIRMED_CAVEAT = ("the stack's base is not confirmed covered (coverage): the basal, mid and apical thirds "
                           "divide the slices present, so if the base was cut off the 'basal' segments are "
                           "mid-ventricular and the basal ones are missing")


def short_stack_text(coverage: dict | None) -> str | None:
    """Why a stack covers clearly less than the LV (its coverage block's `lv_shorter_than_whole`, from
    cine_metrics.stack_coverage: the LV found spans under MIN_LV_EXTENT_MM, the shortest whole adult LV, and the
    adult rule applies), or None."""
    if not coverage or not coverage.get("lv_shorter_than_whole"):
        return None
    return (f"the LV found spans only {coverage.get('lv_extent_mm'):.0f} mm of stack, under the "
            f"{MIN_LV_EXTENT_MM:.0f} mm of the shortest whole LV: the stack covers clearly less than the LV")


def aha_summary_for_stack(labels: np.ndarray, volume, coverage: dict | None, withheld: str | None = None, *,
                          scar: bool = True, wall_thickness: bool = False) -> dict:
    """The summary.json `aha_segments` block of a pipeline's stack (LGE and cine alike: one rule, one wording).

    Not assigned ({"applicable": false, "reason": ...}) where the pipeline withholds its numbers (`withheld`, the
    reason) or the stack covers clearly less than the LV (`coverage`, the pipeline's coverage block with
    `lv_extent_mm` and `lv_shorter_than_whole`: short_stack_text): its thirds would call mid-ventricular slices basal
    and apical. Otherwise aha_summary_for_volume, with PARTIAL_STACK_CAVEAT added where the coverage block says the
    stack does not hold the whole LV (`complete` false) and GAP_CAVEAT where a slice is missing inside the LV.
    `labels`: (slices, rows, cols) node labels on the volume's grid."""
    short = short_stack_text(coverage)
    if withheld or short:
        return {"applicable": False, "model": MODEL_NAME, "reason": f"{withheld or short}; {WHOLE_STACK_NEEDED}",
                "reader_reason": None if withheld else READER_SHORT_STACK}
    block = aha_summary_for_volume(labels, volume, scar=scar, wall_thickness=wall_thickness)
    if block.get("applicable") and coverage and coverage.get("complete") is False:
        partial = BASE_UNCONFIRMED_CAVEAT if base_unconfirmed_only(coverage) else PARTIAL_STACK_CAVEAT
        block["caveat"] = "; ".join(filter(None, (block.get("caveat"), partial)))
    return block
