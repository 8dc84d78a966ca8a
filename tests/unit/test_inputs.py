"""Bad input gives a clear error naming the field, and nothing leaks.

Limits, parse_size and Result's JSON round trip need no privileges; the
``sv.run`` checks at the end need root (a Supervisor) and use a uid range of
their own so "nothing leaked" only looks at this file's runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import rustbox
from rustbox import (
    Action,
    CgroupFigures,
    Evidence,
    InvalidInput,
    Limits,
    Result,
    Status,
    StreamReport,
    parse_size,
)
from rustbox._host import UidPool

MiB = 1 << 20
GiB = 1 << 30

SIZE_FIELDS = ("memory", "stdout_max", "stderr_max", "file_size", "stack", "box_size", "tmp_size")
COUNT_FIELDS = ("processes", "open_files", "box_inodes")
TIME_FIELDS = ("cpu_time", "wall_time")


def _invalid(field: str, **kwargs: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        Limits(**kwargs)  # type: ignore[arg-type]
    exc = info.value
    assert exc.field == field, (kwargs, exc.field, str(exc))
    assert str(exc).startswith(f"{field}: "), str(exc)
    assert exc.problem and exc.problem in str(exc)
    return exc


# -- Limits ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, -256 * MiB, "0", "0M", "-1M", 0.0, -1.5])
@pytest.mark.parametrize("field", ["memory", *SIZE_FIELDS[1:]])
def test_limits_size_not_positive(field: str, value: object) -> None:
    _invalid(field, **{field: value})


@pytest.mark.parametrize("value", [0, -1, 0.0, -0.5, "0", "-2"])
@pytest.mark.parametrize("field", TIME_FIELDS)
def test_limits_time_not_positive(field: str, value: object) -> None:
    kwargs: dict[str, object] = {field: value}
    if field == "cpu_time":
        kwargs["wall_time"] = 5.0
    _invalid(field, **kwargs)


@pytest.mark.parametrize("value", [0, -1, -16, "0", "-3"])
@pytest.mark.parametrize("field", COUNT_FIELDS)
def test_limits_count_not_positive(field: str, value: object) -> None:
    _invalid(field, **{field: value})


@pytest.mark.parametrize("value", [1.5, "abc", "", "8M", None, [8]])
def test_limits_processes_not_a_whole_number(value: object) -> None:
    exc = _invalid("processes", processes=value)
    assert repr(value) in str(exc) or type(value).__name__ in str(exc)


def test_wall_time_below_cpu_time() -> None:
    exc = _invalid("wall_time", cpu_time=3.0, wall_time=2.0)
    assert "cpu_time" in exc.problem
    Limits(cpu_time=2.0, wall_time=2.0)  # equal is fine


def test_wall_time_below_default_cpu_time() -> None:
    _invalid("wall_time", wall_time=1.0)  # default cpu_time is 2 s


@pytest.mark.parametrize("value", ["12Q", "abc", "", "   ", "M", "1.5.2G", "1e3", "--1M", "12 Q B"])
@pytest.mark.parametrize("field", SIZE_FIELDS)
def test_limits_unparsable_size(field: str, value: str) -> None:
    exc = _invalid(field, **{field: value})
    assert repr(value) in str(exc)


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("field", [*SIZE_FIELDS, *COUNT_FIELDS, *TIME_FIELDS, "address_space"])
def test_limits_bool_refused(field: str, value: bool) -> None:
    exc = _invalid(field, **{field: value})
    assert repr(value) in str(exc)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", [*SIZE_FIELDS, *TIME_FIELDS, *COUNT_FIELDS, "address_space"])
def test_limits_nan_inf_refused(field: str, value: float) -> None:
    exc = _invalid(field, **{field: value})
    assert repr(value) in str(exc)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "infinity"])
@pytest.mark.parametrize("field", TIME_FIELDS)
def test_limits_nan_inf_strings_refused_for_times(field: str, value: str) -> None:
    _invalid(field, **{field: value})


@pytest.mark.parametrize("value", [None, b"2", [1.0], {}])
@pytest.mark.parametrize("field", TIME_FIELDS)
def test_limits_time_wrong_type(field: str, value: object) -> None:
    _invalid(field, **{field: value})


@pytest.mark.parametrize("value", [None, b"256M", [256], 1j])
def test_limits_memory_wrong_type(value: object) -> None:
    _invalid("memory", memory=value)


def test_address_space_below_memory() -> None:
    _invalid("address_space", memory="256M", address_space="128M")
    assert Limits(memory="256M", address_space="256M").address_space == 256 * MiB
    assert Limits().address_space is None


def test_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError):
        Limits(memroy="256M")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("256M", 256 * MiB),
        ("1.5G", 3 * GiB // 2),
        (1024, 1024),
        ("64k", 64 * 1024),
        ("64K", 64 * 1024),
        ("64KiB", 64 * 1024),
        ("64kb", 64 * 1024),
        ("2g", 2 * GiB),
        (" 8 M ", 8 * MiB),
        ("4096", 4096),
        ("100B", 100),
    ],
)
def test_limits_valid_sizes(value: int | str, expected: int) -> None:
    limits = Limits(memory=value, stack=value)
    assert limits.memory == expected
    assert limits.stack == expected
    assert isinstance(limits.memory, int)


def test_limits_valid_times_and_counts() -> None:
    limits = Limits(cpu_time=1, wall_time="2.5", processes="8", open_files=32)
    assert (limits.cpu_time, limits.wall_time) == (1.0, 2.5)
    assert isinstance(limits.cpu_time, float)
    assert (limits.processes, limits.open_files) == (8, 32)


def test_limits_defaults_and_to_dict() -> None:
    limits = Limits()
    assert limits.memory == 256 * MiB
    assert (limits.cpu_time, limits.wall_time, limits.processes) == (2.0, 5.0, 16)
    data = limits.to_dict()
    assert data["memory"] == 256 * MiB and set(data) >= {"memory", "cpu_time", "wall_time"}
    assert Limits(**data) == limits


def test_limits_are_frozen() -> None:
    limits = Limits()
    with pytest.raises(AttributeError):
        limits.memory = 1  # type: ignore[misc]


def test_invalid_input_is_a_value_error() -> None:
    exc = _invalid("memory", memory="12Q")
    assert isinstance(exc, ValueError)
    assert isinstance(exc, rustbox.RustboxError)


# -- parse_size ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1),
        (4096, 4096),
        (4096.0, 4096),
        ("1", 1),
        ("1b", 1),
        ("1K", 1 << 10),
        ("1KB", 1 << 10),
        ("1kib", 1 << 10),
        ("1M", 1 << 20),
        ("1MB", 1 << 20),
        ("1MiB", 1 << 20),
        ("1G", 1 << 30),
        ("1GiB", 1 << 30),
        ("1T", 1 << 40),
        ("0.5K", 512),
        ("1.5G", (3 << 30) // 2),
        ("256M", 256 * MiB),
        ("\t256M\n", 256 * MiB),
        ("256 M", 256 * MiB),
    ],
)
def test_parse_size_valid(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "12Q",
        "abc",
        "",
        " ",
        "M",
        "-1M",
        "+1M",
        "1e3",
        "1,5G",
        "1.G",
        ".5G",
        "0",
        "0.0001K",
        0,
        -1,
        0.4,
        True,
        False,
        math.nan,
        math.inf,
        None,
        b"1M",
        [1],
        object(),
    ],
)
def test_parse_size_invalid(value: object) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_size(value)
    assert info.value.field == "size"
    with pytest.raises(InvalidInput) as info:
        parse_size(value, "stack")
    assert info.value.field == "stack"
    assert str(info.value).startswith("stack: ")


@pytest.mark.parametrize("value", ["1" * 400, "9" * 310 + "T", "1" * 400 + ".5K"])
def test_parse_size_overflowing_string(value: str) -> None:
    """A string too large for a float is bad input too, not an OverflowError."""
    with pytest.raises(InvalidInput) as info:
        parse_size(value, "memory")
    assert info.value.field == "memory"
    with pytest.raises(InvalidInput):
        Limits(memory=value)


# -- Result JSON round trip -----------------------------------------------------------


def _result(**overrides: object) -> Result:
    evidence = Evidence(
        mode="strict",
        wait_status=9,
        exit_code=None,
        signal=9,
        cgroup=CgroupFigures(
            version=1,
            memory_limit=256 * MiB,
            memory_peak=12 * MiB,
            memory_limit_hits=0,
            oom_kills=0,
            cpu_usage=0.123456789,
            pids_limit=16,
            pids_limit_hits=1,
            pids_peak=3,
        ),
        rusage_user=0.1,
        rusage_sys=0.02,
        rusage_maxrss=14 * MiB,
        wall_time=1.25,
        actions=(
            Action(0.5, "proxy", "SIGKILL all", "cpu_time 2.011s > limit 2s"),
            Action(0.75, "supervisor", "SIGKILL proxy", "run abandoned"),
        ),
        stdout=StreamReport(bytes=2, cap=64 * MiB, truncated=False, complete=True),
        stderr=StreamReport(bytes=5, cap=8, truncated=True, complete=False),
        setup=(("namespaces", 0.9), ("exec", 0.02)),
        controls=("no_new_privs: 1", "seccomp: filter of 80 instructions"),
        uid=60001,
        error=None,
    )
    values: dict[str, object] = {
        "status": Status.TLE,
        "exit_code": None,
        "signal": 9,
        "stdout": b"\xff\xfe",
        "stderr": "héllo ✓\n".encode(),
        "cpu_time": 2.011,
        "wall_time": 2.5,
        "memory_peak": 12 * MiB,
        "tle": "cpu",
        "evidence": evidence,
        "files": {"out.txt": b"42\n", "bin/raw": b"\x00\x80\xff", "empty": b""},
    }
    values.update(overrides)
    return Result(**values)  # type: ignore[arg-type]


def test_result_json_round_trip_with_binary_output_and_files() -> None:
    r = _result()
    text = r.to_json()
    assert Result.from_json(text) == r
    assert Result.from_json(text.encode()) == r
    assert Result.from_json(r.to_json(indent=2)) == r
    back = Result.from_json(text)
    assert back.stdout == b"\xff\xfe"
    assert back.files["bin/raw"] == b"\x00\x80\xff"
    assert back.evidence.actions[1].actor == "supervisor"
    assert back.status is Status.TLE


def test_result_to_json_keys() -> None:
    data = json.loads(_result().to_json())
    assert set(data) >= {
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
    assert data["status"] == "TLE"
    assert isinstance(data["stdout"], str)  # text, with a lossless twin for bad UTF-8
    assert "stdout_b64" in data
    assert "stderr_b64" not in data and data["stderr"] == "héllo ✓\n"
    assert set(data["evidence"]) >= {"mode", "cgroup", "actions", "stdout", "stderr", "uid"}


@pytest.mark.parametrize(
    "stdout",
    [b"", b"plain\n", "\ufffd".encode(), b"\x00nul", b"\xed\xa0\x80", b"a" * 10000 + b"\xc3"],
)
def test_result_json_round_trip_stdout_variants(stdout: bytes) -> None:
    r = _result(stdout=stdout, stderr=stdout, files={})
    assert Result.from_json(r.to_json()) == r


def test_result_json_round_trip_ok_without_cgroup() -> None:
    base = _result()
    evidence = Evidence.from_dict({**base.evidence.to_dict(), "cgroup": None, "error": "x"})
    r = _result(status=Status.IE, exit_code=0, signal=None, tle=None, evidence=evidence)
    assert Result.from_json(r.to_json()) == r


# -- sv.run input checks (root) ------------------------------------------------------

POOL_FIRST = 64300
POOL_COUNT = 16
POOL = UidPool(first=POOL_FIRST, count=POOL_COUNT)


def _nothing_leaked() -> None:
    uids = range(POOL_FIRST, POOL_FIRST + POOL_COUNT)
    assert [u for u in POOL.in_use() if u in uids] == []
    names = {f"u{u}" for u in uids}
    for hierarchy in ("memory", "pids", "cpuacct", "freezer"):
        parent = Path("/sys/fs/cgroup", hierarchy, "rustbox")
        if parent.is_dir():
            assert [p.name for p in parent.iterdir() if p.name in names] == []


@pytest.mark.anyio
@pytest.mark.root
async def test_bad_run_requests_are_refused_before_anything_starts() -> None:
    """Each bad request raises InvalidInput naming the field; no uid or cgroup is taken."""
    ok = ["/bin/true"]
    cases: list[tuple[object, dict[str, object], str, type[InvalidInput]]] = [
        (["/nonexistent/bin"], {}, "command", rustbox.CommandNotFound),
        (["no-such-cmd-xyz"], {}, "command", rustbox.CommandNotFound),
        (["/etc"], {}, "command", rustbox.CommandNotFound),  # a directory
        (["/etc/passwd"], {}, "command", rustbox.CommandNotFound),  # not executable
        (["/box/prog"], {"files": {"prog": b"#!/bin/sh\n"}}, "command", rustbox.CommandNotFound),
        (["sh"], {"env": {"PATH": "/nonexistent"}}, "command", rustbox.CommandNotFound),
        ([], {}, "command", InvalidInput),
        ("echo hi", {}, "command", InvalidInput),
        (b"/bin/true", {}, "command", InvalidInput),
        (None, {}, "command", InvalidInput),
        ([""], {}, "command[0]", InvalidInput),
        (["/bin/echo", 3], {}, "command[1]", InvalidInput),
        (["/bin/echo", "a\0b"], {}, "command[1]", InvalidInput),
        (ok, {"files": {"../x": b""}}, "files['../x']", InvalidInput),
        (ok, {"files": {"/etc/passwd": b""}}, "files['/etc/passwd']", InvalidInput),
        (ok, {"files": {"a/../../b": b""}}, "files['a/../../b']", InvalidInput),
        (ok, {"files": {"": b""}}, "files['']", InvalidInput),
        (ok, {"files": {"./x": b""}}, "files['./x']", InvalidInput),
        (ok, {"files": {"a//b": b""}}, "files['a//b']", InvalidInput),
        (ok, {"files": {"x": 5}}, "files['x']", InvalidInput),
        (ok, {"files": {"d": b"", "d/x": b""}}, "files['d']", InvalidInput),
        (ok, {"files": [("x", b"")]}, "files", InvalidInput),
        (
            ok,
            {"files": {"big": b"x" * 2048}, "limits": Limits(box_size=1024)},
            "files",
            InvalidInput,
        ),
        (ok, {"collect": ["../x"]}, "collect[0]", InvalidInput),
        (ok, {"collect": ["ok.txt", "/etc/shadow"]}, "collect[1]", InvalidInput),
        (ok, {"stdin": b"x" * 1025}, "stdin", InvalidInput),
        (ok, {"stdin": "x" * 1025}, "stdin", InvalidInput),
        (ok, {"stdin": 42}, "stdin", InvalidInput),
        (ok, {"env": {"A=B": "x"}}, "env['A=B']", InvalidInput),
        (ok, {"env": {"": "x"}}, "env['']", InvalidInput),
        (ok, {"env": {"A": "x\0y"}}, "env['A']", InvalidInput),
        (ok, {"env": {"A": 1}}, "env['A']", InvalidInput),
        (ok, {"env": ["A=B"]}, "env", InvalidInput),
        (ok, {"cwd": "box"}, "cwd", InvalidInput),
        (ok, {"cwd": "/box/../etc"}, "cwd", InvalidInput),
        (ok, {"limits": {"memory": "1G"}}, "limits", InvalidInput),
    ]
    async with rustbox.Supervisor(uid_pool=POOL, max_stdin=1024) as sv:
        for command, kwargs, field, kind in cases:
            with pytest.raises(InvalidInput) as info:
                await sv.run(command, **kwargs)  # type: ignore[arg-type]
            exc = info.value
            where = f"{command!r} {kwargs!r}"[:200]
            assert type(exc) is kind, (where, exc)
            assert exc.field == field, (where, exc.field, str(exc))
            assert str(exc).startswith(f"{field}: "), (where, str(exc))
            if kind is rustbox.CommandNotFound:
                assert isinstance(exc, InvalidInput)
                assert exc.command == command[0]  # type: ignore[attr-defined,index]
            _nothing_leaked()
        # Exactly at the limits is accepted, and the Supervisor still works.
        r = await sv.run(
            ["/bin/sh", "-c", "wc -c; cat /box/sub/f"],
            stdin=b"x" * 1024,
            files={"/box/sub/f": b"in-box\n"},
        )
        assert r.status is Status.OK, (r.stderr, r.evidence.error)
        assert r.stdout == b"1024\nin-box\n"
    _nothing_leaked()


@pytest.mark.anyio
@pytest.mark.root
@pytest.mark.parametrize(
    ("field", "value"),
    [("processes", 2**40), ("open_files", 2**40), ("memory", 2**70)],
)
async def test_absurd_limits_are_invalid_input(field: str, value: int) -> None:
    """A limit the kernel cannot take is bad input: InvalidInput naming the field (from
    Limits() or from sv.run), not an IE verdict with a traceback; nothing leaks either way.
    """
    async with rustbox.Supervisor(uid_pool=POOL) as sv:
        with pytest.raises(InvalidInput) as info:
            r = await sv.run(["/bin/true"], limits=Limits(**{field: value}))
            pytest.fail(f"accepted: {r.status} {r.evidence.error}")
        assert info.value.field == field
    _nothing_leaked()


@pytest.mark.parametrize("value", [0, -1, 1.5, "4", None])
def test_bad_supervisor_arguments(value: object) -> None:
    with pytest.raises(InvalidInput) as info:
        rustbox.Supervisor(max_concurrency=value)  # type: ignore[arg-type]
    assert info.value.field == "max_concurrency"
