"""A folder of prior reports, embedded once, kept as an on-disk index and searched by cosine similarity."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from dicomnode import strict_json
from dicomnode.analysis.report_text import MAX_REPORT_CHARS, cut_text, identifier_findings

log = logging.getLogger(__name__)

INDEX_DIRNAME = ".dicomnode-index"
INDEX_FORMAT = 1
APPROXIMATE_ABOVE = 100_000  # exact numpy search up to this many reports, an HNSW index above (when installed)
DUPLICATE_COSINE = 0.98  # two candidate texts at least this similar are one suggestion
CANDIDATE_FACTOR = 4  # candidates fetched per requested hit, before de-duplication


class Encoder(Protocol):
    model_sha256: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Report:
    """One prior report as read from the bank folder."""

    id: str
    text: str
    findings: str | None = None
    impression: str | None = None
    metadata: dict = field(default_factory=dict)
    source: str = ""  # file (relative to the bank folder) it came from

    @property
    def offered_texts(self) -> tuple[str, ...]:
        """Every text of this report that may be offered for another study (text, findings, impression): each is
        checked for identifiers and held against the node's measurements."""
        return tuple(dict.fromkeys(part for part in (self.text, self.findings, self.impression)
                                   if isinstance(part, str) and part.strip()))

    @property
    def text_sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def _metadata_values(self, key: str) -> frozenset[str]:
        value = self.metadata.get(key)
        values = value if isinstance(value, list) else [value]
        return frozenset(str(v).strip() for v in values if isinstance(v, (str, int)) and str(v).strip())

    @property
    def study_instance_uids(self) -> frozenset[str]:
        """The studies this report was written for (`metadata.study_instance_uid`: one UID or a list): a report
        of the study being analysed is no prior report and is never suggested for it."""
        return self._metadata_values("study_instance_uid")

    @property
    def accession_numbers(self) -> frozenset[str]:
        """`metadata.accession_number` (one or a list): the exam(s) this report was written for, which a re-sent or
        re-UID'd study keeps."""
        return self._metadata_values("accession_number")

    @property
    def patient_ids(self) -> frozenset[str]:
        """`metadata.patient_id` (one or a list): whose report this is."""
        return self._metadata_values("patient_id")


@dataclass(frozen=True)
class Hit:
    report: Report
    score: float

    @property
    def report_id(self) -> str:
        return self.report.id


@dataclass(frozen=True)
class RefreshStats:
    files: int
    reports: int
    embedded: int  # texts newly embedded by this refresh
    removed: int  # reports dropped since the last index
    changed: bool  # whether the searchable index was replaced
    index_dir: Path | None  # where the index was written; None when kept in memory only
    skipped_files: int = 0  # bank files that could not be read (not UTF-8 text, removed mid-scan)
    skipped_lines: int = 0  # JSONL lines skipped (not JSON, no id, no text) and empty .txt files
    duplicates: int = 0  # reports whose id an earlier report already had
    withheld: int = 0  # reports holding identifiers, never indexed


#: stored study_features and the values they may take (a report with another value is refused)
_FEATURE_RANGES = {"lge_percent": (0.0, 100.0), "mvo_percent": (0.0, 100.0), "lv_ef_percent": (0.0, 100.0),
                   "rv_ef_percent": (0.0, 100.0), "large_scar_burden": (0.0, 1.0), "has_lge": (0.0, 1.0),
                   "has_cine": (0.0, 1.0)}
_FRACTION_FEATURES = ("scar_slice_fraction", "scar_anterior_fraction", "scar_septal_fraction",
                      "scar_inferior_fraction", "scar_lateral_fraction", "transmural_extent")


class BankFileRead(NamedTuple):
    """What one bank file gave: its reports, the lines (or the .txt) skipped as invalid and why, the reports
    withheld because they hold identifiers, and notes (a report cut to MAX_REPORT_CHARS, a file read as
    Windows-1252)."""

    reports: list
    skipped: list[str]
    withheld: list[str]
    notes: list[str]


#: the non-letters a Windows-1252 / ISO-8859-1 report may hold; anything else (a control character, a symbol that
#: a report has no use for) means the bytes are no such text
_LEGACY_SYMBOLS = frozenset("°µ²³±§«»–—‘’“”„…·×÷½¼¾€\xa0¹ºª¿¡")


def read_bank_text(path: Path) -> tuple[str, str | None]:
    """A bank file's text and, where it was not UTF-8, the encoding it was read in: UTF-8 (BOM or not), UTF-16 with
    a BOM, else Windows-1252 / ISO-8859-1 (older RIS exports) where that gives letters, ASCII and the usual report
    symbols (°, µ, ², ±, dashes, quotes) only.
    Raises UnicodeDecodeError naming the file for anything else (a binary file, another encoding)."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), "UTF-16"
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        first = exc
    for encoding in ("cp1252", "latin-1"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if all(ch.isalpha() or ch in _LEGACY_SYMBOLS or (32 <= ord(ch) < 127) or ch in "\t\n\r\f" for ch in text):
            return text, "Windows-1252" if encoding == "cp1252" else "ISO-8859-1"
    raise UnicodeDecodeError(first.encoding, first.object, first.start, first.end,
                             f"{path.name} is neither UTF-8 nor Windows-1252/ISO-8859-1 text: save it as UTF-8")


def _record_problem(record: dict) -> str | None:
    """Why a JSONL record is no valid report, or None."""
    report_id = record.get("id")
    if isinstance(report_id, bool) or not isinstance(report_id, (str, int)) or not str(report_id).strip():
        return f"'id' must be a non-empty string, got {report_id!r}"
    for key in ("text", "findings", "impression"):
        if record.get(key) is not None and not isinstance(record.get(key), str):
            return f"'{key}' must be a string, got {type(record.get(key)).__name__}"
    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return f"'metadata' must be an object, got {type(metadata).__name__}"
    features = (metadata or {}).get("study_features")
    if features is None:
        return None
    if not isinstance(features, dict):
        return f"'metadata.study_features' must be an object, got {type(features).__name__}"
    for name, value in features.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return f"'metadata.study_features.{name}' must be a number or null, got {value!r}"
        low, high = _FEATURE_RANGES.get(name, (0.0, 1.0) if name in _FRACTION_FEATURES else (0.0, float("inf")))
        if not low <= value <= high:
            return f"'metadata.study_features.{name}' = {value!r} is outside {low:g}..{high:g}"
    return None


def _checked_report(report: Report, where: str, withheld: list[str], notes: list[str]) -> Report | None:
    """The report with its text cut to MAX_REPORT_CHARS (noted), or None where its text holds identifiers
    (withheld, said why): its text, findings and impression are all checked."""
    found = list(dict.fromkeys(what for part in report.offered_texts for what in identifier_findings(part)))
    if found:
        withheld.append(f"{where} (id {report.id!r}) withheld: it holds {', '.join(found)}; "
                        "de-identify it (the bank must hold de-identified reports)")
        return None
    text, cut = cut_text(report.text)
    if cut:
        notes.append(f"{where} (id {report.id!r}) is {len(report.text)} characters long: only its first "
                     f"{MAX_REPORT_CHARS} are used")
        report = Report(id=report.id, text=text, findings=report.findings, impression=report.impression,
                        metadata=report.metadata, source=report.source)
    return report


def read_bank_file(path: Path, relative: str) -> BankFileRead:
    """Reports in one bank file, and what was skipped, withheld and noted (BankFileRead). A .txt is one report,
    its id the path relative to the bank folder without ".txt" ("2024/report": two folders' report.txt are two
    reports); a .jsonl holds one report per line ({"id", "text" | "findings" / "impression", "metadata"}). A
    record with a null or empty id, a non-string text / findings / impression, or a stored study feature out of
    range is skipped; a report holding identifiers (report_text.identifier_findings) is withheld; a text over
    MAX_REPORT_CHARS is cut with a marker. Raises OSError / UnicodeDecodeError for a file that cannot be read."""
    text, encoding = read_bank_text(path)
    notes = [f"{relative} read as {encoding} (not UTF-8)"] if encoding else []
    withheld: list[str] = []
    if path.suffix == ".txt":
        text = text.strip()
        if not text:
            return BankFileRead([], [f"{relative}: empty"], [], notes)
        report = _checked_report(Report(id=relative.removesuffix(".txt"), text=text, source=relative), relative,
                                 withheld, notes)
        return BankFileRead([report] if report else [], [], withheld, notes)
    reports, skipped = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            skipped.append(f"{relative} line {number} skipped: not JSON ({exc})")
            continue
        if not isinstance(record, dict) or "id" not in record:
            skipped.append(f"{relative} line {number} skipped: no 'id'")
            continue
        problem = _record_problem(record)
        if problem:
            skipped.append(f"{relative} line {number} skipped: {problem}")
            continue
        findings, impression = record.get("findings"), record.get("impression")
        report_text = record.get("text") or " ".join(
            part for part in (f"Findings: {findings}" if findings else "", f"Impression: {impression}" if impression else "") if part)
        if not report_text.strip():
            skipped.append(f"{relative} line {number} skipped: no text, findings or impression")
            continue
        report = _checked_report(Report(id=str(record["id"]).strip(), text=report_text.strip(), findings=findings,
                                        impression=cut_text(impression)[0] if impression else impression,
                                        metadata=record.get("metadata") or {}, source=relative),
                                 f"{relative} line {number}", withheld, notes)
        if report is not None:
            reports.append(report)
    return BankFileRead(reports, skipped, withheld, notes)


def parse_bank_file(path: Path, relative: str) -> list[Report]:
    """Reports in one bank file (`read_bank_file`), each skipped line and withheld report logged as a warning."""
    read = read_bank_file(path, relative)
    for reason in (*read.skipped, *read.withheld, *read.notes):
        log.warning("report bank %s", reason)
    return read.reports


def bank_files(bank_dir: Path) -> list[tuple[str, Path]]:
    """(path relative to the bank folder, path) of every report file: *.txt and *.jsonl, recursively, hidden
    files and folders (the index) left out."""
    found = []
    for path in sorted(Path(bank_dir).rglob("*")):
        relative = path.relative_to(bank_dir)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix in (".txt", ".jsonl"):
            found.append((relative.as_posix(), path))
    return found


class BankScan(NamedTuple):
    """What a bank folder holds, read without embedding anything (`dicomnode config check`)."""

    files: int
    reports: int  # usable reports (unique ids)
    skipped_files: list[str]  # "relative: why"
    skipped_lines: list[str]  # "relative line N skipped: why"
    duplicates: int
    duplicate_ids: list[str] = []  # "id 'x' in b.jsonl line 3 (first in a.txt)"
    withheld: list[str] = []  # reports holding identifiers: "relative line N (id 'x') withheld: it holds ..."
    notes: list[str] = []  # reports cut to MAX_REPORT_CHARS, files read as Windows-1252


def scan_bank(bank_dir: str | Path) -> BankScan:
    """Read every report file of a bank folder as the node will, counting what it would use and skip."""
    bank_dir = Path(bank_dir)
    files = bank_files(bank_dir)
    ids: dict[str, str] = {}
    skipped_files, skipped_lines, duplicate_ids, withheld, notes = [], [], [], [], []
    for relative, path in files:
        try:
            read = read_bank_file(path, relative)
        except (OSError, UnicodeDecodeError) as exc:
            skipped_files.append(f"{relative}: {exc}")
            continue
        skipped_lines += read.skipped
        withheld += read.withheld
        notes += read.notes
        for report in read.reports:
            if report.id in ids:
                duplicate_ids.append(f"id {report.id!r} in {relative} (first in {ids[report.id]})")
                continue
            ids[report.id] = relative
    return BankScan(files=len(files), reports=len(ids), skipped_files=skipped_files, skipped_lines=skipped_lines,
                    duplicates=len(duplicate_ids), duplicate_ids=duplicate_ids, withheld=withheld, notes=notes)


def top_k_cosine(matrix: np.ndarray, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k rows of a unit-row matrix most similar to a unit vector, best first."""
    if matrix.shape[0] == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = matrix @ vector.astype(matrix.dtype, copy=False)
    k = min(k, scores.shape[0])
    if k < scores.shape[0]:
        top = np.argpartition(-scores, k - 1)[:k]
    else:
        top = np.arange(scores.shape[0])
    order = top[np.argsort(-scores[top], kind="stable")]
    return order, scores[order].astype(np.float32)


class ApproximateIndex:
    """HNSW (hnswlib, optional) over unit vectors with inner-product distance."""

    def __init__(self, embeddings: np.ndarray, ef_construction: int = 200, m: int = 16, ef_search: int = 128):
        import hnswlib

        self._index = hnswlib.Index(space="ip", dim=embeddings.shape[1])
        self._index.init_index(max_elements=max(1, embeddings.shape[0]), ef_construction=ef_construction, M=m)
        self._index.add_items(embeddings, np.arange(embeddings.shape[0]))
        self._index.set_ef(ef_search)
        self.size = embeddings.shape[0]

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.size)
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        self._index.set_ef(max(k, 128))
        labels, distances = self._index.knn_query(vector.reshape(1, -1), k=k)
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)


def approximate_index_available() -> bool:
    try:
        import hnswlib  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class _Snapshot:
    """An immutable, complete index: searches read one snapshot while a refresh builds the next."""

    reports: tuple[Report, ...]
    embeddings: np.ndarray  # (n, dim) float32 unit rows
    approximate: ApproximateIndex | None
    version: int


class ReportBank:
    """Prior reports from `bank_dir` (*.txt and *.jsonl, recursively), embedded with `encoder`.

    The index lives in `<bank_dir>/.dicomnode-index/`, or under `cache_dir` when the bank folder is read-only,
    or in memory only when neither can be written. `refresh()` re-embeds only new or changed texts and drops
    removed ones; searches always use the last complete index and never wait for a refresh.
    """

    def __init__(self, bank_dir: str | Path, encoder: Encoder, cache_dir: str | Path | None = None,
                 approximate_above: int = APPROXIMATE_ABOVE):
        self.bank_dir = Path(bank_dir)
        if not self.bank_dir.is_dir():
            raise FileNotFoundError(f"report bank folder {self.bank_dir} does not exist")
        if approximate_above < 1:
            raise ValueError(f"approximate_above must be >= 1, got {approximate_above}")
        self.encoder = encoder
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.approximate_above = approximate_above
        self._snapshot = _Snapshot(reports=(), embeddings=np.zeros((0, 0), dtype=np.float32), approximate=None, version=0)
        self._refresh_lock = threading.Lock()
        self._file_cache: dict[str, tuple[int, int, str, list[Report]]] = {}  # rel -> (mtime_ns, size, sha, reports)
        self._index_dir: Path | None = None
        self._index_dir_chosen = False
        self.last_refresh: RefreshStats | None = None  # what the last refresh read and skipped

    # -- reading ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._snapshot.reports)

    @property
    def version(self) -> int:
        """Increases every time a refresh replaces the searchable index."""
        return self._snapshot.version

    @property
    def reports(self) -> tuple[Report, ...]:
        return self._snapshot.reports

    @property
    def index_dir(self) -> Path | None:
        return self._index_dir

    def embeddings(self) -> np.ndarray:
        return self._snapshot.embeddings

    # -- searching -------------------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int = 3, min_similarity: float = -1.0,
               duplicate_cosine: float = DUPLICATE_COSINE, exclude_study: str | None = None,
               exclude_ids: frozenset[str] | set[str] = frozenset()) -> list[Hit]:
        """Top-k reports by cosine to a unit vector in the text space, above the floor, near-duplicates merged;
        reports written for `exclude_study` (a Study Instance UID, see `Report.study_instance_uids`) and the
        reports whose id is in `exclude_ids` left out."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        snapshot = self._snapshot
        if not snapshot.reports:
            return []
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != snapshot.embeddings.shape[1]:
            raise ValueError(f"query has {vector.shape[0]} dimensions, the bank's embeddings {snapshot.embeddings.shape[1]}")
        norm = np.linalg.norm(vector)
        if not np.isfinite(norm) or norm == 0:
            raise ValueError("query vector is zero or not finite")
        vector = vector / norm
        wanted = k * CANDIDATE_FACTOR + len(exclude_ids)
        if snapshot.approximate is not None:
            indices, scores = snapshot.approximate.search(vector, wanted)
        else:
            indices, scores = top_k_cosine(snapshot.embeddings, vector, wanted)
        kept: list[int] = []
        hits: list[Hit] = []
        for index, score in zip(indices.tolist(), scores.tolist()):
            if score < min_similarity:
                break
            if exclude_study and exclude_study in snapshot.reports[index].study_instance_uids:
                continue
            if snapshot.reports[index].id in exclude_ids:
                continue
            if kept and float(np.max(snapshot.embeddings[kept] @ snapshot.embeddings[index])) >= duplicate_cosine:
                continue
            kept.append(index)
            hits.append(Hit(report=snapshot.reports[index], score=float(score)))
            if len(hits) == k:
                break
        return hits

    def search_text(self, query: str, k: int = 3, min_similarity: float = -1.0,
                    duplicate_cosine: float = DUPLICATE_COSINE) -> list[Hit]:
        """Search with a free-text query embedded by the bank's encoder."""
        if not query.strip():
            raise ValueError("empty text query")
        return self.search(self.encoder.encode([query])[0], k, min_similarity, duplicate_cosine)

    # -- refreshing ------------------------------------------------------------------------------------------
    def refresh(self) -> RefreshStats:
        """Re-read the folder; embed only new/changed texts; swap in the new index when complete."""
        with self._refresh_lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> RefreshStats:
        files = self._bank_files()
        reports: list[Report] = []
        seen_ids: dict[str, str] = {}
        new_cache = {}
        skipped_files = skipped_lines = duplicates = withheld = 0
        for relative, path in files:
            try:
                entry = self._read_file(relative, path)
            except (OSError, UnicodeDecodeError) as exc:  # removed or rewritten mid-scan, or not text
                log.warning("report bank file %s skipped: %s", relative, exc)
                skipped_files += 1
                continue
            new_cache[relative] = entry
            skipped_lines += entry[4]
            withheld += entry[5]
            for report in entry[3]:
                if report.id in seen_ids:
                    log.warning("report bank: duplicate id %r in %s ignored (the first, in %s, kept)", report.id,
                                relative, seen_ids[report.id])
                    duplicates += 1
                    continue
                seen_ids[report.id] = relative
                reports.append(report)

        snapshot = self._snapshot
        known = {r.text_sha256: snapshot.embeddings[i] for i, r in enumerate(snapshot.reports)}
        if not known:
            known = self._load_persisted()
        missing = sorted({r.text_sha256: r.text for r in reports if r.text_sha256 not in known}.items())
        if missing:
            vectors = np.asarray(self.encoder.encode([text for _, text in missing]), dtype=np.float32)
            known.update({digest: vectors[i] for i, (digest, _) in enumerate(missing)})
        old_keys = [(r.id, r.text_sha256) for r in snapshot.reports]
        new_keys = [(r.id, r.text_sha256) for r in reports]
        removed = len(set(old_keys) - set(new_keys))
        changed = old_keys != new_keys or snapshot.version == 0
        self._file_cache = new_cache
        if changed:
            dim = len(next(iter(known.values()))) if known else 0
            embeddings = (np.stack([known[r.text_sha256] for r in reports]).astype(np.float32)
                          if reports else np.zeros((0, dim), dtype=np.float32))
            approximate = None
            if len(reports) > self.approximate_above:
                if approximate_index_available():
                    approximate = ApproximateIndex(embeddings)
                else:
                    log.info("report bank has %d reports; hnswlib not installed, searching exactly", len(reports))
            self._snapshot = _Snapshot(reports=tuple(reports), embeddings=embeddings, approximate=approximate,
                                       version=snapshot.version + 1)
            self._persist(new_cache)
        self.last_refresh = RefreshStats(files=len(files), reports=len(reports), embedded=len(missing),
                                         removed=removed, changed=changed, index_dir=self._index_dir,
                                         skipped_files=skipped_files, skipped_lines=skipped_lines,
                                         duplicates=duplicates, withheld=withheld)
        return self.last_refresh

    def _read_file(self, relative: str, path: Path) -> tuple[int, int, str, list[Report], int, int]:
        """(mtime_ns, size, sha256, reports, lines skipped, reports withheld) of one file, re-parsed only when its
        bytes changed."""
        stat = path.stat()
        cached = self._file_cache.get(relative)
        if cached and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
            return cached
        digest = _sha256_file(path)
        if cached and cached[2] == digest:
            return (stat.st_mtime_ns, stat.st_size, digest, cached[3], cached[4], cached[5])
        read = read_bank_file(path, relative)
        for reason in (*read.skipped, *read.withheld, *read.notes):
            log.warning("report bank %s", reason)
        return (stat.st_mtime_ns, stat.st_size, digest, read.reports, len(read.skipped), len(read.withheld))

    def _bank_files(self) -> list[tuple[str, Path]]:
        return bank_files(self.bank_dir)

    # -- the on-disk index -----------------------------------------------------------------------------------
    def _choose_index_dir(self) -> Path | None:
        if self._index_dir_chosen:
            return self._index_dir
        self._index_dir_chosen = True
        candidates = self._index_candidates()
        for candidate in candidates:
            try:
                candidate.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=candidate, prefix=".probe-"):
                    pass
            except OSError:
                continue
            self._index_dir = candidate
            return candidate
        log.warning("report bank %s: neither the folder nor a cache_dir is writable; index kept in memory only", self.bank_dir)
        return None

    def _index_candidates(self) -> list[Path]:
        candidates = [self.bank_dir / INDEX_DIRNAME]
        if self.cache_dir is not None:
            tag = hashlib.sha256(str(self.bank_dir.resolve()).encode()).hexdigest()[:16]
            candidates.append(self.cache_dir / f"report-bank-{tag}")
        return candidates

    def _load_persisted(self) -> dict[str, np.ndarray]:
        """Embeddings by text hash from the first readable index made with this encoder (bank folder, then cache)."""
        for index_dir in self._index_candidates():
            if not (index_dir / "manifest.json").is_file():
                continue
            try:
                manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
                if manifest.get("format") != INDEX_FORMAT or manifest.get("encoder_sha256") != self.encoder.model_sha256:
                    continue
                raw = (index_dir / "embeddings.npy").read_bytes()
                if hashlib.sha256(raw).hexdigest() != manifest.get("embeddings_sha256"):
                    continue
                embeddings = np.load(io.BytesIO(raw), allow_pickle=False)
                digests = manifest["text_sha256"]
                if len(digests) != embeddings.shape[0]:
                    continue
            except (OSError, ValueError, KeyError) as exc:
                log.warning("report bank index %s unreadable (%s)", index_dir, exc)
                continue
            return {digest: embeddings[i] for i, digest in enumerate(digests)}
        return {}

    def _persist(self, file_cache: dict) -> None:
        index_dir = self._choose_index_dir()
        if index_dir is None:
            return
        snapshot = self._snapshot
        buffer = io.BytesIO()
        np.save(buffer, snapshot.embeddings)
        embeddings_bytes = buffer.getvalue()
        manifest = {
            "format": INDEX_FORMAT,
            "encoder_sha256": self.encoder.model_sha256,
            "embeddings_sha256": hashlib.sha256(embeddings_bytes).hexdigest(),
            "files": {rel: {"size": e[1], "sha256": e[2]} for rel, e in file_cache.items()},
            "text_sha256": [r.text_sha256 for r in snapshot.reports],
        }
        manifest_bytes = (strict_json.dumps(manifest, "report bank manifest", indent=1, sort_keys=True) + "\n").encode()
        ids_bytes = (json.dumps([r.id for r in snapshot.reports]) + "\n").encode()
        try:
            if (index_dir / "manifest.json").is_file() and (index_dir / "manifest.json").read_bytes() == manifest_bytes:
                return  # identical index already on disk
            _atomic_write(index_dir / "embeddings.npy", embeddings_bytes)
            _atomic_write(index_dir / "ids.json", ids_bytes)
            _atomic_write(index_dir / "manifest.json", manifest_bytes)  # last: it vouches for the other two
        except OSError as exc:
            log.warning("report bank index not written to %s: %s", index_dir, exc)


def _atomic_write(path: Path, data: bytes) -> None:
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}-", delete=False)
    try:
        with handle:
            handle.write(data)
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
