"""Batch grading throughput: 50 submissions x 10 cases of a small Python problem.

Cases per second through the batch grading path (``grade_all``, what
``rustbox batch`` runs), against the same programs run bare one after another
(fork/exec of ``/usr/bin/python3`` per case, output compared the same way).

    .venv/bin/python bench/bench_batch.py        (root; ~1 min)
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
import time

import anyio

import rustbox
from rustbox._batch import grade_all

SUBMISSIONS = 50
CASES = 10
CODE = "import sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums[1:]))\n"


def make_problem() -> rustbox.Problem:
    rng = random.Random(7)
    tests = []
    for i in range(CASES):
        values = [rng.randint(1, 1000) for _ in range(rng.randint(1, 100))]
        stdin = f"{len(values)} {' '.join(map(str, values))}\n".encode()
        tests.append(
            rustbox.TestCase(stdin=stdin, expected=f"{sum(values)}\n".encode(), name=str(i))
        )
    return rustbox.Problem("sum", tuple(tests))


def bare(problem: rustbox.Problem) -> tuple[float, int]:
    """Every case of every submission, one after another, as plain subprocesses."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "main.py")
        with open(source, "w") as f:
            f.write(CODE)
        started, correct = time.perf_counter(), 0
        for _ in range(SUBMISSIONS):
            for test in problem.tests:
                out = subprocess.run(
                    ["/usr/bin/python3", "-S", source],
                    input=test.stdin,
                    capture_output=True,
                    check=False,
                )
                assert test.expected is not None
                correct += out.stdout.split() == test.expected.split()
        return time.perf_counter() - started, correct


async def sandboxed(problem: rustbox.Problem) -> tuple[float, int]:
    entries = [
        rustbox.Entry(f"s{i}", "sum", rustbox.Submission("python", CODE))
        for i in range(SUBMISSIONS)
    ]
    accepted = 0

    def count(graded: rustbox.Graded) -> None:
        nonlocal accepted
        accepted += (
            sum(c.verdict.value == "AC" for c in graded.report.cases) if graded.report else 0
        )

    async with rustbox.Supervisor() as sv:
        started = time.perf_counter()
        await grade_all(sv, entries, {"sum": problem}, count)
        return time.perf_counter() - started, accepted


def main() -> None:
    problem = make_problem()
    total = SUBMISSIONS * CASES
    bare_time, bare_ok = bare(problem)
    box_time, box_ok = anyio.run(sandboxed, problem)
    print(
        f"batch benchmark: {SUBMISSIONS} submissions x {CASES} cases, python sum problem, "
        f"{os.cpu_count()} cpus"
    )
    print(
        f"  bare, one after another   {total / bare_time:7.1f} cases/s  ({bare_ok}/{total} correct)"
    )
    print(f"  rustbox batch grading     {total / box_time:7.1f} cases/s  ({box_ok}/{total} AC)")
    print(f"  ratio rustbox / bare      {bare_time / box_time:7.2f}")


if __name__ == "__main__":
    main()
