"""Whether a DICOM file arrived whole: pydicom reads a truncated copy without complaint, these checks name it."""
from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.encaps import parse_fragments
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

from dicomnode.observe import sop_class_name

UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def ends_early(dataset: Dataset) -> str | None:
    """The top-level element whose value is shorter than its declared length (where a truncated file ends), else
    None. Only meaningful right after a whole `dcmread`, before the elements are converted."""
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag)
        if (isinstance(raw, RawDataElement) and raw.length != UNDEFINED_LENGTH and raw.value is not None
                and len(raw.value) < raw.length):
            return (f"the file ends inside {keyword_for_tag(raw.tag) or raw.tag} "
                    f"({len(raw.value)} of {raw.length} bytes)")
    return None


def needs_pixel_data(dataset: Dataset) -> bool:
    """True for an image: the Image Pixel module is there (Rows), or the SOP class is an "… Image Storage"."""
    return "Rows" in dataset or UID(str(dataset.get("SOPClassUID", ""))).keyword.endswith("ImageStorage")


def pixel_problem(dataset: Dataset) -> str | None:
    """Why an instance's Pixel Data cannot be used before decoding (absent or empty), else None."""
    keyword = next((k for k in PIXEL_KEYWORDS if k in dataset), None)
    if keyword is None:
        return "no Pixel Data"
    return None if dataset[keyword].value else "Pixel Data is empty"


def file_problem(path: Path | str) -> str | None:
    """Why a file is not a whole DICOM instance (missing, unreadable, not DICOM Part 10, cut short: an element or
    the Pixel Data ends early, or an image without Pixel Data), else None. Reads the whole file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what pydicom warns of, the returned reason says
            dataset = pydicom.dcmread(path)  # whole: a truncated file shows only in its last element or Pixel Data
    except FileNotFoundError:
        return "no such file"
    except PermissionError:
        return "permission denied"
    except IsADirectoryError:
        return "is a folder"
    except pydicom.errors.InvalidDicomError:
        return "not a DICOM file"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except Exception as exc:  # noqa: BLE001 - pydicom's parse errors have no common base
        return f"cannot be parsed, cut short or corrupt ({type(exc).__name__}: {exc})"
    if "SOPClassUID" not in dataset:  # pydicom drops the whole data set where encapsulated Pixel Data is cut short
        return ("its data set is missing or cut short" if "MediaStorageSOPClassUID" in dataset.file_meta
                else "not a DICOM file")
    problem = ends_early(dataset)
    if problem is None and needs_pixel_data(dataset):
        missing = pixel_problem(dataset)
        if missing:
            sop_class = str(dataset.SOPClassUID)
            name = UID(sop_class).name
            which = name if name != sop_class else sop_class_name(sop_class)  # 'SOP class 1.2...': kept in the logs
            problem = f"{missing}, which {which} needs (file cut short?)"
    return problem or pixel_data_short(dataset)


def pixel_data_short(dataset: Dataset) -> str | None:
    """Why the pixel data present is incomplete, else None (also when there is none): native pixel data shorter
    than Rows × Columns × SamplesPerPixel × BitsAllocated / 8 × NumberOfFrames, or encapsulated pixel data whose
    items do not parse, hold no fragment, or whose last fragment runs past the end."""
    keyword = next((k for k in PIXEL_KEYWORDS if k in dataset), None)
    if keyword is None:
        return None
    value = dataset[keyword].value or b""
    transfer_syntax = UID(str(getattr(dataset, "file_meta", {}).get("TransferSyntaxUID", "")))
    if keyword == "PixelData" and transfer_syntax.is_transfer_syntax and transfer_syntax.is_encapsulated:
        return _fragments_problem(value)
    try:
        expected = get_expected_length(dataset)
    except (AttributeError, TypeError, ValueError) as exc:  # a missing or empty Rows, Columns, BitsAllocated ...
        return f"{keyword} without a usable Image Pixel module ({exc})"
    if len(value) < expected:
        return f"{keyword} is shorter than its Image Pixel module says ({len(value)} of {expected} bytes)"
    return None


def _fragments_problem(value: bytes) -> str | None:
    try:
        count, offsets = parse_fragments(value)  # the Basic Offset Table item first, then the fragments
    except ValueError as exc:
        return f"encapsulated Pixel Data does not parse: {exc}"
    if count < 2:
        return "encapsulated Pixel Data holds no fragment"
    last = offsets[-1]
    (length,) = struct.unpack_from("<L", value, last + 4)  # parse_fragments read this length: it is there
    if last + 8 + length > len(value):
        return f"encapsulated Pixel Data ends inside its last fragment ({len(value) - last - 8} of {length} bytes)"
    return None
