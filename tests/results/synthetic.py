"""Synthetic CMR source headers, volumes and pipeline results for the result-object tests (no real data needed)."""
from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicomnode.analysis.aha import aha_summary
from dicomnode.analysis.lge import mvo_validation
from dicomnode.analysis.lge_metrics import lge_volumes
from dicomnode.analysis.pipeline import AlgorithmInfo, AnalysisContext, PipelineResult, SegmentationResult
from dicomnode.cmr.types import AnalysisSeries, FrameRef, InstanceHeader, Recognition, Volume
from dicomnode.config import Config
from dicomnode.labels import Label

#: a model card's cross-validated MVO figures (engines.lge.evaluate.mvo_agreement), as the shipped card's: not validated
MVO_CARD_METRICS = {"source": "engines/lge/EVALUATION.json: 5-fold CV", "emidec_mvo": {
    "n": 100, "dice_per_slice": 0.377, "volume_mae_ml": 1.32, "volume_bias_ml": 0.19, "with_mvo": 40, "without_mvo": 60,
    "without_mvo_with_predicted": 29,
    "presence": [{"floor_ml": 0.0, "accuracy": 0.69}, {"floor_ml": 0.5, "accuracy": 0.74},
                 {"floor_ml": 1.0, "accuracy": 0.78}, {"floor_ml": 1.5, "accuracy": 0.76}]}}

ROWS, COLS = 48, 40
SPACING = (1.5, 1.5)
SLICE_GAP = 8.0
ORIENTATION = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])  # axial for simplicity: normal +z


@dataclass
class FakeStudy:
    """Duck-typed stand-in for dicomnode.cmr.study.CMRStudy (attributes build_result_objects reads)."""

    study_instance_uid: str
    series: list[AnalysisSeries]
    patient: dict = field(default_factory=dict)

    def first_dataset(self, series: AnalysisSeries):
        return series.instances[0].dataset


def study_header(study_uid: str, frame_of_reference: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = "Synthetic^Heart"
    ds.PatientID = "SYN001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.PatientSize = 1.80
    ds.PatientWeight = 80
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20261121"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.ReferringPhysicianName = ""
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Avanto"
    return ds


def mr_header(base: Dataset, series_uid: str, series_number: int, position, instance_number: int,
              trigger_time: float, description: str, shape: tuple[int, int] = (ROWS, COLS)) -> Dataset:
    ds = Dataset()
    ds.update(base)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.Modality = "MR"
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = "CG"  # cardiac gating: TriggerTime is then required
    ds.BodyPartExamined = "HEART"
    ds.PatientPosition = "HFS"
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = 1.2
    ds.RepetitionTime = 3.0
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = 1.5
    ds.SliceThickness = 8.0
    ds.TriggerTime = trigger_time
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in ORIENTATION]
    ds.PixelSpacing = list(SPACING)
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def disc(shape, centre, radius) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def heart_labels(slice_index: int, slices: int, lv_radius: float, scar: bool,
                 shape: tuple[int, int] = (ROWS, COLS)) -> np.ndarray:
    """One short-axis slice: LV cavity, ring of myocardium, optional scar wedge + MVO core, RV beside it."""
    labels = np.zeros(shape, dtype=np.uint8)
    centre = (24, 22)
    if slice_index in (0, slices - 1) and slices > 2:
        lv_radius -= 2  # smaller apex/base
    labels[disc(shape, centre, lv_radius + 4)] = Label.LV_MYOCARDIUM
    labels[disc(shape, centre, lv_radius)] = Label.LV_BLOOD_POOL
    rv = disc(shape, (24, 8), 6) & (labels == 0)
    labels[rv] = Label.RV_BLOOD_POOL
    if scar and slice_index % 2 == 1:
        rows, cols = np.mgrid[:shape[0], :shape[1]]
        wedge = (rows < centre[0] - 2) & (labels == Label.LV_MYOCARDIUM)
        labels[wedge] = Label.SCAR
        if slice_index == 1:
            labels[wedge & (cols > centre[1])] = Label.MVO
    if slice_index == slices - 1 and scar:
        labels[:] = 0  # an empty slice: its frames must be omitted
    return labels


def algorithm(name: str) -> AlgorithmInfo:
    return AlgorithmInfo(name=f"dicomnode-{name}-unet", version="2026.11.21", manufacturer="dicomnode project",
                         device_uid=generate_uid(), description=f"{name} segmentation network")


def make_series(base: Dataset, series_number: int, slices: int, phases: int, description: str, sequence: str,
                shape: tuple[int, int] = (ROWS, COLS)):
    series_uid = generate_uid()
    headers, frames, positions = [], [], []
    for k in range(slices):
        positions.append([-30.0, -36.0, 10.0 + SLICE_GAP * k])
    for p in range(phases):
        row = []
        for k in range(slices):
            ds = mr_header(base, series_uid, series_number, positions[k], p * slices + k + 1, 30.0 * p, description,
                           shape)
            headers.append(InstanceHeader(Path(f"/dev/null/{ds.SOPInstanceUID}"), ds.SOPInstanceUID, ds.SOPClassUID,
                                          series_uid, ds))
            row.append(FrameRef(ds.SOPInstanceUID, ds.SOPClassUID, series_uid, None))
        frames.append(row)
    affine = np.eye(4)
    affine[:3, 0] = ORIENTATION[:3] * SPACING[1]
    affine[:3, 1] = ORIENTATION[3:] * SPACING[0]
    affine[:3, 2] = np.array([0, 0, SLICE_GAP])
    affine[:3, 3] = positions[0]
    rng = np.random.default_rng(series_number)
    pixels = rng.normal(100, 10, (phases, slices) + tuple(shape)).astype(np.float32)
    for p, row in enumerate(frames):  # the images hold the volume's pixels (display copies copy them)
        for k, _ in enumerate(row):
            headers[p * slices + k].dataset.PixelData = np.clip(pixels[p, k], 0, 4095).astype(np.uint16).tobytes()
    volume = Volume(
        pixels=pixels,
        affine=affine, pixel_spacing=SPACING, slice_spacing=SLICE_GAP, frames=frames,
        trigger_times=[30.0 * p for p in range(phases)], orientation=ORIENTATION.copy(),
        positions=np.asarray(positions, dtype=float),
    )
    series = AnalysisSeries(
        key=f"{series_uid}#{series_number}#{sequence}", series_instance_uids=[series_uid], series_number=series_number,
        description=description, sequence=Recognition(sequence, 0.99), view=Recognition("sax", 0.99),
        lge_kind="psir" if sequence == "lge" else None, instances=headers, slices=slices, phases=phases,
        preferred=True,
    )
    return series, volume


def make_study(slices: int = 6, cine_phases: int = 5, rows: int = ROWS, cols: int = COLS):
    """A study with an LGE stack (1 phase) and a cine stack; pipeline results with plausible numbers."""
    study_uid = generate_uid()
    base = study_header(study_uid, generate_uid())
    shape = (rows, cols)
    lge_series, lge_volume = make_series(base, 7, slices, 1, "PSIR LGE SAX", "lge", shape)
    cine_series, cine_volume = make_series(base, 5, slices, cine_phases, "cine SAX", "cine", shape)

    lge_labels = np.stack([heart_labels(k, slices, 8, scar=True, shape=shape) for k in range(slices)])[None]
    lge_alg = algorithm("lge")
    # the MVO as the pipeline gives it where the card does not validate it (analysis.lge.mvo_validation)
    lge_seg = SegmentationResult(series=lge_series, volume=lge_volume, labelmap=lge_labels, phases=[0],
                                 phase_names=["late enhancement"], algorithm=lge_alg, pipeline="lge",
                                 unvalidated_labels=(int(Label.MVO),))
    # the numbers come from the metric function itself, so a drift in its definitions shows in the SR/PDF tests
    volumes = lge_volumes(lge_labels[0], lge_volume.voxel_volume_ml)
    lge_summary = {
        "method": "dl", "myocardium_volume_ml": round(volumes.myocardium_volume_ml, 2),
        "lv_mass_g": round(volumes.lv_mass_g, 2), "scar_volume_ml": round(volumes.scar_volume_ml, 2),
        "mvo_volume_ml": round(volumes.mvo_volume_ml, 2), "lge_percent": round(volumes.lge_percent, 2),
        "large_scar_burden": volumes.large_scar_burden, "nsd": {"n": 5, "lge_percent": 12.5},
        "fwhm": {"lge_percent": 17.25},
        "aha_segments": aha_summary(lge_labels[0], SPACING, lge_volume.positions[:, 2], "first"),
        "mvo_validation": mvo_validation(MVO_CARD_METRICS, "native"),
    }
    lge = PipelineResult(name="lge", summary=lge_summary, segmentations=[lge_seg], algorithms=[lge_alg])

    ed, es = 0, 3
    ed_labels = np.stack([heart_labels(k, slices, 9, scar=False, shape=shape) for k in range(slices)])
    es_labels = np.stack([heart_labels(k, slices, 6, scar=False, shape=shape) for k in range(slices)])
    cine_alg = algorithm("cine")
    cine_seg = SegmentationResult(series=cine_series, volume=cine_volume, labelmap=np.stack([ed_labels, es_labels]),
                                  phases=[ed, es], phase_names=["end diastole", "end systole"], algorithm=cine_alg,
                                  pipeline="cine")
    cv = cine_volume.voxel_volume_ml
    lv_edv = (ed_labels == 1).sum() * cv
    lv_esv = (es_labels == 1).sum() * cv
    rv_edv = (ed_labels == 5).sum() * cv
    rv_esv = (es_labels == 5).sum() * cv * 0.6
    cine_summary = {
        "lv_edv_ml": round(lv_edv, 2), "lv_esv_ml": round(lv_esv, 2), "lv_sv_ml": round(lv_edv - lv_esv, 2),
        "lv_ef_percent": round(100 * (lv_edv - lv_esv) / lv_edv, 2),
        "lv_mass_g": round(np.isin(ed_labels, [2, 3, 4]).sum() * cv * 1.05, 2),
        "rv_edv_ml": round(rv_edv, 2), "rv_esv_ml": round(rv_esv, 2), "rv_sv_ml": round(rv_edv - rv_esv, 2),
        "rv_ef_percent": round(100 * (rv_edv - rv_esv) / rv_edv, 2), "ed_phase": ed, "es_phase": es,
        "aha_segments": aha_summary(ed_labels, SPACING, cine_volume.positions[:, 2], "first", scar=False,
                                    wall_thickness=True),
    }
    curve = [lv_edv, lv_edv * 0.8, lv_edv * 0.6, lv_esv, lv_edv * 0.7][:cine_phases]
    cine = PipelineResult(name="cine", summary=cine_summary, segmentations=[cine_seg], algorithms=[cine_alg],
                          measurements={"lv_volume_curve_ml": curve})
    suggestion_alg = algorithm("report-retrieval")
    suggestions = PipelineResult(
        name="suggestions",
        summary=[{"text": "Subendocardial LGE in the anterior wall consistent with prior infarction.",
                  "score": 0.81, "report_id": "prior-0042"},
                 {"text": "Normal LV size and systolic function.", "score": 0.55, "report_id": "prior-0007"}],
        algorithms=[suggestion_alg],
    )
    study = FakeStudy(study_uid, [cine_series, lge_series], patient={"PatientID": "SYN001"})
    context = AnalysisContext(config=Config(), runtime=None,
                              started_at=dt.datetime(2026, 11, 21, 20, 30, 15, 250000))
    return study, [lge, cine, suggestions], context


def rv_es_at_next_phase(results: list[PipelineResult]) -> PipelineResult:
    """The cine of make_study (LV ED 0, ES 3, 0-based) with RV ESV read one phase after the LV's ES, at phase index 4
    (rv_at_own_phases)."""
    return rv_at_own_phases(results, rv_es=results[1].segmentations[0].phases[1] + 1)


def rv_at_own_phases(results: list[PipelineResult], rv_ed: int | None = None,
                     rv_es: int | None = None) -> PipelineResult:
    """The cine of make_study with RV EDV / ESV read at phase indices `rv_ed` / `rv_es` (None: the LV's ED / ES), as
    CinePipeline gives it (analysis.cine.segmented_phases / counted_labelmaps): at such a phase the RV of the LV's
    phase less its first row on every slice, the summary (`timing`, RV EDV / ESV / SV / EF) read there, and the
    segmentation carrying that phase with the RV alone. Changes results[1] in place and returns it."""
    from dicomnode.analysis.cine import counted_labelmaps, segmented_phases

    cine = results[1]
    segmentation = cine.segmentations[0]
    (ed, es), volume = segmentation.phases, segmentation.volume
    rv_ed, rv_es = ed if rv_ed is None else rv_ed, es if rv_es is None else rv_es
    maps = np.zeros((volume.pixels.shape[0],) + np.asarray(segmentation.labelmap).shape[1:], np.uint8)
    for own, lv_position in ((rv_ed, 0), (rv_es, 1)):
        maps[own] = segmentation.labelmap[lv_position]
        for plane in maps[own] if own not in (ed, es) else ():  # the RV's first row left out
            rows = np.flatnonzero((plane == Label.RV_BLOOD_POOL).any(axis=1))
            if rows.size:
                plane[rows[0]][plane[rows[0]] == Label.RV_BLOOD_POOL] = Label.BACKGROUND
    maps[ed], maps[es] = segmentation.labelmap[0], segmentation.labelmap[1]
    phases, names = segmented_phases(ed, es, rv_ed, rv_es)
    cine.segmentations = [replace(segmentation, labelmap=counted_labelmaps(maps, phases, [],
                                                                           rv_only=range(2, len(phases))),
                                  phases=phases, phase_names=names)]
    summary = cine.summary

    def rv_ml(phase: int) -> float:
        return round(float((maps[phase] == Label.RV_BLOOD_POOL).sum()) * volume.voxel_volume_ml, 2)

    rv_edv = rv_ml(rv_ed) if rv_ed != ed else float(summary["rv_edv_ml"])
    rv_esv = rv_ml(rv_es) if rv_es != es else float(summary["rv_esv_ml"])
    summary.update({"rv_edv_ml": rv_edv, "rv_esv_ml": rv_esv, "rv_sv_ml": round(rv_edv - rv_esv, 2),
                    "rv_ef_percent": round(100 * (rv_edv - rv_esv) / rv_edv, 2),
                    "timing": {"ed_phase": ed, "es_phase": es, "rv_ed_phase": rv_ed, "rv_es_phase": rv_es}})
    return cine


def write(dataset: Dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def read(path: Path) -> Dataset:
    return pydicom.dcmread(path)


#: where an Enhanced MR instance keeps Pixel Measures and Plane Orientation (PS3.3 C.7.6.16 allows either group in the
#: Shared or in every frame's Per-frame Functional Groups): Siemens XA shares both, Philips writes both per frame
ENHANCED_LAYOUTS = ("shared", "perframe", "orientation_perframe")


def as_enhanced_mr(segmentation: SegmentationResult, layout: str = "shared") -> SegmentationResult:
    """The same result on one Enhanced MR multi-frame instance (frames ordered phase-major) instead of single frames;
    `layout` (ENHANCED_LAYOUTS): "shared", "perframe" (both groups per frame), "orientation_perframe" (Pixel
    Measures shared, Plane Orientation per frame)."""
    from pydicom.uid import EnhancedMRImageStorage

    volume, series = segmentation.volume, segmentation.series
    first = series.instances[0].dataset
    ds = Dataset()
    ds.update({k: copy.deepcopy(first[k]) for k in first.keys()  # not shared: the source stays as it is
               if k not in (0x00200032, 0x00200037, 0x00280030, 0x00180050)})
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.NumberOfFrames = len(volume.frames) * len(volume.frames[0])
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [float(v) for v in ORIENTATION]
    measures = Dataset()
    measures.PixelSpacing = list(SPACING)
    measures.SliceThickness = 8.0
    if layout == "shared":
        shared.PlaneOrientationSequence = [orientation]
    if layout in ("shared", "orientation_perframe"):
        shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame, frames = [], []
    for p, row in enumerate(volume.frames):
        refs = []
        for k, _ in enumerate(row):
            item, position = Dataset(), Dataset()
            position.ImagePositionPatient = [float(v) for v in volume.positions[k]]
            item.PlanePositionSequence = [position]
            if layout != "shared":
                item.PlaneOrientationSequence = [copy.deepcopy(orientation)]
            if layout == "perframe":
                item.PixelMeasuresSequence = [copy.deepcopy(measures)]
            per_frame.append(item)
            refs.append(FrameRef(ds.SOPInstanceUID, ds.SOPClassUID, ds.SeriesInstanceUID, len(per_frame)))
        frames.append(refs)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    header = InstanceHeader(Path("/dev/null/enhanced"), ds.SOPInstanceUID, ds.SOPClassUID, ds.SeriesInstanceUID, ds)
    new_series = AnalysisSeries(**{**series.__dict__, "instances": [header]})
    new_volume = Volume(**{**volume.__dict__, "frames": frames})
    return SegmentationResult(**{**segmentation.__dict__, "series": new_series, "volume": new_volume})


def one_series_per_slice(segmentation: SegmentationResult, prefix: str = "1.2.826.0.1.3680043.8.498.7") -> dict:
    """Move every slice of a single-phase result into its own series (Siemens style); {SOP UID: dataset}."""
    by_uid = {i.sop_instance_uid: i.dataset for i in segmentation.series.instances}
    for k, ref in enumerate(segmentation.volume.frames[0]):
        series_uid = f"{prefix}{k}"
        by_uid[ref.sop_instance_uid].SeriesInstanceUID = series_uid
        segmentation.volume.frames[0][k] = FrameRef(ref.sop_instance_uid, ref.sop_class_uid, series_uid)
    return by_uid


def cine_one_series_per_slice(segmentation: SegmentationResult, series_numbers,
                              prefix: str = "1.2.826.0.1.3680043.8.498.77") -> None:
    """Move every slice of a multi-phase result, all its phases, into a series of its own (Siemens style: one
    series per slice position); slice k gets Series Number series_numbers[k]. Changes the headers, the analysis
    series (one Series Instance UID per slice, as the node's merged stack has) and the volume's frames in place."""
    series = segmentation.series
    index = {instance.sop_instance_uid: n for n, instance in enumerate(series.instances)}
    uids = [f"{prefix}{k}" for k in range(len(segmentation.volume.frames[0]))]
    for row in segmentation.volume.frames:
        for k, ref in enumerate(row):
            row[k] = FrameRef(ref.sop_instance_uid, ref.sop_class_uid, uids[k], ref.frame_number)
            n = index[ref.sop_instance_uid]
            series.instances[n].dataset.SeriesInstanceUID = uids[k]
            series.instances[n].dataset.SeriesNumber = series_numbers[k]
            series.instances[n] = replace(series.instances[n], series_instance_uid=uids[k])
    series.series_instance_uids = uids


class GivenPipeline:
    """A pipeline that returns a result made beforehand (stands in for a real one in Analyser._pipelines)."""

    def __init__(self, result):
        self.result = result

    def run(self, study, context):
        return self.result


def tilt_slices(segmentation: SegmentationResult, degrees: float = 1.0) -> SegmentationResult:
    """`segmentation` with each source slice turned about its own centre by +-degrees (alternately about the row and
    the column direction, break37 `tilt`; IOP rounded to 6 decimals, IPP to 4), its volume geometry rebuilt as the
    node builds it (`cmr.frames.stack_plane`). Changes the headers and the volume in place and returns them."""
    from scipy.spatial.transform import Rotation

    from dicomnode.cmr.frames import frames_of, stack_plane

    headers = segmentation.series.instances
    for k, instance in enumerate(headers):
        ds = instance.dataset
        row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
        half = row * ds.PixelSpacing[1] * (ds.Columns - 1) / 2 + col * ds.PixelSpacing[0] * (ds.Rows - 1) / 2
        centre = np.asarray(ds.ImagePositionPatient, float) + half
        turn = Rotation.from_rotvec(np.radians(degrees * (1 if k % 3 else -1)) * (row if k % 2 else col))
        row, col = turn.apply(row), turn.apply(col)
        ds.ImageOrientationPatient = [round(float(v), 6) for v in np.concatenate([row, col])]
        half = row * ds.PixelSpacing[1] * (ds.Columns - 1) / 2 + col * ds.PixelSpacing[0] * (ds.Rows - 1) / 2
        ds.ImagePositionPatient = [round(float(v), 4) for v in centre - half]
    frames = [f for instance in headers for f in frames_of(instance)]
    segmentation.volume.orientation, segmentation.volume.positions = stack_plane(frames)
    return segmentation
