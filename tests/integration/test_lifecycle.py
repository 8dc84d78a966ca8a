"""Run lifecycle against the real kernel: cancellation, shutdown, crashes, leaks.

Every test checks the host afterwards: no process of the run's uid, no
``u<uid>`` cgroup under ``rustbox`` in any hierarchy, the uid lock free, no
mount left behind.

The tests use a uid range of their own (``POOL``), outside the default
60000-60999, so that the "nothing is left" assertions only see runs of this
file, even while another rustbox process (another test session, a service)
runs sandboxes on the same host.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio
import pytest

import rustbox
from rustbox._host import UidPool

pytestmark = [pytest.mark.anyio, pytest.mark.root]

POOL_FIRST = 64100
POOL_COUNT = 64
POOL_UIDS = range(POOL_FIRST, POOL_FIRST + POOL_COUNT)
POOL = UidPool(first=POOL_FIRST, count=POOL_COUNT)

CGROUP_ROOT = Path("/sys/fs/cgroup")
HIERARCHIES = ("memory", "pids", "cpuacct", "freezer")  # searched for leftovers
RUN_HIERARCHIES = ("memory", "pids", "cpuacct")  # where a run's group is made
ROOT_DIR = "/run/rustbox/root"

SLEEP = rustbox.Limits(cpu_time=5.0, wall_time=60.0)
SLEEP_CMD = ["/bin/sleep", "30"]


# -- host inspection ------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of ``pid``, or None if it is gone."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    """Running or sleeping: a zombie has exited (nobody may reap it here)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _children(pid: int) -> list[int]:
    out = []
    for child in _pids():
        stat = _stat(child)
        if stat is not None and stat[1] == pid:
            out.append(child)
    return out


def _cmdline(pid: int) -> str:
    return (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ")


def _launchers(parent: int) -> list[int]:
    return [c for c in _children(parent) if _alive(c) and "rustbox._launcher" in _cmdline(c)]


def _processes_of(uids: Iterable[int]) -> dict[int, str]:
    """pid -> summary of every process with any uid (real/eff/saved/fs) in ``uids``."""
    wanted = {str(u) for u in uids}
    found = {}
    for pid in _pids():
        status = _read(f"/proc/{pid}/status")
        if status is None:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if wanted & set(line.split()[1:]):
                    found[pid] = f"{line.strip()} cmd={_cmdline(pid)!r}"
                break
    return found


def _our_in_use() -> list[int]:
    return [uid for uid in POOL.in_use() if uid in POOL_UIDS]


def _cgroup_dirs(uids: Iterable[int] = POOL_UIDS) -> list[str]:
    """Every u<uid> cgroup of ``uids`` under rustbox, in every hierarchy."""
    wanted = {f"u{u}" for u in uids}
    found = []
    for hierarchy in HIERARCHIES:
        parent = CGROUP_ROOT / hierarchy / "rustbox"
        if parent.is_dir():
            found += [str(p) for p in parent.iterdir() if p.name in wanted]
    return sorted(found)


def _rustbox_mounts(pid: int | str = "self") -> list[str]:
    text = _read(f"/proc/{pid}/mountinfo") or ""
    return [line for line in text.splitlines() if ROOT_DIR in line]


def _mount_count() -> int:
    return len((_read("/proc/self/mountinfo") or "").splitlines())


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _assert_clean(uids: Iterable[int] = POOL_UIDS) -> None:
    uids = list(uids)
    assert _processes_of(uids) == {}, "processes of run uids survived"
    assert _cgroup_dirs(uids) == [], "run cgroups left behind"
    assert [u for u in _our_in_use() if u in uids] == [], "uid locks still held"
    assert _rustbox_mounts() == [], "sandbox root mounts visible on the host"


async def _wait_running(count: int, timeout: float = 20.0) -> list[int]:
    """Wait until ``count`` of our leased uids have a live payload process; returns them.

    Idle slots hold uids too (built ahead of demand), so only uids with a
    payload count.
    """
    with anyio.fail_after(timeout):
        while True:
            uids = _our_in_use()
            procs = _processes_of(uids)
            owners = sorted({int(desc.split()[1]) for desc in procs.values()} & set(uids))
            if len(owners) >= count:
                return owners
            await anyio.sleep(0.01)


async def _wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for: {what}")
        await anyio.sleep(0.05)


async def _sleeper(sv: rustbox.Supervisor) -> None:
    await sv.run(SLEEP_CMD, limits=SLEEP)


@pytest.fixture(autouse=True)
def _clean_before_and_after() -> object:
    _assert_clean()
    yield
    _assert_clean()


# -- 1. cancelling one run ----------------------------------------------------


async def test_cancelling_run_kills_and_cleans_up() -> None:
    """Cancelling sv.run while the payload sleeps kills the payload and its proxy, removes
    the run's cgroups and frees its uid, all before the cancelled call returns.
    """
    async with rustbox.Supervisor(uid_pool=POOL, max_concurrency=4) as sv:
        seen: dict[str, object] = {}
        outcome: list[rustbox.Result] = []

        async def watcher(scope: anyio.CancelScope) -> None:
            [uid] = await _wait_running(1)
            payloads = list(_processes_of([uid]))
            seen.update(uid=uid, payloads=payloads, cgroups=_cgroup_dirs([uid]))
            seen["proxies"] = sorted({stat[1] for p in payloads if (stat := _stat(p))})
            await anyio.sleep(0.3)  # the payload is asleep in its sandbox now
            scope.cancel()

        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as run_scope:
                tg.start_soon(watcher, run_scope)
                outcome.append(await sv.run(SLEEP_CMD, limits=SLEEP))

        assert run_scope.cancelled_caught and outcome == []
        uid = seen["uid"]
        assert isinstance(uid, int)
        assert len(seen["cgroups"]) == len(RUN_HIERARCHIES), seen  # type: ignore[arg-type]
        # sv.run has returned: the run must already be gone, with no waiting.
        _assert_clean([uid])
        assert uid not in POOL.in_use()
        for pid in [*seen["payloads"], *seen["proxies"]]:  # type: ignore[misc]
            assert not _alive(pid), f"process {pid} of the cancelled run survived"
        # The supervisor still works after a cancellation.
        r = await sv.run(["/bin/sh", "-c", "echo still-alive"])
        assert r.status is rustbox.Status.OK and r.stdout == b"still-alive\n"


# -- 2. leaving the Supervisor block ------------------------------------------


async def test_cancelling_supervisor_block_cleans_up_all_runs() -> None:
    """A cancellation that unwinds through ``async with Supervisor()`` kills all 5 sleeping runs."""
    with anyio.CancelScope() as outer:
        async with (
            rustbox.Supervisor(uid_pool=POOL, max_concurrency=8) as sv,
            anyio.create_task_group() as tg,
        ):
            for _ in range(5):
                tg.start_soon(_sleeper, sv)
            uids = await _wait_running(5)
            await anyio.sleep(0.5)
            outer.cancel()
    assert outer.cancelled_caught
    assert len(uids) == 5
    _assert_clean()
    assert _launchers(os.getpid()) == []


class _Boom(Exception):
    pass


async def test_exception_out_of_supervisor_block_cleans_up_all_runs() -> None:
    """An exception raised inside the block (and its task group) kills all 5 sleeping runs."""
    with pytest.raises(BaseExceptionGroup) as info:
        async with (
            rustbox.Supervisor(uid_pool=POOL, max_concurrency=8) as sv,
            anyio.create_task_group() as tg,
        ):
            for _ in range(5):
                tg.start_soon(_sleeper, sv)
            await _wait_running(5)
            raise _Boom
    assert info.group_contains(_Boom)
    _assert_clean()
    assert _launchers(os.getpid()) == []


async def _close_under_outer_runs() -> tuple[list[Exception], tuple[object, ...]]:
    """Start 5 sleeping runs in a task group *outside* the Supervisor block, then leave the
    block normally. Returns what the runs raised, and what remained right after the block.
    """
    errors: list[Exception] = []

    async def one(sv: rustbox.Supervisor) -> None:
        try:
            await sv.run(SLEEP_CMD, limits=SLEEP)
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        async with rustbox.Supervisor(uid_pool=POOL, max_concurrency=8) as sv:
            for _ in range(5):
                tg.start_soon(one, sv)
            uids = await _wait_running(5)
        # The block has exited: the runs must be dead and cleaned up already.
        leftovers = (_processes_of(uids), _cgroup_dirs(uids), _our_in_use())
    return errors, leftovers


async def test_supervisor_exit_cleans_up_runs_of_outer_tasks() -> None:
    """The documented contract: every run started inside is killed *and cleaned up* when the
    block exits. Here the runs live in a task group outside the block, so only the
    Supervisor's own exit can clean them up: once ``async with`` returns, nothing may remain.
    """
    errors, leftovers = await _close_under_outer_runs()
    assert len(errors) == 5
    assert leftovers == ({}, [], []), (
        "Supervisor.__aexit__ returned before its runs were cleaned up"
    )


async def test_run_killed_by_supervisor_exit_raises_rustbox_error() -> None:
    """A run that the closing Supervisor kills raises a plain RustboxError (catchable with
    ``except rustbox.RustboxError``), not an ExceptionGroup from the library's own task group.
    """
    errors, _ = await _close_under_outer_runs()
    assert len(errors) == 5
    for exc in errors:
        assert isinstance(exc, rustbox.RustboxError), repr(exc)


# -- 3. concurrency ---------------------------------------------------------------


async def test_twenty_runs_at_concurrency_four() -> None:
    """20 runs at max_concurrency=4 all succeed, each with its own stdout; never more than 4
    payloads run at once (counted as distinct run uids with a live process).
    """
    results: dict[int, rustbox.Result] = {}
    peak = 0

    async with rustbox.Supervisor(uid_pool=POOL, max_concurrency=4) as sv:

        async def one(i: int) -> None:
            results[i] = await sv.run(
                ["/bin/sh", "-c", "read i; sleep 0.2; echo out-$i"],
                stdin=f"{i}\n",
                limits=rustbox.Limits(wall_time=30.0),
            )

        async def sample(done: anyio.Event) -> None:
            nonlocal peak
            while not done.is_set():
                running = {int(d.split()[1]) for d in _processes_of(POOL_UIDS).values()}
                peak = max(peak, len(running))
                await anyio.sleep(0.01)

        done = anyio.Event()
        async with anyio.create_task_group() as outer:
            outer.start_soon(sample, done)
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(one, i)
            done.set()

    assert sorted(results) == list(range(20))
    for i, r in results.items():
        assert r.status is rustbox.Status.OK, (i, r.status, r.stderr, r.evidence.error)
        assert r.stdout == f"out-{i}\n".encode(), i
    assert len({r.evidence.uid for r in results.values()}) >= 4
    assert 2 <= peak <= 4, f"peak of concurrently running payloads was {peak}"


# -- 4. leak check ----------------------------------------------------------------

LEAK_RUNS = 300
LEAK_SEED = 20240607


def _bad_request(rng: random.Random) -> tuple[list[str] | str, dict[str, object]]:
    choices: list[tuple[list[str] | str, dict[str, object]]] = [
        (["/nonexistent/bin"], {}),
        (["no-such-cmd-xyz"], {}),
        ([], {}),
        ("echo hi", {}),
        (["/bin/true"], {"files": {"../x": b""}}),
        (["/bin/true"], {"collect": ["/etc/passwd"]}),
        (["/bin/true"], {"env": {"A=B": "c"}}),
        (["/bin/true"], {"cwd": "box"}),
    ]
    return rng.choice(choices)


@pytest.mark.slow
async def test_no_leaks_over_hundreds_of_mixed_runs() -> None:
    """300 runs mixing OK, TLE, OLE, random-point cancellation and InvalidInput leak nothing:
    fds, processes, cgroups, uid locks and mounts are back where they started.
    """
    rng = random.Random(LEAK_SEED)
    kinds = ["ok"] * 100 + ["tle"] * 40 + ["ole"] * 50 + ["cancel"] * 60 + ["invalid"] * 50
    assert len(kinds) == LEAK_RUNS
    rng.shuffle(kinds)
    jobs = [(i, kind, rng.random()) for i, kind in enumerate(kinds)]
    failures: list[str] = []
    tally: Counter[str] = Counter()
    mounts_before = _mount_count()

    fds_outside = _fd_count()

    async with rustbox.Supervisor(uid_pool=POOL, max_concurrency=4) as sv:
        # Idle slots keep their uid, their channel, pidfd and lock fd (3 fds);
        # everything else of a run is gone once the slot is idle again, and a
        # retired slot's uid is released in the background.
        def idle() -> bool:
            pool = sv._pool
            assert pool is not None
            return (
                not sv._active
                and not sv._releasing
                and len(_our_in_use()) == len(pool._idle) == pool._count
                and _cgroup_dirs() == []
            )

        def fds_per_run() -> int:
            assert sv._pool is not None
            return _fd_count() - 3 * len(sv._pool._idle)

        warm = await sv.run(["/bin/sh", "-c", "echo warm"])
        assert warm.status is rustbox.Status.OK
        await _wait_until(idle, 10, "slots to be idle")
        fds_before = fds_per_run()

        async def job(i: int, kind: str, x: float) -> None:
            if kind == "ok":
                r = await sv.run(
                    ["/bin/sh", "-c", "read i; echo $i > out.txt; echo ok-$i"],
                    stdin=f"{i}\n",
                    collect=["out.txt"],
                    limits=rustbox.Limits(wall_time=30.0),
                )
                if (r.status, r.stdout, dict(r.files)) != (
                    rustbox.Status.OK,
                    f"ok-{i}\n".encode(),
                    {"out.txt": f"{i}\n".encode()},
                ):
                    failures.append(f"{i} ok: {r.status} {r.stdout!r} {r.files} {r.evidence.error}")
                tally[f"ok:{r.status}"] += 1
            elif kind == "tle":
                r = await sv.run(
                    ["/bin/sh", "-c", "while :; do :; done"],
                    limits=rustbox.Limits(cpu_time=0.2, wall_time=30.0),
                )
                if (r.status, r.tle) != (rustbox.Status.TLE, "cpu"):
                    failures.append(f"{i} tle: {r.status} {r.tle} {r.evidence.error}")
                tally[f"tle:{r.status}"] += 1
            elif kind == "ole":
                r = await sv.run(["yes"], limits=rustbox.Limits(stdout_max="8k", wall_time=30.0))
                if r.status is not rustbox.Status.OLE or len(r.stdout) != 8192:
                    failures.append(f"{i} ole: {r.status} {len(r.stdout)} {r.evidence.error}")
                tally[f"ole:{r.status}"] += 1
            elif kind == "cancel":
                command = SLEEP_CMD if x < 0.5 else ["/bin/sh", "-c", "while :; do :; done"]
                with anyio.move_on_after(x * 0.05) as scope:
                    r = await sv.run(command, limits=SLEEP)
                    failures.append(f"{i} cancel: finished uncancelled with {r.status}")
                tally[f"cancel:{scope.cancelled_caught}"] += 1
            else:
                bad, kwargs = _bad_request(random.Random(x))
                try:
                    await sv.run(bad, **kwargs)  # type: ignore[arg-type]
                except rustbox.InvalidInput:
                    tally["invalid"] += 1
                else:
                    failures.append(f"{i} invalid: {bad!r} {kwargs!r} was accepted")

        async def worker(queue: list[tuple[int, str, float]]) -> None:
            while queue:
                i, kind, x = queue.pop()
                try:
                    await job(i, kind, x)
                except Exception as exc:
                    failures.append(f"{i} {kind}: raised {exc!r}")

        queue = list(reversed(jobs))
        async with anyio.create_task_group() as tg:
            for _ in range(6):  # more workers than slots: some cancellations hit the queue
                tg.start_soon(worker, queue)

        await _wait_until(idle, 10, "slots to be idle")
        fds_after = fds_per_run()
        cgroups_inside = _cgroup_dirs()

    assert failures == [], f"{len(failures)} failures, tally {dict(tally)}"
    assert sum(tally.values()) == LEAK_RUNS
    assert fds_after == fds_before, f"fd leak: {fds_before} -> {fds_after}, tally {dict(tally)}"
    assert _fd_count() == fds_outside, "fds left open after the Supervisor closed"
    assert cgroups_inside == []
    assert _processes_of(POOL_UIDS) == {}
    assert _cgroup_dirs() == []
    assert _our_in_use() == []
    assert _mount_count() == mounts_before
    assert _rustbox_mounts() == [] and _rustbox_mounts(1) == []
    assert _launchers(os.getpid()) == []


# -- 5. supervisor crash ------------------------------------------------------------

_CRASH_SCRIPT = textwrap.dedent(
    """
    import functools
    import anyio, rustbox
    from rustbox._host import UidPool

    POOL = UidPool(first={first}, count={count})

    async def main():
        async with rustbox.Supervisor(uid_pool=POOL, max_concurrency=8) as sv:
            limits = rustbox.Limits(cpu_time=5.0, wall_time=60.0)
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(functools.partial(sv.run, ["/bin/sleep", "60"], limits=limits))
                while True:
                    uids = [u for u in POOL.in_use() if {first} <= u < {first} + {count}]
                    if len(uids) >= 4:
                        break
                    await anyio.sleep(0.01)
                print("UIDS", *uids, flush=True)
                print("READY", flush=True)
                await anyio.sleep(3600)

    anyio.run(main)
    """
)


def _read_until_ready(proc: subprocess.Popen[bytes], timeout: float) -> list[str]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"READY\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"the supervisor process did not get ready: {buf!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            pytest.fail(f"the supervisor process exited early ({proc.wait()}): {buf!r}")
        buf += chunk
    return buf.decode().splitlines()


@pytest.mark.slow
async def test_supervisor_sigkill_leaves_nothing_running_and_next_supervisor_sweeps() -> None:
    """SIGKILL of the supervisor process takes the launcher, the proxies and the payloads with it;
    the stale cgroups are removed by the next Supervisor, and the uids are free again.
    """
    script = _CRASH_SCRIPT.format(first=POOL_FIRST, count=POOL_COUNT)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        lines = _read_until_ready(proc, timeout=30)
        uids = [int(u) for line in lines if line.startswith("UIDS") for u in line.split()[1:]]
        assert len(uids) >= 4  # idle slots built ahead of demand hold uids too
        launchers = _launchers(proc.pid)
        assert len(launchers) == 1, f"launcher of {proc.pid} not found"
        await _wait_until(
            lambda: len({int(d.split()[1]) for d in _processes_of(uids).values()}) >= 4,
            20,
            "a payload process for each of the 4 runs",
        )
        proxies = _children(launchers[0])
        assert len(proxies) >= 4, "the launcher has no proxies"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()

    await _wait_until(lambda: not _processes_of(uids), 10, f"payloads of {uids} to die")
    await _wait_until(lambda: not _alive(launchers[0]), 10, "the launcher to die")
    await _wait_until(lambda: not any(map(_alive, proxies)), 10, "the proxies to die")
    assert [u for u in _our_in_use() if u in uids] == [], "a dead supervisor's uid locks are free"

    # The stale u<uid> cgroups (the proxies could not remove them) go at the next start.
    # (Not asserted to exist here: another rustbox process starting may sweep them first.)
    stale = _cgroup_dirs(uids)
    async with rustbox.Supervisor(uid_pool=POOL) as sv:
        assert _cgroup_dirs(uids) == [], f"the new Supervisor did not sweep {stale}"
        for uid in uids:
            lease = POOL.try_acquire(uid)
            assert lease is not None, f"uid {uid} is not acquirable"
            lease.release()
        r = await sv.run(["/bin/sh", "-c", "echo after-crash"])
        assert r.status is rustbox.Status.OK and r.stdout == b"after-crash\n"


# -- 6. misuse ----------------------------------------------------------------------


async def test_run_outside_async_with_raises_clear_error() -> None:
    """sv.run before ``async with`` and after it raises RustboxError saying how to use it."""
    sv = rustbox.Supervisor(uid_pool=POOL)
    with pytest.raises(rustbox.RustboxError, match="async with"):
        await sv.run(["/bin/true"])
    async with sv:
        r = await sv.run(["/bin/true"])
        assert r.status is rustbox.Status.OK
    with pytest.raises(rustbox.RustboxError, match="async with"):
        await sv.run(["/bin/true"])


async def test_one_shot_run() -> None:
    """rustbox.run() opens its own Supervisor, runs once and closes it."""
    r = await rustbox.run(["/bin/sh", "-c", "read x; echo one-shot-$x"], stdin=b"7\n")
    assert r.status is rustbox.Status.OK
    assert r.stdout == b"one-shot-7\n"
    assert 60000 <= r.evidence.uid < 61000  # the default pool
    assert _launchers(os.getpid()) == [], "the one-shot Supervisor's launcher is still running"


# -- 7. launcher restart ----------------------------------------------------------


async def test_launcher_is_restarted_after_it_dies() -> None:
    """SIGKILL of the launcher between two runs: the next run starts a new launcher and succeeds."""
    async with rustbox.Supervisor(uid_pool=POOL) as sv:
        first = await sv.run(["/bin/sh", "-c", "echo one"])
        assert first.status is rustbox.Status.OK
        launchers = _launchers(os.getpid())
        assert len(launchers) == 1
        old = launchers[0]
        os.kill(old, signal.SIGKILL)
        await _wait_until(lambda: not _alive(old), 10, "the launcher to die")

        second = await sv.run(["/bin/sh", "-c", "echo two"])
        assert second.status is rustbox.Status.OK, (second.status, second.evidence.error)
        assert second.stdout == b"two\n"
        new = _launchers(os.getpid())
        assert len(new) == 1 and new[0] != old
        assert _stat(old) is None, "the dead launcher was not reaped"
        third = await sv.run(["/bin/sh", "-c", "echo three"])
        assert third.stdout == b"three\n"
    assert _launchers(os.getpid()) == []
