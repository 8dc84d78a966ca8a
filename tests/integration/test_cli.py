"""The command line, run as a real process: JSON out, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REQUIRED_KEYS = {
    "status",
    "exit_code",
    "signal",
    "stdout",
    "stderr",
    "cpu_time",
    "wall_time",
    "memory_peak",
    "evidence",
}


def rustbox(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "rustbox", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_run_ok_prints_the_result_as_json(tmp_path: Path) -> None:
    solution = tmp_path / "solution.py"
    solution.write_text("print(input()[::-1])\n")
    given = tmp_path / "in.txt"
    given.write_text("hello\n")
    proc = rustbox(
        "run",
        "--mem",
        "256M",
        "--time",
        "2",
        "--wall-time",
        "5",
        "--processes",
        "8",
        "--file",
        str(solution),
        "--stdin",
        str(given),
        "--",
        "/usr/bin/python3",
        "solution.py",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result.keys() >= REQUIRED_KEYS
    assert result["status"] == "OK"
    assert result["stdout"] == "olleh\n"
    assert result["memory_peak"] > 0
    assert result["evidence"]["mode"] == "strict"


def test_run_other_verdicts_exit_1() -> None:
    proc = rustbox("run", "--time", "0.3", "--", "/usr/bin/python3", "-c", "while True: pass")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "TLE"
    assert result["tle"] == "cpu"


def test_run_collects_files_and_takes_stdin_from_a_pipe() -> None:
    proc = rustbox(
        "run",
        "--stdin",
        "-",
        "--collect",
        "out.txt",
        "--",
        "/bin/sh",
        "-c",
        "cat > out.txt; echo done",
        stdin=b"payload\n",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["stdout"] == "done\n"
    assert result["files"] == {"out.txt": "cGF5bG9hZAo="}


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["run", "--mem", "lots", "--", "/bin/true"], "memory"),
        (["run", "--time", "-1", "--", "/bin/true"], "cpu_time"),
        (["run", "--time", "5", "--wall-time", "1", "--", "/bin/true"], "wall_time"),
        (["run", "--processes", "0", "--", "/bin/true"], "processes"),
        (["run", "--", "/no/such/binary"], "command"),
        (["run"], "command"),
        (["run", "--file", "/no/such/file", "--", "/bin/true"], "--file"),
        (["run", "--stdin", "/no/such/file", "--", "/bin/true"], "--stdin"),
        (["run", "--bogus-flag", "--", "/bin/true"], "unrecognized"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_and_name_the_problem(args: list[str], names: str) -> None:
    proc = rustbox(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert names in proc.stderr.decode()
    assert proc.stdout == b""


def test_check_reports_the_host() -> None:
    text = rustbox("check")
    assert text.returncode == 0, text.stdout
    assert b"strict mode: available" in text.stdout
    data = json.loads(rustbox("check", "--json").stdout)
    assert data["strict_ok"] is True
    assert data["root"] is True
    assert data["cgroup"]["version"] in (1, 2)
    assert set(data["namespaces"]) == {"pid", "mount", "network", "ipc", "uts"}
    assert data["uid_pool"]["free"] > 0
