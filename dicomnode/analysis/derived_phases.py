"""Cine phases that hold no acquisition of their own: repeated or interpolated reconstructions of their neighbours.

Scanners and exports may reconstruct more cine phases than were acquired: view sharing and temporal interpolation
blend the pixel data of neighbouring acquired phases, and some exports repeat a phase. Such phases add frames but no
information, and they defeat the ED/ES temporal consistency check (cine_metrics.temporal_jumps), whose median over a
phase and its two neighbours cannot see a segmentation jump that the repeats or blends spread over several phases
(break42b F2: the same 12 acquired phases sent as 36 interpolated or 48 repeated phases moved ED and ES onto the two
frames the 12-phase run rejects as jumps, LVEF 58.5 % for 44.6 %). The phases found here are left out of the timing
(find_cardiac_phases runs on the distinct phases alone) and of the temporal resolution (temporal_resolution_note).

Rules, on the pixel data of the whole stack (every slice at once), in temporal order:
- repeated: a phase whose pixel data equal the phase before it at every slice (the first phase never is);
- interpolated: after the repeats are set aside, a phase whose pixel data are a blend (1 - a) x previous + a x next
  of its neighbouring phases (0 <= a <= 1), to within BLEND_RESIDUAL_FRACTION of the difference between those
  neighbours (the rounding of blended pixel values to integers leaves 0.03-0.11 on the acdc4d patient090 cine
  interpolated x3; acquired phases leave 0.30-0.65 there and 0.34-0.51 on Sunnybrook SCD0000101 / 301, 20 phases:
  their noise is independent from frame to frame, which no blend reproduces), and only where the blended phases
  form a regular pattern: the same number between every two acquired ones (a reconstruction of k phases per acquired
  one; between the last acquired phase and the first, that number or none), so that a chance near-blend in an
  acquired cine is not taken for one. The first and last phases are judged
  against each other as neighbours only where the cycle is whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: the largest residual of a blend of the neighbouring phases, as a share of the difference between them, for which
#: a phase is taken as interpolated (module rule)
BLEND_RESIDUAL_FRACTION = 0.2


@dataclass
class DerivedPhases:
    """The phases of a cine that hold an acquisition of their own (`distinct`, indices) and those that do not:
    `repeated` (the pixel data of the phase before) and `interpolated` (a blend of their neighbours)."""

    n_phases: int
    distinct: list[int]
    repeated: list[int] = field(default_factory=list)
    interpolated: list[int] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.repeated or self.interpolated)

    def note(self) -> str | None:
        """The cine note naming what was found, None where every phase is distinct."""
        if not self.any:
            return None
        parts = []
        if self.repeated:
            parts.append(f"{len(self.repeated)} repeat the pixel data of the phase before them at every slice")
        if self.interpolated:
            parts.append(f"{len(self.interpolated)} are blends of their neighbouring phases' pixel data at every "
                         "slice (interpolated or view-shared reconstruction)")
        derived = len(self.repeated) + len(self.interpolated)
        return (f"{DERIVED_NOTE_START}{derived} of the {self.n_phases} phases sent: {' and '.join(parts)}; ED and ES "
                f"are chosen, and phases checked for segmentation jumps, among the {len(self.distinct)} distinct "
                "phases, and the temporal resolution is theirs")

    def summary(self) -> dict:
        """summary.json `cine.timing.derived_phases`: 0-based indices, as the block's other phase indices."""
        return {"distinct": list(self.distinct), "repeated": list(self.repeated),
                "interpolated": list(self.interpolated)}


#: how DerivedPhases.note begins
DERIVED_NOTE_START = "phases without an acquisition of their own: "


def derived_phases(pixels, whole_cycle: bool = True) -> DerivedPhases:
    """The repeated and interpolated phases of a cine (module rules), from its pixel data (phases, slices, rows,
    cols) in temporal order; `whole_cycle`: the last phase is followed by the first (no phase of the cycle missing).
    Fewer than 3 phases: every phase distinct. Raises ValueError for pixel data that are not 4-D."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 4:
        raise ValueError(f"cine pixels must be (phases, slices, rows, cols), got shape {pixels.shape}")
    n = pixels.shape[0]
    if n < 3:
        return DerivedPhases(n, list(range(n)))
    frames = pixels.reshape(n, -1)
    repeated = [p for p in range(1, n) if np.array_equal(frames[p], frames[p - 1])]
    kept = [p for p in range(n) if p not in repeated]
    interpolated = _blended(frames, kept, whole_cycle)
    if len(kept) - len(interpolated) < 2:
        return DerivedPhases(n, list(range(n)))  # no telling which phases were acquired (e.g. one still image)
    distinct = [p for p in kept if p not in interpolated]
    return DerivedPhases(n, distinct, repeated, interpolated)


def _blended(frames: np.ndarray, kept: list[int], whole_cycle: bool) -> list[int]:
    """The phases of `kept` (indices into `frames`, (phases, pixels)) that are blends of the kept phases on either
    side (BLEND_RESIDUAL_FRACTION), where they recur regularly; [] otherwise."""
    m = len(kept)
    if m < 3:
        return []
    found = []
    for k in range(m):
        if not whole_cycle and k in (0, m - 1):
            continue
        before, here, after = (frames[kept[j]].astype(np.float64) for j in (k - 1, k, (k + 1) % m))
        span = after - before
        size = float(np.linalg.norm(span))
        if size == 0:
            continue
        share = float(np.clip((here - before) @ span / size ** 2, 0.0, 1.0))
        if np.linalg.norm(here - before - share * span) <= BLEND_RESIDUAL_FRACTION * size:
            found.append(k)
    if not found or len(found) == m:
        return []
    acquired = [k for k in range(m) if k not in found]
    # a regular reconstruction: the same number of blends after every acquired phase; the run from the last acquired
    # phase round to the first may also hold none (a reconstruction that does not blend across the cycle's end)
    runs = {b - a - 1 for a, b in zip(acquired, acquired[1:])}
    wrap = acquired[0] + m - acquired[-1] - 1
    if len(runs) != 1 or runs == {0} or (whole_cycle and wrap not in runs | {0}):
        return []
    return [kept[k] for k in found]
