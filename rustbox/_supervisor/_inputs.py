"""Checking what a caller asks for, before any resource is taken."""

from __future__ import annotations

import functools
import os
import posixpath
from collections.abc import Mapping, Sequence

import attrs

from rustbox._errors import CommandNotFound, InvalidInput
from rustbox._sandbox._spec import DEFAULT_PATH, FileSpec

MAX_PATH_LENGTH = 1024


@attrs.frozen
class File:
    """A file for ``/box`` with an explicit mode (e.g. a compiled binary)."""

    data: bytes
    executable: bool = False


def box_path(path: object, field: str) -> str:
    """Validate a path relative to /box; refuse anything that could escape it."""
    if not isinstance(path, str) or not path:
        raise InvalidInput(field, f"expected a non-empty relative path, got {path!r}")
    if "\0" in path:
        raise InvalidInput(field, f"{path!r} contains a NUL byte")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidInput(field, f"path longer than {MAX_PATH_LENGTH} characters")
    relative = path.removeprefix("/box/") if path.startswith("/box/") else path
    if relative.startswith("/"):
        raise InvalidInput(field, f"{path!r} is outside /box (use a path relative to /box)")
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(field, f"{path!r} escapes /box or is not normalized")
    return relative


def files_spec(
    files: Mapping[str, bytes | str | File] | None, box_size: int
) -> tuple[FileSpec, ...]:
    if files is None:
        return ()
    if not isinstance(files, Mapping):
        raise InvalidInput(
            "files", f"expected a mapping of path to bytes, got {type(files).__name__}"
        )
    out: list[FileSpec] = []
    total = 0
    seen: set[str] = set()
    for name, value in files.items():
        path = box_path(name, f"files[{name!r}]")
        if path in seen:
            raise InvalidInput(f"files[{name!r}]", "given twice")
        seen.add(path)
        executable = False
        if isinstance(value, File):
            data, executable = value.data, value.executable
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InvalidInput(
                    f"files[{name!r}]", f"File.data must be bytes, got {type(data).__name__}"
                )
            data = bytes(data)
        elif isinstance(value, str):
            data = value.encode()
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
        else:
            raise InvalidInput(
                f"files[{name!r}]", f"expected bytes, str or File, got {type(value).__name__}"
            )
        total += len(data)
        out.append(FileSpec(path, data, 0o755 if executable else 0o644))
    if total > box_size:
        raise InvalidInput("files", f"{total} bytes do not fit in /box (box_size {box_size})")
    parents = {p.path.rsplit("/", 1)[0] for p in out if "/" in p.path}
    for clash in parents & seen:
        raise InvalidInput(f"files[{clash!r}]", "is both a file and a directory")
    return tuple(out)


def argv_spec(argv: object) -> tuple[str, ...]:
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence):
        raise InvalidInput(
            "command", "expected a list of strings such as ['/usr/bin/python3', 'x.py']"
        )
    if not argv:
        raise InvalidInput("command", "is empty: nothing to run")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise InvalidInput(f"command[{i}]", f"expected str, got {type(arg).__name__}")
        if "\0" in arg:
            raise InvalidInput(f"command[{i}]", "contains a NUL byte")
    if not argv[0]:
        raise InvalidInput("command[0]", "is an empty string")
    return tuple(argv)


def env_spec(env: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """The payload's whole environment: exactly what was given, never the caller's."""
    if env is None:
        return (("PATH", DEFAULT_PATH), ("HOME", "/box"), ("LANG", "C.UTF-8"))
    if not isinstance(env, Mapping):
        raise InvalidInput("env", f"expected a mapping, got {type(env).__name__}")
    out = []
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise InvalidInput(
                f"env[{key!r}]", "names must be non-empty strings without '=' or NUL"
            )
        if not isinstance(value, str) or "\0" in value:
            raise InvalidInput(f"env[{key!r}]", "values must be strings without NUL")
        out.append((key, value))
    return tuple(out)


def stdin_bytes(stdin: bytes | str | None, max_stdin: int) -> bytes:
    if stdin is None:
        return b""
    if isinstance(stdin, str):
        stdin = stdin.encode()
    if not isinstance(stdin, (bytes, bytearray, memoryview)):
        raise InvalidInput("stdin", f"expected bytes or str, got {type(stdin).__name__}")
    if len(stdin) > max_stdin:
        raise InvalidInput("stdin", f"{len(stdin)} bytes is over the {max_stdin}-byte limit")
    return bytes(stdin)


def cwd_path(cwd: str) -> str:
    if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
        raise InvalidInput("cwd", f"expected an absolute path inside the sandbox, got {cwd!r}")
    if posixpath.normpath(cwd) != cwd.rstrip("/") and cwd != "/":
        raise InvalidInput("cwd", f"{cwd!r} is not normalized")
    return cwd


@functools.lru_cache(maxsize=64)
def _real_binds(binds: tuple[str, ...]) -> tuple[str, ...]:
    """The binds' real paths: resolved once, they are host directories that stay put."""
    return tuple(os.path.realpath(bind).rstrip("/") for bind in binds)


@functools.lru_cache(maxsize=1024)
def _realpath(path: str) -> str:
    """Host paths of commands and toolchains resolve the same run after run; this
    check is only an early, friendly refusal (the sandbox decides for real)."""
    return os.path.realpath(path)


def _visible(path: str, binds: tuple[str, ...]) -> bool:
    real = _realpath(path)
    return any(real == root or real.startswith(root + "/") for root in _real_binds(binds))


def check_cwd(cwd: str, files: tuple[FileSpec, ...], binds: tuple[str, ...]) -> None:
    """The working directory must exist inside the sandbox when the program starts."""
    if cwd in ("/box", "/tmp"):
        return
    if cwd.startswith("/box/"):
        made = {"/box/" + f.path.rsplit("/", 1)[0] for f in files if "/" in f.path}
        prefixes = {p for d in made for p in _parents(d)}
        if cwd in prefixes:
            return
        raise InvalidInput("cwd", f"{cwd!r} does not exist in /box (no file in files is under it)")
    if not (_visible(cwd, binds) and os.path.isdir(cwd)):
        raise InvalidInput("cwd", f"{cwd!r} is not a directory inside the sandbox")


def _parents(path: str) -> list[str]:
    out = []
    while path not in ("/box", "/", ""):
        out.append(path)
        path = posixpath.dirname(path)
    return out


def check_command(
    argv: tuple[str, ...],
    env: tuple[tuple[str, str], ...],
    files: tuple[FileSpec, ...],
    binds: tuple[str, ...],
    cwd: str,
) -> None:
    """Refuse a command that cannot exist inside the sandbox, before it is built."""
    command = argv[0]
    box_files = {"/box/" + f.path: f for f in files}
    if "/" in command:
        path = command if command.startswith("/") else posixpath.join(cwd, command)
        path = posixpath.normpath(path)
        if path in box_files:
            if not box_files[path].mode & 0o111:
                raise CommandNotFound(
                    command,
                    "is in files but not executable (use rustbox.File(data, executable=True))",
                )
            return
        if path.startswith(("/box/", "/tmp/")):
            return  # made by an earlier step of the run itself; exec will say
        if not _visible(path, binds) or not os.access(path, os.X_OK) or os.path.isdir(path):
            raise CommandNotFound(command, "is not an executable inside the sandbox")
        return
    search = dict(env).get("PATH", "")
    for directory in search.split(":"):
        if not directory:
            continue
        candidate = posixpath.join(directory, command)
        if candidate in box_files:
            return
        if (
            _visible(candidate, binds)
            and os.access(candidate, os.X_OK)
            and not os.path.isdir(candidate)
        ):
            return
    raise CommandNotFound(command, f"was not found on the sandbox PATH {search!r}")
