"""Specific Character Set (0008,0005, PS3.3 C.12.1.1.2): defined terms, the aliases and mistakes scanners write."""
from __future__ import annotations

import codecs
import re

from pydicom.charset import python_encoding

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
    """
    element = dataset.get("SpecificCharacterSet")
    if element is None or not dataset.SpecificCharacterSet:
        return []
    terms = normalise(dataset.SpecificCharacterSet)
    if is_known(terms):
        written = terms[0] if len(terms) == 1 else terms
        if dataset.SpecificCharacterSet != written:
            dataset.SpecificCharacterSet = written
    return terms
