"""Patient identity consistency of one study: whether its instances carry the identities of more than one patient.

A study whose images belong to two patients (a PACS merge gone wrong, a scanner worklist mix-up, a re-send under the
wrong patient) must never be measured as one heart: the results would go out under one patient's identity, built
partly from another's images. `identity_conflict` is the one check, a pure function of the instances' headers;
`cmr.study.understand_study` runs it over every instance of the study (MR images and any other object filed with
them) and the study path (`study_path.run_study`, the same for `serve` and `process`) declines the study when it
finds a conflict.

The rule (PatientID, IssuerOfPatientID, PatientName, PatientBirthDate, PatientSex; absent or empty values never
conflict):
- where both instances carry a Patient ID, different IDs are different patients (compared trimmed, internal white
  space collapsed, case-insensitive, a numeric ID without leading zeros). The very same ID (as written, white space
  collapsed) of the same issuer (IssuerOfPatientID equal, or absent on either side) is the same patient whatever the
  names and birth dates say (a fresh tester: one patient's name written SØRENSEN and SORENSEN, SMITH^J and SMITH^JOHN,
  in kanji only and in romaji, or a placeholder birth date on some instances, was declined as two patients, and a
  declined study cannot be recovered by a re-send of the same instances), unless two or more of the three
  demographics are given on both and differ (a clearly different name, a different full birth date, a different
  sex: an ID reused for, or mistyped onto, another patient, break45b, break46): one differing field is a
  correction or a spelling, two are another person. In this vote a name only counts where both names are written in
  a common script (kanji only against romaji only says nothing), and a placeholder birth date (1900-01-01 or
  earlier, which systems write for "unknown") says nothing;
- an ID equal only once normalised ("0012345" and "12345", "ab12c" and "AB12C") or the same ID of two different
  issuers (two hospitals' ID spaces meeting in one PACS) does not decide alone: the demographics below do;
- the demographics (where one of them has no Patient ID, or as above): their Patient Names are clearly different,
  their birth dates differ (both a full YYYYMMDD calendar date; a partial or malformed date such as 00000000 or
  20120000 says nothing), or their sexes
  differ (both M or F; "O", which many systems write for unknown, says nothing).
- Names are compared as the words of their family, given and middle components, accents and case folded,
  punctuation, padding and '^' placement ignored; one name's words all found in the other's is the same name
  ("SMITH^JOHN" = "Smith^John^A" = "Smith John"). Each component group ('=': alphabetic, ideographic, phonetic)
  is a rendering of the same name: two names are the same when any rendering of one matches any of the other.
  A value decoded in the wrong character set (UTF-8 read as Latin-1, "MÃ¼ller") is compared in its repaired form
  too, and a German transliteration ("Mueller") matches the accented name. In a name holding undecodable characters
  ('?' or U+FFFD, what a system that could not write a letter puts), each run of them stands for any letters
  ("Gonz?lez" = "González", but not "Smith"); two such names are not compared.
Instances are grouped into patients greedily, the most frequent identity first: an instance joins the first group
it conflicts with no member of; more than one group is a conflict.
"""
from __future__ import annotations

import datetime
import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from pydicom.multival import MultiValue

#: the reason's length budget (the study's reason column keeps 500 characters)
MAX_REASON = 480

_TRANSLITERATION = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe", "å": "aa",
                                  "œ": "oe"})
_WORD = re.compile(r"[^\W_]+")


def _text(value) -> str:
    """A value as its DICOM text: several values (a PatientID "123\\456") joined by a backslash, as written into
    every result object (results.headers.derivable_header) and as the archive indexes them."""
    if value is None:
        return ""
    try:
        if isinstance(value, (list, tuple, MultiValue)):
            return "\\".join(str(v) for v in value).replace("\x00", " ").strip()
        return str(value).replace("\x00", " ").strip()
    except Exception:  # noqa: BLE001 - an undecodable value says nothing
        return ""


def _quoted(text: str) -> str:
    """`text` quoted as repr quotes it, but a backslash (DICOM's value separator: PatientID '123\\456') shown once."""
    return repr(text).replace("\\\\", "\\")


def normalised_id(value) -> str | None:
    """PatientID for comparison: trimmed, white space collapsed, case-folded, a numeric ID without its leading zeros
    (a system that pads or strips them: "0012345" = "12345"); None when empty."""
    text = " ".join(_text(value).split()).casefold()
    if text.isdigit():
        text = text.lstrip("0") or "0"
    return text or None


def normalised_birth_date(value) -> str | None:
    """PatientBirthDate as YYYYMMDD when it is a full date (DA, or with separators); None otherwise."""
    digits = re.sub(r"[^0-9]", "", _text(value))
    if len(digits) != 8:
        return None
    try:
        datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:  # 00000000, 20120000: no date
        return None
    return digits


#: birth dates on or before this one are what systems write for "unknown" (1900-01-01 and the like)
PLACEHOLDER_BIRTH_DATE = "19000101"


def _scripts(text: str) -> frozenset[str]:
    """The scripts of a name's letters, by their Unicode names ("LATIN", "CJK", "HIRAGANA", "KATAKANA", "HANGUL",
    "CYRILLIC" ...; half- and full-width forms as their script)."""
    found = set()
    for char in text:
        if not char.isalpha():
            continue
        words = unicodedata.name(char, "").split()
        while words and words[0] in ("HALFWIDTH", "FULLWIDTH"):
            words = words[1:]
        if words:
            found.add(words[0])
    return frozenset(found)


def _repairs(text: str) -> list[str]:
    """The text, and what it reads as when it was UTF-8 decoded in a single-byte set (mojibake)."""
    found = [text]
    for codec in ("latin-1", "cp1252"):
        try:
            repaired = text.encode(codec).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        if repaired not in found:
            found.append(repaired)
    return found


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _word_sets(group: str) -> list[frozenset[str]]:
    """The words of one component group's family, given and middle names, in each comparable spelling."""
    components = group.split("^")[:3]  # prefix and suffix (Dr, Jr) are no part of the identity
    spelt = " ".join(components)
    sets = []
    for text in _repairs(spelt):
        folded = text.casefold()
        for form in (_strip_accents(folded), _strip_accents(folded.translate(_TRANSLITERATION))):
            words = frozenset(_WORD.findall(form))
            if words and words not in sets:
                sets.append(words)
    return sets


def name_renderings(value) -> list[frozenset[str]] | None:
    """Every comparable word set of a PatientName (all its component groups); None when the name is empty (it then
    conflicts with nothing). A name holding '?' is compared through same_name's patterns instead."""
    return _renderings(_text(value))


def _has_wildcard(text: str) -> bool:
    return "?" in text or "\ufffd" in text


@functools.lru_cache(maxsize=4096)
def _renderings(text: str) -> list[frozenset[str]] | None:
    if not text:
        return None
    renderings: list[frozenset[str]] = []
    for group in text.split("="):
        for words in _word_sets(group):
            if words not in renderings:
                renderings.append(words)
    return renderings or None


@functools.lru_cache(maxsize=4096)
def _wildcard_renderings(text: str) -> list[tuple[tuple[str, ...], ...]] | None:
    """Each component group of a name holding '?' / U+FFFD as the patterns of its words, a pattern being the word's
    literal pieces between its runs of '?' (each run: one or more letters), folded as _word_sets folds; None when it
    has no word with a letter."""
    found = []
    for group in text.split("="):
        spelt = " ".join(group.split("^")[:3]).replace("\ufffd", "?")
        words = re.findall(r"(?:[^\W_]|\?)+", _strip_accents(spelt.casefold()))
        patterns = tuple(tuple(re.split(r"\?+", word)) for word in words if word.strip("?"))
        if patterns and patterns not in found:
            found.append(patterns)
    return found or None


def _fullmatch(pieces: tuple[str, ...], word: str) -> bool:
    """Whether `word` (a run of letters, as _WORD finds) is pieces[0], one or more letters, pieces[1], ... in linear
    time: the first piece starts it, the last ends it, and each middle piece is placed at its leftmost place at
    least one letter after the previous one (leftmost leaves the most room for the rest, so this is exact)."""
    if len(pieces) == 1:
        return word == pieces[0]
    head, *middle, tail = pieces
    if not word.startswith(head) or len(word) < len(head) + len(tail) + len(pieces) - 1:
        return False
    end, limit = len(head), len(word) - len(tail)
    for piece in middle:
        at = word.find(piece, end + 1, limit - 1)
        if at < 0:
            return False
        end = at + len(piece)
    return end < limit and word.endswith(tail)


def _matches(patterns: tuple[tuple[str, ...], ...], words: frozenset[str]) -> bool:
    """Whether every pattern word matches a word of the set, or every word of the set is matched by a pattern."""
    return all(any(_fullmatch(p, w) for w in words) for p in patterns) or \
        all(any(_fullmatch(p, w) for p in patterns) for w in words)


def same_name(a, b) -> bool:
    """Whether two PatientName values may name the same person (see the module's rule); True when either is
    empty, or both hold undecodable characters."""
    first_text, second_text = _text(a), _text(b)
    if _has_wildcard(first_text) and _has_wildcard(second_text):
        return True
    if _has_wildcard(second_text):
        first_text, second_text = second_text, first_text
    if _has_wildcard(first_text):
        patterns, words = _wildcard_renderings(first_text), name_renderings(second_text)
        if patterns is None or words is None:
            return True
        return any(_matches(p, w) for p in patterns for w in words)
    first, second = name_renderings(first_text), name_renderings(second_text)
    if first is None or second is None:
        return True
    return any(x <= y or y <= x for x in first for y in second)


@dataclass(frozen=True)
class _Identity:
    patient_id: str  # as written (trimmed)
    name: str
    birth_date: str
    issuer: str = ""  # IssuerOfPatientID
    sex: str = ""

    @property
    def key_id(self) -> str | None:
        return normalised_id(self.patient_id)

    @property
    def exact_id(self) -> str:
        return " ".join(self.patient_id.split())

    @property
    def key_issuer(self) -> str | None:
        return " ".join(self.issuer.split()).casefold() or None

    @property
    def key_date(self) -> str | None:
        return normalised_birth_date(self.birth_date)

    @property
    def key_sex(self) -> str | None:
        sex = self.sex.strip().upper()
        return sex if sex in ("M", "F") else None  # "O" is what many systems write for unknown: it says nothing


def _conflicts(a: _Identity, b: _Identity) -> bool:
    if a.key_id and b.key_id:
        if a.key_id != b.key_id:
            return True
        same_space = not (a.key_issuer and b.key_issuer and a.key_issuer != b.key_issuer)
        if same_space and a.exact_id == b.exact_id:  # the Patient ID decides unless two demographics disagree
            return _demographics_differing(a, b) >= 2
    if a.key_date and b.key_date and a.key_date != b.key_date:
        return True
    if a.key_sex and b.key_sex and a.key_sex != b.key_sex:
        return True
    return not same_name(a.name, b.name)


def _demographics_differing(a: _Identity, b: _Identity) -> int:
    """How many of name, birth date and sex are given on both and differ, for the same-ID vote (module rule)."""
    dates = [d if d and d > PLACEHOLDER_BIRTH_DATE else None for d in (a.key_date, b.key_date)]
    date_differs = bool(dates[0] and dates[1] and dates[0] != dates[1])
    sex_differs = bool(a.key_sex and b.key_sex and a.key_sex != b.key_sex)
    name_differs = bool(_scripts(a.name) & _scripts(b.name)) and not same_name(a.name, b.name)
    return date_differs + sex_differs + name_differs


@dataclass
class PatientGroup:
    """One patient found in the study: the identity most of its instances carry, and how many instances it has."""

    patient_id: str
    name: str
    birth_date: str
    issuer: str = ""
    sex: str = ""
    show_sex: bool = False  # named where the patients found differ in it
    instances: int = 0
    series: set[str] = field(default_factory=set)  # SeriesNumber (or Series Instance UID) of its instances
    members: list[_Identity] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"PatientID {_quoted(self.patient_id)}" if self.patient_id else "no PatientID"]
        if self.issuer:
            parts.append(f"IssuerOfPatientID {_quoted(self.issuer)}")
        if self.name:
            parts.append(f"PatientName {_quoted(self.name)}")
        if self.birth_date:
            parts.append(f"PatientBirthDate {self.birth_date}")
        if self.show_sex and self.sex:
            parts.append(f"PatientSex {self.sex}")
        return f"{', '.join(parts)} ({self.instances} instance{'' if self.instances == 1 else 's'})"


@dataclass
class IdentityConflict:
    """The patients a study's instances belong to (most instances first) and the series holding more than one."""

    patients: list[PatientGroup]
    mixed_series: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """The study's decline reason: the identities, the instances each has, and what to do."""
        head = f"instances of {len(self.patients)} patients under one Study Instance UID: "
        tail = ("; not analysed, so that no result is filed under one patient from another's images: correct the "
                "study at the sender or PACS, then send it again")
        mixed = (f"; series {', '.join(self.mixed_series[:4])}{' ...' if len(self.mixed_series) > 4 else ''} "
                 "hold instances of more than one") if self.mixed_series else ""
        body = "; ".join(p.describe() for p in self.patients)
        room = MAX_REASON - len(head) - len(tail) - len(mixed)
        if len(body) > room:
            body = body[:max(room - 3, 0)] + "..."
        return head + body + mixed + tail


def _series_label(dataset) -> str:
    return _text(dataset.get("SeriesNumber")) or _text(dataset.get("SeriesInstanceUID")) or "?"


def identity_conflict(datasets: Iterable) -> IdentityConflict | None:
    """The patients of one study's instances (pydicom datasets, headers are enough) when there are more than one,
    else None (see the module's rule). Pure: reads only PatientID, IssuerOfPatientID, PatientName, PatientBirthDate,
    PatientSex, SeriesNumber (or SeriesInstanceUID)."""
    counts: Counter[_Identity] = Counter()
    series_of: dict[_Identity, Counter[str]] = {}
    for dataset in datasets:
        identity = _Identity(_text(dataset.get("PatientID")), _text(dataset.get("PatientName")),
                             _text(dataset.get("PatientBirthDate")), _text(dataset.get("IssuerOfPatientID")),
                             _text(dataset.get("PatientSex")))
        counts[identity] += 1
        series_of.setdefault(identity, Counter())[_series_label(dataset)] += 1
    if len(counts) < 2:
        return None
    groups: list[PatientGroup] = []
    for identity, count in sorted(counts.items(), key=lambda item: (-item[1], repr(item[0]))):
        for group in groups:
            if not any(_conflicts(identity, member) for member in group.members):
                break
        else:
            group = PatientGroup(identity.patient_id, identity.name, identity.birth_date, identity.issuer)
            groups.append(group)
        group.members.append(identity)
        group.instances += count
        group.series.update(series_of[identity])
        # the group is shown with the most frequent non-empty value of each field
        group.patient_id = group.patient_id or identity.patient_id
        group.name = group.name or identity.name
        group.birth_date = group.birth_date or identity.birth_date
        group.issuer = group.issuer or identity.issuer
        group.sex = group.sex or (identity.key_sex or "")
    if len(groups) < 2:
        return None
    if len({group.sex for group in groups if group.sex}) > 1:
        for group in groups:
            group.show_sex = True
    seen: Counter[str] = Counter(label for group in groups for label in group.series)
    mixed = sorted((label for label, n in seen.items() if n > 1), key=lambda s: (not s.isdigit(), s.zfill(12)))
    return IdentityConflict(patients=groups, mixed_series=mixed)
