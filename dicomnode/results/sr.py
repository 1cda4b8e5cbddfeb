"""Comprehensive 3D SR (TID 1500) of the LGE and cine numbers, and a separate SR for report-text suggestions."""
from __future__ import annotations

import datetime as dt
import math
from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicomnode.analysis.aha import aha_segments, stack_geometry
from dicomnode.analysis.cine_metrics import body_surface_area_m2
from dicomnode.analysis.pipeline import AlgorithmInfo, PipelineResult, SegmentationResult
from dicomnode.labels import ENHANCED_LABELS, MYOCARDIUM_LABELS, Label
from dicomnode.results import codes
from dicomnode.results.provenance import NODE_MANUFACTURER, NODE_MODEL_NAME, apply_provenance, node_version
from dicomnode.results.regions import image_regions, representative_slice
from dicomnode.results.seg import PlannedSegment, segment_plan
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
    and phase; outlines of its label map for the image regions OHIF draws."""

    def __init__(self, result: SegmentationResult, segs):
        self.result = result
        self.segs = [(None, segs)] if isinstance(segs, Dataset) else list(segs)
        self.labelmap = np.asarray(result.labelmap)

    def mask(self, labels: Sequence[int], phase_position: int = 0) -> np.ndarray:
        return np.isin(self.labelmap[phase_position], [int(v) for v in labels])

    def frames(self, phase_position: int = 0):
        return self.result.volume.frames[self.result.phases[phase_position]]

    def find(self, key: str, phase_index: int | None = None) -> tuple[PlannedSegment, Dataset]:
        """The planned segment of kind `key` (and phase) and the SEG holding it: for a result split over several SEGs,
        the one covering the slice where the segment is largest."""
        candidates = []
        for part, seg in self.segs:
            plan = segment_plan(self.result, part.phase_positions if part is not None else None)
            for segment in plan:
                if segment.kind.key == key and (phase_index is None or segment.phase_index == phase_index):
                    candidates.append((part, seg, segment))
        if not candidates:
            raise KeyError(f"no segment {key!r} for phase index {phase_index} (0-based) in the SEG of "
                           f"{self.result.pipeline}")
        best = representative_slice(self.mask(candidates[0][2].kind.labels, candidates[0][2].phase_position))
        for part, seg, segment in candidates:
            if part is None or best is None or best in part.slices:
                return segment, seg
        return candidates[0][2], candidates[0][1]

    def reference(self, segment: PlannedSegment, seg: Dataset) -> hd.sr.ReferencedSegment:
        series_uid = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)  # the images the SEG was made on
        return hd.sr.ReferencedSegment(
            sop_class_uid=SegmentationStorage, sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=segment.number, source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
        )

    def groups(self, key: str, phase_index: int | None, name: str, tracking_uid: str | None = None,
               **kwargs) -> list:
        """A TID 1411 group on one SEG segment (its tracking UID is the segment's unless another is given), followed
        by a TID 1411 group with the same tracking UID that outlines the segment on its source images: OHIF merges
        groups by tracking UID and lists a measurement only where it finds image coordinates (TID 1411 allows a
        segment reference or image regions in one group, not both)."""
        segment, seg = self.find(key, phase_index)
        tracking = {int(s.SegmentNumber): str(s.TrackingUID) for s in seg.SegmentSequence}
        uid = tracking_uid or tracking[segment.number]
        groups = [hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=name[:64]),
            referenced_segment=self.reference(segment, seg),
            algorithm_id=_algorithm_id(self.result.algorithm),
            **kwargs,
        )]
        outline = self.outline_group(segment.kind.labels, segment.phase_position, f"{name} (outline)", uid,
                                     kwargs.get("finding_type"), kwargs.get("finding_sites"))
        if outline is None:  # an empty segment (e.g. no MVO): OHIF needs coordinates for every measurement
            outline = self.outline_group(MYOCARDIUM_LABELS, segment.phase_position,
                                         f"{name} (none; LV myocardium outlined)", uid,
                                         kwargs.get("finding_type"), kwargs.get("finding_sites"))
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
    """LGE groups. Unions are measured on their outlines (TID 1411 image regions on every slice): whole myocardium
    (volume, mass) and scar incl. MVO (`scar_volume_ml`, %LGE by DL, n-SD and FWHM, burden flag); the exclusive
    parts reference their SEG segments: non-enhanced myocardium, scar without MVO, MVO (`mvo_volume_ml`)."""
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

    scar_measurements = _measurement(codes.VOLUME, _number(block, "scar_volume_ml"), codes.UNIT_CM3, **dl)
    scar_measurements += _measurement(codes.LGE_PERCENT, _number(block, "lge_percent"), codes.UNIT_PERCENT, **dl)
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
                               measurements=scar_measurements, qualitative=qualitative, all_slices=True)
    if scar is None:  # no enhanced voxel to outline: the numbers go on the (empty) scar segment
        scar = index.groups("scar", None, "LGE scar incl. MVO", finding_type=codes.LATE_CONTRAST_ENHANCEMENT,
                            finding_sites=lv_site, measurements=scar_measurements,
                            qualitative_evaluations=qualitative or None)[0]
    groups.append(scar)

    parts = (("lv_myocardium_nonenhanced", "LGE non-enhanced myocardium", codes.LV_MYOCARDIUM,
              _segment_volume_ml(index, (Label.LV_MYOCARDIUM,))),
             ("scar", "LGE scar without MVO", codes.LATE_CONTRAST_ENHANCEMENT,
              _segment_volume_ml(index, (Label.SCAR,))),
             ("mvo", "LGE microvascular obstruction", codes.MVO, _number(block, "mvo_volume_ml")))
    for key, name, finding, volume in parts:
        groups += index.groups(key, None, name, finding_type=finding, finding_sites=lv_site,
                               measurements=_measurement(codes.VOLUME, volume, codes.UNIT_CM3, **dl))
    groups += aha_groups(block.get("aha_segments"), index, scar=True)
    return groups


def aha_groups(block: dict | None, index: _SegmentIndex, scar: bool, phase_position: int = 0) -> list:
    """One TID 1411 group per AHA segment (finding site: CID 3717 code), region = the segment's myocardium outlined
    on its slices; LGE: scar extent and transmurality (max, mean); cine at ED: wall thickness."""
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
            finding_type=codes.LATE_CONTRAST_ENHANCEMENT if scar else codes.LV_MYOCARDIUM,
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

    def indexed(name: Code, value: float | None, unit: Code) -> list:
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
            phase_number = _measurement(codes.PHASE_INDEX, float(phase_index), codes.UNIT_NONE)
            for ventricle, site in (("lv", codes.LEFT_VENTRICLE), ("rv", codes.RIGHT_VENTRICLE)):
                concept = {("lv", "ed"): codes.LV_EDV, ("lv", "es"): codes.LV_ESV,
                           ("rv", "ed"): codes.RV_EDV, ("rv", "es"): codes.RV_ESV}[(ventricle, phase_key)]
                concept_index = {("lv", "ed"): codes.LV_EDV_INDEX, ("lv", "es"): codes.LV_ESV_INDEX,
                                 ("rv", "ed"): codes.RV_EDV_INDEX, ("rv", "es"): codes.RV_ESV_INDEX}[
                    (ventricle, phase_key)]
                value = _number(block, f"{ventricle}_{phase_key}v_ml")
                measurements = _measurement(concept, value, codes.UNIT_ML, method=papillary,
                                            algorithm_id=_algorithm_id(algorithm))
                measurements += indexed(concept_index, value, codes.UNIT_ML_PER_M2) + phase_number
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
                measurements += indexed(codes.LV_MASS_INDEX, mass, codes.UNIT_G_PER_M2) + phase_number
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
            measurements += indexed(codes.LV_SV_INDEX, sv, codes.UNIT_ML_PER_M2) + bsa_measurement
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


def _observation_context(algorithms: Sequence[AlgorithmInfo]) -> hd.sr.ObservationContext:
    algorithm = algorithms[0]
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid, name=algorithm.name[:64], manufacturer_name=algorithm.manufacturer[:64],
            model_name=algorithm.name[:64]),
    ))


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
    groups: list = []
    algorithms: list[AlgorithmInfo] = []
    for result in results:
        if result.name not in ("lge", "cine") or not result.summary:
            continue
        seg_result = result.segmentations[0] if result.segmentations else None
        index = _SegmentIndex(seg_result, segs[seg_result.key]) if seg_result is not None and seg_result.key in segs \
            else None
        algorithms += list(result.algorithms) or ([seg_result.algorithm] if seg_result else [])
        if result.name == "lge":
            groups += lge_groups(result, index, config)
        else:
            groups += cine_groups(result, index, header, config)
    if not groups or not algorithms:
        return None
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(algorithms),
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
