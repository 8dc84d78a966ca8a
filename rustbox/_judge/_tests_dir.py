"""Test cases from a directory: ``NAME.in`` with ``NAME.out`` (or ``.ans``)."""

from __future__ import annotations

import os

from rustbox._errors import InvalidInput
from rustbox._judge._judge import TestCase

_INPUT = (".in", ".input")
_OUTPUT = (".out", ".ans", ".output", ".expected")


def _natural(name: str) -> tuple[object, ...]:
    """``2`` before ``10``: numbers compare as numbers."""
    parts: list[object] = []
    digits = ""
    for char in name:
        if char.isdigit():
            digits += char
            continue
        if digits:
            parts.append((0, int(digits)))
            digits = ""
        parts.append((1, char))
    if digits:
        parts.append((0, int(digits)))
    return tuple(parts)


def load_tests(directory: str) -> list[TestCase]:
    """Every ``NAME.in`` paired with ``NAME.out``/``.ans``; unmatched files are an error."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise InvalidInput("tests", f"cannot read {directory!r}: {exc.strerror}") from None
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext in _INPUT:
            inputs[stem] = name
        elif ext in _OUTPUT:
            if stem in outputs:
                raise InvalidInput("tests", f"{directory}: two expected outputs for {stem!r}")
            outputs[stem] = name
    unmatched = sorted((set(inputs) ^ set(outputs)), key=_natural)
    if unmatched:
        lonely = [inputs.get(stem) or outputs[stem] for stem in unmatched]
        raise InvalidInput(
            "tests",
            f"{directory}: unmatched files (each NAME.in needs NAME.out): {', '.join(lonely)}",
        )
    if not inputs:
        raise InvalidInput("tests", f"{directory}: no test cases (expected NAME.in + NAME.out)")
    cases = []
    for stem in sorted(inputs, key=_natural):
        with open(os.path.join(directory, inputs[stem]), "rb") as f:
            stdin = f.read()
        with open(os.path.join(directory, outputs[stem]), "rb") as f:
            expected = f.read()
        cases.append(TestCase(stdin=stdin, expected=expected, name=stem))
    return cases
