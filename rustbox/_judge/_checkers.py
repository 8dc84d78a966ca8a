"""Checkers: does a program's output answer the test case?

Built-in checkers compare in the supervisor's process (they see only bytes).
A custom checker is a program, and it runs sandboxed like the submission: it
gets ``input``, ``expected`` and ``output`` files in /box and answers with its
exit code (0 accepted, 1 wrong answer, anything else a checker failure, IE).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import attrs

from rustbox._errors import InvalidInput


@attrs.frozen
class Checked:
    accepted: bool
    message: str  #: why, for the report (first difference, checker's words)


class BuiltinChecker(Protocol):
    name: str

    def check(self, expected: bytes, output: bytes) -> Checked: ...


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines()


def _show(token: bytes) -> str:
    """A token or line for a message: text, cut short."""
    return repr(token[:80].decode(errors="replace"))


@attrs.frozen
class ExactChecker:
    """Byte for byte, except a missing or extra final newline."""

    name: str = "exact"

    def check(self, expected: bytes, output: bytes) -> Checked:
        if expected.rstrip(b"\n") == output.rstrip(b"\n"):
            return Checked(True, "identical")
        want, got = _lines(expected), _lines(output)
        for number, (a, b) in enumerate(zip(want, got, strict=False), start=1):
            if a != b:
                return Checked(False, f"line {number} differs: expected {_show(a)}, got {_show(b)}")
        return Checked(False, f"expected {len(want)} lines, got {len(got)}")


@attrs.frozen
class TokenChecker:
    """Whitespace-insensitive: the same tokens in the same order (the default)."""

    name: str = "tokens"

    def check(self, expected: bytes, output: bytes) -> Checked:
        want, got = expected.split(), output.split()
        if want == got:
            return Checked(True, f"{len(want)} tokens match")
        for number, (a, b) in enumerate(zip(want, got, strict=False), start=1):
            if a != b:
                return Checked(False, f"token {number}: expected {_show(a)}, got {_show(b)}")
        return Checked(False, f"expected {len(want)} tokens, got {len(got)}")


@attrs.frozen
class FloatChecker:
    """Tokens, with numbers equal within an absolute or relative tolerance."""

    tolerance: float
    name: str = "float"

    def check(self, expected: bytes, output: bytes) -> Checked:
        want, got = expected.split(), output.split()
        if len(want) != len(got):
            return Checked(False, f"expected {len(want)} tokens, got {len(got)}")
        for number, (a, b) in enumerate(zip(want, got, strict=True), start=1):
            if a == b:
                continue
            try:
                x, y = float(a), float(b)
            except ValueError:
                return Checked(False, f"token {number}: expected {_show(a)}, got {_show(b)}")
            if not (math.isfinite(x) and math.isfinite(y)) or not math.isclose(
                x, y, rel_tol=self.tolerance, abs_tol=self.tolerance
            ):
                return Checked(
                    False, f"token {number}: {y!r} is not within {self.tolerance:g} of {x!r}"
                )
        return Checked(True, f"{len(want)} tokens match within {self.tolerance:g}")


# Runs a Python checker so that an uncaught exception is a checker failure (exit 3),
# not exit 1, which would read as "wrong answer".
_PYTHON_CHECKER = (
    "import runpy, sys, traceback\n"
    "try:\n"
    "    runpy.run_path(sys.argv[1], run_name='__main__')\n"
    "except SystemExit:\n"
    "    raise\n"
    "except BaseException:\n"
    "    traceback.print_exc()\n"
    "    sys.exit(3)\n"
)


@attrs.frozen
class CustomChecker:
    """A checker program, run sandboxed: ``command`` with ``files`` in /box.

    It finds ``input``, ``expected`` and ``output`` in its working directory and
    answers with its exit code: 0 accepted, 1 wrong answer, anything else (or a
    limit) is a checker failure, IE.
    """

    command: tuple[str, ...]
    files: tuple[tuple[str, bytes], ...] = ()
    name: str = "custom"

    @classmethod
    def python(cls, source: bytes, filename: str = "checker.py") -> CustomChecker:
        """A Python checker; an exception it does not catch is IE, never WA."""
        return cls(("/usr/bin/python3", filename), ((filename, source),))

    def argv(self) -> list[str]:
        """The command to run; ``python3 X.py`` runs X.py under the crash guard."""
        command = list(self.command)
        if (
            len(command) == 2
            and command[0].rsplit("/", 1)[-1].startswith("python")
            and command[1].endswith(".py")
        ):
            return [command[0], "-c", _PYTHON_CHECKER, command[1]]
        return command


Checker = ExactChecker | TokenChecker | FloatChecker | CustomChecker


def parse_checker(
    spec: str | Checker | None, custom_files: Sequence[tuple[str, bytes]] = ()
) -> Checker:
    """``exact``, ``tokens`` (default), ``float:1e-6``, or a checker object."""
    if spec is None:
        return TokenChecker()
    if isinstance(spec, (ExactChecker, TokenChecker, FloatChecker, CustomChecker)):
        return spec
    if not isinstance(spec, str):
        raise InvalidInput("checker", f"expected a checker name or object, got {spec!r}")
    if spec == "exact":
        return ExactChecker()
    if spec in ("tokens", "token", "whitespace"):
        return TokenChecker()
    if spec.startswith("float"):
        _, _, tolerance = spec.partition(":")
        try:
            value = float(tolerance or "1e-6")
        except ValueError:
            raise InvalidInput("checker", f"cannot parse the tolerance in {spec!r}") from None
        if not math.isfinite(value) or value < 0:
            raise InvalidInput("checker", f"tolerance must be a non-negative number, got {spec!r}")
        return FloatChecker(value)
    raise InvalidInput(
        "checker", f"unknown checker {spec!r}: use exact, tokens, float:EPS or a checker program"
    )
