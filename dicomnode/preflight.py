"""Pre-flight checks of a valid config against the machine it runs on: the files and models it names exist.

`dicomnode config check` reports these problems beside the schema's, and `dicomnode serve` refuses to start on any
of them, so that a wrong path is found when the admin changes the config, not as a study that ends with no results.
Certificates are read by the TLS context builders. Each model a routed pipeline needs is opened once on the CPU
(its card parsed, its ONNX graph read by ONNX Runtime without optimisation, about 0.1 s) so that a truncated or
replaced file is named here; nothing is compiled for a GPU.
"""
from __future__ import annotations

import errno
import os
import pwd
import socket
import tempfile
from collections.abc import Collection
from pathlib import Path

import json

from dicomnode.analysis.cine import MODEL_NAME as CINE_MODEL
from dicomnode.analysis.cine import CineModelSpec
from dicomnode.analysis.lge import MODEL_NAME as LGE_MODEL
from dicomnode.analysis.lge import LGEDecision, LGEInputSpec
from dicomnode.analysis.report_bank import scan_bank
from dicomnode.analysis.suggestions import REPORT_BANK_DIR, TEXT_ENCODER_DIR
from dicomnode.config import PIPELINES, Config
from dicomnode.inference import probe
from dicomnode.inference.runtime import Runtime, RuntimeErrorNoModel, shipped_models_dir
from dicomnode.inference.shapes import onnx_input_spec
from dicomnode.net.scp import probe_listen
from dicomnode.net.tls import client_tls_problems, expiry_warnings, private_key_exposure, server_tls_problems
from dicomnode.spool import StorageLock, shared_spool_problem
from dicomnode.state import state_schema_problem

#: models each pipeline loads from [inference] models_dir (name -> name.onnx + name.json)
PIPELINE_MODELS = {"lge": (LGE_MODEL,), "cine": (CINE_MODEL,)}


def _writable_folder(key: str, folder: Path, what: str = "") -> list[tuple[str, str]]:
    """A problem when this user could not create files in `folder` (or create it, when it does not exist yet)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [(key, f"{what}{folder}: {existing} is not a folder")]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [(key, f"{what}{folder}: this user ({_user()}) cannot write in {existing}")]
    try:  # the permission bits do not tell everything (root, read-only mounts, /proc): create and remove a folder
        os.rmdir(tempfile.mkdtemp(prefix=".dicomnode-check-", dir=existing))
    except OSError as error:
        return [(key, f"{what}{folder}: cannot create anything in {existing} ({error.strerror or error})")]
    return []


def _not_a_folder(path: Path) -> str:
    return f"{path} is a file, not a folder" if path.exists() else f"folder {path} does not exist"


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


Problem = tuple[str, str]


def _storage(config: Config) -> list[Problem]:
    return _writable_folder("node.storage_dir", Path(config.node.storage_dir))


def _shared_spool(config: Config) -> list[Problem]:
    """With a `[state] url`: node.storage_dir must be the spool that state indexes (spool.SPOOL_ID_FILE, recorded
    in the state by the first `serve`), checked where the state can be reached within a few seconds."""
    if config.state.url is None:  # the default state lives in storage_dir: it is its spool
        return []
    problem = shared_spool_problem(config.state.url, config.node.storage_dir)
    return [] if problem is None else [("node.storage_dir", problem)]


def _state_schema(config: Config) -> list[Problem]:
    """With a `[state] url` (not SQLite): a database `serve` could not open (a host that does not resolve or does
    not answer, a user refused) or a schema it would refuse (none or older: `dicomnode state upgrade`; newer:
    written by a newer dicomnode), read without changing it."""
    if config.state.url is None:
        return []
    problem = state_schema_problem(config.state.url)
    return [] if problem is None else [("state.url", problem)]


def _listen_address(config: Config) -> list[Problem]:
    """A `node.host` this machine cannot resolve to an address to listen on (a typo, a name DNS does not know)."""
    try:
        socket.getaddrinfo(config.node.host, config.node.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        return [("node.host", f"{config.node.host!r} does not resolve to an address on this machine ({reason}): "
                              "use an address of one of its interfaces, or \"0.0.0.0\" for all")]
    return []


def _log_folder(config: Config) -> list[Problem]:
    if config.logging.file is None:
        return []
    return _writable_folder("logging.file", Path(config.logging.file).parent, "the log file's folder ")


def _server_tls(config: Config) -> list[Problem]:
    """Every node.tls file that cannot be used (certificate and key, CA file), each with its key path."""
    if not config.node.tls.enabled:
        return []
    return server_tls_problems(config.node.tls)


def _destination_tls(config: Config) -> list[Problem]:
    return [problem for destination in config.destinations for problem in client_tls_problems(destination)]


def _backend(config: Config) -> list[Problem]:
    backend = config.inference.backend
    if backend == "auto":
        return []
    here = probe.available_backends(config.inference.device_id)
    if backend in here:
        return []
    found = ", ".join(f"{name} ({what})" for name, what in here.items())
    return [("inference.backend", f"{backend!r} cannot run on this machine (available here: {found}; 'auto' picks "
                                  "the best of them)")]


def _models_dir(config: Config) -> list[Problem]:
    folder = config.inference.models_dir
    if folder is not None and not Path(folder).is_dir():
        return [("inference.models_dir", _not_a_folder(Path(folder)))]
    return []


def _routed_pipelines(config: Config) -> set[str]:
    return {name for route in config.routes for name in route.pipelines} if config.routes else set(PIPELINES)


def _pipeline_models(config: Config) -> list[Problem]:
    if _models_dir(config):  # said once, by _models_dir
        return []
    runtime = Runtime(config.inference, storage_dir=config.node.storage_dir)
    problems = []
    for pipeline in sorted(_routed_pipelines(config)):
        for model in PIPELINE_MODELS.get(pipeline, ()):
            key = f"routes (pipeline {pipeline})"
            if not runtime.available(model):
                problems.append((key, f"model {model!r} is not installed in {runtime.models_dir} (needs {model}.onnx "
                                      f"and {model}.json)"))
                continue
            problems += [(key, problem) for problem in _model_problems(runtime, model, CARD_READERS.get(model))]
    if "suggestions" in _routed_pipelines(config) and config.analysis.suggestions.enabled:
        encoder = runtime.models_dir / TEXT_ENCODER_DIR / "model.onnx"
        if not encoder.is_file():
            problems.append(("routes (pipeline suggestions)", f"text encoder not installed ({encoder} missing)"))
        elif (problem := _onnx_problem(encoder)) is not None:
            problems.append(("routes (pipeline suggestions)", problem))
    return problems


#: what each pipeline reads from its model's card, so that a card it could not use is named before a study needs it
CARD_READERS = {
    LGE_MODEL: lambda card: (LGEInputSpec.from_card(card), LGEDecision.from_card(card)),
    CINE_MODEL: CineModelSpec.from_card,
}


def _onnx_problem(path: Path) -> str | None:
    """Why ONNX Runtime cannot read the graph at `path` (truncated, not ONNX, unsupported), or None."""
    try:
        onnx_input_spec(path)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types for a bad file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{path} cannot be read as an ONNX model ({first_line}); reinstall it (see README, Models)"
    return None


def _model_problems(runtime: Runtime, name: str, read_card=None) -> list[str]:
    """Problems opening model `name` of `runtime`'s models_dir: its card (JSON, and what the pipeline reads from it,
    `read_card`) and its ONNX graph."""
    card_path = runtime.models_dir / f"{name}.json"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        if not isinstance(card, dict):
            raise ValueError("not a JSON object")
        if read_card is not None:
            read_card(card)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
        return [f"model card {card_path} is not usable: {exc}"]
    problem = _onnx_problem(runtime.models_dir / f"{name}.onnx")
    return [] if problem is None else [problem]


def _report_bank(config: Config) -> list[Problem]:
    suggestions = config.analysis.suggestions
    if "suggestions" not in _routed_pipelines(config) or not suggestions.enabled or suggestions.bank_dir is None:
        return []
    return [] if Path(suggestions.bank_dir).is_dir() else [("analysis.suggestions.bank_dir",
                                                           _not_a_folder(Path(suggestions.bank_dir)))]


#: (config sections a check reads, whether only the analyse role needs it, the check)
CHECKS = (
    (("node",), False, _storage),
    (("node", "state"), False, _shared_spool),
    (("state",), False, _state_schema),
    (("node",), False, _listen_address),
    (("logging",), False, _log_folder),
    (("node",), False, _server_tls),
    (("destinations",), False, _destination_tls),
    (("inference",), True, _backend),
    (("inference",), True, _models_dir),
    (("inference", "routes", "analysis"), True, _pipeline_models),
    (("routes", "analysis"), True, _report_bank),
)


#: the checks of the machine's present state rather than of the config (a full disk, a state database or DNS that
#: is down): `config check --no-probe` (systemd's ExecReload) leaves them out, since a reload of `retention.*` or
#: `node.min_free_space_mb` is what gets a node out of such trouble
PROBES = (_storage, _shared_spool, _state_schema, _listen_address, _log_folder)


def preflight_problems(config: Config, models: bool = True,
                       sections: Collection[str] | None = None, probe: bool = True) -> list[Problem]:
    """(config key path, what is wrong) for every file, folder or model the config needs and the machine lacks;
    `models` False (a process without the analyse role) skips the models and the report bank; `sections`, when
    given, runs only the checks whose config sections are all in it (the sections of an invalid config that
    validated); `probe` False leaves out PROBES (writable storage and log folders, the shared spool, the state
    database, node.host's address)."""
    problems: list[Problem] = []
    for needs, analyse_only, check in CHECKS:
        if (models or not analyse_only) and (sections is None or set(needs) <= set(sections)) \
                and (probe or check not in PROBES):
            problems += check(config)
    return problems


# --- warnings: valid, usable, but probably not what the admin wants -----------------------------------------------

def _certificate_warnings(config: Config) -> list[str]:
    """Certificates of node.tls and of the TLS destinations that have expired or expire within 30 days, and their
    private keys that other local users can read (tls.private_key_exposure)."""
    tls = config.node.tls
    warnings = []
    keys = []
    if tls.enabled:
        warnings += expiry_warnings("node.tls.certificate", tls.certificate)
        warnings += expiry_warnings("node.tls.ca_certificates", tls.ca_certificates)
        keys.append(("node.tls.private_key", tls.private_key))
    if tls.sender_over_tls and any(route.send_to_sender for route in config.routes):
        warnings += expiry_warnings("node.tls.sender_ca_certificates", tls.sender_ca_certificates)
    for destination in config.destinations:
        if destination.tls:
            key = f"destinations[{destination.name}]"
            warnings += expiry_warnings(f"{key}.tls_certificate", destination.tls_certificate)
            warnings += expiry_warnings(f"{key}.tls_ca_certificates", destination.tls_ca_certificates)
            keys.append((f"{key}.tls_private_key", destination.tls_private_key))
    for key, path in keys:
        exposure = private_key_exposure(path)
        if exposure is not None:
            warnings.append(f"{key}: {exposure}")
    return warnings


def _report_bank_warnings(config: Config) -> list[str]:
    """A report bank the suggestions pipeline would find empty, or with files or lines it has to skip."""
    suggestions = config.analysis.suggestions
    if "suggestions" not in _routed_pipelines(config) or not suggestions.enabled:
        return []
    key = "analysis.suggestions.bank_dir"
    if suggestions.bank_dir is not None:
        folder = Path(suggestions.bank_dir)
        if not folder.is_dir():
            return []  # an error, said by _report_bank
    else:
        try:
            models = Path(config.inference.models_dir) if config.inference.models_dir else shipped_models_dir()
        except RuntimeErrorNoModel:
            return []
        folder = models / REPORT_BANK_DIR
        key += " (not set: the bank in the models folder)"
        if not folder.is_dir():
            return [f"{key}: no report bank at {folder}: every study's suggestions are declined"]
    scan = scan_bank(folder)
    skipped = []
    if scan.skipped_files:
        skipped.append(f"{len(scan.skipped_files)} file(s) unreadable (first: {scan.skipped_files[0]})")
    if scan.skipped_lines:
        skipped.append(f"{len(scan.skipped_lines)} line(s) skipped (first: {scan.skipped_lines[0]})")
    if scan.duplicates:
        skipped.append(f"{scan.duplicates} report(s) with an id seen before ignored (first: {scan.duplicate_ids[0]})")
    if scan.withheld:
        skipped.append(f"{len(scan.withheld)} report(s) WITHHELD because they hold patient or person identifiers, "
                       f"never suggested (first: {scan.withheld[0]})")
    if scan.notes:
        skipped.append(f"{len(scan.notes)} note(s) (first: {scan.notes[0]})")
    said = "; ".join(skipped)
    if scan.reports == 0:
        return [f"{key}: {folder} holds no usable report ({scan.files} report file(s)"
                + (f"; {said}" if said else "") + "): every study's suggestions are declined"]
    if said:
        return [f"{key}: {folder}: {said}; {scan.reports} usable report(s)"]
    return []


def _destination_host_warnings(config: Config) -> list[str]:
    """Destinations whose host name does not resolve here (a typo, a name DNS does not know): every result for
    them would be retried and end a dead letter. A warning, not an error: DNS may know it by the time results go."""
    warnings = []
    for destination in config.destinations:
        try:
            socket.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
            warnings.append(f"destinations[{destination.name}].host: {destination.host!r} does not resolve ({reason}): "
                            f"results for {destination.name} cannot be sent until it does (`dicomnode echo --to "
                            f"{destination.name}` checks it)")
    return warnings


def listen_port_problems(config: Config) -> list[Problem]:
    """`dicomnode config check` (with the receive role): node.port 0, which the schema takes (tests, the demo, and
    embedded nodes listen on any free port) but a node that scanners and PACS send to cannot use: the operating
    system picks another port at every start, and the senders' configuration would never match it."""
    if config.node.port == 0:
        return [("node.port", "0 lets the operating system pick a different port at every start, and scanners and "
                              "PACS send to one fixed port: set the port they are configured to send to (e.g. "
                              "11112, or 104 with the privilege to listen under 1024)")]
    return []


def listen_port_warnings(config: Config) -> list[str]:
    """`dicomnode config check`: node.port cannot be opened on node.host now (in use: another process listens
    there, a running node?; or the operating system's reason: node.host not an address of this machine, a port
    under 1024 without the privilege ...); `serve` would not start. Nothing where the port is in use by the
    single-node `serve` of this config's node.storage_dir, running on this machine on this very node.port, as when
    the unit's ExecReload checks the config before SIGHUP: its lock really held (spool.StorageLock.running_holder:
    the kernel's lock table, not the lock file's text, which outlives the node) and the port it wrote there equal
    to node.port. Where that cannot be shown (no /proc/locks, a node of an earlier release that wrote no port) the
    warning stays. Not for serve itself, which binds the port and says so."""
    try:
        probe_listen(config.node.host, config.node.port)
    except OSError as exc:
        where = f"node.port: {config.node.port} on {config.node.host} cannot be opened now ({exc.strerror or exc})"
        if exc.errno == errno.EADDRINUSE:
            holder = StorageLock.running_holder(config.node.storage_dir)
            if holder is not None and holder.port == config.node.port:
                return []  # this config's own node runs on this port (a check before `systemctl reload`)
            if holder is not None and holder.port is not None:
                return [f"{where}: another process listens there (the node running on this node.storage_dir, pid "
                        f"{holder.pid}, listens on {holder.port}); `serve` with this config, which a change of "
                        f"node.port needs, does not start while it does"]
            return [f"{where}: another process listens there (a running node?); `serve` with this config does not "
                    f"start while it does"]
        return [f"{where}: `serve` with this config does not start on this machine"]
    return []


#: (config sections a warning reads, whether only the analyse role needs it, the check)
WARNING_CHECKS = (
    (("node", "destinations"), False, _certificate_warnings),
    (("destinations",), False, _destination_host_warnings),
    (("inference", "routes", "analysis"), True, _report_bank_warnings),
)


def preflight_warnings(config: Config, models: bool = True, sections: Collection[str] | None = None) -> list[str]:
    """What `dicomnode config check` prints (and `serve` logs) as warnings beside config_warnings, read from the
    files the config names: certificates that expired or expire within 30 days, a report bank with no usable report
    or with files or lines it skips. `models` and `sections` as in preflight_problems."""
    warnings: list[str] = []
    for needs, analyse_only, check in WARNING_CHECKS:
        if (models or not analyse_only) and (sections is None or set(needs) <= set(sections)):
            warnings += check(config)
    return warnings
