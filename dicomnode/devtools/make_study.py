"""Realistic DICOM test studies with ground truth from labelled real data, in the variants real sites send."""
from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000Lossless,
                         JPEGLSLossless, RLELossless, generate_uid)

from dicomnode.cmr.frames import plane_normal
from dicomnode.cmr.types import FrameRef
from dicomnode.devtools.sources import (SUNNYBROOK_LICENCE, SourceCase, datasets_dir, load_acdc, load_emidec,
                                        load_myops)
from dicomnode.labels import Label

MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4")
ENHANCED_MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4.1")
VARIANTS = ("ge", "siemens", "philips-enhanced")
TRANSFER_SYNTAXES = {
    None: ExplicitVRLittleEndian, "explicit": ExplicitVRLittleEndian, "jpeg-ls": JPEGLSLossless,
    "j2k": JPEG2000Lossless, "rle": RLELossless, "deflate": DeflatedExplicitVRLittleEndian,
}
#: short-axis orientation of a real study (Sunnybrook SCD0000101): rows and columns oblique to the body axes
SAX_ORIENTATION = np.array([-0.104592, 0.346381, -0.932245, -0.733192, -0.660188, -0.163037])
PSIR_STORED_OFFSET = 2048.0


@dataclass
class GeneratedStudy:
    """What make_study wrote: files, the study UID and ground truth for the primary series (generator order).

    `labelmap` is (phases, slices, rows, cols) node labels (dicomnode.labels), complete where `labelled[phase, slice]`
    (Sunnybrook: frames in `endocardium_only` carry the LV blood pool only);
    `frames[phase][slice]` names the source instance/frame of each 2-D label image; `image` holds the expected
    rescaled pixel values of the primary series. `secondary` maps other roles (LGE "magnitude") to their frames
    and images. Slice index = generator order (instances base to apex), not necessarily ascending along the normal.
    """

    source: str
    variant: str
    transfer_syntax: str | None
    out_dir: Path
    paths: list[Path]
    study_instance_uid: str
    primary_role: str
    labelmap: np.ndarray | None
    labelled: np.ndarray | None
    frames: list[list[FrameRef]]
    image: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    secondary: dict[str, tuple[list[list[FrameRef]], np.ndarray]] = field(default_factory=dict)
    ground_truth_path: Path | None = None
    licence_path: Path | None = None
    endocardium_only: np.ndarray | None = None  # Sunnybrook ES frames: LV blood pool drawn, myocardium unknown

    def mask_by_frame(self) -> dict[tuple[str, int | None], np.ndarray]:
        """Ground-truth label image per (SOPInstanceUID, frame number) for every labelled frame."""
        result = {}
        for p, row in enumerate(self.frames):
            for s, ref in enumerate(row):
                if self.labelled is not None and self.labelled[p, s]:
                    result[(ref.sop_instance_uid, ref.frame_number)] = self.labelmap[p, s]
        return result


def _uid(*parts) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _orientation(case: SourceCase) -> np.ndarray:
    """The case's own ImageOrientationPatient where its source keeps the scanner's (MyoPS), else SAX_ORIENTATION."""
    return SAX_ORIENTATION if case.orientation is None else np.asarray(case.orientation, dtype=float)


def _geometry(case: SourceCase, rows: int, cols: int, slices: int):
    if case.positions is not None:
        return [np.asarray(position, dtype=float) for position in case.positions]
    row_dir, col_dir = SAX_ORIENTATION[:3], SAX_ORIENTATION[3:]
    normal = plane_normal(SAX_ORIENTATION)
    sr, sc = case.pixel_spacing
    centre_offset = row_dir * sc * (cols - 1) / 2 + col_dir * sr * (rows - 1) / 2
    origin = np.array([10.0, -20.0, 5.0]) - centre_offset + normal * case.slice_spacing * (slices - 1) / 2
    # instance order base -> apex runs against the normal, so readers must sort by position
    return [origin - normal * case.slice_spacing * k for k in range(slices)]


def _lge_headers(role: str) -> dict:
    image_type = ["DERIVED", "PRIMARY", "PSIR" if role == "psir" else "M", "NORM", "DIS2D"]
    return {"ImageType": image_type, "ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SP", "MP", "OSP"],
            "ScanOptions": "CG", "SequenceName": "*tfl2d1r" if role == "psir" else "*tfl2d1",
            "InversionTime": "300", "RepetitionTime": "700", "EchoTime": "1.96", "FlipAngle": "25",
            "SeriesDescription": "LGE_PSIR_SAX" if role == "psir" else "LGE_MAG_SAX"}


def _cine_headers() -> dict:
    return {"ImageType": ["DERIVED", "PRIMARY", "CINE", "NONE"], "ScanningSequence": "GR",
            "SequenceVariant": ["SS", "SK"], "ScanOptions": "CG", "SequenceName": "*tfi2d1_12",
            "RepetitionTime": "3.1", "EchoTime": "1.3", "FlipAngle": "50", "SeriesDescription": "CINE_SSFP_SAX"}


class _Writer:
    def __init__(self, case: SourceCase, out_dir: Path, variant: str, transfer_syntax: str | None, seed: int,
                 options: dict):
        self.case, self.out_dir, self.variant, self.seed, self.options = case, out_dir, variant, seed, options
        self.ts_name = transfer_syntax
        self.ts = TRANSFER_SYNTAXES[transfer_syntax]
        self.salt = (case.name, variant, transfer_syntax, seed)
        self.study_uid = _uid("study", *self.salt)
        self.frame_of_reference = _uid("for", *self.salt)
        self.shared_series_uid = _uid("shared-series", *self.salt) if options.get("shared_series_uid") else None
        self.paths: list[Path] = []
        self.date = "20120000" if options.get("odd_dates") else "20240131"
        self.dicom_dir = out_dir / "dicom"
        self.dicom_dir.mkdir(parents=True, exist_ok=True)

    def _series_uid(self, *parts) -> str:
        return self.shared_series_uid or _uid("series", *self.salt, *parts)

    def _base(self, sop_class: UID, sop_uid: str, series_uid: str, series_number: int, headers: dict) -> Dataset:
        case = self.case
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = self.date
        ds.StudyTime = "083000"
        seconds = (8 * 3600 + 30 * 60 + 10 * series_number) % 86400  # later series, later time
        ds.SeriesTime = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
        ds.ContentTime = ds.SeriesTime
        ds.AccessionNumber = ""
        ds.Modality = "MR"
        ds.Manufacturer = {"ge": "GE MEDICAL SYSTEMS", "siemens": "SIEMENS", "philips-enhanced": "Philips"}[self.variant]
        ds.ManufacturerModelName = "dicomnode make-study"
        ds.InstitutionName = "dicomnode test data"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "CMR test study"
        ds.SeriesDescription = "" if self.options.get("no_description") else headers.get("SeriesDescription", "")
        ds.PatientName = case.name.replace(":", "^")
        ds.PatientID = hashlib.sha1(case.name.encode()).hexdigest()[:12].upper()
        ds.PatientBirthDate = "00000000" if self.options.get("odd_dates") else ""
        ds.PatientSex = ""
        if case.height_m:
            ds.PatientSize = f"{case.height_m:.2f}"
        if case.weight_kg:
            ds.PatientWeight = f"{case.weight_kg:.1f}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study_uid, series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.FrameOfReferenceUID = self.frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.BodyPartExamined = "HEART"
        ds.PatientPosition = "HFS"
        ds.ImageType = headers["ImageType"]
        ds.DerivationDescription = case.derivation[:1024]
        ds.ImageComments = ("DERIVED TEST DATA, not for clinical use. " + case.derivation)[:10240]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.MagneticFieldStrength = "1.5"
        ds.SliceThickness = f"{case.slice_spacing:g}"
        ds.SpacingBetweenSlices = f"{case.slice_spacing:g}"
        ds.CardiacNumberOfImages = case.cardiac_number_of_images
        return ds

    def _stored(self, role: str, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        offset = PSIR_STORED_OFFSET if role == "psir" else 0.0
        stored = np.round(image + offset)
        if stored.min() < 0 or stored.max() > 65535:
            raise ValueError(f"{role} values out of the storable range")
        return stored.astype(np.uint16), 1.0, -offset

    def _save(self, ds: Dataset, name: str) -> Path:
        path = self.dicom_dir / name
        if self.ts in (JPEGLSLossless, JPEG2000Lossless, RLELossless):
            ds.compress(self.ts, generate_instance_uid=False)
        elif self.ts == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
        self.paths.append(path)
        return path

    # ---------------------------------------------------------------- classic single-frame
    def write_classic(self, role: str, series_numbers: list[int], per_slice_series: bool) -> list[list[FrameRef]]:
        case, image = self.case, self.case.images[role]
        phases, slices, rows, cols = image.shape
        positions = _geometry(case, rows, cols, slices)
        stored, slope, intercept = self._stored(role, image)
        headers = _lge_headers(role) if case.kind == "lge" else _cine_headers()
        refs = [[None] * slices for _ in range(phases)]
        normal = plane_normal(_orientation(case))
        window_centre, window_width = f"{float(np.median(image)):.0f}", f"{float(np.ptp(image)) or 1:.0f}"
        for s in range(slices):
            number = series_numbers[s] if per_slice_series else series_numbers[0]
            series_uid = self._series_uid(role, number)
            for p in range(phases):
                sop_uid = _uid("sop", *self.salt, role, p, s)
                ds = self._base(MR_IMAGE, sop_uid, series_uid, number, headers)
                for keyword in ("ScanningSequence", "SequenceVariant", "ScanOptions", "SequenceName", "RepetitionTime",
                                "EchoTime", "FlipAngle", "InversionTime"):
                    if keyword in headers:
                        setattr(ds, keyword, headers[keyword])
                ds.MRAcquisitionType = "2D"
                ds.EchoTrainLength = 1
                ds.InstanceNumber = (p + 1) if per_slice_series else s * phases + p + 1
                ds.AcquisitionNumber = 1
                ds.AcquisitionTime = ds.SeriesTime
                ds.TriggerTime = f"{case.trigger_times[p]:.2f}"
                if phases > 1:
                    ds.TemporalPositionIdentifier = p + 1
                    ds.NumberOfTemporalPositions = phases
                ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[s]]
                ds.ImageOrientationPatient = [f"{v:.6f}" for v in _orientation(case)]
                ds.SliceLocation = f"{float(np.dot(positions[s], normal)):.4f}"
                ds.Rows, ds.Columns = rows, cols
                ds.PixelSpacing = [f"{case.pixel_spacing[0]:.6g}", f"{case.pixel_spacing[1]:.6g}"]
                ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "US"
                ds.WindowCenter, ds.WindowWidth = window_centre, window_width
                ds.PixelData = stored[p, s].tobytes()
                self._save(ds, f"{role}_S{number:03d}_I{ds.InstanceNumber:04d}.dcm")
                refs[p][s] = FrameRef(sop_uid, MR_IMAGE, series_uid, None)
        return refs

    # ---------------------------------------------------------------- enhanced multi-frame
    def write_enhanced(self, roles: list[str], series_number: int) -> dict[str, list[list[FrameRef]]]:
        """One Enhanced MR instance holding every frame of `roles` (several roles: mixed PSIR + magnitude frames)."""
        case = self.case
        phases, slices, rows, cols = case.images[roles[0]].shape
        positions = _geometry(case, rows, cols, slices)
        role = roles[0]
        headers = _lge_headers(role) if case.kind == "lge" else _cine_headers()
        series_uid = self._series_uid(*roles, series_number)
        sop_uid = _uid("sop", *self.salt, *roles, "enhanced")
        ds = self._base(ENHANCED_MR_IMAGE, sop_uid, series_uid, series_number, headers)
        mixed = len(roles) > 1
        ds.ImageType = headers["ImageType"][:2] + ["MIXED" if mixed else headers["ImageType"][2]] + headers["ImageType"][3:4]
        ds.InstanceNumber = 1
        ds.ContentQualification = "RESEARCH"
        ds.AcquisitionDateTime = f"{self.date}{ds.SeriesTime}"
        ds.ResonantNucleus = "1H"
        ds.KSpaceFiltering = "NONE"
        ds.ApplicableSafetyStandardAgency = "IEC"
        ds.PixelPresentation = "MONOCHROME"
        ds.VolumetricProperties = "VOLUME"
        ds.VolumeBasedCalculationTechnique = "NONE"
        ds.ComplexImageComponent = "MIXED" if mixed else ("REAL" if role == "psir" else "MAGNITUDE")
        ds.AcquisitionContrast = "T1" if case.kind == "lge" else "UNKNOWN"
        # ImageType DERIVED: the MR Pulse Sequence module (EchoPulseSequence ...) must not be present
        ds.DeviceSerialNumber = "0000"
        ds.SoftwareVersions = "dicomnode make-study"
        ds.AcquisitionContextSequence = DicomSequence([])
        ds.Rows, ds.Columns = rows, cols
        ds.NumberOfFrames = phases * slices * len(roles)
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "00"
        ds.PresentationLUTShape = "IDENTITY"
        dimension_org = _uid("dimension", *self.salt, *roles)
        organisation = Dataset()
        organisation.DimensionOrganizationUID = dimension_org
        ds.DimensionOrganizationSequence = DicomSequence([organisation])
        index_items = []
        pointers = [("InStackPositionNumber", "FrameContentSequence"), ("TemporalPositionIndex", "FrameContentSequence")]
        if mixed:
            pointers.append(("ComplexImageComponent", "MRImageFrameTypeSequence"))
        for pointer, group in pointers:
            item = Dataset()
            item.DimensionOrganizationUID = dimension_org
            item.DimensionIndexPointer = pydicom.datadict.tag_for_keyword(pointer)
            item.FunctionalGroupPointer = pydicom.datadict.tag_for_keyword(group)
            index_items.append(item)
        ds.DimensionIndexSequence = DicomSequence(index_items)

        shared = Dataset()
        measures = Dataset()
        measures.PixelSpacing = [f"{case.pixel_spacing[0]:.6g}", f"{case.pixel_spacing[1]:.6g}"]
        measures.SliceThickness = f"{case.slice_spacing:g}"
        measures.SpacingBetweenSlices = f"{case.slice_spacing:g}"
        shared.PixelMeasuresSequence = DicomSequence([measures])
        orientation = Dataset()
        orientation.ImageOrientationPatient = [f"{v:.6f}" for v in _orientation(case)]
        shared.PlaneOrientationSequence = DicomSequence([orientation])
        timing = Dataset()
        timing.RepetitionTime = float(headers["RepetitionTime"])
        timing.FlipAngle = float(headers["FlipAngle"])
        timing.EchoTrainLength = 1
        timing.RFEchoTrainLength = 1
        timing.GradientEchoTrainLength = 1
        sar = Dataset()
        sar.SpecificAbsorptionRateDefinition = "IEC_WHOLE_BODY"
        sar.SpecificAbsorptionRateValue = 1.0
        timing.SpecificAbsorptionRateSequence = DicomSequence([sar])
        timing.GradientOutputType = "DB_DT"
        timing.GradientOutput = 10.0
        operating_modes = []
        for mode_type in ("STATIC FIELD", "RF", "GRADIENT"):
            mode = Dataset()
            mode.OperatingModeType, mode.OperatingMode = mode_type, "IEC_NORMAL"
            operating_modes.append(mode)
        timing.OperatingModeSequence = DicomSequence(operating_modes)
        shared.MRTimingAndRelatedParametersSequence = DicomSequence([timing])
        modifier = Dataset()
        modifier.InversionRecovery = "YES" if case.kind == "lge" else "NO"
        if case.kind == "lge":
            modifier.InversionTimes = [float(headers["InversionTime"])]
        modifier.FlowCompensation = "NONE"
        modifier.T2Preparation = "NO"
        modifier.SpatialPresaturation = "NONE"
        modifier.PartialFourier = "NO"
        modifier.ParallelAcquisition = "NO"
        modifier.SpectrallySelectedExcitation = "NONE"
        shared.MRModifierSequence = DicomSequence([modifier])
        echo = Dataset()
        echo.EffectiveEchoTime = float(headers["EchoTime"])
        shared.MREchoSequence = DicomSequence([echo])

        def frame_type_item(frame_role: str) -> Dataset:
            frame_headers = _lge_headers(frame_role) if case.kind == "lge" else headers
            item = Dataset()
            item.FrameType = frame_headers["ImageType"][:4]
            item.PixelPresentation = "MONOCHROME"
            item.VolumetricProperties = "VOLUME"
            item.VolumeBasedCalculationTechnique = "NONE"
            item.ComplexImageComponent = "REAL" if frame_role == "psir" else "MAGNITUDE"
            item.AcquisitionContrast = ds.AcquisitionContrast
            return item

        if not mixed:
            shared.MRImageFrameTypeSequence = DicomSequence([frame_type_item(role)])
        heart = Dataset()
        heart.CodeValue, heart.CodingSchemeDesignator, heart.CodeMeaning = "80891009", "SCT", "Heart"
        anatomy = Dataset()
        anatomy.AnatomicRegionSequence = DicomSequence([heart])
        anatomy.FrameLaterality = "U"
        shared.FrameAnatomySequence = DicomSequence([anatomy])
        ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

        per_frame = []
        pixel_frames = []
        refs = {r: [[None] * slices for _ in range(phases)] for r in roles}
        stored_by_role = {r: self._stored(r, case.images[r]) for r in roles}
        frame_number = 0
        for s, p, role in ((s, p, r) for s in range(slices) for r in roles for p in range(phases)):
            stored, slope, intercept = stored_by_role[role]
            frame_number += 1
            item = Dataset()
            content = Dataset()
            content.StackID = "1"
            content.InStackPositionNumber = s + 1
            content.TemporalPositionIndex = p + 1
            content.DimensionIndexValues = [s + 1, p + 1] + ([roles.index(role) + 1] if mixed else [])
            content.FrameAcquisitionDateTime = f"{self.date}{ds.SeriesTime}"
            item.FrameContentSequence = DicomSequence([content])
            position = Dataset()
            position.ImagePositionPatient = [f"{v:.6f}" for v in positions[s]]
            item.PlanePositionSequence = DicomSequence([position])
            cardiac = Dataset()
            cardiac.NominalCardiacTriggerDelayTime = float(case.trigger_times[p])
            item.CardiacSynchronizationSequence = DicomSequence([cardiac])
            transform = Dataset()
            transform.RescaleIntercept = f"{intercept:g}"
            transform.RescaleSlope = f"{slope:g}"
            transform.RescaleType = "US"
            item.PixelValueTransformationSequence = DicomSequence([transform])
            if mixed:
                item.MRImageFrameTypeSequence = DicomSequence([frame_type_item(role)])
            per_frame.append(item)
            pixel_frames.append(stored[p, s])
            refs[role][p][s] = FrameRef(sop_uid, ENHANCED_MR_IMAGE, series_uid, frame_number)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
        ds.PixelData = np.stack(pixel_frames).tobytes()
        self._save(ds, f"{'_'.join(roles)}_S{series_number:03d}_enhanced.dcm")
        return refs


def _ground_truth(out_dir: Path, study: GeneratedStudy) -> Path:
    path = out_dir / "ground_truth.npz"
    arrays = {
        "labelmap": study.labelmap, "labelled": study.labelled,
        **({"image": study.image} if study.image is not None else {}),
        "sop_instance_uids": np.array([[r.sop_instance_uid for r in row] for row in study.frames]),
        "frame_numbers": np.array([[r.frame_number or 0 for r in row] for row in study.frames]),
        "pixel_spacing": np.array(study.pixel_spacing), "slice_spacing": np.array(study.slice_spacing),
        "primary_role": np.array(study.primary_role), "source": np.array(study.source),
    }
    if study.endocardium_only is not None:
        arrays["endocardium_only"] = study.endocardium_only
    for role, (frames, image) in study.secondary.items():
        arrays[f"{role}_sop_instance_uids"] = np.array([[r.sop_instance_uid for r in row] for row in frames])
        arrays[f"{role}_frame_numbers"] = np.array([[r.frame_number or 0 for r in row] for row in frames])
        arrays[f"{role}_image"] = image
    np.savez(path, **arrays)
    return path


def _licence(out_dir: Path, text: str, source: str) -> Path:
    path = out_dir / "LICENSE.txt"
    path.write_text(f"Generated by dicomnode devtools make-study from {source}.\n"
                    f"Derived data keeps the licence of its source:\n\n{text}\n")
    return path


def make_study(source: str, out_dir: Path, variant: str = "ge", transfer_syntax: str | None = None,
               seed: int | None = None, datasets: str | Path | None = None, **options) -> GeneratedStudy:
    """Write one DICOM study with ground truth into out_dir (dicom/, ground_truth.npz, LICENSE.txt).

    source: "emidec:Case_P043", "myops:Case3002", "acdc:patient001", "acdc4d:patient090" or
    "sunnybrook:SCD0000101".
    variant: "ge" (one series per stack), "siemens" (one series per slice; LGE as PSIR + magnitude series pairs),
    "philips-enhanced" (Enhanced MR Image Storage, per-frame functional groups). MyoPS LGE is magnitude only (the
    real images; no PSIR exists), so its study has one LGE series (per slice with "siemens"). Sunnybrook is copied
    as is (variant "original"; option with_localizers=True adds its 3-plane localizer).
    seed: generated UIDs are a function of (source, variant, transfer syntax, seed); None is the same as 0. A
    Sunnybrook copy keeps its original UIDs where seed is None; with a seed, its study, series, SOP instance and
    frame of reference UIDs are replaced consistently (references between its files included).
    transfer_syntax: None/"explicit", "jpeg-ls", "j2k", "rle", "deflate" (all lossless).
    options: no_description (empty SeriesDescription), odd_dates (StudyDate 20120000), shared_series_uid (all
    series share one SeriesInstanceUID, told apart only by SeriesNumber), mixed_frames (philips-enhanced LGE: PSIR
    and magnitude frames in ONE instance, told apart by per-frame FrameType / ComplexImageComponent).
    """
    out_dir = Path(out_dir)
    root = datasets_dir(datasets)
    kind, _, name = source.partition(":")
    if not name:
        raise ValueError(f"source must look like 'emidec:Case_P043', got {source!r}")
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax {transfer_syntax!r} not one of {sorted(k for k in TRANSFER_SYNTAXES if k)}")
    unknown = set(options) - {"no_description", "odd_dates", "shared_series_uid", "with_localizers", "mixed_frames"}
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}")
    if kind == "sunnybrook":
        return _copy_sunnybrook(name, out_dir, root, transfer_syntax, bool(options.get("with_localizers", True)),
                                seed)
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} not one of {VARIANTS}")
    if kind == "emidec":
        case = load_emidec(name, root)
    elif kind == "myops":
        case = load_myops(name, root)
    elif kind in ("acdc", "acdc4d"):
        case = load_acdc(name, root, four_d=kind == "acdc4d")
    else:
        raise ValueError(f"unknown source kind {kind!r} (emidec, myops, acdc, acdc4d, sunnybrook)")
    roles = [role for role in ("magnitude", "psir") if role in case.images] if case.kind == "lge" else ["cine"]
    if options.get("mixed_frames") and len(roles) < 2:
        raise ValueError(f"mixed_frames needs PSIR and magnitude images; {source} has {roles[0]} only")
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _Writer(case, out_dir, variant, transfer_syntax, seed or 0, options)
    refs: dict[str, list[list[FrameRef]]] = {}
    slices = case.labelmap.shape[1]
    for offset, role in enumerate(roles):
        if variant == "ge":
            refs[role] = writer.write_classic(role, [10 + offset if case.kind == "lge" else 5], per_slice_series=False)
        elif variant == "siemens":
            numbers = [20 + 2 * s + offset for s in range(slices)] if case.kind == "lge" else [30 + s for s in range(slices)]
            refs[role] = writer.write_classic(role, numbers, per_slice_series=True)
        elif not options.get("mixed_frames"):
            refs.update(writer.write_enhanced([role], 1001 + 100 * offset if case.kind == "lge" else 501))
    if variant == "philips-enhanced" and options.get("mixed_frames"):
        refs.update(writer.write_enhanced(roles, 1001))
    primary = ("psir" if "psir" in roles else "magnitude") if case.kind == "lge" else "cine"
    study = GeneratedStudy(
        source=source, variant=variant, transfer_syntax=transfer_syntax, out_dir=out_dir, paths=writer.paths,
        study_instance_uid=writer.study_uid, primary_role=primary, labelmap=case.labelmap, labelled=case.labelled,
        frames=refs[primary], image=case.images[primary].astype(np.float32), pixel_spacing=case.pixel_spacing,
        slice_spacing=case.slice_spacing,
        secondary={role: (refs[role], case.images[role].astype(np.float32)) for role in roles if role != primary},
    )
    study.ground_truth_path = _ground_truth(out_dir, study)
    study.licence_path = _licence(out_dir, case.licence, source)
    return study


def _rasterise(points: np.ndarray, rows: int, cols: int) -> np.ndarray:
    from matplotlib.path import Path as PolygonPath

    yy, xx = np.mgrid[0:rows, 0:cols]
    inside = PolygonPath(points).contains_points(np.column_stack([xx.ravel(), yy.ravel()]))
    return inside.reshape(rows, cols)


#: UIDs the DICOM standard defines (SOP classes, transfer syntaxes, coding schemes): never replaced
_STANDARD_UID_ROOT = "1.2.840.10008."


def _replace_uids(ds: Dataset, salt: tuple) -> None:
    """Every instance-identifying UI value (study, series, SOP instance, frame of reference, and every reference to
    one in sequences) replaced by a new UID derived from (salt, original): the same original gets the same new UID in
    every file, so references between the files stay consistent. Standard UIDs (1.2.840.10008.*) are kept."""
    def new(value) -> str:
        value = str(value)
        return value if not value or value.startswith(_STANDARD_UID_ROOT) else _uid("re-uid", *salt, value)

    def visit(dataset, element):
        if element.VR == "UI" and element.value:
            if isinstance(element.value, (list, MultiValue)):
                element.value = [new(v) for v in element.value]
            else:
                element.value = new(element.value)

    ds.walk(visit)
    if "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = new(ds.file_meta.MediaStorageSOPInstanceUID)


def _copy_sunnybrook(patient: str, out_dir: Path, root: Path, transfer_syntax: str | None,
                     with_localizers: bool, seed: int | None = None) -> GeneratedStudy:
    """Copy the Sunnybrook cine (and localizer) and turn the expert contours into a label map (LV blood pool, myo).
    With a seed, the copies get new study, series, SOP instance and frame of reference UIDs (consistently)."""
    cine_dir = root / "sunnybrook-scd" / "dicoms" / patient
    if not cine_dir.is_dir():
        raise ValueError(f"Sunnybrook patient {patient!r} not found at {cine_dir}")
    links = {row["patient_id"]: row["original_id"] for row in csv.DictReader(open(root / "sunnybrook-scd" / "link.csv"))}
    dicom_dir = out_dir / "dicom"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    sources = [("cine", p) for p in sorted(cine_dir.glob("*.dcm"))]
    localizer_dir = root / "sunnybrook-scd-localizers" / "dicoms" / patient
    if with_localizers and localizer_dir.is_dir():
        sources += [("localizer", p) for p in sorted(localizer_dir.glob("*.dcm"))]
    paths, cine_headers = [], []
    ts = TRANSFER_SYNTAXES[transfer_syntax]
    salt = (f"sunnybrook:{patient}", transfer_syntax, seed)
    for role, path in sources:
        target = dicom_dir / f"{role}_{path.name}"
        if ts == ExplicitVRLittleEndian and seed is None:
            shutil.copyfile(path, target)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        else:
            ds = pydicom.dcmread(path)
            if seed is not None:
                _replace_uids(ds, salt)
            if ts == ExplicitVRLittleEndian:
                pass  # re-UID only: the original encoding is kept
            elif ts == DeflatedExplicitVRLittleEndian:
                ds.file_meta.TransferSyntaxUID = ts
            else:
                ds.compress(ts, generate_instance_uid=False)
            ds.save_as(target, enforce_file_format=True)
        paths.append(target)
        if role == "cine":
            cine_headers.append(ds)
    normal = plane_normal(np.array([float(v) for v in cine_headers[0].ImageOrientationPatient]))
    slices: dict[float, list] = {}
    for ds in cine_headers:
        distance = round(float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)), 2)
        slices.setdefault(distance, []).append(ds)
    ordered = [sorted(slices[d], key=lambda d_: int(d_.InstanceNumber)) for d in sorted(slices)]
    phases = len(ordered[0])
    rows, cols = int(cine_headers[0].Rows), int(cine_headers[0].Columns)
    frames = [[FrameRef(str(ordered[s][p].SOPInstanceUID), str(ordered[s][p].SOPClassUID),
                        str(ordered[s][p].SeriesInstanceUID), None) for s in range(len(ordered))] for p in range(phases)]
    by_instance = {int(ds.InstanceNumber): (p, s) for s, column in enumerate(ordered) for p, ds in enumerate(column)}
    labelmap = np.zeros((phases, len(ordered), rows, cols), np.uint8)
    labelled = np.zeros((phases, len(ordered)), bool)
    contour_dir = root / "sunnybrook-scd" / "contourfiles" / links[patient]
    inner = {int(f.name.split("-")[2]): f for f in (contour_dir / "i-contours").glob("*.txt")}
    outer = {int(f.name.split("-")[2]): f for f in (contour_dir / "o-contours").glob("*.txt")}
    endocardium_only = np.zeros((phases, len(ordered)), bool)
    for number, path in inner.items():
        p, s = by_instance[number]
        blood = _rasterise(np.loadtxt(path), rows, cols)
        if number in outer:
            labelmap[p, s][_rasterise(np.loadtxt(outer[number]), rows, cols) & ~blood] = Label.LV_MYOCARDIUM
            labelled[p, s] = True
        else:  # ES frames: only the endocardium was drawn, the myocardium is unknown
            endocardium_only[p, s] = True
        labelmap[p, s][blood] = Label.LV_BLOOD_POOL
    study = GeneratedStudy(
        source=f"sunnybrook:{patient}", variant="original", transfer_syntax=transfer_syntax, out_dir=out_dir,
        paths=paths, study_instance_uid=str(cine_headers[0].StudyInstanceUID), primary_role="cine",
        labelmap=labelmap, labelled=labelled, frames=frames, image=None,
        pixel_spacing=tuple(float(v) for v in cine_headers[0].PixelSpacing),
        slice_spacing=float(np.median(np.diff(sorted(slices)))) if len(slices) > 1 else None,
        endocardium_only=endocardium_only,
    )
    study.ground_truth_path = _ground_truth(out_dir, study)
    study.licence_path = _licence(out_dir, SUNNYBROOK_LICENCE, f"sunnybrook:{patient}")
    return study
