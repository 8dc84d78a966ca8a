"""The judge: languages, compile-and-run, test cases, checkers, verdicts."""

from rustbox._judge._checkers import (
    CustomChecker,
    ExactChecker,
    FloatChecker,
    TokenChecker,
    parse_checker,
)
from rustbox._judge._judge import (
    CaseResult,
    CompileResult,
    JudgeReport,
    Submission,
    TestCase,
    Verdict,
    tests_from_mapping,
)
from rustbox._judge._languages import Language, LanguageTable, Toolchain, probe_toolchains
from rustbox._judge._supervisor import Supervisor
from rustbox._judge._tests_dir import load_tests

__all__ = [
    "CaseResult",
    "CompileResult",
    "CustomChecker",
    "ExactChecker",
    "FloatChecker",
    "JudgeReport",
    "Language",
    "LanguageTable",
    "Submission",
    "Supervisor",
    "TestCase",
    "TokenChecker",
    "Toolchain",
    "Verdict",
    "load_tests",
    "parse_checker",
    "probe_toolchains",
    "tests_from_mapping",
]
