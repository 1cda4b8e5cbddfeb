"""Comprehensive 3D SR (TID 1500) of the LGE and cine numbers, and a separate SR for report-text suggestions."""
from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicomnode.analysis import phase_text
from dicomnode.analysis.aha import aha_segments, stack_geometry
from dicomnode.analysis.cine_metrics import body_surface_area_m2
from dicomnode.analysis.pipeline import AlgorithmInfo, PipelineResult, SegmentationResult
from dicomnode.labels import ENHANCED_LABELS, MYOCARDIUM_LABELS, Label
from dicomnode.results import codes
from dicomnode.results.provenance import NODE_MANUFACTURER, NODE_MODEL_NAME, apply_provenance, node_version
from dicomnode.results.regions import image_regions
from dicomnode.results.seg import SEGMENT_KINDS, segment_plan
from dicomnode.uids import new_uid


def bsa_for(cine: PipelineResult, header: Dataset, default_formula: str) -> tuple[float, str] | None:
    """(BSA m², formula) from the cine result (bsa_m2, bsa_formula) or PatientSize/PatientWeight; None if unknown."""
    formula = str(cine.measurements.get("bsa_formula", default_formula)).lower()
    if cine.measurements.get("bsa_m2"):
        return float(cine.measurements["bsa_m2"]), formula
    try:
        return body_surface_area_m2(float(header.PatientSize), float(header.PatientWeight), formula), formula
    except (AttributeError, TypeError, ValueError):
        return None


def _number(block: dict, key: str) -> float | None:
    value = block.get(key) if isinstance(block, dict) else None
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _measurement(name: Code, value: float | None, unit: Code, **kwargs) -> list[hd.sr.Measurement]:
    """A TID 300 measurement, or nothing when the value is absent."""
    if value is None:
        return []
    return [hd.sr.Measurement(name=name, value=round(float(value), 4), unit=unit, **kwargs)]


def _algorithm_id(algorithm: AlgorithmInfo, parameters: Sequence[str] | None = None) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=algorithm.name[:64], version=algorithm.version[:64],
                                         parameters=list(parameters) if parameters else None)


class _SegmentIndex:
    """The SEG objects written for one SegmentationResult (one per part, see seg.seg_parts), looked up by segment kind
    and phase; outlines of its label map for the image regions OHIF draws.

    Which region a group names (PS3.16 TID 1411):
    - the measured region lies in one SEG: the group references that SEG's segment (row 7, 121191 "Referenced
      Segment", value multiplicity 1: one segment of one SEG instance) and is followed by an outline group with the
      same tracking UID (OHIF lists a measurement only where it finds image coordinates);
    - the region spans several SEG instances (a stack sent as one series per slice gets one SEG per slice series):
      no one segment is the measured region, and row 7 cannot name several, so the group's region is given by image
      regions instead (row 5, the outlines on every slice, each SELECTED FROM its own source image and so naming
      every source series); a reference to one part's segment would attach a stack-wide volume to one slice;
    - the region is empty (no scar, no MVO): no SEG segment or outline shows it, and a TID 1411 group needs a region,
      so the group's region is the region searched (the LV myocardium), its finding type is that region's, and the
      finding is coded as absent (qualitative evaluation <finding> = (272519000, SCT, "Absent"), CID 241); a
      viewer then draws no scar- or MVO-labelled contour around myocardium that is not enhanced.
    """

    def __init__(self, result: SegmentationResult, segs):
        self.result = result
        self.segs = [(None, segs)] if isinstance(segs, Dataset) else list(segs)
        self.labelmap = np.asarray(result.labelmap)

    def mask(self, labels: Sequence[int], phase_position: int = 0) -> np.ndarray:
        return np.isin(self.labelmap[phase_position], [int(v) for v in labels])

    def frames(self, phase_position: int = 0):
        return self.result.volume.frames[self.result.phases[phase_position]]

    def position(self, phase_index: int | None) -> int:
        """The position in result.phases of a phase index of the volume (0 for a single-phase result)."""
        if phase_index is None:
            return 0
        if int(phase_index) not in [int(p) for p in self.result.phases]:
            raise KeyError(f"phase index {phase_index} (0-based) not segmented by {self.result.pipeline}")
        return [int(p) for p in self.result.phases].index(int(phase_index))

    def holders(self, mask: np.ndarray, phase_position: int) -> list[tuple[object, Dataset]]:
        """The SEGs (with their parts) holding some slice of a non-empty mask of that phase."""
        slices = {int(k) for k in np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))}
        return [(part, seg) for part, seg in self.segs
                if part is None or (phase_position in part.phase_positions and slices & set(part.slices))]

    def segment_in(self, seg: Dataset, part, key: str, phase_position: int) -> tuple[int, str] | None:
        """(segment number, tracking UID) of kind `key` and that phase in one SEG, found by its Segment Label; None
        when that SEG does not declare it."""
        positions = part.phase_positions if part is not None else None
        labels = [s.label for s in segment_plan(self.result, positions)
                  if s.kind.key == key and s.phase_position == phase_position]
        for item in seg.SegmentSequence:
            if labels and str(item.SegmentLabel) == labels[0]:
                return int(item.SegmentNumber), str(item.get("TrackingUID", "")) or new_uid()
        return None

    def groups(self, key: str, phase_index: int | None, name: str, tracking_uid: str | None = None,
               absent_measurements=None, **kwargs) -> list:
        """The TID 1411 group(s) of one segment kind (and phase), the region named as the class docstring says:
        segment group + outline group, one group outlined on every slice, or the absent-finding group on the LV
        myocardium (with `absent_measurements` when given: concepts that name the missing finding). Raises KeyError
        for a phase the result did not segment."""
        position = self.position(phase_index)
        kind = SEGMENT_KINDS[key]
        mask = self.mask(kind.labels, position)
        finding_type, finding_sites = kwargs.get("finding_type"), kwargs.get("finding_sites")
        if not mask.any():
            qualitative = list(kwargs.get("qualitative_evaluations") or [])
            if finding_type is not None:
                qualitative.insert(0, hd.sr.QualitativeEvaluation(finding_type, codes.ABSENT))
            group = self.outline_group(
                MYOCARDIUM_LABELS, position, f"{name} (none found)", tracking_uid or new_uid(),
                finding_type=codes.LV_MYOCARDIUM,
                finding_sites=finding_sites or [hd.sr.FindingSite(codes.LV_MYOCARDIUM)],
                measurements=absent_measurements if absent_measurements is not None else kwargs.get("measurements"),
                qualitative=qualitative, all_slices=True)
            return [group] if group is not None else []
        holders = self.holders(mask, position)
        found = self.segment_in(holders[0][1], holders[0][0], key, position) if len(holders) == 1 else None
        if found is None:  # several SEG instances (or none declaring it): the outlines on every slice are the region
            group = self.outline_group(
                mask, position, name, tracking_uid or new_uid(), finding_type=finding_type,
                finding_sites=finding_sites, measurements=kwargs.get("measurements"),
                qualitative=kwargs.get("qualitative_evaluations"), all_slices=True)
            return [group] if group is not None else []
        (part, seg), (number, segment_uid) = holders[0], found
        uid = tracking_uid or segment_uid
        series_uid = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)  # the images the SEG was made on
        reference = hd.sr.ReferencedSegment(
            sop_class_uid=SegmentationStorage, sop_instance_uid=str(seg.SOPInstanceUID), segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(series_uid))
        groups = [hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=name[:64]),
            referenced_segment=reference, algorithm_id=_algorithm_id(self.result.algorithm), **kwargs)]
        # OHIF merges groups by tracking UID and lists a measurement only where it finds image coordinates (TID 1411
        # allows a segment reference or image regions in one group, not both)
        outline = self.outline_group(mask, position, f"{name} (outline)", uid, finding_type, finding_sites)
        return groups + ([outline] if outline is not None else [])

    def outline_group(self, labels: Sequence[int] | np.ndarray, phase_position: int, name: str, uid: str,
                      finding_type=None, finding_sites=None, measurements=None, qualitative=None,
                      all_slices: bool = False):
        """A TID 1411 group whose region is given by image regions (outlines) of a mask; None for an empty mask."""
        mask = labels if isinstance(labels, np.ndarray) and labels.dtype == bool else self.mask(labels, phase_position)
        regions = image_regions(mask, self.frames(phase_position), all_slices=all_slices)
        if not regions:
            return None
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=name[:64]),
            referenced_regions=regions, finding_type=finding_type, finding_sites=finding_sites,
            measurements=measurements or None, qualitative_evaluations=qualitative or None,
            algorithm_id=_algorithm_id(self.result.algorithm),
        )


def _method_block(value) -> dict:
    """A threshold method's summary as a dict: a bare number is its %LGE; {"applicable": false, "reason": ...} or a
    block with an error has no %LGE (the method is then left out of the SR; the PDF says why)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"lge_percent": float(value)}
    if not isinstance(value, dict) or value.get("applicable") is False:
        return {}
    return value


def _segment_volume_ml(index: _SegmentIndex, labels: Sequence[int], phase_position: int = 0) -> float:
    return float(index.mask(labels, phase_position).sum()) * index.result.volume.voxel_volume_ml


def lge_groups(lge: PipelineResult, index: _SegmentIndex | None, config) -> list:
    """LGE groups (PS3.16 TID 1411). Unions are measured on their outlines (image regions on every slice): whole
    myocardium (volume, mass) and scar incl. MVO (`scar_volume_ml`, %LGE by DL, n-SD and FWHM, burden flag); the
    exclusive parts name their SEG segments where one SEG holds them: non-enhanced myocardium, scar without MVO, MVO
    (`mvo_volume_ml`). A finding with no voxel (no scar, no MVO) keeps its 0 cm3, measured on the LV myocardium with
    the finding coded as absent (see _SegmentIndex)."""
    block = lge.summary or {}
    if index is None:
        return []
    algorithm = index.result.algorithm
    dl = dict(method=codes.METHOD_DEEP_LEARNING, algorithm_id=_algorithm_id(algorithm))
    lv_site = [hd.sr.FindingSite(codes.LV_MYOCARDIUM)]
    groups = []
    whole = index.outline_group(
        MYOCARDIUM_LABELS, 0, "LGE LV myocardium, whole", new_uid(), finding_type=codes.LV_MYOCARDIUM,
        measurements=_measurement(codes.VOLUME, _number(block, "myocardium_volume_ml"), codes.UNIT_CM3, **dl)
        + _measurement(codes.LV_MASS, _number(block, "lv_mass_g"), codes.UNIT_G, **dl), all_slices=True)
    groups += [whole] if whole is not None else []

    scar_volume = _number(block, "scar_volume_ml")
    scar_measurements = _measurement(codes.LGE_PERCENT, _number(block, "lge_percent"), codes.UNIT_PERCENT, **dl)
    n = _method_block(block.get("nsd")).get("n", config.analysis.lge.nsd_n)
    not_applicable: list[hd.sr.QualitativeEvaluation] = []
    for key, method, name, parameter in (
            ("nsd", codes.METHOD_NSD, "dicomnode n-SD threshold", f"n={n}"),
            ("fwhm", codes.METHOD_FWHM, "dicomnode FWHM threshold", "threshold=50% of max enhanced signal")):
        raw = block.get(key)
        if isinstance(raw, dict) and raw.get("applicable") is False:
            # said, not left out: "<method>: Not applicable" as a coded evaluation (a NUM without a value, PS3.3
            # C.18.1, is what the standard offers, but highdicom 0.28 cannot read one back); the reason is in the
            # PDF and summary.json
            not_applicable.append(hd.sr.QualitativeEvaluation(method, codes.NOT_APPLICABLE))
            continue
        value = _number(_method_block(raw), "lge_percent")
        if value is not None:
            scar_measurements += _measurement(
                codes.LGE_PERCENT, value, codes.UNIT_PERCENT, method=method,
                algorithm_id=hd.sr.AlgorithmIdentification(name=name, version=node_version(), parameters=[parameter]))
    qualitative = list(not_applicable)
    if isinstance(block.get("large_scar_burden"), bool):
        qualitative.append(hd.sr.QualitativeEvaluation(
            codes.LARGE_LGE_BURDEN, codes.YES if block["large_scar_burden"] else codes.NO))
        # the rule behind the Yes/No: the cut-off and its comparator (analysis.lge.large_burden_*)
        cutoff = lge.measurements.get("large_burden_cutoff_percent", config.analysis.lge.large_burden_percent)
        comparator = lge.measurements.get("large_burden_comparator", config.analysis.lge.large_burden_comparator)
        scar_measurements += _measurement(
            codes.LARGE_LGE_BURDEN_CUTOFF, cutoff, codes.UNIT_PERCENT, algorithm_id=hd.sr.AlgorithmIdentification(
                name="dicomnode large LGE burden rule", version=node_version(),
                parameters=[f"large burden if %LGE {comparator} {cutoff:g} %"]))
    scar = index.outline_group(ENHANCED_LABELS, 0, "LGE scar incl. MVO", new_uid(),
                               finding_type=codes.LATE_CONTRAST_ENHANCEMENT, finding_sites=lv_site,
                               measurements=_measurement(codes.VOLUME, scar_volume, codes.UNIT_CM3, **dl)
                               + scar_measurements, qualitative=qualitative, all_slices=True)
    if scar is None:  # no enhanced voxel: the absent finding, measured on the LV myocardium (see _SegmentIndex)
        absent = [hd.sr.QualitativeEvaluation(codes.LATE_CONTRAST_ENHANCEMENT, codes.ABSENT),
                  hd.sr.QualitativeEvaluation(codes.MVO, codes.ABSENT)]
        scar = index.outline_group(
            MYOCARDIUM_LABELS, 0, "LGE scar incl. MVO (none found)", new_uid(), finding_type=codes.LV_MYOCARDIUM,
            finding_sites=lv_site,
            measurements=_measurement(codes.ENHANCED_VOLUME, scar_volume, codes.UNIT_CM3, **dl) + scar_measurements,
            qualitative=absent + qualitative, all_slices=True)
    groups += [scar] if scar is not None else []

    parts = (("lv_myocardium_nonenhanced", "LGE non-enhanced myocardium", codes.LV_MYOCARDIUM,
              _segment_volume_ml(index, (Label.LV_MYOCARDIUM,)), codes.NONENHANCED_VOLUME),
             ("scar", "LGE scar without MVO", codes.LATE_CONTRAST_ENHANCEMENT,
              _segment_volume_ml(index, (Label.SCAR,)), codes.SCAR_VOLUME),
             ("mvo", "LGE microvascular obstruction", codes.MVO, _number(block, "mvo_volume_ml"), codes.MVO_VOLUME))
    for key, name, finding, volume, absent_concept in parts:
        groups += index.groups(key, None, name, finding_type=finding, finding_sites=lv_site,
                               measurements=_measurement(codes.VOLUME, volume, codes.UNIT_CM3, **dl),
                               absent_measurements=_measurement(absent_concept, volume, codes.UNIT_CM3, **dl))
    groups += aha_groups(block.get("aha_segments"), index, scar=True)
    return groups


def aha_groups(block: dict | None, index: _SegmentIndex, scar: bool, phase_position: int = 0) -> list:
    """One TID 1411 group per AHA segment (finding type LV myocardium, finding site: CID 3717 code), region = the
    segment's myocardium outlined on its slices; LGE: scar extent and transmurality (max, mean); cine at ED: wall
    thickness."""
    if not isinstance(block, dict) or not block.get("applicable"):
        return []
    segment_map = _aha_map(block, index, phase_position)
    if segment_map is None:
        return []
    groups = []
    for values in block.get("segments", []):
        number = int(values["segment"])
        measurements = []
        if scar:
            measurements += _measurement(codes.AHA_SCAR_EXTENT, _number(values, "scar_extent_percent"),
                                         codes.UNIT_PERCENT)
            measurements += _measurement(codes.TRANSMURALITY_MAX, _number(values, "transmurality_max_percent"),
                                         codes.UNIT_PERCENT)
            measurements += _measurement(codes.TRANSMURALITY_MEAN, _number(values, "transmurality_mean_percent"),
                                         codes.UNIT_PERCENT)
        else:
            measurements += _measurement(codes.WALL_THICKNESS, _number(values, "wall_thickness_mm"), codes.UNIT_MM)
        if not measurements:
            continue
        what = "LGE" if scar else "ED wall thickness"
        group = index.outline_group(
            segment_map == number, phase_position, f"AHA {number} {values.get('name', '')} ({what})", new_uid(),
            # the region is the segment's myocardium, enhanced or not: its finding type is the myocardium (a
            # "Late Contrast Enhancement" outline would draw non-enhanced myocardium as scar)
            finding_type=codes.LV_MYOCARDIUM,
            finding_sites=[hd.sr.FindingSite(codes.AHA_SEGMENTS[number])], measurements=measurements,
            all_slices=True)
        if group is not None:
            groups.append(group)
    return groups


def _aha_map(block: dict, index: _SegmentIndex, phase_position: int) -> np.ndarray | None:
    """The AHA segment map of the result's label map, recomputed with the summary's own parameters."""
    basal_end = block.get("basal_end")
    if basal_end not in ("first", "last"):
        return None
    volume = index.result.volume
    positions, _ = stack_geometry(volume.orientation, volume.positions)
    found = aha_segments(index.labelmap[phase_position], volume.pixel_spacing, positions, basal_end,
                         scar=False, wall_thickness=False)
    return found.segment_map if found.applicable else None


def cine_groups(cine: PipelineResult, index: _SegmentIndex | None, header: Dataset, config) -> list:
    """TID 1411 groups per ventricle and phase (ED/ES segments, each with its outline group) and EF/SV groups."""
    block = cine.summary or {}
    groups: list = []
    bsa = bsa_for(cine, header, config.analysis.cine.bsa_formula)
    # papillary muscles counted in the cavity: included in the blood-pool volumes, excluded from the mass
    in_cavity = cine.measurements.get("papillary_muscles", "cavity") == "cavity"
    papillary = codes.PAPILLARY_MUSCLE_INCLUDED if in_cavity else codes.PAPILLARY_MUSCLE_EXCLUDED
    papillary_mass = codes.PAPILLARY_MUSCLE_EXCLUDED if in_cavity else codes.PAPILLARY_MUSCLE_INCLUDED

    # the pipeline's own indexed values (value / unrounded BSA), as summary.json has them: dividing the rounded
    # numbers by the rounded BSA would differ in the second decimal (measurements: unrounded; summary: 2 decimals)
    given = cine.measurements.get("indexed") if isinstance(cine.measurements.get("indexed"), dict) \
        else block.get("indexed") if isinstance(block.get("indexed"), dict) else None

    def indexed(name: Code, key: str, value: float | None, unit: Code) -> list:
        if given is not None:
            return _measurement(name, _number(given, key), unit)
        if value is None or bsa is None:
            return []
        return _measurement(name, value / bsa[0], unit)

    ed, es = block.get("ed_phase"), block.get("es_phase")
    phase_codes = {"ed": codes.END_DIASTOLE, "es": codes.END_SYSTOLE}
    if index is not None:
        algorithm = index.result.algorithm
        for phase_key, phase_index in (("ed", ed), ("es", es)):
            if phase_index is None:
                continue
            phase_label = phase_key.upper()
            phase_eval = [hd.sr.QualitativeEvaluation(codes.CARDIAC_CYCLE_PHASE, phase_codes[phase_key])]
            # 1-based, as the PDF and the SEG count phases (summary.json keeps the 0-based index)
            phase_number = _measurement(codes.PHASE_NUMBER, float(phase_text.phase_number(phase_index)),
                                        codes.UNIT_NONE)
            for ventricle, site in (("lv", codes.LEFT_VENTRICLE), ("rv", codes.RIGHT_VENTRICLE)):
                concept = {("lv", "ed"): codes.LV_EDV, ("lv", "es"): codes.LV_ESV,
                           ("rv", "ed"): codes.RV_EDV, ("rv", "es"): codes.RV_ESV}[(ventricle, phase_key)]
                concept_index = {("lv", "ed"): codes.LV_EDV_INDEX, ("lv", "es"): codes.LV_ESV_INDEX,
                                 ("rv", "ed"): codes.RV_EDV_INDEX, ("rv", "es"): codes.RV_ESV_INDEX}[
                    (ventricle, phase_key)]
                value = _number(block, f"{ventricle}_{phase_key}v_ml")
                measurements = _measurement(concept, value, codes.UNIT_ML, method=papillary,
                                            algorithm_id=_algorithm_id(algorithm))
                measurements += indexed(concept_index, f"{ventricle}_{phase_key}vi_ml_m2", value,
                                        codes.UNIT_ML_PER_M2) + phase_number
                try:
                    groups += index.groups(f"{ventricle}_blood_pool", int(phase_index),
                                           f"{ventricle.upper()} blood pool {phase_label}", finding_type=site,
                                           measurements=measurements, qualitative_evaluations=phase_eval)
                except KeyError:
                    continue
            mass = _number(block, "lv_mass_g")
            if phase_key == "ed" and mass is not None:
                volume = mass / config.analysis.cine.myocardial_density_g_per_ml
                measurements = _measurement(codes.VOLUME, volume, codes.UNIT_CM3)
                measurements += _measurement(codes.LV_MASS, mass, codes.UNIT_G, method=papillary_mass,
                                             algorithm_id=_algorithm_id(algorithm))
                measurements += indexed(codes.LV_MASS_INDEX, "lv_mass_index_g_m2", mass, codes.UNIT_G_PER_M2) \
                    + phase_number
                try:
                    groups += index.groups("lv_myocardium", int(phase_index), f"LV myocardium {phase_label}",
                                           finding_type=codes.LV_MYOCARDIUM, measurements=measurements,
                                           qualitative_evaluations=phase_eval)
                except KeyError:
                    pass

    # EF and SV come from the ED and ES blood-pool segments: TID 1411 groups on the ED segment (pixelmed 2022
    # validates every group of a report as TID 1411 once one group references a segment, so no TID 1501 here)
    bsa_measurement = []
    if bsa is not None:
        bsa_measurement = _measurement(codes.BODY_SURFACE_AREA, bsa[0], codes.UNIT_M2,
                                       method=codes.BSA_FORMULAS.get(bsa[1]))
    for ventricle, site, ef_code in (("lv", codes.LEFT_VENTRICLE, codes.LV_EF_MR),
                                     ("rv", codes.RIGHT_VENTRICLE, codes.RV_EF_MR)):
        sv = _number(block, f"{ventricle}_sv_ml")
        measurements = _measurement(ef_code, _number(block, f"{ventricle}_ef_percent"), codes.UNIT_PERCENT)
        measurements += _measurement(codes.STROKE_VOLUME, sv, codes.UNIT_ML,
                                     finding_sites=[hd.sr.FindingSite(site)])
        if ventricle == "lv":
            measurements += indexed(codes.LV_SV_INDEX, "lv_svi_ml_m2", sv, codes.UNIT_ML_PER_M2) + bsa_measurement
        if not measurements:
            continue
        name = f"{ventricle.upper()} function (ED and ES)"
        try:
            found = index.groups(f"{ventricle}_blood_pool", int(ed), name, tracking_uid=new_uid(), finding_type=site,
                                 finding_sites=[hd.sr.FindingSite(site)], measurements=measurements) \
                if index is not None and ed is not None else None
        except KeyError:
            found = None
        if found:
            groups += found
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(), identifier=name),
                finding_type=site, finding_sites=[hd.sr.FindingSite(site)], measurements=measurements))
    if index is not None and ed is not None:
        groups += aha_groups(block.get("aha_segments"), index, scar=False, phase_position=0)
    return groups


def _region_sources(content: Dataset, results: Sequence[PipelineResult], known: set[str]) -> list[Dataset]:
    """Headers of the source images the image regions (SCOORD) select from, for the evidence sequence."""
    referenced: set[str] = set()
    stack = [content]
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "IMAGE" and item.get("ReferencedSOPSequence"):
            referenced.add(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        stack.extend(item.get("ContentSequence", []))
    found: dict[str, Dataset] = {}
    for result in results:
        for segmentation in result.segmentations:
            for instance in segmentation.series.instances:
                uid = str(instance.sop_instance_uid)
                if uid in referenced and uid not in known:
                    found.setdefault(uid, instance.dataset)
    return list(found.values())


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _predecessors(supersedes: Sequence[dict] | None) -> list[Dataset] | None:
    """Minimal datasets for the Predecessor Documents Sequence from {sop_instance_uid, series_..., study_...}."""
    if not supersedes:
        return None
    items = []
    for entry in supersedes:
        missing = [k for k in ("sop_instance_uid", "series_instance_uid", "study_instance_uid") if not entry.get(k)]
        if missing:
            raise ValueError(f"supersedes entry {entry} lacks {missing}")
        item = Dataset()
        item.SOPClassUID = entry.get("sop_class_uid", Comprehensive3DSRStorage)
        item.SOPInstanceUID = entry["sop_instance_uid"]
        item.SeriesInstanceUID = entry["series_instance_uid"]
        item.StudyInstanceUID = entry["study_instance_uid"]
        items.append(item)
    return items


#: namespace of the node's own Device Observer UID (a 2.25 UUID-derived UID per node version)
NODE_DEVICE_NAMESPACE = uuid.UUID("6f1d7c52-0b8e-4d0c-9a53-2f4b8c1e7d90")


def node_device_uid() -> str:
    """The node's Device Observer UID (TID 1004 row 1): stable for one dicomnode version."""
    return "2.25." + str(uuid.uuid5(NODE_DEVICE_NAMESPACE, f"{NODE_MODEL_NAME} {node_version()}").int)


def _observer(algorithm: AlgorithmInfo | None) -> hd.sr.ObserverContext:
    """TID 1002 device observer (TID 1004 identifying attributes) of a model, or of the node itself for None."""
    if algorithm is None:
        attributes = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=node_device_uid(), name=NODE_MODEL_NAME, manufacturer_name=NODE_MANUFACTURER,
            model_name=NODE_MODEL_NAME)
    else:
        attributes = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid, name=algorithm.name[:64], manufacturer_name=algorithm.manufacturer[:64],
            model_name=algorithm.name[:64])
    return hd.sr.ObserverContext(observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
                                 observer_identifying_attributes=attributes)


def _observation_context(algorithms: Sequence[AlgorithmInfo | None]) -> hd.sr.ObservationContext:
    """TID 1001 at the root: the device observer of the one model that made the observations, or the node itself
    (None) when several models did (each group then names its own, see _annotate)."""
    return hd.sr.ObservationContext(observer_device_context=_observer(algorithms[0]))


def _stack_comments(result: PipelineResult) -> list[str]:
    """The stack warnings of a pipeline's input series (summary `stack_warnings`: a gap or missing slice, N of M
    phases present, a single slice, left-out duplicates, shifted positions), one text each."""
    warnings = (result.summary or {}).get("stack_warnings") or []
    what = "LGE" if result.name == "lge" else result.name
    return [f"{what} input stack: {warning}" for warning in warnings if str(warning).strip()]


def _annotate(groups: list, comments: Sequence[str], observer: AlgorithmInfo | None) -> list:
    """Add to each group of one pipeline (TID 1411 / 1501 measurement groups, both extensible):
    - its model as device observer (HAS OBS CONTEXT, TID 1002/1004; PS3.3 C.17.5: a content item's observation
      context is its parent's unless it has HAS OBS CONTEXT children), where the report holds several pipelines;
    - the stack warnings as TEXT (121106, DCM, "Comment") items (CONTAINS), in every group that carries a
      measurement, so that a reader of any number of that stack sees them."""
    for group in groups:
        container = group[0]
        items = list(container.ContentSequence)
        if observer is not None:
            at = max((k + 1 for k, item in enumerate(items) if item.RelationshipType == "HAS OBS CONTEXT"), default=0)
            items[at:at] = list(_observer(observer))
        if comments and any(item.ValueType == "NUM" for item in items):
            items += [hd.sr.TextContentItem(name=codes.COMMENT, value=text, relationship_type="CONTAINS")
                      for text in comments]
        container.ContentSequence = hd.sr.ContentSequence(items)
    return groups


def build_sr(
    header: Dataset,
    results: Sequence[PipelineResult],
    segs: dict[str, list],
    context,
    series_number: int,
    supersedes: Sequence[dict] | None = None,
) -> Dataset | None:
    """The TID 1500 Measurement Report of the LGE and cine results; None when there is no LGE or cine result.

    `header`: a source dataset of the study (patient/study attributes); `segs`: SegmentationResult.key -> its SEG,
    or the list of (SegPart, SEG) written for it (seg.seg_parts).
    """
    config = context.config
    per_pipeline: list[tuple[list, list[str], AlgorithmInfo]] = []
    algorithms: list[AlgorithmInfo] = []
    for result in results:
        if result.name not in ("lge", "cine") or not result.summary:
            continue
        seg_result = result.segmentations[0] if result.segmentations else None
        index = _SegmentIndex(seg_result, segs[seg_result.key]) if seg_result is not None and seg_result.key in segs \
            else None
        contributing = list(result.algorithms) or ([seg_result.algorithm] if seg_result else [])
        algorithms += contributing
        found = lge_groups(result, index, config) if result.name == "lge" else \
            cine_groups(result, index, header, config)
        if found:
            model = seg_result.algorithm if seg_result is not None else contributing[0]
            per_pipeline.append((found, _stack_comments(result), model))
    if not per_pipeline or not algorithms:
        return None
    # one model: it is the document's device observer (IHE AIR); several: the node is, and each pipeline's groups
    # name their own model (a single root observer would claim every observation for one model)
    several = len({model.device_uid for _, _, model in per_pipeline}) > 1
    groups: list = []
    for found, comments, model in per_pipeline:
        groups += _annotate(found, comments, model if several else None)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context([None] if several else [per_pipeline[0][2]]),
        procedure_reported=codes.MRI_UNSPECIFIED_BODY_REGION,  # TID 1500 row 4: a member of CID 100
        imaging_measurements=groups,
        title=codes.IMAGING_MEASUREMENT_REPORT,
    )
    # the report-text suggestions are not measurements: they go into their own text-only SR (build_suggestions_sr),
    # which viewers show as text (OHIF lists a TID 1500 report as measurements only); see docs/conformance.md
    started_at: dt.datetime = context.started_at
    evidence = [header] + [seg for entry in segs.values()
                           for seg in ([entry] if isinstance(entry, Dataset) else [s for _, s in entry])]
    evidence += _region_sources(report[0], results, {str(ds.SOPInstanceUID) for ds in evidence})
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=NODE_MANUFACTURER,
        manufacturer_model_name=NODE_MODEL_NAME,
        software_versions=node_version(),
        is_complete=True,
        is_final=False,
        is_verified=False,
        previous_versions=_predecessors(supersedes),
        coding_schemes=codes.coding_schemes(),
        series_date=started_at.date(),
        series_time=started_at.time(),
        content_date=started_at.date(),
        content_time=started_at.time(),
    )
    # the specific procedure goes into the study-level Procedure Code Sequence (General Study, C.7.2.1); a study that
    # already states its procedure keeps it, as study attributes must agree across the study's instances
    sr.ProcedureCodeSequence = list(header.get("ProcedureCodeSequence") or []) or [_code_item(codes.MR_OF_HEART)]
    series_what = " + ".join(r.name.upper() if r.name == "lge" else r.name for r in results
                             if r.name in ("lge", "cine") and r.summary) + " measurements"
    return apply_provenance(sr, algorithms, started_at, series_what)


def suggestions_container(suggestions: PipelineResult | None) -> hd.sr.ContainerContentItem | None:
    """CONTAINER "Report text suggestions from prior reports (unverified)": device observer, one TEXT per suggestion
    with its retrieval score (NUM) and prior report id (TEXT) as properties; None when there is nothing to suggest."""
    if suggestions is None or not suggestions.algorithms:
        return None
    items = suggestions.summary if isinstance(suggestions.summary, list) else []
    if not items:
        return None
    container = hd.sr.ContainerContentItem(name=codes.REPORT_TEXT_SUGGESTIONS, relationship_type="CONTAINS")
    children = list(_observation_context(suggestions.algorithms))
    for suggestion in items:
        text = hd.sr.TextContentItem(name=codes.SUGGESTED_REPORT_TEXT, value=str(suggestion["text"])[:65535],
                                     relationship_type="CONTAINS")
        text.ContentSequence = hd.sr.ContentSequence([
            hd.sr.NumContentItem(name=codes.RETRIEVAL_SCORE, value=round(float(suggestion["score"]), 4),
                                 unit=codes.UNIT_NONE, relationship_type="HAS PROPERTIES"),
            hd.sr.TextContentItem(name=codes.PRIOR_REPORT_ID, value=str(suggestion["report_id"])[:1024],
                                  relationship_type="HAS PROPERTIES"),
        ])
        children.append(text)
    container.ContentSequence = hd.sr.ContentSequence(children)
    return container


def build_suggestions_sr(
    header: Dataset,
    suggestions: PipelineResult,
    context,
    series_number: int,
) -> Dataset | None:
    """A text-only Comprehensive SR of the report-text suggestions, titled as unverified, beside the TID 1500 report:
    viewers show it as text, while they list a TID 1500 report as measurements only."""
    container = suggestions_container(suggestions)
    if container is None:
        return None
    root = hd.sr.ContainerContentItem(name=codes.REPORT_TEXT_SUGGESTIONS)
    root.ContentSequence = container.ContentSequence
    started_at: dt.datetime = context.started_at
    sr = hd.sr.ComprehensiveSR(
        evidence=[header],
        content=root,
        series_instance_uid=new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=NODE_MANUFACTURER,
        manufacturer_model_name=NODE_MODEL_NAME,
        software_versions=node_version(),
        is_complete=True,
        is_final=False,
        is_verified=False,
        coding_schemes=codes.coding_schemes(),
        series_date=started_at.date(),
        series_time=started_at.time(),
        content_date=started_at.date(),
        content_time=started_at.time(),
    )
    return apply_provenance(sr, suggestions.algorithms, started_at, "report text suggestions")
