"""What this host offers, and whether strict mode can run on it (`rustbox check`)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any

import attrs

from rustbox import _sys
from rustbox._errors import HostUnsupported
from rustbox._host._cgroup import CgroupTree
from rustbox._host._uidpool import UidPool

#: Namespaces strict mode needs, and the clone flag that makes each.
NAMESPACES = {
    "pid": 0x20000000,
    "mount": 0x00020000,
    "network": 0x40000000,
    "ipc": 0x08000000,
    "uts": 0x04000000,
}

# Runs in a throwaway interpreter: unsharing changes the calling process for good.
_NS_PROBE = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, flag in json.loads(sys.argv[1]).items():
    ok = libc.unshare(flag) == 0
    out[name] = "ok" if ok else os.strerror(ctypes.get_errno())
print(json.dumps(out))
"""


@attrs.frozen
class HostReport:
    root: bool
    kernel: str
    machine: str
    cgroup: dict[str, Any] | None
    namespaces: dict[str, str]
    seccomp: str
    pidfd: str
    uid_pool: dict[str, Any]
    missing: tuple[str, ...]

    @property
    def strict_ok(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["strict_ok"] = self.strict_ok
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        lines = [
            f"root:        {'yes' if self.root else 'NO'}",
            f"kernel:      {self.kernel} ({self.machine})",
        ]
        if self.cgroup:
            controllers = ", ".join(self.cgroup.get("controllers", []))
            version, kill = self.cgroup["version"], self.cgroup.get("kill")
            lines.append(f"cgroups:     v{version} ({controllers}); kill via {kill}")
        else:
            lines.append("cgroups:     unavailable")
        lines.append("namespaces:  " + ", ".join(f"{k}={v}" for k, v in self.namespaces.items()))
        lines.append(f"seccomp:     {self.seccomp}")
        lines.append(f"pidfd:       {self.pidfd}")
        pool = self.uid_pool
        lines.append(
            f"uid pool:    {pool['first']}-{pool['last']} in {pool['lock_dir']}: "
            f"{pool.get('free', '?')} free"
        )
        if self.strict_ok:
            lines.append("strict mode: available")
        else:
            lines.append("strict mode: UNAVAILABLE")
            lines += [f"  missing: {m}" for m in self.missing]
        return "\n".join(lines)


def _probe_namespaces() -> dict[str, str]:
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _NS_PROBE, json.dumps(NAMESPACES)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        result: dict[str, str] = json.loads(proc.stdout)
        return result
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return dict.fromkeys(NAMESPACES, f"probe failed: {exc}")


def _seccomp_status() -> tuple[str, str | None]:
    from rustbox._sys import build_filter

    try:
        with open("/proc/self/status") as f:
            if not any(line.startswith("Seccomp:") for line in f):
                return (
                    "unsupported by this kernel",
                    "seccomp: the kernel has no seccomp filter support",
                )
        program = build_filter()
    except HostUnsupported as exc:
        return "no syscall table for this machine", "; ".join(exc.missing)
    return f"filter mode available ({len(program) // 8} BPF instructions)", None


def probe_host(
    uid_pool: UidPool | None = None,
    cgroup_mount: str = "/sys/fs/cgroup",
    cgroup_parent: str = "rustbox",
) -> HostReport:
    """Look at everything strict mode needs; never raises for a missing feature."""
    missing: list[str] = []
    root = os.geteuid() == 0
    if not root:
        missing.append("root: rustbox must run as root (euid 0)")
    cgroup: dict[str, Any] | None = None
    try:
        tree = CgroupTree.detect(cgroup_mount, cgroup_parent)
        cgroup = tree.describe()
        tree.check_swap()
    except HostUnsupported as exc:
        missing.extend(exc.missing)
    except OSError as exc:
        missing.append(f"cgroups: {exc}")
    namespaces = _probe_namespaces()
    missing += [f"namespace {name}: {state}" for name, state in namespaces.items() if state != "ok"]
    seccomp, seccomp_missing = _seccomp_status()
    if seccomp_missing:
        missing.append(seccomp_missing)
    try:
        _sys.close_range(0x7FFFFFF0, 0x7FFFFFFF)  # closes nothing; ENOSYS before Linux 5.9
    except OSError as exc:
        missing.append(f"close_range: unavailable ({exc}); Linux >= 5.9 needed")
    try:
        os.close(os.pidfd_open(os.getpid()))
        pidfd = "available"
    except OSError as exc:
        pidfd = f"unavailable: {exc.strerror}"
        missing.append("pidfd: pidfd_open is unavailable (Linux >= 5.3 needed)")
    pool = uid_pool or UidPool()
    pool_info: dict[str, Any] = {
        "first": pool.first,
        "last": pool.first + pool.count - 1,
        "lock_dir": pool.lock_dir,
    }
    try:
        pool_info["in_use"] = len(pool.in_use())
        pool_info["free"] = pool.count - pool_info["in_use"]
    except OSError as exc:
        pool_info["error"] = str(exc)
        if root:
            missing.append(f"uid pool: lock dir {pool.lock_dir}: {exc.strerror}")
    return HostReport(
        root=root,
        kernel=platform.release(),
        machine=platform.machine(),
        cgroup=cgroup,
        namespaces=namespaces,
        seccomp=seccomp,
        pidfd=pidfd,
        uid_pool=pool_info,
        missing=tuple(missing),
    )
