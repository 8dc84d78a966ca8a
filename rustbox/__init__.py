"""rustbox: run untrusted code in kernel-enforced Linux sandboxes, from asyncio or trio.

::

    async with rustbox.Supervisor() as sv:
        result = await sv.run(["/usr/bin/python3", "x.py"], files={"x.py": b"print(42)"})
        print(result.status, result.stdout)
"""

from rustbox._batch import Entry, Graded, Problem, Supervisor, load_entries, load_problems
from rustbox._errors import (
    CommandNotFound,
    HostUnsupported,
    InvalidInput,
    LauncherDied,
    RustboxError,
    SandboxSetupError,
    SyscallError,
)
from rustbox._host import UidPool, UidPoolExhausted
from rustbox._judge import (
    CaseResult,
    CompileResult,
    CustomChecker,
    JudgeReport,
    Language,
    LanguageTable,
    Submission,
    TestCase,
    Verdict,
    load_tests,
)
from rustbox._limits import Limits, parse_size
from rustbox._result import Action, CgroupFigures, Evidence, Result, Status, StreamReport
from rustbox._supervisor import File, run

__version__ = "0.1.0"

__all__ = [
    "Action",
    "CaseResult",
    "CgroupFigures",
    "CommandNotFound",
    "CompileResult",
    "CustomChecker",
    "Entry",
    "Evidence",
    "File",
    "Graded",
    "HostUnsupported",
    "InvalidInput",
    "JudgeReport",
    "Language",
    "LanguageTable",
    "LauncherDied",
    "Limits",
    "Problem",
    "Result",
    "RustboxError",
    "SandboxSetupError",
    "Status",
    "StreamReport",
    "Submission",
    "Supervisor",
    "SyscallError",
    "TestCase",
    "UidPool",
    "UidPoolExhausted",
    "Verdict",
    "__version__",
    "load_entries",
    "load_problems",
    "load_tests",
    "parse_size",
    "run",
]
