"""Hostile payloads against the real sandbox (root only).

Each test runs an attack (fork/thread/memory/cpu/output/file/inode/fd bombs,
``kill -9 -1``, poking at PID 1) and checks two things: the run gets the verdict
the library documents, with the evidence behind it, and the host is untouched
afterwards (no process of the run's uid, no cgroup left for it).

Safety: these run as root on a real machine. Every payload starts with
``GUARD``, a Python snippet that checks the sandbox is really on (not root, own
PID namespace, ``/usr`` read-only to it, ``/tmp`` a private tmpfs) and exits
with code 77 *without* attacking if anything is off. Non-Python payloads (sh,
C) are started through ``guard.py``, which runs the same checks and then execs
the real program. ``_check_guard`` turns a guard refusal into a test failure
with the guard's reason.

Runs use a dedicated uid range (``POOL_FIRST``..), outside the default pool,
so the leftover checks cannot be confused by other rustbox users on the host.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

import rustbox
from rustbox._host import UidPool

pytestmark = [pytest.mark.anyio, pytest.mark.root]

#: Heavy attacks run on one backend only (the sandbox does not depend on it).
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])

KiB = 1 << 10
MiB = 1 << 20
POOL_FIRST = 61400
POOL_COUNT = 32
#: A single uid for the ``kill -9 -1`` test, so a host process can be given it beforehand.
KILL_UID = POOL_FIRST + POOL_COUNT
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("memory", "pids", "cpuacct", "freezer")
GUARD_EXIT = 77
GUARD_MARK = "RUSTBOX-GUARD-FAILED"


def _host_init_cmdline() -> bytes:
    try:
        return Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return b""


#: Prepended to every payload; refuses to attack unless the sandbox is on.
GUARD = textwrap.dedent(
    f"""\
    import os as _gos, sys as _gsys

    def _rustbox_guard():
        bad = []
        if _gos.getuid() == 0 or _gos.geteuid() == 0:
            bad.append("running as root")
        if _gos.getpid() > 10:
            bad.append(f"pid {{_gos.getpid()}} > 10: not in a fresh PID namespace")
        try:
            if _gos.readlink("/proc/self/ns/pid") == {os.readlink("/proc/self/ns/pid")!r}:
                bad.append("in the host's PID namespace")
        except OSError as exc:
            bad.append(f"cannot read /proc/self/ns/pid: {{exc}}")
        try:
            with open("/proc/1/cmdline", "rb") as f:
                if f.read() == {_host_init_cmdline()!r}:
                    bad.append("PID 1 is the host's init")
        except OSError:
            pass  # invisible (hidepid) or not ours: good
        if _gos.access("/usr", _gos.W_OK):
            bad.append("/usr is writable (access)")
        probe = f"/usr/.rustbox-guard-{{_gos.getpid()}}"
        try:
            _gos.close(_gos.open(probe, _gos.O_WRONLY | _gos.O_CREAT | _gos.O_EXCL, 0o600))
        except OSError:
            pass
        else:
            _gos.unlink(probe)
            bad.append("/usr is writable (created a file)")
        tmp_fs = None
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    fields = line.split()
                    if fields[4] == "/tmp":
                        tmp_fs = fields[fields.index("-") + 1]
        except OSError as exc:
            bad.append(f"cannot read mountinfo: {{exc}}")
        if tmp_fs != "tmpfs":
            bad.append(f"/tmp is not a tmpfs mount (fstype {{tmp_fs}})")
        if bad:
            _gsys.stderr.write("{GUARD_MARK}: " + "; ".join(bad) + "\\n")
            _gsys.stderr.flush()
            _gos._exit({GUARD_EXIT})

    _rustbox_guard()
    """
)

#: Runs the guard, then execs argv[1:] with the signal dispositions Python changed put back.
EXEC_GUARD = GUARD + textwrap.dedent(
    """\
    import signal as _gsig
    for _s in (_gsig.SIGPIPE, _gsig.SIGXFSZ):
        _gsig.signal(_s, _gsig.SIG_DFL)
    _gos.execv(_gsys.argv[1], _gsys.argv[1:])
    """
)

#: One C program, several attacks (argv[1] picks one).
C_SOURCE = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t xcpu_seen;
static void on_xcpu(int sig) { (void)sig; xcpu_seen++; }

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "xcpu") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_xcpu;
        sigaction(SIGXCPU, &sa, NULL);
        puts("spinning");
        fflush(stdout);
        volatile unsigned long n = 0;
        for (;;) n++;
    }
    if (argc > 1 && strcmp(argv[1], "fsize") == 0) {
        static char buf[65536];
        int fd = open("/box/f", O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0) { perror("open"); return 3; }
        for (;;) {
            if (write(fd, buf, sizeof buf) < 0) { perror("write"); return 4; }
        }
    }
    return 2;
}
"""


# -- helpers -----------------------------------------------------------------


def _supervisor(first: int = POOL_FIRST, count: int = POOL_COUNT) -> rustbox.Supervisor:
    return rustbox.Supervisor(max_concurrency=2, uid_pool=UidPool(first=first, count=count))


def _py(body: str) -> dict[str, bytes]:
    """Files for a guarded Python payload run as ``python3 attack.py``."""
    return {"attack.py": (GUARD + textwrap.dedent(body)).encode()}


PY = ["/usr/bin/python3", "attack.py"]
GUARDED_EXEC = ["/usr/bin/python3", "/box/guard.py"]


def _check_guard(result: rustbox.Result) -> None:
    """Fail loudly if the payload's guard refused to attack."""
    if GUARD_MARK.encode() in result.stderr:
        line = next(
            x for x in result.stderr.decode(errors="replace").splitlines() if GUARD_MARK in x
        )
        pytest.fail(f"the sandbox was not on, the attack was NOT run: {line} ({result.status})")
    assert result.status is not rustbox.Status.IE, result.evidence.error


def _processes_of(uid: int, exclude: Iterable[int] = ()) -> list[str]:
    skip = set(exclude)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uids = {int(u) for u in fields.get("Uid", "").split()}
        if uid in uids:
            found.append(f"{entry.name} ({fields.get('Name', '?').strip()})")
    return found


def _process_limit_reached(cg: rustbox.CgroupFigures) -> bool:
    """The kernel refused a fork: a pids.events entry, or (RLIMIT_NPROC equals pids.max
    and is checked first, leaving no event) pids.peak at the limit."""
    return cg.pids_limit_hits > 0 or (cg.pids_peak is not None and cg.pids_peak >= cg.pids_limit)


def _assert_host_unaffected(result: rustbox.Result, exclude: Iterable[int] = ()) -> None:
    """No process of the run's uid, no cgroup of its slot: the run is fully gone."""
    uid = result.evidence.uid
    assert POOL_FIRST <= uid <= KILL_UID, uid
    assert _processes_of(uid, exclude) == []
    leftovers = [
        str(CGROUP_ROOT / c / "rustbox" / f"u{uid}")
        for c in CGROUP_CONTROLLERS
        if (CGROUP_ROOT / c / "rustbox" / f"u{uid}").exists()
    ]
    assert leftovers == []


def _killed_by_proxy(result: rustbox.Result, word: str) -> bool:
    return any(
        a.actor == "proxy" and a.action == "SIGKILL all" and word in a.reason
        for a in result.evidence.actions
    )


@pytest.fixture(scope="module")
def c_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("attack-c")
    (work / "attack.c").write_text(C_SOURCE)
    subprocess.run(
        ["gcc", "-O1", "-o", str(work / "attack"), str(work / "attack.c")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return (work / "attack").read_bytes()


def _c_files(binary: bytes) -> dict[str, bytes | rustbox.File]:
    return {"guard.py": EXEC_GUARD.encode(), "attack": rustbox.File(binary, executable=True)}


# -- the guard itself --------------------------------------------------------


async def test_guard_passes_inside_and_refuses_outside() -> None:
    """The guard lets a sandboxed payload through and stops one run on the host."""
    async with _supervisor() as sv:
        r = await sv.run(PY, files=_py("print('attack would run')"))
    _check_guard(r)
    assert r.status is rustbox.Status.OK
    assert r.stdout == b"attack would run\n"
    _assert_host_unaffected(r)

    # On the host (as root, host PID namespace, writable /usr) it must refuse.
    host = subprocess.run(
        ["/usr/bin/python3", "-c", GUARD + "print('attack would run')"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert host.returncode == GUARD_EXIT
    assert host.stdout == b""
    assert GUARD_MARK.encode() in host.stderr
    assert b"running as root" in host.stderr


# -- process bombs -----------------------------------------------------------


async def test_fork_until_refused_is_ple() -> None:
    """Forking until the pids cgroup refuses, then failing: PLE, with the refusal counted."""
    payload = """
        import os, sys, time
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                children += 1
        except OSError as exc:
            print(children, exc.errno, flush=True)
            sys.exit(1)
    """
    async with _supervisor() as sv:
        r = await sv.run(PY, files=_py(payload), limits=rustbox.Limits(processes=16, wall_time=10))
    _check_guard(r)
    assert r.status is rustbox.Status.PLE, r
    children, err = map(int, r.stdout.split())
    assert err == errno.EAGAIN
    assert children == 15  # 16 tasks in the group, the parent being one of them
    cg = r.evidence.cgroup
    assert cg is not None
    assert cg.pids_limit == 16
    assert _process_limit_reached(cg)
    assert cg.pids_peak is None or cg.pids_peak <= 16
    _assert_host_unaffected(r)


@ASYNCIO_ONLY
async def test_fork_bomb_that_keeps_trying_is_tle_wall() -> None:
    """Every process forks forever (sleeping when refused): killed at the wall limit."""
    payload = """
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.05)
    """
    limits = rustbox.Limits(processes=16, cpu_time=1.5, wall_time=1.5)
    async with _supervisor() as sv:
        r = await sv.run(PY, files=_py(payload), limits=limits)
    _check_guard(r)
    assert r.status is rustbox.Status.TLE, r
    assert r.tle == "wall"
    assert r.wall_time >= 1.5
    assert _killed_by_proxy(r, "wall_time")
    cg = r.evidence.cgroup
    assert cg is not None
    assert _process_limit_reached(cg)
    assert cg.pids_peak is None or cg.pids_peak <= 16
    _assert_host_unaffected(r)


async def test_shell_fork_loop_is_ple() -> None:
    """dash backgrounding ``sleep`` until it cannot fork: it exits 2, so PLE."""
    async with _supervisor() as sv:
        r = await sv.run(
            [*GUARDED_EXEC, "/bin/sh", "-c", "while :; do sleep 60 & done"],
            files={"guard.py": EXEC_GUARD},
            limits=rustbox.Limits(processes=16, wall_time=10),
        )
    _check_guard(r)
    assert r.status is rustbox.Status.PLE, r
    assert r.exit_code == 2
    assert b"Cannot fork" in r.stderr
    assert r.evidence.cgroup is not None
    assert r.evidence.cgroup is not None
    assert _process_limit_reached(r.evidence.cgroup)
    _assert_host_unaffected(r)


@ASYNCIO_ONLY
async def test_classic_shell_fork_bomb_is_contained() -> None:
    """``b(){ b|b& };b`` in a background subshell (dash refuses ``:`` as a name)
    while the main process sleeps: the bomb hits the pids limit, the run ends at
    the wall limit, and nothing survives it."""
    script = "(b(){ b|b& }; b) & exec sleep 60"
    limits = rustbox.Limits(processes=16, cpu_time=1.5, wall_time=1.5)
    async with _supervisor() as sv:
        r = await sv.run(
            [*GUARDED_EXEC, "/bin/sh", "-c", script], files={"guard.py": EXEC_GUARD}, limits=limits
        )
    _check_guard(r)
    assert r.status is rustbox.Status.TLE, r
    assert r.tle == "wall"
    assert b"Cannot fork" in r.stderr
    cg = r.evidence.cgroup
    assert cg is not None
    assert _process_limit_reached(cg)
    assert cg.pids_peak is None or cg.pids_peak <= 16
    _assert_host_unaffected(r)


async def test_thread_bomb_is_ple() -> None:
    """Threads count against the pids limit too: starting them until refused, then failing."""
    payload = """
        import os, threading
        stop = threading.Event()
        started = 0
        try:
            while True:
                threading.Thread(target=stop.wait, daemon=True).start()
                started += 1
        except RuntimeError as exc:
            print(started, exc, flush=True)
            os._exit(1)
    """
    async with _supervisor() as sv:
        r = await sv.run(PY, files=_py(payload), limits=rustbox.Limits(processes=16, wall_time=10))
    _check_guard(r)
    assert r.status is rustbox.Status.PLE, r
    started, _, message = r.stdout.decode().partition(" ")
    assert int(started) == 15
    assert "can't start new thread" in message
    assert r.evidence.cgroup is not None
    assert r.evidence.cgroup is not None
    assert _process_limit_reached(r.evidence.cgroup)
    _assert_host_unaffected(r)


# -- memory and cpu ----------------------------------------------------------


@ASYNCIO_ONLY
async def test_memory_bomb_is_mle() -> None:
    """Touching 512 MiB under a 64 MiB limit: OOM-killed, MLE, peak at (not over) the limit."""
    payload = """
        print("allocating", flush=True)
        block = bytearray(512 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        print("survived", flush=True)
    """
    limit = 64 * MiB
    async with _supervisor() as sv:
        r = await sv.run(PY, files=_py(payload), limits=rustbox.Limits(memory=limit, wall_time=10))
    _check_guard(r)
    assert r.status is rustbox.Status.MLE, r
    assert r.stdout == b"allocating\n"
    assert r.signal == signal.SIGKILL
    cg = r.evidence.cgroup
    assert cg is not None
    assert cg.memory_limit == limit
    assert cg.oom_kills >= 1
    assert r.memory_peak == cg.memory_peak
    assert limit * 3 // 4 <= r.memory_peak <= limit + 256 * KiB
    _assert_host_unaffected(r)


async def test_cpu_spin_is_tle_cpu() -> None:
    """A busy loop under cpu_time=0.5: TLE(cpu) shortly after 0.5 s, by the proxy's kill."""
    async with _supervisor() as sv:
        r = await sv.run(
            PY,
            files=_py("while True:\n    pass\n"),
            limits=rustbox.Limits(cpu_time=0.5, wall_time=5),
        )
    _check_guard(r)
    assert r.status is rustbox.Status.TLE, r
    assert r.tle == "cpu"
    assert 0.5 <= r.cpu_time < 0.5 + 0.2
    assert _killed_by_proxy(r, "cpu_time")
    assert r.signal == signal.SIGKILL
    _assert_host_unaffected(r)


async def test_python_ignoring_sigxcpu_is_still_tle_cpu() -> None:
    """SIGXCPU ignored does not help: the cgroup cpu poller kills the run."""
    payload = """
        import signal
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        while True:
            pass
    """
    async with _supervisor() as sv:
        r = await sv.run(PY, files=_py(payload), limits=rustbox.Limits(cpu_time=0.5, wall_time=5))
    _check_guard(r)
    assert r.status is rustbox.Status.TLE, r
    assert r.tle == "cpu"
    assert 0.5 <= r.cpu_time < 0.5 + 0.2
    assert _killed_by_proxy(r, "cpu_time")
    _assert_host_unaffected(r)


@ASYNCIO_ONLY
async def test_c_program_catching_sigxcpu_is_still_tle_cpu(c_binary: bytes) -> None:
    """A C program with a SIGXCPU handler that shrugs it off and spins: still TLE(cpu)."""
    async with _supervisor() as sv:
        r = await sv.run(
            [*GUARDED_EXEC, "/box/attack", "xcpu"],
            files=_c_files(c_binary),
            limits=rustbox.Limits(cpu_time=0.5, wall_time=5),
        )
    _check_guard(r)
    assert r.stdout == b"spinning\n"  # the guard passed and the handler is installed
    assert r.status is rustbox.Status.TLE, r
    assert r.tle == "cpu"
    assert 0.5 <= r.cpu_time < 0.5 + 0.2
    assert r.signal == signal.SIGKILL
    assert _killed_by_proxy(r, "cpu_time")
    _assert_host_unaffected(r)


@ASYNCIO_ONLY
async def test_sleep_is_tle_wall() -> None:
    """Sleeping uses no cpu; the wall limit ends it."""
    async with _supervisor() as sv:
        r = await sv.run(
            PY,
            files=_py("import time\ntime.sleep(60)\n"),
            limits=rustbox.Limits(cpu_time=1, wall_time=1),
        )
    _check_guard(r)
    assert r.status is rustbox.Status.TLE, r
    assert r.tle == "wall"
    assert r.wall_time >= 1.0
    assert r.cpu_time < 0.5
    assert _killed_by_proxy(r, "wall_time")
    _assert_host_unaffected(r)


# -- output and files --------------------------------------------------------


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_output_flood_is_ole(stream: str) -> None:
    """100 MB to a stream capped at 1 MiB: OLE, exactly the cap kept, marked truncated."""
    payload = f"""
        import sys
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            sys.{stream}.buffer.write(chunk)
        sys.{stream}.flush()
    """
    cap = MiB
    limits = rustbox.Limits(stdout_max=cap, stderr_max=cap, wall_time=10)
    async with _supervisor() as sv:
        r = await sv.run(PY, files=_py(payload), limits=limits)
    _check_guard(r)
    assert r.status is rustbox.Status.OLE, r
    data = getattr(r, stream)
    report = getattr(r.evidence, stream)
    assert len(data) == cap
    assert set(data) == {ord("x")}
    assert report.bytes == cap
    assert report.cap == cap
    assert report.truncated is True
    assert _killed_by_proxy(r, f"{stream} exceeded")
    _assert_host_unaffected(r)


async def test_output_one_byte_over_cap_then_exit_is_ole() -> None:
    """Going over the cap is OLE even when the program exits before the kill lands.

    ``head`` writes cap+1 bytes and exits at once, racing the supervisor's kill
    request; the documented rule is "OLE if stdout/stderr went over its cap".
    The race goes either way, so the run is repeated: every one must be OLE
    (and none may crash the supervisor).
    """
    cap = MiB
    outcomes: list[str] = []
    async with _supervisor() as sv:
        for _ in range(10):
            try:
                r = await sv.run(
                    [*GUARDED_EXEC, "/bin/sh", "-c", f"exec head -c {cap + 1} /dev/zero"],
                    files={"guard.py": EXEC_GUARD},
                    limits=rustbox.Limits(stdout_max=cap, wall_time=10),
                )
            except Exception as exc:  # recorded, asserted on below
                outcomes.append(f"raised {exc!r}")
                continue
            _check_guard(r)
            assert r.evidence.stdout.truncated is True
            assert len(r.stdout) == cap
            outcomes.append(f"{r.status.value} exit={r.exit_code}")
    # A run's uid and cgroup are released in the background once its proxy has
    # exited; leaving the Supervisor block waits for that, so check after it.
    assert all(o.startswith("OLE ") for o in outcomes), outcomes
    for uid in range(POOL_FIRST, POOL_FIRST + POOL_COUNT):
        assert _processes_of(uid) == []
        assert not any(
            (CGROUP_ROOT / c / "rustbox" / f"u{uid}").exists() for c in CGROUP_CONTROLLERS
        )


async def test_shell_file_size_bomb_is_fse() -> None:
    """``head -c 5000000 > /box/f`` under file_size=1M: SIGXFSZ, FSE, the file stops at 1 MiB."""
    async with _supervisor() as sv:
        r = await sv.run(
            [*GUARDED_EXEC, "/bin/sh", "-c", "exec head -c 5000000 /dev/zero > /box/f"],
            files={"guard.py": EXEC_GUARD},
            limits=rustbox.Limits(file_size=MiB, wall_time=10),
            collect=["f"],
        )
    _check_guard(r)
    assert r.status is rustbox.Status.FSE, r
    assert r.signal == signal.SIGXFSZ
    assert len(r.files["f"]) == MiB
    _assert_host_unaffected(r)


@ASYNCIO_ONLY
async def test_c_file_size_bomb_is_fse(c_binary: bytes) -> None:
    """The same from C (default SIGXFSZ disposition): FSE."""
    async with _supervisor() as sv:
        r = await sv.run(
            [*GUARDED_EXEC, "/box/attack", "fsize"],
            files=_c_files(c_binary),
            limits=rustbox.Limits(file_size=MiB, wall_time=10),
            collect=["f"],
        )
    _check_guard(r)
    assert r.status is rustbox.Status.FSE, r
    assert r.signal == signal.SIGXFSZ
    assert len(r.files["f"]) == MiB
    _assert_host_unaffected(r)


async def test_python_file_size_bomb_is_re_file_too_large() -> None:
    """Python ignores SIGXFSZ, so it sees EFBIG: RE with "File too large" (documented)."""
    payload = """
        import os
        fd = os.open("/box/f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        chunk = bytes(1 << 16)
        while True:
            os.write(fd, chunk)
    """
    async with _supervisor() as sv:
        r = await sv.run(
            PY,
            files=_py(payload),
            limits=rustbox.Limits(file_size=MiB, wall_time=10),
            collect=["f"],
        )
    _check_guard(r)
    assert r.status is rustbox.Status.RE, r
    assert r.exit_code == 1
    assert r.signal is None
    assert b"File too large" in r.stderr
    assert len(r.files["f"]) == MiB
    _assert_host_unaffected(r)


async def test_inode_bomb_stops_at_box_inodes() -> None:
    """Creating files until ENOSPC with box_inodes=256: fewer than 300 made, host unaffected."""
    payload = """
        import errno
        made = 0
        try:
            while True:
                open(f"/box/i{made}", "x").close()
                made += 1
        except OSError as exc:
            print(made, errno.errorcode[exc.errno])
    """
    async with _supervisor() as sv:
        r = await sv.run(
            PY, files=_py(payload), limits=rustbox.Limits(box_inodes=256, wall_time=10)
        )
    _check_guard(r)
    assert r.status is rustbox.Status.OK, r
    made, code = r.stdout.split()
    assert code == b"ENOSPC"
    assert 200 < int(made) < 300
    _assert_host_unaffected(r)


@ASYNCIO_ONLY
async def test_disk_fill_stops_at_box_size() -> None:
    """Writing to /box until ENOSPC with box_size=8M: at most 8 MiB lands."""
    payload = """
        import errno, os
        fd = os.open("/box/fill", os.O_WRONLY | os.O_CREAT, 0o600)
        chunk = bytes(1 << 16)
        written = 0
        try:
            while True:
                written += os.write(fd, chunk)
        except OSError as exc:
            print(written, errno.errorcode[exc.errno])
    """
    async with _supervisor() as sv:
        r = await sv.run(
            PY, files=_py(payload), limits=rustbox.Limits(box_size=8 * MiB, wall_time=10)
        )
    _check_guard(r)
    assert r.status is rustbox.Status.OK, r
    written, code = r.stdout.split()
    assert code == b"ENOSPC"
    assert 7 * MiB <= int(written) <= 8 * MiB
    _assert_host_unaffected(r)


async def test_fd_exhaustion_stops_at_open_files() -> None:
    """Opening /dev/null until EMFILE with open_files=32: never more than 32 descriptors."""
    payload = """
        import errno, os
        fds = []
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as exc:
            print(len(fds), max(fds), errno.errorcode[exc.errno])
    """
    async with _supervisor() as sv:
        r = await sv.run(PY, files=_py(payload), limits=rustbox.Limits(open_files=32, wall_time=10))
    _check_guard(r)
    assert r.status is rustbox.Status.OK, r
    count, highest, code = r.stdout.split()
    assert code == b"EMFILE"
    assert 20 <= int(count) <= 32
    assert int(highest) == 31
    _assert_host_unaffected(r)


# -- reaching outside --------------------------------------------------------


async def test_kill_all_reaches_nothing_outside() -> None:
    """``kill(-1, SIGKILL)`` inside kills the sandbox's own processes only.

    Two host ``sleep`` processes stand by: one as root and one as the very uid
    the run gets (a single-uid pool), which a kill -1 without a PID namespace
    would hit.
    """
    payload = """
        import os, signal, time
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        time.sleep(0.1)
        os.kill(-1, signal.SIGKILL)
        _, status = os.waitpid(child, 0)
        print("child", os.WTERMSIG(status) if os.WIFSIGNALED(status) else "exited", flush=True)
    """
    host_root = subprocess.Popen(["sleep", "30"])
    host_same_uid = subprocess.Popen(
        ["sleep", "30"], user=KILL_UID, group=KILL_UID, extra_groups=[]
    )
    try:
        async with _supervisor(first=KILL_UID, count=1) as sv:
            r = await sv.run(PY, files=_py(payload), limits=rustbox.Limits(wall_time=10))
        _check_guard(r)
        assert r.evidence.uid == KILL_UID
        assert r.status is rustbox.Status.OK, r
        assert r.stdout == b"child 9\n"  # kill -1 did work inside
        time.sleep(0.1)
        assert host_root.poll() is None, "a root host process was killed"
        assert host_same_uid.poll() is None, "a host process of the run's uid was killed"
        _assert_host_unaffected(r, exclude=[host_same_uid.pid])
    finally:
        for proc in (host_root, host_same_uid):
            proc.kill()
            proc.wait()


async def test_pid1_is_out_of_reach() -> None:
    """PID 1 (the proxy) cannot be ptraced, signalled or read from inside."""
    payload = """
        import ctypes, json, os, signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.restype = ctypes.c_long
        out = {}
        for name, request in (("attach", 16), ("seize", 0x4206)):
            ctypes.set_errno(0)
            rc = libc.ptrace(ctypes.c_long(request), ctypes.c_long(1), None, None)
            out[name] = [rc, ctypes.get_errno()]
        for what in ("environ", "cmdline", "mem"):
            try:
                with open(f"/proc/1/{what}", "rb") as f:
                    f.read(16)
                out[what] = "read"
            except OSError as exc:
                out[what] = exc.errno
        try:
            os.kill(1, signal.SIGKILL)
            out["kill"] = "sent"
        except OSError as exc:
            out["kill"] = exc.errno
        print(json.dumps(out))
    """
    async with _supervisor() as sv:
        r = await sv.run(PY, files=_py(payload), limits=rustbox.Limits(wall_time=10))
    _check_guard(r)
    assert r.status is rustbox.Status.OK, r  # the proxy survived and reported
    out = json.loads(r.stdout)
    denied = {errno.EPERM, errno.EACCES, errno.ENOSYS, errno.ESRCH}
    for name in ("attach", "seize"):
        rc, err = out[name]
        assert rc == -1 and err in denied, (name, out[name])
    for what in ("environ", "cmdline", "mem"):
        assert out[what] in {errno.ENOENT, errno.EACCES, errno.EPERM}, (what, out[what])
    assert out["kill"] in {errno.EPERM, errno.ESRCH}
    _assert_host_unaffected(r)
