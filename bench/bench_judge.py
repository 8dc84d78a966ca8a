"""Judge throughput: a 10-case problem in C++ and in Python.

Cases per second at the supervisor's default concurrency, with the compile
step reported apart (it runs once per submission, in its own sandbox).

    .venv/bin/python bench/bench_judge.py        (root; ~30 s)
"""

from __future__ import annotations

import random
import statistics
import time

import anyio

import rustbox

ROUNDS = 5
CASES = 10

CPP = r"""
#include <bits/stdc++.h>
int main() {
    int n; std::scanf("%d", &n);
    std::vector<long long> v(n);
    for (auto& x : v) std::scanf("%lld", &x);
    std::sort(v.begin(), v.end());
    long long sum = 0;
    for (auto x : v) sum += x;
    std::printf("%lld %lld %lld\n", v.front(), v.back(), sum);
}
"""

PYTHON = """
import sys
data = sys.stdin.buffer.read().split()
n = int(data[0]); v = sorted(map(int, data[1:n + 1]))
print(v[0], v[-1], sum(v))
"""


def make_cases(seed: int) -> list[rustbox.TestCase]:
    rng = random.Random(seed)
    cases = []
    for i in range(CASES):
        values = [rng.randint(-(10**9), 10**9) for _ in range(rng.randint(1, 2000))]
        stdin = f"{len(values)}\n{' '.join(map(str, values))}\n".encode()
        ordered = sorted(values)
        expected = f"{ordered[0]} {ordered[-1]} {sum(values)}\n".encode()
        cases.append(rustbox.TestCase(stdin=stdin, expected=expected, name=str(i + 1)))
    return cases


async def main() -> None:
    async with rustbox.Supervisor() as sv:
        print(
            f"judge benchmark: {CASES}-case problem, {ROUNDS} submissions per language, "
            f"Supervisor default concurrency ({sv.max_concurrency})"
        )
        print(
            f"{'language':10} {'verdict':7} {'compile p50':>12} {'cases/s p50':>12} "
            f"{'judge p50':>10}"
        )
        for language, code in (("cpp", CPP), ("python", PYTHON)):
            compile_times, rates, totals, verdicts = [], [], [], set()
            for round_ in range(ROUNDS + 1):
                cases = make_cases(round_)
                started = time.perf_counter()
                report = await sv.judge(rustbox.Submission(language, code), cases)
                total = time.perf_counter() - started
                verdicts.add(report.verdict.value)
                if round_ == 0:
                    continue  # warm-up
                compile_wall = report.compile.result.wall_time if report.compile else 0.0
                compile_times.append(compile_wall)
                rates.append(CASES / max(total - compile_wall, 1e-9))
                totals.append(total)
            print(
                f"{language:10} {','.join(sorted(verdicts)):7} "
                f"{statistics.median(compile_times) * 1000:10.1f}ms "
                f"{statistics.median(rates):12.1f} {statistics.median(totals) * 1000:8.1f}ms"
            )
    print("compile = the compile sandbox's wall time; cases/s = cases / (judge time - compile)")


if __name__ == "__main__":
    anyio.run(main)
