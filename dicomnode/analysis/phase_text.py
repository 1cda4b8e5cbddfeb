"""Cardiac phases in text for readers: counted from 1, as viewers number a cine's phases.

Every text a person reads (flags and notes, the PDF, SEG descriptions, the stdout table) names phases through these
functions; the indices in summary.json and the SR stay 0-based.
"""
from __future__ import annotations

from typing import Iterable

COUNTED_FROM = "counted from 1"


def phase_number(index: int) -> int:
    """The number a reader sees for a 0-based phase index."""
    return int(index) + 1


def phase_name(index: int) -> str:
    """"phase 3" for index 2."""
    return f"phase {phase_number(index)}"


def phases_name(indices: Iterable[int]) -> str:
    """"phase 2", "phases 2 and 11", "phases 2, 5 and 11" for 0-based indices (in the order given)."""
    numbers = [str(phase_number(i)) for i in indices]
    if len(numbers) < 2:
        return "phase " + "".join(numbers)
    return f"phases {', '.join(numbers[:-1])} and {numbers[-1]}"

