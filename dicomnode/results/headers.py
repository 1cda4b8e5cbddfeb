"""Source headers made safe to derive result objects from: patient/study attributes valid, repaired or dropped.

Result objects copy the Patient, General Study and Patient Study modules (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2) from a
source instance. Real archives hold values a result must not repeat (PatientAge "45", PatientWeight "72,5", an
AccessionNumber of 20 characters, StudyDate "20120000", Specific Character Sets written as aliases or with an
empty first value). `derivable_header` keeps what is valid, repairs what has one obvious meaning and drops (type 3)
or empties (type 2) the rest; text is decoded with the source's character set and re-encoded in one the writer
library (highdicom) accepts: the source's own when it can, else ISO_IR 192 (UTF-8).
"""
from __future__ import annotations

import functools
import logging
import re

from pydicom.charset import python_encoding
from pydicom.config import RAISE
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DA, TM, PersonName, format_number_as_ds, validate_value

from dicomnode import charsets
from dicomnode.cmr.age import da_date
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.results")

#: type 2 in the result IODs: always present, empty when the source has no valid value
PATIENT_STUDY_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                          "StudyDate", "StudyTime", "ReferringPhysicianName")
#: further non-sequence attributes of the Patient / General Study / Patient Study modules that highdicom copies
OPTIONAL_KEYWORDS = ("IssuerOfPatientID", "TypeOfPatientID", "PatientBirthTime", "QualityControlSubject",
                     "OtherPatientNames", "PatientSpeciesDescription", "PatientBreedDescription", "ResponsiblePerson",
                     "ResponsiblePersonRole", "ResponsibleOrganization", "PatientComments", "PatientIdentityRemoved",
                     "ConsultingPhysicianName", "StudyDescription", "PhysiciansOfRecord",
                     "NameOfPhysiciansReadingStudy", "RequestingService", "AdmittingDiagnosesDescription", "PatientAge",
                     "PatientSize", "PatientBodyMassIndex", "MeasuredAPDimension", "MeasuredLateralDimension",
                     "PatientWeight", "MedicalAlerts", "Allergies", "Occupation", "SmokingStatus",
                     "AdditionalPatientHistory", "PregnancyStatus", "LastMenstrualDate", "PatientSexNeutered",
                     "ReasonForVisit", "AdmissionID", "ServiceEpisodeID", "ServiceEpisodeDescription", "PatientState")
#: identifiers an archive files results with their images by (the same bytes): copied as received when only too long
#: for their VR (PS3.5 6.2), never emptied nor cut; an empty type 2 PatientID means "unknown patient"
IDENTIFIER_KEYWORDS = ("PatientID", "PatientName", "IssuerOfPatientID", "AccessionNumber", "StudyID")
#: what pydicom puts for each byte it cannot decode; never written into a result
REPLACEMENT_CHARACTER = "\ufffd"
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT"}
#: text VRs that may hold CR, LF, FF and TAB (PS3.5 6.2); every other one holds no control character but ESC
_TEXT_WITH_CONTROLS = {"LT", "ST", "UT"}
#: identifiers copied as received even with control characters: an archive files results with their images by these
#: exact bytes (a PatientName is shown, not matched, so it is cleaned like any other value)
MATCHED_IDENTIFIERS = ("PatientID", "IssuerOfPatientID", "AccessionNumber", "StudyID")
_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: what a result object's MATCHED_IDENTIFIERS copied with control characters make of it, after the attribute list
COPIED_CONTROLS_CONSEQUENCE = ("copied as received into every result object (the archive files results with their "
                               "images by these exact bytes), which is therefore not valid DICOM (dciodvfy) and may "
                               "be refused by an archive that validates; the value was entered this way at its source "
                               "(RIS, worklist or modality): correct it there")
_AGE_UNITS = {"D": "D", "DAY": "D", "DAYS": "D", "W": "W", "WEEK": "W", "WEEKS": "W", "M": "M", "MONTH": "M",
              "MONTHS": "M", "Y": "Y", "YEAR": "Y", "YEARS": "Y", "": "Y"}


def _valid(vr: str, value: str) -> bool:
    try:
        validate_value(vr, value, RAISE)
    except (ValueError, TypeError, OverflowError):
        return False
    if vr == "DA":
        return _parses(DA, value)
    if vr == "TM":
        return _parses(TM, value)
    return True


def _parses(kind, value: str) -> bool:
    try:
        kind(value)
        return True
    except (ValueError, TypeError, OverflowError):
        return False


def repair_value(vr: str, text: str, keyword: str = "") -> str | None:
    """One value made valid for its VR (PS3.5 6.2): the value itself, an unambiguous repair, or None (drop).

    Repairs: AS "45"/"45 years" -> "045Y"; DS/IS with a decimal comma "72,5" -> "72.5" (and re-formatted to 16
    characters); DA "2024-01-31"/"2024.01.31" -> "20240131"; TM "08:30:00" -> "083000"; CS in lower case; PatientSex
    other than M/F/O -> None. Over-long strings are not truncated (a cut identifier names something else): None.
    """
    text = str(text).strip(" \x00")
    if keyword == "PatientSex":
        text = text.upper()
        return text if text in ("M", "F", "O") else None
    if text == "" or _valid(vr, text):
        return text
    candidate = None
    if vr == "AS":
        match = re.fullmatch(r"0*(\d{1,3})\s*([A-Za-z]*)", text)
        unit = _AGE_UNITS.get(match.group(2).upper()) if match else None
        candidate = f"{int(match.group(1)):03d}{unit}" if unit else None
    elif vr in ("DS", "IS"):
        try:
            number = float(text.replace(",", "."))
        except ValueError:
            number = None
        if number is not None and vr == "DS":
            candidate = format_number_as_ds(number)
        elif number is not None and number.is_integer():
            candidate = str(int(number))
    elif vr == "DA":
        date = da_date(text)  # the age's date parser (cmr.age): the date shown is the date the age is counted from
        candidate = None if date is None else date.strftime("%Y%m%d")
    elif vr == "TM":
        candidate = text.replace(":", "")
    elif vr == "CS":
        candidate = text.upper()
    return candidate if candidate is not None and _valid(vr, candidate) else None


def without_control_characters(text: str) -> str:
    """`text` with each run of control characters (C0, DEL, C1, Unicode line/paragraph separators; a CR LF copied
    into a name by a registration system) replaced by one space, and trimmed: valid in every text VR that allows no
    control character (PS3.5 6.1.3, 6.2), and read as the same words. Decoded text holds no ESC (pydicom decodes
    ISO 2022 escapes), so nothing a character set needs is removed."""
    return _CONTROL_RUN.sub(" ", text).strip(" ") if _CONTROL_RUN.search(text) else text


def escaped_controls(text: str) -> str:
    """The distinct control characters of `text` (as without_control_characters finds them), in order of first
    appearance, each as its Python escape: "12345\\r\\n" -> "\\r\\n", a TAB -> "\\t", NEL -> "\\x85"; "" where
    there is none. For log lines and summaries, which must not hold the characters themselves."""
    found = dict.fromkeys(character for run in _CONTROL_RUN.findall(text) for character in run)
    return "".join(character.encode("unicode_escape").decode("ascii") for character in found)


def identifier_control_characters(dataset: Dataset) -> list[dict]:
    """The MATCHED_IDENTIFIERS of `dataset` (a source header, derivable_header's copy or a written result object)
    whose value holds control characters, which their VRs (LO, SH: PS3.5 6.2) do not allow and derivable_header copies
    as received: each {"attribute": keyword, "vr", "characters": escaped_controls of the value (several values
    joined by their backslash), "text": one sentence saying so}, in MATCHED_IDENTIFIERS order; [] where none does.
    An element pydicom cannot read is skipped (derivable_header left it out)."""
    found = []
    for keyword in MATCHED_IDENTIFIERS:
        try:
            element = dataset[keyword] if keyword in dataset else None
            value = None if element is None else element.value
        except Exception:  # noqa: BLE001 - an unconvertible raw value is no copied identifier
            continue
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
        text = "\\".join(str(v) for v in values)
        characters = escaped_controls(text)
        if characters:
            found.append({"attribute": keyword, "vr": element.VR, "characters": characters,
                          "text": f"{keyword} holds control characters ({characters}), which VR {element.VR} does not "
                                  f"allow: {COPIED_CONTROLS_CONSEQUENCE}"})
    return found


def copied_control_characters(datasets) -> list[dict]:
    """identifier_control_characters over the result objects `datasets` of one study (they carry one identity,
    carry_identity): each attribute and character set once, in the order first met."""
    entries: dict[tuple[str, str], dict] = {}
    for dataset in datasets:
        for entry in identifier_control_characters(dataset):
            entries.setdefault((entry["attribute"], entry["characters"]), entry)
    return list(entries.values())


def too_long_only(vr: str, text: str) -> bool:
    """Whether `text`'s only fault for `vr` is its length (PS3.5 6.2: LO 64, SH 16, PN 64 per component group)."""
    try:
        validate_value(vr, text, RAISE)
    except ValueError as exc:
        return "exceeds the maximum" in str(exc)
    return False


def _source_texts(dataset: Dataset, keyword: str, encodings: list[str]) -> list[str] | None:
    """The element's values as decoded text (multi-valued -> several), None when absent or undecodable."""
    tag = tag_for_keyword(keyword)
    if tag not in dataset:
        return None
    try:
        value = dataset[tag].value
    except Exception:  # noqa: BLE001 - a value pydicom cannot convert (e.g. DS "72,5" in strict mode): use its bytes
        raw = dataset.get_item(tag).value
        value = raw.decode(encodings[-1] if encodings else "latin_1", errors="replace") if isinstance(raw, bytes) \
            else raw
        value = value.split("\\") if isinstance(value, str) and "\\" in value else value
    if value is None:
        return []
    if isinstance(value, (str, bytes, PersonName)) or not hasattr(value, "__iter__"):
        value = [value]
    texts = []
    for item in value:
        if isinstance(item, PersonName):
            texts.append(str(item))
        elif hasattr(item, "original_string") and item.original_string:
            texts.append(str(item.original_string))
        else:
            texts.append(str(item))
    if any(REPLACEMENT_CHARACTER in text for text in texts):
        # decoded with replacement characters before charsets.repair_undecodable could see its bytes
        _say_replaced(str(dataset.get("StudyInstanceUID", "")), keyword)
        texts = [text.replace(REPLACEMENT_CHARACTER, "?") for text in texts]
    return texts


@functools.lru_cache(maxsize=1024)
def _say_replaced(study_uid: str, keyword: str) -> None:
    log.warning("source %s held bytes its Specific Character Set cannot read: each written as '?' in every result "
                "object", keyword)


def output_character_set(source_value, texts: list[str]):
    """The Specific Character Set to write: the source's (normalised) when highdicom accepts it and it can encode
    every text; None (default repertoire) when all text is ASCII; else ISO_IR 192."""
    terms = charsets.normalise(source_value or "")
    if terms and any(terms) and charsets.is_known(terms):
        candidate = terms[0] if len(terms) == 1 else terms
        if _writer_accepts(candidate) and _encodable(terms, texts):
            return candidate
    if all(text.isascii() for text in texts):
        return None
    return charsets.UTF8_TERM


def _writer_accepts(value) -> bool:
    try:
        from highdicom.valuerep import _check_specific_character_set
    except ImportError:  # pragma: no cover - another highdicom version: only UTF-8 and ASCII are safe
        return value == charsets.UTF8_TERM
    try:
        _check_specific_character_set(value)
        return True
    except (ValueError, TypeError):
        return False


def _encodable(terms: list[str], texts: list[str]) -> bool:
    if len(terms) > 1:
        return True  # ISO 2022 code extensions: pydicom chooses an escape per character run
    encoding = python_encoding[terms[0]]
    try:
        for text in texts:
            text.encode(encoding)
    except (UnicodeError, LookupError):
        return False
    return True


def _decoded_copy(dataset: Dataset) -> Dataset:
    """A new Dataset holding the source's elements with text decoded by the source's own character set (so they
    can be re-encoded in another); elements pydicom cannot convert are left out. The source is not changed."""
    elements = {}
    for tag in dataset.keys():
        try:
            elements[tag] = dataset[tag]
        except Exception:  # noqa: BLE001 - an unconvertible value: repaired below if it is a copied attribute
            continue
    copy = Dataset(elements)
    copy.file_meta = getattr(dataset, "file_meta", Dataset())
    return copy


@functools.lru_cache(maxsize=1024)
def _say_invalid(study_uid: str, keyword: str, vr: str, outcome: str) -> None:
    """Log an invalid source value once per study (every result object of the study copies the same header)."""
    log.info("source %s is not valid for VR %s: %s in every result object", keyword, vr, outcome)


@functools.lru_cache(maxsize=1024)
def _say_multivalued_identifier(study_uid: str, keyword: str) -> None:
    log.warning("source %s holds several values where DICOM allows one (value multiplicity 1): copied as received, "
                "backslash included, into every result object (an archive files results with their images by this "
                "identifier; one of its values could name another patient)", keyword)


@functools.lru_cache(maxsize=1024)
def _say_multivalued(study_uid: str, keyword: str) -> None:
    log.warning("source %s holds several values where DICOM allows one (value multiplicity 1): its first value is "
                "written in every result object", keyword)


@functools.lru_cache(maxsize=1024)
def _say_control_characters(study_uid: str, keyword: str, vr: str) -> None:
    log.warning("source %s holds control characters (a line break or the like), which VR %s does not allow: each run "
                "written as one space in every result object", keyword, vr)


@functools.lru_cache(maxsize=1024)
def _say_copied_control_characters(study_uid: str, keyword: str, vr: str, characters: str) -> None:
    log.warning("study %s: source %s holds control characters (%s), which VR %s does not allow: %s", short_hash(
        study_uid or "-"), keyword, characters, vr, COPIED_CONTROLS_CONSEQUENCE)


@functools.lru_cache(maxsize=1024)
def _say_too_long(study_uid: str, keyword: str, vr: str) -> None:
    log.warning("source %s is longer than VR %s allows: copied as received into every result object (an archive "
                "files results with their images by this identifier; a cut or empty one would name another "
                "patient or none)", keyword, vr)


def derivable_header(dataset: Dataset) -> Dataset:
    """A shallow copy whose patient/study attributes are valid for a result object (see the module docstring).

    Control characters in a value of a VR that allows none (a CR LF in a PatientName) are each run one space, with a
    WARNING naming the attribute, except in the identifiers an archive matches by (MATCHED_IDENTIFIERS), which are
    copied as received, with a WARNING naming the study, the attribute and the characters (escaped_controls). Type 2
    attributes are added empty when missing or invalid; other invalid ones are removed, except identifiers
    (IDENTIFIER_KEYWORDS) that are only too long: copied as received, with a WARNING naming the attribute. An
    identifier of value multiplicity 1 holding several values, a PatientID "123\\456" (an archive merged two), is
    copied as received too, backslash included (its first value could be another patient of the archive), with a
    WARNING naming it; any other attribute of value multiplicity 1 holding several values keeps its first value,
    with a WARNING naming it. The Specific Character Set is what `output_character_set` decides, and every copied
    text is re-encoded in it on writing.
    """
    charsets.repair_undecodable(dataset)  # text not valid in the declared repertoire, unless read_header did
    copy = _decoded_copy(dataset)
    source_charset = dataset.get("SpecificCharacterSet")
    encodings = [python_encoding.get(t, "latin_1") for t in charsets.normalise(source_charset or "")]
    texts = []
    for keyword in PATIENT_STUDY_KEYWORDS + OPTIONAL_KEYWORDS:
        tag = tag_for_keyword(keyword)
        vr = dictionary_VR(tag)
        values = _source_texts(dataset, keyword, encodings)
        if values is None and keyword not in PATIENT_STUDY_KEYWORDS:
            continue
        study_uid = str(dataset.get("StudyInstanceUID", ""))
        if values and vr not in _TEXT_WITH_CONTROLS and keyword not in MATCHED_IDENTIFIERS:
            cleaned = [without_control_characters(v) for v in values]
            if cleaned != values:
                _say_control_characters(study_uid, keyword, vr)
                values = cleaned
        several = values and len([v for v in values if v != ""]) > 1 and dictionary_VM(tag) == "1"
        if several and keyword in IDENTIFIER_KEYWORDS:
            value = "\\".join(values).strip(" \x00")  # a PatientID "123\\456": as the archive indexed the images
            copy[tag] = DataElement(tag, vr, PersonName(value) if vr == "PN" else value)
            _say_multivalued_identifier(study_uid, keyword)
            texts.append(value)
            continue
        if several:
            values = [v for v in values if v != ""][:1]  # a PatientSex "M\\F": invalid VM, one value is valid
            _say_multivalued(study_uid, keyword)
        repaired = [repair_value(vr, v, keyword) for v in values or [] if v != ""]  # empty is valid for any VR
        if keyword in IDENTIFIER_KEYWORDS:
            kept = [text.strip(" \x00") for text, value in zip([v for v in values or [] if v != ""], repaired)
                    if value is None and too_long_only(vr, text.strip(" \x00"))]
            if kept:
                repaired = [value if value is not None else kept.pop(0) for value in repaired]
                _say_too_long(study_uid, keyword, vr)
        if any(v is None for v in repaired) or (repaired and vr not in _TEXT_VRS):
            _say_invalid(str(dataset.get("StudyInstanceUID", "")), keyword, vr,
                         "left empty" if keyword in PATIENT_STUDY_KEYWORDS else "dropped")
            repaired = []
        repaired = [v for v in repaired if v != ""]
        if not repaired and keyword not in PATIENT_STUDY_KEYWORDS:
            if tag in copy:
                del copy[tag]
            continue
        value = None if not repaired else (repaired[0] if len(repaired) == 1 else repaired)
        if vr == "PN" and value is not None:
            value = PersonName(value) if isinstance(value, str) else [PersonName(v) for v in value]
        copy[tag] = DataElement(tag, vr, value)
        texts.extend(repaired)
    study_uid = str(dataset.get("StudyInstanceUID", ""))
    for entry in identifier_control_characters(copy):
        _say_copied_control_characters(study_uid, entry["attribute"], entry["vr"], entry["characters"])
    target = output_character_set(source_charset, texts)
    if target is None:
        if "SpecificCharacterSet" in copy:
            del copy.SpecificCharacterSet
    else:
        copy.SpecificCharacterSet = target
    return copy


def _text_elements(dataset: Dataset):
    """Every element of a text VR whose value the Specific Character Set encodes (charsets.CHARSET_VRS), in the
    dataset and its sequence items; raw elements are decoded (with the dataset's current character set) on the way."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value or []:
                yield from _text_elements(item)
        elif element.VR in charsets.CHARSET_VRS and element.value not in (None, ""):
            yield element


def _element_texts(element: DataElement) -> list[str]:
    value = element.value
    return [str(v) for v in (value if isinstance(value, (list, tuple, MultiValue)) else [value])]


def encodable(text: str, terms: list[str]) -> bool:
    """Whether `text` can be written in the repertoire of the Specific Character Set `terms` (normalised defined
    terms; [] or [''] the default repertoire, ASCII) without a replacement character: as a whole in one repertoire,
    or, with ISO 2022 code extensions (several terms), each character in one of them (pydicom switches per run)."""
    if text.isascii():
        return True
    codecs_ = [python_encoding.get(term or "ISO_IR 6", "ascii") for term in (terms or [""])]
    for codec in codecs_:
        try:
            text.encode(codec)
            return True
        except (UnicodeError, LookupError):
            continue
    if len(codecs_) < 2:
        return False
    for character in set(text):
        if not any(_encodes(character, codec) for codec in codecs_):
            return False
    return True


def _encodes(character: str, codec: str) -> bool:
    try:
        character.encode(codec)
        return True
    except (UnicodeError, LookupError):
        return False


def fit_character_set(dataset: Dataset) -> Dataset:
    """Make the Specific Character Set of a result object able to write every text it holds, so that no character is
    written as "?" (pydicom's replacement, with only a warning): where some text of the object (an SR comment with
    "≤" or "–", a description, a copied name) is not encodable in the declared repertoire (encodable), the object is
    re-encoded in ISO_IR 192 (UTF-8), every text decoded first with the old repertoire, and its elements replaced by
    ones of its own (own_elements), so that an element another result object holds keeps its value; else it is left
    as it is. Returns the same dataset (changed in place)."""
    declared = dataset.get("SpecificCharacterSet")
    terms = charsets.normalise(declared or "")
    elements = list(_text_elements(dataset))  # decodes raw values with the repertoire they were written in
    if all(encodable(text, terms) for element in elements for text in _element_texts(element)):
        return dataset
    own_elements(dataset)  # the object's own elements, person names re-made from their text
    dataset.SpecificCharacterSet = charsets.UTF8_TERM
    _inherit_character_set(dataset)
    log.info("result object %s re-encoded as ISO_IR 192 (UTF-8): its text is not encodable in %s",
             dataset.get("SOPInstanceUID", ""), "/".join(terms) or "the default repertoire (ASCII)")
    return dataset


def own_elements(dataset: Dataset) -> Dataset:
    """Replace every element of `dataset`, in its sequence items too, by a new one holding the same value, so that it
    shares no element, multiple value or item with another object (highdicom copies the patient/study elements of
    its source header as they are: every object built from one header holds the same DataElements). Person names
    are re-made from their text: a PersonName keeps the bytes it was first written with and writes them again under
    any later Specific Character Set (pydicom 3.0), so one shared between an ISO_IR 100 and an ISO_IR 192 object
    writes one object's bytes under the other's declaration (PS3.5 6.1.2.5). Bytes values, being immutable, stay
    shared. An element whose value is not valid for its VR (a TriggerTime "abc", a DS that is no number: pydicom
    reads it with a warning but cannot make a new element of it) is left out of the object, with a WARNING naming it
    (dropped_invalid_element); one pydicom cannot convert at all stays raw. Returns the same dataset."""
    for tag in list(dataset.keys()):
        try:
            element = dataset[tag]
        except Exception:  # noqa: BLE001 - an unconvertible raw value: nothing to change in it
            continue
        try:
            value = element.value
            if element.VR == "SQ":
                value = [own_elements(_item_copy(item)) for item in value or []]
            elif element.VR == "PN" and value not in (None, ""):
                names = [PersonName(text) for text in _element_texts(element)]
                value = names[0] if len(names) == 1 else names
            elif isinstance(value, (list, tuple, MultiValue)):
                value = list(value)
            dataset[tag] = DataElement(tag, element.VR, value, is_undefined_length=element.is_undefined_length)
        except (ValueError, TypeError, OverflowError) as exc:
            dropped_invalid_element(dataset, tag, element, exc)
    return dataset


def dropped_invalid_element(dataset: Dataset, tag, element: DataElement, error: Exception) -> None:
    """Leave out of a result object an element copied from its source header whose value its VR cannot hold (the
    object could not be written with it), saying so once per attribute at WARNING: the object is still built."""
    del dataset[tag]
    name = element.keyword or str(element.tag)
    _warn_dropped(name, element.VR, repr(element.value)[:60], f"{type(error).__name__}: {error}"[:120])


@functools.lru_cache(maxsize=256)
def _warn_dropped(name: str, vr: str, value: str, error: str) -> None:
    log.warning("%s (VR %s) value %s in the source header is not a valid %s (%s): left out of the result objects "
                "built from it", name, vr, value, vr, error)


def _item_copy(item: Dataset) -> Dataset:
    """A new Dataset holding the item's elements (own_elements then replaces each by a new one), text decoded with the
    character set of the item where it is (its own or its parent's); a value pydicom cannot convert stays raw."""
    copy = Dataset()
    for tag in item.keys():
        try:
            copy[tag] = item[tag]
        except Exception:  # noqa: BLE001
            copy[tag] = item.get_item(tag)
    return copy


def own_header(header: Dataset) -> Dataset:
    """A copy of a result object's source header (derivable_header) that shares no element with it or with another
    copy: each object built from it may re-encode or change its own elements (fit_character_set)."""
    copy = own_elements(_item_copy(header))
    copy.file_meta = getattr(header, "file_meta", Dataset())
    return copy


@functools.cache
def identity_keywords() -> tuple[str, ...]:
    """The root attributes of the Patient and Study information entities of a result object (the Patient, Clinical
    Trial Subject, General Study, Patient Study and Clinical Trial Study modules, PS3.3 C.7.1.1-C.7.2.3), as highdicom
    copies them from a source header; StudyInstanceUID, which every object has of its own, excluded. Read from
    highdicom's module table on first use (about 0.2 s of CPU, which every process importing the node paid at start)."""
    from highdicom.base import get_module_attribute_map

    modules = get_module_attribute_map()
    keywords = [str(item["keyword"]) for module in ("patient", "clinical-trial-subject", "general-study",
                                                    "patient-study", "clinical-trial-study")
                for item in modules[module] if len(item["path"]) == 0]
    return tuple(dict.fromkeys(k for k in keywords if k != "StudyInstanceUID"))


def carry_identity(dataset: Dataset, header: Dataset) -> Dataset:
    """Give a result object the patient and study identity of `header` (the study's derivable_header, which the SR,
    PDF and SC are built from): each identity_keywords() attribute of `header` copied (elements of its own), any other
    one the object holds removed. A SEG or display copy, which highdicom builds from the header of its own source
    slice, thus carries the same patient as every other object of the analysis even where the study's slices spell
    the patient differently (break45b #1, #2). The object's Specific Character Set is left to fit_character_set.
    Raises ValueError when `header` belongs to another Study Instance UID. Returns the same dataset."""
    if str(header.get("StudyInstanceUID", "")) != str(dataset.get("StudyInstanceUID", "")):
        raise ValueError(f"result object {dataset.get('SOPInstanceUID', '')} is of study "
                         f"{dataset.get('StudyInstanceUID', '')}, the identity header of {header.get('StudyInstanceUID')}")
    identity = Dataset()
    for keyword in identity_keywords():
        tag = tag_for_keyword(keyword)
        if tag in header:
            identity[tag] = header[tag]
        elif tag in dataset:
            del dataset[tag]
    for element in own_elements(_item_copy(identity)):
        dataset[element.tag] = element
    return dataset


def _inherit_character_set(dataset: Dataset) -> None:
    """Sequence items that declared a repertoire of their own (their text already decoded) take the object's."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value or []:
                if "SpecificCharacterSet" in item:
                    del item.SpecificCharacterSet
                _inherit_character_set(item)
