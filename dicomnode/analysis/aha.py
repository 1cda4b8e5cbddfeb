"""AHA 17-segment model of the LV on a short-axis label map: segments, scar extent, transmurality, wall thickness.

Cerqueira MD et al., "Standardized myocardial segmentation and nomenclature for tomographic imaging of the heart",
Circulation 2002;105:539-542: basal, mid and apical thirds of the LV; 6 x 60 degree sectors at base and mid, 4 x 90
degree sectors at the apex, 17 = apical cap. The anterior and inferior RV insertion points bound the septum: the
anterior one at the 1|2 (7|8) boundary, the inferior one at the 3|4 (9|10) boundary; the apical septal segment 14 is
centred on the septum. Numbering counter-clockwise as seen from the apex (in a normally placed heart): 1 anterior,
2 anteroseptal, 3 inferoseptal, 4 inferior, 5 inferolateral, 6 anterolateral (7-12 the same at mid), 13 anterior,
14 septal, 15 inferior, 16 lateral.

Anterior and inferior are anatomical directions: given ImageOrientationPatient, the anterior RV insertion point is
the end of the RV contact arc lying further towards the patient's anterior (-y of DICOM LPS), and the segments run
from it across the septum, whatever the handedness of the stored image or the heart's position. In a mirrored heart
(situs inversus, mirror-image dextrocardia) they then run clockwise seen from the apex, and the result carries
MIRRORED_CAVEAT: the RV lies to the patient's left of the LV; MIDLINE_CAVEAT: neither left nor right of it.

Pure functions: numpy in, numbers out. Node labels (dicomnode.labels): 1 LV blood pool, 2 healthy myocardium,
3 scar, 4 MVO, 5 RV blood pool. Slices must be ordered along n = row direction x column direction (the dicomnode
Volume convention: ascending position along the stack normal), so that the displayed image is seen looking along +n.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

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
#: the anterior RV insertion point must lie at least this much further anterior than the inferior one (difference
#: of the -y components of their unit directions from the LV centre; about 1 in a short-axis plane, 0 where the
#: plane holds no anterior-posterior direction) for the geometry to tell them apart
MIN_ANTERIOR_SEPARATION = 0.2
#: the least length of patient anterior projected into the plane for a plane to show anterior at all (a coronal
#: plane: 0); where it does and the RV insertion points lie equally far anterior with the RV to the patient's right,
#: the heart is taken to be placed normally (aha_segments)
MIN_ANTERIOR_IN_PLANE = 0.5
#: the RV centre must lie at least this far (mm, along the patient's left-right axis) from the LV centre for its
#: side to count (a normal heart: RV some 30-50 mm to the patient's right)
MIN_RV_SIDE_OFFSET_MM = 5.0
#: `caveat` of a result where the RV lies to the patient's left of the LV
MIRRORED_CAVEAT = ("RV to the left of the LV: dextrocardia / situs inversus? AHA segments named from the patient "
                   "geometry: confirm")
#: `caveat` of a result where the RV lies neither to the right nor to the left of the LV (its centre within
#: MIN_RV_SIDE_OFFSET_MM of the LV's along the patient's left-right axis: straight in front of or behind it)
MIDLINE_CAVEAT = ("RV neither to the right nor to the left of the LV: mesocardia or an unusual heart position? AHA "
                  "segments named from the anterior-inferior axis only: confirm")
#: `caveat` where the segments run clockwise seen from the apex the geometry gives, with the RV to the right
UNUSUAL_TURN_CAVEAT = ("the AHA segments run clockwise seen from the apex although the RV lies to the right of the "
                       "LV: the basal end of the stack (basal / apical thirds) or the heart's anatomy is unusual: "
                       "confirm")

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
    transmurality_class: str | None = None
    wall_thickness_mm: float | None = None

    def summary(self) -> dict:
        out = {"segment": self.segment, "name": self.name, "slices": list(self.slices),
               "myocardium_voxels": self.myocardium_voxels}
        if self.scar_voxels is not None:
            out.update(scar_voxels=self.scar_voxels, scar_extent_percent=_round(self.scar_extent_percent),
                       transmurality_max_percent=_round(self.transmurality_max_percent),
                       transmurality_mean_percent=_round(self.transmurality_mean_percent),
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


def _angles(rows: np.ndarray, cols: np.ndarray, centre: tuple[float, float], from_apex: bool) -> np.ndarray:
    """Angle in degrees [0, 360), counter-clockwise as seen from the apex."""
    dy, dx = rows - centre[0], cols - centre[1]
    # on screen (x right, y down) the image is seen looking along +n; seen from the apex when +n points to the base
    angle = np.degrees(np.arctan2(-dy, dx)) if from_apex else np.degrees(np.arctan2(dy, dx))
    return angle % 360.0


def _rv_arc_ends(myocardium: np.ndarray, rv: np.ndarray, centre, from_apex: bool) -> tuple[float, float] | None:
    """The RV insertion angles: the ends of the arc of RV blood pool touching the myocardium (RV pixels 4-adjacent
    to LV myocardium, angles from the LV centre), as (start, end) with the arc running counter-clockwise from start
    to end (in a normally placed heart seen from the apex: anterior, inferior)."""
    if not rv.any():
        return None
    touching = ndimage.binary_dilation(myocardium, structure=ndimage.generate_binary_structure(2, 1)) & rv
    if touching.sum() < 2:
        return None
    rows, cols = np.nonzero(touching)
    angles = np.sort(_angles(rows, cols, centre, from_apex))
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


def _anterior_in_plane(axes) -> float:
    """Length (0-1) of patient anterior (LPS -y, unit) projected into the image plane of `_inplane_axes`."""
    return float(np.hypot(*[(axis / np.linalg.norm(axis)) @ PATIENT_ANTERIOR_LPS for axis in axes]))


def _direction_lps(angle_deg: float, from_apex: bool, axes) -> np.ndarray:
    """Unit LPS direction of an in-plane angle of `_angles` (from the LV centre)."""
    theta = np.radians(angle_deg)
    dy = -np.sin(theta) if from_apex else np.sin(theta)
    vector = dy * axes[0] + np.cos(theta) * axes[1]
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
    """Per ray: (wall length in mm, scar fraction of the wall in %); NaN where the ray crosses no myocardium."""
    rows, cols = myocardium.shape
    reach = float(np.hypot(rows, cols))
    steps = np.arange(0.0, reach, RAY_STEP_PX)
    theta = np.radians(angles_deg)[:, None]
    dy = (-np.sin(theta) if from_apex else np.sin(theta)) * steps
    dx = np.cos(theta) * steps
    r = np.rint(centre[0] + dy).astype(int)
    c = np.rint(centre[1] + dx).astype(int)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    r, c = np.clip(r, 0, rows - 1), np.clip(c, 0, cols - 1)
    on_wall = myocardium[r, c] & inside
    on_scar = scar[r, c] & inside
    step_mm = RAY_STEP_PX * np.hypot(spacing[0] * np.sin(theta[:, 0]), spacing[1] * np.cos(theta[:, 0]))
    wall_samples = on_wall.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        length = np.where(wall_samples > 0, wall_samples * step_mm, np.nan)
        fraction = np.where(wall_samples > 0, 100.0 * on_scar.sum(axis=1) / wall_samples, np.nan)
    return length, fraction


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

    `orientation`: the stack's ImageOrientationPatient. With it the anterior RV insertion point is the one further
    towards patient anterior (LPS -y) and the segments run from it across the septum, whichever way that turns on
    screen; where the two insertion points are not MIN_ANTERIOR_SEPARATION apart in that direction (the RV straight
    to the side of the LV, as on a real MyoPS study), the plane shows anterior (MIN_ANTERIOR_IN_PLANE) and the RV
    lies to the patient's right of the LV, the arc is taken
    to run as in a normally placed heart (counter-clockwise from anterior seen from the apex, as without geometry);
    where the RV's side is unknown or left as well, the result is not applicable and says why; a RV lying to the patient's left of the LV gives MIRRORED_CAVEAT. Without it (a label
    map with no patient geometry) the anterior one is assumed where a normally placed heart has it (the arc runs
    counter-clockwise seen from the apex from anterior to inferior).
    """
    labels, spacing, _ = _check(labels, pixel_spacing_rc, slice_positions_mm, basal_end)
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
    thirds = [list(part) for part in np.array_split(np.asarray(ring_slices, dtype=int), 3)]
    names = ("basal", "mid", "apical")
    # slices ascend along +n; basal last means +n points apex -> base, so the displayed image is seen from the apex
    from_apex = basal_end == "last"

    centres, arcs = {}, {}
    for k in ring_slices:
        source = pool[k] if pool[k].any() else myocardium[k]
        centres[k] = tuple(np.argwhere(source).mean(axis=0))
        found = _rv_arc_ends(myocardium[k], rv[k], centres[k], from_apex)
        if found is not None:
            arcs[k] = found
    if not arcs:
        return AHAResult(False, "the RV blood pool touches the LV myocardium in no slice (or surrounds it): the RV "
                                "insertion points are unknown, so AHA segments are not assigned",
                         reader_reason=READER_NO_INSERTION)
    # which end of the RV arc is anterior: from the patient geometry where known, else a normal heart's handedness
    direction, caveats, side = 1, [], None
    anterior_from = "a normally placed heart's handedness (no patient geometry given)"
    if axes is not None:
        anterior_from = "patient geometry (ImageOrientationPatient: anterior = -y of LPS)"
        separation = float(np.mean([
            (_direction_lps(end, from_apex, axes) - _direction_lps(start, from_apex, axes)) @ PATIENT_ANTERIOR_LPS
            for start, end in arcs.values()]))
        offset = rv_side_offset_mm(labels, spacing, orientation)
        side = rv_side(offset)
        if abs(separation) >= MIN_ANTERIOR_SEPARATION:
            direction = -1 if separation > 0 else 1  # the arc's end lies further anterior: it runs clockwise from it
        elif side != "right" or _anterior_in_plane(axes) < MIN_ANTERIOR_IN_PLANE:
            return AHAResult(False, "which RV insertion point is anterior cannot be told from the patient geometry "
                                    f"(ImageOrientationPatient): they lie about equally far anterior (separation "
                                    f"{abs(separation):.2f}, under {MIN_ANTERIOR_SEPARATION}); an unusual plane or "
                                    "heart position (dextrocardia / situs inversus?): AHA segments not assigned",
                             reader_reason=READER_ORIENTATION)
        else:  # a plane that shows anterior, the RV straight to the patient's right of the LV: a normal heart's turn
            anterior_from = ("a normally placed heart's handedness (the RV insertion points lie equally far anterior, "
                             "the RV to the patient's right)")
        if side == "left":
            caveats.append(MIRRORED_CAVEAT)
        elif side == "right" and direction == -1:
            caveats.append(UNUSUAL_TURN_CAVEAT)
        elif side is None and offset is not None:
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
            sector = _sector_of(_angles(rows, cols, centres[k], from_apex), anterior, inferior, apical, direction)
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
            values.update(transmurality_max_percent=float(np.nanmax(fractions)),
                          transmurality_mean_percent=float(np.nanmean(fractions)))
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
               "angle_convention": "degrees counter-clockwise seen from the apex, 0 = image row direction",
               "anterior_from": anterior_from,
               "segments_run": ("counter-clockwise" if direction == 1 else "clockwise") + " seen from the apex",
               "rv_side": side}
    return AHAResult(True, None, tuple(segments), segment_map, thirds_out, rv_info, basal_end,
                     "; ".join(caveats) or None)


def geometry_warnings(block: dict | None) -> list[str]:
    """The stack warnings (every output lists them) that an `aha_segments` block's geometry caveats give: "AHA
    segments: " + MIRRORED_CAVEAT / UNUSUAL_TURN_CAVEAT / MIDLINE_CAVEAT where present."""
    caveat = str((block or {}).get("caveat") or "")
    return [f"AHA segments: {text}" for text in (MIRRORED_CAVEAT, UNUSUAL_TURN_CAVEAT, MIDLINE_CAVEAT)
            if text in caveat]


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
    """The basal end of a dicomnode Volume's stack from its geometry (basal_end_from_geometry), the apex taken to
    point away from the RV's side: to the patient's left where the RV lies to the right of the LV (normal anatomy),
    to the right where it lies to the left (a mirrored heart), anterior-inferior only where the side is unknown.
    Raises ValueError (or TypeError) where the geometry is missing or cannot tell."""
    orientation, positions_lps = getattr(volume, "orientation", None), getattr(volume, "positions", None)
    if orientation is None or positions_lps is None:
        raise ValueError("the stack has no patient geometry")
    _, normal = stack_geometry(orientation, positions_lps)
    side = rv_side(rv_side_offset_mm(labels, volume.pixel_spacing, orientation))
    return basal_end_from_geometry(normal, {"left": "right", "right": "left", None: None}[side])


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
