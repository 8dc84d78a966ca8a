"""``rustbox execute-code``, ``rustbox judge`` and ``rustbox languages``, run as real processes.

Exit codes: 0 accepted, 1 any other verdict, 2 bad input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

LANGUAGES = ("python", "c", "cpp", "java", "javascript", "typescript", "go", "rust")

SUM_CPP = """\
#include <iostream>
int main() { long long a, b; std::cin >> a >> b; std::cout << a + b << "\\n"; }
"""


def rustbox(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rustbox", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def execute(*args: str) -> tuple[int, dict[str, object], str]:
    proc = rustbox("execute-code", *args)
    assert proc.stdout.startswith("{\n  "), (proc.returncode, proc.stdout, proc.stderr)
    return proc.returncode, json.loads(proc.stdout), proc.stdout


# -- execute-code ---------------------------------------------------------------------


def test_execute_code_python() -> None:
    code, report, text = execute("--language", "py", "--code", "print(42)")
    assert code == 0
    assert text.startswith('{\n  "language": "python",\n')  # pretty JSON
    assert report["verdict"] == "AC"
    assert report["status"] == "OK"
    assert report["stdout"] == "42\n"
    assert report["exit_code"] == 0
    assert report["compile"] is None
    evidence = report["evidence_bundle"]
    assert isinstance(evidence, dict) and evidence["mode"] == "strict"
    assert isinstance(report["cases"], list) and len(report["cases"]) == 1


@pytest.mark.parametrize(
    ("alias", "language", "code"),
    [
        ("cc", "cpp", '#include <cstdio>\nint main() { std::puts("hi"); }'),
        ("c++", "cpp", '#include <iostream>\nint main() { std::cout << "hi\\n"; }'),
        ("js", "javascript", 'console.log("hi")'),
        ("ts", "typescript", 'const s: string = "hi";\nconsole.log(s)'),
        ("rs", "rust", 'fn main() { println!("hi"); }'),
    ],
)
def test_execute_code_aliases(alias: str, language: str, code: str) -> None:
    rc, report, _ = execute("-l", alias, "-c", code)
    assert rc == 0, report
    assert report["language"] == language
    assert report["verdict"] == "AC"
    assert report["stdout"] == "hi\n"
    if language != "javascript":
        assert isinstance(report["compile"], dict) and report["compile"]["ok"] is True


def test_execute_code_stdin() -> None:
    rc, report, _ = execute(
        "-l", "python", "--stdin", "3 4\n", "-c", "print(sum(map(int, input().split())))"
    )
    assert rc == 0
    assert report["stdout"] == "7\n"


def test_execute_code_failure_exits_1() -> None:
    rc, report, _ = execute("-l", "py", "-c", "import sys\nprint('partial')\nsys.exit(3)")
    assert rc == 1
    assert report["verdict"] == "RE"
    assert report["status"] == "RE"
    assert report["exit_code"] == 3
    assert report["stdout"] == "partial\n"


def test_execute_code_compile_error_exits_1() -> None:
    rc, report, _ = execute("-l", "c", "-c", "int main(void) { return nope; }")
    assert rc == 1
    assert report["verdict"] == "CE"
    compiled = report["compile"]
    assert isinstance(compiled, dict) and compiled["ok"] is False
    assert "nope" in str(compiled["stderr"])


def test_execute_code_unknown_language_exits_2() -> None:
    proc = rustbox("execute-code", "--language", "cobol", "--code", "DISPLAY 'HI'.")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "unknown language 'cobol'" in proc.stderr
    for name in LANGUAGES:
        assert name in proc.stderr


@pytest.mark.parametrize("code", ["", "   "])
def test_execute_code_empty_code_exits_2(code: str) -> None:
    proc = rustbox("execute-code", "-l", "py", "-c", code)
    assert proc.returncode == 2
    assert "code" in proc.stderr


def test_execute_code_mem_in_megabytes() -> None:
    hog = "b = bytearray(100 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nprint('ok')"
    rc, report, _ = execute("-l", "py", "--mem", "64", "-c", hog)
    assert rc == 1
    assert report["verdict"] == "MLE"
    evidence = report["evidence_bundle"]
    assert isinstance(evidence, dict)
    assert evidence["cgroup"]["memory_limit"] == 64 << 20
    # Without --mem the language's 256 MiB leave room for it.
    rc, report, _ = execute("-l", "py", "-c", hog)
    assert rc == 0, report
    assert report["stdout"] == "ok\n"


def test_execute_code_time_limit() -> None:
    rc, report, _ = execute("-l", "py", "--time", "0.5", "-c", "while True:\n    pass")
    assert rc == 1
    assert report["verdict"] == "TLE"
    assert str(report["verdict_provenance"]).endswith("(cpu time)")
    cases = report["cases"]
    assert isinstance(cases, list) and cases[0]["tle"] == "cpu"


def test_execute_code_config(tmp_path: Path) -> None:
    config = tmp_path / "languages.toml"
    config.write_text(
        '[languages.shell]\naliases = ["sh"]\nsource = "main.sh"\nrun = ["/bin/sh", "{source}"]\n'
        '[languages.shell.run_limits]\nmemory = "64M"\n'
    )
    rc, report, _ = execute("--config", str(config), "-l", "sh", "-c", "echo from shell")
    assert rc == 0, report
    assert report["language"] == "shell"
    assert report["stdout"] == "from shell\n"


# -- judge ----------------------------------------------------------------------------


def make_tests(directory: Path, pairs: dict[str, tuple[str, str]]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, (given, expected) in pairs.items():
        (directory / f"{name}.in").write_text(given)
        (directory / f"{name}.out").write_text(expected)
    return directory


@pytest.fixture
def sum_tests(tmp_path: Path) -> Path:
    return make_tests(
        tmp_path / "tests",
        {"1": ("3 4\n", "7\n"), "2": ("10 -20\n", "-10\n"), "10": ("0 0\n", "0\n")},
    )


def test_judge_cpp_accepted(tmp_path: Path, sum_tests: Path) -> None:
    source = tmp_path / "sol.cpp"
    source.write_text(SUM_CPP)
    proc = rustbox("judge", "--source", str(source), "--tests", str(sum_tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "verdict: AC  (all 3 cases accepted (3 checked against expected output))"
    assert lines[1].startswith("compile: OK cpu=")
    # One line per case, in natural order (2 before 10).
    assert [line.split()[0] for line in lines[2:]] == ["1", "2", "10"]
    assert all(line.split()[1] == "AC" for line in lines[2:])


def test_judge_wrong_answer_exits_1(tmp_path: Path, sum_tests: Path) -> None:
    source = tmp_path / "sol.py"
    source.write_text("a, b = map(int, input().split())\nprint(a * b)\n")
    proc = rustbox("judge", "--source", str(source), "--tests", str(sum_tests))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("verdict: WA  (case 1: tokens: token 1: expected '7', got '12')")
    assert "compile:" not in proc.stdout  # python has no compile step


def test_judge_json(tmp_path: Path, sum_tests: Path) -> None:
    source = tmp_path / "sol.cpp"
    source.write_text(SUM_CPP.replace("a + b", "a - b"))
    proc = rustbox("judge", "-l", "c++", "-s", str(source), "-t", str(sum_tests), "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["language"] == "cpp"
    assert report["verdict"] == "WA"
    assert [c["name"] for c in report["cases"]] == ["1", "2", "10"]
    assert [c["verdict"] for c in report["cases"]] == ["WA", "WA", "AC"]
    assert report["compile"]["ok"] is True
    assert report["stdout"] == "-1\n"  # the deciding case's


def test_judge_stop_on_failure(tmp_path: Path, sum_tests: Path) -> None:
    source = tmp_path / "sol.py"
    source.write_text("a, b = map(int, input().split())\nprint(a * b)\n")
    proc = rustbox("judge", "-s", str(source), "-t", str(sum_tests), "--stop-on-failure", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert [c["name"] for c in report["cases"]] == ["1"]


def test_judge_float_checker(tmp_path: Path) -> None:
    tests = make_tests(tmp_path / "tests", {"third": ("1 3\n", "0.333333333\n")})
    source = tmp_path / "div.py"
    source.write_text("a, b = map(int, input().split())\nprint(f'{a / b:.4f}')\n")
    proc = rustbox("judge", "-s", str(source), "-t", str(tests), "--checker", "float:1e-3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("verdict: AC")
    proc = rustbox("judge", "-s", str(source), "-t", str(tests), "--checker", "float:1e-6")
    assert proc.returncode == 1
    assert "is not within 1e-06" in proc.stdout
    proc = rustbox("judge", "-s", str(source), "-t", str(tests))  # tokens
    assert proc.returncode == 1


CHECKER = """\
import sys
a, b = map(int, open("input").read().split())
out = open("output").read().split()
ok = len(out) == 1 and int(out[0]) == a + b
print("fine" if ok else "not the sum")
sys.exit(0 if ok else 1)
"""


def test_judge_checker_program(tmp_path: Path) -> None:
    # The expected outputs are deliberately useless: only the checker program decides.
    tests = make_tests(tmp_path / "tests", {"1": ("3 4\n", "?\n"), "2": ("5 5\n", "?\n")})
    checker = tmp_path / "check.py"
    checker.write_text(CHECKER)
    source = tmp_path / "sol.py"
    source.write_text("a, b = map(int, input().split())\nprint(f'{a + b:04d}')\n")
    proc = rustbox("judge", "-s", str(source), "-t", str(tests), "--checker", str(checker))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    source.write_text("a, b = map(int, input().split())\nprint(a * b)\n")
    proc = rustbox(
        "judge", "-s", str(source), "-t", str(tests), "--checker", str(checker), "--json"
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert [c["verdict"] for c in report["cases"]] == ["WA", "WA"]
    assert report["cases"][0]["checker"] == "custom checker rejected: not the sum"


def test_judge_unmatched_test_dir_exits_2(tmp_path: Path, sum_tests: Path) -> None:
    (sum_tests / "11.in").write_text("1 1\n")
    source = tmp_path / "sol.py"
    source.write_text("print(1)\n")
    proc = rustbox("judge", "-s", str(source), "-t", str(sum_tests))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "unmatched" in proc.stderr and "11.in" in proc.stderr


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--checker", "float:x"], "checker"),
        (["--checker", "bogus"], "checker"),
        (["-l", "cobol"], "cobol"),
    ],
)
def test_judge_bad_options_exit_2(
    tmp_path: Path, sum_tests: Path, args: list[str], names: str
) -> None:
    source = tmp_path / "sol.py"
    source.write_text("print(1)\n")
    proc = rustbox("judge", "-s", str(source), "-t", str(sum_tests), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert names in proc.stderr


def test_judge_unknown_extension_exits_2(tmp_path: Path, sum_tests: Path) -> None:
    source = tmp_path / "sol.cob"
    source.write_text("DISPLAY 'HI'.\n")
    proc = rustbox("judge", "-s", str(source), "-t", str(sum_tests))
    assert proc.returncode == 2
    assert "sol.cob" in proc.stderr and "--language" in proc.stderr


# -- languages --------------------------------------------------------------------------


def test_languages_lists_all_eight() -> None:
    proc = rustbox("languages")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(LANGUAGES)
    for line in lines:
        assert line.split()[1] == "ok", line
    assert "(aliases: py, python3)" in lines[0]


def test_languages_json() -> None:
    proc = rustbox("languages", "--json")
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)
    assert [e["language"] for e in entries] == list(LANGUAGES)
    for entry in entries:
        assert entry["available"] is True, entry
        assert entry["version"]
    by_name = {e["language"]: e for e in entries}
    assert "cc" in by_name["cpp"]["aliases"] and "rs" in by_name["rust"]["aliases"]
