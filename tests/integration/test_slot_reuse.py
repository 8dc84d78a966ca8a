"""A slot serves many runs one after the other: nothing of a run reaches the next.

A slot keeps its PID, mount, network and UTS namespaces, its root and its uid
between runs (docs/security.md says why that is safe). These tests run a
"leaver" that tries to leave state behind in every place a run can write to,
then a "finder" in the same slot that looks for it. With a single slot
(``max_concurrency=1``) both runs are served by the same proxy, which the
evidence confirms (same uid, payload PID 2 both times).
"""

from __future__ import annotations

import json
import textwrap

import anyio
import pytest

import rustbox

pytestmark = [pytest.mark.anyio, pytest.mark.root]

PY = ["/usr/bin/python3", "probe.py"]

LEAVER = r"""
import ctypes, json, os, socket, time
libc = ctypes.CDLL(None, use_errno=True)
facts = {"pid": os.getpid()}
for path in ("/box/left", "/tmp/left", "/dev/shm/left"):
    with open(path, "w") as f:
        f.write("x")
# A SysV shared memory segment, semaphore set and message queue (key 0x5eed):
# they outlive their creator unless the IPC namespace goes.
facts["shm"] = libc.shmget(0x5EED, 4096, 0o1666)
facts["sem"] = libc.semget(0x5EED, 1, 0o1666)
facts["msg"] = libc.msgget(0x5EED, 0o1666)
# A daemon in its own session that would outlive the run if nothing killed it.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
# A listening TCP socket on loopback.
s = socket.socket()
s.bind(("127.0.0.1", 40404))
s.listen()
facts["listening"] = True
print(json.dumps(facts), flush=True)
"""

FINDER = r"""
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
facts = {"pid": os.getpid()}
facts["files"] = [p for p in ("/box/left", "/tmp/left", "/dev/shm/left") if os.path.exists(p)]
facts["shm"] = libc.shmget(0x5EED, 0, 0)
facts["sem"] = libc.semget(0x5EED, 0, 0)
facts["msg"] = libc.msgget(0x5EED, 0)
facts["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
s = socket.socket()
try:
    s.bind(("127.0.0.1", 40404))
    s.listen()
    facts["port"] = "free"
except OSError as exc:
    facts["port"] = errno.errorcode[exc.errno]
print(json.dumps(facts), flush=True)
"""


def _files(body: str) -> dict[str, bytes]:
    return {"probe.py": textwrap.dedent(body).encode()}


async def test_nothing_of_a_run_reaches_the_next_in_the_same_slot() -> None:
    limits = rustbox.Limits(wall_time=10, processes=8)
    async with rustbox.Supervisor(max_concurrency=1) as sv:
        left = await sv.run(PY, files=_files(LEAVER), limits=limits)
        found = await sv.run(PY, files=_files(FINDER), limits=limits)
    assert left.status is rustbox.Status.OK, (left, left.stderr)
    assert found.status is rustbox.Status.OK, (found, found.stderr)
    assert left.evidence.uid == found.evidence.uid  # the same slot served both
    leaver, finder = json.loads(left.stdout), json.loads(found.stdout)
    # The leaver really made every object (so the finder's misses mean something).
    assert leaver["shm"] >= 0 and leaver["sem"] >= 0 and leaver["msg"] >= 0, leaver
    assert leaver["listening"] is True
    # Each run's payload is PID 2 of the slot: no trace of earlier runs' forks.
    assert leaver["pid"] == finder["pid"] == 2
    assert finder["files"] == [], "files of the previous run survived"
    assert finder["shm"] == finder["sem"] == finder["msg"] == -1, "SysV IPC objects survived"
    assert finder["processes"] == [2], "a process of the previous run survived"
    # The listener died with its run; the port is free again (no TIME_WAIT: no connection).
    assert finder["port"] == "free"


async def test_a_killed_run_leaves_the_slot_clean_too() -> None:
    """A run killed for its limits (cpu) leaves nothing behind either."""
    killer = LEAVER.replace("print(json.dumps(facts), flush=True)", "while True: pass")
    limits = rustbox.Limits(cpu_time=0.5, processes=8)  # one slot serves one set of rlimits
    async with rustbox.Supervisor(max_concurrency=1) as sv:
        killed = await sv.run(PY, files=_files(killer), limits=limits)
        found = await sv.run(PY, files=_files(FINDER), limits=limits)
    assert killed.status is rustbox.Status.TLE and killed.tle == "cpu", killed
    assert found.status is rustbox.Status.OK, (found, found.stderr)
    assert killed.evidence.uid == found.evidence.uid
    finder = json.loads(found.stdout)
    assert finder["files"] == [] and finder["processes"] == [2], finder
    assert finder["shm"] == finder["sem"] == finder["msg"] == -1, finder


async def test_a_slot_retires_after_runs_per_slot() -> None:
    """With runs_per_slot=2 a slot serves two runs, then a fresh one (new uid) takes over."""
    async with rustbox.Supervisor(max_concurrency=1, runs_per_slot=2, warm_proxies=0) as sv:
        results = [await sv.run(["/bin/true"]) for _ in range(6)]
    assert all(r.status is rustbox.Status.OK for r in results), results
    uids = [r.evidence.uid for r in results]
    assert uids[0] == uids[1] and uids[2] == uids[3] and uids[4] == uids[5], uids
    assert uids[1] != uids[2] and uids[3] != uids[4], uids


async def test_runs_with_other_rlimits_get_their_own_slot() -> None:
    """A slot carries one set of rlimits; a run with others gets a slot of its own,
    and each sees exactly its own limits."""
    probe = ["/bin/sh", "-c", "ulimit -n"]
    async with rustbox.Supervisor(max_concurrency=2, warm_proxies=0) as sv:
        a = await sv.run(probe, limits=rustbox.Limits(open_files=40))
        b = await sv.run(probe, limits=rustbox.Limits(open_files=50))
        c = await sv.run(probe, limits=rustbox.Limits(open_files=40))
    assert (a.stdout, b.stdout, c.stdout) == (b"40\n", b"50\n", b"40\n")
    assert a.evidence.uid == c.evidence.uid != b.evidence.uid


SCRATCH_LEAVER = r"""
import os, struct
os.makedirs("/box/deep/er", exist_ok=True)
os.symlink("/etc", "/box/link")
os.mkfifo("/tmp/fifo")
with open("/dev/shm/left", "wb") as f:
    f.write(b"x" * 100_000)
os.mkdir("/box/locked")
os.chmod("/box/locked", 0)  # the proxy must empty what the payload locked itself out of
os.setxattr("/box", "user.left", b"1")  # the payload owns /box
# An access ACL granting uid 12345 rwx: user::rwx user:12345:rwx group::r-x mask::rwx other::r-x
acl = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perm, ident)
    for tag, perm, ident in ((1, 7, 0xFFFFFFFF), (2, 7, 12345), (4, 5, 0xFFFFFFFF),
                             (0x10, 7, 0xFFFFFFFF), (0x20, 5, 0xFFFFFFFF))
)
os.setxattr("/box", "system.posix_acl_access", acl)
assert "system.posix_acl_access" in os.listxattr("/box")
os.chmod("/box", 0o700)
os.utime("/box", (0, 0))
"""

SCRATCH_FINDER = r"""
import json, os
facts = {}
for path in ("/box", "/tmp", "/dev/shm"):
    info = os.stat(path)  # before listing it, which sets the atime
    fs = os.statvfs(path)
    facts[path] = {
        "entries": sorted(os.listdir(path)),
        "mode": oct(info.st_mode & 0o7777),
        "uid": info.st_uid,
        "xattrs": os.listxattr(path),
        "inodes_used": fs.f_files - fs.f_ffree,
        "blocks_used": fs.f_blocks - fs.f_bfree,
        "times_left": min(info.st_atime, info.st_mtime) < 1_000_000,
    }
print(json.dumps(facts))
"""


def _scratch_states(result: rustbox.Result) -> dict[str, str]:
    """Which scratch tmpfs the run got, as its controls say: fresh or recycled."""
    states = {}
    for control in result.evidence.controls:
        for target in ("/box", "/tmp", "/dev/shm"):
            if control.startswith(target + ": "):
                states[target] = control.split()[1]
    return states


async def test_a_recycled_scratch_tmpfs_is_as_good_as_a_fresh_one() -> None:
    """After a run the slot empties /box, /tmp and /dev/shm instead of remounting
    them: the next run must find them exactly as a fresh mount would be."""
    limits = rustbox.Limits(processes=8)
    async with rustbox.Supervisor(max_concurrency=1, warm_proxies=0) as sv:
        left = await sv.run(PY, files=_files(SCRATCH_LEAVER), limits=limits)
        found = await sv.run(PY, files=_files(SCRATCH_FINDER), limits=limits)
        # With nothing to delete, emptying leaves times alone: the reset must set them.
        touch = "import os; os.utime('/box', (0, 0))"
        touched = await sv.run(["/usr/bin/python3", "-c", touch], limits=limits)
        timed = await sv.run(["/usr/bin/python3", "-c", SCRATCH_FINDER], limits=limits)
    assert touched.status is timed.status is rustbox.Status.OK, (touched, timed)
    assert json.loads(timed.stdout)["/box"]["times_left"] is False
    assert left.status is rustbox.Status.OK, (left, left.stderr)
    assert found.status is rustbox.Status.OK, (found, found.stderr)
    assert left.evidence.uid == found.evidence.uid
    assert _scratch_states(left) == dict.fromkeys(("/box", "/tmp", "/dev/shm"), "fresh")
    # The slot recycled all three (so the checks below test the emptying, not a remount).
    assert _scratch_states(found) == dict.fromkeys(("/box", "/tmp", "/dev/shm"), "recycled")
    facts = json.loads(found.stdout)
    uid = found.evidence.uid
    assert facts["/box"] == {
        "entries": ["probe.py"],
        "mode": "0o755",
        "uid": uid,
        "xattrs": [],
        "inodes_used": 2,
        "blocks_used": 1,
        "times_left": False,
    }, facts
    for path in ("/tmp", "/dev/shm"):
        assert facts[path] == {
            "entries": [],
            "mode": "0o1777",
            "uid": 0,
            "xattrs": [],
            "inodes_used": 1,
            "blocks_used": 0,
            "times_left": False,
        }, facts


async def test_a_scratch_tmpfs_too_full_to_empty_is_replaced() -> None:
    """Past a few hundred inodes a tmpfs is dropped, not emptied; other mount
    options (another box size) also get a fresh one."""
    many = "import os\nfor i in range(300):\n    open(f'/tmp/f{i}', 'w').close()\n"
    async with rustbox.Supervisor(max_concurrency=1, warm_proxies=0) as sv:
        await sv.run(PY, files=_files(many))
        after_many = await sv.run(["/bin/true"])
        resized = await sv.run(["/bin/true"], limits=rustbox.Limits(box_size="32M"))
    assert after_many.status is resized.status is rustbox.Status.OK
    assert _scratch_states(after_many) == {
        "/box": "recycled",
        "/tmp": "fresh",
        "/dev/shm": "recycled",
    }
    assert _scratch_states(resized) == {
        "/box": "fresh",
        "/tmp": "recycled",
        "/dev/shm": "recycled",
    }


async def test_a_scratch_tmpfs_changed_and_emptied_by_a_run_is_reset_too() -> None:
    """A run that creates and deletes a file leaves /tmp empty but with new
    times; the next run must see the times the slot reset, not the run's."""
    churn = (
        "import os, time\n"
        "open('/tmp/x', 'w').close(); os.unlink('/tmp/x')\n"
        "print(os.stat('/tmp').st_mtime_ns, flush=True)\n"
        "time.sleep(0.3)\n"
    )
    look = "import os; print(os.stat('/tmp').st_mtime_ns)"
    python = "/usr/bin/python3"
    async with rustbox.Supervisor(max_concurrency=1, warm_proxies=0) as sv:
        await sv.run(["/bin/true"])  # so that the slot has emptied /tmp once already
        churned = await sv.run([python, "-c", churn])
        seen = await sv.run([python, "-c", look])
    assert churned.status is seen.status is rustbox.Status.OK, (churned, seen)
    assert _scratch_states(seen)["/tmp"] == "recycled"
    left_by_run, seen_next = int(churned.stdout), int(seen.stdout)
    assert seen_next - left_by_run >= 250_000_000, (left_by_run, seen_next)


async def test_a_file_made_within_the_timestamp_tick_of_the_reset_is_still_found() -> None:
    """Before Linux 6.13 tmpfs times have the kernel tick's granularity, so a
    quick program can create a file in /tmp without moving its times from
    those the slot left: the emptiness check (statvfs) must catch it there.
    Alternating a quick writer and a reader makes such a same-tick write
    likely on those kernels (newer ones give a file time that was looked at a
    fine-grained next value, so there the times alone already tell)."""
    writer = ["/bin/sh", "-c", ": > /tmp/x; : > /dev/shm/x"]
    reader = ["/bin/sh", "-c", "ls -A /tmp /dev/shm"]
    async with rustbox.Supervisor(max_concurrency=1, warm_proxies=0) as sv:
        await sv.run(["/bin/true"])
        for _ in range(20):
            wrote = await sv.run(writer)
            read = await sv.run(reader)
            assert wrote.status is read.status is rustbox.Status.OK, (wrote, read)
            assert read.stdout == b"/dev/shm:\n\n/tmp:\n", read.stdout


async def test_a_scratch_root_with_an_inode_flag_is_replaced() -> None:
    """The program owns /box and may set inode flags on it (here noatime); the
    slot cannot tell them all apart from harmless ones, so it remounts."""
    set_flag = (
        "import fcntl, os, struct\n"
        "fd = os.open('/box', os.O_RDONLY)\n"
        "fcntl.ioctl(fd, 0x40086602, struct.pack('l', 0x80))\n"  # FS_IOC_SETFLAGS, NOATIME
        "print(struct.unpack('l', fcntl.ioctl(fd, 0x80086601, bytes(8)))[0])\n"
    )
    get_flag = (
        "import fcntl, os, struct\n"
        "fd = os.open('/box', os.O_RDONLY)\n"
        "print(struct.unpack('l', fcntl.ioctl(fd, 0x80086601, bytes(8)))[0])\n"
    )
    python = "/usr/bin/python3"
    async with rustbox.Supervisor(max_concurrency=1, warm_proxies=0) as sv:
        flagged = await sv.run([python, "-c", set_flag])
        after = await sv.run([python, "-c", get_flag])
    assert flagged.status is after.status is rustbox.Status.OK, (flagged.stderr, after.stderr)
    assert flagged.stdout == b"128\n"  # the flag really was set
    assert after.stdout == b"0\n"
    assert _scratch_states(after)["/box"] == "fresh"


LOCK_LEAVER = r"""
import fcntl, os, socket
fds = []
for path in ("/box", "/tmp", "/etc/passwd"):
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fds.append(fd)
# The locked files go in flight in a cycle of two sockets nobody holds: only
# the kernel's collection of such garbage ever releases them.
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
socket.send_fds(b, [b"x"], [*fds, a.fileno()])
socket.send_fds(a, [b"y"], [b.fileno()])
for fd in fds:
    os.close(fd)
a.close()
b.close()
"""

LOCK_FINDER = r"""
import fcntl, json, os, time
found = {}
for path in ("/box", "/tmp", "/etc/passwd"):
    fd = os.open(path, os.O_RDONLY)
    deadline = time.monotonic() + 0.5  # the kernel collects garbage on a workqueue
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            found[path] = "free"
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                found[path] = "locked"
                break
            time.sleep(0.01)
    os.close(fd)
print(json.dumps(found))
"""


async def test_descriptors_left_in_flight_do_not_outlive_their_run() -> None:
    """A run can park descriptors (here of locked files) in an SCM_RIGHTS cycle
    on sockets it then closes; after the run the slot has the kernel collect
    that garbage, so the next run finds nothing held."""
    async with rustbox.Supervisor(max_concurrency=1, warm_proxies=0) as sv:
        left = await sv.run(PY, files=_files(LOCK_LEAVER))
        found = await sv.run(PY, files=_files(LOCK_FINDER))
    assert left.status is found.status is rustbox.Status.OK, (left.stderr, found.stderr)
    assert left.evidence.uid == found.evidence.uid
    assert json.loads(found.stdout) == dict.fromkeys(("/box", "/tmp", "/etc/passwd"), "free")


async def test_scratch_times_tell_nothing_of_the_last_run() -> None:
    """A recycled scratch gets its times when the next run is staged: they do
    not say when the last run ended (colluding runs could time their end)."""
    python = "/usr/bin/python3"
    ended = "import time; print(time.time_ns())"
    look = (
        "import os\n"
        "print(min(min(s.st_atime_ns, s.st_mtime_ns, s.st_ctime_ns)"
        " for s in map(os.stat, ('/box', '/tmp', '/dev/shm'))))\n"
    )
    async with rustbox.Supervisor(max_concurrency=1, warm_proxies=0) as sv:
        await sv.run([python, "-c", "pass"])
        last = await sv.run([python, "-c", ended])
        await anyio.sleep(0.3)
        seen = await sv.run([python, "-c", look])
    assert last.status is seen.status is rustbox.Status.OK, (last.stderr, seen.stderr)
    assert _scratch_states(seen) == dict.fromkeys(("/box", "/tmp", "/dev/shm"), "recycled")
    assert int(seen.stdout) - int(last.stdout) >= 250_000_000, (last.stdout, seen.stdout)
