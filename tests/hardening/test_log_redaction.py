"""The log filter that redacts patient values the node has seen, and the study correlation id."""
from __future__ import annotations

import io
import json
import logging

import pydicom

from dicomnode.observe import JSONFormatter, PatientDataFilter, PatientValues, StudyContextFilter, study_context


def capture(values: PatientValues, json_format: bool = False):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(StudyContextFilter())
    handler.addFilter(PatientDataFilter(values))
    if json_format:
        handler.setFormatter(JSONFormatter())
    logger = logging.getLogger(f"dicomnode.test.redaction.{id(values)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel("INFO")
    return logger, stream


def test_known_patient_values_are_redacted_in_messages_arguments_and_tracebacks():
    values = PatientValues()
    ds = pydicom.Dataset()
    ds.PatientName = "Nightingale^Florence^M"
    ds.PatientID = "MRN-778812"
    ds.PatientBirthDate = "18200512"
    values.remember(ds)
    logger, stream = capture(values)
    logger.info("study of %s (%s), born %s", ds.PatientName, ds.PatientID, ds.PatientBirthDate)
    logger.info("free text mentions florence nightingale and MRN-778812")
    try:
        raise ValueError("cannot parse Nightingale^Florence^M")
    except ValueError:
        logger.exception("failed")
    text = stream.getvalue()
    for value in ("Nightingale", "Florence", "MRN-778812", "18200512"):
        assert value.lower() not in text.lower(), text
    assert text.count("[redacted]") >= 6


def test_short_values_and_word_parts_are_left_alone():
    values = PatientValues()
    values.add("7", "AB", "ANNA")
    logger, stream = capture(values)
    logger.info("7 files for AB; ANNALISE is not ANNA")
    assert stream.getvalue().strip() == "7 files for AB; ANNALISE is not [redacted]"


def test_values_are_bounded():
    values = PatientValues(capacity=3)
    values.add("AAAA1", "BBBB2", "CCCC3", "DDDD4")
    assert values.redact("AAAA1 DDDD4") == "AAAA1 [redacted]"


def test_study_context_reaches_json_records():
    values = PatientValues()
    logger, stream = capture(values, json_format=True)
    with study_context("0123abcd4567"):
        logger.info("inside")
    logger.info("outside")
    inside, outside = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert inside["study"] == "0123abcd4567" and "study" not in outside
