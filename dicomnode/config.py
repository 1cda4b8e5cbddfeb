"""The one typed configuration schema of the node, loaded from TOML and validated with pydantic."""
from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, get_args

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, Strict, TypeAdapter, ValidationError, field_validator,
                      model_validator)

AE_TITLE_PATTERN = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash, no control chars
PIPELINES = ("lge", "cine", "suggestions")


class StrictModel(BaseModel):
    """Every config section refuses keys it does not know and values of the wrong TOML type: `workers = "4"` or
    `enabled = "yes"` is an error, not silently converted (an integer is still accepted where a number is)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


#: a filesystem path: a TOML string (strict mode alone would demand a Path object)
ConfigPath = Annotated[Path, Strict(False)]


def _check_networks(values: list[str]) -> list[str]:
    """Each an IPv4/IPv6 address or network ("10.1.0.0/16"); ValueError naming the bad one."""
    for value in values:
        ipaddress.ip_network(value, strict=False)
    return values


def _check_ae_title(value: str) -> str:
    if value == "*":
        return value
    if not AE_TITLE_PATTERN.match(value) or not value.strip():
        raise ValueError(f"{value!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)")
    return value.strip()


AETitle = Annotated[str, Field(min_length=1, max_length=16)]


class PeerConfig(StrictModel):
    """A calling AE that may associate, optionally bound to source addresses and operations."""

    ae_title: AETitle
    networks: list[str] = Field(default_factory=list, description="source IPs or CIDRs; empty = any")
    operations: list[Literal["echo", "store"]] = Field(default_factory=lambda: ["echo", "store"])
    host: str | None = Field(None, min_length=1, description=(
        "where send_to_sender returns this peer's results (its storage SCP); default: the address it called from"))
    port: int | None = Field(None, ge=1, le=65535, description="port of that SCP; default: the route's sender_port")

    _ae = field_validator("ae_title")(_check_ae_title)

    _networks = field_validator("networks")(_check_networks)


class TLSConfig(StrictModel):
    """DICOM TLS (PS3.15 BCP 195): server certificate, optional client certificates against a CA."""

    enabled: bool = False
    certificate: ConfigPath | None = None
    private_key: ConfigPath | None = None
    ca_certificates: ConfigPath | None = None
    require_client_certificate: bool = False
    minimum_version: Literal["1.2", "1.3"] = "1.2"
    sender_tls: Literal["same", "always", "never"] = Field("same", description=(
        "how a route's send_to_sender returns results: same = over TLS when the node receives over TLS (enabled), "
        "always = over TLS, never = plain DICOM (for senders whose storage SCP does not take TLS)"))
    sender_ca_certificates: ConfigPath | None = Field(None, description=(
        "CA that signed the senders' storage SCP certificates, for results sent back over TLS; default: "
        "ca_certificates (the CA of their client certificates), else the system's CAs"))

    @property
    def sender_over_tls(self) -> bool:
        """Whether send_to_sender returns results over TLS (sender_tls; `same`: when the node receives over TLS)."""
        return self.sender_tls == "always" or (self.sender_tls == "same" and self.enabled)

    @model_validator(mode="after")
    def _complete(self) -> "TLSConfig":
        if self.enabled and (self.certificate is None or self.private_key is None):
            raise ValueError("tls.enabled needs certificate and private_key")
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("require_client_certificate needs ca_certificates")
        return self


class NodeConfig(StrictModel):
    ae_title: AETitle = "DICOMNODE"
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=0, le=65535)
    storage_dir: ConfigPath = Path("var/dicomnode")
    allowed_calling_aes: list[str] = Field(default_factory=lambda: ["*"])
    peers: list[PeerConfig] = Field(default_factory=list, description=(
        "per-peer policy beyond the allow-list: binds the AE titles it lists to networks and operations; a calling "
        "AE title with no entry is not restricted by it (peers_only = true refuses those)"))
    peers_only: bool = Field(False, description="refuse every calling AE title without a [[node.peers]] entry")
    allowed_networks: list[str] = Field(default_factory=list, description=(
        "source IPs or CIDRs that may associate at all, whatever the AE title; empty = any address"))
    min_free_space_mb: int = Field(500, ge=0, description="refuse new instances (0xA700) under this free space")
    max_pdu_size: int = Field(0, ge=0, description="0 = unlimited")
    max_instance_mb: float = Field(
        1024, ge=0, description="refuse (0xA700) a received instance whose data set is larger than this (MB; a "
                                "Deflated data set by its inflated size, which the analysis also bounds by it); the "
                                "bytes past it are not held in memory. 0 = no limit")
    acse_timeout: float = Field(10, gt=0, description="a connection must finish association set-up within this")
    dimse_timeout: float = Field(60, gt=0)
    network_timeout: float = Field(60, gt=0)
    max_associations: int = Field(16, ge=1, description="per receiving process")
    max_associations_per_host: int = Field(
        0, ge=0, description="most associations (set up or still setting up) one source address may hold at once, "
                             "per receiving process; a connection over it is closed unread. 0 = no per-address limit "
                             "(only max_associations)")
    max_unassociated_per_host: int = Field(
        0, ge=0, description="most connections one source address may hold that have not completed their association "
                             "yet (connected, A-ASSOCIATE-RQ not answered; each is closed after acse_timeout), per "
                             "receiving process; a connection over it is closed unread, so that a host flooding the "
                             "port with silent connections cannot take every max_associations slot. A sender opens "
                             "an association in milliseconds, but several senders behind one address (a router, NAT) "
                             "or parallel associations connect at once: leave room for them. 0 = no per-address "
                             "limit (where every max_associations slot is taken, the connection that has gone "
                             "longest without an association is closed for a new one either way)")
    receive_processes: int = Field(
        1, ge=1, le=64, description="processes accepting associations on node.port (SO_REUSEPORT: the kernel "
                                    "spreads new associations over them), so that concurrent associations use "
                                    "several cores; above 1 completion goes through the state database, as with "
                                    "serve --roles")
    non_mr_objects: Literal["keep", "drop"] = Field(
        "keep", description="instances other than MR images routed with a study (SR, SC, PR, KO, PDF, private "
                            "classes, the node's own results routed back): keep them in the spool, not analysed and "
                            "never re-opening a finished study, or acknowledge and drop them")
    tls: TLSConfig = Field(default_factory=TLSConfig)

    _ae = field_validator("ae_title")(_check_ae_title)

    @field_validator("allowed_calling_aes")
    @classmethod
    def _allowed(cls, values: list[str]) -> list[str]:
        return [_check_ae_title(v) for v in values]

    _allowed_networks = field_validator("allowed_networks")(_check_networks)


class InferenceConfig(StrictModel):
    backend: Literal["auto", "onnxruntime", "tensorrt", "torch"] = "auto"
    models_dir: ConfigPath | None = Field(None, description="folder of ONNX models + cards; default: the shipped ones")
    engine_cache_dir: ConfigPath | None = Field(None, description="TensorRT engines; default: <storage_dir>/engines")
    precision: Literal["fp32", "fp16"] = "fp16"
    intra_op_threads: int = Field(0, ge=0, description="0 = let the runtime decide")
    device_id: int = Field(0, ge=0)


class StudiesConfig(StrictModel):
    quiet_seconds: float = Field(30, ge=0)
    max_wait_seconds: float = Field(3600, gt=0, description="force-complete this long after the first instance")
    force_complete_policy: Literal["analyse", "fail"] = "analyse"
    grouping_key: Literal["StudyInstanceUID", "AccessionNumber", "PatientID+StudyDate"] = "StudyInstanceUID"
    use_expected_counts: bool = True
    reanalyse_late_instances: bool = Field(
        True, description="an MR image arriving after the results went out (or the study failed) re-opens the study "
                          "and supersedes its results; false keeps it stored without re-analysis, the study staying at "
                          "its analysed generation with a reason that `dicomnode status` shows (how many instances "
                          "the analysis left out, what it sent); other objects never re-open a study")


class DestinationConfig(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: AETitle
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = Field(None, description="default: node.ae_title")
    tls: bool = False
    tls_ca_certificates: ConfigPath | None = None
    tls_certificate: ConfigPath | None = None
    tls_private_key: ConfigPath | None = None
    send_timeout_seconds: float = Field(30.0, gt=0, le=3600, description=(
        "seconds the destination may take to answer (the association request, each C-STORE, network silence) "
        "before the send is given up and retried; raise it for a slow or remote PACS and large objects"))

    _ae = field_validator("ae_title")(_check_ae_title)

    @field_validator("calling_ae_title")
    @classmethod
    def _calling_ae(cls, value: str | None) -> str | None:
        if value == "*":
            raise ValueError("'*' is not an AE title a node can call with")
        return None if value is None else _check_ae_title(value)


def _matches_every_study(match: dict) -> bool:
    """A [routes.match] table (as written or dumped) without any rule."""
    return match.get("calling_ae") is None and match.get("modality") is None and not match.get("tags")


class RouteMatch(StrictModel):
    calling_ae: str | None = Field(None, description="regex on the sender's AE title")
    modality: str | None = Field(None, description="regex on Modality")
    tags: dict[str, str] = Field(default_factory=dict, description="DICOM keyword -> regex")

    @property
    def matches_every_study(self) -> bool:
        """True without any rule: such a route takes every study that reaches it."""
        return _matches_every_study(self.model_dump())

    @model_validator(mode="after")
    def _regexes(self) -> "RouteMatch":
        for where, pattern in [("calling_ae", self.calling_ae), ("modality", self.modality), *self.tags.items()]:
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"{where}: invalid regex {pattern!r}: {exc}") from exc
        from pydicom.datadict import tag_for_keyword

        for keyword in self.tags:
            if tag_for_keyword(keyword) is None:
                raise ValueError(f"tags: {keyword!r} is not a DICOM keyword")
        return self


class RouteConfig(StrictModel):
    """First matching rule wins; a study no rule matches is stored but not analysed."""

    name: str = Field(min_length=1)
    match: RouteMatch = Field(default_factory=RouteMatch)
    pipelines: list[Literal["lge", "cine", "suggestions"]] = Field(default_factory=lambda: list(PIPELINES))
    destinations: list[str] = Field(default_factory=list)
    send_to_sender: bool = False
    sender_port: int | None = Field(None, ge=1, le=65535, description="port of the sender's SCP for send_to_sender")

    @model_validator(mode="after")
    def _sender_port_given(self) -> "RouteConfig":
        if self.send_to_sender and self.sender_port is None:
            raise ValueError("send_to_sender = true needs sender_port (the port of the sender's storage SCP): "
                             "without it nothing is sent back")
        return self


class DispatchConfig(StrictModel):
    max_attempts: int = Field(24, ge=1, description=(
        "attempts of a send before it is a dead letter; with the default back-off a destination may be down about "
        "4 hours (retry_window_seconds) before its results are, so that a routine PACS maintenance window is "
        "ridden out"))
    initial_backoff_seconds: float = Field(5, gt=0)
    max_backoff_seconds: float = Field(900, gt=0)
    backoff_factor: float = Field(2.0, ge=1)
    resume_dead_letters: bool = Field(False, description=(
        "every resume_check_seconds, C-ECHO each destination holding dead letters whose last error was transient "
        "(connection refused, timeout, 0xA7xx) and re-queue them once it answers (what `dicomnode retry --all "
        "--destination NAME` does by hand)"))
    resume_check_seconds: float = Field(300, gt=0, description="how often resume_dead_letters C-ECHOes (seconds)")

    @property
    def retry_window_seconds(self) -> float:
        """Seconds from a send's first failed attempt to its last (the `max_attempts`-th), i.e. how long a destination
        may be down before what is sent to it becomes a dead letter: the sum of the back-off delays (dispatch
        .backoff_seconds) between the attempts, each initial_backoff_seconds x backoff_factor^(n-1), capped at
        max_backoff_seconds."""
        total, delay = 0.0, min(self.initial_backoff_seconds, self.max_backoff_seconds)
        for _ in range(1, self.max_attempts):
            total += delay
            delay = min(delay * self.backoff_factor, self.max_backoff_seconds)
        return total


class RetentionConfig(StrictModel):
    days: float = Field(30, gt=0, description="purge finished studies and their results after this many days (never "
                                              "one with undelivered results)")
    purge_interval_minutes: float = Field(60, gt=0)
    emergency_free_space_mb: int = Field(1000, ge=0, description="purge oldest finished studies under this")


class LGEConfig(StrictModel):
    large_burden_percent: float = Field(15.0, gt=0, le=100)
    large_burden_comparator: Literal[">=", ">"] = ">="
    nsd_n: Literal[2, 3, 5, 6] = 5
    myocardial_density_g_per_ml: float = Field(1.05, gt=0)
    threshold_methods: Literal["validated", "always"] = Field(
        "validated", description="n-SD / FWHM: 'validated' reports a method's %LGE only where the LGE model card "
                                 "shows it agreeing with expert %LGE (r >= 0.8) on the model's own myocardium, else "
                                 "'not applicable' with the measured r; 'always' computes it wherever the input allows")


class CineConfig(StrictModel):
    bsa_formula: Literal["mosteller", "dubois"] = "mosteller"
    myocardial_density_g_per_ml: float = Field(1.05, gt=0)
    refine_ed_es: bool = Field(True, description="measure ED and ES with the wider cine_unet_refine model where it is "
                               "installed (every other phase with cine_unet)")


class SuggestionsConfig(StrictModel):
    enabled: bool = True
    bank_dir: ConfigPath | None = Field(None, description="folder of prior reports; default: the shipped demo bank")
    top_k: int = Field(3, ge=1, le=50)
    min_similarity: float = Field(0.2, ge=-1, le=1)
    refresh_minutes: float = Field(10, gt=0)


class AnalysisConfig(StrictModel):
    workers: int = Field(1, ge=1, le=16)
    lge: LGEConfig = Field(default_factory=LGEConfig)
    cine: CineConfig = Field(default_factory=CineConfig)
    suggestions: SuggestionsConfig = Field(default_factory=SuggestionsConfig)
    report_pdf: bool = True
    secondary_capture: bool = False
    rejection_note: bool = Field(True, description=(
        "a re-analysis also sends an IHE IOCM Rejection Note (Key Object Selection, (113001, DCM, \"Rejected for "
        "Quality Reasons\")) listing the SEG, SR, PDF and SC of the analyses it supersedes, to the same destinations: "
        "an IOCM-aware PACS then hides them from the reading view and keeps them for audit. false: the earlier results "
        "stay visible beside the new ones until deleted there by hand"))


class LoggingConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = False
    show_patient_data: bool = Field(False, description="debug only: put patient names/IDs in logs")
    file: ConfigPath | None = Field(None, description="also write every line to this file (reopened after logrotate "
                                                      "moves it: config/dicomnode.logrotate)")
    stderr: bool = Field(True, description="write to stderr (under systemd: the journal); false with `file` writes "
                                           "the file only")
    library_debug: bool = Field(False, description="debug only: the libraries' own log lines (pynetdicom PDUs, its "
                                                   "connection errors at ERROR, highdicom) at their own levels")


class ObservabilityConfig(StrictModel):
    metrics_enabled: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9112, ge=0, le=65535)


class StateConfig(StrictModel):
    """Where the shared state lives, and how processes sharing it hand work over (design.md: [state])."""

    url: str | None = Field(None, description="SQLAlchemy-style URL: sqlite:///path or postgresql://user@host/db "
                                              "(libpq: ?host=/socket/dir for a Unix socket); default: "
                                              "<storage_dir>/state.sqlite3")
    lease_seconds: float = Field(60, gt=0, description="a claimed study or outbox item is released this long after "
                                                       "its process's last heartbeat")
    heartbeat_seconds: float = Field(10, gt=0, description="how often each process renews its heartbeat and leases")
    poll_seconds: float = Field(1.0, gt=0, description="how often workers, the completion scheduler and the "
                                                       "dispatcher look for new work when run as separate roles")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "postgresql://", "postgres://",
                                                       "postgresql+psycopg://")):
            raise ValueError(f"{value!r}: expected sqlite:///path or postgresql://user@host/db")
        return value

    @model_validator(mode="after")
    def _lease_outlives_heartbeat(self) -> "StateConfig":
        if self.lease_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("lease_seconds must be at least twice heartbeat_seconds, or live workers lose their claims")
        return self


def with_default_route(data):
    """No [[routes]]: one route named "default", every pipeline, every configured destination (design.md)."""
    if not isinstance(data, dict) or "routes" in data:
        return data
    destinations = data.get("destinations")
    names = [d.get("name") if isinstance(d, dict) else getattr(d, "name", None)
             for d in (destinations if isinstance(destinations, list) else [])]
    return {**data, "routes": [{"name": "default", "destinations": [n for n in names if isinstance(n, str)]}]}


class CrossReferenceError(ValueError):
    """Rules between sections that the fields alone cannot check; `problems` lists (key path, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))


def _entries(data: dict, key: str) -> list[tuple[int, dict]]:
    """(position, table) of each [[key]] entry that is a table (anything else is a field error of its own)."""
    items = data.get(key)
    if not isinstance(items, list):
        return []
    return [(position, item) for position, item in enumerate(items) if isinstance(item, dict)]


def _named(entries: list[tuple[int, dict]]) -> list[tuple[int, str]]:
    return [(position, item["name"]) for position, item in entries if isinstance(item.get("name"), str)]


def _duplicate_names(key: str, entries: list[tuple[int, dict]], why: str = "") -> list[tuple[str, str]]:
    first: dict[str, int] = {}
    problems = []
    for position, name in _named(entries):
        if name in first:
            problems.append((f"{key}[{position}].name", f"duplicate name {name!r} ({key}[{first[name]}] has it "
                                                        f"too){why}"))
        first.setdefault(name, position)
    return problems


def _route_paths(routes: list[tuple[int, dict]]) -> dict[int, str]:
    """routes[name] where the name says which route it is, else routes[position]."""
    names = [name for _, name in _named(routes)]
    paths = {}
    for position, route in routes:
        name = route.get("name")
        unique = isinstance(name, str) and name and names.count(name) == 1
        paths[position] = f"routes[{name}]" if unique else f"routes[{position}]"
    return paths


def _shadowing_routes(routes: list[tuple[int, dict]]) -> list[tuple[str, str]]:
    """A route without match rules takes every study: the routes after it would never be used."""
    paths = _route_paths(routes)
    problems = []
    for index, (position, route) in enumerate(routes[:-1]):
        match = route.get("match", {})
        if isinstance(match, dict) and _matches_every_study(match):
            later = [name for _, name in _named(routes[index + 1:])]
            problems.append((f"{paths[position]}.match", f"no rules, so this route takes every study and the "
                             f"route(s) after it {later} are never used (the first matching route wins): give it "
                             "match rules or move it last"))
    return problems


def _unknown_destinations(routes: list[tuple[int, dict]], names: list[str]) -> list[tuple[str, str]]:
    configured = f"configured: {list(dict.fromkeys(names))}" if names else "no [[destinations]] configured"
    paths = _route_paths(routes)
    problems = []
    for position, route in routes:
        wanted = route.get("destinations")
        unknown = [d for d in wanted if isinstance(d, str) and d not in names] if isinstance(wanted, list) else []
        if unknown:
            problems.append((f"{paths[position]}.destinations", f"unknown destination(s) {unknown} ({configured})"))
    return problems


def cross_reference_problems(data: dict) -> list[tuple[str, str]]:
    """(key path, message) for every rule between entries: duplicate destination or route names, a route without
    match rules before others, a route naming an unknown destination. Works on a config as written (its fields may be
    invalid: what cannot be read is left to the field errors) and on a validated one dumped to a dict."""
    if not isinstance(data, dict):
        return []
    data = with_default_route(data)
    destinations, routes = _entries(data, "destinations"), _entries(data, "routes")
    return (_duplicate_names("destinations", destinations)
            + _duplicate_names("routes", routes, ": a route's name is how the log and summary.json (`route`) say "
                                                 "which route a study took")
            + _shadowing_routes(routes)
            + _unknown_destinations(routes, [name for _, name in _named(destinations)]))


class Config(StrictModel):
    node: NodeConfig = Field(default_factory=NodeConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    studies: StudiesConfig = Field(default_factory=StudiesConfig)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(
        default_factory=lambda: [RouteConfig(name="default")],
        description="ordered; without [[routes]] one default route analyses every study with every pipeline and "
                    "sends to every destination",
    )
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    #: node.storage_dir as written where it was relative, and the working directory resolve_paths took it against
    _relative_storage_dir: tuple[str, Path] | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _default_route(cls, data):
        return with_default_route(data)

    @model_validator(mode="after")
    def _cross_references(self) -> "Config":
        problems = cross_reference_problems(self.model_dump())
        if problems:
            raise CrossReferenceError(problems)
        return self

    def destination(self, name: str) -> DestinationConfig:
        for destination in self.destinations:
            if destination.name == name:
                return destination
        raise KeyError(f"no destination named {name!r}; configured: {[d.name for d in self.destinations]}")

    def peer(self, calling_ae: str) -> PeerConfig | None:
        """The [[node.peers]] entry of a calling AE title, or None."""
        for peer in self.node.peers:
            if peer.ae_title == calling_ae:
                return peer
        return None

    def resolve_paths(self, base: Path) -> "Config":
        """Make relative paths absolute against `base` (the working directory, as systemd's WorkingDirectory sets it)."""
        data = self.model_copy(deep=True)
        if not data.node.storage_dir.is_absolute():
            data._relative_storage_dir = (str(data.node.storage_dir), Path(base))
            data.node.storage_dir = (base / data.node.storage_dir).resolve()
        return data

    def storage_dir_origin(self) -> str:
        """How node.storage_dir was found, for messages: "node.storage_dir 'var/dicomnode', relative, resolved against
        the working directory /srv" where it was written relative (resolve_paths), else "node.storage_dir"."""
        if self._relative_storage_dir is None:
            return "node.storage_dir"
        written, base = self._relative_storage_dir
        return f"node.storage_dir {written!r}, relative, resolved against the working directory {base}"


#: settings a running node takes over on SIGHUP (dotted prefixes); every other change needs a restart
RELOADABLE = ("node.allowed_calling_aes", "node.peers", "node.peers_only", "node.allowed_networks",
              "node.max_associations_per_host", "node.max_unassociated_per_host", "node.max_instance_mb",
              "node.min_free_space_mb", "node.non_mr_objects", "studies",
              "dispatch", "retention", "routes", "destinations")


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def changed_settings(old: Config, new: Config) -> list[str]:
    """Dotted keys whose value differs between two configs (lists compared whole), sorted."""
    before, after = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def reloaded_config(old: Config, new: Config) -> Config:
    """What a running node uses after SIGHUP: `new`'s values under RELOADABLE, `old`'s everywhere else."""
    node_keys = [key.split(".", 1)[1] for key in RELOADABLE if key.startswith("node.")]
    sections = [key for key in RELOADABLE if "." not in key]
    node = old.node.model_copy(update={key: getattr(new.node, key) for key in node_keys})
    return old.model_copy(update={"node": node, **{key: getattr(new, key) for key in sections}})


def needs_restart(old: Config, new: Config) -> list[str]:
    """The changed keys a SIGHUP reload cannot apply (not under RELOADABLE)."""
    return [key for key in changed_settings(old, new)
            if not any(key == prefix or key.startswith(prefix + ".") for prefix in RELOADABLE)]


def _tls_off_warnings(config: Config) -> list[str]:
    """TLS certificate/key/CA files that are set where TLS is off: the admin probably believes the link encrypted."""
    warnings = []
    tls = config.node.tls
    files = [key for key in ("certificate", "private_key", "ca_certificates") if getattr(tls, key) is not None]
    used_for_sender = tls.sender_tls == "always" and any(r.send_to_sender for r in config.routes)
    if files and not tls.enabled and not used_for_sender:
        warnings.append(f"node.tls: {', '.join(files)} set but enabled = false: the node receives plain DICOM, "
                        "unencrypted, and these files are not used (set enabled = true, or remove them)")
    for destination in config.destinations:
        files = [key for key in ("tls_ca_certificates", "tls_certificate", "tls_private_key")
                 if getattr(destination, key) is not None]
        if files and not destination.tls:
            warnings.append(f"destinations[{destination.name}]: {', '.join(files)} set but tls = false: results go "
                            "to it unencrypted and these files are not used (set tls = true, or remove them)")
    return warnings


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _open_node_warnings(config: Config) -> list[str]:
    """A node reachable from other machines that any host may associate with (no allowed_networks, no peers_only),
    and [[node.peers]] bindings that any other AE title bypasses."""
    node = config.node
    if node.allowed_networks or node.peers_only:
        return []
    warnings = []
    if not _is_loopback(node.host) and "*" in node.allowed_calling_aes:
        warnings.append(f"node: listening on {node.host} with allowed_calling_aes = [\"*\"] and no allowed_networks: "
                        "any host that reaches the port may store studies and send_to_sender returns results to it "
                        "(list the senders' networks in node.allowed_networks, or set node.peers_only = true)")
    elif not _is_loopback(node.host):
        unbound = [ae for ae in node.allowed_calling_aes if config.peer(ae) is None or not config.peer(ae).networks]
        if unbound:
            warnings.append(f"node: allowed_calling_aes {unbound} are not bound to any network ([[node.peers]] "
                            "networks) and node.allowed_networks is empty: any host may call with those AE titles")
    if node.peers and "*" in node.allowed_calling_aes:
        warnings.append("node.peers: with allowed_calling_aes = [\"*\"] a peer's networks and operations restrict only "
                        "its own AE title; any other AE title is accepted from anywhere (set node.peers_only = true "
                        "or node.allowed_networks)")
    return warnings


def _sender_tls_warnings(config: Config) -> list[str]:
    """How send_to_sender returns results where it matters (node.tls.sender_tls): over TLS by default when the node
    receives over TLS, which a sender whose storage SCP takes plain DICOM cannot receive (said unless sender_tls was
    chosen), verified against sender_ca_certificates / ca_certificates (said when neither is set: the system's CAs
    must then have signed the senders' SCPs); and in clear where sender_tls = "never" on a TLS node."""
    tls = config.node.tls
    routes = [r.name for r in config.routes if r.send_to_sender]
    if not routes:
        return []
    warnings = []
    if tls.enabled and tls.sender_tls == "never":
        warnings.append(f"routes{routes}: send_to_sender with node.tls.sender_tls = \"never\": the node receives over "
                        "TLS but sends results back to the senders unencrypted")
    if not tls.sender_over_tls:
        return warnings
    if tls.enabled and "sender_tls" not in tls.model_fields_set:
        warnings.append(f"routes{routes}: send_to_sender with node.tls.enabled: results go back over TLS "
                        "(node.tls.sender_tls = \"same\"), so a sender whose storage SCP takes only plain DICOM gets "
                        "nothing back (each result a dead letter after the handshake fails); set node.tls.sender_tls "
                        "= \"never\" for such senders, or \"same\" to keep TLS and silence this")
    if tls.sender_ca_certificates is None and tls.ca_certificates is None:
        warnings.append(f"routes{routes}: send_to_sender over TLS and no node.tls.sender_ca_certificates or "
                        "ca_certificates: results go back over TLS, and the senders' storage SCPs must present "
                        "certificates the system's CAs trust, else nothing is sent back (never in clear)")
    return warnings


#: a quiet period under this is a warning: senders pause between instances (association set-up, reconstruction)
MIN_SENSIBLE_QUIET_SECONDS = 2.0


def config_warnings(config: Config) -> list[str]:
    """Valid but probably unintended settings (`dicomnode config check` prints them): unused destinations,
    routes that send nowhere, TLS files set where TLS is off, a free-space floor above the purge threshold, a quiet
    period of (almost) nothing, a force-complete wait no longer than the quiet period."""
    used = {name for route in config.routes for name in route.destinations}
    warnings = [f"destinations[{d.name}]: used by no route, so no result is ever sent to it"
                for d in config.destinations if d.name not in used]
    warnings += _tls_off_warnings(config)
    warnings += _open_node_warnings(config)
    if config._relative_storage_dir is not None:
        warnings.append(f"{config.storage_dir_origin()} to {config.node.storage_dir}: `serve`, `status` and `retry` "
                        "started from another folder would each use another storage (and state): give an absolute "
                        "path")
    warnings += _sender_tls_warnings(config)
    warnings += [f"node.allowed_calling_aes: {title!r} has lower-case letters: AE titles are case-sensitive, so a "
                 f"scanner calling as {title.upper()!r} is refused; write the title exactly as the sender's "
                 f"configuration shows it" for title in config.node.allowed_calling_aes if title != title.upper()]
    if not config.destinations and not any(route.send_to_sender for route in config.routes):
        # valid (the embedded defaults, `dicomnode demo`: a node that keeps its results), but a forgotten or
        # misplaced [[destinations]] table looks the same (break46b #5)
        warnings.append("no [[destinations]] and no route with send_to_sender: every result is stored on this node "
                        "and NEVER SENT (a local-only node); to send results to a PACS add a [[destinations]] table "
                        "(name, ae_title, host, port)")
    else:
        warnings += [f"routes[{r.name}]: no destinations and send_to_sender off: its results are stored, never sent"
                     for r in config.routes if not r.destinations and not r.send_to_sender]
    if not config.node.max_associations_per_host and not _is_loopback(config.node.host):
        warnings.append(f"node.max_associations_per_host = 0 with node.max_associations = "
                        f"{config.node.max_associations}: one source address may hold every association slot (a "
                        f"scanner stuck in a retry loop, or a host flooding the port), refusing all other senders "
                        f"until its associations end; set node.max_associations_per_host (e.g. 4) to the most "
                        f"associations one sender opens at once (and node.max_unassociated_per_host to cap the "
                        f"connections one address may hold before they are associated)")
    if config.node.min_free_space_mb > config.retention.emergency_free_space_mb:
        warnings.append(f"node.min_free_space_mb ({config.node.min_free_space_mb}) is above "
                        f"retention.emergency_free_space_mb ({config.retention.emergency_free_space_mb}): between the "
                        f"two the node refuses every instance (0xA700) and purges nothing to make room")
    studies = config.studies
    if studies.quiet_seconds < MIN_SENSIBLE_QUIET_SECONDS:
        warnings.append(f"studies.quiet_seconds ({studies.quiet_seconds:g}) is under {MIN_SENSIBLE_QUIET_SECONDS:g} s: "
                        f"any pause of the sender between two instances completes the study, so a study still "
                        f"arriving is analysed in parts (each later image re-opens it and analyses it again)")
    if studies.max_wait_seconds <= studies.quiet_seconds:
        outcome = ("analysed" if studies.force_complete_policy == "analyse"
                   else "failed (force_complete_policy = \"fail\")")
        warnings.append(f"studies.max_wait_seconds ({studies.max_wait_seconds:g}) is not longer than "
                        f"studies.quiet_seconds ({studies.quiet_seconds:g}): every study is force-completed "
                        f"{studies.max_wait_seconds:g} s after its first instance and {outcome} before it can fall "
                        f"quiet, so a study still arriving is cut short")
    return warnings


class ConfigError(Exception):
    """A config file that cannot be used; `problems` lists (key path, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def _key_path(location: tuple) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path or "(root)"


def _model_at(location: tuple) -> type[BaseModel] | None:
    """The config model (section, table or array-of-tables item) that holds the key at `location`, or None where the
    path leads to no model."""
    model: type[BaseModel] | None = Config
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        candidates = [field.annotation]
        model = None
        while candidates:  # through list[...], X | None and Annotated[...] to the model
            annotation = candidates.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
                break
            candidates.extend(get_args(annotation))
    return model


def _model_of(annotation) -> tuple[type[BaseModel] | None, bool]:
    """The config model an annotation holds (through list[...], X | None and Annotated[...]), and whether it holds a
    list of them (an array of tables in TOML); (None, False) for a plain value."""
    candidates, is_list = [(annotation, False)], False
    while candidates:
        annotation, is_list = candidates.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation, is_list
        inner_list = is_list or getattr(annotation, "__origin__", None) is list
        candidates.extend((arg, inner_list) for arg in get_args(annotation))
    return None, False


def _tables(model: type[BaseModel] | None = None, prefix: str = "") -> list[tuple[str, bool, type[BaseModel]]]:
    """Every table of the config schema: (its TOML name such as "studies" or "node.peers", whether it is an array of
    tables, its model), the top level ("", False, Config) first."""
    model = model or Config
    tables = [(prefix, False, model)] if not prefix else []
    for name, field in model.model_fields.items():
        inner, is_list = _model_of(field.annotation)
        if inner is not None:
            path = f"{prefix}.{name}" if prefix else name
            tables.append((path, is_list, inner))
            tables += _tables(inner, path)
    return tables


def _table_header(name: str, is_list: bool) -> str:
    return f"[[{name}]]" if is_list else f"[{name}]"


def _unknown_key(location: tuple) -> str:
    """ "unknown key", with the closest known keys of its table (difflib) where one is near (a typo's fix), else the
    other tables that have a key of that name (a key put in the wrong section, e.g. quiet_seconds under [node])."""
    model = _model_at(location)
    if model is None or not location or not isinstance(location[-1], str):
        return "unknown key"
    close = difflib.get_close_matches(location[-1], list(model.model_fields), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    elsewhere = [(name, is_list) for name, is_list, other in _tables()
                 if other is not model and location[-1] in other.model_fields
                 and _model_of(other.model_fields[location[-1]].annotation)[0] is None]
    if not elsewhere:
        return "unknown key"
    where = " or ".join(f"{name}.{location[-1]} (under {_table_header(name, is_list)})" if name
                        else f"{location[-1]} (at the top of the file, before any table)"
                        for name, is_list in elsewhere)
    return f"unknown key in this table; did you mean {where}?"


def _list_message(error: dict) -> str:
    """A list expected, something else written: a single [table] where an array of tables is meant, or a string
    where a list of strings is."""
    location, given = tuple(error["loc"]), error.get("input")
    model = _model_at(location)
    field = model.model_fields.get(location[-1]) if model is not None and isinstance(location[-1], str) else None
    inner, is_list = _model_of(field.annotation) if field is not None else (None, False)
    if isinstance(given, dict) and inner is not None and is_list:
        name = ".".join(str(part) for part in location if isinstance(part, str))
        return (f"a single table where a list of tables is expected: write [[{name}]] (double brackets) above each "
                f"entry, not [{name}]")
    if isinstance(given, str):
        return f"a string where a list is expected: write [{json.dumps(given)}]"
    return error["msg"]


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return _unknown_key(tuple(error["loc"]))
    if error["type"] == "value_error":  # a validator's own words, without pydantic's "Value error, "
        return str(error["ctx"]["error"])
    if error["type"] == "list_type":
        return _list_message(error)
    message = error["msg"]
    if error["type"] in ("int_type", "float_type", "bool_type") and isinstance(error.get("input"), str):
        message += f" (got the string {error['input']!r}: write the value without quotes)"
    if error["type"] in ("string_too_long", "string_too_short") and isinstance(error.get("input"), str):
        message += f" (got {error['input']!r}, {len(error['input'])} characters)"
    return message


def parse_config(data: dict, source: str = "<config>") -> Config:
    """Validate a config as written; a ConfigError lists every field error, then every cross-reference problem
    (those are checked on the data as written, so field errors elsewhere do not hide them)."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [(_key_path(error["loc"]), _message(error)) for error in exc.errors()
                    if not isinstance(error.get("ctx", {}).get("error"), CrossReferenceError)]
        raise ConfigError(source, problems + cross_reference_problems(data)) from None


def read_config(path: str | os.PathLike) -> dict:
    """The TOML file as a dict; a ConfigError when it cannot be read or is not TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), [("(file)", "not found")]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), [("(file)", "is a folder, not a TOML file")]) from None
    except PermissionError:
        raise ConfigError(str(path), [("(file)", "permission denied: this user cannot read it")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [("(file)", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [("(syntax)", str(exc))]) from None


def load_config(path: str | os.PathLike | None) -> Config:
    """Load a TOML config; None gives the embedded defaults. Relative paths (node.storage_dir, whose default
    "var/dicomnode" is one) resolve against the working directory (Config.storage_dir_origin says so)."""
    if path is None:
        return Config().resolve_paths(Path.cwd())
    return parse_config(read_config(path), str(path)).resolve_paths(Path.cwd())


class CheckedConfig(NamedTuple):
    """`config check`'s view of a config file: `config` holds the sections in `valid_sections` as written and
    defaults for the others (cross-references unchecked), `problems` every schema problem."""

    config: Config
    problems: list[tuple[str, str]]
    valid_sections: frozenset[str]


def _sections_that_validate(data: dict) -> dict[str, object]:
    """Each top-level section of `data` that validates on its own, validated."""
    sections = {}
    for name, field in Config.model_fields.items():
        if name in data:
            try:
                sections[name] = TypeAdapter(field.annotation).validate_python(data[name])
            except ValidationError:
                continue
    return sections


def check_config(path: str | os.PathLike) -> CheckedConfig:
    """Validate a config file without stopping at its first invalid section, so that the machine checks can still
    run on the sections that are valid; a ConfigError only when the file cannot be read or is not TOML. Relative paths
    resolve against the working directory, as load_config's."""
    data = read_config(path)
    try:
        return CheckedConfig(parse_config(data, str(path)).resolve_paths(Path.cwd()), [],
                             frozenset(Config.model_fields))
    except ConfigError as exc:
        problems = exc.problems
    data = with_default_route(data)
    sections = _sections_that_validate(data)
    valid = frozenset(name for name in Config.model_fields if name in sections or name not in data)
    return CheckedConfig(Config.model_construct(**sections).resolve_paths(Path.cwd()), problems, valid)
