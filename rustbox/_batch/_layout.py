"""Reading a batch from disk: problem folders and submission folders.

::

    problems/
      sum/                  the problem's id is its folder's name
        problem.toml        optional: checker, [limits]
        1.in  1.out  ...    test cases (or in a tests/ sub-folder)
    submissions/
      alice--sum/           one folder per submission
        main.cpp            one source file; the language comes from its extension
        submission.toml     optional: problem, language, source, id

A submission's problem is ``problem`` in its manifest, else the part of its
folder's name after the last ``--``, else the only problem there is.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

import attrs

from rustbox._errors import InvalidInput
from rustbox._judge import Submission, TestCase, load_tests
from rustbox._judge._checkers import Checker, parse_checker
from rustbox._judge._languages import EXTENSIONS
from rustbox._limits import Limits

_MANIFEST = "submission.toml"


@attrs.frozen
class Problem:
    """Test cases, and how to check them, shared by every submission for the problem."""

    id: str
    tests: tuple[TestCase, ...]
    checker: Checker = attrs.field(factory=lambda: parse_checker(None))
    limits: Limits | None = None  #: None: the language's judge limits


@attrs.frozen
class Entry:
    """One submission of a batch, or the reason it cannot be graded."""

    id: str
    problem: str | None
    submission: Submission | None
    error: str | None = None


def _toml(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def load_problem(path: str) -> Problem:
    """A problem folder: tests (in ``tests/`` or the folder itself), ``problem.toml``."""
    problem_id = os.path.basename(os.path.normpath(path))
    config: dict[str, Any] = {}
    manifest = os.path.join(path, "problem.toml")
    if os.path.exists(manifest):
        try:
            config = _toml(manifest)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"problem {problem_id}", f"problem.toml: {exc}") from None
    tests_dir = os.path.join(path, "tests")
    tests = load_tests(tests_dir if os.path.isdir(tests_dir) else path)
    limits = None
    if "limits" in config:
        if not isinstance(config["limits"], Mapping):
            raise InvalidInput(f"problem {problem_id}: limits", "expected a table")
        try:
            limits = Limits(**config["limits"])
        except TypeError as exc:
            raise InvalidInput(f"problem {problem_id}: limits", str(exc)) from None
    return Problem(problem_id, tuple(tests), parse_checker(config.get("checker")), limits)


def load_problems(directory: str) -> dict[str, Problem]:
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise InvalidInput("problems", f"cannot read {directory!r}: {exc.strerror}") from None
    problems = {}
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            problems[name] = load_problem(path)
    if not problems:
        raise InvalidInput("problems", f"{directory}: no problem folders")
    return problems


def load_entry(path: str, problems: Mapping[str, Problem]) -> Entry:
    """One submission folder; a problem with it is reported in ``error``, never raised."""
    entry_id = os.path.basename(os.path.normpath(path))
    try:
        manifest: dict[str, Any] = {}
        if os.path.exists(os.path.join(path, _MANIFEST)):
            manifest = _toml(os.path.join(path, _MANIFEST))
        entry_id = str(manifest.get("id", entry_id))
        problem = manifest.get("problem")
        if problem is None and "--" in entry_id:
            problem = entry_id.rsplit("--", 1)[1]
        if problem is None and len(problems) == 1:
            problem = next(iter(problems))
        if problem is None:
            return Entry(
                entry_id,
                None,
                None,
                "no problem: set it in submission.toml or name the folder NAME--PROBLEM",
            )
        if problem not in problems:
            return Entry(entry_id, str(problem), None, f"unknown problem {problem!r}")
        source = manifest.get("source")
        if source is None:
            sources = [
                n for n in sorted(os.listdir(path)) if n != _MANIFEST and not n.startswith(".")
            ]
            if len(sources) != 1:
                found = ", ".join(sources) or "none"
                return Entry(
                    entry_id, str(problem), None, f"expected one source file, found {found}"
                )
            source = sources[0]
        language = manifest.get("language")
        if language is None:
            extension = os.path.splitext(source)[1].lower()
            language = EXTENSIONS.get(extension)
            if language is None:
                return Entry(
                    entry_id, str(problem), None, f"unknown extension {extension!r} of {source}"
                )
        with open(os.path.join(path, source), encoding="utf-8") as f:
            code = f.read()
        return Entry(entry_id, str(problem), Submission(str(language), code))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, InvalidInput) as exc:
        return Entry(entry_id, None, None, f"{type(exc).__name__}: {exc}")


def load_entries(directory: str, problems: Mapping[str, Problem]) -> list[Entry]:
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise InvalidInput("submissions", f"cannot read {directory!r}: {exc.strerror}") from None
    return [
        load_entry(os.path.join(directory, name), problems)
        for name in names
        if os.path.isdir(os.path.join(directory, name))
    ]
