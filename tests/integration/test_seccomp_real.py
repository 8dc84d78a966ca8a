"""rustbox._sys against the real kernel, each case in a forked child.

The child does the privileged or irreversible work (namespaces, seccomp,
capability drops) and reports through an exit code plus a diagnostics pipe;
it always leaves through ``os._exit`` so pytest never continues in a child.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from rustbox import _sys
from rustbox._errors import SyscallError
from rustbox._sys._seccomp import _X86_64_TABLE as NR

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are x86_64"),
]

Log = Callable[[str], None]


def run_in_child(body: Callable[[Log], None], timeout: float = 30.0) -> tuple[int, str]:
    """Run *body* in a forked child; return (exit code, diagnostics).

    Exit code 0 means *body* returned; 1 means it raised (traceback in the
    diagnostics); a negative code is the signal that killed the child.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)

            def log(line: str) -> None:
                os.write(write_fd, (line.rstrip("\n") + "\n").encode())

            try:
                body(log)
                code = 0
            except BaseException:
                log(traceback.format_exc())
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                chunks.append(b"\n[timed out; killed]\n")
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def assert_child_ok(body: Callable[[Log], None]) -> str:
    code, output = run_in_child(body)
    assert code == 0, f"child exited with {code}:\n{output}"
    return output


def raw(nr: int, *args: int) -> tuple[int, int]:
    """Invoke a syscall and return (result, errno)."""
    ctypes.set_errno(0)
    result = _sys.raw_syscall(nr, *args)
    return result, ctypes.get_errno() if result == -1 else 0


def expect_errno(log: Log, what: str, nr: int, want: int, *args: int) -> None:
    result, err = raw(nr, *args)
    log(f"{what}: result={result} errno={errno.errorcode.get(err, err)}")
    if result == 0 and nr == NR["clone"]:
        os._exit(99)  # the filter let a namespaced clone through: we are the clone
    assert (result, err) == (-1, want), f"{what}: got {result}, {err}; want errno {want}"


def enter_seccomp() -> None:
    _sys.set_no_new_privs()
    _sys.install_filter(_sys.build_filter())


# --- seccomp --------------------------------------------------------------------


def test_filter_is_installed_and_reported_by_proc() -> None:
    def body(log: Log) -> None:
        enter_seccomp()
        status = Path("/proc/self/status").read_text()
        log(status)
        assert "\nSeccomp:\t2\n" in status
        assert "\nNoNewPrivs:\t1\n" in status
        assert _sys.prctl(_sys.PR_GET_SECCOMP) == 2

    assert_child_ok(body)


def test_denied_calls_fail_with_the_right_errno(tmp_path: Path) -> None:
    target = str(tmp_path)

    def body(log: Log) -> None:
        tgt = ctypes.create_string_buffer(target.encode())
        tmpfs = ctypes.create_string_buffer(b"tmpfs")
        enter_seccomp()
        expect_errno(log, "ptrace(TRACEME)", NR["ptrace"], errno.EPERM, 0, 0, 0, 0)
        expect_errno(log, "unshare(NEWNS)", NR["unshare"], errno.EPERM, _sys.CLONE_NEWNS)
        expect_errno(log, "setns", NR["setns"], errno.EPERM, 0, 0)
        mount_args = (ctypes.addressof(tmpfs), ctypes.addressof(tgt), ctypes.addressof(tmpfs))
        expect_errno(log, "mount", NR["mount"], errno.EPERM, *mount_args, 0, 0)
        expect_errno(log, "umount2", NR["umount2"], errno.EPERM, ctypes.addressof(tgt), 0)
        expect_errno(log, "bpf", NR["bpf"], errno.EPERM, 0, 0, 0)
        expect_errno(log, "open_tree", NR["open_tree"], errno.EPERM, -100, 0, 0)
        expect_errno(log, "keyctl", NR["keyctl"], errno.EPERM, 0, 0, 0, 0, 0)
        expect_errno(log, "io_uring_setup", NR["io_uring_setup"], errno.ENOSYS, 1, 0)
        expect_errno(log, "clone3", NR["clone3"], errno.ENOSYS, 0, 0)
        expect_errno(log, "memfd_secret", NR["memfd_secret"], errno.ENOSYS, 0)
        expect_errno(
            log, "clone(NEWUSER)", NR["clone"], errno.EPERM, _sys.CLONE_NEWUSER | 17, 0, 0, 0, 0
        )
        expect_errno(
            log, "clone(NEWNET)", NR["clone"], errno.EPERM, _sys.CLONE_NEWNET | 17, 0, 0, 0, 0
        )
        expect_errno(log, "personality(ADDR_NO_RANDOMIZE)", NR["personality"], errno.EPERM, 0x40000)
        expect_errno(log, "ioctl(TIOCSTI)", NR["ioctl"], errno.EPERM, -1, 0x5412, 0)
        # Our own wrappers report the filter's errno the usual way.
        try:
            _sys.mount("tmpfs", target, "tmpfs", 0)
        except SyscallError as exc:
            log(str(exc))
            assert exc.syscall == "mount" and exc.errno == errno.EPERM
        else:
            raise AssertionError("mount succeeded under seccomp")

    assert_child_ok(body)


def test_without_filter_the_same_probes_behave_differently() -> None:
    """Control: the errnos above come from the filter, not from bad arguments."""

    def body(log: Log) -> None:
        result, err = raw(NR["io_uring_setup"], 1, 0)
        log(f"io_uring_setup: {result} {err}")
        assert err != errno.ENOSYS
        result, err = raw(NR["clone3"], 0, 0)
        log(f"clone3: {result} {err}")
        assert err != errno.ENOSYS
        result, err = raw(NR["ioctl"], -1, 0x5412, 0)
        assert err == errno.EBADF

    assert_child_ok(body)


def test_allowed_calls_still_work_under_the_filter() -> None:
    def body(log: Log) -> None:
        enter_seccomp()
        assert raw(NR["getpid"]) == (os.getpid(), 0)
        # personality(0xffffffff) only queries the persona.
        result, err = raw(NR["personality"], 0xFFFFFFFF)
        log(f"personality query: {result:#x} errno={err}")
        assert (result, err) == (0, 0)  # PER_LINUX
        assert raw(NR["personality"], 0) == (0, 0)  # setting PER_LINUX is allowed

        # glibc fork() is clone(SIGCHLD | CLONE_CHILD_*): no namespace flags.
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 7

        # pthread_create tries clone3 (ENOSYS here) and falls back to clone.
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
        thread.start()
        thread.join(10)
        assert seen and seen[0] != os.getpid()

        # ordinary I/O, sockets and pipes
        r, w = os.pipe()
        os.write(w, b"ok")
        assert os.read(r, 2) == b"ok"
        a, b = socket.socketpair()
        with a, b:
            a.sendall(b"x")
            assert b.recv(1) == b"x"
        assert Path("/proc/self/status").read_text()
        log("all allowed calls worked")

    output = assert_child_ok(body)
    assert "all allowed calls worked" in output


def test_subprocess_exec_under_the_filter() -> None:
    """A real program (with its own glibc start-up) runs under the filter."""

    def body(log: Log) -> None:
        enter_seccomp()
        pid = os.fork()
        if pid == 0:
            try:
                os.execv("/bin/sh", ["sh", "-c", "echo hi >/dev/null && exit 3"])
            finally:
                os._exit(127)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        log(f"sh exit code {code}")
        assert code == 3

    assert_child_ok(body)


def test_x32_syscall_kills_the_process() -> None:
    def body(log: Log) -> None:
        enter_seccomp()
        raw(0x40000000 | NR["getpid"])
        log("x32 getpid returned!")

    code, output = run_in_child(body)
    assert code == -signal.SIGSYS, output


# --- namespaces, hostname, loopback, pivot_root -------------------------------------


def _lo_flags() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = bytearray(struct.pack("16sH22x", b"lo", 0))
        fcntl.ioctl(sock.fileno(), 0x8913, request)  # SIOCGIFFLAGS
        flags: int = struct.unpack_from("H", request, 16)[0]
        return flags


def test_unshare_sethostname_loopback() -> None:
    def body(log: Log) -> None:
        original = socket.gethostname()
        _sys.unshare(_sys.CLONE_NEWUTS | _sys.CLONE_NEWNET)
        _sys.sethostname("rbx-test")
        assert socket.gethostname() == "rbx-test"
        assert os.uname().nodename == "rbx-test"
        log(f"host was {original}")
        assert not _lo_flags() & 0x1, "lo starts down in a new netns"
        _sys.loopback_up()
        assert _lo_flags() & 0x1
        _sys.loopback_up()  # idempotent
        # loopback actually carries traffic now
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.bind(("127.0.0.1", 0))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                tx.sendto(b"ping", rx.getsockname())
            rx.settimeout(5)
            assert rx.recv(4) == b"ping"

    before = socket.gethostname()
    assert_child_ok(body)
    assert socket.gethostname() == before


def test_setns_returns_to_original_namespace() -> None:
    def body(log: Log) -> None:
        original = socket.gethostname()
        fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
        _sys.unshare(_sys.CLONE_NEWUTS)
        _sys.sethostname("rbx-inner")
        assert socket.gethostname() == "rbx-inner"
        _sys.setns(fd, _sys.CLONE_NEWUTS)
        assert socket.gethostname() == original
        # wrong namespace type is reported as a SyscallError
        try:
            _sys.setns(fd, _sys.CLONE_NEWNET)
        except SyscallError as exc:
            log(str(exc))
            assert exc.syscall == "setns" and exc.errno == errno.EINVAL
        else:
            raise AssertionError("setns with the wrong nstype succeeded")

    assert_child_ok(body)


def test_sethostname_too_long() -> None:
    def body(log: Log) -> None:
        _sys.unshare(_sys.CLONE_NEWUTS)
        try:
            _sys.sethostname("x" * 100)
        except SyscallError as exc:
            log(str(exc))
            assert exc.syscall == "sethostname" and exc.errno == errno.EINVAL
        else:
            raise AssertionError("100-byte hostname accepted")

    assert_child_ok(body)


def names(path: str | Path) -> list[str]:
    return sorted(entry.name for entry in Path(path).iterdir())


def test_mount_and_pivot_root(tmp_path: Path) -> None:
    new_root = tmp_path / "root"
    new_root.mkdir()

    def body(log: Log) -> None:
        _sys.unshare(_sys.CLONE_NEWNS)
        _sys.mount(None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)
        flags = _sys.MS_NOSUID | _sys.MS_NODEV
        _sys.mount("tmpfs", str(new_root), "tmpfs", flags, "size=1m,mode=755")
        (new_root / "marker").write_text("inside")
        (new_root / "old").mkdir()
        _sys.pivot_root(str(new_root), str(new_root / "old"))
        os.chdir("/")
        # the tmpfs moved to "/": its old mount point under /old is empty again
        assert names(Path("/old", *new_root.parts[1:])) == []
        _sys.umount2("/old", _sys.MNT_DETACH)
        log(f"root now: {names('/')}")
        assert names("/") == ["marker", "old"]
        assert names("/old") == []
        assert Path("/marker").read_text() == "inside"
        # a read-only remount is enforced
        _sys.mount(None, "/", None, _sys.MS_REMOUNT | _sys.MS_RDONLY | flags)
        try:
            Path("/new").write_text("x")
        except OSError as exc:
            assert exc.errno == errno.EROFS
        else:
            raise AssertionError("write to read-only root succeeded")

    assert_child_ok(body)
    # the parent's mount namespace never saw the tmpfs
    assert names(new_root) == []


# --- fds and pidfds ------------------------------------------------------------------


def test_close_range() -> None:
    def body(log: Log) -> None:
        fd = os.open("/dev/null", os.O_RDONLY)
        for target in range(200, 206):
            os.dup2(fd, target)  # inheritable copies
        _sys.close_range(200, 202)
        for target in range(200, 203):
            try:
                os.fstat(target)
            except OSError as exc:
                assert exc.errno == errno.EBADF
            else:
                raise AssertionError(f"fd {target} still open")
        _sys.close_range(203, 205, _sys.CLOSE_RANGE_CLOEXEC)
        for target in range(203, 206):
            os.fstat(target)
            assert not os.get_inheritable(target)
        _sys.close_range(203)  # to UINT_MAX
        for target in range(203, 206):
            try:
                os.fstat(target)
            except OSError:
                pass
            else:
                raise AssertionError(f"fd {target} still open")
        os.fstat(fd)  # below the range: untouched
        try:
            _sys.close_range(10, 5)
        except SyscallError as exc:
            assert exc.syscall == "close_range" and exc.errno == errno.EINVAL
        else:
            raise AssertionError("first > last accepted")

    assert_child_ok(body)


def test_pidfd_kill_and_esrch() -> None:
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    pidfd = _sys.pidfd_open(pid)
    try:
        assert not os.get_inheritable(pidfd)  # pidfds are always close-on-exec
        _sys.pidfd_send_signal(pidfd, 0)  # alive
        _sys.pidfd_send_signal(pidfd, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        with pytest.raises(SyscallError) as info:
            _sys.pidfd_send_signal(pidfd, signal.SIGKILL)
        assert info.value.syscall == "pidfd_send_signal"
        assert info.value.errno == errno.ESRCH
    finally:
        os.close(pidfd)


# --- prctl and capabilities ----------------------------------------------------------


def test_prctl_helpers() -> None:
    def body(log: Log) -> None:
        _sys.set_pdeathsig(signal.SIGKILL)
        buf = ctypes.c_int(0)
        _sys.prctl(_sys.PR_GET_PDEATHSIG, ctypes.addressof(buf))
        assert buf.value == signal.SIGKILL
        _sys.set_dumpable(False)
        assert _sys.prctl(_sys.PR_GET_DUMPABLE) == 0
        _sys.set_dumpable(True)
        assert _sys.prctl(_sys.PR_GET_DUMPABLE) == 1
        _sys.set_child_subreaper()
        assert _sys.prctl(_sys.PR_GET_NO_NEW_PRIVS) == 0
        _sys.set_no_new_privs()
        assert _sys.prctl(_sys.PR_GET_NO_NEW_PRIVS) == 1

    assert_child_ok(body)


def test_drop_all_capabilities() -> None:
    def body(log: Log) -> None:
        _sys.clear_ambient()
        _sys.drop_bounding_set()
        for cap in range(_sys.cap_last_cap() + 1):
            assert _sys.prctl(_sys.PR_CAPBSET_READ, cap) == 0
        _sys.capset(0, 0, 0)
        assert _sys.capget() == _sys.CapSets(0, 0, 0)
        status = Path("/proc/self/status").read_text()
        log(status)
        for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert f"\n{field}:\t0000000000000000\n" in status
        # without CAP_SYS_ADMIN, namespace creation now fails
        try:
            _sys.unshare(_sys.CLONE_NEWNS)
        except SyscallError as exc:
            assert exc.errno == errno.EPERM
        else:
            raise AssertionError("unshare succeeded without capabilities")
        # regaining a capability is refused
        try:
            _sys.capset(1 << 21, 1 << 21, 0)
        except SyscallError as exc:
            log(str(exc))
            assert exc.syscall == "capset" and exc.errno == errno.EPERM
        else:
            raise AssertionError("capset regained CAP_SYS_ADMIN")

    assert_child_ok(body)


def test_capset_keeps_high_word() -> None:
    def body(log: Log) -> None:
        before = _sys.capget()
        cap_sys_admin = 1 << 21
        cap_bpf = 1 << 39  # lives in the second 32-bit word
        keep = before.permitted & (cap_sys_admin | cap_bpf)
        _sys.capset(keep, keep, 0)
        after = _sys.capget()
        log(f"{before} -> {after}")
        assert after == _sys.CapSets(keep, keep, 0)

    assert_child_ok(body)


SOCKET, SOCKETPAIR = 41, 53  # x86_64


def test_socket_families_and_host_wide_resources() -> None:
    """Only unix, inet, inet6 and route-netlink sockets; no vsock (it ignores network
    namespaces and reaches the VM host), no uevent netlink, no Linux AIO (a host-wide
    quota), no LDT changes, no host-wide sync."""

    def body(log: Log) -> None:
        enter_seccomp()
        af_vsock, af_packet, af_tipc = 40, 17, 30
        for family in (af_vsock, af_packet, af_tipc):
            expect_errno(
                log, f"socket({family})", SOCKET, errno.EAFNOSUPPORT, family, socket.SOCK_STREAM, 0
            )
        expect_errno(
            log,
            "socketpair(vsock)",
            SOCKETPAIR,
            errno.EAFNOSUPPORT,
            af_vsock,
            socket.SOCK_STREAM,
            0,
            0,
        )
        netlink_kobject_uevent = 15
        expect_errno(
            log,
            "netlink uevent",
            SOCKET,
            errno.EPROTONOSUPPORT,
            socket.AF_NETLINK,
            socket.SOCK_RAW,
            netlink_kobject_uevent,
        )
        for family, kind in (
            (socket.AF_UNIX, socket.SOCK_STREAM),
            (socket.AF_INET, socket.SOCK_DGRAM),
            (socket.AF_INET6, socket.SOCK_DGRAM),
        ):
            socket.socket(family, kind).close()
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()  # NETLINK_ROUTE
        a, b = socket.socketpair()
        a.close()
        b.close()
        expect_errno(log, "io_setup", 206, errno.ENOSYS, 1, 0)
        expect_errno(log, "modify_ldt", 154, errno.EPERM, 0, 0, 0)
        expect_errno(log, "syncfs", 306, errno.EPERM, 0)

    assert_child_ok(body)
