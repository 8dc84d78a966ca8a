"""Where a run's cpu goes: system-wide cpu per run, and the price of its parts.

The throughput target is cpu-bound on a 2-core machine, so this measures cpu,
not latency: the whole machine's busy time from /proc/stat (kernel workers
included, e.g. network-namespace teardown) divided by the runs, next to the
cost of the building blocks every run pays for (forking a Python process,
creating and destroying each namespace).

    .venv/bin/python bench/bench_cost.py        (root; ~30 s)
"""

from __future__ import annotations

import os
import resource
import time

import anyio

import rustbox
from rustbox import _sys

HZ = os.sysconf("SC_CLK_TCK")
RUNS = 400
FORKS = 300


def busy_ticks() -> int:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4]  # minus idle and iowait


def fork_cost(flags: int) -> float:
    """Machine cpu (ms) for one fork of this process whose child unshares ``flags`` and exits."""
    start = busy_ticks()
    for _ in range(FORKS):
        pid = os.fork()
        if pid == 0:
            try:
                if flags:
                    _sys.unshare(flags)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    time.sleep(0.5)  # let deferred teardown (network namespaces) finish
    return (busy_ticks() - start) / HZ / FORKS * 1000


async def rustbox_cost(concurrency: int) -> tuple[float, float, float]:
    """(runs/s, machine cpu ms per run, supervisor-process cpu ms per run) for /bin/true."""
    async with rustbox.Supervisor(max_concurrency=concurrency) as sv:
        for _ in range(10):
            await sv.run(["/bin/true"])
        before = resource.getrusage(resource.RUSAGE_SELF)
        start, t0 = busy_ticks(), time.perf_counter()

        async def worker() -> None:
            for _ in range(RUNS // concurrency):
                await sv.run(["/bin/true"])

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        elapsed = time.perf_counter() - t0
        ticks = busy_ticks() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    own = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return RUNS / elapsed, ticks / HZ / RUNS * 1000, own / RUNS * 1000


def bare_cost() -> tuple[float, float]:
    start, t0 = busy_ticks(), time.perf_counter()
    for _ in range(RUNS):
        pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
        os.waitpid(pid, 0)
    return RUNS / (time.perf_counter() - t0), (busy_ticks() - start) / HZ / RUNS * 1000


def main() -> None:
    print(f"cpu per run, machine-wide (/proc/stat), {RUNS} runs of /bin/true")
    rate, cpu = bare_cost()
    print(f"  bare posix_spawn          {rate:8.1f} runs/s  {cpu:6.2f} ms cpu/run")
    for concurrency in (1, 4):
        rate, cpu, own = anyio.run(rustbox_cost, concurrency)
        print(
            f"  rustbox c={concurrency}               {rate:8.1f} runs/s  {cpu:6.2f} ms cpu/run"
            f"  (supervisor process {own:.2f} ms)"
        )
    print(f"\nbuilding blocks, machine cpu per fork of this Python process ({FORKS} forks)")
    plain = fork_cost(0)
    print(f"  fork + exit                       {plain:6.2f} ms")
    names = {
        "net": _sys.CLONE_NEWNET,
        "mount": _sys.CLONE_NEWNS,
        "ipc": _sys.CLONE_NEWIPC,
        "uts": _sys.CLONE_NEWUTS,
        "pid": _sys.CLONE_NEWPID,
    }
    for name, flag in names.items():
        print(f"  + {name:5} namespace                 {fork_cost(flag) - plain:+6.2f} ms")
    every = _sys.CLONE_NEWNET | _sys.CLONE_NEWNS | _sys.CLONE_NEWIPC | _sys.CLONE_NEWUTS
    print(f"  + net, mount, ipc, uts together   {fork_cost(every) - plain:+6.2f} ms")


if __name__ == "__main__":
    main()
