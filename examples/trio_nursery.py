"""Concurrent sandbox runs from a trio nursery.

Eight runs start at once in a nursery; the Supervisor lets four of them run at a
time (``max_concurrency=4``), so the six half-second sleepers, an endless loop
(TLE) and a failing program (RE) finish in about two rounds rather than one
after another. Each run prints its verdict and timing as it finishes. Then a trio
cancel scope cancels a run in flight: rustbox kills its sandbox and cleans up.

Run it as root: ``python examples/trio_nursery.py``.
"""

from __future__ import annotations

import sys

import trio

import rustbox

PY = "/usr/bin/python3"

# (name, program, limits)
JOBS: list[tuple[str, str, rustbox.Limits]] = [
    *(
        (f"sleeper {n}", f"import time\ntime.sleep(0.5)\nprint({n} * {n})", rustbox.Limits())
        for n in range(1, 7)
    ),
    ("endless loop", "while True: pass", rustbox.Limits(cpu_time=0.5, wall_time=3)),
    ("exit 3", "import sys\nprint('giving up', file=sys.stderr)\nsys.exit(3)", rustbox.Limits()),
]


async def main() -> None:
    results: dict[str, rustbox.Result] = {}
    async with rustbox.Supervisor(max_concurrency=4) as sv:
        t0 = trio.current_time()

        async def one(name: str, code: str, limits: rustbox.Limits) -> None:
            result = await sv.run([PY, "-c", code], limits=limits)
            results[name] = result
            verdict = result.status.value + (f" ({result.tle})" if result.tle else "")
            print(
                f"[{trio.current_time() - t0:5.2f}s] {name:13} {verdict:10} "
                f"exit={result.exit_code} cpu={result.cpu_time:.3f}s "
                f"wall={result.wall_time:.3f}s stdout={result.stdout.decode().strip()!r}",
                flush=True,
            )

        async with trio.open_nursery() as nursery:
            for name, code, limits in JOBS:
                nursery.start_soon(one, name, code, limits)
        elapsed = trio.current_time() - t0
        serial = sum(r.wall_time for r in results.values())
        print(
            f"{len(results)} runs in {elapsed:.2f}s at max_concurrency=4 "
            f"(their wall times add up to {serial:.2f}s)"
        )
        counts: dict[str, int] = {}
        for result in results.values():
            counts[result.status.value] = counts.get(result.status.value, 0) + 1
        print("verdicts:", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))

        # Cancelling a run kills its sandbox; sv.run() raises trio.Cancelled, which
        # the cancel scope absorbs, and the supervisor removes the run's cgroup.
        t1 = trio.current_time()
        with trio.move_on_after(0.5) as scope:
            await sv.run(["/bin/sleep", "10"], limits=rustbox.Limits(wall_time=20))
        print(
            f"cancelled a 10 s sleep after {trio.current_time() - t1:.2f}s: "
            f"cancelled_caught={scope.cancelled_caught}"
        )


if __name__ == "__main__":
    try:
        trio.run(main)
    except rustbox.HostUnsupported as exc:
        sys.exit(f"rustbox cannot run here: {exc}\n(try: rustbox check)")
