"""Core rustbox benchmark: per-run latency, throughput and 500 concurrent sandboxes.

Every rustbox figure is measured next to a bare fork/exec baseline in the same
process and event loop, with bare and rustbox batches interleaved, so the drift
of a noisy machine hits both sides alike; the headline figures are differences
and ratios, not absolute times.

Run as root: ``.venv/bin/python bench/bench_core.py [--quick] [--only PHASE]``.
Prints a table and writes ``bench/results/core.json``. It never fails on a
missed target: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import anyio

import rustbox
from rustbox._host import CgroupTree

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "core.json"
PYTHON = "/usr/bin/python3"
HELLO = 'print("hello")\n'
#: The environment rustbox gives a sandbox by default; the bare runs get the same.
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
UID_LO, UID_HI = 60000, 60999
#: Targets from the issue.
TARGET_P50_OVERHEAD_MS = 3.0
TARGET_THROUGHPUT_RATIO = 0.8
#: How long each of the 500 sleeps. Starting 500 sandboxes takes ~10 s on the
#: 2-core dev box, so a 5 s sleep never has all 500 alive at once (at most
#: ~330 were); 20 s does, with room for a loaded machine.
DEFAULT_SLEEP = 20.0
QUICK_SLEEP = 8.0

Runner = Callable[[], Coroutine[Any, Any, None]]


class RunFailed(Exception):
    """A benchmarked run did not do what it should (the figures would be meaningless)."""


# -- small helpers ------------------------------------------------------------


def summarise(samples: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p95, min, max of samples in seconds, reported in ms."""
    ordered = sorted(samples)
    p95 = (
        statistics.quantiles(ordered, n=20, method="inclusive")[18]
        if len(ordered) > 1
        else ordered[0]
    )
    return {
        "n": len(ordered),
        "mean_ms": statistics.fmean(ordered) * 1e3,
        "p50_ms": statistics.median(ordered) * 1e3,
        "p95_ms": p95 * 1e3,
        "min_ms": ordered[0] * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }


def progress(message: str, t_start: float) -> None:
    """A line on stderr per phase, so a long run shows where it is."""
    print(f"[{time.perf_counter() - t_start:6.1f} s] {message}", file=sys.stderr, flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def read_kv_kb(path: str, key: str) -> int:
    """A ``Key:  123 kB`` figure from /proc/meminfo or /proc/<pid>/status, in bytes."""
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(f"{key} not in {path}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain aligned text: first column left, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def machine_facts() -> dict[str, Any]:
    """What the figures depend on, recorded with them."""
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_total_mib": read_kv_kb("/proc/meminfo", "MemTotal") >> 20,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "payload_python": subprocess.run(
            [PYTHON, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip(),
        "cgroup_version": CgroupTree.detect().version,
        "anyio": importlib.metadata.version("anyio"),
        "rustbox": importlib.metadata.version("rustbox"),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


# -- the runners: one awaitable per mode and workload --------------------------


class Workloads:
    """The commands, and how each mode runs them.

    Bare runs get the sandbox's default environment and their output captured
    through pipes, like rustbox, so the comparison is only about isolation.
    """

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.env = {"PATH": SANDBOX_PATH, "HOME": workdir, "LANG": "C.UTF-8"}
        Path(workdir, "hello.py").write_text(HELLO)
        self.bare_argv = {
            "true": ["/bin/true"],
            # posix_spawn has no cwd, so the bare spawn names the script absolutely.
            "python": [PYTHON, "-I", str(Path(workdir, "hello.py"))],
        }
        self.box_argv = {"true": ["/bin/true"], "python": [PYTHON, "-I", "hello.py"]}
        self.expected = {"true": b"", "python": b"hello\n"}
        #: Per rustbox run: (payload wall time, sandbox set-up time) in seconds, from the evidence.
        self.box_parts: list[tuple[float, float]] = []

    def _spawn_wait(self, workload: str) -> None:
        """posix_spawn with stdout/stderr on pipes, waitpid, read the pipes back."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            argv = self.bare_argv[workload]
            try:
                pid = os.posix_spawn(
                    argv[0],
                    argv,
                    self.env,
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_DUP2, out_w, 1),
                        (os.POSIX_SPAWN_DUP2, err_w, 2),
                    ],
                )
            finally:
                os.close(out_w)
                os.close(err_w)
            _, status = os.waitpid(pid, 0)
            out = _read_all(out_r)
            _read_all(err_r)
        finally:
            os.close(out_r)
            os.close(err_r)
        if os.waitstatus_to_exitcode(status) != 0 or out != self.expected[workload]:
            raise RunFailed(f"bare spawn {workload}: status {status}, stdout {out!r}")

    def bare_spawn(self, workload: str) -> Runner:
        async def run() -> None:
            await anyio.to_thread.run_sync(self._spawn_wait, workload)

        return run

    def bare_anyio(self, workload: str) -> Runner:
        argv = self.box_argv[workload]

        async def run() -> None:
            done = await anyio.run_process(
                argv, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL, check=False
            )
            if done.returncode != 0 or done.stdout != self.expected[workload]:
                raise RunFailed(f"anyio.run_process {workload}: {done.returncode}, {done.stdout!r}")

        return run

    def rustbox(self, sv: rustbox.Supervisor, workload: str) -> Runner:
        argv = self.box_argv[workload]
        files = {"hello.py": HELLO} if workload == "python" else None

        async def run() -> None:
            result = await sv.run(argv, files=files)
            # Per-run stages only: "slot:" stages ran once, when the slot was built.
            setup_ms = sum(ms for name, ms in result.evidence.setup if not name.startswith("slot:"))
            self.box_parts.append((result.wall_time, setup_ms / 1e3))
            if result.status is not rustbox.Status.OK or result.stdout != self.expected[workload]:
                raise RunFailed(
                    f"rustbox {workload}: {result.status.value} error={result.evidence.error} "
                    f"stdout={result.stdout!r} stderr={result.stderr[:300]!r}"
                )

        return run


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


MODES = ("bare_spawn", "bare_anyio", "rustbox")
MODE_LABEL = {
    "bare_spawn": "bare posix_spawn+waitpid",
    "bare_anyio": "bare anyio.run_process",
    "rustbox": "rustbox sv.run",
}


def runners(w: Workloads, sv: rustbox.Supervisor, workload: str) -> dict[str, Runner]:
    return {
        "bare_spawn": w.bare_spawn(workload),
        "bare_anyio": w.bare_anyio(workload),
        "rustbox": w.rustbox(sv, workload),
    }


def rotated(round_no: int) -> tuple[str, ...]:
    """Mode order for a round, rotated so no mode always goes first (or last)."""
    k = round_no % len(MODES)
    return MODES[k:] + MODES[:k]


# -- phase 0: supervisor start-up ------------------------------------------------


async def bench_startup(cycles: int) -> dict[str, Any]:
    """Time ``async with Supervisor()`` entry and exit, apart from any run."""
    enter: list[float] = []
    leave: list[float] = []
    first_run: list[float] = []
    for _ in range(cycles):
        t0 = time.perf_counter()
        async with rustbox.Supervisor(max_concurrency=4) as sv:
            t1 = time.perf_counter()
            await sv.run(["/bin/true"])
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        enter.append(t1 - t0)
        first_run.append(t2 - t1)
        leave.append(t3 - t2)
    return {
        "cycles": cycles,
        "enter": summarise(enter),
        "first_run_true": summarise(first_run),
        "close": summarise(leave),
    }


# -- phase 1: latency at concurrency 1 ----------------------------------------


async def bench_latency(
    w: Workloads, sv: rustbox.Supervisor, workload: str, samples: int, batch: int, warmup: int
) -> dict[str, Any]:
    """Sequential runs, bare and rustbox in interleaved batches of ``batch`` runs."""
    run = runners(w, sv, workload)
    for mode in MODES:
        for _ in range(warmup):
            await run[mode]()
    times: dict[str, list[float]] = {m: [] for m in MODES}
    w.box_parts.clear()
    rounds = -(-samples // batch)
    for r in range(rounds):
        for mode in rotated(r):
            fn = run[mode]
            for _ in range(min(batch, samples - len(times[mode]))):
                t0 = time.perf_counter()
                await fn()
                times[mode].append(time.perf_counter() - t0)
    stats = {m: summarise(times[m]) for m in MODES}
    out: dict[str, Any] = {
        "workload": workload,
        "batch": batch,
        "warmup": warmup,
        "modes": stats,
        # Where a rustbox run's time goes: the payload itself, the sandbox set-up
        # the proxy reports, and the rest (fork/hand-off, supervisor, cleanup).
        "rustbox_payload_wall": summarise([p for p, _ in w.box_parts]),
        "rustbox_setup": summarise([s for _, s in w.box_parts]),
    }
    for base in ("bare_spawn", "bare_anyio"):
        out[f"vs_{base}"] = {
            "p50_overhead_ms": stats["rustbox"]["p50_ms"] - stats[base]["p50_ms"],
            "p95_overhead_ms": stats["rustbox"]["p95_ms"] - stats[base]["p95_ms"],
            "mean_overhead_ms": stats["rustbox"]["mean_ms"] - stats[base]["mean_ms"],
            "p50_ratio": stats["rustbox"]["p50_ms"] / stats[base]["p50_ms"],
        }
    out["samples_ms"] = {m: [round(t * 1e3, 4) for t in times[m]] for m in MODES}
    return out


# -- phase 2: throughput at concurrency 4 -------------------------------------


async def _window(fn: Runner, concurrency: int, seconds: float) -> tuple[int, float]:
    """``concurrency`` tasks loop ``fn`` until the deadline; returns (runs, elapsed)."""
    count = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await fn()
            count += 1

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return count, time.perf_counter() - t0


async def bench_throughput(
    w: Workloads, sv: rustbox.Supervisor, concurrency: int, rounds: int, seconds: float, warmup: int
) -> dict[str, Any]:
    """Runs/s of python hello with ``concurrency`` looping tasks, modes in rotated windows."""
    run = runners(w, sv, "python")
    for mode in MODES:
        for _ in range(warmup):  # concurrent bursts: start worker threads, fill the proxy pool
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(run[mode])
    windows: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for r in range(rounds):
        for mode in rotated(r):
            n, elapsed = await _window(run[mode], concurrency, seconds)
            windows[mode].append({"runs": n, "seconds": elapsed, "runs_per_s": n / elapsed})
    rate = {
        m: sum(x["runs"] for x in windows[m]) / sum(x["seconds"] for x in windows[m]) for m in MODES
    }
    out: dict[str, Any] = {
        "workload": "python",
        "concurrency": concurrency,
        "rounds": rounds,
        "window_s": seconds,
        "runs_per_s": rate,
        "windows": windows,
    }
    for base in ("bare_spawn", "bare_anyio"):
        per_round = [
            x["runs_per_s"] / b["runs_per_s"]
            for x, b in zip(windows["rustbox"], windows[base], strict=True)
        ]
        out[f"ratio_vs_{base}"] = rate["rustbox"] / rate[base]
        out[f"ratio_vs_{base}_per_round"] = per_round
    return out


# -- phase 3: many concurrent sleeping sandboxes ------------------------------


def _proc_tree() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, comm) for every process on the host."""
    tree = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree[int(entry.name)] = (ppid, comm)
    return tree


def _descendants(root: int, tree: dict[int, tuple[int, str]]) -> dict[int, int]:
    """pid -> depth below ``root`` (1 = child) for every descendant."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in tree.items():
        children.setdefault(ppid, []).append(pid)
    depth = {}
    frontier = [(root, 0)]
    while frontier:
        pid, d = frontier.pop()
        for child in children.get(pid, ()):
            depth[child] = d + 1
            frontier.append((child, d + 1))
    return depth


def count_my_sleepers() -> int:
    """Sandboxed ``sleep`` processes below this process (other sessions' sandboxes do not count).

    The payload has exec'd /bin/sleep once its comm reads ``sleep``; the
    launcher -> proxy -> payload chain hangs off this process.
    """
    tree = _proc_tree()
    return sum(1 for pid in _descendants(os.getpid(), tree) if tree[pid][1] == "sleep")


def _uid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages split between their users)."""
    try:
        return read_kv_kb(f"/proc/{pid}/smaps_rollup", "Pss")
    except (OSError, KeyError):
        return 0


def peak_snapshot() -> dict[str, Any]:
    """Who runs below this process, their uids and memory (PSS), at the peak."""
    me = os.getpid()
    tree = _proc_tree()
    depth = _descendants(me, tree)
    payloads = [p for p in depth if tree[p][1] == "sleep"]
    launchers = [p for p, d in depth.items() if d == 1]
    others = [p for p in depth if p not in payloads and p not in launchers]
    uids = [_uid_of(p) for p in payloads]
    good_uids = [u for u in uids if u is not None and UID_LO <= u <= UID_HI]
    return {
        "payloads": len(payloads),
        "payload_uids_in_pool": len(good_uids),
        "payload_uids_distinct": len(set(good_uids)),
        "launcher_pss_bytes": sum(_pss(p) for p in launchers),
        "proxy_pss_bytes": sum(_pss(p) for p in others),
        "payload_pss_bytes": sum(_pss(p) for p in payloads),
        "proxies_and_warm": len(others),
    }


async def bench_concurrent(n: int, sleep_s: float, timeout: float) -> dict[str, Any]:
    """Start ``n`` sandboxes sleeping ``sleep_s`` under one Supervisor and measure the peak."""
    limits = rustbox.Limits(wall_time=30.0, cpu_time=2.0)
    results: list[rustbox.Result | BaseException] = []
    rss = "/proc/self/status"
    t_enter = time.perf_counter()
    async with rustbox.Supervisor(max_concurrency=n) as sv:
        startup = time.perf_counter() - t_enter
        await sv.run(["/bin/true"])  # the launcher is up and warm before the baseline
        await anyio.sleep(0.3)
        rss_before = read_kv_kb(rss, "VmRSS")
        avail_before = read_kv_kb("/proc/meminfo", "MemAvailable")

        async def one() -> None:
            try:
                results.append(await sv.run(["/bin/sleep", str(sleep_s)], limits=limits))
            except Exception as exc:
                results.append(exc)

        rss_peak = rss_before
        seen_max = 0
        all_running_s: float | None = None
        snapshot: dict[str, Any] = {}
        avail_peak = avail_before
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
            with anyio.move_on_after(timeout):
                while len(results) < n:
                    running = await anyio.to_thread.run_sync(count_my_sleepers)
                    rss_peak = max(rss_peak, read_kv_kb(rss, "VmRSS"))
                    if running > seen_max:
                        seen_max = running
                        avail_peak = read_kv_kb("/proc/meminfo", "MemAvailable")
                    if running >= n:
                        all_running_s = time.perf_counter() - t0
                        snapshot = await anyio.to_thread.run_sync(peak_snapshot)
                        break
                    await anyio.sleep(0.05)
        all_done_s = time.perf_counter() - t0
        rss_after = read_kv_kb(rss, "VmRSS")
    close_s = time.perf_counter() - t0 - all_done_s
    await anyio.sleep(0.2)
    leftovers = len(_descendants(os.getpid(), _proc_tree()))

    statuses: dict[str, int] = {}
    problems: list[str] = []
    walls: list[float] = []
    for r in results:
        if isinstance(r, BaseException):
            statuses["exception"] = statuses.get("exception", 0) + 1
            problems.append(f"{type(r).__name__}: {r}")
            continue
        statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
        walls.append(r.wall_time)
        if r.status is not rustbox.Status.OK or r.evidence.error is not None or r.exit_code != 0:
            problems.append(
                f"{r.status.value} exit={r.exit_code} signal={r.signal} tle={r.tle} "
                f"error={r.evidence.error} stderr={r.stderr[:200]!r}"
            )
    ok = statuses.get("OK", 0)
    sandbox_pss = snapshot.get("proxy_pss_bytes", 0) + snapshot.get("payload_pss_bytes", 0)
    return {
        "sandboxes": n,
        "sleep_s": sleep_s,
        "supervisor_start_s": startup,
        "all_running": all_running_s is not None,
        "time_to_all_running_s": all_running_s,
        "max_seen_running": seen_max,
        "all_done_s": all_done_s,
        "close_s": close_s,
        "supervisor_rss_before_bytes": rss_before,
        "supervisor_rss_peak_bytes": rss_peak,
        "supervisor_rss_after_bytes": rss_after,
        "supervisor_bytes_per_sandbox": (rss_peak - rss_before) / n,
        "mem_available_delta_bytes": avail_before - avail_peak,
        # Divided by the sandboxes alive at the peak (= n when all ran at once).
        "system_bytes_per_sandbox": (avail_before - avail_peak) / max(seen_max, 1),
        "sandbox_pss_bytes_per_sandbox": sandbox_pss / max(seen_max, 1),
        "peak": snapshot,
        "statuses": statuses,
        "ok": ok,
        "all_ok": ok == n and not problems,
        "payload_wall_p50_s": statistics.median(walls) if walls else None,
        "payload_wall_max_s": max(walls) if walls else None,
        "problems": problems[:20],
        "problem_count": len(problems),
        "leftover_descendants": leftovers,
    }


# -- reporting ------------------------------------------------------------------


def f2(x: float) -> str:
    return f"{x:.2f}"


def mib(x: float) -> str:
    return f"{x / 2**20:.1f} MiB"


def kib(x: float) -> str:
    return f"{x / 1024:.0f} KiB"


def report(out: dict[str, Any]) -> str:
    """The human-readable tables."""
    lines: list[str] = []
    m = out["machine"]
    settings = out["settings"]
    lines.append(
        f"rustbox core benchmark  {m['date']}  ({settings['profile']}, {settings['backend']})"
    )
    lines.append(
        f"machine: nproc={m['nproc']} ({m['cpu_model']}), {m['mem_total_mib']} MiB, "
        f"kernel {m['kernel']}, python {m['python']} (payload {m['payload_python']}), "
        f"cgroup v{m['cgroup_version']}, anyio {m['anyio']}, "
        f"loadavg {' '.join(m['loadavg_at_start'])}"
    )
    lines.append(f"baseline for the targets: {settings['baseline']}")
    if "startup" in out:
        s = out["startup"]
        lines.append("")
        lines.append(f"Supervisor start-up ({s['cycles']} cycles, ms)")
        lines.append(
            table(
                ["step", "p50", "mean", "max"],
                [
                    [k, f2(s[key]["p50_ms"]), f2(s[key]["mean_ms"]), f2(s[key]["max_ms"])]
                    for k, key in (
                        ("enter (async with)", "enter"),
                        ("first run /bin/true", "first_run_true"),
                        ("close", "close"),
                    )
                ],
            )
        )
    for lat in out.get("latency", []):
        lines.append("")
        lines.append(
            f"Latency, concurrency 1: {lat['workload']}  (ms; batches of {lat['batch']} "
            f"interleaved, {lat['warmup']} warm-up runs per mode)"
        )
        rows = []
        for mode in MODES:
            st = lat["modes"][mode]
            rows.append(
                [MODE_LABEL[mode], st["n"], f2(st["mean_ms"]), f2(st["p50_ms"]), f2(st["p95_ms"])]
            )
        for label, key in (
            ("  payload wall (r.wall_time)", "rustbox_payload_wall"),
            ("  per-run set-up stages (evidence)", "rustbox_setup"),
        ):
            st = lat[key]
            rows.append([label, "", f2(st["mean_ms"]), f2(st["p50_ms"]), f2(st["p95_ms"])])
        lines.append(table(["mode", "n", "mean", "p50", "p95"], rows))
        for base in ("bare_spawn", "bare_anyio"):
            v = lat[f"vs_{base}"]
            ok = v["p50_overhead_ms"] <= TARGET_P50_OVERHEAD_MS
            lines.append(
                f"  rustbox vs {MODE_LABEL[base]}: p50 +{f2(v['p50_overhead_ms'])} ms "
                f"(x{f2(v['p50_ratio'])}), p95 +{f2(v['p95_overhead_ms'])} ms, "
                f"mean +{f2(v['mean_overhead_ms'])} ms"
                + (
                    f"   target p50 overhead <= {TARGET_P50_OVERHEAD_MS:g} ms: {verdict(ok)}"
                    if base == "bare_spawn"
                    else ""
                )
            )
    if "throughput" in out:
        t = out["throughput"]
        lines.append("")
        lines.append(
            f"Throughput, concurrency {t['concurrency']}: python hello  "
            f"({t['rounds']} rounds x {t['window_s']:g} s windows per mode, rotated)"
        )
        rows = [
            [
                MODE_LABEL[mode],
                sum(x["runs"] for x in t["windows"][mode]),
                f"{t['runs_per_s'][mode]:.1f}",
            ]
            for mode in MODES
        ]
        lines.append(table(["mode", "runs", "runs/s"], rows))
        for base in ("bare_spawn", "bare_anyio"):
            ratio = t[f"ratio_vs_{base}"]
            per = ", ".join(f2(x) for x in t[f"ratio_vs_{base}_per_round"])
            target = TARGET_THROUGHPUT_RATIO
            lines.append(
                f"  rustbox / {MODE_LABEL[base]}: {f2(ratio)} (per round: {per})"
                + (
                    f"   target >= {target:g}: {verdict(ratio >= target)}"
                    if base == "bare_spawn"
                    else ""
                )
            )
    if "concurrent" in out:
        c = out["concurrent"]
        p = c["peak"]
        lines.append("")
        lines.append(
            f"{c['sandboxes']} concurrent sandboxes: /bin/sleep {c['sleep_s']:g} "
            "under one Supervisor"
        )
        t_all = c["time_to_all_running_s"]
        rows = [
            ["Supervisor start-up", f"{c['supervisor_start_s'] * 1e3:.0f} ms"],
            [
                "time until all running",
                f"{t_all:.2f} s"
                if t_all is not None
                else f"never (max seen {c['max_seen_running']})",
            ],
            ["start rate", f"{c['sandboxes'] / t_all:.0f} sandboxes/s" if t_all else "-"],
            [
                "payloads seen at peak (uid in pool / distinct)",
                f"{p.get('payloads', 0)} ({p.get('payload_uids_in_pool', 0)} / "
                f"{p.get('payload_uids_distinct', 0)})",
            ],
            [
                "supervisor RSS before -> peak",
                f"{mib(c['supervisor_rss_before_bytes'])} -> {mib(c['supervisor_rss_peak_bytes'])}",
            ],
            ["supervisor memory per sandbox", kib(c["supervisor_bytes_per_sandbox"])],
            ["system memory per sandbox (MemAvailable delta)", kib(c["system_bytes_per_sandbox"])],
            ["proxy+payload PSS per sandbox", kib(c["sandbox_pss_bytes_per_sandbox"])],
            [
                "  proxies / payloads PSS at peak",
                f"{mib(p.get('proxy_pss_bytes', 0))} / {mib(p.get('payload_pss_bytes', 0))}",
            ],
            ["launcher PSS at peak", mib(p.get("launcher_pss_bytes", 0))],
            [
                "all done after",
                f"{c['all_done_s']:.2f} s (payload wall p50 {c['payload_wall_p50_s'] or 0:.2f} s,"
                f" max {c['payload_wall_max_s'] or 0:.2f} s)",
            ],
            ["Supervisor close", f"{c['close_s'] * 1e3:.0f} ms"],
            [
                "results",
                ", ".join(f"{k}={v}" for k, v in sorted(c["statuses"].items()))
                + ("  (all OK)" if c["all_ok"] else f"  ({c['problem_count']} problems)"),
            ],
            ["processes left below us after exit", str(c["leftover_descendants"])],
        ]
        lines.append(table(["figure", "value"], rows))
        for problem in c["problems"]:
            lines.append(f"  problem: {problem}")
    for name, trace in out.get("errors", {}).items():
        lines.append("")
        lines.append(f"ERROR in {name} (figures missing):")
        lines.append(trace.rstrip())
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> dict[str, Any]:
    quick: bool = args.quick
    phases = {args.only} if args.only else {"latency", "throughput", "concurrent"}
    out: dict[str, Any] = {
        "machine": machine_facts(),
        "settings": {
            "profile": "quick" if quick else "full",
            "backend": args.backend,
            "phases": sorted(phases),
            "baseline": "bare posix_spawn (os.posix_spawn + os.waitpid in a worker thread, "
            "stdout/stderr on pipes)",
            "targets": {
                "p50_overhead_ms_max": TARGET_P50_OVERHEAD_MS,
                "throughput_ratio_min": TARGET_THROUGHPUT_RATIO,
            },
        },
    }
    t_start = time.perf_counter()
    errors: dict[str, str] = {}
    out["errors"] = errors

    async def attempt(name: str, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run one phase; a failure is recorded and reported, and the others still run."""
        progress(f"{name} ...", t_start)
        try:
            return await fn()
        except Exception as exc:
            errors[name] = "".join(traceback.format_exception(exc))
            progress(f"{name} FAILED: {exc!r}", t_start)
            return None

    if phases & {"latency", "throughput"}:
        out["startup"] = await attempt("startup", lambda: bench_startup(3 if quick else 8))
        with tempfile.TemporaryDirectory(prefix="rbx-bench-") as tmp:
            w = Workloads(tmp)
            try:
                async with rustbox.Supervisor(max_concurrency=4) as sv:
                    if "latency" in phases:
                        sizes = {"true": 30 if quick else 300, "python": 20 if quick else 200}
                        lat = [
                            await attempt(
                                f"latency {wl}",
                                functools.partial(bench_latency, w, sv, wl, k, 10, 10),
                            )
                            for wl, k in sizes.items()
                        ]
                        out["latency"] = [x for x in lat if x is not None]
                    if "throughput" in phases:
                        rounds, window = (1, 1.0) if quick else (6, 4.0)
                        out["throughput"] = await attempt(
                            "throughput", lambda: bench_throughput(w, sv, 4, rounds, window, 10)
                        )
            except Exception as exc:
                errors["supervisor"] = "".join(traceback.format_exception(exc))
                progress(f"Supervisor FAILED: {exc!r}", t_start)
    if "concurrent" in phases:
        out["concurrent"] = await attempt(
            "concurrent",
            lambda: bench_concurrent(
                args.sandboxes or (100 if quick else 500),
                args.sleep or (QUICK_SLEEP if quick else DEFAULT_SLEEP),
                timeout=60.0,
            ),
        )
    out = {k: v for k, v in out.items() if v is not None}
    out["total_s"] = time.perf_counter() - t_start
    out["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run of ~15 s")
    parser.add_argument(
        "--only", choices=("latency", "throughput", "concurrent"), help="run one phase"
    )
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--sandboxes", type=int, help="concurrent phase size (default 500, quick 100)"
    )
    parser.add_argument(
        "--sleep",
        type=float,
        help=f"seconds each concurrent sandbox sleeps (default {DEFAULT_SLEEP:g}, quick "
        f"{QUICK_SLEEP:g}; it must outlast starting them all)",
    )
    parser.add_argument(
        "--json", type=Path, default=RESULTS, help=f"where to write JSON (default {RESULTS})"
    )
    args = parser.parse_args(argv)
    if args.sandboxes is not None and args.sandboxes < 1:
        parser.error("--sandboxes must be at least 1")
    return args


def cli() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        print("bench_core: rustbox needs root", file=sys.stderr)
        return 2
    out = anyio.run(main, args, backend=args.backend)
    print(report(out))
    load = " ".join(out["machine"]["loadavg_at_end"])
    print(f"\ntotal {out['total_s']:.1f} s, loadavg at end {load}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
