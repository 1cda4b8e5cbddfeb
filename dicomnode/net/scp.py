"""The Storage SCP: association policy, C-ECHO, and C-STORE written to the spool exactly as received."""
from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import socket
import threading
import time
from collections import OrderedDict
from typing import Callable, Sequence

from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.uid import (
    HTJ2K,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    UID,
)
from pydicom.pixels.decoders.base import get_decoder
from pynetdicom import AE, AllStoragePresentationContexts, _config, acse, evt
from pynetdicom.presentation import negotiate_as_acceptor, negotiate_unrestricted
from pynetdicom._handlers import standard_dimse_recv_handler
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification

from dicomnode.config import Config
from dicomnode.inflate import inflated_prefix, inflates_over
from dicomnode.net.filemeta import file_header
from dicomnode.net.reactor import (EVENT_DRIVEN, HALF_OPEN_AFTER_S, EventDrivenServer, PollingServer,
                                    SharedPortPollingServer, SharedPortServer, SLOT_REFUSALS_KEPT_S, peer_address,
                                    setting_up, socket_of)
from dicomnode.observe import class_uid, class_uids, patient_values, sop_class_name, study_context
from dicomnode.spool import PSIR_MAY_FOLLOW, IncomingInstance, OutOfSpace, Spool, StorageUnavailable
from dicomnode.state import StoreOutcome, StudyPurging, is_outage, outage_reason
from dicomnode.uids import MR_STORAGE_CLASSES, InvalidUID, check_uid, short_hash

log = logging.getLogger("dicomnode.net.scp")

ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
#: the syntaxes whose Pixel Data the node can read: the native ones, and the compressed ones (ACCEPTED_TRANSFER_SYNTAXES
#: and HTJ2K) for which pydicom has a decoder installed now (pylibjpeg, openjpeg, gdcm ...). Not Encapsulated
#: Uncompressed (1.2.840.10008.1.2.1.98) nor JPEG XL: pydicom 3.0 decodes neither
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)


def decodable_syntaxes() -> list[str]:
    """ACCEPTED_TRANSFER_SYNTAXES and the three HTJ2K syntaxes, less every compressed one no pixel decoder installed
    here can decode (pydicom.pixels get_decoder(...).is_available), in that order of preference."""
    decodable = []
    for syntax in [*ACCEPTED_TRANSFER_SYNTAXES, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K]:
        if syntax in NATIVE_SYNTAXES:
            decodable.append(syntax)
            continue
        try:
            available = get_decoder(syntax).is_available
        except (NotImplementedError, ValueError):
            available = False
        if available:
            decodable.append(syntax)
    return decodable


#: the storage SOP classes pynetdicom knows (its unrestricted negotiation accepts these in any syntax)
STORAGE_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
#: words in the name of a known SOP class that has "Storage" in it without being a storage class
NOT_STORAGE_WORDS = ("Commitment", "Management")


def storage_like(abstract_syntax: str) -> bool:
    """Whether the node accepts `abstract_syntax` as a storage class: one pynetdicom knows (STORAGE_CLASSES), one
    whose pydicom name says Storage (newer storage classes; not Storage Commitment), or a UID pydicom does not know
    (private or unknown: a PACS routes those too, node.non_mr_objects). False for every other known SOP class
    (Modality Worklist, Query/Retrieve, Storage Commitment, Print, ...): services the node does not offer."""
    uid = UID(str(abstract_syntax))
    if str(uid) in STORAGE_CLASSES or uid.name == str(uid):
        return True
    return "Storage" in uid.name and not any(word in uid.name for word in NOT_STORAGE_WORDS)


def negotiate_storage(rq_contexts, ac_contexts, roles=None):
    """pynetdicom's unrestricted storage negotiation (every storage-like abstract syntax, private and unknown ones too,
    accepted in the transfer syntax proposed first: the node stores whatever a PACS routes), except for the MR image
    classes the node analyses (uids.MR_STORAGE_CLASSES) that `ac_contexts` lists: those are negotiated against them
    (StorageSCP._make_ae: decodable_syntaxes), so a context proposing only syntaxes the node cannot decode (HTJ2K
    without its decoder, Encapsulated Uncompressed, JPEG XL) is refused (result 0x04, transfer syntaxes not
    supported) and the sender transcodes, instead of a study accepted and then declined for its pixel data.

    Same arguments and return value as pynetdicom.presentation.negotiate_unrestricted (installed in its place in
    pynetdicom.acse by StorageSCP._make_ae)."""
    # only classes the acceptor lists: another acceptor in this process (pynetdicom's flag is process-wide) that
    # lists no MR class keeps pynetdicom's own behaviour
    listed = {cx.abstract_syntax for cx in ac_contexts} & MR_STORAGE_CLASSES
    analysed = [cx for cx in rq_contexts if cx.abstract_syntax in listed]
    others = [cx for cx in rq_contexts if cx.abstract_syntax not in listed]
    if listed:
        # a known service that is not storage (Modality Worklist FIND, which pynetdicom takes for an unknown
        # storage class, Storage Commitment, Query/Retrieve ...) is negotiated against the contexts the node
        # offers, so refused at negotiation (0x03, abstract syntax not supported; StorageSCP._handle_accepted
        # says so) instead of accepted and then failed with a traceback
        known_other = [cx for cx in others if not storage_like(cx.abstract_syntax)]
        others = [cx for cx in others if storage_like(cx.abstract_syntax)]
        analysed = [*analysed, *known_other]
    result, result_roles = negotiate_unrestricted(others, ac_contexts, roles)
    if analysed:
        mr_result, mr_roles = negotiate_as_acceptor(analysed, ac_contexts, roles)
        result = sorted([*result, *mr_result], key=lambda cx: cx.context_id)
        by_class = {role.sop_class_uid: role for role in [*result_roles, *mr_roles]}
        result_roles = [by_class[uid] for uid in sorted(by_class)]
        for cx in mr_result:
            if cx.result != 0x00 and cx.abstract_syntax in listed:
                proposed = next((rq.transfer_syntax for rq in analysed if rq.context_id == cx.context_id), [])
                log.warning("presentation context %s (%s) refused: proposed only in %s, which this node cannot "
                            "decode (it decodes %s); the sender should transcode", cx.context_id,
                            sop_class_name(str(cx.abstract_syntax)),
                            ", ".join(f"{ts} ({UID(ts).name})" for ts in proposed) or "no transfer syntax",
                            ", ".join(UID(ts).name for ts in decodable_syntaxes()))
    return result, result_roles

# C-STORE statuses (PS3.4 Annex B.2.3) the SCP returns
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
#: the 0xA700 comment for an instance of a study retention is purging (state.StudyPurging): transient
STUDY_PURGING_COMMENT = "study being purged, send again"
#: the 0xA700 comment for an instance that could not be indexed because the state database is unreachable (the file
#: written is removed again): transient, the sender sends it again
STATE_UNREACHABLE_COMMENT = "state database unreachable, send again"
STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x "Refused: Not Authorized" (general status)
#: PS3.7 C.4 general failure status: a SOP Instance UID held by another instance (net/scp.py StorageSCP._conflict)
STATUS_DUPLICATE_SOP_INSTANCE = 0x0111

# A-ASSOCIATE-RJ (result, source, reason) per PS3.8 9.3.4: rejected-permanent, service-user, calling AE not
# recognised (pynetdicom itself rejects unknown called/calling AE titles: AE.require_called_aet/_calling_aet)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)


MB = 1024 * 1024


def max_instance_bytes(max_instance_mb: float) -> int:
    """node.max_instance_mb in bytes (0: no limit)."""
    return int(max_instance_mb * MB)


def set_tcp_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN: small DIMSE messages must not wait for Nagle's algorithm."""
    try:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):  # pragma: no cover - socket already gone
        pass


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def header_fields(dataset) -> dict:
    """The IncomingInstance fields read from a data set's header alone (Modality, SeriesNumber, the slice key,
    CardiacNumberOfImages, NumberOfFrames, ImagesInAcquisition, whether the series continues): the same for a
    C-STORE and for a spooled file indexed again (instance_of_file)."""
    return {"modality": str(dataset.get("Modality", "") or ""),
            "series_number": _int_or_none(dataset.get("SeriesNumber")),
            "slice_key": slice_key_of(dataset),
            "cardiac_images": _int_or_none(dataset.get("CardiacNumberOfImages")),
            "frames": _int_or_none(dataset.get("NumberOfFrames")),
            "images_in_acquisition": _int_or_none(dataset.get("ImagesInAcquisition")),
            "series_continues": series_continues(dataset)}


def instance_of_file(path, study_keys: "StudyKeys", grouping_key: str) -> IncomingInstance:
    """The IncomingInstance of a spooled file the state database does not index (a state restored from a backup
    older than the spool: Node.reindex_spool), read from its header as the receive path reads a C-STORE (same study
    key, StudyKeys.key_for; `encoded` empty: the file stays as it is). Raises InvalidUID for a missing or malformed
    UID, and pydicom's / the operating system's errors for a file that cannot be read."""
    dataset = dcmread(path, stop_before_pixels=True)
    study_uid = check_uid(dataset.get("StudyInstanceUID"), "Study Instance UID")
    return IncomingInstance(
        encoded=b"",
        sop_instance_uid=check_uid(dataset.get("SOPInstanceUID"), "SOP Instance UID"),
        sop_class_uid=check_uid(dataset.get("SOPClassUID"), "SOP Class UID"),
        study_instance_uid=study_uid,
        series_instance_uid=check_uid(dataset.get("SeriesInstanceUID"), "Series Instance UID"),
        transfer_syntax=str(dataset.file_meta.get("TransferSyntaxUID", "")),
        study_key=study_keys.key_for(dataset, study_uid, grouping_key),
        calling_ae="",
        **header_fields(dataset),
    )


def study_key_for(dataset, grouping_key: str) -> str:
    """The key `studies.grouping_key` gives one instance on its own (StorageSCP files it under StudyKeys.key_for,
    which keeps the first key of its Study Instance UID). Raises InvalidUID for a malformed Study Instance UID where
    the key is (or falls back to) it."""
    if grouping_key == "StudyInstanceUID":
        return check_uid(dataset.get("StudyInstanceUID"), "Study Instance UID")
    if grouping_key == "AccessionNumber":
        accession = str(dataset.get("AccessionNumber", "") or "").strip()
        if accession:
            return "acc-" + short_hash(accession, 24)
        return check_uid(dataset.get("StudyInstanceUID"), "Study Instance UID")
    patient = str(dataset.get("PatientID", "") or "")
    date = str(dataset.get("StudyDate", "") or "")
    return "pd-" + short_hash(patient + "|" + date, 24)


class StudyKeys:
    """The study key each Study Instance UID is filed under: the key its first instance got, kept for every later
    instance of the UID (studies.grouping_key AccessionNumber or PatientID+StudyDate computes a key per instance,
    so a series without the accession, or a misrouted slice of another patient, would otherwise become a study of
    its own under the same Study Instance UID: analysed twice, or results filed under two patients in one study,
    break45b #3, #11). The instances of one Study Instance UID then stay one study, whose patient identity check
    (cmr.identity) sees them all. Under StudyInstanceUID the key is the UID itself. The first key is looked up in
    the state database (State.study_key_of_uid, so a restart or another receiver keeps it) and remembered here for
    the last CACHED Study Instance UIDs. Thread-safe."""

    CACHED = 10_000

    def __init__(self, db):
        """`db`: the state (State) whose instances give the first keys; None: only the keys seen here."""
        self.db = db
        self._keys: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def key_for(self, dataset, study_instance_uid: str, grouping_key: str) -> str:
        """The key to file `dataset` (of `study_instance_uid`, already checked) under; raises InvalidUID as
        study_key_for."""
        proposed = study_key_for(dataset, grouping_key)
        if grouping_key == "StudyInstanceUID":
            return proposed
        with self._lock:
            key = self._keys.get(study_instance_uid)
        if key is None and self.db is not None:  # read outside the lock: a slow database holds no other C-STORE
            try:
                key = self.db.study_key_of_uid(study_instance_uid)
            except Exception as exc:  # noqa: BLE001 - storing needs the database too: it refuses the instance
                log.debug("study key of %s not looked up: %s", study_instance_uid, exc)
                return proposed
        with self._lock:
            key = self._keys.setdefault(study_instance_uid, key or proposed)  # another thread's first key wins
            self._keys.move_to_end(study_instance_uid)
            while len(self._keys) > self.CACHED:
                self._keys.popitem(last=False)
        if key != proposed:
            _say_kept_key(study_instance_uid, key, proposed, grouping_key)
        return key


@functools.lru_cache(maxsize=1024)
def _say_kept_key(study_instance_uid: str, key: str, proposed: str, grouping_key: str) -> None:
    log.info("instance(s) of Study Instance UID %s filed under study %s, the key its first instances got (on its own, "
             "studies.grouping_key %s would give %s): one Study Instance UID is one study", study_instance_uid, key,
             grouping_key, proposed)


#: at most this many distinct planes of a multi-frame instance go into its slice key (enough to tell one plane, a
#: stack of parallel planes and a localizer's several orientations apart)
SLICE_KEY_MAX_PLANES = 32


def slice_key_of(dataset) -> str | None:
    """Where the instance's image planes lie, as the index keeps it (studies.ExpectedCounts reads it).

    One plane is 'x,y,z,rx,ry,rz,cx,cy,cz': ImagePositionPatient (mm) and ImageOrientationPatient (direction
    cosines), 0.1 precision. A multi-frame instance (Enhanced / Legacy Converted MR) lists the distinct planes of its
    frames (Plane Position / Plane Orientation functional groups, PS3.3 C.7.6.16.2.3-4), ';'-separated in frame order,
    at most SLICE_KEY_MAX_PLANES of them. None when the geometry is missing or unreadable.
    """
    key = _plane_key(dataset.get("ImagePositionPatient"), dataset.get("ImageOrientationPatient"))
    if key is not None or "PerFrameFunctionalGroupsSequence" not in dataset:
        return key
    try:
        shared = (dataset.get("SharedFunctionalGroupsSequence") or [None])[0]
        planes: dict[str, None] = {}
        for item in dataset.PerFrameFunctionalGroupsSequence:
            key = _plane_key(_functional_group_value(item, shared, "PlanePositionSequence", "ImagePositionPatient"),
                             _functional_group_value(item, shared, "PlaneOrientationSequence",
                                                     "ImageOrientationPatient"))
            if key is None:
                return None
            planes[key] = None
            if len(planes) >= SLICE_KEY_MAX_PLANES:
                break
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return ";".join(planes) or None


def series_continues(dataset) -> str | None:
    """Why a multi-frame instance's own header says that its series goes on in other instances, or None when it
    says nothing of the kind (studies.ExpectedCounts then takes one multi-frame instance for its whole series).

    An Enhanced / Legacy Converted MR instance's NumberOfFrames, CardiacNumberOfImages and NumberOfTemporalPositions
    describe that instance, and a scanner may send one series as one instance per cardiac phase, per slice position
    or per contrast. Evidence read from the frames (PS3.3 C.7.6.16: Frame Content, Cardiac Synchronization, MR Image
    Frame Type and MR Modifier functional groups, per frame or shared):
    - fewer temporal positions (distinct TemporalPositionIndex, else NominalCardiacTriggerDelayTime values) than the
      instance's CardiacNumberOfImages or NumberOfTemporalPositions declare;
    - temporal positions that do not start at TemporalPositionIndex 1, or slice positions that do not start at
      InStackPositionNumber 1 (a later piece);
    - one temporal position of a DimensionOrganizationType 3D_TEMPORAL instance (a temporal loop of volumes);
    - inversion-recovery magnitude frames only (InversionRecovery YES, ComplexImageComponent MAGNITUDE): the
      phase-sensitive (PSIR) images of the same slices may follow as another instance or series (PSIR_MAY_FOLLOW).
    A single-frame image says PSIR_MAY_FOLLOW when it is an inversion-recovery magnitude image (`ir_magnitude`).
    None otherwise, and for a multi-frame instance whose functional groups cannot be read.
    """
    frames = dataset.get("PerFrameFunctionalGroupsSequence")
    if not frames:
        return PSIR_MAY_FOLLOW if ir_magnitude(dataset) else None
    try:
        shared = (dataset.get("SharedFunctionalGroupsSequence") or [None])[0]
        temporal: set[int] = set()
        delays: set[float] = set()
        in_stack: set[int] = set()
        components: set[str] = set()
        inversion: set[str] = set()
        for item in frames:
            content = (item.get("FrameContentSequence") or [None])[0]
            if content is not None:
                if content.get("TemporalPositionIndex") not in (None, ""):
                    temporal.add(int(content.TemporalPositionIndex))
                if content.get("InStackPositionNumber") not in (None, ""):
                    in_stack.add(int(content.InStackPositionNumber))
            delay = _functional_group_value(item, shared, "CardiacSynchronizationSequence",
                                            "NominalCardiacTriggerDelayTime")
            if delay not in (None, ""):
                delays.add(round(float(delay), 1))
            component = _functional_group_value(item, shared, "MRImageFrameTypeSequence", "ComplexImageComponent")
            components.add(str(component or "").upper())
            recovery = _functional_group_value(item, shared, "MRModifierSequence", "InversionRecovery")
            inversion.add(str(recovery or "").upper())
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    held = len(temporal) if temporal else len(delays) or None
    for keyword in ("NumberOfTemporalPositions", "CardiacNumberOfImages"):
        declared = _int_or_none(dataset.get(keyword))
        if held is not None and declared is not None and held < declared:
            return f"its frames hold {held} of the {declared} temporal positions its {keyword} declares"
    if temporal and min(temporal) > 1:
        return f"its frames start at TemporalPositionIndex {min(temporal)}: earlier positions are in other instances"
    if in_stack and min(in_stack) > 1:
        return f"its frames start at InStackPositionNumber {min(in_stack)}: earlier positions are in other instances"
    if str(dataset.get("DimensionOrganizationType") or "").upper() == "3D_TEMPORAL" and held == 1:
        return "its frames hold one temporal position of a 3D_TEMPORAL dimension organization (a temporal loop)"
    if inversion == {"YES"} and components == {"MAGNITUDE"}:
        return PSIR_MAY_FOLLOW
    return None


#: ImageType value 3 of a magnitude image (Siemens M, Philips M_IR, the Enhanced MR defined term MAGNITUDE) and
#: the values that say an image is phase-sensitive (Siemens PSIR / P, Philips R_IR / R, REAL, PHASE)
MAGNITUDE_IMAGE_TYPES = frozenset({"M", "M_IR", "MAGNITUDE"})
PHASE_SENSITIVE_IMAGE_TYPES = frozenset({"PSIR", "P", "R_IR", "R", "REAL", "PHASE"})


def ir_magnitude(dataset) -> bool:
    """Whether a single-frame image is an inversion-recovery magnitude image: "IR" in ScanningSequence, ImageType
    value 3 in MAGNITUDE_IMAGE_TYPES and no ImageType value in PHASE_SENSITIVE_IMAGE_TYPES."""
    scanning = dataset.get("ScanningSequence") or []
    scanning = [scanning] if isinstance(scanning, str) else list(scanning)
    image_type = [str(value).upper() for value in (dataset.get("ImageType") or [])]
    return ("IR" in (str(value).upper() for value in scanning) and len(image_type) > 2
            and image_type[2] in MAGNITUDE_IMAGE_TYPES and not PHASE_SENSITIVE_IMAGE_TYPES.intersection(image_type))


def _functional_group_value(frame_item, shared_item, sequence: str, keyword: str):
    """`keyword` of a frame's functional group `sequence`, from its per-frame item, else the shared one."""
    for item in (frame_item, shared_item):
        group = item.get(sequence) if item is not None else None
        if group and keyword in group[0]:
            return group[0].get(keyword)
    return None


def _plane_key(position, orientation) -> str | None:
    if position is None or orientation is None:
        return None
    try:
        values = [float(v) for v in list(position) + list(orientation)]
    except (TypeError, ValueError):
        return None
    return ",".join(f"{v:.1f}" for v in values) if len(values) == 9 else None


def describe_holders(associations) -> str:
    """Who holds associations, per source address: '127.0.0.2: 16 (16 not associated yet)'; associations that
    ended (aborted, released, rejected) while their connection is still being closed count as 'ending'."""
    by_address: dict[str, list[int]] = {}
    for assoc in associations:
        try:
            address = assoc.requestor.address or "?"
        except Exception:  # noqa: BLE001 - not set up far enough to know
            address = "?"
        counts = by_address.setdefault(address, [0, 0, 0])
        counts[0] += 1
        if any(getattr(assoc, flag, False) for flag in ("is_aborted", "is_released", "is_rejected",
                                                         "dicomnode_ended")):
            counts[2] += 1
        elif not getattr(assoc, "is_established", False):
            counts[1] += 1

    def detail(pending: int, ending: int) -> str:
        parts = ([f"{pending} not associated yet"] if pending else []) + ([f"{ending} ending"] if ending else [])
        return f" ({', '.join(parts)})" if parts else ""

    return "; ".join(f"{address}: {held}{detail(pending, ending)}"
                     for address, (held, pending, ending) in sorted(by_address.items(), key=lambda kv: -kv[1][0]))


class ListenError(RuntimeError):
    """The configured address cannot be listened on (in use, not this machine's, a privileged port)."""


#: said after "Address already in use": who is likely there
PORT_IN_USE_HINT = ("; another process is listening there (maybe an older dicomnode, which takes no storage lock, "
                    "still running on this storage or config: stop it first)")


def malformed_store_request(command) -> str | None:
    """What is wrong with a C-STORE-RQ's command set (PS3.7 9.3.1.1) that pynetdicom would drop it for, or None."""
    missing = []
    for keyword, tag in (("AffectedSOPInstanceUID", "(0000,1000)"), ("AffectedSOPClassUID", "(0000,0002)")):
        value = command.get(keyword)
        if value is None or not str(value).strip().strip("\x00"):
            missing.append(f"{'no' if value is None else 'an empty'} {_spaced(keyword)} {tag}")
    if command.get("Priority") is None:
        missing.append("no Priority (0000,0700)")
    if command.get("CommandDataSetType") == 0x0101:
        missing.append("no data set (Command Data Set Type 0x0101)")
    if not missing:
        return None
    return "C-STORE request with " + ", ".join(missing)


def _answer_malformed_first(assoc) -> None:
    """pynetdicom's own EVT_DIMSE_RECV logging handler (bound with [logging] level = "DEBUG") raises on a C-STORE
    request without an Affected SOP Instance UID, which stops the handlers bound after it: it goes last, so that
    StorageSCP._handle_dimse_recv answers the request."""
    try:
        assoc.unbind(evt.EVT_DIMSE_RECV, standard_dimse_recv_handler)
        if _config.LOG_HANDLER_LEVEL == "standard":
            assoc.bind(evt.EVT_DIMSE_RECV, standard_dimse_recv_handler)
    except Exception:  # noqa: BLE001 - only the library's logging of the request depends on it
        pass


def _studies_sent_since(associations, since: float) -> set[str]:
    """The study keys `associations` sent a C-STORE of at or after `since` (time.monotonic()), or hold one of in
    flight now (still being stored)."""
    keys: set[str] = set()
    for assoc in associations:
        studies = dict(getattr(assoc, "dicomnode_studies", None) or {})
        keys.update(key for key, at in studies.items() if at is None or at >= since)
        if getattr(assoc, "dicomnode_storing", 0) > 0 and getattr(assoc, "dicomnode_last_study", None) in studies:
            keys.add(assoc.dicomnode_last_study)
    return keys


#: how much of a refused Deflated data set is inflated to find its Study Instance UID (_study_uid_of_deflated)
IDENTITY_PREFIX_BYTES = 64 * 1024


def _study_uid_of_deflated(deflated: bytes) -> str | None:
    """The Study Instance UID of a Deflated data set (the deflated bytes as received), read from its first
    IDENTITY_PREFIX_BYTES inflated; None where it is not within them or not a valid UID."""
    prefix = inflated_prefix(deflated, IDENTITY_PREFIX_BYTES)
    buffer = DicomBytesIO(prefix)
    try:
        header = read_dataset(buffer, False, True, stop_when=lambda tag, vr, length: tag > 0x0020000D)
        if buffer.tell() >= len(prefix):  # ran out before the tag after it: its value may be cut
            return None
        return check_uid(header.get("StudyInstanceUID"), "Study Instance UID")
    except Exception:  # noqa: BLE001 - anything unreadable: not known
        return None


def _say_services_not_offered(assoc) -> None:
    """One WARNING per association naming the presentation contexts refused because the node does not offer
    their service (result 0x03, abstract syntax not supported: Modality Worklist, Storage Commitment,
    Query/Retrieve ...), so that an admin setting a modality up to use the node for one knows why it fails."""
    try:
        refused = [cx for cx in assoc.rejected_contexts if cx.result == 0x03]
        if not refused:
            return
        calling, address = assoc.requestor.ae_title.strip(), assoc.requestor.address
    except Exception:  # noqa: BLE001 - an association not set up far enough: nothing to say
        return
    names = ", ".join(dict.fromkeys(sop_class_name(str(cx.abstract_syntax)) for cx in refused))
    log.warning("association from calling AE %r at %s: presentation context(s) %s refused: this node offers only "
                "Verification (C-ECHO) and Storage (C-STORE)%s", calling, address, names,
                "" if assoc.accepted_contexts else "; no context was accepted, so the sender may abort")


#: a stop waits at least this long (s) for the associations it releases, however long its stores took to drain
STOP_RELEASE_GRACE_S = 2.0
#: and this long for the threads of the associations whose connections it then closed
STOP_CLOSE_WAIT_S = 5.0


def _release_quietly(assoc) -> None:
    """`assoc.release()` on a thread of the stop: a peer that does not answer is aborted by pynetdicom after
    node.acse_timeout; an error is only logged (the stop closes what is still open)."""
    assoc.dicomnode_stopping = True  # _handle_aborted: an abort now is this stop's, not the peer's
    try:
        assoc.release()
    except Exception as exc:  # noqa: BLE001 - the stop closes the connection anyway
        log.debug("releasing the association from %s on stop: %s", peer_address(assoc), exc)


def _calling_of(assoc) -> str:
    try:
        return assoc.requestor.primitive.calling_ae_title.strip()
    except Exception:  # noqa: BLE001 - no A-ASSOCIATE-RQ received yet
        return "?"


def _idle_timeout(assoc) -> bool:
    """Whether the association's network idle timer expired (the node aborts it then, node.network_timeout)."""
    try:
        return bool(assoc.dul.idle_timer_expired())
    except Exception:  # noqa: BLE001 - no DUL any more: not known, so not an idle timeout
        return False


def _spaced(keyword: str) -> str:
    return {"AffectedSOPInstanceUID": "Affected SOP Instance UID",
            "AffectedSOPClassUID": "Affected SOP Class UID"}[keyword]


def listen_problem(exc: OSError) -> str:
    """The reason a bind failed, with PORT_IN_USE_HINT where the port is taken."""
    return (exc.strerror or str(exc)) + (PORT_IN_USE_HINT if exc.errno == errno.EADDRINUSE else "")


def _cannot_listen(config: Config, exc: OSError) -> str:
    return f"node.port {config.node.port} on node.host {config.node.host!r} cannot be opened: {listen_problem(exc)}"


def probe_listen(host: str, port: int, reuse_port: bool = False) -> None:
    """Bind host:port (IPv4, SO_REUSEADDR as the servers do; `reuse_port`: SO_REUSEPORT, a port shared by the
    node's receiving processes) and close it again; raises OSError where the server could not listen there.
    Port 0 (any free port) is not probed."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, port))
        probe.listen(1)


#: how many studies RecentRefusals remembers (the most recently refused), and for how long (seconds)
RECENT_REFUSALS_KEPT = 50
RECENT_REFUSALS_SECONDS = 24 * 3600.0


class RecentRefusals:
    """The studies whose instances this receiver refused for lack of space (0xA700: under node.min_free_space_mb,
    storage unavailable, a failed write), per Study Instance UID and calling AE: what the admin has to ask senders to
    send again. Kept in memory (the newest RECENT_REFUSALS_KEPT, for RECENT_REFUSALS_SECONDS) and published in the
    process's heartbeat (`dicomnode status`): a study none of whose instances was stored has no row in the state."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], dict] = {}
        self.last_refused_at: float | None = None
        self.last_reason = ""

    def add(self, study_instance_uid: str, calling_ae: str, reason: str, now: float | None = None,
            receiving_fault: bool = True) -> None:
        """`receiving_fault` False: a refusal of that instance only (a SOP Instance UID conflict), not of receiving
        (space, storage, state database): listed, but not the node's last refusal (`dicomnode status` would say
        receiving is refused)."""
        now = time.time() if now is None else now
        with self._lock:
            item = self._items.pop((study_instance_uid, calling_ae), None) or {
                "study_instance_uid": study_instance_uid, "study": short_hash(study_instance_uid),
                "calling_ae": calling_ae, "refused": 0, "first_refused_at": now}
            item.update(refused=item["refused"] + 1, last_refused_at=now, reason=reason)
            self._items[(study_instance_uid, calling_ae)] = item  # newest last
            while len(self._items) > RECENT_REFUSALS_KEPT:
                self._items.pop(next(iter(self._items)))
            if receiving_fault:
                self.last_refused_at, self.last_reason = now, reason

    def recent(self, now: float | None = None) -> list[dict]:
        """The refused studies, newest first (within RECENT_REFUSALS_SECONDS)."""
        now = time.time() if now is None else now
        with self._lock:
            return [dict(item) for item in reversed(self._items.values())
                    if now - item["last_refused_at"] <= RECENT_REFUSALS_SECONDS]


class DifferentResends:
    """Instances sent again under a SOP Instance UID the node holds, in the same study and series, with other content
    (a re-send: Resend.conflict None; a corrected header, a PatientID a PACS rewrote, a lossy re-encoding), acknowledged
    and not stored: the first copy is kept and analysed. Counted per Study Instance UID and calling AE, with what
    differs (the union of Resend.differing), so that the log says it once per study, sender and kind of difference,
    not once per image, and `dicomnode status` lists it beside the study (a corrected header re-sent under the same
    SOP Instance UIDs is not applied: nothing but the log said so). Kept in memory (the newest RECENT_REFUSALS_KEPT,
    for RECENT_REFUSALS_SECONDS) and published in the process's heartbeat, as RecentRefusals; the heartbeat also
    saves them in the state (StateDB.save_different_resends), so that status lists them after a restart."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], dict] = {}

    def add(self, study_instance_uid: str, calling_ae: str, differing: Sequence[str], now: float | None = None) -> bool:
        """Count one instance; True where it is the first of its study and sender (within RECENT_REFUSALS_SECONDS)
        or names something the earlier ones did not differ in: the one to log at WARNING."""
        now = time.time() if now is None else now
        with self._lock:
            item = self._items.pop((study_instance_uid, calling_ae), None)
            if item is not None and now - item["last_at"] > RECENT_REFUSALS_SECONDS:
                item = None
            new = item is None or not set(differing) <= set(item["differing"])
            item = item or {"study_instance_uid": study_instance_uid, "study": short_hash(study_instance_uid),
                            "calling_ae": calling_ae, "instances": 0, "differing": [], "first_at": now}
            item.update(instances=item["instances"] + 1, last_at=now,
                        differing=sorted(set(item["differing"]) | set(differing)))
            self._items[(study_instance_uid, calling_ae)] = item  # newest last
            while len(self._items) > RECENT_REFUSALS_KEPT:
                self._items.pop(next(iter(self._items)))
            return new

    def recent(self, now: float | None = None) -> list[dict]:
        """The studies with such re-sends, newest first (within RECENT_REFUSALS_SECONDS)."""
        now = time.time() if now is None else now
        with self._lock:
            return [dict(item) for item in reversed(self._items.values())
                    if now - item["last_at"] <= RECENT_REFUSALS_SECONDS]


def different_resend_text(item: dict) -> str:
    """"255 instance(s) sent again by SCANNER1 with other content (PatientSize, PatientWeight differ): the first
    copies are kept and analysed, these were not stored; a corrected instance needs a new SOP Instance UID" for a
    DifferentResends item (`dicomnode status`)."""
    differing = item.get("differing") or []
    what = f" ({', '.join(differing[:6])}{', ...' if len(differing) > 6 else ''} differ)" if differing else ""
    return (f"{item['instances']} instance(s) sent again by {item['calling_ae']} with other content{what}: the first "
            "copies are kept and analysed, these were not stored; a corrected instance needs a new SOP Instance UID")


def _remember_syntaxes(assoc) -> None:
    """The abstract and transfer syntaxes an association request proposes: classes and syntaxes, never one
    patient's object (observe.class_uids), so that a line about any of them (a context refused, an object dropped)
    names them readably."""
    try:
        contexts = assoc.requestor.requested_contexts
    except Exception:  # noqa: BLE001 - a malformed request: pynetdicom refuses it; nothing to remember
        return
    for context in contexts or ():
        class_uids.add(context.abstract_syntax, *(context.transfer_syntax or ()))


class StorageSCP:
    """Receives MR instances and stores each durably before answering 0x0000."""

    def __init__(
        self,
        config: Config,
        spool: Spool,
        on_stored: Callable[[StoreOutcome, IncomingInstance], None] | None = None,
        ssl_context=None,
        on_refused: Callable[[IncomingInstance], None] | None = None,
        on_duplicate: Callable[[StoreOutcome, IncomingInstance], None] | None = None,
        on_aborted: Callable[[str], None] | None = None,
        on_refused_unrecorded: Callable[[IncomingInstance], None] | None = None,
    ):
        """`on_stored(outcome, instance)`: after an instance is durable; `on_refused(instance)`: after it was
        refused with 0xA700 (out of resources: storage floor or a failed write), which its sender retries;
        `on_duplicate(outcome, instance)`: after an instance already held was sent again (acknowledged, stored
        once); `on_aborted(study_key)`: for each study an association sent instances of, when it ended by A-ABORT
        or a lost connection instead of a release (its transfer may have been cut); `on_refused_unrecorded(instance)`:
        after it was refused with 0xA700 because the state database is unreachable (nothing could record it)."""
        self.config = config
        self.spool = spool
        self.on_stored = on_stored
        self.on_refused = on_refused
        self.on_duplicate = on_duplicate
        self.on_aborted = on_aborted
        self.on_refused_unrecorded = on_refused_unrecorded
        #: called (no arguments) when the studies of the open associations change (open_studies): before the first
        #: instance of a study an association sends is stored, and when an association ends; a scale-out receiver
        #: publishes them in its heartbeat, so that the process completing studies knows which transfers a
        #: receiver that dies leaves cut. Its errors are logged, never raised.
        self.on_receiving: Callable[[], None] | None = None
        #: study key -> time.monotonic() of the latest C-STORE of it on this process, whatever association sent it
        #: (studies_stored_within)
        self._stored_at: dict[str, float] = {}
        self._stored_at_lock = threading.Lock()
        self.ssl_context = ssl_context
        self._server = None
        self._active = 0
        self._active_lock = threading.Condition()
        self.received = 0
        self.received_bytes = 0
        self.associations_accepted = 0
        self.associations_rejected = 0
        #: refusals for lack of space (0xA700), for `dicomnode status` (the heartbeat publishes them)
        self.refusals = RecentRefusals()
        #: re-sends with other content, acknowledged and not stored, for the log and `dicomnode status`
        self.different_resends = DifferentResends()
        self.last_stored_at: float | None = None  # when an instance was last stored (a refusal after it: refusing now)
        self.study_keys = StudyKeys(getattr(spool, "db", None))
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        node = self.config.node
        ae = AE(ae_title=node.ae_title)
        ae.maximum_pdu_size = node.max_pdu_size
        ae.acse_timeout = node.acse_timeout
        ae.dimse_timeout = node.dimse_timeout
        ae.network_timeout = node.network_timeout
        ae.maximum_associations = node.max_associations
        ae.dicomnode_max_instance_bytes = max_instance_bytes(node.max_instance_mb)  # reactor.CappedDataSet
        ae.require_called_aet = True
        allowed = [a for a in node.allowed_calling_aes if a != "*"]
        ae.require_calling_aet = [] if "*" in node.allowed_calling_aes else allowed
        ae.add_supported_context(Verification)
        decodable = decodable_syntaxes()
        for context in AllStoragePresentationContexts:  # a PACS routes whole studies: SR, SC, PR, KO, PDF ...
            ae.add_supported_context(context.abstract_syntax,
                                     decodable if context.abstract_syntax in MR_STORAGE_CLASSES else
                                     ACCEPTED_TRANSFER_SYNTAXES)
        # ... and private or unknown storage classes too (pynetdicom then accepts every storage-like abstract
        # syntax with the transfer syntax proposed first); only MR images are analysed (node.non_mr_objects), and
        # only in a syntax the node decodes (negotiate_storage)
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        acse.negotiate_unrestricted = negotiate_storage
        return ae

    def update_config(self, config: Config) -> None:
        """Apply a reloaded config's association policy to new associations."""
        if config.studies.grouping_key != self.config.studies.grouping_key:
            self.study_keys.clear()
        self.config = config
        node = config.node
        allowed = [a for a in node.allowed_calling_aes if a != "*"]
        self.ae.require_calling_aet = [] if "*" in node.allowed_calling_aes else allowed
        self.ae.dicomnode_max_instance_bytes = max_instance_bytes(node.max_instance_mb)
        if self._server is not None:
            self._configure_server(self._server)

    def _configure_server(self, server) -> None:
        """The association policy the server applies before an association exists: per-host limit, and
        node.allowed_networks checked as a connection is accepted (before TLS, before it holds a slot)."""
        node = self.config.node
        server.max_associations_per_host = node.max_associations_per_host
        server.max_unassociated_per_host = node.max_unassociated_per_host
        server.allowed_networks = tuple(ipaddress.ip_network(net, strict=False) for net in node.allowed_networks)

    # --- association policy ----------------------------------------------------------------------------------

    def _network_allows(self, address: str) -> bool:
        """Whether `address` is inside node.allowed_networks (always, when it is empty)."""
        networks = self.config.node.allowed_networks
        if not networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)

    def _peer_allows(self, calling_ae: str, address: str, operation: str) -> bool:
        if not self._network_allows(address):
            return False
        peers = [p for p in self.config.node.peers if p.ae_title == calling_ae]
        if not peers:
            return not self.config.node.peers_only
        for peer in peers:
            if operation not in peer.operations:
                continue
            if not peer.networks:
                return True
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                continue
            if any(ip in ipaddress.ip_network(net, strict=False) for net in peer.networks):
                return True
        return False

    def _handle_requested(self, event: evt.Event) -> None:
        """EVT_REQUESTED: refuse a known peer calling from an address it is not bound to (node.peers); unknown
        called/calling AE titles are refused by pynetdicom right after this (AE.require_called_aet/_calling_aet)."""
        assoc = event.assoc
        _answer_malformed_first(assoc)
        _remember_syntaxes(assoc)
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        address = assoc.requestor.address
        if not self._peer_allows(calling, address, "echo") and not self._peer_allows(calling, address, "store"):
            networks = sorted({n for p in self.config.node.peers if p.ae_title == calling for n in p.networks})
            if not self._network_allows(address):
                why = f"outside node.allowed_networks {self.config.node.allowed_networks}"
            elif not networks and self.config.node.peers_only and self.config.peer(calling) is None:
                why = "which has no [[node.peers]] entry (node.peers_only = true)"
            else:
                why = f"outside its node.peers networks {networks}"
            log.warning("association refused: calling AE %r called from %s, %s (the peer is told 'calling AE title "
                        "not recognised': DICOM has no reason for a wrong address)", calling, address, why)
            assoc.dicomnode_refused = True  # said above: _handle_rejected does not log it again
            assoc.acse.send_reject(*REJECT_CALLING_AE)
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.is_rejected = True
            assoc.kill()

    def _settled(self, assoc) -> None:
        """The association's connection no longer needs its node.acse_timeout deadline."""
        settle = getattr(self._server, "association_settled", None)
        if settle is not None:
            settle(assoc)

    def _handle_accepted(self, event: evt.Event) -> None:
        self.associations_accepted += 1
        self._settled(event.assoc)
        _say_services_not_offered(event.assoc)

    def _handle_released(self, event: evt.Event) -> None:
        """EVT_RELEASED: the association ended in order; its studies are no longer being sent by it."""
        self._ended(event.assoc)

    def _ended(self, assoc) -> None:
        assoc.dicomnode_ended = True
        if getattr(assoc, "dicomnode_studies", None):
            self._receiving_changed()

    def _receiving_changed(self) -> None:
        if self.on_receiving is None:
            return
        try:
            self.on_receiving()
        except Exception as exc:  # noqa: BLE001 - the next heartbeat publishes them
            log.debug("could not publish the studies being received now: %s", exc)

    def open_studies(self) -> list[str]:
        """The study keys the associations open now have sent instances of (sorted): the transfers a crash of this
        process may cut (it cannot tell which were under way; a stop cuts only studies_cut)."""
        server = self._server
        if server is None:
            return []
        keys: set[str] = set()
        for assoc in list(server.active_associations):
            if not getattr(assoc, "dicomnode_ended", False):
                keys.update(getattr(assoc, "dicomnode_studies", None) or ())
        return sorted(keys)

    def studies_stored_within(self, window: float) -> dict[str, float]:
        """Study key -> seconds since the latest C-STORE of it this process received (in flight, stored or refused),
        for each study whose latest C-STORE came within `window` seconds, whichever association sent it: a sender
        opening one association per instance (or per series) pauses between its associations, and within
        studies.quiet_seconds the node cannot tell that pause from the end of the transfer. Older entries are
        forgotten."""
        now = time.monotonic()
        with self._stored_at_lock:
            for key in [key for key, at in self._stored_at.items() if now - at >= window]:
                del self._stored_at[key]
            return {key: now - at for key, at in self._stored_at.items()}

    def studies_cut(self) -> list[str]:
        """The study keys whose transfers ending the associations open now would cut (sorted): of each open
        association, every study it sent an instance of within the last studies.quiet_seconds, and, where a message
        is in flight on it (a C-STORE being received or stored), the study it sent last.

        An association that has sent nothing of a study for studies.quiet_seconds has, by the node's own completion
        rule, finished sending that study (the quiet timer completes it whether or not the association stays open):
        a sender that keeps its association open while idle, or reuses it for the next study, had its transfer of
        that study ended before the stop, not by it. Within that time the node cannot tell a finished transfer from a
        paused one, so the stop counts it as cut: the stop never ends a transfer sooner than the quiet timer would."""
        server = self._server
        if server is None:
            return []
        now = time.monotonic()
        window = self.config.studies.quiet_seconds
        keys: set[str] = set()
        for assoc in list(server.active_associations):
            studies = dict(getattr(assoc, "dicomnode_studies", None) or {})
            if getattr(assoc, "dicomnode_ended", False) or not studies:
                continue
            keys.update(key for key, at in studies.items() if at is None or now - at < window)
            in_flight = getattr(assoc, "dicomnode_storing", 0) > 0 or \
                getattr(getattr(assoc, "dimse", None), "message", None) is not None
            if in_flight and getattr(assoc, "dicomnode_last_study", None) in studies:
                keys.add(assoc.dicomnode_last_study)
        return sorted(keys)

    def _handle_aborted(self, event: evt.Event) -> None:
        """EVT_ABORTED (A-ABORT from the peer, or the connection lost: A-P-ABORT): the sender stopped mid-transfer.

        Every instance acknowledged before is durable; the sender has to send the ones it did not get a response
        for. Said once per association so that an admin can match a scanner's "send failed" to this node.
        """
        assoc = event.assoc
        assoc.dicomnode_ended = True
        self._settled(assoc)
        stored = getattr(assoc, "dicomnode_stored", 0)
        calling, address = assoc.requestor.ae_title.strip(), assoc.requestor.address
        in_flight = getattr(assoc.dimse, "message", None) is not None or getattr(assoc, "dicomnode_storing", 0) > 0
        closed_by_node = getattr(assoc, "dicomnode_closed_by_node", None)  # reactor.EventDrivenDUL: a stalled PDU
        idle = closed_by_node is None and (getattr(assoc, "dicomnode_idle_closed", False) or _idle_timeout(assoc))
        if closed_by_node is None and getattr(assoc, "dicomnode_stopping", False):
            closed_by_node = (f"the node is stopping and the peer did not answer its A-RELEASE within "
                              f"node.acse_timeout ({self.config.node.acse_timeout:g} s)")
        if closed_by_node is not None:
            log.warning("association from calling AE %r at %s closed by this node: %s, after %d instance(s) "
                        "acknowledged: those are kept; the sender must send again what it had no response for",
                        calling, address, closed_by_node, stored)
        elif idle:
            # the node's own idle timer (node.network_timeout), not the peer: an idle association between two
            # messages lost nothing
            log.log(logging.WARNING if in_flight else logging.INFO,
                    "association from calling AE %r at %s closed by this node after node.network_timeout (%g s) "
                    "idle, after %d instance(s) acknowledged%s", calling, address, self.config.node.network_timeout,
                    stored, ": a message was in flight; the sender must send again what it had no response for"
                    if in_flight else "")
        else:
            log.warning("association from calling AE %r at %s aborted (A-ABORT or connection lost) after %d "
                        "instance(s) acknowledged: those are kept; the sender must send again what it had no response "
                        "for", calling, address, stored)
        if self.on_aborted is None:
            return
        if idle and not in_flight:
            # the node ended a silent association (node.network_timeout) between two messages: every instance it
            # was sent had its answer, so no transfer was cut (a sender keeping its association open while idle)
            return
        for study_key in getattr(assoc, "dicomnode_studies", ()):
            try:
                self.on_aborted(study_key)
            except Exception:  # noqa: BLE001 - the study still completes (quiet timer or max wait)
                log.exception("could not mark study %s as interrupted after the abort", short_hash(study_key))
        if getattr(assoc, "dicomnode_studies", None):
            self._receiving_changed()

    def _handle_rejected(self, event: evt.Event) -> None:
        """EVT_REJECTED, whoever rejected: count it, and say which AE titles were asked for."""
        self.associations_rejected += 1
        self._settled(event.assoc)
        if getattr(event.assoc, "dicomnode_refused", False):
            return
        primitive = event.assoc.requestor.primitive
        calling, called = primitive.calling_ae_title.strip(), primitive.called_ae_title.strip()
        address = event.assoc.requestor.address
        held = [a for a in self.associations() if a is not event.assoc]
        if len(held) >= self.config.node.max_associations:  # pynetdicom: "local-limit-exceeded", checked last
            note = getattr(self._server, "note_slot_refusal", None)
            if note is not None:
                note()
            log.warning("association refused: calling AE %r from %s: node.max_associations %d reached (%s)",
                        calling, address, self.config.node.max_associations, describe_holders(held))
            return
        if called != self.config.node.ae_title:  # pynetdicom's require_called_aet: the sender calls another node
            log.warning("association refused: called AE %r is not this node's AE title %r (node.ae_title): the sender "
                        "(calling AE %r from %s) must be configured to call %r", called, self.config.node.ae_title,
                        calling, address, self.config.node.ae_title)
            return
        log.warning("association refused: calling AE %r, called AE %r from %s (node %r, allowed_calling_aes %s)",
                    calling, called, address, self.config.node.ae_title, self.config.node.allowed_calling_aes)

    def associations(self) -> list:
        """The associations this receiver holds now (set up, or still setting up)."""
        server = self._server
        if server is None:
            return []
        try:
            return list(server.active_associations)
        except Exception:  # noqa: BLE001 - stopping: none
            return []

    def slots_problem(self) -> str | None:
        """Why new associations are refused for a fault, or None; /healthz answers 503 with it. That is every
        node.max_associations slot taken while at least one is held by a connection that has not completed its
        association for over HALF_OPEN_AFTER_S, or half node.acse_timeout where that is shorter (idle or half-open
        connections; they are closed after node.acse_timeout). Every slot in use by set-up associations is a busy node, not a fault: `slots_busy`."""
        held = self.associations()
        limit = self.config.node.max_associations
        if len(held) < limit:
            return None
        unassociated_for = getattr(self._server, "unassociated_for", None)
        grace = min(HALF_OPEN_AFTER_S, self.config.node.acse_timeout / 2)
        stalled = [assoc for assoc in held if unassociated_for is not None
                   and (unassociated_for(assoc) or 0.0) > grace]
        if not stalled:
            return None
        return (f"degraded: all {limit} association slots taken (node.max_associations), {len(stalled)} of them by "
                f"connection(s) without a completed association for over {grace:g} s, new associations "
                f"are refused: {describe_holders(held)}")

    def slot_summary(self) -> dict:
        """The association slots now, for the heartbeat and `dicomnode status`: max (node.max_associations), held,
        unassociated (connections without a completed association), holders (describe_holders) and
        refused_last_hour (connections and associations refused for want of a slot: node.max_associations,
        node.max_associations_per_host, node.max_unassociated_per_host)."""
        held = self.associations()
        refusals = getattr(self._server, "slot_refusals_within", None)
        return {"max": self.config.node.max_associations, "held": len(held),
                "unassociated": sum(1 for assoc in held if setting_up(assoc)),
                "holders": describe_holders(held),
                "refused_last_hour": refusals(SLOT_REFUSALS_KEPT_S) if refusals is not None else 0}

    def slots_busy(self) -> str | None:
        """'busy: all N slots in use ...' while every node.max_associations slot is held by set-up associations
        (normal heavy load: /healthz stays 200 and says so), else None."""
        held = self.associations()
        limit = self.config.node.max_associations
        if len(held) < limit or self.slots_problem() is not None:
            return None
        return (f"busy: all {limit} association slots in use (node.max_associations), new associations are refused "
                f"until one ends: {describe_holders(held)}")

    # --- services --------------------------------------------------------------------------------------------

    def _handle_dimse_recv(self, event: evt.Event) -> None:
        """EVT_DIMSE_RECV (every DIMSE message, once whole): a C-STORE request pynetdicom would drop unanswered
        (a required command element missing or empty: it logs "Received unexpected C-STORE service message" and
        the sender waits for its DIMSE timeout) is answered at once with 0xC000 and an ErrorComment, and logged."""
        command = event.message.command_set
        if command.get("CommandField") != 0x0001:  # only C-STORE-RQ
            return
        problem = malformed_store_request(command)
        if problem is None:
            return
        assoc = event.assoc
        calling, address = assoc.requestor.ae_title.strip(), assoc.requestor.address
        message_id = command.get("MessageID")
        if message_id is None:
            log.warning("C-STORE request from calling AE %r at %s not answered: %s, and no Message ID to answer it "
                        "under", calling, address, problem)
            return
        log.warning("C-STORE refused from calling AE %r at %s: %s (answered 0x%04X)", calling, address, problem,
                    STATUS_CANNOT_UNDERSTAND)
        response = C_STORE()
        response.MessageIDBeingRespondedTo = int(message_id)
        for keyword in ("AffectedSOPClassUID", "AffectedSOPInstanceUID"):
            try:
                value = str(command.get(keyword) or "").strip()
                if value:
                    setattr(response, keyword, value)
            except (TypeError, ValueError):  # malformed: the response goes without it
                pass
        response.Status = STATUS_CANNOT_UNDERSTAND
        response.ErrorComment = problem[:64]
        try:
            assoc.dimse.send_msg(response, event.message.context_id)
        except Exception as exc:  # noqa: BLE001 - the association may be going down: said, never raised
            log.warning("could not answer the malformed C-STORE request from %r: %s", calling, exc)

    def _handle_echo(self, event: evt.Event) -> int:
        calling = event.assoc.requestor.ae_title.strip()
        address = event.assoc.requestor.address
        if not self._peer_allows(calling, address, "echo"):
            log.warning("C-ECHO refused: calling AE %r from %s may not echo", calling, address)
            return self._status(STATUS_NOT_AUTHORIZED, f"{calling} from {address} may not echo")
        return STATUS_SUCCESS

    def _handle_store(self, event: evt.Event):
        calling = event.assoc.requestor.ae_title.strip()
        address = event.assoc.requestor.address
        if not self._peer_allows(calling, address, "store"):
            log.warning("C-STORE refused: calling AE %r from %s may not store", calling, address)
            return self._status(STATUS_NOT_AUTHORIZED, f"{calling} from {address} may not store")
        assoc = event.assoc
        with self._active_lock:
            self._active += 1
            assoc.dicomnode_storing = getattr(assoc, "dicomnode_storing", 0) + 1
        try:
            status = self._store(event, calling, address)
            if status == STATUS_SUCCESS:
                assoc.dicomnode_stored = getattr(assoc, "dicomnode_stored", 0) + 1
            return status
        finally:
            with self._active_lock:
                self._active -= 1
                assoc.dicomnode_storing -= 1
                self._active_lock.notify_all()

    def _store(self, event: evt.Event, calling: str, address: str):
        request = event.request
        received = getattr(request, "DataSet", None)
        if getattr(received, "over", False):  # reactor.CappedDataSet: the bytes past the limit were not kept
            size_mb = received.received / MB
            log.error("C-STORE of %s from %r at %s refused: its data set is %.0f MB, over node.max_instance_mb "
                      "(%g MB); not stored (raise node.max_instance_mb if such instances are expected)",
                      str(request.AffectedSOPInstanceUID or "?"), calling, address, size_mb,
                      self.config.node.max_instance_mb)
            return self._status(STATUS_OUT_OF_RESOURCES,
                                f"instance {size_mb:.0f} MB over node.max_instance_mb {self.config.node.max_instance_mb:g}")
        try:
            sop_instance = check_uid(request.AffectedSOPInstanceUID, "Affected SOP Instance UID")
            sop_class = class_uid(check_uid(request.AffectedSOPClassUID, "Affected SOP Class UID"))
            class_uid(event.context.transfer_syntax)
            # the File Format's header, then the dataset's bytes exactly as received
            received_bytes = event.encoded_dataset(include_meta=False)
            encoded = file_header(sop_class, sop_instance, event.context.transfer_syntax) + received_bytes
            if event.context.transfer_syntax == DeflatedExplicitVRLittleEndian:
                bomb = self._inflates_over_limit(received_bytes, encoded, sop_instance, calling, address)
                if bomb is not None:
                    return bomb
            dataset = event.dataset  # one parse, of the dataset as received (pynetdicom: deflate handled, lazy values)
            for keyword, requested, comment in (
                    ("SOPClassUID", sop_class, "SOP Class UID in data set differs from request"),
                    ("SOPInstanceUID", sop_instance, "SOP Instance UID in data set differs from request")):
                in_data_set = dataset.get(keyword)
                if in_data_set is not None and str(in_data_set) != requested:
                    return self._mismatch(dataset, calling, address, comment, in_data_set, requested)
            if sop_class not in MR_STORAGE_CLASSES and self.config.node.non_mr_objects == "drop":
                log.info("C-STORE of %s from %s acknowledged and dropped (node.non_mr_objects = drop)",
                         sop_class_name(sop_class), calling)
                return STATUS_SUCCESS
            patient_values.remember(dataset)
            study_uid = check_uid(dataset.get("StudyInstanceUID"), "Study Instance UID")
            series_uid = check_uid(dataset.get("SeriesInstanceUID"), "Series Instance UID")
            instance = IncomingInstance(
                encoded=encoded,
                sop_instance_uid=sop_instance,
                sop_class_uid=sop_class,
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                transfer_syntax=str(event.context.transfer_syntax),
                study_key=self.study_keys.key_for(dataset, study_uid, self.config.studies.grouping_key),
                calling_ae=calling,
                **header_fields(dataset),
            )
        except InvalidUID as exc:
            log.warning("C-STORE refused from %s: %s", calling, exc)
            return self._status(STATUS_CANNOT_UNDERSTAND, str(exc))
        except Exception as exc:  # a dataset pydicom cannot decode
            log.warning("C-STORE refused from %s: cannot decode dataset: %s", calling, exc)
            return self._status(STATUS_CANNOT_UNDERSTAND, f"cannot decode dataset: {exc}")
        # the studies this association sends (an abort marks them interrupted), each with the time.monotonic() of
        # its latest C-STORE on it (a stop marks those it cuts: studies_cut)
        studies = getattr(event.assoc, "dicomnode_studies", None)
        if studies is None:
            studies = event.assoc.dicomnode_studies = {}
        new_study = instance.study_key not in studies
        studies[instance.study_key] = self._note_stored(instance.study_key)
        event.assoc.dicomnode_last_study = instance.study_key
        if new_study:
            self._receiving_changed()  # published before the instance is stored: a crash from here on is seen
        try:
            with study_context(short_hash(study_uid)):
                return self._store_durably(instance, calling, address, sop_instance, study_uid)
        finally:
            studies[instance.study_key] = self._note_stored(instance.study_key)

    def _mismatch(self, dataset, calling: str, address: str, comment: str, in_data_set, requested: str) -> Dataset:
        """0xA900 for a data set whose SOP Class or Instance UID (`comment` says which) is not the C-STORE request's:
        logged at WARNING with both UIDs, listed in `dicomnode status` (RecentRefusals, as a refusal of that
        instance only). Nothing is stored: the sender keeps the instance."""
        what = comment.split(" in data set")[0]
        log.warning("C-STORE refused from %s at %s: %s %s in the data set differs from %s in the request (0x%04X "
                    "Data Set Does Not Match SOP Class): not stored, the sender keeps it", calling, address, what,
                    in_data_set, requested, STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS)
        self.refusals.add(str(dataset.get("StudyInstanceUID") or ""), calling,
                          f"{what} {in_data_set} in the data set differs from {requested} in the request (0xA900)",
                          receiving_fault=False)
        return self._status(STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS, comment)

    def _inflates_over_limit(self, received: bytes, encoded: bytes, sop_instance: str, calling: str,
                             address: str) -> Dataset | None:
        """For a Deflated Explicit VR Little Endian data set (`received`: the deflated bytes as received, `encoded`:
        them with File Meta): None when it inflates to at most node.max_instance_mb (inflate.inflates_over, bounded
        memory), else the 0xA700 status refusing it, before anything inflates all of it (pynetdicom's event.dataset
        would: a deflate bomb of a few MB inflating to gigabytes). The received bytes are kept in the quarantine
        (Spool.quarantine_bytes, never analysed), the refusal logged at ERROR with the cap and the sizes and listed
        in `dicomnode status`."""
        limit = max_instance_bytes(self.config.node.max_instance_mb)
        if not limit:
            return None
        inflated = inflates_over(received, limit)
        if inflated is None:
            return None
        study_uid = _study_uid_of_deflated(received)
        try:
            kept = f"the received bytes kept in {self.spool.quarantine_bytes(encoded, sop_instance, study_uid)}"
        except Exception as exc:  # noqa: BLE001 - not kept: the failure status makes the sender keep it
            kept = f"the received bytes not kept ({exc}): the sender keeps them"
        cap = self.config.node.max_instance_mb
        log.error("C-STORE of %s (study %s) from %r at %s refused (0x%04X): its Deflated data set of %.1f MB received "
                  "inflates to over %g MB, node.max_instance_mb (inflating stopped at %.0f MB); not parsed nor "
                  "stored, %s (raise node.max_instance_mb if such instances are expected)", sop_instance,
                  short_hash(study_uid) if study_uid else "not known", calling, address, STATUS_OUT_OF_RESOURCES,
                  len(received) / MB, cap, inflated / MB, kept)
        self.refusals.add(study_uid or "", calling, f"Deflated data set inflating to over node.max_instance_mb "
                          f"({cap:g} MB; {len(received) / MB:.1f} MB received); {kept.split(':')[0]}",
                          receiving_fault=False)
        return self._status(STATUS_OUT_OF_RESOURCES, f"inflated data set over node.max_instance_mb {cap:g} MB")

    def _note_stored(self, study_key: str) -> float:
        """Record a C-STORE of the study now (studies_stored_within); returns the time.monotonic() recorded."""
        at = time.monotonic()
        with self._stored_at_lock:
            self._stored_at[study_key] = at
        return at

    def _store_durably(self, instance: IncomingInstance, calling: str, address: str, sop_instance: str,
                       study_uid: str):
        try:
            outcome = self.spool.store(instance, calling_host=address)
        except StudyPurging:  # an OSError: before that branch. Not a refusal for space: no hold on completion
            log.warning("C-STORE of %s from %s refused for now: study being purged, the sender will send again",
                        sop_instance, calling)
            return self._status(STATUS_OUT_OF_RESOURCES, STUDY_PURGING_COMMENT)
        except OutOfSpace as exc:
            log.error("C-STORE of %s from %s refused (out of resources): %s", sop_instance, calling, exc)
            self._refused(instance, str(exc))
            return self._status(STATUS_OUT_OF_RESOURCES, exc.comment)
        except StorageUnavailable as exc:  # the spool's marker is gone (said once by the spool): nothing written
            log.debug("C-STORE of %s from %s refused (0xA700): %s", sop_instance, calling, exc)
            self._refused(instance, str(exc))
            return self._status(STATUS_OUT_OF_RESOURCES, exc.comment)
        except OSError as exc:
            log.error("C-STORE of %s from %s failed writing the spool: %s", sop_instance, calling, exc)
            self._refused(instance, f"cannot write spool: {exc.strerror or exc}")
            return self._status(STATUS_OUT_OF_RESOURCES, f"cannot write spool: {exc.strerror}")
        except Exception as exc:
            if not is_outage(exc):
                raise
            # nothing indexed, the file written is gone again (Spool.store): a deliberate, transient refusal. The
            # state cannot record it now: on_refused_unrecorded keeps it until the state database is back, and
            # completion holds the study then as for any refusal (studies.PendingRefusals); the completion rules
            # count no quiet time during the outage either (OutageMonitor.last_failure)
            self.spool.db.outage.failed(exc)
            log.error("C-STORE of %s from %s refused (0xA700, the sender should send it again): state database "
                      "unreachable: %s", sop_instance, calling, outage_reason(exc))
            reason = f"state database unreachable: {outage_reason(exc)}"
            self.refusals.add(instance.study_instance_uid, instance.calling_ae, reason)
            if self.on_refused_unrecorded is not None:
                try:
                    self.on_refused_unrecorded(instance)
                except Exception:  # noqa: BLE001 - refused either way; max wait still ends the study
                    log.exception("could not keep the refusal of %s for the state database's return", sop_instance)
            return self._status(STATUS_OUT_OF_RESOURCES, STATE_UNREACHABLE_COMMENT)
        self.received += 1
        self.last_stored_at = time.time()
        if outcome.stored:
            self.received_bytes += len(instance.encoded)
        if not outcome.stored:
            conflict = self._duplicate(instance, calling, study_uid, address)
            if conflict is not None:
                return conflict
            if self.on_duplicate is not None:
                try:
                    self.on_duplicate(outcome, instance)
                except Exception:  # noqa: BLE001 - acknowledged and held: completion still ends at max wait
                    log.exception("post-duplicate hook failed")
        else:
            self._notify_stored(outcome, instance)
        return STATUS_SUCCESS

    def _notify_stored(self, outcome, instance: IncomingInstance) -> None:
        if self.on_stored is not None:
            try:
                self.on_stored(outcome, instance)
            except Exception:  # the instance is durable; completion will be rebuilt from the index
                log.exception("post-store hook failed")

    def _refused(self, instance: IncomingInstance, reason: str = "") -> None:
        """After a 0xA700: the study must not look quiet to completion (its sender sends the instance again), and
        `dicomnode status` lists it (RecentRefusals), even when none of its instances was stored."""
        self.refusals.add(instance.study_instance_uid, instance.calling_ae, reason)
        if self.on_refused is None:
            return
        try:
            self.on_refused(instance)
        except Exception:  # e.g. the state database on the same full disk: max wait still ends the study
            log.exception("could not mark the study incomplete after refusing an instance")

    def _duplicate(self, instance: IncomingInstance, calling: str, study_uid: str,
                   address: str | None = None) -> Dataset | None:
        """A SOP Instance UID already stored. A re-send (the same bytes, or the same attributes and pixel values in
        another encoding: a PACS re-routing the study) is said quietly; one whose content differs within the same
        study and series (a corrected name, a PatientID a PACS rewrote, a lossy or undecodable re-encoding, copies
        pydicom cannot compare) at WARNING, naming what differs: the first copy is kept and None returned (success).
        Except a lossless copy of a stored lossy one (Resend.replaces_lossy: an archive that aged the study to lossy
        keeps the SOP UIDs, and the lossless originals come later under them) and a copy whose only change is the
        patient's height, weight or age (Resend.corrects_measurements: entered after the scan, the study sent again
        so that the indexed values are given): it replaces the stored copy (_replace) and the study is analysed
        again, as for a late image.

        Another instance under a held UID (another StudyInstanceUID or SeriesInstanceUID, or other pixel values where
        both copies are lossless and decode: a UID collision, an anonymiser that re-keys the study but keeps SOP
        UIDs; Resend.conflict) is not a re-send: it is kept
        under storage_dir/conflicts (Spool.quarantine, never analysed), refused with 0x0111 Duplicate SOP Instance and
        a comment the sender sees, logged at WARNING naming both studies and listed in `dicomnode status` (refused
        recently). Returns that failure status."""
        try:
            difference = self.spool.difference_from_stored(instance)
        except OSError as exc:
            log.warning("duplicate SOP instance %s (study %s): cannot compare with the stored copy: %s",
                        instance.sop_instance_uid, short_hash(study_uid), exc)
            return None
        if difference is None:
            log.info("duplicate SOP instance %s (study %s) from %s: identical, stored once", instance.sop_instance_uid,
                     short_hash(study_uid), calling)
            return None
        if difference.same_content:
            log.info("duplicate SOP instance %s (study %s) from %s: identical content (every attribute and pixel value "
                     "the same) in another encoding (%s), stored once", instance.sop_instance_uid,
                     short_hash(study_uid), calling, difference.detail)
            return None
        if difference.replaces_lossy:
            return self._replace(instance, calling, study_uid, address, difference,
                                 "as a lossless copy of the stored lossy one", "the lossless copy")
        if difference.corrects_measurements:
            return self._replace(instance, calling, study_uid, address, difference,
                                 "with the patient's height, weight or age corrected", "the corrected copy")
        if difference.keeps_lossless:
            log.warning("SOP instance %s (study %s) sent again by %s as a lossy copy (%s): the first copy is kept and "
                        "analysed (it is lossless); no new SOP Instance UID is needed", instance.sop_instance_uid, short_hash(study_uid), calling,
                        difference.detail)
            return None
        if difference.conflict is None:
            # one WARNING per study, sender and kind of difference (a corrected header re-sent for a whole study
            # made hundreds), the count in `dicomnode status`; every instance at DEBUG
            first = self.different_resends.add(study_uid, instance.calling_ae, difference.differing)
            log.log(logging.WARNING if first else logging.DEBUG,
                    "SOP instance %s (study %s) sent again by %s with different content (%s): the first copy is "
                    "kept and analysed; a corrected instance needs a new SOP Instance UID%s",
                    instance.sop_instance_uid, short_hash(study_uid), calling, difference.detail,
                    "; further instances of this study sent again with such differences are logged at DEBUG only, "
                    "counted in `dicomnode status`" if first else "")
            return None
        return self._conflict(instance, calling, study_uid, difference)

    def _replace(self, instance: IncomingInstance, calling: str, study_uid: str, address: str | None,
                 difference, how: str, which: str) -> Dataset | None:
        """_duplicate for a copy that replaces the stored one (a lossless copy of a stored lossy instance; a corrected
        height, weight or age, Resend.corrects_measurements): stored in its place (Spool.replace: the stored copy
        stays until the new one is durable) and the study re-opened as for a late image (on_stored), so that it is
        analysed again and the new results supersede the earlier ones. `how` says what the copy is, `which` names it
        in the log. Returns None (success), or the 0xA700 status when it cannot be stored (the stored copy is kept,
        the sender sends again)."""
        try:
            outcome = self.spool.replace(instance, calling_host=address)
        except (OutOfSpace, StorageUnavailable) as exc:
            log.error("%s of SOP instance %s from %s refused (0xA700): %s; the stored copy is kept", which,
                      instance.sop_instance_uid, calling, exc)
            self._refused(instance, str(exc))
            return self._status(STATUS_OUT_OF_RESOURCES, exc.comment)
        except StudyPurging:
            return self._status(STATUS_OUT_OF_RESOURCES, STUDY_PURGING_COMMENT)
        except OSError as exc:
            log.error("%s of SOP instance %s from %s could not be written (0xA700): %s; the stored copy is kept",
                      which, instance.sop_instance_uid, calling, exc)
            self._refused(instance, f"cannot write spool: {exc.strerror or exc}")
            return self._status(STATUS_OUT_OF_RESOURCES, f"cannot write spool: {exc.strerror}")
        self.received_bytes += len(instance.encoded)
        log.info("SOP instance %s (study %s) sent again by %s %s (%s): %s replaces it and the study is analysed "
                 "again", instance.sop_instance_uid, short_hash(study_uid), calling, how, difference.detail, which)
        self._notify_stored(outcome, instance)
        return None

    def _conflict(self, instance: IncomingInstance, calling: str, study_uid: str, difference) -> Dataset:
        """_duplicate for another instance under a held SOP Instance UID: quarantined, refused (0x0111), listed."""
        stored_study = difference.stored_study_uid or "?"
        where = f"study {stored_study}" if stored_study != study_uid else f"this study ({stored_study})"
        try:
            kept = f"kept in {self.spool.quarantine(instance)}"
        except Exception as exc:  # noqa: BLE001 - not kept: the failure status makes the sender keep it
            kept = f"not kept ({exc}): the sender keeps it"
        log.warning("C-STORE of SOP instance %s of study %s from %s refused (0x0111 Duplicate SOP "
                    "Instance): that SOP Instance UID is held by another instance, of %s: %s; %s. The stored copy "
                    "is kept and analysed; the received one is not analysed: it needs its own SOP Instance UID",
                    instance.sop_instance_uid, study_uid, calling, where, difference.conflict,
                    kept)
        reason = (f"SOP Instance UID already held by another instance ({difference.conflict}; held in {where}); "
                  f"{kept.split(':')[0]}")
        self.refusals.add(instance.study_instance_uid, instance.calling_ae, reason, receiving_fault=False)
        comment = ("SOP UID held by another study" if stored_study != study_uid else
                   "SOP UID held by another instance")
        return self._status(STATUS_DUPLICATE_SOP_INSTANCE, comment)

    @staticmethod
    def _status(code: int, comment: str) -> Dataset:
        status = Dataset()
        status.Status = code
        status.ErrorComment = comment[:64]
        return status

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        handlers = [
            (evt.EVT_CONN_OPEN, set_tcp_nodelay),
            (evt.EVT_REQUESTED, self._handle_requested),
            (evt.EVT_ACCEPTED, self._handle_accepted),
            (evt.EVT_RELEASED, self._handle_released),
            (evt.EVT_REJECTED, self._handle_rejected),
            (evt.EVT_ABORTED, self._handle_aborted),
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_DIMSE_RECV, self._handle_dimse_recv),
        ]
        try:
            self._server = self.ae.make_server(
                (self.config.node.host, self.config.node.port),
                evt_handlers=handlers,
                ssl_context=self.ssl_context,
                server_class=self._server_class(),
            )
        except OSError as exc:
            raise ListenError(_cannot_listen(self.config, exc)) from exc
        self._configure_server(self._server)
        self.ae._servers.append(self._server)  # as AE.start_server does: AssociationServer.shutdown removes it
        threading.Thread(target=self._server.serve_forever, name="dicomnode-scp-accept", daemon=True).start()

    def _release_all(self, open_now: list, began: float, deadline: float) -> None:
        """Release the established associations of `open_now` (all at once: a peer that does not answer costs its own
        node.acse_timeout, not the others'), and wait until every association thread of the server has ended or
        `deadline` (time.monotonic(); the stop began at `began`) passed; then close the connection of each one still
        held, saying which peer held the stop and how (a PDU half received, or no answer to the A-RELEASE), and wait
        STOP_CLOSE_WAIT_S more for their threads to see it."""
        if open_now:
            log.info("stop: releasing %d open association(s) (%s); a peer that has not let go within %.0f s has its "
                     "connection closed", len(open_now), describe_holders(open_now), max(0.0, deadline - began))
        for assoc in open_now:
            if assoc.is_established:
                # not named after the association: pynetdicom finds a server's associations by "AcceptorThread"
                threading.Thread(target=_release_quietly, args=(assoc,), daemon=True,
                                 name="dicomnode-stop-release").start()
        server = self._server

        def held() -> list:
            return [assoc for assoc in list(server.active_associations) if assoc.is_alive()]

        while held() and time.monotonic() < deadline:
            time.sleep(0.05)
        stuck = held()
        for assoc in stuck:
            reading = getattr(getattr(assoc, "dul", None), "dicomnode_reading_since", None)
            how = (f"a PDU of it half received for {time.monotonic() - reading:.0f} s" if reading is not None
                   else "no answer to the A-RELEASE" if assoc.is_established else "its connection not yet closed")
            log.warning("stop: the association from calling AE %r at %s had not ended %.0f s into the stop (%s): its "
                        "connection is closed", _calling_of(assoc), peer_address(assoc) or "?",
                        time.monotonic() - began, how)
            assoc.dicomnode_closed_by_node = f"the node stopped, {how}"
            request = socket_of(assoc)
            try:
                request.shutdown(socket.SHUT_RDWR)  # a recv() blocked on it returns: pynetdicom ends the association
            except (OSError, AttributeError):
                pass
        end = time.monotonic() + STOP_CLOSE_WAIT_S
        while stuck and held() and time.monotonic() < end:
            time.sleep(0.05)

    @staticmethod
    def check_port(config: Config) -> None:
        """Before the process changes anything: raises ListenError (as start would) where node.host:node.port
        cannot be listened on now (probe_listen)."""
        try:
            probe_listen(config.node.host, config.node.port, config.node.receive_processes > 1)
        except OSError as exc:
            raise ListenError(_cannot_listen(config, exc) + "; nothing was changed") from exc

    def _server_class(self) -> type:
        shared = self.config.node.receive_processes > 1
        if EVENT_DRIVEN:
            return SharedPortServer if shared else EventDrivenServer
        return SharedPortPollingServer if shared else PollingServer

    @property
    def listening(self) -> bool:
        """Whether the receiver was started and not stopped since."""
        return self._server is not None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.config.node.port

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Stop accepting associations, wait for stores in flight to become durable, then end the associations still
        open. Returns the study keys whose transfers this stop cut (studies_cut: sent on an open association within
        studies.quiet_seconds, or with a message in flight; and every study an open association stored a C-STORE of
        after the stop began, while its stores were drained and it was released), unless their senders send them
        again; a study an open association had finished sending before is not among them."""
        if self._server is None:
            return []
        began = time.monotonic()
        self._server.shutdown()
        with self._active_lock:
            self._active_lock.wait_for(lambda: self._active == 0, timeout=timeout)
        cut = set(self.studies_cut())
        open_now = [assoc for assoc in list(self._server.active_associations)
                    if not getattr(assoc, "dicomnode_ended", False)]
        self._release_all(open_now, began, max(began + timeout, time.monotonic() + STOP_RELEASE_GRACE_S))
        with self._active_lock:  # a store that came in before the release was answered
            self._active_lock.wait_for(lambda: self._active == 0, timeout=timeout)
        # computed once the associations are released: a C-STORE answered while they were being released (the
        # first instance of a study that was still arriving when the stop began included) cut its transfer too
        cut.update(_studies_sent_since(open_now, began))
        self._server = None
        return sorted(cut)
