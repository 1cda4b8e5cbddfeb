"""One-page visual report (matplotlib PDF + PNG) and its DICOM wrappers: Encapsulated PDF and Secondary Capture."""
from __future__ import annotations

import datetime as dt
import io
from typing import Sequence

import highdicom as hd
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

from dicomnode.analysis.pipeline import AlgorithmInfo, Declined, PipelineResult, SegmentationResult
from dicomnode.results.headers import derivable_header
from dicomnode.labels import ENHANCED_LABELS, MYOCARDIUM_LABELS, Label
from dicomnode.results.provenance import NODE_MANUFACTURER, NODE_MODEL_NAME, apply_provenance, node_version
from dicomnode.uids import new_uid

BANNER = "AI-generated, not verified; not for diagnostic use without review"
DOCUMENT_TITLE = "AI CMR analysis report (unverified)"
PAGE_INCHES = (8.27, 11.69)  # A4 portrait
PNG_DPI = 110
#: overlay colours per node label (RGBA); background transparent
LABEL_COLOURS = {
    Label.LV_BLOOD_POOL: (0.86, 0.16, 0.16, 0.45),
    Label.LV_MYOCARDIUM: (0.16, 0.70, 0.24, 0.45),
    Label.SCAR: (0.98, 0.82, 0.0, 0.75),
    Label.MVO: (0.59, 0.24, 0.86, 0.85),
    Label.RV_BLOOD_POOL: (0.16, 0.43, 0.90, 0.45),
}
_OVERLAY_CMAP = ListedColormap([(0, 0, 0, 0)] + [LABEL_COLOURS[Label(v)] for v in range(1, 6)])


def _fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None or isinstance(value, (dict, list)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return f"{float(value):.{digits}f}{(' ' + unit) if unit else ''}"
    except (TypeError, ValueError):
        return str(value)


def key_number_rows(results: Sequence[PipelineResult], bsa: tuple[float, str] | None) -> list[tuple[str, str]]:
    """(quantity, value) rows of the key-numbers table, LGE block first, then cine."""
    rows: list[tuple[str, str]] = []
    by_name = {r.name: r for r in results}
    lge = by_name.get("lge")
    if lge is not None and isinstance(lge.summary, dict):
        s = lge.summary
        nsd, fwhm = s.get("nsd") or {}, s.get("fwhm") or {}
        rows += [
            ("LGE method", str(s.get("method", "dl")).upper()),
            ("LV myocardial volume", _fmt(s.get("myocardium_volume_ml"), "mL")),
            ("LV mass (LGE)", _fmt(s.get("lv_mass_g"), "g")),
            ("Scar volume (incl. MVO)", _fmt(s.get("scar_volume_ml"), "mL")),
            ("MVO volume", _fmt(s.get("mvo_volume_ml"), "mL")),
            ("%LGE (DL)", _fmt(s.get("lge_percent"), "%")),
            (f"%LGE ({nsd.get('n', 'n')}-SD)", _fmt(nsd.get("lge_percent"), "%")),
            ("%LGE (FWHM)", _fmt(fwhm.get("lge_percent"), "%")),
            ("Large scar burden", _fmt(s.get("large_scar_burden"))),
        ]
    cine = by_name.get("cine")
    if cine is not None and isinstance(cine.summary, dict):
        s = cine.summary

        def index(value):
            return None if value is None or bsa is None else float(value) / bsa[0]

        rows += [
            ("LV EDV / ESV", f"{_fmt(s.get('lv_edv_ml'), 'mL')} / {_fmt(s.get('lv_esv_ml'), 'mL')}"),
            ("LV EDVi / ESVi",
             f"{_fmt(index(s.get('lv_edv_ml')), 'mL/m²')} / {_fmt(index(s.get('lv_esv_ml')), 'mL/m²')}"),
            ("LV SV / EF", f"{_fmt(s.get('lv_sv_ml'), 'mL')} / {_fmt(s.get('lv_ef_percent'), '%')}"),
            ("LV mass (cine, ED)", f"{_fmt(s.get('lv_mass_g'), 'g')} ({_fmt(index(s.get('lv_mass_g')), 'g/m²')})"),
            ("RV EDV / ESV", f"{_fmt(s.get('rv_edv_ml'), 'mL')} / {_fmt(s.get('rv_esv_ml'), 'mL')}"),
            ("RV SV / EF", f"{_fmt(s.get('rv_sv_ml'), 'mL')} / {_fmt(s.get('rv_ef_percent'), '%')}"),
            ("ED / ES phase", f"{s.get('ed_phase', 'n/a')} / {s.get('es_phase', 'n/a')}"),
            ("BSA", f"{_fmt(bsa[0], 'm²', 2)} ({bsa[1]})" if bsa else "n/a"),
        ]
    return rows


def per_slice_scar_percent(result: SegmentationResult) -> np.ndarray:
    """Scar (incl. MVO) as % of the myocardium on each slice of the first phase; NaN where no myocardium."""
    labels = np.asarray(result.labelmap)[0]
    myocardium = np.isin(labels, MYOCARDIUM_LABELS).sum(axis=(1, 2)).astype(float)
    scar = np.isin(labels, ENHANCED_LABELS).sum(axis=(1, 2)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(myocardium > 0, 100.0 * scar / np.maximum(myocardium, 1), np.nan)


def mid_ventricular_slice(result: SegmentationResult, phase_position: int = 0) -> int:
    """The slice with LV blood pool nearest the middle of the slices that contain any LV."""
    labels = np.asarray(result.labelmap)[phase_position]
    present = np.nonzero(np.isin(labels, [Label.LV_BLOOD_POOL, *MYOCARDIUM_LABELS]).any(axis=(1, 2)))[0]
    if present.size == 0:
        return labels.shape[0] // 2
    return int(present[len(present) // 2])


def crop_box(labelmap: np.ndarray, margin: int = 16) -> tuple[slice, slice]:
    """A square (rows, cols) window around every labelled pixel of a (..., rows, cols) label map, with a margin."""
    rows, cols = labelmap.shape[-2:]
    found = np.nonzero(np.asarray(labelmap).reshape(-1, rows, cols).any(axis=0))
    if found[0].size == 0:
        return slice(0, rows), slice(0, cols)
    r0, r1 = found[0].min() - margin, found[0].max() + 1 + margin
    c0, c1 = found[1].min() - margin, found[1].max() + 1 + margin
    side = min(max(r1 - r0, c1 - c0), rows, cols)
    rc, cc = (r0 + r1) // 2, (c0 + c1) // 2
    r0 = int(np.clip(rc - side // 2, 0, rows - side))
    c0 = int(np.clip(cc - side // 2, 0, cols - side))
    return slice(r0, r0 + side), slice(c0, c0 + side)


def _show_overlay(ax, image: np.ndarray, labels: np.ndarray, title: str,
                  window: tuple[slice, slice] | None = None) -> None:
    if window is not None:
        image, labels = image[window], labels[window]
    finite = image[np.isfinite(image)]
    low, high = (np.percentile(finite, [1, 99]) if finite.size else (0, 1))
    ax.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
    ax.imshow(np.clip(labels, 0, 5), cmap=_OVERLAY_CMAP, vmin=-0.5, vmax=5.5, interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def _find(results: Sequence[PipelineResult], name: str) -> PipelineResult | None:
    return next((r for r in results if r.name == name), None)


def render_report(
    header: Dataset,
    results: Sequence[PipelineResult],
    context,
    bsa: tuple[float, str] | None = None,
    declined: Sequence[Declined] = (),
) -> tuple[bytes, bytes]:
    """(pdf_bytes, png_bytes) of the one-page report for one study."""
    figure = Figure(figsize=PAGE_INCHES)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(8, 6, left=0.05, right=0.97, top=0.87, bottom=0.15, hspace=0.8, wspace=0.25)
    figure.patches.append(Rectangle((0.0, 0.945), 1.0, 0.055, transform=figure.transFigure, color="#b00020",
                                    zorder=0))
    figure.text(0.5, 0.972, BANNER, ha="center", va="center", color="white", fontsize=12, weight="bold")
    started: dt.datetime = context.started_at
    figure.text(0.05, 0.925, f"{DOCUMENT_TITLE}   -   patient {header.get('PatientID') or 'n/a'}   -   study "
                             f"{header.get('StudyDate') or 'n/a'}   -   analysis {started:%Y-%m-%d %H:%M}",
                fontsize=8)
    algorithms = sorted({f"{a.name} {a.version}" for r in results for a in r.algorithms})
    figure.text(0.05, 0.91, "Algorithms: " + ("; ".join(algorithms) or "n/a") + f"   -   dicomnode {node_version()}",
                fontsize=6.5, color="#444444")

    table_ax = figure.add_subplot(grid[0:3, 0:3])
    table_ax.set_axis_off()
    rows = key_number_rows(results, bsa) or [("No quantitative result", "")]
    table = table_ax.table(cellText=[[q, v] for q, v in rows], colLabels=["Quantity", "Value"], loc="upper left",
                           colWidths=[0.55, 0.45], cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(6.5)
    table.scale(1.0, 0.95)
    table_ax.set_title("Key numbers", fontsize=9, loc="left")

    cine = _find(results, "cine")
    curve_ax = figure.add_subplot(grid[0, 3:6])
    curve_ax.xaxis.get_major_locator().set_params(integer=True)
    curve = (cine.measurements.get("lv_volume_curve_ml") if cine is not None else None)
    if curve:
        curve_ax.plot(range(len(curve)), curve, "-o", color="#dc2828", markersize=2.5, linewidth=1)
        summary = cine.summary if isinstance(cine.summary, dict) else {}
        for key, label in (("ed_phase", "ED"), ("es_phase", "ES")):
            phase = summary.get(key)
            if phase is not None and 0 <= int(phase) < len(curve):
                curve_ax.annotate(label, (int(phase), curve[int(phase)]), fontsize=6, xytext=(2, 4),
                                  textcoords="offset points")
        curve_ax.set_xlabel("phase", fontsize=6)
        curve_ax.set_ylabel("LV volume (mL)", fontsize=6)
    else:
        curve_ax.text(0.5, 0.5, "LV volume curve not available", ha="center", va="center", fontsize=7)
        curve_ax.set_axis_off()
    curve_ax.tick_params(labelsize=6)
    curve_ax.set_title("LV volume over the cardiac cycle", fontsize=8, loc="left")

    lge = _find(results, "lge")
    lge_seg = lge.segmentations[0] if lge is not None and lge.segmentations else None
    bar_ax = figure.add_subplot(grid[1:3, 3:6])
    if lge_seg is not None:
        extent = per_slice_scar_percent(lge_seg)
        bar_ax.bar(np.arange(len(extent)), np.nan_to_num(extent), color="#e0b000")
        bar_ax.set_xlabel("LGE slice (base/apex order of the stack)", fontsize=6)
        bar_ax.set_ylabel("scar % of myocardium", fontsize=6)
        bar_ax.set_ylim(0, max(10.0, float(np.nanmax(extent)) * 1.15) if np.isfinite(extent).any() else 10.0)
    else:
        bar_ax.text(0.5, 0.5, "no LGE analysis", ha="center", va="center", fontsize=7)
        bar_ax.set_axis_off()
    bar_ax.tick_params(labelsize=6)
    bar_ax.set_title("Per-slice scar extent", fontsize=8, loc="left")

    cine_seg = cine.segmentations[0] if cine is not None and cine.segmentations else None
    if cine_seg is not None:
        for position, phase_name in enumerate(cine_seg.phase_names[:2]):
            k = mid_ventricular_slice(cine_seg, position)
            ax = figure.add_subplot(grid[3:5, position * 3:(position + 1) * 3])
            image = cine_seg.volume.pixels[cine_seg.phases[position], k]
            _show_overlay(ax, image, np.asarray(cine_seg.labelmap)[position, k],
                          f"cine {phase_name} (phase {cine_seg.phases[position]}), mid-ventricular slice {k}",
                          crop_box(cine_seg.labelmap))
    if lge_seg is not None:
        slices = lge_seg.volume.pixels.shape[1]
        chosen = np.unique(np.linspace(0, slices - 1, num=min(slices, 18)).round().astype(int))
        window = crop_box(lge_seg.labelmap)
        for n, k in enumerate(chosen):
            ax = figure.add_subplot(grid[5 + n // 6, n % 6])
            _show_overlay(ax, lge_seg.volume.pixels[lge_seg.phases[0], k], np.asarray(lge_seg.labelmap)[0, k],
                          f"LGE slice {k}", window)

    legend = ("Overlay: red LV blood pool, green LV myocardium, yellow scar, purple MVO, blue RV blood pool. "
              "All numbers are unverified AI output.")
    declined_lines = [f"- {d.reason}" + (f" (series {d.series_instance_uid})" if d.series_instance_uid else "")
                      for d in declined] or ["- none"]
    suggestions = _find(results, "suggestions")
    suggestion_lines = []
    if suggestions is not None and isinstance(suggestions.summary, list):
        for item in suggestions.summary[:3]:
            text = str(item.get("text", ""))
            suggestion_lines.append(f"- ({_fmt(item.get('score'), digits=2)}, {item.get('report_id', '')}) "
                                    f"{text[:110]}{'...' if len(text) > 110 else ''}")
    footer = [legend, "", "Declined / not analysed:", *declined_lines[:6]]
    if suggestion_lines:
        footer += ["", "Report text suggestions retrieved from prior reports (unverified):", *suggestion_lines]
    figure.text(0.05, 0.035, "\n".join(footer), fontsize=6.3, va="bottom", wrap=True)

    pdf, png = io.BytesIO(), io.BytesIO()
    figure.savefig(pdf, format="pdf", metadata={"Title": DOCUMENT_TITLE, "Creator": f"dicomnode {node_version()}"})
    figure.savefig(png, format="png", dpi=PNG_DPI)
    return pdf.getvalue(), png.getvalue()


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def build_pdf_document(
    pdf_bytes: bytes,
    header: Dataset,
    context,
    algorithms: Sequence[AlgorithmInfo],
    series_number: int,
    source_instances: Sequence[Dataset] = (),
) -> Dataset:
    """Encapsulated PDF IOD (highdicom 0.28 has no EncapsulatedDocument class: highdicom's SOPClass base + modules).

    `source_instances` (e.g. the SEG and SR) are listed in Source Instance Sequence.
    """
    if not pdf_bytes.startswith(b"%PDF"):
        raise ValueError("pdf_bytes is not a PDF document (no %PDF header)")
    started_at: dt.datetime = context.started_at
    document = hd.SOPClass(
        study_instance_uid=header.StudyInstanceUID,
        series_instance_uid=new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        sop_class_uid=EncapsulatedPDFStorage,
        instance_number=1,
        modality="DOC",
        manufacturer=NODE_MANUFACTURER,
        manufacturer_model_name=NODE_MODEL_NAME,
        software_versions=node_version(),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        patient_id=header.get("PatientID"),
        patient_name=header.get("PatientName"),
        patient_birth_date=header.get("PatientBirthDate"),
        patient_sex=header.get("PatientSex"),
        accession_number=header.get("AccessionNumber"),
        study_id=header.get("StudyID"),
        study_date=header.get("StudyDate"),
        study_time=header.get("StudyTime"),
        referring_physician_name=header.get("ReferringPhysicianName"),
        content_date=started_at.date(),
        content_time=started_at.time(),
        series_date=started_at.date(),
        series_time=started_at.time(),
        specific_character_set=header.get("SpecificCharacterSet"),
    )
    document.copy_patient_and_study_information(derivable_header(header))
    document._add_contributing_equipment(None)
    # SC Equipment module
    document.ConversionType = "SYN"
    # Encapsulated Document module
    document.AcquisitionDateTime = started_at.strftime("%Y%m%d%H%M%S.%f")
    document.BurnedInAnnotation = "YES"
    document.RecognizableVisualFeatures = "NO"
    document.DocumentTitle = DOCUMENT_TITLE
    document.ConceptNameCodeSequence = [_code_item("18748-4", "LN", "Diagnostic imaging report")]
    document.MIMETypeOfEncapsulatedDocument = "application/pdf"
    document.EncapsulatedDocumentLength = len(pdf_bytes)
    document.EncapsulatedDocument = pdf_bytes + (b"\x00" if len(pdf_bytes) % 2 else b"")
    if source_instances:
        references = []
        for instance in source_instances:
            item = Dataset()
            item.ReferencedSOPClassUID = instance.SOPClassUID
            item.ReferencedSOPInstanceUID = instance.SOPInstanceUID
            references.append(item)
        document.SourceInstanceSequence = references
    return apply_provenance(document, algorithms, started_at, "CMR report PDF")


def build_secondary_capture(
    png_bytes: bytes,
    header: Dataset,
    context,
    algorithms: Sequence[AlgorithmInfo],
    series_number: int,
) -> Dataset:
    """Secondary Capture (highdicom SCImage, RGB) of the report page."""
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png_bytes)).convert("RGB"))
    started_at: dt.datetime = context.started_at
    reference = derivable_header(header)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=image,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=NODE_MANUFACTURER,
        patient_orientation=("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        manufacturer_model_name=NODE_MODEL_NAME,
        software_versions=node_version(),
        content_date=started_at.date(),
        content_time=started_at.time(),
        series_date=started_at.date(),
        series_time=started_at.time(),
    )
    capture.PatientOrientation = None  # a report page has no patient orientation (type 2C, present and empty)
    capture.BodyPartExamined = "HEART"  # unpaired: no Laterality needed
    capture.BurnedInAnnotation = "YES"
    capture.ImageType = ["DERIVED", "SECONDARY"]
    capture.ConversionType = "SYN"
    return apply_provenance(capture, algorithms, started_at, "CMR report image")
