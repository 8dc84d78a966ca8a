"""A classic-BPF seccomp filter, assembled in Python.

Why not libseccomp: it is a C dependency the helper would have to find and
load at run time, while the whole policy is ~80 instructions that are easy to
emit, test (the unit tests interpret the program) and audit.

Layout of the generated program::

    ld  arch            ; jeq AUDIT_ARCH_<machine> else KILL_PROCESS
    ld  nr              ; x86_64: jge 0x40000000 (x32 ABI) -> KILL_PROCESS
    jeq <denied nr>     -> EPERM     (one instruction per syscall)
    jeq <probed nr>     -> ENOSYS    (so programs fall back)
    jeq clone/personality/ioctl -> argument checks
    ret ALLOW

Jump offsets are u8; the assembler resolves labels and refuses any offset
outside 0..255 instead of silently truncating it.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from rustbox._errors import HostUnsupported, InvalidInput
from rustbox._sys import _libc
from rustbox._sys._libc import check, raw_syscall, syscall_nr
from rustbox._sys._namespaces import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
)

__all__ = [
    "DEFAULT_POLICY",
    "SeccompPolicy",
    "build_filter",
    "describe",
    "install_filter",
]

# <linux/seccomp.h>
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# <linux/filter.h>, <linux/bpf_common.h>
BPF_LD = 0x00
BPF_JMP = 0x05
BPF_RET = 0x06
BPF_W = 0x00
BPF_ABS = 0x20
BPF_K = 0x00
BPF_JEQ = 0x10
BPF_JGE = 0x30
BPF_JSET = 0x40
BPF_MAXINSNS = 4096

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
# Both supported machines are little-endian, so the low 32 bits of args[i]
# sit at the start of each 8-byte slot.
_OFF_NR = 0
_OFF_ARCH = 4
_AF_NETLINK = 16


def _off_arg_lo(i: int) -> int:
    return 16 + 8 * i


_X32_SYSCALL_BIT = 0x40000000

# <asm-generic/ioctls.h>
TIOCSTI = 0x5412
TIOCLINUX = 0x541C

_INSN = struct.Struct("=HBBI")


@dataclass(frozen=True)
class _Arch:
    """What the filter needs to know about one machine."""

    name: str
    audit_arch: int
    table: Mapping[str, int]
    # Policy syscalls that simply do not exist on this machine.
    absent: frozenset[str]
    reject_x32: bool


#: Numbers from 424 on are the same on every architecture (asm-generic);
#: 457+ checked against the running kernel's syscall table.
_SHARED_SINCE_424: dict[str, int] = {
    "pidfd_send_signal": 424,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_open": 434,
    "clone3": 435,
    "close_range": 436,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount_setattr": 442,
    "quotactl_fd": 443,
    "memfd_secret": 447,
    "statmount": 457,
    "listmount": 458,
    "lsm_set_self_attr": 460,
    "open_tree_attr": 467,
}

# From <asm/unistd_64.h>.
_X86_64_TABLE: Mapping[str, int] = {
    "read": 0,
    "ioctl": 16,
    "getpid": 39,
    "socket": 41,
    "socketpair": 53,
    "modify_ldt": 154,
    "sync": 162,
    "io_setup": 206,
    "io_destroy": 207,
    "io_getevents": 208,
    "io_submit": 209,
    "io_cancel": 210,
    "syncfs": 306,
    "io_pgetevents": 333,
    "clone": 56,
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "personality": 135,
    "vhangup": 153,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "seccomp": 317,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    **_SHARED_SINCE_424,
}

# From <asm-generic/unistd.h>, which arm64 uses; 424+ are shared by all arches.
_AARCH64_TABLE: Mapping[str, int] = {
    "io_setup": 0,
    "io_destroy": 1,
    "io_submit": 2,
    "io_cancel": 3,
    "io_getevents": 4,
    "sync": 81,
    "socket": 198,
    "socketpair": 199,
    "syncfs": 267,
    "io_pgetevents": 292,
    "lookup_dcookie": 18,
    "ioctl": 29,
    "umount2": 39,
    "mount": 40,
    "pivot_root": 41,
    "chroot": 51,
    "vhangup": 58,
    "read": 63,
    "quotactl": 60,
    "acct": 89,
    "personality": 92,
    "unshare": 97,
    "kexec_load": 104,
    "init_module": 105,
    "delete_module": 106,
    "clock_settime": 112,
    "syslog": 116,
    "ptrace": 117,
    "reboot": 142,
    "settimeofday": 170,
    "adjtimex": 171,
    "getpid": 172,
    "add_key": 217,
    "request_key": 218,
    "keyctl": 219,
    "clone": 220,
    "swapon": 224,
    "swapoff": 225,
    "perf_event_open": 241,
    "fanotify_init": 262,
    "name_to_handle_at": 264,
    "open_by_handle_at": 265,
    "clock_adjtime": 266,
    "setns": 268,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "kcmp": 272,
    "finit_module": 273,
    "seccomp": 277,
    "bpf": 280,
    "userfaultfd": 282,
    "kexec_file_load": 294,
    **_SHARED_SINCE_424,
}

_ARCHES: Mapping[str, _Arch] = {
    "x86_64": _Arch(
        name="x86_64",
        audit_arch=0xC000003E,  # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
        table=_X86_64_TABLE,
        absent=frozenset(),
        reject_x32=True,
    ),
    "aarch64": _Arch(
        name="aarch64",
        audit_arch=0xC00000B7,  # EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
        table=_AARCH64_TABLE,
        absent=frozenset({"iopl", "ioperm", "uselib", "modify_ldt"}),
        reject_x32=False,
    ),
}

_CLONE_NS_FLAGS: tuple[tuple[str, int], ...] = (
    ("CLONE_NEWNS", CLONE_NEWNS),
    ("CLONE_NEWUTS", CLONE_NEWUTS),
    ("CLONE_NEWIPC", CLONE_NEWIPC),
    ("CLONE_NEWUSER", CLONE_NEWUSER),
    ("CLONE_NEWPID", CLONE_NEWPID),
    ("CLONE_NEWNET", CLONE_NEWNET),
    ("CLONE_NEWCGROUP", CLONE_NEWCGROUP),
)


@dataclass(frozen=True)
class SeccompPolicy:
    """What the filter denies; everything not matched is allowed.

    ``clone_denied_flags`` must not include ``CLONE_NEWTIME`` (0x80): in
    ``clone()`` the low byte of the flags is the exit signal.
    """

    eperm: tuple[str, ...]
    enosys: tuple[str, ...]
    clone_denied_flags: int
    personality_allowed: tuple[int, ...]
    ioctl_denied: tuple[tuple[str, int], ...]
    #: socket()/socketpair() families allowed; others fail with EAFNOSUPPORT. AF_VSOCK
    #: in particular ignores network namespaces and would reach the VM host.
    socket_families: tuple[int, ...] = (1, 2, 10, 16)  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
    #: AF_NETLINK protocols allowed (NETLINK_ROUTE, for getifaddrs); not e.g. uevents.
    netlink_protocols: tuple[int, ...] = (0,)


DEFAULT_POLICY = SeccompPolicy(
    eperm=(
        # debugging / other processes' memory
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "process_madvise",
        "pidfd_getfd",
        "kcmp",
        # kernel attack surface
        "bpf",
        "userfaultfd",
        "perf_event_open",
        "lookup_dcookie",
        "fanotify_init",
        # kernel code
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        # mounts and namespaces
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "unshare",
        "setns",
        # new mount API
        "open_tree",
        "open_tree_attr",
        "move_mount",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "listmount",
        "statmount",
        # file handles (bypass path checks)
        "name_to_handle_at",
        "open_by_handle_at",
        # host state
        "reboot",
        "swapon",
        "swapoff",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "acct",
        "quotactl",
        "quotactl_fd",
        "syslog",
        "vhangup",
        "sync",  # host-wide writeback on demand
        "syncfs",
        # keyrings
        "add_key",
        "keyctl",
        "request_key",
        # x86 port I/O and descriptor tables, legacy
        "iopl",
        "ioperm",
        "modify_ldt",
        "uselib",
        # LSM
        "lsm_set_self_attr",
    ),
    enosys=(
        "clone3",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "memfd_secret",
        # Linux AIO: fs.aio-max-nr is host-wide, one run could exhaust it for all
        "io_setup",
        "io_destroy",
        "io_submit",
        "io_cancel",
        "io_getevents",
        "io_pgetevents",
    ),
    clone_denied_flags=(
        CLONE_NEWNS
        | CLONE_NEWUTS
        | CLONE_NEWIPC
        | CLONE_NEWUSER
        | CLONE_NEWPID
        | CLONE_NEWNET
        | CLONE_NEWCGROUP
    ),
    # 0 is PER_LINUX; 0xffffffff only queries the current persona.
    personality_allowed=(0, 0xFFFFFFFF),
    ioctl_denied=(("TIOCSTI", TIOCSTI), ("TIOCLINUX", TIOCLINUX)),
)


# --- assembler -----------------------------------------------------------------

_Target = str | int  # a label, or a literal relative offset


@dataclass(frozen=True)
class _Insn:
    code: int
    k: int
    jt: _Target = 0
    jf: _Target = 0


class _Assembler:
    """Collects instructions and labels; resolves jumps to u8 offsets."""

    def __init__(self) -> None:
        self._insns: list[_Insn] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        if name in self._labels:
            raise ValueError(f"duplicate BPF label {name!r}")
        self._labels[name] = len(self._insns)

    def load_abs(self, offset: int) -> None:
        self._insns.append(_Insn(BPF_LD | BPF_W | BPF_ABS, offset))

    def jump(self, op: int, k: int, jt: _Target = 0, jf: _Target = 0) -> None:
        self._insns.append(_Insn(BPF_JMP | op | BPF_K, k, jt, jf))

    def ret(self, k: int) -> None:
        self._insns.append(_Insn(BPF_RET | BPF_K, k))

    def _resolve(self, index: int, target: _Target) -> int:
        offset = target if isinstance(target, int) else self._labels[target] - index - 1
        if not 0 <= offset <= 0xFF:
            raise ValueError(f"BPF jump at {index} to {target!r} out of range ({offset})")
        return offset

    def assemble(self) -> bytes:
        if len(self._insns) > BPF_MAXINSNS:
            raise ValueError(f"BPF program too long ({len(self._insns)} instructions)")
        return b"".join(
            _INSN.pack(
                insn.code,
                self._resolve(i, insn.jt),
                self._resolve(i, insn.jf),
                insn.k & 0xFFFFFFFF,
            )
            for i, insn in enumerate(self._insns)
        )


def _arch_for(machine: str | None) -> _Arch:
    machine = _libc.machine() if machine is None else machine
    try:
        return _ARCHES[machine]
    except KeyError:
        raise HostUnsupported([f"seccomp: no syscall table for {machine}"]) from None


def _numbers(arch: _Arch, names: tuple[str, ...]) -> list[int]:
    """Map *names* to numbers, skipping syscalls the machine does not have."""
    numbers: list[int] = []
    for name in names:
        if name in arch.absent:
            continue
        try:
            numbers.append(arch.table[name])
        except KeyError:
            raise ValueError(f"seccomp: unknown syscall {name!r} on {arch.name}") from None
    return numbers


def build_filter(machine: str | None = None, *, policy: SeccompPolicy = DEFAULT_POLICY) -> bytes:
    """Return the packed ``struct sock_filter[]`` for *policy* on *machine*.

    *machine* defaults to this process's ABI (see ``_libc.machine``); unknown machines raise
    :class:`HostUnsupported` rather than get a filter with wrong numbers.
    """
    arch = _arch_for(machine)
    errno_eperm = SECCOMP_RET_ERRNO | errno.EPERM
    errno_enosys = SECCOMP_RET_ERRNO | errno.ENOSYS
    asm = _Assembler()

    asm.load_abs(_OFF_ARCH)
    asm.jump(BPF_JEQ, arch.audit_arch, jt=1)
    asm.ret(SECCOMP_RET_KILL_PROCESS)
    asm.load_abs(_OFF_NR)
    if arch.reject_x32:
        asm.jump(BPF_JGE, _X32_SYSCALL_BIT, jf=1)
        asm.ret(SECCOMP_RET_KILL_PROCESS)

    for nr in _numbers(arch, policy.eperm):
        asm.jump(BPF_JEQ, nr, jt="eperm")
    for nr in _numbers(arch, policy.enosys):
        asm.jump(BPF_JEQ, nr, jt="enosys")
    asm.jump(BPF_JEQ, arch.table["clone"], jt="clone")
    asm.jump(BPF_JEQ, arch.table["personality"], jt="personality")
    asm.jump(BPF_JEQ, arch.table["ioctl"], jt="ioctl")
    asm.jump(BPF_JEQ, arch.table["socket"], jt="socket")
    asm.jump(BPF_JEQ, arch.table["socketpair"], jt="socket")
    asm.ret(SECCOMP_RET_ALLOW)

    asm.label("socket")  # socket(family, type, protocol)
    asm.load_abs(_off_arg_lo(0))
    for family in policy.socket_families:
        if family != _AF_NETLINK:
            asm.jump(BPF_JEQ, family, jt="allow")
    if _AF_NETLINK in policy.socket_families:
        asm.jump(BPF_JEQ, _AF_NETLINK, jt="netlink")
    asm.ret(SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT)
    asm.label("netlink")
    asm.load_abs(_off_arg_lo(2))
    for protocol in policy.netlink_protocols:
        asm.jump(BPF_JEQ, protocol, jt="allow")
    asm.ret(SECCOMP_RET_ERRNO | errno.EPROTONOSUPPORT)

    asm.label("clone")  # clone(flags, ...): flags are arg 0 on both machines
    asm.load_abs(_off_arg_lo(0))
    asm.jump(BPF_JSET, policy.clone_denied_flags, jt="eperm", jf="allow")

    asm.label("personality")
    asm.load_abs(_off_arg_lo(0))
    for persona in policy.personality_allowed:
        asm.jump(BPF_JEQ, persona, jt="allow")
    asm.ret(errno_eperm)

    asm.label("ioctl")
    asm.load_abs(_off_arg_lo(1))
    for _, request in policy.ioctl_denied:
        asm.jump(BPF_JEQ, request, jt="eperm")

    asm.label("allow")
    asm.ret(SECCOMP_RET_ALLOW)
    asm.label("eperm")
    asm.ret(errno_eperm)
    asm.label("enosys")
    asm.ret(errno_enosys)
    return asm.assemble()


def describe(machine: str | None = None, *, policy: SeccompPolicy = DEFAULT_POLICY) -> list[str]:
    """Summarise the filter rules in short lines for the evidence bundle."""
    arch = _arch_for(machine)

    def present(names: tuple[str, ...]) -> str:
        return ", ".join(n for n in names if n not in arch.absent)

    clone_flags = "|".join(n for n, v in _CLONE_NS_FLAGS if policy.clone_denied_flags & v)
    personas = " or ".join(f"{p:#x}" for p in policy.personality_allowed)
    lines = [f"arch != {arch.name}: kill process"]
    if arch.reject_x32:
        lines.append(f"x32 ABI (nr >= {_X32_SYSCALL_BIT:#x}): kill process")
    lines += [
        f"deny EPERM: {present(policy.eperm)}",
        f"ENOSYS: {present(policy.enosys)}",
        f"clone with namespace flags ({clone_flags}): EPERM",
        f"personality other than {personas}: EPERM",
        f"ioctl {', '.join(n for n, _ in policy.ioctl_denied)}: EPERM",
        "everything else: allow",
    ]
    return lines


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def install_filter(program: bytes) -> None:
    """Load *program* with ``seccomp(SECCOMP_SET_MODE_FILTER)``.

    The caller must already have set ``NO_NEW_PRIVS`` (or hold
    ``CAP_SYS_ADMIN``). The filter applies to the calling thread only, which
    is all there is in the single-threaded helper.
    """
    count, rest = divmod(len(program), _INSN.size)
    if rest or not 0 < count <= BPF_MAXINSNS:
        raise InvalidInput(
            "seccomp program", f"{len(program)} bytes is not 1..{BPF_MAXINSNS} instructions"
        )
    # Both objects stay referenced until the syscall has returned.
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ctypes.addressof(buffer))
    result = raw_syscall(syscall_nr("seccomp"), SECCOMP_SET_MODE_FILTER, 0, ctypes.addressof(fprog))
    check(result, "seccomp", f"SECCOMP_SET_MODE_FILTER, {count} instructions")
