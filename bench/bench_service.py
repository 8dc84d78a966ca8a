"""Service throughput: ``print(42)`` in Python via POST /api/submit?wait=true.

Starts ``rustbox serve`` as a subprocess on 127.0.0.1 (a fresh SQLite file,
no rate limit), then 8 concurrent clients submit for ~10 s, each on its own
keep-alive HTTP/1.1 connection. Every response is checked: 200, verdict AC,
stdout "42\\n".

The clients speak HTTP/1.1 over asyncio streams themselves (a request line,
Content-Length, the JSON body; the status line, the headers, a Content-Length
body): httpx cost ~1.3 ms of cpu per request, half as much as the whole
server process, and on 2 cores that cpu came out of what is measured; this
client costs ~0.2 ms. The cpu split printed after the figures shows where
each request's cpu goes: this process (the clients), the server, its
descendants (launcher, sandbox proxies, payloads; the ones that ended
included), the rest of the machine, and the whole machine (/proc/stat).

By Little's law, 8 clients that each wait for their answer see a median of
about 8 / throughput: p50 < 40 ms needs ~200 requests/s, which a 2-core
machine does not have the cpu for when a sandboxed ``python3 -S`` alone
takes ~10 ms of it.

    .venv/bin/python bench/bench_service.py [--workers N] [--clients 8] [--seconds 10]
        [--backend asyncio|trio]                                        (root; ~15 s)

Target on a 2-core machine: 150 requests/s with p50 under 40 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

BODY = json.dumps({"language": "python", "code": "print(42)"}).encode()
PATH = "/api/submit?wait=true"
TICK = os.sysconf("SC_CLK_TCK")


def start_server(workers: int, backend: str, db: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "rustbox", "serve", "--host", "127.0.0.1", "--port", "0",
            "--db", db, "--workers", str(workers), "--rate-limit", "0",
            "--backend", backend, "--log-level", "warning",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    url = line.split("listening on ", 1)[1].split()[0]
    return proc, url


# -- cpu accounting ----------------------------------------------------------------------


def machine_busy() -> float:
    """Seconds of cpu the whole machine spent busy (not idle, not waiting for I/O)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


def tree_cpu(root: int) -> tuple[float, float]:
    """Seconds of cpu of ``root`` itself, and of it with its descendants (reaped ones too).

    Each live process counts its own time plus its reaped children's
    (cutime/cstime), so a sandbox that ran and was waited for stays counted.
    """
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, cpu seconds)
    own = 0.0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                raw = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces and ")"
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        stats[int(name)] = (ppid, (utime + stime + cutime + cstime) / TICK)
        if int(name) == root:
            own = (utime + stime) / TICK
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return own, total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_snapshot(server: int) -> tuple[float, ...]:
    """(this process, the server, the server's tree, the machine), in cpu seconds so far."""
    return own_cpu(), *tree_cpu(server), machine_busy()


# -- the client --------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.request = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self) -> tuple[int, bytes]:
        """Send the request, read the whole response: (status, body)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].split(b"\r\n")
        version, code, *_ = status_line.split(b" ", 2)
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get(b"content-length")
        if length is None:  # the server answers JSON with a length; anything else is a bug
            raise ValueError(f"no Content-Length in the response: {head!r}")
        body = await self.reader.readexactly(int(length))
        if headers.get(b"connection", b"").lower() == b"close" or version != b"HTTP/1.1":
            self.close()
        return int(code), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def failure(status: int, body: bytes) -> str | None:
    """Why a response is not the expected one, or None."""
    try:
        data = json.loads(body) if status in (200, 408) else {}
    except ValueError:
        data = {}
    if status != 200 or data.get("verdict") != "AC" or data.get("stdout") != "42\n":
        return f"{status} {body[:200]!r}"
    return None


async def run(
    url: str, clients: int, seconds: float, server: int
) -> tuple[list[float], list[str], float, list[float]]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connections = [Connection(parts.hostname, parts.port) for _ in range(clients)]
    latencies: list[float] = []
    failures: list[str] = []
    for _ in range(2):  # warm-up: connections, launcher, page cache
        for conn in connections:
            await conn.post()

    async def one_client(conn: Connection, deadline: float) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                status, body = await conn.post()
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                latencies.append(time.perf_counter() - t0)
                failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                continue
            latencies.append(time.perf_counter() - t0)
            why = failure(status, body)
            if why is not None:
                failures.append(why)

    before = cpu_snapshot(server)
    started = time.perf_counter()
    await asyncio.gather(*(one_client(conn, started + seconds) for conn in connections))
    elapsed = time.perf_counter() - started
    after = cpu_snapshot(server)
    for conn in connections:
        conn.close()
    used = [b - a for a, b in zip(before, after, strict=True)]
    return latencies, failures, elapsed, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8, help="rustbox serve --workers")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(args.workers, args.backend, os.path.join(tmp, "bench.db"))
        try:
            latencies, failures, elapsed, used = asyncio.run(
                run(url, args.clients, args.seconds, proc.pid)
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[int(len(ordered) * 0.95) - 1] * 1000
    rate = len(latencies) / elapsed
    print(
        f"service benchmark: print(42) in python via POST /api/submit?wait=true, "
        f"{args.clients} clients, server --workers {args.workers} --backend {args.backend}, "
        f"{os.cpu_count()} cpus"
    )
    print(f"{'requests':>9} {'req/s':>7} {'p50':>8} {'p95':>8} {'failed':>7}")
    print(f"{len(latencies):9d} {rate:7.1f} {p50:6.1f}ms {p95:6.1f}ms {len(failures):7d}")
    client, server, tree, machine = (1000 * u / max(1, len(latencies)) for u in used)
    print(
        f"cpu per request: client {client:.2f} ms, server {server:.2f} ms, "
        f"its sandboxes {tree - server:.2f} ms, other {machine - client - tree:.2f} ms; "
        f"machine {machine:.2f} ms ({100 * used[3] / elapsed / (os.cpu_count() or 1):.0f}% busy)"
    )
    print(
        f"target: >= 150 req/s, p50 < 40 ms: "
        f"{'met' if rate >= 150 and p50 < 40 else 'NOT met'}"
    )
    if failures:
        print("first failures:", *failures[:5], sep="\n  ")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
