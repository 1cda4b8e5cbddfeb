"""Phases in text for readers are counted from 1; the indices they come from are 0-based."""
from dicomnode.analysis.phase_text import COUNTED_FROM, phase_name, phase_number, phases_name


def test_phases_are_named_counted_from_1():
    assert phase_number(0) == 1 and phase_name(9) == "phase 10"
    assert phases_name([1]) == "phase 2"
    assert phases_name([1, 10]) == "phases 2 and 11"
    assert phases_name([0, 4, 10]) == "phases 1, 5 and 11"
    assert COUNTED_FROM == "counted from 1"
