"""rustbox: run untrusted code in kernel-enforced Linux sandboxes, from asyncio or trio.

::

    async with rustbox.Supervisor() as sv:
        result = await sv.run(["/usr/bin/python3", "x.py"], files={"x.py": b"print(42)"})
        print(result.status, result.stdout)
"""

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
from rustbox._limits import Limits, parse_size
from rustbox._result import Action, CgroupFigures, Evidence, Result, Status, StreamReport
from rustbox._supervisor import File, Supervisor, run

__version__ = "0.1.0"

__all__ = [
    "Action",
    "CgroupFigures",
    "CommandNotFound",
    "Evidence",
    "File",
    "HostUnsupported",
    "InvalidInput",
    "LauncherDied",
    "Limits",
    "Result",
    "RustboxError",
    "SandboxSetupError",
    "Status",
    "StreamReport",
    "Supervisor",
    "SyscallError",
    "UidPool",
    "UidPoolExhausted",
    "__version__",
    "parse_size",
    "run",
]
