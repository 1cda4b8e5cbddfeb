"""UID validation (received values never reach a path unchecked) and generation of new UIDs."""
from __future__ import annotations

import hashlib
import re

from pydicom.uid import (EnhancedMRColorImageStorage, EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage,
                         MRImageStorage, ParametricMapStorage, generate_uid)

#: the multi-frame MR image storage classes (PS3.4 B.5), one instance holding a whole series
ENHANCED_MR_STORAGE_CLASSES = frozenset({EnhancedMRImageStorage, EnhancedMRColorImageStorage,
                                         LegacyConvertedEnhancedMRImageStorage})
#: every MR image storage class: the objects the node analyses (others are stored and passed by)
MR_STORAGE_CLASSES = frozenset({MRImageStorage}) | ENHANCED_MR_STORAGE_CLASSES
#: Parametric Map Storage (1.2.840.10008.5.1.4.1.1.30, PS3.4 B.5; the Parametric Map IOD, PS3.3 A.75): a calculated
#: map (T1 / T2 / ECV in real-world units), never an image the node measures; declined by name, never as LGE
PARAMETRIC_MAP_STORAGE = ParametricMapStorage

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID_LENGTH = 64
#: root for UIDs the node creates (UUID-derived 2.25 UIDs via pydicom)
UID_PREFIX = None


class InvalidUID(ValueError):
    """A UID that is not digits and dots, or longer than 64 characters."""


def check_uid(value: object, what: str = "UID") -> str:
    """Return `value` as a str if it is a syntactically valid UID, else raise InvalidUID naming `what`.

    Leading zeros in components are tolerated (real archives, e.g. Sunnybrook, contain them).
    """
    if value is None:
        raise InvalidUID(f"{what} is missing")
    text = str(value).strip().rstrip("\x00")
    if not text:
        raise InvalidUID(f"{what} is empty")
    if len(text) > MAX_UID_LENGTH:
        raise InvalidUID(f"{what} is {len(text)} characters long (at most {MAX_UID_LENGTH})")
    if not UID_PATTERN.match(text):
        raise InvalidUID(f"{what} not digits and dots: {text[:80]!r}")
    return text


def new_uid() -> str:
    return generate_uid(prefix=UID_PREFIX) if UID_PREFIX else generate_uid(prefix=None)


def short_hash(value: str, length: int = 12) -> str:
    """A stable, non-reversible short id for logs (study UIDs are quasi-identifiers)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:length]
