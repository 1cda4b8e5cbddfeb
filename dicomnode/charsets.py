"""Specific Character Set (0008,0005, PS3.3 C.12.1.1.2): defined terms, the aliases and mistakes scanners write."""
from __future__ import annotations

import codecs
import functools
import logging
import re
import unicodedata
import warnings

from pydicom.charset import decode_bytes, python_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.valuerep import PersonName

from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.charsets")

#: UTF-8, the repertoire results are re-encoded to when the source value cannot be written as it is
UTF8_TERM = "ISO_IR 192"

#: Python codec names (codecs.lookup(...).name) whose DICOM term differs from pydicom's table or is ambiguous there
_CODEC_TERMS = {
    "ascii": "ISO_IR 6",
    "iso8859-1": "ISO_IR 100",
    "cp1252": "ISO_IR 100",  # Windows Latin-1, written by some PCs for ISO_IR 100
    "utf-8": UTF8_TERM,
    "iso2022_jp": "ISO 2022 IR 87",
    "euc_kr": "ISO 2022 IR 149",
    "gb2312": "ISO 2022 IR 58",
    "gbk": "GBK",
    "gb18030": "GB18030",
    "shift_jis": "ISO_IR 13",
}


def _key(text: str) -> str:
    """Upper case without separators: 'iso-ir 100', 'ISO_IR100' and 'ISO_IR 100' share the key 'ISOIR100'."""
    return re.sub(r"[^A-Z0-9]", "", text.upper())


_BY_KEY = {_key(term): term for term in python_encoding if term}
for _term in python_encoding:  # a single-byte set written without its code-extension prefix, or the reverse
    if _term.startswith("ISO 2022 IR "):
        _BY_KEY.setdefault(_key("ISO_IR " + _term[len("ISO 2022 IR "):]), _term)
_BY_KEY.update({"UTF8": UTF8_TERM, "UTF": UTF8_TERM, "ISOIR192": UTF8_TERM, "ISO10646": UTF8_TERM,
                "LATIN1": "ISO_IR 100", "ISO88591": "ISO_IR 100", "ISO8859": "ISO_IR 100", "ASCII": "ISO_IR 6",
                "ISOIR6": "ISO_IR 6"})


def defined_term(value: str) -> str | None:
    """The DICOM defined term one value stands for ('' is the default repertoire); None when unknown.

    Accepts the defined terms in any case and spacing ('iso-ir 100', 'ISO_IR100'), a single-byte set written
    with/without its ISO 2022 prefix, and Python/IANA codec names ('latin1', 'UTF-8', 'ISO-2022-JP').
    """
    text = str(value or "").strip()
    if not text:
        return ""
    if text in python_encoding:
        return text
    found = _BY_KEY.get(_key(text))
    if found is not None:
        return found
    try:
        codec = codecs.lookup(text).name
    except LookupError:
        return None
    return _CODEC_TERMS.get(codec) or next(
        (term for term, name in python_encoding.items() if term and codecs.lookup(name).name == codec), None)


def normalise(value) -> list[str]:
    """Specific Character Set (str or multi-valued) -> defined terms; unknown values are kept as written.

    With several values (ISO 2022 code extensions) the first may be empty (the default repertoire,
    'ISO 2022 IR 6'); a single-byte set among them takes its 'ISO 2022 IR' form.
    """
    values = [value] if isinstance(value, str) else list(value or [])
    terms = [defined_term(v) for v in values]
    terms = [t if t is not None else str(v).strip() for t, v in zip(terms, values)]
    if len(terms) > 1:
        terms = [_extension_form(t) for t in terms]
    return terms


def _extension_form(term: str) -> str:
    if term in ("", "ISO_IR 6"):
        return "ISO 2022 IR 6"
    if term.startswith("ISO_IR ") and ("ISO 2022 IR " + term[len("ISO_IR "):]) in python_encoding:
        return "ISO 2022 IR " + term[len("ISO_IR "):]
    return term


def is_known(terms: list[str]) -> bool:
    """True when every value is a defined term pydicom can decode."""
    return all(term in python_encoding for term in terms)


def normalise_dataset(dataset) -> list[str]:
    """Rewrite the dataset's Specific Character Set to defined terms before any text is decoded; returns them.

    Values that name no known repertoire are left as written (pydicom then decodes with its default and warns).
    Text whose bytes the declared repertoire cannot read is decoded by `repair_undecodable`.
    """
    element = dataset.get("SpecificCharacterSet")
    terms = normalise(dataset.SpecificCharacterSet) if element is not None and dataset.SpecificCharacterSet else []
    if terms and is_known(terms):
        written = terms[0] if len(terms) == 1 else terms
        if dataset.SpecificCharacterSet != written:
            dataset.SpecificCharacterSet = written
    repair_undecodable(dataset, terms)
    return terms


#: VRs whose bytes are decoded with the Specific Character Set (PS3.5 6.1.2.3)
CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
#: what text invalid in its declared repertoire is read as, in this order: (Python codec, what the log says);
#: UTF-8 first (its multi-byte sequences hardly occur by chance in single-byte text), then Windows-1252 (a superset
#: of ISO 8859-1's printable characters, what PCs write), then ISO 8859-1 (reads any byte)
FALLBACK_ENCODINGS = (("utf_8", "UTF-8 (ISO_IR 192)"), ("cp1252", "Windows-1252 (Latin-1, ISO_IR 100)"),
                      ("latin_1", "ISO 8859-1 (Latin-1, ISO_IR 100)"))
_DEFAULT_TERMS = ("", "ISO_IR 6", "ISO 2022 IR 6")
#: single-byte repertoires in which UTF-8 bytes also read, as mojibake ("MÃ¼ller" for "Müller" under ISO_IR 100): a
#: value in one of them that is valid UTF-8 and reads as letters there is taken as UTF-8 (Thai and the Japanese
#: ISO_IR 13, whose letters form valid UTF-8 sequences more often, are left as declared)
_UTF8_MISTAKEN_TERMS = frozenset({"ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 126", "ISO_IR 127",
                                  "ISO_IR 138", "ISO_IR 144", "ISO_IR 148", "ISO_IR 203"})
#: how the log names a code extension whose bytes are taken without their escape sequence
_EXTENSION_NAMES = {"ISO 2022 IR 58": "GB 2312 (ISO 2022 IR 58)", "ISO 2022 IR 149": "KS X 1001 (ISO 2022 IR 149)",
                    "ISO 2022 IR 87": "JIS X 0208 (ISO 2022 IR 87)", "ISO 2022 IR 159": "JIS X 0212 (ISO 2022 IR 159)"}


def repair_undecodable(dataset, terms: list[str] | None = None) -> list[tuple[str, str]]:
    """Decode the top-level text elements whose bytes are not valid in the declared repertoire; returns
    (keyword, what was assumed) of each.

    A common mistake: a scanner or RIS declares ISO_IR 192 (UTF-8) and writes Latin-1 bytes ("M\xfcller"), or
    declares nothing (ASCII) and writes high bytes. pydicom would put U+FFFD for each byte it cannot read (a patient
    name that no longer matches the patient's); here the first of FALLBACK_ENCODINGS (other than the declared one)
    that reads every byte decodes the value, and a WARNING names the attribute and the assumption once per study.
    Two mistakes whose bytes pydicom reads without complaint, as mojibake, are repaired the same way:
    - code extensions declared ("\\ISO 2022 IR 58") and their bytes written without the escape sequence that
      designates them (what pydicom itself writes for GB 2312): pydicom reads such bytes as Latin-1, but the default
      repertoire before any escape is ASCII; they are read with the first declared extension that reads every byte;
    - UTF-8 bytes under a single-byte set (ISO_IR 100: "M\xc3\xbcller" read "MÃ¼ller"): see _UTF8_MISTAKEN_TERMS.
    Only elements not yet decoded (raw) are checked; `terms`: the normalised Specific Character Set, if at hand.
    """
    if terms is None:
        value = dataset.get("SpecificCharacterSet")
        terms = normalise(value) if value else []
    if not is_known([t for t in terms if t]):
        return []  # an unknown repertoire: pydicom decodes with its default and warns
    declared = "ascii" if all(t in _DEFAULT_TERMS for t in terms) else None
    encodings = [python_encoding[t] for t in terms] if terms else []
    repaired = []
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag)
        if not getattr(raw, "is_raw", False) or not isinstance(raw.value, bytes) or raw.value.isascii():
            continue
        try:
            vr = raw.VR or dictionary_VR(tag)
        except KeyError:  # a private tag in implicit VR: not a text the node copies
            continue
        if vr not in CHARSET_VRS:
            continue
        if _utf8_mistaken(raw.value, terms):
            codec, assumed = FALLBACK_ENCODINGS[0]
        elif _reads(raw.value, declared, encodings) and not _undesignated(raw.value, terms):
            continue
        else:
            codec, assumed = next(((c, name) for c, name in _extension_codecs(terms) + list(FALLBACK_ENCODINGS)
                                   if c != declared and _reads(raw.value, c, [])))
        text = raw.value.decode(codec).rstrip(" \x00")
        values = text.split("\\") if vr not in ("LT", "UT") else [text]  # LT/UT are single-valued; "\\" is text
        if vr == "PN":
            values = [PersonName(v) for v in values]
        dataset[tag] = DataElement(tag, vr, values[0] if len(values) == 1 else values)
        keyword = keyword_for_tag(tag) or str(tag)
        _say_fallback(short_hash(str(dataset.get("StudyInstanceUID", "") or "")), keyword,
                      "/".join(terms) or "default repertoire (ASCII)", assumed)
        repaired.append((keyword, assumed))
    return repaired


def _undesignated(raw: bytes, terms: list[str]) -> bool:
    """Whether `raw` has bytes above 0x7F before any escape sequence while the Specific Character Set declares code
    extensions with the default repertoire (ASCII) first: bytes no declared repertoire stands for (PS3.5 6.1.2.5.3)."""
    return len(terms) > 1 and terms[0] in _DEFAULT_TERMS and not raw.split(b"\x1b", 1)[0].isascii()


def _extension_codecs(terms: list[str]) -> list[tuple[str, str]]:
    """(Python codec, what the log says) of each declared code extension, to read bytes written without escapes."""
    if len(terms) < 2:
        return []
    return [(python_encoding[term], f"{_EXTENSION_NAMES.get(term, term)} without its escape sequence")
            for term in terms[1:] if term in python_encoding and term not in _DEFAULT_TERMS]


def _utf8_mistaken(raw: bytes, terms: list[str]) -> bool:
    """Whether `raw`, declared in one single-byte set of _UTF8_MISTAKEN_TERMS, is UTF-8: valid UTF-8 with a
    multi-byte sequence whose every non-ASCII character is a letter or mark, while read in the declared set it holds
    a symbol or control character ("Ã¼": UTF-8's continuation bytes 0x80-0xBF are mostly symbols and controls in
    ISO 8859). Text of the declared set's letters only (an upper-case Cyrillic "ФИ" is C4 B8, valid UTF-8 "ĸ") is
    left as declared."""
    if len(terms) != 1 or terms[0] not in _UTF8_MISTAKEN_TERMS or raw.isascii():
        return False
    try:
        text = raw.decode("utf_8")
        declared = raw.decode(python_encoding[terms[0]])
    except (UnicodeError, LookupError):
        return False
    return (all(unicodedata.category(c)[0] in "LM" for c in text if not c.isascii())
            and any(unicodedata.category(c)[0] not in "LM" for c in declared if not c.isascii()))


def _reads(raw: bytes, codec: str | None, encodings: list[str]) -> bool:
    """Whether `codec` (or, when None, pydicom with the declared `encodings`) reads every byte of `raw`."""
    if codec is not None or len(encodings) == 1:
        try:
            raw.decode(codec or encodings[0])
            return True
        except (UnicodeError, LookupError):
            return False
    with warnings.catch_warnings(record=True) as caught:  # ISO 2022 code extensions: pydicom switches per escape
        warnings.simplefilter("always")
        try:
            text = decode_bytes(raw, encodings, {0x5C, 0x3D, 0x5E})
        except (UnicodeError, LookupError, ValueError):
            return False
    return not caught and "\ufffd" not in text


@functools.lru_cache(maxsize=1024)
def _say_fallback(study: str, keyword: str, declared: str, assumed: str) -> None:
    """Log once per study and attribute (every instance of the study repeats the same header)."""
    log.warning("study %s: %s is not valid in its Specific Character Set %s; read as %s (kept so in every result "
                "object)", study, keyword, declared, assumed)
