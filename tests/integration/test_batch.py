"""Batch grading: folders in, JSONL out, per-submission errors, resume, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rustbox
from rustbox._batch._runner import BatchOptions, read_records, run_batch

pytestmark = pytest.mark.root

SUM_PY = "a, b = map(int, input().split())\nprint(a + b)\n"
SUM_CPP = (
    '#include <cstdio>\nint main(){int a,b;std::scanf("%d %d",&a,&b);std::printf("%d\\n",a+b);}\n'
)
SUM_WRONG_C = '#include <stdio.h>\nint main(){int a,b;scanf("%d %d",&a,&b);printf("%d\\n",a-b);}\n'


def make_batch(root: Path, *, slow: int = 0) -> tuple[Path, Path]:
    problems = root / "problems"
    (problems / "sum" / "tests").mkdir(parents=True)
    for i, (a, b) in enumerate([(1, 2), (10, 20), (-5, 5)], start=1):
        (problems / "sum" / "tests" / f"{i}.in").write_text(f"{a} {b}\n")
        (problems / "sum" / "tests" / f"{i}.out").write_text(f"{a + b}\n")
    (problems / "sum" / "problem.toml").write_text(
        '[limits]\nmemory = "128M"\ncpu_time = 2\nwall_time = 4\nprocesses = 8\n'
    )
    (problems / "rev").mkdir()
    (problems / "rev" / "1.in").write_text("abc\n")
    (problems / "rev" / "1.ans").write_text("cba\n")
    subs = root / "submissions"
    entries = {
        "alice--sum": ("main.py", SUM_PY),
        "bob--sum": ("main.cpp", SUM_CPP),
        "carol--sum": ("main.c", SUM_WRONG_C),
        "dave--sum": ("main.c", "int main(){ not c }"),
        "erin--rev": ("sol.rb", "puts gets.reverse"),  # unknown extension
        "frank--nosuch": ("main.py", "print(1)"),  # unknown problem
        "gina--rev": ("main.py", "print(input()[::-1])"),
    }
    for i in range(slow):
        entries[f"slow{i}--rev"] = ("main.py", "import time\ntime.sleep(1)\nprint(input()[::-1])")
    for name, (file, code) in entries.items():
        (subs / name).mkdir(parents=True)
        (subs / name / file).write_text(code)
    (subs / "henry").mkdir()  # no problem in the name: from the manifest
    (subs / "henry" / "answer.py").write_text("print(input()[::-1])\n")
    (subs / "henry" / "submission.toml").write_text('problem = "rev"\n')
    (subs / "ivan--sum").mkdir()  # two sources: reported, not guessed
    (subs / "ivan--sum" / "a.py").write_text(SUM_PY)
    (subs / "ivan--sum" / "b.py").write_text(SUM_PY)
    return subs, problems


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def by_submission(path: Path) -> dict[str, dict[str, object]]:
    return {str(r["submission"]): r for r in read_records(str(path))}


def test_batch_grades_each_submission_and_reports_bad_ones(tmp_path: Path) -> None:
    subs, problems = make_batch(tmp_path)
    out = tmp_path / "results.jsonl"
    summary = run_batch(BatchOptions(str(subs), str(problems), str(out), concurrency=2, json=True))
    records = by_submission(out)
    assert records["alice--sum"]["verdict"] == "AC"
    assert records["bob--sum"]["verdict"] == "AC"
    assert records["carol--sum"]["verdict"] == "WA"
    assert records["dave--sum"]["verdict"] == "CE"
    assert records["gina--rev"]["verdict"] == "AC"
    assert records["henry"]["verdict"] == "AC"
    assert records["henry"]["problem"] == "rev"
    for bad, words in (
        ("erin--rev", "unknown extension '.rb'"),
        ("frank--nosuch", "unknown problem 'nosuch'"),
        ("ivan--sum", "expected one source file"),
    ):
        assert records[bad]["verdict"] is None
        assert words in str(records[bad]["error"]), records[bad]
    assert summary["graded"] == 9
    assert summary["problems"]["sum"]["accepted"] == 2
    cases = records["alice--sum"]["cases"]
    assert isinstance(cases, list) and len(cases) == 3
    assert all(c["verdict"] == "AC" and c["cpu_time"] > 0 for c in cases)


def test_resume_skips_what_is_done_and_survives_a_torn_line(tmp_path: Path) -> None:
    subs, problems = make_batch(tmp_path)
    out = tmp_path / "results.jsonl"
    run_batch(BatchOptions(str(subs), str(problems), str(out), json=True))
    lines = out.read_text().splitlines(keepends=True)
    # Keep four results and half of a fifth, as a crash mid-write would.
    out.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])
    with pytest.raises(rustbox.InvalidInput, match="--resume"):
        run_batch(BatchOptions(str(subs), str(problems), str(out), json=True))
    summary = run_batch(BatchOptions(str(subs), str(problems), str(out), resume=True, json=True))
    assert summary["skipped_as_done"] == 4
    assert summary["graded"] == 9
    assert len(by_submission(out)) == 9


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_grade_api_yields_every_submission(tmp_path: Path) -> None:
    subs, problems_dir = make_batch(tmp_path)
    problems = rustbox.load_problems(str(problems_dir))
    entries = rustbox.load_entries(str(subs), problems)
    async with rustbox.Supervisor(max_concurrency=2) as sv:
        seen = {g.submission: g async for g in sv.grade(entries, problems, concurrency=2)}
    assert len(seen) == 9
    assert seen["bob--sum"].verdict == "AC"
    assert seen["bob--sum"].report is not None
    assert seen["bob--sum"].report.compile is not None
    assert seen["erin--rev"].error is not None


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    subs, problems = make_batch(tmp_path, slow=6)
    out = tmp_path / "results.jsonl"
    command = [
        sys.executable,
        "-m",
        "rustbox",
        "batch",
        str(subs),
        "--problems",
        str(problems),
        "--out",
        str(out),
        "--concurrency",
        "2",
        "--json",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(read_records(str(out)))) < 3:
        time.sleep(0.1)
    launchers = _children(proc.pid)
    assert launchers, "the batch should have started its launcher"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert b"--resume" in stderr
    partial = len(list(read_records(str(out))))
    assert 3 <= partial < 15
    # Nothing of the interrupted batch is left: its launcher (and with it every
    # proxy and payload, through PDEATHSIG and the PID namespaces) is gone.
    for pid in launchers:
        assert not _alive(pid), f"launcher {pid} survived the interrupted batch"
    resumed = subprocess.run([*command, "--resume"], capture_output=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()
    summary = json.loads(resumed.stdout)
    assert summary["graded"] == 15
    assert summary["skipped_as_done"] == partial
