"""The `dicomnode` command line (design.md contract: serve, process, demo, config check; plus operations)."""
from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import sqlalchemy.exc

from dicomnode import __version__, build_id, version_text
from dicomnode import strict_json
from dicomnode.config import Config, ConfigError, check_config, config_warnings, load_config
from dicomnode.degraded import start_when_writable
from dicomnode.demo import run_demo
from dicomnode.dispatch import (MISSING_FILE_ERROR, SENDER, check_destinations, echo_problem,
                                transient_dead_letter)
from dicomnode.net.integrity import file_problem
from dicomnode.net.scp import ListenError
from dicomnode.net.scu import AssociationFailed, describe_object, send_files
from dicomnode.net.tls import TLSConfigurationError, client_context
from dicomnode.node import Node, status_report
from dicomnode.observe import configure_logging
from dicomnode.preflight import listen_port_problems, listen_port_warnings, preflight_problems, preflight_warnings
from dicomnode.process import (UNREADABLE_FOLDER_NOTE, InputFolderError, OutputFolderError, find_files,
                               not_a_regular_file, process_folder)
from dicomnode.receivers import ReceiveHelpers, parent_alive
from dicomnode.roles import (RoleRunner, attach_different_resends, clock_skew_text, live_processes, parse_roles,
                             pid_running, receiving_report, refused_studies)
from dicomnode.spool import SPOOL_ID_FILE, read_spool_id
from dicomnode.state import (ANALYSING, CLOCK_SKEW_WARN_SECONDS, SENDING, STALE_AFTER_HEARTBEATS, STUDY_STATES,
                             StateSchemaError, StorageDirError, default_state_path, open_state)
from dicomnode.state import SCHEMA_VERSION, describe_url, foreign_owner_warning, older_schema
from dicomnode.summary_view import print_summary_table
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.cli")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _load(path: str | None) -> Config:
    return load_config(path)


def cmd_serve(args) -> int:
    config = _load(args.config)
    try:
        roles = parse_roles(args.roles)
    except ValueError as exc:
        print(f"--roles: {exc}", file=sys.stderr)
        return EXIT_USAGE
    helper = args.receive_helper
    if helper:  # one of a node's extra receiving processes (dicomnode.receivers): no metrics port of its own
        if roles != ("receive",):
            print("--receive-helper: only with --roles receive", file=sys.stderr)
            return EXIT_USAGE
        config = config.model_copy(update={"observability": config.observability.model_copy(
            update={"metrics_enabled": False})})
    problems = preflight_problems(config, models="analyse" in roles)
    if problems:  # refuse before binding anything: a wrong path must not become studies without results
        raise ConfigError(args.config or "(defaults)", problems)
    configure_logging(config.logging)
    if not helper:  # the main process says it once, in the log an admin reads (journal), as `config check` does
        for warning in config_warnings(config) + preflight_warnings(config, models="analyse" in roles):
            log.warning("config: %s", warning)
        owner = foreign_owner_warning(config.node.storage_dir)
        if owner is not None:
            log.warning("%s", owner)
    stop = threading.Event()
    parent = os.getppid()

    def on_term(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, lambda signum, frame: log.warning(
        "SIGHUP: nothing to reload yet, the node has not started"))
    # a state database that cannot be written (a full disk after a crash) is waited out serving degraded
    started = start_when_writable(lambda: _start_roles(config, roles), config, roles, stop, listen=not helper,
                                  notify=_notify)
    if started is None:
        return EXIT_OK
    node, runner = started
    helpers = None
    if "receive" in roles and not helper and config.node.receive_processes > 1:
        helpers = ReceiveHelpers(config.node.receive_processes - 1, args.config)

    def echo_destinations() -> None:
        """A WARNING per destination that does not answer a C-ECHO (in the background: serving goes on)."""
        if "dispatch" in roles and not helper and node.config.destinations:
            threading.Thread(target=check_destinations, name="echo-destinations", daemon=True,
                             args=(node.config.destinations, node.config.node.ae_title,
                                   node.config.node.tls.minimum_version)).start()

    def on_hup(signum, frame):
        try:
            node.reload(_load(args.config))
        except ConfigError as exc:
            log.error("reload refused, keeping the running config:\n%s", exc)
        else:
            echo_destinations()
        if helpers is not None:
            helpers.reload()

    if args.config:
        signal.signal(signal.SIGHUP, on_hup)
    else:  # SIGHUP's default action would end the node
        signal.signal(signal.SIGHUP, lambda signum, frame: log.warning(
            "SIGHUP: nothing to reload, this node runs on the embedded defaults (no --config)"))
    echo_destinations()
    if helpers is not None:  # after the serving process holds the port: a busy port stops the start above
        helpers.start()
    _notify("READY=1")
    while not stop.wait(1.0 if helper else 5.0):
        if helper and not parent_alive(parent):
            log.warning("the serving process %d is gone; this receiving helper stops", parent)
            break
        if not getattr(runner, "dead_threads", list)():  # a dead worker thread: systemd's watchdog restarts us
            _notify("WATCHDOG=1")
    _notify("STOPPING=1")
    if helpers is not None:
        helpers.stop()
    runner.stop()
    return EXIT_OK


def _start_roles(config: Config, roles) -> tuple[Node, RoleRunner]:
    """The node and its roles, started; where the start fails, whatever it had started is stopped and its lock and
    state released, so that it can be tried again (degraded.start_when_writable)."""
    node = Node(config, roles=roles)  # refuses (lock, ports, versions) before changing anything
    runner = RoleRunner(node, roles)
    try:
        runner.start()
    except BaseException:
        _abandon_start(node)
        raise
    return node, runner


def _abandon_start(node: Node) -> None:
    """Stop what a start that failed had started (each part on its own: one that was not started is skipped)."""
    node._stopping.set()
    for worker in node._workers:
        node._analysis_queue.put(None)
    steps = (lambda: node.scp.stop(1.0) if node.scp.listening else None,
             lambda: node.scheduler.shutdown(wait=False) if node.scheduler.running else None,
             lambda: node.dispatcher.stop(1.0), node.metrics.stop, node.db.close, node.storage_lock.release)
    for step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the rest is still stopped
            log.debug("stopping a failed start: %s", exc)


def _notify(message: str) -> None:
    """sd_notify without a dependency: a datagram to $NOTIFY_SOCKET when systemd runs us as Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            pass


class _Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM during `process`: unwinds it as Ctrl-C does (process_folder removes what it wrote)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> dict:
    """SIGINT and SIGTERM raise _Stopped in the main thread (the first one: a second kills at once, and the next run
    removes what the first left, see process.PARTIAL_MANIFEST); a signal ignored by the caller (nohup, a background
    job) stays ignored. Returns the handlers to restore."""
    def stop(signum, _frame):
        for name in previous:
            signal.signal(name, signal.SIG_DFL)
        raise _Stopped(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, stop)
    return previous


def _no_study_message(input_dir: Path, summary: dict) -> str:
    """Why `process` found nothing to analyse in input_dir (exit 1): how many files, none DICOM; archives named;
    folders this user may not list named first."""
    entries = summary.get("unreadable_files", [])
    folders = [e["path"] for e in entries if e["reason"].endswith(UNREADABLE_FOLDER_NOTE)]
    unreadable = [e for e in entries if not e["reason"].endswith(UNREADABLE_FOLDER_NOTE)]
    said = []
    if folders:
        shown = ", ".join(folders[:3]) + (" ..." if len(folders) > 3 else "")
        said.append(f"{len(folders)} folder(s) this user may not list ({shown}): run as a user who may read them, "
                    "or give them read and search permission")
    if unreadable:
        archives = [Path(e["path"]).name for e in unreadable if e["reason"].startswith("an archive")]
        not_dicom = sum(e["reason"].startswith(("not a DICOM file", "an archive")) for e in unreadable)
        what = "none DICOM" if not_dicom == len(unreadable) else "none a readable DICOM instance of a study"
        said.append(f"{len(unreadable)} file(s), {what}")
        if archives:
            shown = ", ".join(archives[:3]) + (" ..." if len(archives) > 3 else "")
            said.append(f"{len(archives)} of them an archive ({shown}): unpack it first, then process the unpacked "
                        "folder")
    if not said:
        return f"no DICOM study found in {input_dir}: it holds no file (hidden files and DICOMDIR are not read)"
    return f"no DICOM study found in {input_dir}: " + "; ".join(said)


def cmd_process(args) -> int:
    config = _load(args.config)
    configure_logging(config.logging)
    failures: list[str] = []
    previous = _stop_on_signals()
    try:
        summary = process_folder(Path(args.input_dir), Path(args.out), config, failures=failures)
    except KeyboardInterrupt as stopped:  # Ctrl-C, or SIGTERM (_Stopped): no traceback, the shell's exit status
        signum = getattr(stopped, "signum", signal.SIGINT)
        removed = getattr(stopped, "removed_results", 0)
        print(f"\ninterrupted ({signal.Signals(signum).name}): stopped before every study was analysed; removed the "
              f"{removed} result file(s) this run had written, no summary.json; run the command again to analyse "
              f"{args.input_dir}", file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print_summary_table(summary)
    print(f"\nsummary: {Path(args.out) / 'summary.json'}")
    if not summary["studies"]:  # nothing analysable: a wrong folder, or an archive not unpacked, is not "all good"
        print(f"error: {_no_study_message(Path(args.input_dir), summary)}", file=sys.stderr)
        return EXIT_ERROR
    if failures:  # design.md: exit 0 only when every study was analysed or cleanly declined
        print(f"{len(failures)} analysis failure(s), not the input's fault:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_demo(args) -> int:
    return run_demo(clean=args.clean, workdir=Path(args.workdir) if args.workdir else None)


def cmd_config_check(args) -> int:
    try:
        roles = parse_roles(args.roles)
    except ValueError as exc:
        print(f"--roles: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config, problems, sections = check_config(args.file)
    except ConfigError as exc:  # not readable, or not TOML: nothing to check against the machine
        config, problems, sections = None, exc.problems, frozenset()
    missing = [] if config is None else preflight_problems(config, models="analyse" in roles, sections=sections,
                                                           probe=not args.no_probe)
    if config is not None and "receive" in roles and "node" in sections:
        problems = [*problems, *listen_port_problems(config)]
    if problems:
        print(f"{args.file}: INVALID", file=sys.stderr)
        for path, message in problems:
            print(f"  {path}: {message}", file=sys.stderr)
    if missing:  # with schema errors, only for the sections that validated
        print(f"{args.file}: INVALID on this machine", file=sys.stderr)
        for path, message in missing:
            print(f"  {path}: {message}", file=sys.stderr)
    if problems or missing:
        return EXIT_ERROR
    warnings = config_warnings(config) + preflight_warnings(config, models="analyse" in roles, sections=sections)
    if "receive" in roles and "node" in sections and not args.no_probe:
        warnings += listen_port_warnings(config)
    for warning in warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    local = "" if config.destinations else ": results are stored here, never sent"
    print(f"{args.file}: OK ({len(config.destinations)} destination(s){local}, {len(config.routes)} route(s))"
          + (" (--no-probe: storage and log folders, shared spool, state database, node.host and node.port not "
             "checked)" if args.no_probe else ""))
    print(f"  storage: {config.node.storage_dir}" + (f" (state {default_state_path(config)})"
                                                    if config.state.url is None else ""))
    if config.destinations:
        dispatch = config.dispatch
        print(f"  sends: a destination may be down {_retry_window(dispatch.retry_window_seconds)} before its results "
              f"are dead letters (dispatch.max_attempts = {dispatch.max_attempts} attempts, back-off "
              f"{dispatch.initial_backoff_seconds:g} s x {dispatch.backoff_factor:g} per attempt, at most "
              f"{dispatch.max_backoff_seconds:g} s)")
    return EXIT_OK


def _retry_window(seconds: float) -> str:
    """"about 4.1 h": how long sends to a destination fail before they are dead letters (DispatchConfig.
    retry_window_seconds), as `config check` and `status` say it."""
    said = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60 else \
        f"{seconds:.0f} s"
    return f"about {said}"


def _existing_state(config: Config, read_fallback: bool = False, config_file: str | None = None):
    """The node's state database, or None (said on stderr) when the embedded one was never created: a command that
    only reads or re-queues must not create an empty state where no node ever ran. `read_fallback`: where the state
    cannot be written (a full or read-only disk), open it read-only and say so, rather than fail. The schema is never
    migrated here (a running older node may use it): one of another version raises StateSchemaError, which says that
    `serve` or `dicomnode state upgrade` migrates it."""
    path = default_state_path(config)
    if config.state.url is None and not path.exists():
        if config_file is None:
            print(f"no node state at {path.absolute()} (the embedded defaults' {config.storage_dir_origin()}: no "
                  f"--config given): no node has run on this storage; pass --config with the running node's config "
                  f"file", file=sys.stderr)
        else:
            relative = config._relative_storage_dir is not None
            absent = storage_absent(Path(config.node.storage_dir).absolute())  # an unmounted disk, not a new node
            why = (f"{absent}; if no node has run on this storage yet," if absent is not None else
                   "no node has run on this storage;")
            print(f"no node state at {path.absolute()} ({config.storage_dir_origin()}): {why} is {config_file} the "
                  f"config the node runs with{', and this the folder it runs in' if relative else ''}?",
                  file=sys.stderr)
        return None
    try:
        return open_state(config, upgrade=False)
    except (sqlalchemy.exc.OperationalError, StorageDirError, OSError) as exc:
        problem = _write_problem(exc)
        if not read_fallback or problem is None:
            raise
    print(f"note: the state cannot be written ({problem}): read-only view; no process can write its heartbeat either "
          f"(see the processes' list), and none is removed from it", file=sys.stderr)
    return open_state(config, readonly=True)


#: how `status` and `retry` name a node.storage_dir that is not there (storage_absent, spool_absent)
NOT_MOUNTED = "storage_dir missing or not mounted (empty mount point?)"


def _empty_folder(path: Path) -> bool:
    """Whether `path` is a folder with nothing in it (False where it cannot be listed)."""
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def storage_absent(storage: Path) -> str | None:
    """Why node.storage_dir `storage` looks like a disk that is not mounted: it does not exist (its nearest existing
    parent named, and said to be empty where it is: a bare mount point), or it is an empty folder; else None (a
    folder with files, or a file: other messages say those)."""
    if storage.is_dir():
        return f"{NOT_MOUNTED}: {storage} is an empty folder" if _empty_folder(storage) else None
    if storage.exists():  # a file: said elsewhere
        return None
    if storage.is_symlink():
        return f"{NOT_MOUNTED}: {storage} is a link to {os.readlink(storage)}, which does not exist"
    parent = next((folder for folder in storage.parents if folder.is_dir()), None)
    where = ("" if parent is None else f"; {parent}, the nearest folder above it, is empty" if _empty_folder(parent)
             else f"; {parent} exists")
    return f"{NOT_MOUNTED}: {storage} does not exist{where}"


def spool_absent(db, storage: Path) -> str | None:
    """Why node.storage_dir `storage` does not hold the spool the state `db` indexes (its spool.id gone or another
    spool's, the folder missing or unreadable: an unmounted disk or share), or None (it does, or the state records
    no spool yet)."""
    try:
        recorded = db.spool_identity()
    except Exception as exc:  # noqa: BLE001 - a state of an older schema: nothing to compare with
        log.debug("spool identity not read: %s", exc)
        return None
    if not recorded:
        return None
    try:
        marker = read_spool_id(storage)
    except OSError as exc:
        return f"{NOT_MOUNTED}: {storage} cannot be read ({exc.strerror or exc})"
    if marker == recorded.get("id"):
        return None
    expected = recorded.get("id")
    if marker is not None:
        return (f"{NOT_MOUNTED}: {storage} holds the {SPOOL_ID_FILE} of another spool ({marker}), not that of spool "
                f"{expected}, which the state indexes")
    absent = storage_absent(storage)
    if absent is not None:
        return f"{absent} (the state indexes spool {expected})"
    return f"{NOT_MOUNTED}: no {SPOOL_ID_FILE} in {storage} (the state indexes spool {expected})"


def _write_problem(exc: BaseException) -> str | None:
    """What keeps the state from being written when `exc` says the disk is full or read-only, else None."""
    text = str(getattr(exc, "orig", None) or exc)
    for needle, problem in (("disk is full", "the disk is full"), ("No space left", "the disk is full"),
                            ("Read-only file system", "read-only file system"),
                            ("readonly database", "read-only database file")):
        if needle.lower() in text.lower():
            return problem
    return None


def _state_not_upgraded(config: Config, error: StateSchemaError):
    """`status` on a state of an older schema (not yet migrated by `dicomnode state upgrade`, or by `serve` of this
    version): the state opened read-only, unchecked, with its schema version, so that an admin sees what is pending
    before the upgrade; never migrated. Re-raises `error` for a state without data or of a newer schema."""
    db = open_state(config, readonly=True, check=False)
    try:
        older = older_schema(db.engine)
    except BaseException:
        db.close()
        raise
    if older is None:
        db.close()
        raise error
    return db, older


def cmd_status(args) -> int:
    config = _load(args.config)
    older = None
    try:
        # read_fallback: a full or read-only disk is when an admin needs status
        db = _existing_state(config, read_fallback=True, config_file=args.config)
    except StateSchemaError as exc:
        db, older = _state_not_upgraded(config, exc)
    if db is None:
        return EXIT_ERROR
    if older is not None:
        banner = (f"state {describe_url(db.url)} has schema version {older}, NOT YET UPGRADED: shown read-only by "
                  f"dicomnode {__version__} (schema {SCHEMA_VERSION}), nothing changed; stop the older version, back "
                  f"the state up and run `dicomnode state upgrade` (README: Upgrading)")
        try:
            report = status_report(db)
        except sqlalchemy.exc.DatabaseError as exc:  # schema 1 lacks the heartbeat and claim columns it lists
            # the database's own first line: PostgreSQL goes on with the statement and a caret under the column
            reason = (str(exc.orig).strip().splitlines() or ["?"])[0]
            print(f"error: {banner}; this schema cannot be listed by this version ({reason}): upgrade it first",
                  file=sys.stderr)
            return EXIT_ERROR
        if not args.json:
            print(banner)
    else:
        report = status_report(db)
    report["dicomnode"] = {"version": __version__, "build": build_id(), "schema": SCHEMA_VERSION}
    report["state_schema"] = {"version": older or SCHEMA_VERSION, "needs_upgrade": older is not None}
    storage = Path(config.node.storage_dir)
    report["storage_problem"] = spool_absent(db, storage.absolute())
    report["receiving"] = receiving_report(storage / "spool" if (storage / "spool").is_dir() else storage,
                                           config.node.min_free_space_mb, report["nodes"])
    try:  # studies purged since: the studies table no longer says when they were last received
        purged = db.purged_last_received()
    except Exception as exc:  # noqa: BLE001 - a state that cannot be read here: the studies table's alone
        log.debug("purged studies' receipts not read: %s", exc)
        purged = {}
    report["refused_recently"] = refused_studies(report["nodes"], report["studies"], purged)
    try:  # re-sends with other content, not stored: from the heartbeats and as stopped processes saved them
        saved_resends = db.saved_different_resends()
    except Exception as exc:  # noqa: BLE001 - a state that cannot be read here: the heartbeats' alone
        log.debug("saved re-sends not read: %s", exc)
        saved_resends = []
    attach_different_resends(report["nodes"], report["studies"], saved_resends)
    # opened read-only because of its schema, not because it cannot be written: heartbeats go on being written
    report["heartbeats_blocked"] = _heartbeats_blocked(db) if older is None else None
    shown = _filter_studies(db, report["studies"], args)
    if shown is None:
        return EXIT_USAGE
    if len(shown) != len(report["studies"]):
        report["filter"] = {"state": args.state, "study": args.study, "last": args.last,
                            "shown": len(shown), "of": len(report["studies"])}
        report["studies"] = shown
    if report["heartbeats_blocked"]:
        for node in report["nodes"]:
            node["pid_running"] = pid_running(node["host"], node["pid"])
    _name_objects(db, storage, report)
    report["dispatch"] = {"max_attempts": config.dispatch.max_attempts,  # when `retrying` becomes dead letters
                          "retry_window_s": round(config.dispatch.retry_window_seconds)}
    # a process killed -9 never removes its heartbeat row: listed once as GONE, then removed (where writable)
    gone = [node["node_id"] for node in report["nodes"] if node["gone"]]
    if gone and db.writable and not report["heartbeats_blocked"]:
        try:
            forgotten = set(db.forget_nodes(gone, seen_before=time.time() - db.gone_after_seconds))
        except sqlalchemy.exc.OperationalError as exc:
            print(f"note: GONE processes not removed: {exc.orig}", file=sys.stderr)
        else:
            for node in report["nodes"]:
                if node["node_id"] in forgotten:
                    node["forgotten"] = True
    try:
        _print_status(report, args.json, db.stale_after_seconds, db.gone_after_seconds)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (`| head`): Python's own flush at exit must not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    return EXIT_OK


#: a SQLite state whose file system has less than this free (MB) takes no heartbeat: SQLite needs new pages for it
HEARTBEAT_ROOM_MB = 1.0


def _heartbeats_blocked(db) -> str | None:
    """Why no process can write its heartbeat into this state now (its SQLite file's disk full or read-only), or
    None: then an old heartbeat means a hung or stopped process, else it says nothing about the process."""
    if not db.is_sqlite:
        return None if db.writable else "the state cannot be written"
    try:
        stat = os.statvfs(db.path.parent)
    except OSError:
        return None if db.writable else "the state cannot be written"
    if stat.f_flag & os.ST_RDONLY:
        return "the state's file system is read-only"
    if stat.f_bavail * stat.f_frsize / (1024 * 1024) < HEARTBEAT_ROOM_MB:
        return "the disk holding the state is full"
    return None if db.writable else "the state cannot be written"


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value}")
    return value


def _filter_studies(db, studies: list[dict], args) -> list[dict] | None:
    """The studies `status --state / --study / --last` asks for (all without them), in the report's order; None
    after printing why when a state is not one of state.STUDY_STATES."""
    if args.state:
        wanted = {name.strip().lower() for text in args.state for name in text.split(",") if name.strip()}
        unknown = sorted(wanted - set(STUDY_STATES))
        if unknown:
            print(f"--state: unknown state {', '.join(unknown)} (states: {', '.join(STUDY_STATES)})", file=sys.stderr)
            return None
        studies = [study for study in studies if study["state"] in wanted]
    if args.study:
        keys = {row["study_key"] for row in db.find_studies(args.study)}
        studies = [study for study in studies if study["study_key"] in keys]
    if args.last is not None:
        studies = sorted(studies, key=lambda study: study["last_received"] or 0)[-args.last:] if args.last else []
        studies.sort(key=lambda study: study["last_received"] or 0)
    return studies


def _name_objects(db, storage: Path, report: dict) -> None:
    """Each dead letter's, retried and re-sent send's `object`: its kind and series ('SEG (Segmentation) series 9001',
    describe_object; '' where its file cannot be read), so that an admin sees which SOP class a destination refuses."""
    for study in report["studies"]:
        items = list(study["dead"]) + list(study.get("retrying", ())) + list(study.get("resent", ()))
        if not items:
            continue
        paths = {(o["destination"], o["sop_instance_uid"]): o["path"] for o in db.outbox_for(study["study_key"])}
        for item in items:
            path = paths.get((item["destination"], item["sop_instance_uid"]))
            item["object"] = describe_object(storage / path) if path else ""


#: what an admin does where node.storage_dir's file system has run out of inodes (receiving_report `inodes_short`)
INODES_REMEDY = ("free inodes on the file system of node.storage_dir: `df -i` shows them; delete files that are not "
                 "the node's (a folder of many small files: a cache, temporary files, a runaway log), or move them "
                 "to another file system")


def refusal_remedy(last_refusal: str) -> str:
    """What an admin does about a refusal (0xA700), told from its reason (the SCP's text: 'cannot write spool:
    <strerror>', 'storage unavailable: ...', 'state database unreachable: ...', or a free-space message)."""
    text = last_refusal.lower()
    if text.startswith("cannot write spool") and ("read-only" in text or "permission" in text):
        return ("make node.storage_dir writable again (check its mount: read-only, remounted or unmounted; and the "
                "permissions of the user the node runs as)")
    if text.startswith("storage unavailable"):
        return "mount node.storage_dir again (the share holding the spool is not there)"
    if text.startswith("state database unreachable"):
        return "bring the state database back ([state] url); the node records these refusals when it is back"
    if text.startswith("cannot write spool") and "no space" not in text and "quota" not in text:
        return "fix the write error on node.storage_dir named above (the disk, its mount or permissions)"
    return "free space on node.storage_dir (or lower node.min_free_space_mb)"


def _print_receiving(report: dict) -> None:
    """The node-level line on refused receiving (first, where it applies) and the studies refused recently."""
    receiving, listed = report.get("receiving") or {}, report.get("refused_recently") or []
    refused = [item for item in listed if not item.get("stored_since")]
    resent = [item for item in listed if item.get("stored_since")]
    free = receiving.get("free_mb")
    space = (f"storage {free:.1f} MB free, node.min_free_space_mb = {receiving.get('min_free_space_mb')}"
             if free is not None else "storage free space unknown (node.storage_dir not readable here)")
    if receiving.get("inodes_short"):  # MB to spare, no file can be created: every C-STORE is refused
        space = (f"storage OUT OF INODES: only {receiving['free_inodes']} inode(s) free, under the floor of "
                 f"{receiving['min_free_inodes']} (files, not space, run out; {free:.1f} MB free)")
    last = ""
    if receiving.get("last_refused_at"):
        last = (f"last refusal {receiving['last_refused_s_ago']:.0f} s ago: "
                f"{receiving.get('last_refusal') or 'lack of space'}")
    if refused:
        senders = "then have the senders of the studies listed below send them again"
    elif report.get("heartbeats_blocked"):
        senders = ("then have the senders send the refused studies again (they cannot be listed here: the node "
                   "cannot record them while its heartbeat cannot be written; its log names each refused C-STORE)")
    else:
        senders = "then have the senders send the refused studies again (the node's log names each refused C-STORE)"
    if receiving.get("refusing"):
        print(f"RECEIVING REFUSED (C-STORE answered 0xA700 Out of Resources): {space}" + (f"; {last}" if last else ""))
        remedy = (INODES_REMEDY if receiving.get("inodes_short") else
                  refusal_remedy(receiving.get("last_refusal") or ""))
        print(f"  {remedy}, {senders}")
        print()
    elif receiving.get("nearly_full"):
        print(f"RECEIVING NEARLY FULL: {space}: instances over {receiving['largest_instance_mb']:.1f} MB are refused "
              f"(0xA700), smaller ones are stored" + (f"; {last}" if last else ""))
        print(f"  {refusal_remedy(receiving.get('last_refusal') or '')}"
              + (f", {senders}" if refused else ""))
        print()
    elif receiving.get("space_back"):
        when = (f" (the last refusal, {receiving['last_refused_s_ago']:.0f} s ago, was for lack of space: "
                f"{receiving.get('last_refusal')})" if receiving.get("last_refused_at") else "")
        print(f"receiving again: {space}: there is room again{when}")
        print(f"  nothing to free; {senders.removeprefix('then ')}" if refused or not resent else
              "  nothing to free; the studies refused are being sent again (below)")
        print()
    if refused:
        print("studies refused recently (0xA700: have their senders send them again once the cause is gone; 0x0111: "
              "SOP Instance UIDs held by other instances, kept under storage_dir/conflicts, need new UIDs; one with "
              "0 stored is not among the studies below):")
        for item in refused:
            reason = f": {item['reason']}" if item.get("reason") else ""
            print(f"  {item['study_instance_uid']} (log id {item['study']}) from {item['calling_ae']}: "
                  f"{item['refused']} instance(s) refused, {item['stored']} stored, last refused "
                  f"{_clock(item['last_refused_at'])}{reason}")
        print()
    if resent:
        print("studies refused recently and being sent again (an instance stored after the last refusal: nothing to "
              "ask their senders):")
        for item in resent:
            now = ("stored after it, then purged by retention" if item.get("purged_since") else
                   f"{item['stored']} stored now")
            print(f"  {item['study_instance_uid']} (log id {item['study']}) from {item['calling_ae']}: "
                  f"{item['refused']} instance(s) refused until {_clock(item['last_refused_at'])}, {now}")
        print()


def _clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _named(item: dict) -> str:
    return f"{item['object']} {item['sop_instance_uid']}" if item.get("object") else item["sop_instance_uid"]


def association_slots_line(slots: dict | None) -> str | None:
    """'ASSOCIATION SLOTS FULL: 8/8 held ...' where a receiving process's slots (its heartbeat's association_slots,
    StorageSCP.slot_summary) are all held or some were refused in the last hour, else None."""
    if not isinstance(slots, dict) or not slots.get("max"):
        return None
    full, refused = slots.get("held", 0) >= slots["max"], slots.get("refused_last_hour", 0)
    if not full and not refused:
        return None
    text = (f"association slots: {slots.get('held', 0)}/{slots['max']} held (node.max_associations)"
            + (f", {slots['unassociated']} of them not associated yet" if slots.get("unassociated") else "")
            + (f": {slots['holders']}" if slots.get("holders") else "")
            + (f"; {refused} connection(s) or association(s) refused for want of a slot in the last hour (the log "
               f"names each)" if refused else ""))
    if full:
        text = "ASSOCIATION SLOTS FULL, new associations are refused: " + text.removeprefix("association slots: ") + \
            " (node.max_associations_per_host / node.max_unassociated_per_host cap what one address may hold)"
    return text


def _print_status(report: dict, as_json: bool, stale_after: float, gone_after: float) -> None:
    if as_json:
        print(strict_json.dumps(report, "status", indent=2))
        return
    if report.get("storage_problem"):
        print(f"STORAGE NOT THERE (on this machine): {report['storage_problem']}; a node using it refuses C-STORE "
              f"(0xA700), analyses and sends nothing until it is back: mount it again")
        print()
    _print_receiving(report)
    blocked = report.get("heartbeats_blocked")
    print(f"{'process':<32} {'roles':<34} {'heartbeat':>10}  analysing")
    for node in report["nodes"]:
        beat = f"{node['heartbeat_age_s']:.0f} s ago"
        if not node["alive"]:
            beat += " NOT WRITTEN" if blocked else " GONE" if node["gone"] else " ENDED" if node.get("ended") \
                else " STALE"
        print(f"{node['node_id'][:32]:<32} {','.join(node['roles']):<34} {beat:>10}  {len(node['analysing'])}")
    if not report["nodes"]:
        print("(no node process has a heartbeat: none is running with this state)")
    if blocked and any(not node["alive"] for node in report["nodes"]):
        silent = [node for node in report["nodes"] if not node["alive"]]
        running = ", ".join(f"pid {node['pid']}" for node in silent if node.get("pid_running"))
        ended = ", ".join(f"pid {node['pid']}" for node in silent if node.get("pid_running") is False)
        print(f"(NOT WRITTEN: {blocked}, so no process can record its heartbeat: an old heartbeat here does not mean "
              "hung or killed" + (f"; on this machine {running} still running" if running else "")
              + (f"; {ended} no longer running" if ended else "")
              + "; a process of another machine: ask there (systemctl status dicomnode))")
    ended = [node for node in report["nodes"] if not node["gone"] and node.get("ended")]
    if not blocked and ended:
        pids = ", ".join(f"pid {node['pid']}" for node in ended)
        print(f"(ENDED: on this machine, {pids} no longer running: "
              "killed or crashed; its claims go to other processes after [state] lease_seconds)")
    if not blocked and any(not node["alive"] and not node["gone"] and not node.get("ended")
                           for node in report["nodes"]):
        print(f"(STALE: no heartbeat for {stale_after:g} s or more, {STALE_AFTER_HEARTBEATS} x [state] "
              "heartbeat_seconds: hung, or killed a moment ago)")
    for node in report["nodes"]:
        offset = (node.get("detail") or {}).get("clock_offset_s")
        if node["alive"] and isinstance(offset, (int, float)) and abs(offset) > CLOCK_SKEW_WARN_SECONDS:
            print(f"(WARNING: {node['node_id']}: {clock_skew_text(offset)})")
    for node in report["nodes"]:
        line = association_slots_line((node.get("detail") or {}).get("association_slots")) if node["alive"] else None
        if line:
            print(f"({node['node_id']}: {line})")
    gone = [node for node in report["nodes"] if node["gone"]]
    if not blocked and gone:
        kept = [node["node_id"] for node in gone if not node.get("forgotten")]
        print(f"(GONE: no heartbeat for over {gone_after:g} s: killed or its machine is down; its claims have expired; "
              + ("listed this once: this status removed its heartbeat row" if not kept else
                 f"{', '.join(kept)} stays listed until a status that can write the state removes its heartbeat row")
              + ")")
    _print_builds(report)
    print()
    by_state = sorted((report.get("by_state") or {}).items(), key=lambda kv: -kv[1])
    counts = ", ".join(f"{n} {state}" for state, n in by_state)
    print(f"studies: {counts or 'none'}" + (
        f" (showing {report['filter']['shown']} of {report['filter']['of']}: "
        + " ".join(f"--{name} {','.join(value) if isinstance(value, list) else value}"
                   for name, value in report["filter"].items() if name in ("state", "study", "last")
                   and value is not None) + ")" if report.get("filter") else ""))
    width = max([len("study key")] + [len(s["study_key"]) for s in report["studies"]])  # whole UIDs: they are looked up
    print(f"{'log id':<12} {'study key':<{width}} {'state':<10} {'gen':>3} {'inst':>5} {'sent':>5} {'pend':>5} "
          f"{'dead':>5}  reason")
    for study in report["studies"]:
        print(f"{study['study']:<12} {study['study_key']:<{width}} {study['state']:<10} {study['generation']:>3} "
              f"{study['instances']:>5} {study['sent']:>5} {study['pending']:>5} {len(study['dead']):>5}  "
              f"{study['reason'] or ''}{_claim_note(study)}")
    different = [(s["study_key"], item) for s in report["studies"] for item in s.get("different_resends") or ()]
    if different:
        print("\ninstances sent again with other content under SOP Instance UIDs already held (acknowledged, not "
              "stored: the results are of the first copies):")
        for key, item in different:
            print(f"  {key}: {item['text']}")
    dead = [(s["study_key"], d) for s in report["studies"] for d in s["dead"]]
    if dead:
        print("\nfailed sends (dead letters; `dicomnode retry STUDY` re-queues):")
        for key, item in dead:
            print(f"  {key} -> {item['destination']}: {_named(item)} after {item['attempts']} "
                  f"attempt(s): {item['error']}{_missing_file_remedy(key, item['error'])}")
    retrying = [(s["study_key"], r) for s in report["studies"] for r in s.get("retrying", ())]
    if retrying:
        dispatch = report.get("dispatch")
        window = "" if dispatch is None else \
            f"; dead letters after {_retry_window(dispatch['retry_window_s'])} of failures, dispatch.max_attempts = " \
            f"{dispatch['max_attempts']} attempts"
        print(f"\npending sends being retried (back-off{window}; `dicomnode status` again shows the progress):")
        for key, item in retrying:
            print(f"  {key} -> {item['destination']}: {_named(item)} after {item['attempts']}"
                  f"{'' if dispatch is None else ' of ' + str(dispatch['max_attempts'])} attempt(s): {item['error']}; "
                  f"next attempt in {item['next_attempt_in_s']:.0f} s")
    resent = [(s["study_key"], r) for s in report["studies"] for r in s.get("resent", ())]
    if resent:
        print("\nresult objects sent again after a dispatcher stopped with their C-STORE in flight (kill -9, a crash; "
              "the destination may already hold them under the same SOP Instance UID):")
        for key, item in resent:
            print(f"  {key} -> {item['destination']}: {_named(item)}"
                  + (" (being sent again)" if item["state"] == "pending" else ""))


def _print_builds(report: dict) -> None:
    """One line per dicomnode build among the listed processes (dicomnode.build_id, from their heartbeats), this
    command's own marked: processes of different builds must not work on one state (roles.refuse_other_versions).
    A process known to have stopped (ENDED: its pid no longer runs here; GONE) is named as such and counts for no
    build (where heartbeats cannot be written, only a pid known not to run here counts as stopped): the WARNING to stop all but one build is said only where processes of several builds may still run."""
    own = report.get("dicomnode") or {}
    builds: dict[tuple, list[str]] = {}
    running: set[tuple] = set()
    for node in report["nodes"]:
        detail = node.get("detail") or {}
        key = (detail.get("version"), detail.get("build"), detail.get("schema"))
        if report.get("heartbeats_blocked"):  # an old heartbeat means nothing then: only a pid known not to run
            stopped = "ENDED" if node.get("pid_running") is False else None
        else:
            stopped = "GONE" if node["gone"] else "ENDED" if node.get("ended") else None
        builds.setdefault(key, []).append(node["node_id"] + (f" ({stopped}, not running)" if stopped else ""))
        if stopped is None:
            running.add(key)
    for (version, build, schema), names in builds.items():
        if version is None:
            what = "an older dicomnode that records no version"
        elif build is None:
            what = f"dicomnode {version} schema {schema}, an older build that records no build id"
        else:
            what = f"dicomnode {version} build {build} schema {schema}"
        same = (version, build, schema) == (own.get("version"), own.get("build"), own.get("schema"))
        marker = "the same as this command's" if same else "NOT this command's build"
        print(f"({what}, {marker}: {', '.join(names)})")
    if len(running) > 1:
        print("(WARNING: processes of different builds on one state supersede and send results differently: stop "
              "all but one build; README: Upgrading)")


def _missing_file_remedy(key: str, error: str | None) -> str:
    """What a dead letter whose result file is missing (dispatch.MISSING_FILE_ERROR) needs: sending it again cannot
    help, `retry --reanalyse` makes new result files; "" for any other error."""
    if not (error or "").startswith(MISSING_FILE_ERROR) or "--reanalyse" in error:
        return ""
    return f" (sending again cannot help: `dicomnode retry {key} --reanalyse` makes new result files)"


def _claim_note(study: dict) -> str:
    """An analysing study whose claim holder is not alive: who claimed it and what takes it over (claims_report)."""
    note = (study.get("claim") or {}).get("note")
    return "" if not note else f"; {note}" if study.get("reason") else note


def cmd_retry(args) -> int:
    if args.all == (args.study is not None):
        print("give either a STUDY or --all", file=sys.stderr)
        return EXIT_USAGE
    if args.all and (args.resend or args.reanalyse):
        print("--all re-queues dead letters only; --resend and --reanalyse take one STUDY", file=sys.stderr)
        return EXIT_USAGE
    if args.destination and not args.all:
        print("--destination goes with --all (a STUDY's dead letters are re-queued to every destination)",
              file=sys.stderr)
        return EXIT_USAGE
    config = _load(args.config)
    db = _existing_state(config, config_file=args.config)
    if db is None:
        return EXIT_ERROR
    if args.all:
        return _retry_all(db, config, args.destination)
    matches = db.find_studies(args.study)
    purged = db.purged_studies(args.study) if not matches else []
    if len(purged) == 1:  # only its tombstone is left (state.finish_purge)
        print(f"study {purged[0]['study_key']} was purged by retention on {_clock(purged[0]['purged_at'])}: its "
              f"images and results are gone, nothing can be re-sent or re-analysed; have the scanner or PACS send it "
              f"again to analyse it", file=sys.stderr)
        return EXIT_ERROR
    if len(matches) != 1:
        print(f"{args.study!r} matches {len(matches)} studies; give the study key, Study Instance UID or log id "
              f"(`dicomnode status`)", file=sys.stderr)
        return EXIT_ERROR
    key = matches[0]["study_key"]
    if args.resend:
        return _resend(db, Path(config.node.storage_dir), key, matches[0]["state"],
                       {d.name for d in config.destinations} | {SENDER})
    if args.reanalyse:
        absent = _spooled_files_absent(db, Path(config.node.storage_dir), key)
        if absent:
            print(f"not re-analysed: {absent}", file=sys.stderr)
            return EXIT_ERROR
        if db.reanalyse_finished(key):
            retired = ("those delivered are retired by the IHE IOCM rejection note sent with the new results"
                       if config.analysis.rejection_note else
                       "those delivered stay visible at the destinations (analysis.rejection_note = false): delete "
                       "them there by hand")
            print(f"re-queued {key} for a new analysis; {_who_does_it(db, 'analyse', 'analyses it again')} and sends "
                  f"the new results, which supersede the earlier ones: those not sent yet are withdrawn, {retired}")
            return EXIT_OK
        print(f"not re-analysed: {key} is in state {matches[0]['state']}; only a done or failed study is re-analysed: "
              f"{_not_reanalysable_yet(matches[0]['state'])}", file=sys.stderr)
        return EXIT_ERROR
    names = {d.name for d in config.destinations} | {SENDER}
    dead = db.outbox_for(key, state="dead")
    unconfigured = sorted({row["destination"] for row in dead if row["destination"] not in names})
    if unconfigured:  # the dispatcher would make them dead letters again at once
        print(f"not re-queued: the dead letter(s) of {key} to {', '.join(unconfigured)}, not in the config (add it "
              f"back to [[destinations]] and reload the node, then retry)", file=sys.stderr)
    storage = Path(config.node.storage_dir)
    gone = [row for row in dead if not (storage / row["path"]).is_file()]
    if gone:  # the dispatcher would make them dead letters again at once (break51b #5)
        paths = sorted({str(storage / row["path"]) for row in gone})
        print(f"not re-queued: {len(gone)} dead letter(s) of {key} whose result file is missing "
              f"({', '.join(paths[:3])}{' …' if len(paths) > 3 else ''}): sending again cannot help; "
              f"`dicomnode retry {key} --reanalyse` analyses the study again and makes new result files",
              file=sys.stderr)
        dead = [row for row in dead if row["id"] not in {item["id"] for item in gone}]
    # the dispatcher resolves each destination by name when sending
    count = db.retry_dead(key, [row["id"] for row in dead if row["destination"] in names]) \
        if unconfigured or gone else db.retry_dead(key)
    if unconfigured and not count:
        return EXIT_ERROR
    if count:
        print(f"re-queued {count} dead letter(s) of {key}; {_who_does_it(db, 'dispatch', 'sends them')}")
    elif db.reanalyse(key):
        print(f"re-queued the failed analysis of {key}; {_who_does_it(db, 'analyse', 'analyses it again')}")
    elif gone:
        return EXIT_ERROR
    elif matches[0]["state"] == ANALYSING:  # stuck (e.g. its process died, or failed unrecorded on a full disk)?
        requeued, why = db.requeue_stuck(key)
        if requeued:
            print(f"re-queued {key}, stuck in state analysing ({why}); "
                  f"{_who_does_it(db, 'analyse', 'analyses it again')}")
        elif why.startswith("being analysed"):
            print(f"not re-queued: {key} is {why}; it is not stuck (its results follow, or it fails and "
                  f"`dicomnode retry` re-runs it then)", file=sys.stderr)
            return EXIT_ERROR
        else:  # it moved on meanwhile
            print(f"nothing to retry for {key}: {why}")
    else:
        print(f"nothing to retry for {key}: state {matches[0]['state']}, no dead letters and no failed analysis")
    return EXIT_OK


def _spooled_files_absent(db, storage: Path, key: str) -> str | None:
    """Why the study `key` cannot be analysed again where not one of its indexed instance files is in the spool of
    `storage` (node.storage_dir; deleted or moved by hand), else None. Where `storage` holds no spool folder at all
    (this machine does not mount a scale-out's shared spool) nothing is said: the workers look for themselves."""
    listed = db.study_instances(key)
    if not listed or not (storage / "spool").is_dir():
        return None
    if any((storage / row["path"]).is_file() for row in listed):
        return None
    return (f"none of the {len(listed)} instance file(s) of {key} is in the spool (e.g. {storage / listed[0]['path']} "
            f"is missing: deleted or moved by hand?), so there is nothing to analyse; have the scanner or PACS send "
            f"the study again (that puts its files back), then `dicomnode retry {key} --reanalyse`")


def _not_reanalysable_yet(state: str) -> str:
    """How a study in `state` (not done or failed) is analysed again anyway, for `retry --reanalyse`'s refusal."""
    if state == SENDING:
        return ("its results are still being sent (a destination down is retried with back-off until its sends are "
                "delivered or become dead letters, `dicomnode status` shows when; then retry --reanalyse); to analyse "
                "it again now, have the scanner or PACS send its corrected instances (or one it lacks): that re-opens "
                "it at once (a copy identical to the stored one does not), and the new results supersede the pending "
                "ones, which are then never sent")
    if state == ANALYSING:
        return "it is being analysed now: retry --reanalyse once that analysis is done"
    return ("it is still receiving or waiting to be analysed, which it is once complete (studies.quiet_seconds after "
            "its last instance): nothing to re-analyse yet")


def _retry_all(db, config: Config, destination: str | None) -> int:
    """`retry --all [--destination NAME]`: re-queue every dead letter whose last error was transient (a refused or
    lost connection, a timeout, 0xA7xx, an association rejected, e.g. for an AE title the destination did not know:
    dispatch.transient_dead_letter), e.g. after a PACS outage longer than the back-off or once the destination's
    configuration was fixed; any other (a permanent refusal of the object, a result file missing or unreadable) is
    listed, not re-queued. Exit 1 where dead letters remain and none was re-queued."""
    dead = db.outbox_for(state="dead")
    names = {d.name for d in config.destinations} | {SENDER}
    if destination is not None and destination not in names:
        configured = ", ".join(sorted(d.name for d in config.destinations)) or "none"
        waiting = sum(row["destination"] == destination for row in dead)
        print(f"unknown destination {destination!r}: not in the config (configured: {configured}); "
              + (f"its {waiting} dead letter(s) stay: add it back to [[destinations]] (and reload the node), then "
                 f"retry" if waiting else "and no dead letter names it"), file=sys.stderr)
        return EXIT_USAGE
    chosen = [row for row in dead if destination is None or row["destination"] == destination]
    transient: dict[str, list[int]] = {}
    permanent = []
    unconfigured = [row for row in chosen if row["destination"] not in names]
    for row in chosen:
        if row["destination"] not in names:  # sent nowhere: the dispatcher would make them dead letters again
            continue
        if transient_dead_letter(row["last_error"]):
            transient.setdefault(row["study_key"], []).append(row["id"])
        else:
            permanent.append(row)
    requeued = studies = 0
    for key, ids in transient.items():
        count = db.retry_dead(key, ids)
        requeued += count
        studies += bool(count)
    where = f" to {destination}" if destination else ""
    if requeued:
        print(f"re-queued {requeued} dead letter(s){where} of {studies} stud(ies); "
              f"{_who_does_it(db, 'dispatch', 'sends them')} (`dicomnode status` shows the progress)")
    elif not chosen:
        print(f"nothing re-queued: no dead letter{where}")
    else:
        print(f"nothing re-queued: none of the {len(chosen)} dead letter(s){where} failed for a reason sending again "
              f"can help (below)")
    if unconfigured:
        print(f"not re-queued, {len(unconfigured)} dead letter(s) to destination(s) not in the config: "
              f"{', '.join(sorted({row['destination'] for row in unconfigured}))} (add it back to [[destinations]] and "
              f"reload the node, then `dicomnode retry --all --destination NAME`)")
    if permanent:
        print(f"not re-queued, {len(permanent)} dead letter(s) that sending again cannot help: a permanent refusal "
              f"of the object (fix the destination's configuration, then `dicomnode retry STUDY`), a result file "
              f"missing or unreadable (`dicomnode retry STUDY --reanalyse`) or another local error:")
        for row in permanent:
            print(f"  {row['study_key']} -> {row['destination']}: {row['sop_instance_uid']}: {row['last_error']}")
    return EXIT_ERROR if chosen and not requeued else EXIT_OK


def _who_does_it(db, role: str, does: str) -> str:
    """How `retry` ends its line: "a running node <does> within seconds" where a process with `role` ("dispatch",
    "analyse") has a heartbeat that is not GONE (roles.live_processes), else that no node is running on this state
    and it happens once one starts (break48a #12: nothing is sent before that)."""
    try:
        running = [p for p in live_processes(db) if role in str(p["roles"] or "").split(",")]
    except Exception:  # noqa: BLE001 - an older schema, an unreadable table: no claim either way
        return f"a running node {does} within seconds"
    if running:
        return f"a running node {does} within seconds"
    return (f"no node process with the {role} role is running on this state (no live heartbeat): nothing happens "
            f"until one starts (systemctl start dicomnode), which {does} then")


def _resend(db, storage: Path, key: str, state: str, configured: set[str]) -> int:
    """`retry --resend`: the result objects of the study's latest analysis queued again to their destinations
    (`configured`: the destination names of the config, and "sender")."""
    if state not in ("done", "failed"):
        print(f"not re-sent: {key} is in state {state}; only a done (or failed) study's results are re-sent (its "
              f"results are still being made or sent)", file=sys.stderr)
        return EXIT_ERROR
    items = [row for row in db.outbox_for(key) if row["state"] in ("sent", "dead")]
    missing = sorted({row["path"] for row in items if not (storage / row["path"]).is_file()})
    if missing:
        print(f"not re-sent: {len(missing)} result file(s) of {key} are gone (purged?): {', '.join(missing[:3])}"
              f"{' …' if len(missing) > 3 else ''}; `dicomnode retry {key} --reanalyse` makes new ones",
              file=sys.stderr)
        return EXIT_ERROR
    count, notes = db.resend(key)
    if not count:
        print(f"not re-sent: {key} has no result objects to send (its latest analysis failed or queued none); "
              f"`dicomnode retry {key} --reanalyse` analyses it again", file=sys.stderr)
        return EXIT_ERROR
    destinations = sorted({row["destination"] for row in items})
    print(f"re-queued {count} result object(s) of {key} to {', '.join(destinations)}; "
          f"{_who_does_it(db, 'dispatch', 'sends them')}")
    if notes:
        print(f"note: {notes} IOCM rejection note(s) of this analysis not re-sent: each lists earlier results a "
              f"destination received, which a destination that lost the study no longer holds, and an IOCM archive "
              f"refuses a whole note naming an instance it does not hold; where the earlier results are back there "
              f"and must be hidden, delete them there by hand (README: Re-analysis)")
    unconfigured = [name for name in destinations if name not in configured]
    if unconfigured:
        print(f"note: {', '.join(unconfigured)} not in the config: what is queued for it becomes a dead letter "
              f"(\"removed from the config\"), not sent", file=sys.stderr)
    return EXIT_OK


def cmd_send(args) -> int:
    config = _load(args.config)
    try:
        destination = config.destination(args.to)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return EXIT_USAGE
    _quiet_library_logs(config, "pynetdicom", "pydicom")
    paths: list[Path] = []
    skipped = 0
    for item in args.files:
        path = Path(item)
        not_files: list[dict] = []
        for candidate in (find_files(path, not_files) if path.is_dir() else [path]):
            problem = not_a_regular_file(candidate) if candidate.exists() else None  # a FIFO would hang the read
            problem = problem or file_problem(candidate)
            if problem:
                print(f"skipped {candidate}: {problem}", file=sys.stderr)
                skipped += 1
            else:
                paths.append(candidate)
        for entry in not_files:
            print(f"skipped {entry['path']}: {entry['reason']}", file=sys.stderr)
            skipped += 1
    if not paths:
        print(f"nothing to send: no readable DICOM file in {' '.join(args.files)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        results = send_files(paths, destination.ae_title, destination.host, destination.port,
                             calling_ae_title=destination.calling_ae_title or config.node.ae_title,
                             ssl_context=client_context(destination, config.node.tls.minimum_version))
    except (AssociationFailed, TLSConfigurationError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    failed = [r for r in results if not r.ok]
    for result in failed:
        print(f"FAILED {result.path}: {result.error}", file=sys.stderr)
    print(f"sent {len(results) - len(failed)} of {len(results)} to {destination.name}"
          + (f" ({skipped} file(s) skipped)" if skipped else ""))
    return EXIT_OK if not failed and not skipped else EXIT_ERROR


def cmd_echo(args) -> int:
    """C-ECHO each destination named (default: every configured one); exit 0 only when all answered success."""
    config = _load(args.config)
    names = args.to or [d.name for d in config.destinations]
    if not names:
        print("no destinations configured: nothing to echo", file=sys.stderr)
        return EXIT_USAGE
    try:
        destinations = [config.destination(name) for name in names]
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return EXIT_USAGE
    _quiet_library_logs(config, "pynetdicom")
    failed = 0
    for destination in destinations:
        peer = f"{destination.name} ({destination.ae_title}@{destination.host}:{destination.port})"
        started = time.monotonic()
        problem = echo_problem(destination, config.node.ae_title, config.node.tls.minimum_version, args.timeout)
        if problem is None:
            print(f"{peer}: C-ECHO OK ({(time.monotonic() - started) * 1000:.0f} ms)")
        else:
            print(f"{peer}: FAILED: {problem}", file=sys.stderr)
            failed += 1
    return EXIT_OK if not failed else EXIT_ERROR


def cmd_log_id(args) -> int:
    """Print the log id of each UID: how the logs name a Study, Series or SOP Instance UID (observe.hash_uids)."""
    for uid in args.uid:
        print(f"{uid}: {short_hash(uid)}")
    return EXIT_OK


def _quiet_library_logs(config: Config, *names: str) -> None:
    """The command's own line per peer or file says what went wrong: the libraries' log lines only where the
    config's [logging] level is DEBUG."""
    for name in names:
        logging.getLogger(name).setLevel("DEBUG" if config.logging.level == "DEBUG" else "CRITICAL")


class _VersionAction(argparse.Action):
    """`--version`: version_text(), computed only when asked (it hashes the package and may ask git)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and build (dicomnode.build_id) and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomnode", description="A DICOM node for cardiac MRI.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the node until SIGTERM")
    p.add_argument("--config", help="TOML config (default: embedded defaults)")
    p.add_argument("--roles", help="comma-separated subset of receive,complete,analyse,dispatch (default: all)")
    p.add_argument("--receive-helper", action="store_true", help=argparse.SUPPRESS)  # started by serve itself
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("process", help="analyse a folder of DICOM files offline; write .dcm + summary.json")
    p.add_argument("input_dir")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="TOML config (default: embedded defaults)")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("demo", help="run the node on the bundled studies (LGE, cine) with an embedded PACS; show the results")
    p.add_argument("--clean", action="store_true", help="remove the temporary folder afterwards")
    p.add_argument("--workdir", help="use this folder instead of a temporary one")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("config", help="configuration tools")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a config file; errors name their key paths")
    check.add_argument("file")
    check.add_argument("--roles", help="check only what `serve --roles` with these roles needs (default: all; a "
                                        "machine without the analyse role needs no models or inference backend)")
    check.add_argument("--no-probe", action="store_true",
                       help="check the config and the files it names, not the machine's present state (writable "
                            "storage and log folders, the shared spool, the state database, node.host's address, "
                            "node.port): what systemd's ExecReload runs, so that a full disk or a state database "
                            "outage does not refuse the reload meant to get out of it")
    check.set_defaults(func=cmd_config_check)

    p = sub.add_parser("status", help="list studies, their state and failed sends")
    p.add_argument("--config", help="TOML config (default: embedded defaults)")
    p.add_argument("--json", action="store_true", help="the same report as JSON (for monitoring)")
    p.add_argument("--state", action="append", metavar="STATE[,STATE]",
                   help=f"list only studies in these states ({', '.join(STUDY_STATES)}); repeatable")
    p.add_argument("--study", metavar="STUDY",
                   help="list only this study: study key (or its start), Study Instance UID, or log id")
    p.add_argument("--last", type=_non_negative_int, metavar="N",
                   help="list only the N studies received most recently")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("retry", help="re-queue the dead letters of a study (or, with --all, of every study after a "
                                     "destination's outage), or re-run its failed analysis; with --resend or "
                                     "--reanalyse, send or analyse a finished study again")
    p.add_argument("study", nargs="?",
                   help="study key (or its start), Study Instance UID, or the log id `status` and the logs print")
    p.add_argument("--all", action="store_true",
                   help="re-queue the dead letters of every study whose last error was transient (connection refused "
                        "or lost, timeout, 0xA7xx, association rejected, e.g. for an unknown AE title): after a "
                        "destination's outage outlasted the back-off, or its configuration was fixed; permanent "
                        "refusals of the object (e.g. no presentation context) are listed, not re-queued; exit 1 "
                        "when dead letters remain and none was re-queued")
    p.add_argument("--destination", metavar="NAME", help="with --all: only the dead letters to this destination")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resend", action="store_true",
                       help="queue the stored result objects of a done (or failed) study's latest analysis again to "
                            "the destinations they went to (e.g. the PACS lost them), without its IOCM rejection "
                            "notes (they name earlier results that PACS may no longer hold); refused while the study "
                            "is still being analysed or sent, or when its result files are gone")
    again.add_argument("--reanalyse", action="store_true",
                       help="analyse a done (or failed) study again from its stored images and send the new results "
                            "(new SOP Instance UIDs; the new SR supersedes the earlier one); refused in any other state")
    p.add_argument("--config", help="TOML config (default: embedded defaults)")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("send", help="C-STORE files (or folders) to a configured destination")
    p.add_argument("files", nargs="+")
    p.add_argument("--to", required=True, help="destination name from the config")
    p.add_argument("--config", help="TOML config (default: embedded defaults)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("echo", help="C-ECHO configured destinations: is each one reachable and accepting this node?")
    p.add_argument("--to", action="append", help="destination name from the config (repeatable; default: all)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each peer (default 10)")
    p.add_argument("--config", help="TOML config (default: embedded defaults)")
    p.set_defaults(func=cmd_echo)

    p = sub.add_parser("log-id", help="the log id of a Study, Series or SOP Instance UID: the logs give UIDs only "
                                      "as these hashes (`grep` the logs for it)")
    p.add_argument("uid", nargs="+")
    p.set_defaults(func=cmd_log_id)

    for module, function in (("dicomnode.roles", "add_state_parser"), ("dicomnode.inference.cli", "add_engines_parser"),
                             ("dicomnode.devtools.cli", "add_devtools_parser")):
        try:
            module_object = __import__(module, fromlist=[function])
        except ImportError:
            continue
        getattr(module_object, function)(sub)
    return parser


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has left (`dicomnode ... | head`: poll says POLLERR); then stdout is
    pointed at os.devnull, so that Python's own flush at exit does not raise again (the Python docs' recipe for
    SIGPIPE)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        gone = any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or a stdout with no file descriptor
        return False
    if gone:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return gone


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a reader that left is caught, not in Python's flush at exit
        return code
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # another pipe (a socket, a child process): not the reader of stdout
        return EXIT_ERROR  # the reader left (`| head`): nothing more to say to it, and no traceback
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    except (FileNotFoundError, StateSchemaError, StorageDirError, ListenError, InputFolderError,
            OutputFolderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except PermissionError as exc:
        print(f"error: permission denied: {exc.filename or exc} (run this as the user the node runs as, e.g. "
              f"sudo -u dicomnode dicomnode ...)", file=sys.stderr)
        return EXIT_ERROR
    except IsADirectoryError as exc:
        print(f"error: {exc.filename} is a folder where a file was expected", file=sys.stderr)
        return EXIT_ERROR
    except sqlalchemy.exc.OperationalError as exc:
        problem = _write_problem(exc)
        if problem is not None:  # the database was found: the disk under it is the problem, not the URL or user
            print(f"error: the node's state database cannot be written: {exc.orig} ({problem}: free space on, or "
                  f"remount read-write, the disk of node.storage_dir / the database)", file=sys.stderr)
        else:
            print(f"error: cannot open the node's state database: {exc.orig} (wrong [state] url or "
                  f"node.storage_dir, or a user without access to it)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
