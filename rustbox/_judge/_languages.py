"""Languages: how to compile and run each, and the limits a judge gives it.

The built-in table matches the Rust rustbox's judge profile (clients rely on
its limits, e.g. a C program sees RLIMIT_FSIZE 1 MiB, RLIMIT_NPROC 8,
RLIMIT_NOFILE 32). A TOML file can override any field or add languages.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from rustbox._errors import InvalidInput
from rustbox._limits import Limits, MiB

#: Environment of every judge step; the compilers need little more than PATH.
BASE_ENV = (("PATH", "/usr/local/bin:/usr/bin:/bin"), ("HOME", "/box"), ("LANG", "C.UTF-8"))

#: A source file's language, by extension (the batch layout and ``rustbox judge``).
EXTENSIONS = {
    ".py": "python",
    ".c": "c",
    ".cpp": "cpp",
    ".cc": "cpp",
    ".cxx": "cpp",
    ".java": "java",
    ".js": "javascript",
    ".ts": "typescript",
    ".go": "go",
    ".rs": "rust",
}

_JAVA_CLASS = re.compile(r"public\s+(?:(?:final|abstract|strictfp)\s+)*class\s+([A-Za-z_$][\w$]*)")
# Comments, string and char literals: where "public class X" does not count.
_JAVA_NOISE = re.compile(
    r'//[^\n]*|/\*.*?\*/|"""(?:.|\n)*?"""|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'',
    re.DOTALL,
)
#: Share of a run's memory limit a managed runtime's heap may take (the JVM's -Xmx,
#: V8's old space): the rest is for code, stacks and the runtime itself.
HEAP_SHARE = 0.75


@attrs.frozen
class Language:
    """One language. Commands are argv lists; ``{source}``, ``{class}`` are filled in."""

    name: str
    aliases: tuple[str, ...]
    source: str  #: file name of the submission in /box
    run: tuple[str, ...]
    run_limits: Limits
    compile: tuple[str, ...] | None = None
    compile_limits: Limits | None = None
    artifacts: tuple[str, ...] = ()  #: files the compile step leaves for the run step
    env: tuple[tuple[str, str], ...] = BASE_ENV
    binds: tuple[str, ...] = ()  #: toolchain directories outside /usr, bound read-only
    version: tuple[str, ...] = ()  #: host command printing the toolchain's version
    #: What the runtime prints when its own heap limit (sized from the memory
    #: limit) stops the program: that failure is MLE, not RE.
    oom_markers: tuple[str, ...] = ()

    def reports_oom(self, stderr: bytes) -> bool:
        tail = stderr[-65536:]
        return any(marker.encode() in tail for marker in self.oom_markers)

    def class_name(self, code: str) -> str:
        """Java's public class (the file must be named after it), else ``Main``."""
        if self.name != "java":
            return "Main"
        match = _JAVA_CLASS.search(_JAVA_NOISE.sub(" ", code))
        return match.group(1) if match else "Main"

    def fill(self, argv: Iterable[str], code: str, limits: Limits | None = None) -> tuple[str, ...]:
        """Fill ``{source}``, ``{class}``, ``{memory_mb}`` and ``{heap_mb}`` into a command.

        ``{heap_mb}`` is HEAP_SHARE of the run's memory limit, so a managed
        runtime's heap follows the limit the run really has (per profile, per case).
        """
        memory = (limits or self.run_limits).memory
        values = {
            "source": self.source_name(code),
            "class": self.class_name(code),
            "memory_mb": str(memory // MiB),
            "heap_mb": str(max(16, int(memory * HEAP_SHARE) // MiB)),
        }
        return tuple(arg.format(**values) for arg in argv)

    def source_name(self, code: str) -> str:
        return self.source.format(**{"class": self.class_name(code)})


def _judge(mem: int, cpu: float, wall: float, procs: int, nofile: int, fsize: int) -> Limits:
    return Limits(
        memory=mem * MiB,
        cpu_time=cpu,
        wall_time=wall,
        processes=procs,
        nproc=procs,
        open_files=nofile,
        file_size=fsize * MiB,
    )


def _compile_limits(mem: int = 1024, procs: int = 1024) -> Limits:
    return Limits(
        memory=mem * MiB,
        cpu_time=15,
        wall_time=30,
        processes=procs,
        open_files=512,
        file_size=128 * MiB,
        box_size=512 * MiB,
        box_inodes=16384,
        tmp_size=512 * MiB,
        stdout_max=1 * MiB,
        stderr_max=1 * MiB,
    )


def _rust_sysroot() -> str | None:
    """Where rustup keeps the toolchain (outside /usr, so it must be bound)."""
    rustc = shutil.which("rustc") or os.path.expanduser("~/.cargo/bin/rustc")
    if not os.path.exists(rustc):
        return None
    try:
        out = subprocess.run(
            [rustc, "--print", "sysroot"], capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sysroot = out.stdout.strip()
    return sysroot if sysroot.startswith("/") and not sysroot.startswith("/usr/") else None


def _java_config() -> tuple[str, ...]:
    """Debian keeps the JDK's conf files in /etc/java-N-openjdk (linked from /usr/lib/jvm)."""
    return tuple(sorted(glob.glob("/etc/java-*-openjdk")))


def builtin_languages() -> dict[str, Language]:
    """The default table (the judge profile of DESIGN.md)."""
    sysroot = _rust_sysroot()
    rustc = f"{sysroot}/bin/rustc" if sysroot else "/usr/bin/rustc"
    go_env = (
        *BASE_ENV,
        ("GOCACHE", "/tmp/go-cache"),
        ("GOPATH", "/tmp/go"),
        ("GOTMPDIR", "/box/.go-tmp"),
        ("CGO_ENABLED", "0"),
    )
    languages = [
        Language(
            name="python",
            aliases=("py", "python3"),
            source="main.py",
            run=("/usr/bin/python3", "-S", "{source}"),
            run_limits=_judge(256, 4, 7, 10, 32, 1),
            version=("/usr/bin/python3", "--version"),
        ),
        Language(
            name="c",
            aliases=("gcc",),
            source="main.c",
            compile=("/usr/bin/gcc", "-O2", "-std=gnu17", "-pipe", "-o", "main", "{source}", "-lm"),
            compile_limits=_compile_limits(),
            artifacts=("main",),
            run=("./main",),
            run_limits=_judge(256, 8, 10, 8, 32, 1),
            version=("/usr/bin/gcc", "--version"),
        ),
        Language(
            name="cpp",
            aliases=("c++", "cc", "cxx", "g++"),
            source="main.cpp",
            compile=("/usr/bin/g++", "-O2", "-std=gnu++17", "-pipe", "-o", "main", "{source}"),
            compile_limits=_compile_limits(),
            artifacts=("main",),
            run=("./main",),
            run_limits=_judge(256, 8, 10, 8, 64, 1),
            version=("/usr/bin/g++", "--version"),
        ),
        Language(
            name="java",
            aliases=("java17",),
            source="{class}.java",
            compile=(
                "/bin/sh",
                "-c",
                # The file name is an argument, never shell text ($ is legal in Java names).
                'javac -J-Xss64m -J-XX:-UsePerfData -encoding UTF-8 -d classes "$1" '
                "&& jar -J-XX:-UsePerfData cf main.jar -C classes .",
                "javac",
                "{source}",
            ),
            compile_limits=_compile_limits(mem=1024),
            artifacts=("main.jar",),
            run=(
                "/usr/bin/java",
                "-XX:-UsePerfData",
                "-XX:+UseSerialGC",
                "-Xss64m",
                "-Xmx{heap_mb}m",
                "-cp",
                "main.jar",
                "{class}",
            ),
            run_limits=_judge(512, 8, 10, 1024, 128, 2),
            binds=_java_config(),
            oom_markers=("java.lang.OutOfMemoryError",),
            version=("/usr/bin/java", "-version"),
        ),
        Language(
            name="javascript",
            aliases=("js", "node", "nodejs"),
            source="main.js",
            run=("/usr/bin/node", "--max-old-space-size={heap_mb}", "{source}"),
            run_limits=_judge(512, 8, 12, 16, 64, 1),
            version=("/usr/bin/node", "--version"),
            oom_markers=("JavaScript heap out of memory",),
        ),
        Language(
            name="typescript",
            aliases=("ts",),
            source="main.ts",
            compile=(
                "esbuild",
                "{source}",
                "--outfile=main.js",
                "--format=cjs",
                "--platform=node",
                "--log-level=warning",
            ),
            compile_limits=_compile_limits(),
            artifacts=("main.js",),
            run=("/usr/bin/node", "--max-old-space-size={heap_mb}", "main.js"),
            run_limits=_judge(512, 8, 12, 16, 128, 1),
            version=("esbuild", "--version"),
            oom_markers=("JavaScript heap out of memory",),
        ),
        Language(
            name="go",
            aliases=("golang",),
            source="main.go",
            compile=(
                "/bin/sh",
                "-c",
                "mkdir -p /box/.go-tmp && exec go build -o main {source}",
            ),
            compile_limits=_compile_limits(),
            artifacts=("main",),
            run=("./main",),
            run_limits=_judge(256, 8, 10, 1024, 64, 1),
            env=go_env,
            version=("/usr/bin/go", "version"),
        ),
        Language(
            name="rust",
            aliases=("rs",),
            source="main.rs",
            compile=(rustc, "--edition=2021", "-O", "-o", "main", "{source}"),
            compile_limits=_compile_limits(),
            artifacts=("main",),
            run=("./main",),
            run_limits=_judge(256, 8, 15, 64, 64, 1),
            binds=(sysroot,) if sysroot else (),
            version=(rustc, "--version"),
        ),
    ]
    return {language.name: language for language in languages}


def executor_profile(language: Language) -> Language:
    """Relaxed limits for agents and notebooks: 2 GiB, 60 s wall, 64 processes."""
    limits = attrs.evolve(
        language.run_limits,
        memory=2048 * MiB,
        cpu_time=30,
        wall_time=60,
        processes=max(64, language.run_limits.processes),
        nproc=max(64, language.run_limits.processes),
        open_files=max(256, language.run_limits.open_files),
        file_size=64 * MiB,
        box_size=256 * MiB,
    )
    return attrs.evolve(language, run_limits=limits)


@attrs.frozen
class LanguageTable:
    """The languages a judge knows, by name and alias."""

    languages: Mapping[str, Language] = attrs.field(factory=builtin_languages)

    def get(self, name: str) -> Language:
        if not isinstance(name, str) or not name:
            raise InvalidInput("language", f"expected a language name, got {name!r}")
        key = name.strip().lower()
        for language in self.languages.values():
            if key == language.name or key in language.aliases:
                return language
        known = ", ".join(sorted(self.languages))
        raise InvalidInput("language", f"unknown language {name!r}; available: {known}")

    def binds(self) -> tuple[str, ...]:
        """Every toolchain directory to bind into the sandboxes."""
        out: list[str] = []
        for language in self.languages.values():
            out += [b for b in language.binds if b not in out]
        return tuple(out)

    @classmethod
    def from_file(cls, path: str) -> LanguageTable:
        """The built-in table with a TOML file's overrides applied.

        ::

            [languages.python]
            run = ["/usr/bin/python3", "-S", "{source}"]
            [languages.python.run_limits]
            memory = "512M"
            cpu_time = 2

            [languages.kotlin]          # a new language needs source, run, run_limits
            source = "main.kt"
            ...
        """
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise InvalidInput("config", f"cannot read {path!r}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput("config", f"{path}: {exc}") from None
        return cls.from_mapping(data, where=path)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "config") -> LanguageTable:
        table = dict(builtin_languages())
        entries = data.get("languages", {})
        if not isinstance(entries, Mapping):
            raise InvalidInput(f"{where}: languages", "expected a table of languages")
        for name, entry in entries.items():
            field = f"{where}: languages.{name}"
            if not isinstance(entry, Mapping):
                raise InvalidInput(field, "expected a table")
            base = table.get(name)
            values: dict[str, Any] = {} if base is None else attrs.asdict(base, recurse=False)
            values["name"] = name
            for key, value in entry.items():
                values[key] = _convert(field, key, value, base)
            missing = {"source", "run", "run_limits"} - values.keys()
            if missing:
                raise InvalidInput(field, f"a new language needs {', '.join(sorted(missing))}")
            try:
                table[name] = Language(**values)
            except TypeError as exc:
                raise InvalidInput(field, str(exc)) from None
        return cls(table)


def _convert(field: str, key: str, value: Any, base: Language | None) -> Any:
    if key in ("run_limits", "compile_limits"):
        if not isinstance(value, Mapping):
            raise InvalidInput(f"{field}.{key}", "expected a table of limits")
        start = getattr(base, key, None) if base is not None else None
        given = dict(value)
        try:
            return attrs.evolve(start, **given) if isinstance(start, Limits) else Limits(**given)
        except TypeError as exc:
            raise InvalidInput(f"{field}.{key}", str(exc)) from None
        except InvalidInput as exc:
            raise InvalidInput(f"{field}.{key}.{exc.field}", exc.problem) from None
    if key in ("run", "compile", "aliases", "artifacts", "binds", "version", "oom_markers"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"{field}.{key}", "expected a list of strings")
        return tuple(value)
    if key == "env":
        if not isinstance(value, Mapping):
            raise InvalidInput(f"{field}.env", "expected a table of strings")
        return tuple((str(k), str(v)) for k, v in value.items())
    if key == "source":
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"{field}.source", "expected a file name")
        return value
    raise InvalidInput(f"{field}.{key}", "unknown setting")


@attrs.frozen
class Toolchain:
    language: str
    available: bool
    version: str  #: first line the toolchain printed, or why it is missing


def probe_toolchains(table: LanguageTable) -> list[Toolchain]:
    """Which toolchains this host has (for ``rustbox languages``)."""
    out = []
    for language in table.languages.values():
        command = language.version
        if not command:
            out.append(Toolchain(language.name, True, "(no version command)"))
            continue
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
            text = (proc.stdout or proc.stderr).strip().splitlines()
            ok = proc.returncode == 0
            out.append(Toolchain(language.name, ok, text[0] if text else f"exit {proc.returncode}"))
        except OSError as exc:
            out.append(Toolchain(language.name, False, f"missing: {command[0]} ({exc.strerror})"))
        except subprocess.SubprocessError as exc:
            out.append(Toolchain(language.name, False, f"{command[0]}: {exc}"))
    return out
