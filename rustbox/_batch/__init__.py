"""Batch grading: many submissions against many problems, resumable."""

from rustbox._batch._grade import Graded, grade_all, grade_one
from rustbox._batch._layout import (
    Entry,
    Problem,
    load_entries,
    load_entry,
    load_problem,
    load_problems,
)
from rustbox._batch._supervisor import Supervisor

__all__ = [
    "Entry",
    "Graded",
    "Problem",
    "Supervisor",
    "grade_all",
    "grade_one",
    "load_entries",
    "load_entry",
    "load_problem",
    "load_problems",
]
