"""A short tour of rustbox: a normal run, limit verdicts, and contained attacks.

Run it as root with ``make demo`` (or ``python examples/demo.py [asyncio|trio]``).
"""

from __future__ import annotations

import sys

import anyio

import rustbox

PY = "/usr/bin/python3"

CASES: list[tuple[str, str, rustbox.Limits, bytes]] = [
    (
        "a normal run: reverse a line from stdin",
        "print(input()[::-1])",
        rustbox.Limits(),
        b"hello, sandbox\n",
    ),
    (
        "cpu limit: an endless loop under cpu_time=0.5s",
        "while True: pass",
        rustbox.Limits(cpu_time=0.5, wall_time=3),
        b"",
    ),
    (
        "memory limit: 512 MiB under memory=64M",
        "x = bytearray(512 << 20)",
        rustbox.Limits(memory="64M"),
        b"",
    ),
    (
        "output cap: 50 MB to stdout under stdout_max=1M",
        "import sys\nwhile True: sys.stdout.write('x' * 65536)",
        rustbox.Limits(stdout_max="1M"),
        b"",
    ),
    (
        "attack: a fork bomb under processes=16",
        "import os\nwhile True:\n    os.fork()",
        rustbox.Limits(processes=16, wall_time=2),
        b"",
    ),
    (
        "attack: escape attempts (read /etc/shadow, mount, ptrace, reach the network)",
        """
import ctypes, errno, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, fn):
    try:
        fn()
        print(f"{name}: SUCCEEDED (!)")
    except OSError as exc:
        print(f"{name}: denied ({errno.errorcode.get(exc.errno, exc.errno)})")
def mount():
    if libc.mount(b"none", b"/box", b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")
def ptrace():
    if libc.ptrace(0, 0, None, None) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")
def network():
    socket.create_connection(("192.0.2.1", 80), timeout=1)
attempt("read /etc/shadow", lambda: open("/etc/shadow").read())
attempt("write /usr/bin/x", lambda: open("/usr/bin/x", "w"))
attempt("mount tmpfs", mount)
attempt("ptrace", ptrace)
attempt("connect out", network)
print("uid", os.getuid(), "hostname", socket.gethostname())
""",
        rustbox.Limits(),
        b"",
    ),
]


def show(title: str, result: rustbox.Result) -> None:
    verdict = result.status.value + (f" ({result.tle})" if result.tle else "")
    print(f"\n== {title}")
    print(
        f"   verdict {verdict:10} exit={result.exit_code} signal={result.signal} "
        f"cpu={result.cpu_time:.3f}s wall={result.wall_time:.3f}s "
        f"peak={result.memory_peak / 2**20:.1f}MiB"
    )
    out = result.stdout.decode(errors="replace").strip()
    if out:
        shown = out if len(out) < 400 else out[:60] + f"... ({len(result.stdout)} bytes kept)"
        print("   stdout:", shown.replace("\n", "\n           "))
    for action in result.evidence.actions:
        print(f"   {action.actor} at {action.at:.3f}s: {action.action} ({action.reason})")
    cgroup = result.evidence.cgroup
    if cgroup is not None and (cgroup.oom_kills or cgroup.pids_limit_hits):
        print(f"   cgroup: oom_kills={cgroup.oom_kills} pids_limit_hits={cgroup.pids_limit_hits}")


async def main() -> None:
    async with rustbox.Supervisor() as sv:
        for title, code, limits, stdin in CASES:
            result = await sv.run([PY, "-c", code], limits=limits, stdin=stdin)
            show(title, result)
        result = await sv.run(["/bin/true"])
    print("\nevidence of the last run (controls applied):")
    for control in result.evidence.controls:
        print("  -", control)
    print("setup timings (ms):", ", ".join(f"{s}={ms:.2f}" for s, ms in result.evidence.setup))


if __name__ == "__main__":
    try:
        anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
    except rustbox.HostUnsupported as exc:
        sys.exit(f"rustbox cannot run here: {exc}\n(try: rustbox check)")
