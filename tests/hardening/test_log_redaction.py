"""The log filter that redacts patient values the node has seen, and the study correlation id."""
from __future__ import annotations

import io
import json
import logging

import pydicom

from dicomnode.observe import JSONFormatter, PatientDataFilter, PatientValues, StudyContextFilter, study_context
from dicomnode.uids import short_hash


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


def patient(name: str, study_uid: str, patient_id: str) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.StudyInstanceUID = name, patient_id, study_uid
    return ds


def log_pipeline_lines(logger):
    """Lines the node writes for every study, of its own words (the pipeline, sequence and reason are arguments)."""
    logger.info("recognised %s of series %s as %s (confidence %.2f): %s", "sequence", "5#300#CARDIAC", "cine", 0.95,
                "[cine-rule] 20 phases per slice")
    logger.info("lge declined: %s", "no LGE short-axis stack in the study")
    logger.info("study %s: %s declined in %.2f s", "581a702246e2", "cine", 0.03)


def test_a_name_component_that_is_a_word_of_the_node_stays_in_other_studies_lines():
    """breaktest2 finding 1: after patients Partial^Cine and Short^Ann, another patient's log read
    "recognised ... as [redacted]", "no LGE [redacted]-axis stack", "[redacted] declined"."""
    values = PatientValues()
    values.remember(patient("Partial^Cine", "1.2.826.0.1.1", "MRN-1001"))
    values.remember(patient("Short^Ann", "1.2.826.0.1.2", "MRN-1002"))
    values.remember(patient("Other^Person", "1.2.826.0.1.3", "MRN-1003"))
    logger, stream = capture(values)
    with study_context(short_hash("1.2.826.0.1.3")):
        log_pipeline_lines(logger)
    log_pipeline_lines(logger)  # and lines of no study
    text = stream.getvalue()
    assert "[redacted]" not in text, text
    assert text.count("as cine") == 2 and text.count("no LGE short-axis stack") == 2
    assert text.count("cine declined") == 2


def test_a_patients_whole_name_is_redacted_everywhere_and_its_components_in_its_own_study():
    values = PatientValues()
    values.remember(patient("Short^Ann", "1.2.826.0.1.2", "MRN-1002"))
    logger, stream = capture(values)
    # the name as a whole, in any of its written forms, and the ID: in every line, static text included
    logger.info("Short^Ann / short ann / Ann Short / SHORT, ANN / SHORT_ANN / MRN-1002 in text")
    logger.info("file %s", "/import/Ann_Short/MRN-1002/1.dcm")
    with study_context(short_hash("1.2.826.0.1.2")):
        # in the patient's own study a lone component is redacted where the line interpolates it, not in the
        # node's own words around it
        logger.info("no %s in the short-axis stack; series %r", "ShortAxis", "Ann's cine")
        logger.info("%d files, %s", 3, "for Ann")
        try:
            raise ValueError("cannot read the folder of SHORT")
        except ValueError:
            logger.exception("short read of %s", "a series")
    plain, data, own_study, count, traceback_line = stream.getvalue().split("\n")[:5]
    assert plain == " / ".join(["[redacted]"] * 6) + " in text"
    assert data == "file /import/[redacted]/[redacted]/1.dcm"
    assert own_study == "no ShortAxis in the short-axis stack; series \"[redacted]'s cine\""
    assert count == "3 files, for [redacted]"
    assert traceback_line == "short read of a series"
    text = stream.getvalue()
    assert "ValueError: cannot read the folder of [redacted]" in text
    assert 'raise ValueError("cannot read the folder of SHORT")' in text  # code is not patient data


def test_a_one_word_name_or_id_is_redacted_only_in_its_own_study():
    values = PatientValues()
    values.remember(patient("Stack", "1.2.826.0.1.4", "CASE"))
    logger, stream = capture(values)
    logger.info("LGE %s refused: %s", "stack", "case 4 has no slices")
    with study_context(short_hash("1.2.826.0.1.4")):
        logger.info("LGE %s refused: %s", "stack", "case 4 has no slices")
    other, own = stream.getvalue().splitlines()
    assert other == "LGE stack refused: case 4 has no slices"
    assert own == "LGE [redacted] refused: [redacted] 4 has no slices"


def test_other_libraries_messages_are_data_throughout():
    values = PatientValues()
    values.remember(patient("Short^Ann", "1.2.826.0.1.2", "MRN-1002"))
    _, stream = capture(values)
    handler = logging.getLogger(f"dicomnode.test.redaction.{id(values)}").handlers[0]
    library = logging.getLogger(f"somelibrary.{id(values)}")
    library.handlers[:] = [handler]
    library.propagate = False
    with study_context(short_hash("1.2.826.0.1.2")):
        library.warning("odd person name Short")
    library.warning("odd person name Short")
    assert stream.getvalue().splitlines() == ["odd person name [redacted]", "odd person name Short"]
