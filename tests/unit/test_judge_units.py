"""The judge's pure parts: checkers, the language table, test directories, inputs, reports.

No sandbox runs here (no root needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

import rustbox
from rustbox._judge import (
    CustomChecker,
    ExactChecker,
    FloatChecker,
    LanguageTable,
    TokenChecker,
    parse_checker,
)
from rustbox._judge import tests_from_mapping as cases_from_mapping  # (not a test itself)
from rustbox._judge._languages import executor_profile
from rustbox._limits import MiB

LANGUAGES = ("python", "c", "cpp", "java", "javascript", "typescript", "go", "rust")


@pytest.fixture(scope="module")
def table() -> LanguageTable:
    return LanguageTable()


# -- checkers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "output", "accepted"),
    [
        (b"1 2\n", b"1 2\n", True),
        (b"1 2\n", b"1 2", True),  # a missing final newline
        (b"1 2", b"1 2\n", True),  # an extra one
        (b"", b"", True),
        (b"1 2\n", b"1 2  \n", False),  # trailing spaces
        (b"1 2\n", b"1  2\n", False),
        (b"1 2\n", b"1 2\n\n", True),  # (rstrip of newlines: any number of them)
        (b"1\n2\n", b"1\n", False),
        (b"1\n2\n", b"1\r\n2\r\n", False),  # CRLF is a different byte
    ],
)
def test_exact_checker(expected: bytes, output: bytes, accepted: bool) -> None:
    assert ExactChecker().check(expected, output).accepted is accepted


def test_exact_checker_messages() -> None:
    checker = ExactChecker()
    assert checker.name == "exact"
    assert checker.check(b"a\n", b"a\n").message == "identical"
    assert checker.check(b"a\nb\n", b"a\nc\n").message == "line 2 differs: expected 'b', got 'c'"
    assert checker.check(b"a\nb\n", b"a\n").message == "expected 2 lines, got 1"
    long = checker.check(b"x" * 200, b"y" * 200).message
    assert long == f"line 1 differs: expected {'x' * 80!r}, got {'y' * 80!r}"  # cut short


@pytest.mark.parametrize(
    ("expected", "output", "accepted"),
    [
        (b"1 2\n", b"1   2", True),
        (b"1 2\n", b"\n\n1\n\t2\n\n", True),
        (b"", b"  \n", True),
        (b"1 2\n", b"1 2 3\n", False),
        (b"1 2\n", b"2 1\n", False),
        (b"1.0\n", b"1\n", False),  # tokens are compared as text
    ],
)
def test_token_checker(expected: bytes, output: bytes, accepted: bool) -> None:
    assert TokenChecker().check(expected, output).accepted is accepted


def test_token_checker_messages() -> None:
    checker = TokenChecker()
    assert checker.name == "tokens"
    assert checker.check(b"a b", b"a  b").message == "2 tokens match"
    assert checker.check(b"a b", b"a c").message == "token 2: expected 'b', got 'c'"
    assert checker.check(b"a b", b"a").message == "expected 2 tokens, got 1"
    # Undecodable bytes do not break the message.
    assert "token 1" in checker.check(b"a", b"\xff").message


@pytest.mark.parametrize(
    ("expected", "output", "accepted"),
    [
        (b"0.3333333", b"0.33333333", True),
        (b"0.3333333", b"0.34", False),
        (b"0", b"1e-7", True),  # absolute tolerance
        (b"0", b"1e-5", False),
        (b"1000000", b"1000000.5", True),  # relative tolerance
        (b"2", b"2.0000000", True),
        (b"1 2", b"1.0000001 2.0000001", True),
        (b"abc 1", b"abc 1", True),  # equal non-numbers are fine
        (b"abc", b"abd", False),
        (b"1", b"nan", False),
        (b"inf", b"inf", True),  # identical text
        (b"inf", b"1e308", False),
        (b"1 2", b"1", False),
    ],
)
def test_float_checker(expected: bytes, output: bytes, accepted: bool) -> None:
    assert FloatChecker(1e-6).check(expected, output).accepted is accepted


def test_float_checker_messages() -> None:
    checker = FloatChecker(1e-6)
    assert checker.name == "float"
    assert checker.check(b"0.5", b"0.5000001").message == "1 tokens match within 1e-06"
    assert checker.check(b"0.5", b"0.6").message == "token 1: 0.6 is not within 1e-06 of 0.5"
    assert checker.check(b"x", b"y").message == "token 1: expected 'x', got 'y'"
    assert checker.check(b"1 2", b"1").message == "expected 2 tokens, got 1"
    assert FloatChecker(0.0).check(b"1", b"1.0").accepted


def test_parse_checker() -> None:
    assert parse_checker(None) == TokenChecker()
    assert parse_checker("tokens") == TokenChecker()
    assert parse_checker("token") == TokenChecker()
    assert parse_checker("whitespace") == TokenChecker()
    assert parse_checker("exact") == ExactChecker()
    assert parse_checker("float") == FloatChecker(1e-6)
    assert parse_checker("float:1e-3") == FloatChecker(1e-3)
    assert parse_checker("float:0") == FloatChecker(0.0)
    custom = CustomChecker(("/usr/bin/python3", "c.py"), (("c.py", b"pass"),))
    assert parse_checker(custom) is custom
    exact = ExactChecker()
    assert parse_checker(exact) is exact


@pytest.mark.parametrize(
    "spec", ["float:abc", "float:-1", "float:inf", "float:nan", "bogus", "EXACT", "", 42, b"exact"]
)
def test_parse_checker_errors(spec: object) -> None:
    with pytest.raises(rustbox.InvalidInput) as info:
        parse_checker(spec)  # type: ignore[arg-type]
    assert info.value.field == "checker"


# -- languages ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("python", "python"),
        ("py", "python"),
        ("python3", "python"),
        ("PY", "python"),
        (" Python ", "python"),
        ("c", "c"),
        ("gcc", "c"),
        ("cpp", "cpp"),
        ("cc", "cpp"),
        ("c++", "cpp"),
        ("cxx", "cpp"),
        ("g++", "cpp"),
        ("java", "java"),
        ("js", "javascript"),
        ("node", "javascript"),
        ("ts", "typescript"),
        ("go", "go"),
        ("golang", "go"),
        ("rs", "rust"),
        ("rust", "rust"),
    ],
)
def test_language_table_get(table: LanguageTable, name: str, language: str) -> None:
    assert table.get(name).name == language


@pytest.mark.parametrize("name", ["cobol", "", "pyth", None, 3])
def test_language_table_get_unknown(table: LanguageTable, name: object) -> None:
    with pytest.raises(rustbox.InvalidInput) as info:
        table.get(name)  # type: ignore[arg-type]
    assert info.value.field == "language"
    if name == "cobol":
        assert str(info.value) == (
            "language: unknown language 'cobol'; "
            "available: c, cpp, go, java, javascript, python, rust, typescript"
        )


def test_builtin_table_has_the_eight_languages(table: LanguageTable) -> None:
    assert sorted(table.languages) == sorted(LANGUAGES)
    aliases = [a for lang in table.languages.values() for a in (lang.name, *lang.aliases)]
    assert len(aliases) == len(set(aliases)), "an alias names two languages"


# The judge profile of DESIGN.md (the Rust rustbox's): mem MiB, cpu s, wall s, procs,
# open files, file MiB.
JUDGE_LIMITS = {
    "python": (256, 4, 7, 10, 32, 1),
    "c": (256, 8, 10, 8, 32, 1),
    "cpp": (256, 8, 10, 8, 64, 1),
    "java": (512, 8, 10, 1024, 128, 2),
    "javascript": (512, 8, 12, 16, 64, 1),
    "typescript": (512, 8, 12, 16, 128, 1),
    "go": (256, 8, 10, 1024, 64, 1),
    "rust": (256, 8, 15, 64, 64, 1),
}


@pytest.mark.parametrize("name", LANGUAGES)
def test_judge_profile_limits(table: LanguageTable, name: str) -> None:
    limits = table.get(name).run_limits
    mem, cpu, wall, procs, nofile, fsize = JUDGE_LIMITS[name]
    assert limits.memory == mem * MiB
    assert limits.cpu_time == cpu
    assert limits.wall_time == wall
    assert limits.processes == procs
    assert limits.open_files == nofile
    assert limits.file_size == fsize * MiB


@pytest.mark.parametrize("name", LANGUAGES)
def test_executor_profile(table: LanguageTable, name: str) -> None:
    language = table.get(name)
    relaxed = executor_profile(language).run_limits
    assert relaxed.memory == 2048 * MiB
    assert relaxed.wall_time == 60
    assert relaxed.cpu_time == 30
    assert relaxed.processes == max(64, language.run_limits.processes)
    assert relaxed.open_files >= language.run_limits.open_files
    assert relaxed.file_size == 64 * MiB
    assert executor_profile(language).compile_limits == language.compile_limits


def test_compiled_languages_have_compile_limits_and_artifacts(table: LanguageTable) -> None:
    for language in table.languages.values():
        if language.compile is None:
            assert language.name in ("python", "javascript")
            continue
        assert language.compile_limits is not None
        assert language.artifacts
        # The compile step gets far more room than the run.
        assert language.compile_limits.memory >= language.run_limits.memory
        assert language.compile_limits.cpu_time >= 10


def test_java_class_and_source_names(table: LanguageTable) -> None:
    java = table.get("java")
    assert java.class_name("public class Foo { }") == "Foo"
    assert java.source_name("public class Foo { }") == "Foo.java"
    assert java.class_name("public final class Solution {}") == "Solution"
    assert java.class_name("import java.util.*;\npublic  class  A_b$1 {}") == "A_b$1"
    assert java.class_name("class Helper {}\nclass Main {}") == "Main"
    assert java.source_name("class Main {}") == "Main.java"
    run = java.fill(java.run, "public class Foo { }")
    assert run[-1] == "Foo"
    assert "Foo.java" in " ".join(java.fill(java.compile or (), "public class Foo { }"))
    # Only Java derives names from the source.
    cpp = table.get("cpp")
    assert cpp.class_name("public class Foo {}") == "Main"
    assert cpp.source_name("public class Foo {}") == "main.cpp"


def test_java_class_name_ignores_comments_and_strings(table: LanguageTable) -> None:
    java = table.get("java")
    code = (
        "// public class Old was the first attempt\n"
        "/* public class Draft {} */\n"
        'public class Main { String s = "public class Fake"; }\n'
    )
    assert java.class_name(code) == "Main"


def test_from_mapping_overrides_and_adds(table: LanguageTable) -> None:
    custom = LanguageTable.from_mapping(
        {
            "languages": {
                "python": {"run_limits": {"memory": "512M", "cpu_time": 2}},
                "kotlin": {
                    "aliases": ["kt"],
                    "source": "main.kt",
                    "compile": ["kotlinc", "{source}", "-include-runtime", "-d", "main.jar"],
                    "compile_limits": {"memory": "1G", "cpu_time": 30, "wall_time": 60},
                    "artifacts": ["main.jar"],
                    "run": ["/usr/bin/java", "-jar", "main.jar"],
                    "run_limits": {"memory": "512M", "processes": 64},
                    "env": {"PATH": "/usr/bin", "JAVA_HOME": "/usr/lib/jvm/default"},
                    "binds": ["/opt/kotlin"],
                },
            }
        }
    )
    python = custom.get("py")
    # Only the given fields change; the rest of python's limits stay the built-in ones.
    assert python.run_limits == attrs.evolve(
        table.get("python").run_limits, memory=512 * MiB, cpu_time=2
    )
    assert python.run == table.get("python").run
    kotlin = custom.get("kt")
    assert kotlin.name == "kotlin"
    assert kotlin.compile_limits is not None and kotlin.compile_limits.memory == 1024 * MiB
    assert kotlin.run_limits.processes == 64
    assert kotlin.run_limits.cpu_time == rustbox.Limits().cpu_time  # Limits' default
    assert dict(kotlin.env) == {"PATH": "/usr/bin", "JAVA_HOME": "/usr/lib/jvm/default"}
    assert "/opt/kotlin" in custom.binds()
    # The other built-in languages are all still there, untouched.
    for name in LANGUAGES:
        if name != "python":
            assert custom.get(name) == table.get(name)
    assert LanguageTable.from_mapping({}).languages == table.languages


def test_from_file(tmp_path: Path, table: LanguageTable) -> None:
    config = tmp_path / "languages.toml"
    config.write_text(
        "[languages.python.run_limits]\n"
        'memory = "64M"\n'
        "\n"
        "[languages.shell]\n"
        'aliases = ["sh"]\n'
        'source = "main.sh"\n'
        'run = ["/bin/sh", "{source}"]\n'
        "[languages.shell.run_limits]\n"
        'memory = "32M"\n'
        "cpu_time = 1\n"
        "wall_time = 2\n"
    )
    custom = LanguageTable.from_file(str(config))
    assert custom.get("python").run_limits.memory == 64 * MiB
    assert custom.get("python").run_limits.cpu_time == table.get("python").run_limits.cpu_time
    shell = custom.get("sh")
    assert shell.fill(shell.run, "echo hi") == ("/bin/sh", "main.sh")
    assert shell.compile is None
    assert shell.run_limits.memory == 32 * MiB


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"python": {"run_limits": {"memory": "lots"}}}, "languages.python.run_limits"),
        ({"python": {"run_limits": {"wall_time": 1}}}, "languages.python.run_limits"),
        ({"python": {"run_limits": {"bogus": 1}}}, "languages.python.run_limits"),
        ({"python": {"run_limits": 5}}, "languages.python.run_limits"),
        ({"python": {"run": "python3 main.py"}}, "languages.python.run"),
        ({"python": {"aliases": [1, 2]}}, "languages.python.aliases"),
        ({"python": {"env": ["PATH=/bin"]}}, "languages.python.env"),
        ({"python": {"source": ""}}, "languages.python.source"),
        ({"python": {"frobnicate": True}}, "languages.python.frobnicate"),
        ({"python": 3}, "languages.python"),
        ({"kotlin": {"source": "main.kt"}}, "languages.kotlin"),
    ],
)
def test_from_mapping_errors_name_the_field(entry: dict[str, object], field: str) -> None:
    with pytest.raises(rustbox.InvalidInput) as info:
        LanguageTable.from_mapping({"languages": entry}, where="my.toml")
    assert info.value.field.startswith(f"my.toml: {field}"), info.value.field
    if "kotlin" in entry:
        assert "needs run, run_limits" in str(info.value)


def test_from_mapping_languages_must_be_a_table() -> None:
    with pytest.raises(rustbox.InvalidInput) as info:
        LanguageTable.from_mapping({"languages": ["python"]})
    assert info.value.field == "config: languages"


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(rustbox.InvalidInput) as info:
        LanguageTable.from_file(str(tmp_path / "missing.toml"))
    assert info.value.field == "config"
    assert "missing.toml" in str(info.value)
    broken = tmp_path / "broken.toml"
    broken.write_text("[languages.python\n")
    with pytest.raises(rustbox.InvalidInput) as info:
        LanguageTable.from_file(str(broken))
    assert info.value.field == "config"
    assert "broken.toml" in str(info.value)
    bad_value = tmp_path / "bad.toml"
    bad_value.write_text('[languages.python.run_limits]\nmemory = "lots"\n')
    with pytest.raises(rustbox.InvalidInput) as info:
        LanguageTable.from_file(str(bad_value))
    # The error says which file, language and setting.
    assert str(bad_value) in info.value.field
    assert "languages.python.run_limits" in info.value.field
    assert "memory" in str(info.value)


# -- test directories ---------------------------------------------------------------


def write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).write_text(text)


def test_load_tests_pairs_in_natural_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "10.in": "ten\n",
            "10.out": "TEN\n",
            "2.in": "two\n",
            "2.out": "TWO\n",
            "1.in": "one\n",
            "1.ans": "ONE\n",  # .ans is accepted too
            "sample.in": "s\n",
            "sample.out": "S\n",
            "README.md": "ignored",
        },
    )
    tests = rustbox.load_tests(str(tmp_path))
    assert [t.name for t in tests] == ["1", "2", "10", "sample"]
    assert tests[0] == rustbox.TestCase(stdin=b"one\n", expected=b"ONE\n", name="1")
    assert tests[2].stdin == b"ten\n" and tests[2].expected == b"TEN\n"
    assert all(t.limits is None for t in tests)


def test_load_tests_natural_order_inside_names(tmp_path: Path) -> None:
    names = ["test10", "test9", "test1", "test100", "group2-case10", "group2-case3"]
    write(tmp_path, {f"{n}.in": "" for n in names} | {f"{n}.out": "" for n in names})
    tests = rustbox.load_tests(str(tmp_path))
    assert [t.name for t in tests] == [
        "group2-case3",
        "group2-case10",
        "test1",
        "test9",
        "test10",
        "test100",
    ]


def test_load_tests_unmatched_files(tmp_path: Path) -> None:
    write(tmp_path, {"1.in": "", "1.out": "", "2.in": "", "3.out": "", "10.in": ""})
    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.load_tests(str(tmp_path))
    assert info.value.field == "tests"
    assert info.value.problem.endswith(
        "unmatched files (each NAME.in needs NAME.out): 2.in, 3.out, 10.in"
    )


def test_load_tests_two_answers_for_one_input(tmp_path: Path) -> None:
    write(tmp_path, {"1.in": "", "1.out": "", "1.ans": ""})
    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.load_tests(str(tmp_path))
    assert "two expected outputs" in str(info.value)


def test_load_tests_empty_or_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.load_tests(str(tmp_path))
    assert info.value.field == "tests"
    assert "no test cases" in str(info.value)
    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.load_tests(str(tmp_path / "nope"))
    assert info.value.field == "tests"
    assert "cannot read" in str(info.value)


def test_load_tests_keeps_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.in").write_bytes(b"\x00\xff\r\n")
    (tmp_path / "a.out").write_bytes(b"")
    (tests,) = [rustbox.load_tests(str(tmp_path))]
    assert tests[0].stdin == b"\x00\xff\r\n"
    assert tests[0].expected == b""  # an empty expected output is still checked


# -- submissions and test cases --------------------------------------------------------


def test_submission_validation() -> None:
    assert rustbox.Submission("py", "print(1)").language == "py"
    for code in ("", "   \n\t"):
        with pytest.raises(rustbox.InvalidInput) as info:
            rustbox.Submission("python", code)
        assert info.value.field == "code"
    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.Submission("python", b"print(1)")  # type: ignore[arg-type]
    assert info.value.field == "code"
    # 64 KiB exactly is allowed; one byte more is not. The limit counts UTF-8 bytes.
    rustbox.Submission("python", "#" * (64 * 1024))
    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.Submission("python", "#" * (64 * 1024 + 1))
    assert info.value.field == "code"
    assert "65537 bytes" in str(info.value)
    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.Submission("python", "é" * (32 * 1024 + 1))
    assert info.value.field == "code"


def test_test_case_validation() -> None:
    case = rustbox.TestCase(stdin="3 4\n", expected="7\n")
    assert case.stdin == b"3 4\n" and case.expected == b"7\n"
    assert case.limits is None and case.name == ""
    assert rustbox.TestCase().stdin == b"" and rustbox.TestCase().expected is None
    assert rustbox.TestCase(stdin=bytearray(b"x")).stdin == b"x"
    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.TestCase(stdin=3)  # type: ignore[arg-type]
    assert info.value.field == "stdin"
    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.TestCase(expected=["7"])  # type: ignore[arg-type]
    assert info.value.field == "expected"


def test_tests_from_mapping() -> None:
    tests = cases_from_mapping(
        [{"stdin": "1 2\n", "expected": "3\n"}, {"stdin": "x", "expected_output": "y"}, {}]
    )
    assert tests == [
        rustbox.TestCase(stdin=b"1 2\n", expected=b"3\n", name="1"),
        rustbox.TestCase(stdin=b"x", expected=b"y", name="2"),
        rustbox.TestCase(name="3"),
    ]
    with pytest.raises(rustbox.InvalidInput) as info:
        cases_from_mapping(["1 2"])  # type: ignore[list-item]
    assert info.value.field == "tests[0]"


# -- reports --------------------------------------------------------------------


def make_result(
    status: rustbox.Status = rustbox.Status.OK,
    stdout: bytes = b"7\n",
    exit_code: int | None = 0,
    uid: int = 60001,
) -> rustbox.Result:
    stream = rustbox.StreamReport(bytes=len(stdout), cap=64 * MiB, truncated=False, complete=True)
    evidence = rustbox.Evidence(
        mode="strict",
        wait_status=0 if exit_code == 0 else (exit_code or 0) << 8,
        exit_code=exit_code,
        signal=None,
        cgroup=rustbox.CgroupFigures(
            version=1,
            memory_limit=256 * MiB,
            memory_peak=3 * MiB,
            memory_limit_hits=0,
            oom_kills=0,
            cpu_usage=0.01,
            pids_limit=10,
            pids_limit_hits=0,
            pids_peak=1,
        ),
        rusage_user=0.01,
        rusage_sys=0.0,
        rusage_maxrss=3 * MiB,
        wall_time=0.02,
        actions=(),
        stdout=stream,
        stderr=rustbox.StreamReport(bytes=0, cap=64 * MiB, truncated=False, complete=True),
        setup=(("spawn", 1.5),),
        controls=("cgroup memory",),
        uid=uid,
    )
    return rustbox.Result(
        status=status,
        exit_code=exit_code,
        signal=None,
        stdout=stdout,
        stderr=b"",
        cpu_time=0.01,
        wall_time=0.02,
        memory_peak=3 * MiB,
        tle=None,
        evidence=evidence,
    )


RUST_FIELDS = {
    "status",
    "exit_code",
    "stdout",
    "stderr",
    "cpu_time",
    "wall_time",
    "memory_peak",
    "verdict_provenance",
    "evidence_bundle",
}


def test_report_to_dict_has_the_rust_field_names() -> None:
    ok = rustbox.CaseResult(0, "first", rustbox.Verdict.AC, make_result(), "tokens: 1 tokens match")
    wrong = rustbox.CaseResult(
        1, "second", rustbox.Verdict.WA, make_result(stdout=b"8\n", uid=60002), "tokens: no"
    )
    compiled = rustbox.CompileResult(ok=True, result=make_result(stdout=b"", uid=60000))
    report = rustbox.JudgeReport(
        "cpp", rustbox.Verdict.WA, "case second: tokens: no", compiled, (ok, wrong)
    )
    data = report.to_dict()
    assert data.keys() >= RUST_FIELDS | {"language", "verdict", "compile", "cases"}
    assert data["verdict"] == "WA"
    assert data["verdict_provenance"] == "case second: tokens: no"
    # The top-level figures are the deciding (first failing) case's.
    assert report.deciding is wrong
    assert data["stdout"] == "8\n"
    assert data["status"] == "OK"
    assert data["exit_code"] == 0
    assert data["evidence_bundle"]["uid"] == 60002
    assert data["compile"]["ok"] is True
    assert data["compile"]["evidence_bundle"]["uid"] == 60000
    assert [c["name"] for c in data["cases"]] == ["first", "second"]
    for case in data["cases"]:
        assert case.keys() >= RUST_FIELDS - {"verdict_provenance"} | {"verdict", "checker"}
        assert "evidence" not in case
    assert json.loads(report.to_json()) == json.loads(json.dumps(data))


def test_report_deciding_case() -> None:
    ok = rustbox.CaseResult(0, "1", rustbox.Verdict.AC, make_result(), None)
    last = rustbox.CaseResult(1, "2", rustbox.Verdict.AC, make_result(stdout=b"last\n"), None)
    report = rustbox.JudgeReport("python", rustbox.Verdict.AC, "all ok", None, (ok, last))
    assert report.deciding is last  # all accepted: the last case
    data = report.to_dict()
    assert data["stdout"] == "last\n"
    assert data["compile"] is None
    # A compile error has no cases: the top level shows the compile step.
    failed = rustbox.CompileResult(
        ok=False, result=make_result(rustbox.Status.RE, stdout=b"", exit_code=1)
    )
    ce = rustbox.JudgeReport("c", rustbox.Verdict.CE, "compile step RE (exit 1)", failed, ())
    assert ce.deciding is None
    data = ce.to_dict()
    assert data["status"] == "RE" and data["exit_code"] == 1
    assert data["cases"] == []


def test_case_result_properties() -> None:
    result = make_result()
    case = rustbox.CaseResult(0, "1", rustbox.Verdict.AC, result, None)
    assert case.status is result.status
    assert case.cpu_time == result.cpu_time
    assert case.wall_time == result.wall_time
    assert case.memory_peak == result.memory_peak
    assert case.stdout == result.stdout
    assert case.stderr == result.stderr


def test_verdict_values() -> None:
    assert [v.value for v in rustbox.Verdict] == [
        "AC",
        "WA",
        "CE",
        "RE",
        "TLE",
        "MLE",
        "OLE",
        "SIG",
        "IE",
    ]
