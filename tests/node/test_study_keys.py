"""net.scp.StudyKeys without a state database, and the index its State.study_key_of_uid lookup uses (review45 #5, #6)."""
from __future__ import annotations

import time

import pytest
from pydicom import Dataset
from sqlalchemy import inspect, text

from dicomnode.net.scp import StudyKeys, study_key_for
from dicomnode.state import SCHEMA_VERSION, InstanceRow, StateDB, upgrade_schema
from tests.state_backends import pg_server, state_location  # noqa: F401


def _instance(uid="1.2.3", accession="A1") -> Dataset:
    dataset = Dataset()
    dataset.StudyInstanceUID = uid
    dataset.PatientID = "P1"
    dataset.StudyDate = "20260101"
    dataset.AccessionNumber = accession
    return dataset


@pytest.mark.parametrize("grouping_key", ["AccessionNumber", "PatientID+StudyDate", "StudyInstanceUID"])
def test_without_a_database_the_first_instance_gets_its_own_key_and_later_ones_keep_it(grouping_key):
    keys = StudyKeys(None)
    first = keys.key_for(_instance(), "1.2.3", grouping_key)
    assert first == study_key_for(_instance(), grouping_key) and first is not None
    later = keys.key_for(_instance(accession="A2"), "1.2.3", grouping_key)
    assert later == (first if grouping_key != "StudyInstanceUID" else "1.2.3")


def test_the_first_key_comes_from_the_database_and_the_lookup_uses_an_index(state_location):  # noqa: F811
    db = StateDB(state_location, upgrade=True)
    try:
        db.add_instance(InstanceRow("1.2.3.1", "acc-first", "1.2.3", "1.2.3.9", "1.2.840.10008.5.1.4.1.1.4",
                                    "1.2.840.10008.1.2.1", "MR", "spool/1.dcm", 1, "SCANNER1", time.time()))
        assert StudyKeys(db).key_for(_instance(accession="A2"), "1.2.3", "AccessionNumber") == "acc-first"
        indexes = {tuple(i["column_names"]) for i in inspect(db.engine).get_indexes("instances")}
        assert ("study_instance_uid",) in indexes
        if db.engine.dialect.name == "sqlite":
            with db.engine.connect() as connection:
                plan = " ".join(str(row[-1]) for row in connection.execute(text(
                    "EXPLAIN QUERY PLAN SELECT study_key FROM instances WHERE study_instance_uid='1.2.3'")))
            assert "instances_study_uid" in plan, plan
    finally:
        db.close()


def test_an_upgrade_from_schema_4_adds_the_study_instance_uid_index(state_location):  # noqa: F811
    db = StateDB(state_location, upgrade=True)
    try:
        with db.engine.begin() as connection:
            connection.execute(text("DROP INDEX instances_study_uid"))
            connection.execute(text("UPDATE meta SET value='4' WHERE key='schema_version'"))
        assert upgrade_schema(db.engine, keep_copy=False) == (4, SCHEMA_VERSION)
        indexes = {i["name"] for i in inspect(db.engine).get_indexes("instances")}
        assert "instances_study_uid" in indexes
    finally:
        db.close()
