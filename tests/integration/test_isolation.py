"""Isolation observed from inside the sandbox.

Each test runs a small Python probe through ``Supervisor.run``; the probe
collects many facts in one run and prints them as one JSON object, which the
test parses and asserts on. Every assertion is an observation that would
change if the control behind it were removed, and where the unconfined
outcome is not obvious the comment says what it would be (the syscall
arguments are chosen so that an unconfined, unprivileged process gets a
*different* errno than the sandbox's EPERM/ENOSYS, and so that nothing can
happen even if the call got through).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import rustbox

pytestmark = [pytest.mark.anyio, pytest.mark.root]

PYTHON = "/usr/bin/python3"
UID_POOL = range(60000, 61000)
SECRET = "RUSTBOX_SECRET_TEST"
DEFAULT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/box", "LANG": "C.UTF-8"}
KiB = 1024
MiB = 1024 * KiB
# Every mount point the sandbox may show; /bin, /lib, /lib64 and /sbin are
# binds only where the host has them as directories (symlinks into usr here).
SANDBOX_MOUNTS = frozenset({
    "/", "/usr", "/box", "/tmp", "/dev", "/dev/shm", "/proc",
    "/etc/alternatives", "/etc/ld.so.cache", "/bin", "/lib", "/lib64", "/sbin",
})  # fmt: skip

# Helpers shared by every probe: ``attempt`` runs a callable and names the
# errno it failed with ("ok" when it did not fail); ``in_child`` runs a
# callable in a forked child (for calls that would change the probe itself
# if they succeeded, like PTRACE_TRACEME or unshare) and returns its result.
PRELUDE = r"""
import ctypes, errno, json, os, resource, shutil, socket, stat, subprocess, sys

facts = {}

def attempt(fn, *args):
    try:
        fn(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"

def in_child(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.write(w, json.dumps(fn()).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(out) if out else "child-died"

def mountinfo():
    mounts = {}
    for line in open("/proc/self/mountinfo"):
        left, right = line.split(" - ", 1)
        f = left.split()
        fstype, source, superopts = right.split()
        mounts[f[4]] = {"opts": f[5].split(","), "fstype": fstype,
                        "super": superopts.split(",")}
    return mounts

def exec_environ():
    # The environment execve() gave us, from /proc/self/environ: Python's own
    # os.environ is not it (PEP 538 adds LC_CTYPE=C.UTF-8 when LC_ALL/LC_CTYPE
    # are unset, and only in the interpreter's copy).
    raw = open("/proc/self/environ", "rb").read()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if item)

def rlimits():
    return {name: list(resource.getrlimit(getattr(resource, "RLIMIT_" + name)))
            for name in ("FSIZE", "NOFILE", "STACK", "CORE", "MEMLOCK", "CPU", "NPROC", "AS")}
"""

# The big probe: identity, privileges, filesystem, /proc, network, environment,
# files from the host, and denied syscalls. Run with env=None and default limits.
MAIN_PROBE = (
    PRELUDE
    + r"""
# ---- /proc first, before the probe starts any child of its own
facts["proc_pids"] = sorted(e for e in os.listdir("/proc") if e.isdigit())
facts["pid"] = os.getpid()
facts["ppid"] = os.getppid()
host_pid = int(open("hostpid").read())
facts["host_pid_visible"] = os.path.exists(f"/proc/{host_pid}")
facts["proc1_visible"] = os.path.exists("/proc/1")
# positive control: a child of ours does show up, so the listing is live
child = subprocess.Popen(["/bin/sleep", "5"])
facts["child_pid_listed"] = str(child.pid) in os.listdir("/proc")
child.kill(); child.wait()

# ---- hostname
facts["gethostname"] = socket.gethostname()
facts["uname_nodename"] = os.uname().nodename
try:
    facts["proc_sys_hostname"] = open("/proc/sys/kernel/hostname").read().strip()
except OSError as exc:
    facts["proc_sys_hostname"] = errno.errorcode[exc.errno]

# ---- identity
facts["resuid"] = list(os.getresuid())
facts["resgid"] = list(os.getresgid())
facts["groups"] = os.getgroups()
status = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    status[key] = value.strip()
facts["status"] = {k: status.get(k) for k in
                   ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                    "Seccomp", "Seccomp_filters")}

# ---- filesystem
facts["mounts"] = mountinfo()
facts["create_in_root"] = attempt(lambda: open("/rustbox-probe", "w"))
facts["mkdir_in_root"] = attempt(os.mkdir, "/rustbox-probe-dir")
facts["create_in_usr"] = attempt(lambda: open("/usr/rustbox-probe", "w"))
facts["usr_w_ok"] = os.access("/usr", os.W_OK)
facts["sys_exists"] = os.path.exists("/sys")

def box_roundtrip():
    with open("/box/written.txt", "w") as f:
        f.write("box is writable")
    return open("/box/written.txt").read()
facts["box_write"] = box_roundtrip()
facts["box_owner"] = [os.stat("/box").st_uid, os.stat("/box").st_gid]

def try_exec(directory):
    # a copy of /bin/true and a #! script, both mode 0755, then exec them
    binary = os.path.join(directory, "true-copy")
    shutil.copyfile("/bin/true", binary)
    os.chmod(binary, 0o755)
    script = os.path.join(directory, "script.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o755)
    out = {}
    for name, path in (("binary", binary), ("script", script)):
        try:
            out[name] = subprocess.run([path]).returncode
        except OSError as exc:
            out[name] = errno.errorcode[exc.errno]
    return out
facts["exec"] = {d: try_exec(d) for d in ("/tmp", "/dev/shm", "/box")}

# ---- files from the host
try:
    open("/etc/shadow").read()
    facts["shadow"] = "readable"
except OSError as exc:
    facts["shadow"] = errno.errorcode[exc.errno]
facts["passwd"] = open("/etc/passwd").read()

# ---- environment
facts["environ"] = exec_environ()

# ---- network
facts["interfaces"] = [name for _, name in socket.if_nameindex()]
facts["routes"] = open("/proc/self/net/route").read().splitlines()[1:]

def udp_connect(family, address):
    # connect() on a UDP socket only does the route lookup and sends no packet,
    # so this stays harmless even if a route did exist (unconfined it is "ok")
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(address)
# documentation addresses (RFC 5737 / RFC 3849); only the route lookup matters
facts["udp_connect_v4"] = attempt(udp_connect, socket.AF_INET, ("192.0.2.1", 53))
facts["udp_connect_v6"] = attempt(udp_connect, socket.AF_INET6, ("2001:db8::1", 53))

def loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"ping")
                return conn.recv(4).decode()
try:
    facts["loopback"] = loopback()
except OSError as exc:
    facts["loopback"] = errno.errorcode.get(exc.errno, repr(exc))

# ---- syscalls (x86_64 numbers); see the test for the unconfined outcomes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(fn, *args):
    ctypes.set_errno(0)
    rc = fn(*args)
    return "ok" if rc != -1 else errno.errorcode.get(ctypes.get_errno(), "?")

class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

def clock_settime_same_value():
    # never a new value: read CLOCK_REALTIME and write that same value back
    ts = timespec()
    if libc.clock_gettime(0, ctypes.byref(ts)) != 0:
        return "gettime-failed"
    return call(libc.clock_settime, 0, ctypes.byref(ts))

long = ctypes.c_long
facts["syscalls"] = {
    "ptrace_traceme": in_child(lambda: call(libc.ptrace, long(0), long(0), None, None)),
    "mount": call(libc.mount, b"none", b"/box/no-such-dir", b"tmpfs", ctypes.c_ulong(0), None),
    "unshare_newuser": in_child(lambda: call(libc.unshare, 0x10000000)),
    "setns": call(libc.setns, -1, 0),
    "chroot": call(libc.chroot, b"/box/no-such-dir"),
    "bpf": call(libc.syscall, long(321), long(9999), None, long(0)),
    "io_uring_setup": call(libc.syscall, long(425), long(1), None),
    "clock_settime_null": call(libc.syscall, long(227), long(0), None),
    "clock_settime_same": clock_settime_same_value(),
}

print(json.dumps(facts))
"""
)

# Limits and an explicit environment.
LIMITS_PROBE = (
    PRELUDE
    + r"""
facts["rlimits"] = rlimits()
facts["environ"] = exec_environ()
facts["mounts"] = {k: v for k, v in mountinfo().items() if k in ("/box", "/tmp", "/dev/shm")}
print(json.dumps(facts))
"""
)

# Two runs: the first leaves files behind, the second looks for them.
WRITE_PROBE = (
    PRELUDE
    + r"""
for path in ("/box/left-behind", "/tmp/left-behind", "/dev/shm/left-behind"):
    with open(path, "w") as f:
        f.write("from the first run")
facts["written"] = sorted(p for p in ("/box", "/tmp", "/dev/shm")
                          if os.path.exists(p + "/left-behind"))
facts["box_listing"] = sorted(os.listdir("/box"))
print(json.dumps(facts))
"""
)
READ_PROBE = (
    PRELUDE
    + r"""
facts["found"] = sorted(p for p in ("/box", "/tmp", "/dev/shm")
                        if os.path.exists(p + "/left-behind"))
facts["box_listing"] = sorted(os.listdir("/box"))
facts["tmp_listing"] = sorted(os.listdir("/tmp"))
facts["shm_listing"] = sorted(os.listdir("/dev/shm"))
print(json.dumps(facts))
"""
)

SETUID_SOURCE = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("%d %d\n", (int)getuid(), (int)geteuid()); return 0; }
"""


@contextmanager
def showing(facts: dict[str, Any]) -> Iterator[None]:
    """On an assertion failure, append every fact the probe reported."""
    try:
        yield
    except AssertionError as exc:
        dump = json.dumps(facts, indent=2, sort_keys=True)
        raise AssertionError(f"{exc}\n--- facts from inside the sandbox ---\n{dump}") from None


def facts_of(result: rustbox.Result) -> dict[str, Any]:
    assert result.status == rustbox.Status.OK, (
        f"probe failed: {result.status} exit={result.exit_code} signal={result.signal}\n"
        f"stdout={result.stdout[-2000:]!r}\nstderr={result.stderr[-4000:]!r}\n"
        f"error={result.evidence.error}"
    )
    facts: dict[str, Any] = json.loads(result.stdout)
    return facts


async def probe(
    sv: rustbox.Supervisor,
    script: str,
    *,
    files: dict[str, bytes | str] | None = None,
    **kwargs: Any,
) -> tuple[rustbox.Result, dict[str, Any]]:
    kwargs.setdefault("limits", rustbox.Limits(wall_time=20.0))
    result = await sv.run(
        [PYTHON, "probe.py"], files={"probe.py": script, **(files or {})}, **kwargs
    )
    return result, facts_of(result)


async def test_isolation_seen_from_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set before the Supervisor (and its launcher) starts, so a leak anywhere
    # along supervisor -> launcher -> proxy -> payload would carry it inside.
    monkeypatch.setenv(SECRET, "leak")
    async with rustbox.Supervisor() as sv:
        result, facts = await probe(sv, MAIN_PROBE, files={"hostpid": str(os.getpid())}, env=None)

    mounts = facts["mounts"]
    with showing(facts):
        # Hostname: the UTS namespace. /proc/sys is absent (subset=pid), so
        # uname/gethostname are the observations.
        assert facts["gethostname"] == "rustbox-sandbox"
        assert facts["uname_nodename"] == "rustbox-sandbox"
        assert facts["proc_sys_hostname"] in ("rustbox-sandbox", "ENOENT")

        # Credentials: an unprivileged pool uid/gid, all three ids, no groups.
        uid = result.evidence.uid
        assert uid in UID_POOL
        assert facts["resuid"] == [uid, uid, uid]
        gid = facts["resgid"][0]
        assert facts["resgid"] == [gid, gid, gid]
        assert gid in UID_POOL
        assert facts["groups"] == []

        # Privileges: all five capability sets empty, no_new_privs, a seccomp filter.
        status = facts["status"]
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[cap], 16) == 0, cap
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"
        assert int(status["Seccomp_filters"]) >= 1

        # Root: a read-only tmpfs that the payload cannot create anything in.
        assert mounts["/"]["fstype"] == "tmpfs"
        assert "ro" in mounts["/"]["opts"]
        assert facts["create_in_root"] in ("EROFS", "EACCES")
        assert facts["mkdir_in_root"] in ("EROFS", "EACCES")

        # /usr: read-only, nosuid, nodev bind; not writable by the payload.
        assert {"ro", "nosuid", "nodev"} <= set(mounts["/usr"]["opts"])
        assert facts["create_in_usr"] in ("EROFS", "EACCES")
        assert facts["usr_w_ok"] is False

        # /tmp and /dev/shm: noexec on the mount AND exec really refused, while
        # the same binary and script run from /box (so the copies are sound).
        for scratch in ("/tmp", "/dev/shm"):
            assert mounts[scratch]["fstype"] == "tmpfs", scratch
            assert {"noexec", "nosuid", "nodev"} <= set(mounts[scratch]["opts"]), scratch
            assert facts["exec"][scratch] == {"binary": "EACCES", "script": "EACCES"}, scratch
        assert facts["exec"]["/box"] == {"binary": 0, "script": 0}

        # /box: the payload's own writable tmpfs.
        assert facts["box_write"] == "box is writable"
        assert facts["box_owner"][0] == uid
        assert mounts["/box"]["fstype"] == "tmpfs"
        assert {"nosuid", "nodev"} <= set(mounts["/box"]["opts"])

        # No /sys, and nothing of the host's mount table beyond the sandbox's own.
        assert facts["sys_exists"] is False
        assert not any(m["fstype"] in ("sysfs", "cgroup", "cgroup2") for m in mounts.values())
        # Toolchain directories the judge binds (read-only, nosuid, nodev) are the
        # only additions: the supervisor names them in readonly_binds.
        toolchains = set(sv.readonly_binds) - {"/usr", "/bin", "/lib", "/lib64", "/sbin"}
        assert set(mounts) <= SANDBOX_MOUNTS | toolchains
        for path in toolchains & set(mounts):
            assert {"ro", "nosuid", "nodev"} <= set(mounts[path]["opts"]), path

        # /proc: a new PID namespace (payload is PID 2; the proxy is PID 1),
        # hidepid=invisible hides the root-owned proxy, and only our own pids
        # are listed. The host test process's pid is not there. A child we
        # start does appear, so the listing is live. The payload's parent, the
        # spawner, is outside the namespace, so getppid() says 0.
        assert {"hidepid=invisible", "subset=pid"} <= set(mounts["/proc"]["super"])
        assert facts["pid"] == 2
        assert facts["ppid"] == 0
        assert facts["proc_pids"] == ["2"]
        assert facts["proc1_visible"] is False
        assert facts["host_pid_visible"] is False
        assert facts["child_pid_listed"] is True

        # Network: only lo, no routes, no way out; loopback itself works.
        assert facts["interfaces"] == ["lo"]
        assert facts["routes"] == []
        assert facts["udp_connect_v4"] == "ENETUNREACH"
        assert facts["udp_connect_v6"] in ("ENETUNREACH", "EAFNOSUPPORT")
        assert facts["loopback"] == "ping"

        # Environment: built from scratch; the parent's secret is not inherited.
        assert os.environ[SECRET] == "leak"
        assert SECRET not in facts["environ"]
        assert facts["environ"] == DEFAULT_ENV

        # Host files: no shadow inside (the host has one); a minimal passwd
        # without the host's system users.
        assert Path("/etc/shadow").exists()
        assert facts["shadow"] in ("ENOENT", "EACCES")
        names = {line.split(":", 1)[0] for line in facts["passwd"].splitlines() if line}
        host_passwd = Path("/etc/passwd").read_text().splitlines()
        host_names = {line.split(":", 1)[0] for line in host_passwd}
        assert "root" in names
        assert names & host_names <= {"root", "nobody"}
        if "daemon" in host_names:
            assert "daemon:" not in facts["passwd"]

        # Denied syscalls. Unconfined, as an unprivileged uid on this kernel,
        # these give: ptrace TRACEME ok; mount on a missing dir ENOENT;
        # unshare(CLONE_NEWUSER) ok; setns(-1) EBADF; chroot(missing) ENOENT;
        # bpf(bad cmd, NULL, 0) EINVAL; io_uring_setup(1, NULL) EFAULT;
        # clock_settime(REALTIME, NULL) EFAULT. Only the seccomp filter turns
        # them into EPERM / ENOSYS, without the kernel ever acting on them.
        syscalls = facts["syscalls"]
        for name in (
            "ptrace_traceme",
            "mount",
            "unshare_newuser",
            "setns",
            "chroot",
            "bpf",
            "clock_settime_null",
            "clock_settime_same",
        ):
            assert syscalls[name] == "EPERM", name
        assert syscalls["io_uring_setup"] == "ENOSYS"


async def test_configured_limits_and_exact_env() -> None:
    limits = rustbox.Limits(
        memory="200M",
        cpu_time=3.5,
        wall_time=20.0,
        processes=12,
        file_size="3M",
        open_files=48,
        stack="24M",
        address_space="900M",
        box_size="8M",
        box_inodes=512,
        tmp_size="4M",
    )
    async with rustbox.Supervisor() as sv:
        _, facts = await probe(sv, LIMITS_PROBE, limits=limits, env={"A": "1"})
        # the same probe with the defaults: RLIMIT_AS is left alone unless asked
        _, default_facts = await probe(sv, LIMITS_PROBE, env=None)

    rl = facts["rlimits"]
    mounts = facts["mounts"]
    with showing(facts):
        assert facts["environ"] == {"A": "1"}
        assert rl["FSIZE"] == [3 * MiB, 3 * MiB]
        assert rl["NOFILE"] == [48, 48]
        assert rl["STACK"] == [24 * MiB, 24 * MiB]
        assert rl["CORE"] == [0, 0]
        assert rl["MEMLOCK"] == [0, 0]
        assert rl["CPU"][0] == math.ceil(3.5) + 2  # +1 rounding, +1 the spawner's own cpu
        assert rl["CPU"][0] <= rl["CPU"][1] != -1  # a finite hard backstop
        assert rl["NPROC"] == [13, 13]
        assert rl["AS"] == [900 * MiB, 900 * MiB]
        assert "size=8192k" in mounts["/box"]["super"]
        assert "nr_inodes=512" in mounts["/box"]["super"]
        for scratch in ("/tmp", "/dev/shm"):
            assert "size=4096k" in mounts[scratch]["super"], scratch
    with showing(default_facts):
        assert default_facts["rlimits"]["AS"] == [-1, -1]
        assert default_facts["rlimits"]["CPU"][0] == math.ceil(2.0) + 2
        assert default_facts["rlimits"]["NPROC"] == [17, 17]
        assert default_facts["environ"] == DEFAULT_ENV


async def test_runs_do_not_share_state() -> None:
    async with rustbox.Supervisor() as sv:
        _, first = await probe(sv, WRITE_PROBE)
        _, second = await probe(sv, READ_PROBE)
    facts = {"first": first, "second": second}
    with showing(facts):
        # the first run really wrote all three (so the second's absence means something)
        assert first["written"] == ["/box", "/dev/shm", "/tmp"]
        assert "left-behind" in first["box_listing"]
        assert second["found"] == []
        assert second["box_listing"] == ["probe.py"]
        assert second["tmp_listing"] == []
        assert second["shm_listing"] == []


@pytest.fixture(scope="module")
def setuid_root_probe() -> Iterator[str]:
    """A setuid-root binary that prints "uid euid", placed under the host's /usr.

    The sandbox has no bind option, and files put in /box are owned by the run
    uid (and /box is nosuid), so the only setuid-root files a payload can reach
    are those under the /usr bind. System ones (su, passwd, newgrp, ...) fail as
    a non-root caller for reasons of their own (PAM, no tty, no shadow), which
    would prove nothing. So build an honest one under /usr/local/lib for the
    duration of the module: it only prints its ids, and it is removed after.
    On the host, run as nobody, it must report euid 0: that shows the witness
    works, so euid == uid inside is the sandbox's doing (nosuid on the /usr bind
    and no_new_privs; each alone is enough, and each is asserted on its own in
    test_isolation_seen_from_inside).
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the setuid witness")
    directory = Path(tempfile.mkdtemp(prefix="rustbox-suid-", dir="/usr/local/lib"))
    try:
        directory.chmod(0o755)
        source = directory / "euid.c"
        source.write_text(SETUID_SOURCE)
        binary = directory / "euid"
        subprocess.run([gcc, "-O0", "-o", str(binary), str(source)], check=True)
        os.chown(binary, 0, 0)
        binary.chmod(0o4755)
        witness = subprocess.run(
            [str(binary)],
            user=65534,
            group=65534,
            extra_groups=[],
            capture_output=True,
            text=True,
            check=True,
        )
        if witness.stdout.split() != ["65534", "0"]:
            pytest.skip(f"setuid is not honoured on the host's /usr: {witness.stdout!r}")
        yield str(binary)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_setuid_binary_gains_nothing(setuid_root_probe: str) -> None:
    async with rustbox.Supervisor() as sv:
        direct = await sv.run([setuid_root_probe], limits=rustbox.Limits(wall_time=20.0))
        # also exec'd by the payload itself rather than by the sandbox
        via_payload = await sv.run(
            ["/bin/sh", "-c", f"exec {setuid_root_probe}"], limits=rustbox.Limits(wall_time=20.0)
        )
    for result in (direct, via_payload):
        assert result.status == rustbox.Status.OK, (result.status, result.stderr)
        uid = result.evidence.uid
        assert uid in UID_POOL
        assert result.stdout.decode().split() == [str(uid), str(uid)], result.stdout


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_stdin_cannot_be_rewritten() -> None:
    """stdin is a sealed memfd: reopening /proc/self/fd/0 for writing gets nowhere."""
    probe = (
        "import os\n"
        "try:\n"
        "    fd = os.open('/proc/self/fd/0', os.O_WRONLY)\n"
        "    os.write(fd, b'X')\n"
        "    print('rewrote stdin')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
        "print(os.read(0, 100).decode())\n"
    )
    async with rustbox.Supervisor() as sv:
        r = await sv.run(["/usr/bin/python3", "-c", probe], stdin=b"original input")
    assert r.status is rustbox.Status.OK, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith("refused"), lines
    assert lines[1] == "original input"


async def test_only_stdio_reaches_the_program() -> None:
    """No descriptor of rustbox's own (the run's cgroup files, the uid lock, a
    socket) is open in the program: any of them would be a handle on the host.
    Checked with fstat on every fd number below the limit, with and without stdin."""
    probe = (
        "import os, resource\n"
        "limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]\n"
        "found = []\n"
        "for fd in range(limit):\n"
        "    try:\n"
        "        os.fstat(fd)\n"
        "    except OSError:\n"
        "        continue\n"
        "    found.append(fd)\n"
        "print(found)\n"
    )
    async with rustbox.Supervisor(max_concurrency=1) as sv:
        for stdin in (None, b"some input"):
            for _ in range(2):  # a fresh slot, then the same slot again
                r = await sv.run(["/usr/bin/python3", "-S", "-c", probe], stdin=stdin)
                assert r.status is rustbox.Status.OK, r.stderr
                assert r.stdout == b"[0, 1, 2]\n", r.stdout


async def test_dev_is_read_only_but_usable() -> None:
    """The slot's /dev outlives runs: it is read-only, so no run can leave a
    timestamp or mode on it for the next, and its devices still work."""
    probe = (
        "import errno, os\n"
        "with open('/dev/null', 'w') as f:\n"
        "    f.write('x')\n"
        "print(len(open('/dev/zero', 'rb').read(4)))\n"
        "for call in (lambda: os.utime('/dev/null'), lambda: os.chmod('/dev/null', 0o600),\n"
        "             lambda: open('/dev/new', 'w')):\n"
        "    try:\n"
        "        call()\n"
        "        print('ok')\n"
        "    except OSError as exc:\n"
        "        print(errno.errorcode[exc.errno])\n"
    )
    async with rustbox.Supervisor(max_concurrency=1) as sv:
        r = await sv.run(["/usr/bin/python3", "-S", "-c", probe])
    assert r.status is rustbox.Status.OK, r.stderr
    # utime(now) needs only write permission (0666) on a writable fs: EROFS here.
    assert r.stdout.decode().split() == ["4", "EROFS", "EROFS", "EROFS"], r.stdout
