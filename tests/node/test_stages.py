"""Each stage on its own, without peers: routing, completion rules (quiet, expected counts, max wait), the study
path, back-off and dead letters."""
from __future__ import annotations

import copy
import dataclasses
import socket
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

import dicomnode.studies
from dicomnode.config import Config, DispatchConfig, StudiesConfig
from dicomnode.dispatch import Dispatcher, backoff_seconds
from dicomnode.net.scp import series_continues, slice_key_of
from dicomnode.node import status_report
from dicomnode.roles import DatabaseCompletion
from dicomnode.routing import select_route
from dicomnode.state import COMPLETE, DONE, FAILED, RECEIVED, SENDING, InstanceRow, StateDB
from dicomnode.spool import PSIR_MAY_FOLLOW
from dicomnode.uids import MR_STORAGE_CLASSES
from dicomnode.studies import EXPECTED_COUNT_GRACE_SECONDS, CompletionTracker, ExpectedCounts, expected_counts_met
from dicomnode.study_path import NO_ROUTE, outbox_items, return_address, run_study
from dicomnode.types import ResultObject, StudyOutcome
from tests.data.field_inputs import BUGCASES, demo_cine_files


# --- routing ---------------------------------------------------------------------------------------------------

def _header(**attributes) -> Dataset:
    dataset = Dataset()
    for keyword, value in {"Modality": "MR", **attributes}.items():
        setattr(dataset, keyword, value)
    return dataset


ROUTES = Config.model_validate({"routes": [
    {"name": "research", "match": {"calling_ae": "RESEARCH.*"}, "pipelines": ["cine"]},
    {"name": "siemens-lge", "match": {"modality": "MR", "tags": {"Manufacturer": "SIEMENS"}}, "pipelines": ["lge"]},
    {"name": "any-mr", "match": {"modality": "MR"}, "pipelines": ["lge", "cine"]},
]})


@pytest.mark.parametrize("calling_ae, headers, expected", [
    ("RESEARCH1", [_header()], "research"),  # first matching rule wins
    ("SCANNER1", [_header(Manufacturer="Philips"), _header(Manufacturer="SIEMENS")], "siemens-lge"),  # any instance
    ("SCANNER1", [_header(Manufacturer="SIEMENS HEALTHINEERS")], "any-mr"),  # regexes match the whole value
    (None, [_header()], "research"),  # `process`: no calling AE, so a calling-AE rule is not checked (matches)
    ("SCANNER1", [_header(Modality="CT")], None),
    ("SCANNER1", [], None),
])
def test_routing(calling_ae, headers, expected):
    route = select_route(ROUTES, calling_ae, headers)
    assert (route.name if route else None) == expected


# --- completion ------------------------------------------------------------------------------------------------

def _plane(z: float, orientation: str = "1.0,0.0,0.0,0.0,1.0,0.0") -> str:
    """A slice key as net.scp.slice_key_of writes it: an axial plane at z mm (or another orientation)."""
    return f"0.0,0.0,{z:.1f},{orientation}"


SAGITTAL, CORONAL = "0.0,1.0,0.0,0.0,0.0,-1.0", "1.0,0.0,0.0,0.0,0.0,-1.0"


def _row(series: str, n: int, *, total: int | None = None, phases: int | None = None, frames: int | None = None,
         slice_key: str | None = None, modality: str = "MR") -> dict:
    return {"series_instance_uid": series, "series_number": 1, "modality": modality, "frames": frames,
            "images_in_acquisition": total, "cardiac_images": phases, "slice_key": slice_key or _plane(10.0 * n)}


def _per_slice(series: str, z: float, images: int, **columns) -> list[dict]:
    """One slice's series: `images` images at one position (phases, or magnitude + PSIR)."""
    return [_row(series, 0, slice_key=_plane(z), **columns) for _ in range(images)]


@pytest.mark.parametrize("rows, met", [
    ([_row("1.1", i, total=3) for i in range(3)], True),
    ([_row("1.1", i, total=3) for i in range(2)], False),  # one still to come
    ([_row("1.1", i, phases=25) for i in range(25)], False),  # CardiacNumberOfImages is no declaration
    ([_row("1.1", 0, frames=200, slice_key=";".join(_plane(z) for z in range(0, 100, 10)))], True),  # Enhanced MR
    ([_row("1.1", i, total=2) for i in range(2)] + [_row("1.2", 0)], False),  # a series without a declaration
    ([_row("1.1", i, total=2) for i in range(2)] + [_row("9.9", 0, modality="SR")], True),  # non-MR not counted
    ([_row("1.1", i, total=4, phases=2, slice_key=_plane(0) if i < 3 else _plane(10)) for i in range(4)], False),
    ([], False),
    # a declaration proves its series whole, not the study (break34 F1): one slice's series is no stack ...
    (_per_slice("2.1", 0, 25, total=25, phases=25), False),  # per-slice cine, ImagesInAcquisition = its phases
    (_per_slice("2.1", 0, 2, total=2), False),  # per-slice PSIR series: magnitude + PSIR of one slice
    ([_row("2.1", 0, frames=2, slice_key=_plane(0))], False),  # one Enhanced MR instance per slice
    ([_row("2.1", 0, frames=3, slice_key=";".join((_plane(0), _plane(0, SAGITTAL), _plane(0, CORONAL))))],
     False),  # an Enhanced MR localizer sent first
    ([_row("2.1", i, total=3, slice_key=_plane(0, o)) for i, o in enumerate(("1.0,0.0,0.0,0.0,1.0,0.0", SAGITTAL,
                                                                             CORONAL))], False),  # classic localizer
    ([{**_row("2.1", i, total=3), "slice_key": None} for i in range(3)], False),  # no geometry: no stack
    ([_row("2.1", 0, frames=2, slice_key=_plane(0)), _row("2.1", 1, frames=2, slice_key=_plane(10))],
     False),  # several multi-frame instances in one series declare no series count
    # ... even after a whole stack received before: the last series received decides
    ([_row("2.1", i, total=3) for i in range(3)] + _per_slice("2.2", 5, 25, total=25, phases=25), False),
    # a second slab of one acquisition (parallel, no common position, the same images per position) ...
    ([_row("2.1", i, total=4, phases=2, slice_key=_plane(10.0 * (i // 2))) for i in range(4)]
     + [_row("2.2", i, total=4, phases=2, slice_key=_plane(20 + 10.0 * (i // 2))) for i in range(4)], False),
    # ... but a study of localizer, a long-axis cine and then a whole stack completes early
    ([_row("2.1", i, total=3, slice_key=_plane(0, o)) for i, o in enumerate(("1.0,0.0,0.0,0.0,1.0,0.0", SAGITTAL,
                                                                             CORONAL))]
     + _per_slice("2.2", 0, 25, total=25, phases=25) + [_row("2.3", i, total=8) for i in range(8)], True),
])
def test_expected_counts(rows, met):
    assert expected_counts_met(rows) is met
    counts = ExpectedCounts()  # the tracker's incremental form agrees after every row, not only the last
    for index, row in enumerate(rows):
        counts.add(row)
        assert counts.met() is expected_counts_met(rows[:index + 1])


class FakeScheduler:
    """Keeps the jobs CompletionTracker arms, by id; a test fires them."""

    def __init__(self):
        self.jobs: dict[str, tuple] = {}

    def add_job(self, func, trigger, run_date, args, id, **_):
        self.jobs[id] = (func, run_date.timestamp(), args)

    def remove_job(self, job_id):
        del self.jobs[job_id]

    def fire(self, job_id):
        func, _, args = self.jobs.pop(job_id)
        func(*args)


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def completion(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(dicomnode.studies.time, "time", clock)
    db = StateDB(tmp_path / "state.sqlite3")
    completed = []
    scheduler = FakeScheduler()

    def make(**settings):
        config = StudiesConfig(quiet_seconds=30, max_wait_seconds=600, **settings)
        return CompletionTracker(db, config, lambda key, generation: completed.append((key, generation)), scheduler)

    yield make, db, scheduler, clock, completed
    db.close()


def _receive(db: StateDB, tracker: CompletionTracker, clock: Clock, study: str, sop: str, **columns):
    """Index one instance and tell the tracker; by default each instance is another slice of series <study>.1."""
    row = InstanceRow(sop_instance_uid=sop, study_key=study, study_instance_uid=study,
                      series_instance_uid=columns.pop("series_instance_uid", f"{study}.1"),
                      sop_class_uid="1.2.840.10008.5.1.4.1.1.4", transfer_syntax="1.2.840.10008.1.2.1", modality="MR",
                      path=f"spool/{sop}.dcm", size=1, calling_ae="SCANNER1", received_at=clock.now,
                      series_number=columns.pop("series_number", 1),
                      slice_key=columns.pop("slice_key", _plane(float(sop.rsplit(".", 1)[-1]))), **columns)
    outcome = db.add_instance(row)
    fields = ("series_instance_uid", "series_number", "slice_key", "cardiac_images", "frames",
              "images_in_acquisition", "series_continues", "modality")
    tracker.instance_stored(study, new_study=outcome.study_state_before is None, first_received=clock.now,
                            row={name: getattr(row, name) for name in fields})
    return outcome


def test_a_study_completes_after_the_quiet_time_and_not_before(completion):
    make, db, scheduler, clock, completed = completion
    tracker = make()
    _receive(db, tracker, clock, "1.2.3", "1.2.3.1")
    func, due, _ = scheduler.jobs["quiet:1.2.3"]
    assert due == clock.now + 30
    clock.now += 10
    _receive(db, tracker, clock, "1.2.3", "1.2.3.2")  # re-arms the quiet timer
    clock.now += 25  # the first deadline has passed, the re-armed one not
    scheduler.jobs["quiet:1.2.3"][0]("1.2.3")
    assert completed == [] and db.study("1.2.3")["state"] == RECEIVED
    clock.now += 6
    scheduler.fire("quiet:1.2.3")
    assert completed == [("1.2.3", 0)] and db.study("1.2.3")["state"] == COMPLETE
    assert "maxwait:1.2.3" not in scheduler.jobs  # the max-wait timer goes with completion


def test_expected_counts_complete_after_the_grace_not_the_quiet_time(completion):
    make, db, scheduler, clock, completed = completion
    tracker = make()
    for index in range(3):
        _receive(db, tracker, clock, "1.2.4", f"1.2.4.{index}", images_in_acquisition=3)
    assert scheduler.jobs["quiet:1.2.4"][1] == clock.now + EXPECTED_COUNT_GRACE_SECONDS
    clock.now += EXPECTED_COUNT_GRACE_SECONDS
    scheduler.fire("quiet:1.2.4")
    assert completed == [("1.2.4", 0)]


def test_expected_counts_are_ignored_when_switched_off(completion):
    make, db, scheduler, clock, completed = completion
    tracker = make(use_expected_counts=False)
    for index in range(3):
        _receive(db, tracker, clock, "1.2.5", f"1.2.5.{index}", images_in_acquisition=3)
    assert scheduler.jobs["quiet:1.2.5"][1] == clock.now + 30


def test_per_slice_series_declaring_their_own_count_wait_the_quiet_time(completion):
    """break34 F1: a cine sent as one series per slice, each writing ImagesInAcquisition = its 20 phases, after a
    whole stack: every slice series is whole, the study is not; it completes on the quiet timer only."""
    make, db, scheduler, clock, completed = completion
    tracker = make()
    for index in range(3):
        _receive(db, tracker, clock, "1.3", f"1.3.{index}", images_in_acquisition=3)  # a whole stack first
    for position in range(4):
        clock.now += 8  # the next breath-hold
        for phase in range(20):
            _receive(db, tracker, clock, "1.3", f"1.3.{100 + 20 * position + phase}", series_number=10 + position,
                     series_instance_uid=f"1.3.{10 + position}", slice_key=_plane(10.0 * position),
                     images_in_acquisition=20, cardiac_images=20)
        assert scheduler.jobs["quiet:1.3"][1] == clock.now + 30
        clock.now += EXPECTED_COUNT_GRACE_SECONDS
        scheduler.jobs["quiet:1.3"][0]("1.3")  # what a shorter timer would have done
        assert completed == [] and db.study("1.3")["state"] == RECEIVED
    clock.now += 30
    scheduler.fire("quiet:1.3")
    assert completed == [("1.3", 0)]


def _index_row(dataset, series_uid: str | None = None, series_number: int | None = None, **columns) -> dict:
    """The index columns the SCP writes for a dataset (net.scp)."""
    def number(value):
        return int(value) if value not in (None, "") else None

    return {"series_instance_uid": series_uid or str(dataset.SeriesInstanceUID),
            "series_number": series_number if series_number is not None else number(dataset.get("SeriesNumber")),
            "slice_key": slice_key_of(dataset), "cardiac_images": number(dataset.get("CardiacNumberOfImages")),
            "frames": number(dataset.get("NumberOfFrames")),
            "images_in_acquisition": number(dataset.get("ImagesInAcquisition")),
            "series_continues": series_continues(dataset), "modality": "MR", **columns}


@pytest.fixture(scope="module")
def cine_headers():
    """The demo Sunnybrook study's headers: a 15-image scout, then the cine (10 slices x 20 phases, one series)."""
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in demo_cine_files()]
    return sorted(headers, key=lambda ds: (int(ds.SeriesNumber), int(ds.InstanceNumber)))


def test_expected_counts_on_a_real_cine_stack_and_its_per_slice_form(cine_headers):
    """The scout alone is a localizer (no completion); scout + the whole cine series completes early; the same cine
    sent as one series per slice (ImagesInAcquisition = 20, as Siemens writes for a breath-hold per slice) never
    does, from the first slice to the last."""
    counts = ExpectedCounts()
    scout = [ds for ds in cine_headers if int(ds.SeriesNumber) == 1]
    cine = [ds for ds in cine_headers if int(ds.SeriesNumber) != 1]
    for ds in scout:
        counts.add(_index_row(ds))
    assert not counts.met()
    for index, ds in enumerate(cine):
        counts.add(_index_row(ds))
        assert counts.met() is (index == len(cine) - 1)

    per_slice = ExpectedCounts([_index_row(ds) for ds in scout])
    by_slice: dict[str, list] = {}
    for ds in cine:
        by_slice.setdefault(slice_key_of(ds), []).append(ds)
    assert len(by_slice) == 10
    for number, (key, phases) in enumerate(by_slice.items()):
        for ds in phases:
            per_slice.add(_index_row(ds, series_uid=f"9.9.{number}", series_number=100 + number,
                                     images_in_acquisition=len(phases)))
        assert not per_slice.met(), f"closed after slice {number + 1} of 10"


@pytest.fixture(scope="module")
def legacy_enhanced():
    """The Legacy Converted Enhanced MR LGE stack of bugcase c13a (8 frames, 8 parallel planes)."""
    if not BUGCASES.is_dir():
        pytest.skip("../shared/bugcases not found")
    return pydicom.dcmread(BUGCASES / "c13a_legacy_converted_enhanced_mr" / "IM0000.dcm", stop_before_pixels=True)


def test_a_multi_frame_instance_closes_the_study_only_when_it_holds_a_stack(legacy_enhanced):
    """slice_key_of lists a multi-frame instance's planes; one instance per slice (B) and an enhanced localizer
    (C) do not complete the study, the whole stack in one instance does."""
    assert len(slice_key_of(legacy_enhanced).split(";")) == int(legacy_enhanced.NumberOfFrames) == 8
    assert expected_counts_met([_index_row(legacy_enhanced)])

    frames = list(legacy_enhanced.PerFrameFunctionalGroupsSequence)
    one_slice = copy.deepcopy(legacy_enhanced)  # magnitude + PSIR of one slice, as one instance per slice sends
    one_slice.PerFrameFunctionalGroupsSequence = [copy.deepcopy(frames[0]), copy.deepcopy(frames[0])]
    one_slice.NumberOfFrames = 2
    assert len(slice_key_of(one_slice).split(";")) == 1
    assert not expected_counts_met([_index_row(one_slice)])

    localizer = copy.deepcopy(one_slice)
    localizer.PerFrameFunctionalGroupsSequence = [copy.deepcopy(frames[0]) for _ in range(3)]
    localizer.NumberOfFrames = 3
    for item, cosines in zip(localizer.PerFrameFunctionalGroupsSequence,
                             ([1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1])):
        orientation = Dataset()
        orientation.ImageOrientationPatient = cosines
        item.PlaneOrientationSequence = [orientation]
    assert len(slice_key_of(localizer).split(";")) == 3
    assert not expected_counts_met([_index_row(localizer)])


def _enhanced(positions: int, temporal: list[int], *, series: str = "3.1", organization: str = "3D_TEMPORAL",
              first_position: int = 1, component: str | None = None, inversion_recovery: str | None = None,
              **attributes) -> Dataset:
    """An Enhanced MR instance's header: `positions` parallel slices (10 mm apart) x the TemporalPositionIndex values
    `temporal`, one frame each, slice-major; optionally every frame's ComplexImageComponent and InversionRecovery."""
    dataset = _header(SOPClassUID="1.2.840.10008.5.1.4.1.1.4.1", SeriesInstanceUID=series, SeriesNumber=3,
                      DimensionOrganizationType=organization, **attributes)
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = [orientation]
    if component is not None:
        frame_type = Dataset()
        frame_type.ComplexImageComponent = component
        shared.MRImageFrameTypeSequence = [frame_type]
    if inversion_recovery is not None:
        modifier = Dataset()
        modifier.InversionRecovery = inversion_recovery
        shared.MRModifierSequence = [modifier]
    dataset.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for index in range(first_position, first_position + positions):
        for phase in temporal:
            frame, content, position = Dataset(), Dataset(), Dataset()
            content.InStackPositionNumber = index
            content.TemporalPositionIndex = phase
            frame.FrameContentSequence = [content]
            position.ImagePositionPatient = [0.0, 0.0, 10.0 * index]
            frame.PlanePositionSequence = [position]
            frames.append(frame)
    dataset.PerFrameFunctionalGroupsSequence = frames
    dataset.NumberOfFrames = len(frames)
    return dataset


@pytest.mark.parametrize("dataset, continues", [
    (_enhanced(12, list(range(1, 21))), None),  # the whole cine in one instance
    (_enhanced(12, [1]), "one temporal position of a 3D_TEMPORAL"),  # cine sent one instance per phase: phase 1
    (_enhanced(12, [5]), "start at TemporalPositionIndex 5"),  # ... a later phase
    (_enhanced(12, [1], organization="3D", NumberOfTemporalPositions=20), "1 of the 20 temporal positions"),
    (_enhanced(12, [1, 2], organization="3D", CardiacNumberOfImages=20), "2 of the 20 temporal positions"),
    (_enhanced(4, list(range(1, 21)), first_position=5), "start at InStackPositionNumber 5"),  # a later slab
    (_enhanced(5, [1], organization="3D"), None),  # a single-phase stack, no inversion recovery said
    (_enhanced(5, [1], organization="3D", component="MAGNITUDE", inversion_recovery="YES"), PSIR_MAY_FOLLOW),
    (_enhanced(5, [1], organization="3D", component="REAL", inversion_recovery="YES"), None),  # the PSIR itself
])
def test_an_enhanced_instance_says_when_its_series_goes_on(dataset, continues):
    """break47a #4: NumberOfFrames describes the instance, not the series: an instance that its own frames show to
    be one piece of its series (a phase, a later slab) or an IR magnitude without its PSIR does not complete the
    study on the expected counts; the whole series in one instance still does."""
    found = series_continues(dataset)
    assert (found is None) if continues is None else (continues in found)
    assert expected_counts_met([_index_row(dataset)]) is (continues is None)


def test_an_ir_magnitude_instance_waits_only_while_it_is_the_last_series():
    magnitude = _enhanced(5, [1], organization="3D", component="MAGNITUDE", inversion_recovery="YES")
    psir = _enhanced(5, [1], series="3.2", organization="3D", component="REAL", inversion_recovery="YES")
    counts = ExpectedCounts([_index_row(magnitude)])
    assert not counts.met() and PSIR_MAY_FOLLOW in counts.waiting_for()
    counts.add(_index_row(psir))
    assert counts.met()


def _classic_lge(series: str, value3: str, images: int = 5) -> list[Dataset]:
    """A classic LGE series of `images` slices, ImagesInAcquisition declared, ImageType value 3 `value3`."""
    return [_header(SeriesInstanceUID=series, SeriesNumber=int(series.rsplit(".", 1)[-1]), ImagesInAcquisition=images,
                    ScanningSequence=["GR", "IR"], InversionTime=300,
                    ImageType=["DERIVED", "PRIMARY", value3, "NORM", "DIS2D"],
                    ImagePositionPatient=[0.0, 0.0, 10.0 * index], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
            for index in range(images)]


def test_a_classic_ir_magnitude_series_waits_for_its_psir_series():
    """break47a #4 (lge_classic_iia): magnitude then PSIR as two series, each declaring ImagesInAcquisition: the
    magnitude alone does not complete the study; with its PSIR after it, or both in one series, the counts do."""
    magnitude, psir = _classic_lge("5.10", "M"), _classic_lge("5.11", "PSIR")
    assert [series_continues(ds) for ds in magnitude] == [PSIR_MAY_FOLLOW] * 5
    assert [series_continues(ds) for ds in psir] == [None] * 5
    assert not expected_counts_met([_index_row(ds) for ds in magnitude])
    assert expected_counts_met([_index_row(ds) for ds in magnitude + psir])
    one_series = [_index_row(ds, series_uid="5.12", series_number=12, images_in_acquisition=10)
                  for ds in magnitude + psir]
    assert expected_counts_met(one_series)  # Siemens: magnitude and PSIR in one series
    philips = _classic_lge("5.13", "M_IR")
    assert series_continues(philips[0]) == PSIR_MAY_FOLLOW
    cine = _classic_lge("5.14", "M")
    for ds in cine:
        ds.ScanningSequence = "GR"
    assert series_continues(cine[0]) is None and expected_counts_met([_index_row(ds) for ds in cine])


def test_a_cine_sent_one_enhanced_instance_per_phase_waits_the_quiet_time(completion, caplog):
    """The first phase holds every slice position (a stack), but its frames say one temporal position of a temporal
    loop: the study completes on the quiet time, also when its counts are rebuilt from the index (a restart)."""
    make, db, scheduler, clock, completed = completion
    tracker = make()
    caplog.set_level("INFO", logger="dicomnode.studies")
    for phase in (1, 2):
        dataset = _enhanced(12, [phase])
        _receive(db, tracker, clock, "4.1", f"4.1.{phase}", series_instance_uid="4.1.1", frames=12,
                 slice_key=slice_key_of(dataset), series_continues=series_continues(dataset))
        assert scheduler.jobs["quiet:4.1"][1] == clock.now + 30
        clock.now += 1
    assert not expected_counts_met(db.study_instances("4.1"))
    said = [r.getMessage() for r in caplog.records if "expected counts do not complete it" in r.getMessage()]
    assert len(said) == 1 and "one temporal position of a 3D_TEMPORAL" in said[0]  # once per study and reason
    whole = _enhanced(12, list(range(1, 21)))
    _receive(db, tracker, clock, "4.2", "4.2.1", series_instance_uid="4.2.1", frames=240,
             slice_key=slice_key_of(whole), series_continues=series_continues(whole))
    assert scheduler.jobs["quiet:4.2"][1] == clock.now + EXPECTED_COUNT_GRACE_SECONDS


def test_the_database_completion_of_role_processes_applies_the_same_rule(tmp_path):
    """`serve --roles`: the polling scheduler completes a per-slice series study on the quiet time, a whole stack
    at the expected-count grace."""
    db = StateDB(tmp_path / "state.sqlite3")
    config = Config.model_validate({"studies": {"quiet_seconds": 30, "max_wait_seconds": 600}})
    try:
        completion = DatabaseCompletion(db, config, lease_seconds=30)
        completion._started = 0.0
        for study, series_of in (("1.4", lambda i: (f"1.4.{i}", 10 + i)),  # one series per slice
                                 ("1.5", lambda i: ("1.5.1", 10))):  # one series
            for index in range(2):
                series_uid, series_number = series_of(index)
                for image in range(2):
                    db.add_instance(InstanceRow(
                        sop_instance_uid=f"{study}.{index}.{image}", study_key=study, study_instance_uid=study,
                        series_instance_uid=series_uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                        transfer_syntax="1.2.840.10008.1.2.1", modality="MR", path=f"spool/{study}.{index}.{image}",
                        size=1, calling_ae="SCANNER1", received_at=time.time(), series_number=series_number,
                        slice_key=_plane(10.0 * index), images_in_acquisition=2 if study == "1.4" else 4))
        assert completion.poll(now=time.time() + EXPECTED_COUNT_GRACE_SECONDS + 1) == ["1.5"]
        assert completion.poll(now=time.time() + 31) == ["1.4"]
    finally:
        db.close()


@pytest.mark.parametrize("policy, state, analysed", [("analyse", COMPLETE, True), ("fail", FAILED, False)])
def test_max_wait_forces_the_study_on_per_policy(completion, policy, state, analysed):
    make, db, scheduler, clock, completed = completion
    tracker = make(force_complete_policy=policy)
    first = clock.now
    _receive(db, tracker, clock, "1.2.6", "1.2.6.0")
    assert scheduler.jobs["maxwait:1.2.6"][1] == first + 600
    for index in range(1, 5):  # a sender that never stops: the quiet time never elapses
        clock.now += 20
        _receive(db, tracker, clock, "1.2.6", f"1.2.6.{index}")
    assert scheduler.jobs["maxwait:1.2.6"][1] == first + 600  # later instances do not push it back
    clock.now = first + 600
    scheduler.fire("maxwait:1.2.6")
    assert db.study("1.2.6")["state"] == state
    assert completed == ([("1.2.6", 0)] if analysed else [])


def test_timers_are_rebuilt_from_the_index_after_a_restart(completion):
    """A study receiving when the node stopped may have had its transfer cut: after the restart it carries the note
    and waits the full max wait from the restart (no quiet timer), whatever the downtime was."""
    make, db, scheduler, clock, completed = completion
    _receive(db, make(), clock, "1.2.7", "1.2.7.0")
    _receive(db, make(), clock, "1.2.7", "1.2.7.1")
    clock.now += 3600
    restarted = FakeScheduler()
    tracker = CompletionTracker(db, StudiesConfig(quiet_seconds=30, max_wait_seconds=600), lambda *a: None, restarted)
    assert tracker.rebuild() == 1
    assert "quiet:1.2.7" not in restarted.jobs
    assert restarted.jobs["maxwait:1.2.7"][1] == clock.now + 600
    study = db.study("1.2.7")
    assert study["state"] == RECEIVED
    assert study["reason"] == ("incomplete: transfer interrupted (2 instance(s) received when the node stopped); the "
                               "study may be incomplete: waiting the full max wait (studies.max_wait_seconds=600) "
                               "for a re-send")
    assert status_report(db)["studies"][0]["reason"] == study["reason"]


def _restarted(db, clock, completed, study="1.2.8", **settings):
    """A study of one instance, then a restart of the node: (tracker, scheduler) of the restarted node."""
    _receive(db, CompletionTracker(db, StudiesConfig(quiet_seconds=30, max_wait_seconds=600), lambda *a: None,
                                   FakeScheduler()), clock, study, f"{study}.0")
    clock.now += 60
    restarted = FakeScheduler()
    config = StudiesConfig(quiet_seconds=30, max_wait_seconds=600, **settings)
    tracker = CompletionTracker(db, config, lambda key, generation: completed.append((key, generation)), restarted)
    assert tracker.rebuild() == 1
    return tracker, restarted


def test_an_interrupted_study_completes_when_quiet_once_its_sender_sends_again(completion):
    make, db, scheduler, clock, completed = completion
    tracker, restarted = _restarted(db, clock, completed)
    _receive(db, tracker, clock, "1.2.8", "1.2.8.1")  # the scanner re-sends: a new instance clears the note
    assert db.study("1.2.8")["reason"] is None
    assert restarted.jobs["quiet:1.2.8"][1] == clock.now + 30
    clock.now += 30
    restarted.fire("quiet:1.2.8")
    assert completed == [("1.2.8", 0)] and db.study("1.2.8")["state"] == COMPLETE


def test_a_resent_duplicate_ends_the_wait_of_an_interrupted_study(completion):
    """Everything had arrived before the stop: the sender re-sends what the node already holds (duplicates)."""
    make, db, scheduler, clock, completed = completion
    tracker, restarted = _restarted(db, clock, completed)
    tracker.instance_resent("1.2.8")
    assert db.study("1.2.8")["reason"] is None
    assert restarted.jobs["quiet:1.2.8"][1] == clock.now + 30
    clock.now += 30
    restarted.fire("quiet:1.2.8")
    assert completed == [("1.2.8", 0)]


@pytest.mark.parametrize("policy", ["analyse", "fail"])
def test_an_interrupted_study_not_sent_again_carries_the_note_past_max_wait(completion, policy):
    make, db, scheduler, clock, completed = completion
    tracker, restarted = _restarted(db, clock, completed, force_complete_policy=policy)
    clock.now += 600
    restarted.fire("maxwait:1.2.8")
    study = db.study("1.2.8")
    note = ("transfer interrupted (1 instance(s) received when the node stopped); the study may be incomplete: "
            "nothing was sent again within max wait")
    if policy == "analyse":
        assert study["state"] == COMPLETE and study["reason"] == note and completed == [("1.2.8", 0)]
        assert dicomnode.studies.interrupted_note(study["reason"]) == note  # the study path adds it to `declined`
    else:
        assert study["state"] == FAILED and study["reason"] == "not complete after max_wait_seconds=600.0: " + note


def test_an_aborted_association_holds_its_study_off_the_quiet_timer(completion):
    make, db, scheduler, clock, completed = completion
    tracker = make()
    _receive(db, tracker, clock, "1.2.9", "1.2.9.0")
    _receive(db, tracker, clock, "1.2.9", "1.2.9.1")
    assert tracker.transfer_interrupted("1.2.9")
    assert db.study("1.2.9")["reason"].startswith(
        "incomplete: transfer interrupted (2 instance(s) received when the association was aborted); the study may "
        "be incomplete")
    clock.now += 30
    scheduler.fire("quiet:1.2.9")
    assert completed == [] and db.study("1.2.9")["state"] == RECEIVED
    _receive(db, tracker, clock, "1.2.9", "1.2.9.2")  # the re-send
    clock.now += 30
    scheduler.fire("quiet:1.2.9")
    assert completed == [("1.2.9", 0)]
    assert not tracker.transfer_interrupted("1.2.9")  # complete: an abort afterwards changes nothing


# --- the study path --------------------------------------------------------------------------------------------

class _Study:
    """The attributes of a CMRStudy the path reads."""

    study_instance_uid = "1.2.8"
    declined = []

    def __init__(self, modality="MR"):
        header = _header(Modality=modality)
        self.series = [type("Series", (), {"instances": [type("Instance", (), {"dataset": header})()]})()]

    def summary_series(self):
        return []


def _result_object(sop: str, study_uid: str = "1.2.8") -> Dataset:
    """A minimal Secondary Capture result object of study `study_uid` (series `study_uid`.9) to send."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID, dataset.SOPInstanceUID = SecondaryCaptureImageStorage, sop
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.Modality = study_uid, study_uid + ".9", "OT"
    return dataset


class _Analyser:
    def __init__(self):
        self.calls = []

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        self.calls.append(pipelines)
        return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid, "declined": []},
                            datasets=[_result_object("1.2.8.9.1"), _result_object("1.2.8.9.2")])


def test_the_study_path_routes_analyses_writes_and_lists_outputs_once(tmp_path):
    config = Config.model_validate({
        "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "10.0.0.1", "port": 104}],
        "routes": [{"name": "mr", "match": {"modality": "MR"}, "pipelines": ["cine"], "destinations": ["pacs"],
                    "send_to_sender": True, "sender_port": 11112}]})
    analyser = _Analyser()
    run = run_study(_Study(), config, analyser, "SCANNER1", tmp_path, lambda d: Path("r") / f"{d.SOPInstanceUID}.dcm")
    assert analyser.calls == [["cine"]] and run.route.name == "mr"
    assert run.summary["outputs"] == ["r/1.2.8.9.1.dcm", "r/1.2.8.9.2.dcm"]
    assert run.summary["route"] == "mr"  # summary.json names the route the study took (config check says it does)
    assert [w.sop_instance_uid for w in run.written] == ["1.2.8.9.1", "1.2.8.9.2"]
    assert all((tmp_path / w.path).is_file() for w in run.written)
    items = outbox_items(config, run.route, run.written, return_address(config, run.route, [("SCANNER1", "10.0.0.9")]))
    assert [(i.destination, i.ae_title, i.host, i.port, i.sop_instance_uid) for i in items] == [
        ("pacs", "PACS", "10.0.0.1", 104, "1.2.8.9.1"), ("pacs", "PACS", "10.0.0.1", 104, "1.2.8.9.2"),
        ("sender", "SCANNER1", "10.0.0.9", 11112, "1.2.8.9.1"), ("sender", "SCANNER1", "10.0.0.9", 11112, "1.2.8.9.2")]
    no_address = return_address(config, run.route, [])
    assert no_address.target is None and outbox_items(config, run.route, run.written, no_address)[-1].destination == "pacs"


def test_send_to_sender_returns_to_no_one_when_the_analysed_images_came_from_several_peers():
    config = Config.model_validate({"routes": [{"name": "mr", "send_to_sender": True, "sender_port": 11112}]})
    route = config.routes[0]
    one_peer = return_address(config, route, [("SCANNER1", "10.0.0.9"), ("SCANNER1", "10.0.0.9")])
    assert one_peer.target == ("SCANNER1", "10.0.0.9", 11112) and one_peer.problem is None
    for senders in ([("SCANNER1", "10.0.0.9"), ("SCANNER2", "10.0.0.66")],  # a host pre-seeding the study's key
                    [("SCANNER1", "10.0.0.9"), ("SCANNER1", "10.0.0.66")]):  # the same AE title from elsewhere
        ambiguous = return_address(config, route, senders)
        assert ambiguous.target is None and "2 peers" in ambiguous.problem and "10.0.0.66" in ambiguous.problem
        assert "SCANNER1@10.0.0.9" in ambiguous.problem
        assert outbox_items(config, route, [], ambiguous) == []
    two_titles = return_address(config, route, [("SCANNER1", "10.0.0.9"), ("SCANNER2", "10.0.0.66")])
    # the advice that works: distinct AE titles stay distinct peers whatever [[node.peers]] binds
    assert "add it as a [[destinations]] entry and list it in routes[mr].destinations" in two_titles.problem
    assert "AE titles SCANNER1, SCANNER2 are different peers" in two_titles.problem
    one_title = return_address(config, route, [("SCANNER1", "10.0.0.9"), ("SCANNER1", "10.0.0.66")])
    assert "give SCANNER1's [[node.peers]] entry host" in one_title.problem


def test_send_to_sender_resolves_a_listed_peer_by_its_configured_address():
    config = Config.model_validate({
        "node": {"peers": [{"ae_title": "SCANNER1", "networks": ["10.0.0.0/24"], "host": "scanner1.example",
                            "port": 4006}]},
        "routes": [{"name": "mr", "send_to_sender": True, "sender_port": 11112}]})
    # two source addresses of the one configured peer (two network interfaces): one return address
    address = return_address(config, config.routes[0], [("SCANNER1", "10.0.0.9"), ("SCANNER1", "10.0.0.10")])
    assert address.target == ("SCANNER1", "scanner1.example", 4006)


def test_the_study_path_declines_a_study_no_route_matches(tmp_path):
    config = Config.model_validate({"routes": [{"name": "mr", "match": {"modality": "MR"}}]})
    analyser = _Analyser()
    run = run_study(_Study(modality="CT"), config, analyser, None, tmp_path, lambda d: Path("x.dcm"))
    assert analyser.calls == [] and run.route is None and run.written == []
    assert run.summary["outputs"] == [] and run.summary["declined"][-1]["reason"] == NO_ROUTE


# --- back-off and dead letters ---------------------------------------------------------------------------------

def test_backoff_grows_by_the_factor_and_stops_at_the_cap():
    config = DispatchConfig(initial_backoff_seconds=5, backoff_factor=2, max_backoff_seconds=60)
    assert [backoff_seconds(n, config) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: connections are refused


def test_a_send_that_keeps_failing_becomes_a_dead_letter_and_retry_requeues_it(tmp_path):
    db = StateDB(tmp_path / "state.sqlite3")
    db.add_instance(InstanceRow("1.2.9.1", "1.2.9", "1.2.9", "1.2.9.0", "1.2.840.10008.5.1.4.1.1.4",
                                "1.2.840.10008.1.2.1", "MR", "spool/x.dcm", 1, "SCANNER1", time.time()))
    db.set_study_state("1.2.9", COMPLETE)
    analysis = db.start_analysis("1.2.9", 0)
    result = tmp_path / "results" / "1.2.9.9.dcm"
    result.parent.mkdir()
    _result_object("1.2.9.9").save_as(result, enforce_file_format=True)
    written = ResultObject("1.2.9.9", "1.2.9.8", "1.2.840.10008.5.1.4.1.1.7", "results/1.2.9.9.dcm")
    item = {"destination": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": _closed_port(),
            "sop_instance_uid": written.sop_instance_uid, "path": written.path}
    assert db.finish_analysis(analysis, "1.2.9", 0, {"outputs": [written.path]}, [written], [item])
    assert db.study("1.2.9")["state"] == SENDING
    # a backoff long enough that a loaded machine's slow failed attempt cannot outlast it before the next round
    config = DispatchConfig(max_attempts=2, initial_backoff_seconds=2.0, max_backoff_seconds=2.0)
    dispatcher = Dispatcher(db, tmp_path, config, "DICOMNODE")
    before = time.time()
    assert dispatcher.run_once() == 0
    (row,) = db.outbox_for("1.2.9")
    assert row["state"] == "pending" and row["attempts"] == 1 and row["next_attempt_at"] >= before + 2.0
    assert dispatcher.run_once() == 0  # not due yet: nothing tried
    assert db.outbox_for("1.2.9")[0]["attempts"] == 1
    time.sleep(max(0.0, row["next_attempt_at"] - time.time()) + 0.01)
    dispatcher.run_once()
    (row,) = db.outbox_for("1.2.9")
    assert row["state"] == "dead" and row["attempts"] == 2 and row["last_error"]
    assert db.study("1.2.9")["state"] == FAILED
    (study,) = status_report(db)["studies"]
    assert study["dead"][0]["destination"] == "pacs" and study["dead"][0]["attempts"] == 2
    assert db.retry_dead("1.2.9") == 1
    assert db.study("1.2.9")["state"] == SENDING and db.outbox_for("1.2.9")[0]["state"] == "pending"
    db.close()


def test_a_missing_result_file_is_a_failed_attempt_not_a_dead_letter_at_once(tmp_path):
    """break34 F2: a file that a share shows late is tried again with the back-off
    (tests/node/test_storage_unavailable.py follows it to its dead letter)."""
    db = StateDB(tmp_path / "state.sqlite3")
    db.add_instance(InstanceRow("1.3.1", "1.3", "1.3", "1.3.0", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1",
                                "MR", "spool/x.dcm", 1, "SCANNER1", time.time()))
    db.set_study_state("1.3", COMPLETE)
    analysis = db.start_analysis("1.3", 0)
    written = ResultObject("1.3.9", "1.3.8", "1.2.840.10008.5.1.4.1.1.7", "results/gone.dcm")
    item = {"destination": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104,
            "sop_instance_uid": written.sop_instance_uid, "path": written.path}
    db.finish_analysis(analysis, "1.3", 0, {}, [written], [item])
    Dispatcher(db, tmp_path, DispatchConfig(max_attempts=8), "DICOMNODE").run_once()
    (row,) = db.outbox_for("1.3")
    assert row["state"] == "pending" and row["attempts"] == 1 and "missing" in row["last_error"]
    assert db.study("1.3")["state"] == SENDING
    db.close()


def test_deliveries_call_with_the_destination_calling_ae_title(tmp_path):
    """A PACS that accepts only the destination's `calling_ae_title` gets the node's results (not only `send`'s)."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    from dicomnode.config import DestinationConfig

    received = []

    def on_store(event):
        received.append(event.assoc.requestor.ae_title)
        return 0x0000

    pacs = AE(ae_title="PACS")
    pacs.require_calling_aet = ["RESULTS_SCU"]
    pacs.add_supported_context(SecondaryCaptureImageStorage)
    port = _closed_port()
    server = pacs.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        db = StateDB(tmp_path / "state.sqlite3")
        db.add_instance(InstanceRow("1.4.1", "1.4", "1.4", "1.4.0", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1",
                                    "MR", "spool/x.dcm", 1, "SCANNER1", time.time()))
        db.set_study_state("1.4", COMPLETE)
        analysis = db.start_analysis("1.4", 0)
        (tmp_path / "results").mkdir()
        _result_object("1.4.9").save_as(tmp_path / "results" / "1.4.9.dcm", enforce_file_format=True)
        written = ResultObject("1.4.9", "1.4.8", "1.2.840.10008.5.1.4.1.1.7", "results/1.4.9.dcm")
        item = {"destination": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port,
                "sop_instance_uid": written.sop_instance_uid, "path": written.path}
        db.finish_analysis(analysis, "1.4", 0, {}, [written], [item])
        destination = DestinationConfig(name="pacs", ae_title="PACS", host="127.0.0.1", port=port,
                                        calling_ae_title="RESULTS_SCU")
        dispatcher = Dispatcher(db, tmp_path, DispatchConfig(max_attempts=1), "DICOMNODE",
                                destinations=lambda: [destination])
        assert dispatcher.run_once() == 1
        assert received == ["RESULTS_SCU"] and db.outbox_for("1.4")[0]["state"] == "sent"
        db.close()
    finally:
        server.shutdown()


def test_sighup_applies_a_new_purge_interval(tmp_path):
    """README: retention reloads on SIGHUP; the purge job's interval is one of its settings."""
    import datetime as dt

    from dicomnode.config import Config
    from dicomnode.node import Node

    settings = {"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                         "allowed_calling_aes": ["*"]}, "retention": {"purge_interval_minutes": 60}}
    node = Node(Config.model_validate(settings))
    node.start(warm_up=False)
    try:
        assert node.scheduler.get_job("retention").trigger.interval == dt.timedelta(minutes=60)
        settings["retention"]["purge_interval_minutes"] = 0.25
        assert node.reload(Config.model_validate(settings)) == []
        assert node.scheduler.get_job("retention").trigger.interval == dt.timedelta(seconds=15)
        assert node.retention.config.purge_interval_minutes == 0.25
    finally:
        node.stop()


def test_the_state_records_the_host_of_each_instance_and_names_the_peers_of_the_analysed_images(tmp_path):
    db = StateDB(tmp_path / "state.sqlite3")
    try:
        def add(sop, sop_class, calling_ae, host, study="1.2.5"):
            db.add_instance(InstanceRow(sop, "key", study, study + ".1", sop_class, "1.2.840.10008.1.2.1", "MR",
                                        f"spool/{sop}.dcm", 1, calling_ae, time.time()), host)
        add("1.2.5.90", "1.2.840.10008.5.1.4.1.1.7", "SCANNER2", "10.0.0.66")  # a Secondary Capture arrives first
        add("1.2.5.1", "1.2.840.10008.5.1.4.1.1.4", "SCANNER1", "10.0.0.9")
        add("1.2.5.2", "1.2.840.10008.5.1.4.1.1.4", "SCANNER1", "10.0.0.9")
        assert db.study(("key"))["calling_host"] == "10.0.0.66"  # the study row keeps only the first sender
        assert db.study_senders("key", "1.2.5", MR_STORAGE_CLASSES) == [("SCANNER1", "10.0.0.9")]
        add("1.2.5.3", "1.2.840.10008.5.1.4.1.1.4", "SCANNER2", "10.0.0.66")  # an MR image from another host
        assert db.study_senders("key", "1.2.5", MR_STORAGE_CLASSES) == [("SCANNER1", "10.0.0.9"),
                                                                         ("SCANNER2", "10.0.0.66")]
        add("1.2.6.1", "1.2.840.10008.5.1.4.1.1.4", "SCANNER3", "10.0.0.7", study="1.2.6")  # another study, one key
        assert db.study_senders("key", "1.2.6", MR_STORAGE_CLASSES) == [("SCANNER3", "10.0.0.7")]
    finally:
        db.close()


def test_a_routed_study_without_one_usable_image_says_so_not_that_no_route_matches(tmp_path):
    """break43b #5: every image without usable geometry (PixelSpacing with one value) was reported as "no routing
    rule matches" although the study's MR images match the route: routing looked at the surviving images only."""
    from dicomnode.cmr.study import load_studies

    for index, path in enumerate(demo_cine_files()[:6]):
        dataset = pydicom.dcmread(path)
        dataset.PixelSpacing = [1.4]
        dataset.save_as(tmp_path / f"{index}.dcm")
    (study,) = load_studies([tmp_path])
    assert study.series == []
    config = Config.model_validate({"routes": [{"name": "mr", "match": {"modality": "MR"}, "pipelines": ["cine"]}]})
    analyser = _Analyser()
    run = run_study(study, config, analyser, None, tmp_path / "out", lambda d: Path("x.dcm"))
    reasons = [entry["reason"] for entry in run.summary["declined"]]
    assert NO_ROUTE not in reasons and run.summary["route"] == "mr" and analyser.calls == []
    assert any("malformed PixelSpacing" in reason for reason in reasons)
    assert "the route matches but there is no usable MR image: every image received (6 instance(s))" in reasons[-1]
    ct = run_study(study, Config.model_validate({"routes": [{"name": "ct", "match": {"modality": "CT"}}]}),
                   analyser, None, tmp_path / "out", lambda d: Path("x.dcm"))
    assert ct.summary["declined"][-1]["reason"] == NO_ROUTE
