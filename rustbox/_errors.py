"""The exception hierarchy.

Every error rustbox raises derives from :class:`RustboxError`, so a caller can
catch the whole family; the subclasses say whose fault it was: the caller's
input, the host's missing capabilities, or rustbox itself.
"""

from __future__ import annotations

import errno as _errno
import os


class RustboxError(Exception):
    """Base class of every error raised by rustbox."""


class InvalidInput(RustboxError, ValueError):
    """The caller asked for something impossible; ``field`` names what."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class HostUnsupported(RustboxError):
    """A control cannot be applied on this host, so strict mode refuses to run.

    ``missing`` lists each control that is unavailable, in words an operator
    can act on.
    """

    def __init__(self, missing: list[str]) -> None:
        self.missing = tuple(missing)
        super().__init__("strict isolation is unavailable on this host: " + "; ".join(self.missing))


class SandboxSetupError(RustboxError):
    """The sandbox could not be built (a stage of the isolation chain failed)."""

    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(f"sandbox setup failed at stage {stage!r}: {detail}")
        self.stage = stage
        self.detail = detail


class CommandNotFound(InvalidInput):
    """The command to run does not exist inside the sandbox."""

    def __init__(self, command: str, detail: str) -> None:
        super().__init__("command", f"{command!r} {detail}")
        self.command = command


class LauncherDied(RustboxError):
    """The launcher helper exited; the supervisor cannot start new runs."""


class SyscallError(RustboxError, OSError):
    """A system call failed; the message names the call and the errno."""

    def __init__(self, syscall: str, err: int, detail: str = "") -> None:
        name = _errno.errorcode.get(err, str(err))
        message = f"{syscall}: {name} ({os.strerror(err)})"
        if detail:
            message += f" [{detail}]"
        OSError.__init__(self, err, message)
        self.syscall = syscall
        self.detail = detail

    def __str__(self) -> str:
        return str(self.args[1])

    def __reduce__(self) -> tuple[type[SyscallError], tuple[str, int, str]]:
        return (SyscallError, (self.syscall, self.errno or 0, self.detail))
