"""Unit tests for rustbox._sys: error shape, capabilities, and the seccomp program.

The seccomp program is checked by interpreting it: a tiny classic-BPF machine
below evaluates the filter for (arch, nr, args) exactly as the kernel would.
"""

from __future__ import annotations

import errno
import os
import re
import struct
from pathlib import Path

import pytest

from rustbox import _sys
from rustbox._errors import HostUnsupported, InvalidInput, SyscallError
from rustbox._sys import _seccomp
from rustbox._sys._seccomp import (
    BPF_ABS,
    BPF_JEQ,
    BPF_JGE,
    BPF_JMP,
    BPF_JSET,
    BPF_K,
    BPF_LD,
    BPF_RET,
    BPF_W,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
)

is_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
X86 = _seccomp._X86_64_TABLE
ARM = _seccomp._AARCH64_TABLE

ALLOW = SECCOMP_RET_ALLOW
KILL = SECCOMP_RET_KILL_PROCESS
EPERM = SECCOMP_RET_ERRNO | errno.EPERM
ENOSYS = SECCOMP_RET_ERRNO | errno.ENOSYS
SIGCHLD = 17


# --- a classic-BPF interpreter (only what seccomp filters may use here) -------


def decode(program: bytes) -> list[tuple[int, int, int, int]]:
    assert len(program) % 8 == 0
    return [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]


def seccomp_data(arch: int, nr: int, args: tuple[int, ...] = ()) -> bytes:
    padded = (tuple(a & 0xFFFFFFFFFFFFFFFF for a in args) + (0,) * 6)[:6]
    return struct.pack("<iIQ6Q", nr, arch, 0x401000, *padded)


def run_bpf(program: bytes, data: bytes) -> int:
    insns = decode(program)
    acc = 0
    pc = 0
    steps = 0
    while True:
        assert 0 <= pc < len(insns), f"fell off the program at {pc}"
        steps += 1
        assert steps <= len(insns), "loop detected (cBPF only jumps forward)"
        code, jt, jf, k = insns[pc]
        if code == BPF_LD | BPF_W | BPF_ABS:
            assert k % 4 == 0 and k + 4 <= len(data), f"bad load offset {k}"
            (acc,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif code == BPF_RET | BPF_K:
            return k
        elif code & 0x07 == BPF_JMP:
            op = code & 0xF0
            assert code & 0x08 == BPF_K, "only immediate jumps expected"
            if op == BPF_JEQ:
                taken = acc == k
            elif op == BPF_JGE:
                taken = acc >= k
            elif op == BPF_JSET:
                taken = bool(acc & k)
            else:
                raise AssertionError(f"unexpected jump op {op:#x}")
            pc += 1 + (jt if taken else jf)
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def verdict(arch: int, nr: int, *args: int, machine: str = "x86_64") -> int:
    return run_bpf(_sys.build_filter(machine), seccomp_data(arch, nr, args))


# --- SyscallError shape --------------------------------------------------------


def test_syscall_error_message_names_call_and_errno() -> None:
    exc = SyscallError("mount", errno.EPERM, "target=/x")
    assert str(exc) == "mount: EPERM (Operation not permitted) [target=/x]"
    assert exc.errno == errno.EPERM
    assert isinstance(exc, OSError)


def test_check_raises_with_errno_and_passes_results() -> None:
    assert _sys.check(5, "whatever") == 5
    # close(-1) sets errno to EBADF through the use_errno libc handle.
    result = _sys.libc.close(-1)
    with pytest.raises(SyscallError) as info:
        _sys.check(result, "close", "fd=-1")
    assert info.value.syscall == "close"
    assert info.value.errno == errno.EBADF
    assert str(info.value) == "close: EBADF (Bad file descriptor) [fd=-1]"


def test_sys_table_has_numbers_for_this_machine() -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("x86_64 numbers only")
    assert _sys.SYS["pivot_root"] == 155
    assert _sys.SYS["seccomp"] == 317
    assert _sys.SYS["pidfd_open"] == 434
    assert set(_sys.SYS) == {
        "pivot_root",
        "pidfd_open",
        "pidfd_send_signal",
        "close_range",
        "seccomp",
        "capget",
        "capset",
        "setns",
        "unshare",
    }


def test_raw_syscall_returns_result() -> None:
    assert _sys.raw_syscall(X86["getpid"] if os.uname().machine == "x86_64" else ARM["getpid"]) == (
        os.getpid()
    )


def test_pivot_root_failure_is_syscall_error() -> None:
    with pytest.raises(SyscallError) as info:
        _sys.pivot_root("/nonexistent-rbx", "/nonexistent-rbx/x")
    assert info.value.syscall == "pivot_root"
    assert info.value.errno in {errno.ENOENT, errno.EINVAL, errno.EPERM}
    assert "pivot_root: E" in str(info.value)
    assert "new_root=/nonexistent-rbx" in str(info.value)


@pytest.mark.root
@is_root
def test_mount_bad_fstype(tmp_path: Path) -> None:
    with pytest.raises(SyscallError) as info:
        _sys.mount("none", str(tmp_path), "rbx-no-such-fs", 0)
    assert info.value.syscall == "mount"
    assert info.value.errno == errno.ENODEV
    assert str(info.value).startswith("mount: ENODEV (")
    assert str(info.value).endswith(f"[target={tmp_path}]")


@pytest.mark.root
@is_root
def test_umount2_of_non_mount_point_is_einval(tmp_path: Path) -> None:
    with pytest.raises(SyscallError) as info:
        _sys.umount2(str(tmp_path))
    assert info.value.syscall == "umount2"
    assert info.value.errno == errno.EINVAL
    assert f"[target={tmp_path}]" in str(info.value)


def test_umount2_missing_path_is_enoent_or_eperm() -> None:
    with pytest.raises(SyscallError) as info:
        _sys.umount2("/nonexistent-rbx")
    assert info.value.errno in {errno.ENOENT, errno.EPERM}


def test_prctl_error_names_option() -> None:
    with pytest.raises(SyscallError) as info:
        _sys.prctl(_sys.PR_CAPBSET_READ, 10_000)
    assert info.value.syscall == "prctl(PR_CAPBSET_READ)"
    assert info.value.errno == errno.EINVAL
    with pytest.raises(SyscallError) as info:
        _sys.prctl(0x7FFF_0000)
    assert info.value.syscall == f"prctl({0x7FFF_0000})"


def test_prctl_getters() -> None:
    assert _sys.prctl(_sys.PR_GET_DUMPABLE) in {0, 1, 2}
    assert _sys.prctl(_sys.PR_GET_NO_NEW_PRIVS) in {0, 1}
    assert _sys.prctl(_sys.PR_GET_SECCOMP) in {0, 2}


def test_pidfd_of_missing_process_is_esrch() -> None:
    with pytest.raises(SyscallError) as info:
        _sys.pidfd_open(2**22 + 12345)  # above the default pid_max
    assert info.value.syscall == "pidfd_open"
    assert info.value.errno in {errno.ESRCH, errno.EINVAL}


def test_pidfd_send_signal_bad_fd() -> None:
    with pytest.raises(SyscallError) as info:
        _sys.pidfd_send_signal(-1, 0)
    assert info.value.syscall == "pidfd_send_signal"
    assert info.value.errno == errno.EBADF


def test_setns_bad_fd() -> None:
    with pytest.raises(SyscallError) as info:
        _sys.setns(-1, _sys.CLONE_NEWUTS)
    assert info.value.syscall == "setns"
    assert info.value.errno == errno.EBADF


def test_unshare_bad_flags() -> None:
    with pytest.raises(SyscallError) as info:
        _sys.unshare(0x1)  # not an unshare flag
    assert info.value.syscall == "unshare"
    assert info.value.errno == errno.EINVAL


# --- capabilities --------------------------------------------------------------


def _status_mask(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s*([0-9a-f]+)$", text, re.MULTILINE)
    assert match
    return int(match.group(1), 16)


def test_cap_last_cap_matches_proc() -> None:
    last = _sys.cap_last_cap()
    assert last == int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    assert last >= 40  # CAP_CHECKPOINT_RESTORE, Linux 5.9


def test_capget_matches_proc_status() -> None:
    caps = _sys.capget()
    assert caps == _sys.CapSets(
        effective=_status_mask("CapEff"),
        permitted=_status_mask("CapPrm"),
        inheritable=_status_mask("CapInh"),
    )
    assert _sys.capget(os.getpid()) == caps


@pytest.mark.root
@is_root
def test_capget_as_root_has_full_caps() -> None:
    caps = _sys.capget()
    bounding = _status_mask("CapBnd")
    # Root holds every capability its bounding set allows (a container may
    # have trimmed the bounding set), including the ones isolation needs.
    assert caps.effective == bounding
    assert caps.permitted == bounding
    for cap in (21, 8, 6, 7, 12):  # SYS_ADMIN, SETPCAP, SETGID, SETUID, NET_ADMIN
        assert caps.effective >> cap & 1


def test_capget_bad_pid() -> None:
    with pytest.raises(SyscallError) as info:
        _sys.capget(2**22 + 12345)
    assert info.value.syscall == "capget"
    assert info.value.errno == errno.ESRCH


# --- seccomp program structure ---------------------------------------------------


def test_program_structure() -> None:
    program = _sys.build_filter("x86_64")
    assert len(program) % 8 == 0
    insns = decode(program)
    assert 0 < len(insns) <= 4096
    # First: load the architecture word of struct seccomp_data.
    assert insns[0] == (BPF_LD | BPF_W | BPF_ABS, 0, 0, 4)
    assert insns[1][0] == BPF_JMP | BPF_JEQ | BPF_K and insns[1][3] == AUDIT_ARCH_X86_64
    # Every jump lands inside the program; the program ends in a return.
    for pc, (code, jt, jf, _k) in enumerate(insns):
        if code & 0x07 == BPF_JMP:
            assert pc + 1 + jt < len(insns)
            assert pc + 1 + jf < len(insns)
    assert insns[-1][0] == BPF_RET | BPF_K


def test_program_is_deterministic() -> None:
    assert _sys.build_filter("x86_64") == _sys.build_filter("x86_64")


def test_default_machine() -> None:
    if os.uname().machine not in {"x86_64", "aarch64"}:
        with pytest.raises(HostUnsupported):
            _sys.build_filter()
    else:
        assert _sys.build_filter() == _sys.build_filter(os.uname().machine)


def test_unsupported_machine() -> None:
    with pytest.raises(HostUnsupported) as info:
        _sys.build_filter("riscv64")
    assert info.value.missing == ("seccomp: no syscall table for riscv64",)
    with pytest.raises(HostUnsupported):
        _sys.describe("s390x")


def test_unknown_policy_syscall_rejected() -> None:
    policy = _sys.SeccompPolicy(
        eperm=("no_such_call",),
        enosys=(),
        clone_denied_flags=_sys.CLONE_NEWUSER,
        personality_allowed=(0,),
        ioctl_denied=(),
    )
    with pytest.raises(ValueError, match="no_such_call"):
        _sys.build_filter("x86_64", policy=policy)


def test_jump_out_of_range_is_refused() -> None:
    many = tuple(name for name in X86 if name not in {"clone", "personality", "ioctl"})
    policy = _sys.SeccompPolicy(
        eperm=many * 5,  # > 255 instructions between the first jump and its target
        enosys=(),
        clone_denied_flags=_sys.CLONE_NEWUSER,
        personality_allowed=(0,),
        ioctl_denied=(),
    )
    with pytest.raises(ValueError, match="out of range"):
        _sys.build_filter("x86_64", policy=policy)


@pytest.mark.parametrize("name", _sys.DEFAULT_POLICY.eperm)
def test_denied_syscalls_get_eperm(name: str) -> None:
    assert verdict(AUDIT_ARCH_X86_64, X86[name]) == EPERM


@pytest.mark.parametrize("name", _sys.DEFAULT_POLICY.enosys)
def test_probed_syscalls_get_enosys(name: str) -> None:
    assert verdict(AUDIT_ARCH_X86_64, X86[name]) == ENOSYS


@pytest.mark.parametrize(
    ("nr", "args", "expected"),
    [
        (0, (), ALLOW),  # read
        (1, (), ALLOW),  # write
        (2, (), ALLOW),  # open
        (59, (), ALLOW),  # execve
        (57, (), ALLOW),  # fork
        (58, (), ALLOW),  # vfork
        (231, (), ALLOW),  # exit_group
        (334, (), ALLOW),  # rseq
        (X86["pidfd_open"], (), ALLOW),
        (X86["close_range"], (), ALLOW),
        (X86["seccomp"], (), ALLOW),  # stacking more filters is harmless
        (X86["ptrace"], (0, 0, 0, 0), EPERM),
        (X86["clone3"], (0, 88), ENOSYS),
        (X86["clone"], (SIGCHLD,), ALLOW),
        (X86["clone"], (0x3D0F00,), ALLOW),  # glibc pthread_create flags
        (X86["clone"], (0x01200011,), ALLOW),  # glibc fork flags
        (X86["clone"], (_sys.CLONE_NEWUSER | SIGCHLD,), EPERM),
        (X86["clone"], (_sys.CLONE_NEWNS,), EPERM),
        (X86["clone"], (_sys.CLONE_NEWUTS,), EPERM),
        (X86["clone"], (_sys.CLONE_NEWIPC,), EPERM),
        (X86["clone"], (_sys.CLONE_NEWPID,), EPERM),
        (X86["clone"], (_sys.CLONE_NEWNET,), EPERM),
        (X86["clone"], (_sys.CLONE_NEWCGROUP,), EPERM),
        (X86["clone"], (0x80 | 0x11,), ALLOW),  # 0x80 is part of the exit signal byte
        (X86["clone"], ((1 << 32) | SIGCHLD,), ALLOW),  # only the low 32 bits count
        (X86["personality"], (0,), ALLOW),
        (X86["personality"], (0xFFFFFFFF,), ALLOW),
        (X86["personality"], (-1,), ALLOW),  # 64-bit -1: low word is 0xffffffff
        (X86["personality"], (0x0040000,), EPERM),  # ADDR_NO_RANDOMIZE
        (X86["personality"], (0x8,), EPERM),  # PER_LINUX32
        (X86["personality"], (0x0400000,), EPERM),  # READ_IMPLIES_EXEC
        (X86["ioctl"], (0, 0x5412), EPERM),  # TIOCSTI
        (X86["ioctl"], (0, 0x541C), EPERM),  # TIOCLINUX
        (X86["ioctl"], (0, 0x5401), ALLOW),  # TCGETS
        (X86["ioctl"], (0, 0x5413), ALLOW),  # TIOCGWINSZ
        (X86["ioctl"], (0, (1 << 32) | 0x5401), ALLOW),
        (0x40000000, (), KILL),  # x32 read
        (0x40000000 | X86["ptrace"], (), KILL),
        (0x40000000 + 512, (), KILL),  # x32-only numbers
        (-1, (), KILL),  # unsigned compare: 0xffffffff >= the x32 bit
    ],
)
def test_verdicts(nr: int, args: tuple[int, ...], expected: int) -> None:
    assert verdict(AUDIT_ARCH_X86_64, nr, *args) == expected


@pytest.mark.parametrize("arch", [AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64, 0, 0xFFFFFFFF])
@pytest.mark.parametrize("nr", [0, 1, 11, 101, 435])
def test_wrong_arch_is_killed(arch: int, nr: int) -> None:
    assert verdict(arch, nr) == KILL


def test_aarch64_filter() -> None:
    def arm(nr: int, *args: int) -> int:
        return verdict(AUDIT_ARCH_AARCH64, nr, *args, machine="aarch64")

    assert arm(ARM["read"]) == ALLOW
    assert arm(ARM["ptrace"]) == EPERM
    assert arm(ARM["mount"]) == EPERM
    assert arm(ARM["clone3"]) == ENOSYS
    assert arm(ARM["clone"], SIGCHLD) == ALLOW
    assert arm(ARM["clone"], _sys.CLONE_NEWUSER | SIGCHLD) == EPERM
    assert arm(ARM["personality"], 0x0040000) == EPERM
    assert arm(ARM["ioctl"], 0, 0x5412) == EPERM
    # No x32 on arm64: high numbers are just unknown syscalls (ENOSYS by the kernel).
    assert arm(0x40000000) == ALLOW
    assert verdict(AUDIT_ARCH_X86_64, ARM["read"], machine="aarch64") == KILL


def test_every_policy_syscall_is_exercised() -> None:
    policy = _sys.DEFAULT_POLICY
    assert not set(policy.eperm) & set(policy.enosys)
    assert len(set(policy.eperm)) == len(policy.eperm)
    assert not policy.clone_denied_flags & 0xFF  # never the exit-signal byte
    assert policy.clone_denied_flags & _sys.CLONE_NEWTIME == 0


def test_describe_lines() -> None:
    lines = _sys.describe("x86_64")
    text = "\n".join(lines)
    assert lines[0] == "arch != x86_64: kill process"
    assert "x32 ABI" in text
    assert any(line.startswith("deny EPERM: ptrace, ") for line in lines)
    assert any(line.startswith("ENOSYS: clone3, io_uring_setup") for line in lines)
    assert "clone with namespace flags" in text
    assert "personality" in text and "TIOCSTI" in text
    assert "iopl" not in "\n".join(_sys.describe("aarch64"))


def _header_numbers(path: Path) -> dict[str, int]:
    numbers: dict[str, int] = {}
    for match in re.finditer(r"^#define __NR_(\w+)\s+(\d+)\s*$", path.read_text(), re.MULTILINE):
        numbers[match.group(1)] = int(match.group(2))
    return numbers


@pytest.mark.parametrize(
    ("table", "header"),
    [
        (X86, Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")),
        (ARM, Path("/usr/include/asm-generic/unistd.h")),
    ],
)
def test_tables_agree_with_kernel_headers(table: dict[str, int], header: Path) -> None:
    if not header.exists():
        pytest.skip(f"{header} not installed")
    known = _header_numbers(header)
    checked = 0
    for name, nr in table.items():
        if name in known:  # headers older than the syscall simply lack it
            assert known[name] == nr, name
            checked += 1
    assert checked >= 40


def test_install_filter_rejects_malformed_program() -> None:
    with pytest.raises(InvalidInput):
        _sys.install_filter(b"")
    with pytest.raises(InvalidInput):
        _sys.install_filter(b"\x00" * 12)


def test_public_names() -> None:
    for name in _sys.__all__:
        assert hasattr(_sys, name), name
