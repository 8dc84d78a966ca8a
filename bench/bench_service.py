"""Service throughput: ``print(42)`` in Python via POST /api/submit?wait=true.

Starts ``rustbox serve`` as a subprocess on 127.0.0.1 (a fresh SQLite file,
no rate limit), then 8 concurrent clients (one httpx.AsyncClient, keep-alive)
submit for ~10 s. Every response is checked: 200, verdict AC, stdout "42\\n".

    .venv/bin/python bench/bench_service.py [--workers N] [--clients 8] [--seconds 10]
        [--backend asyncio|trio]                                        (root; ~15 s)

Target on a 2-core machine: 150 requests/s with p50 under 40 ms.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import anyio
import httpx

BODY = {"language": "python", "code": "print(42)"}


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


async def run(url: str, clients: int, seconds: float) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    failures: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for _ in range(clients * 2):  # warm-up: connections, launcher, page cache
            await client.post("/api/submit?wait=true", json=BODY)
        deadline = time.perf_counter() + seconds

        async def one_client() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                response = await client.post("/api/submit?wait=true", json=BODY)
                latencies.append(time.perf_counter() - t0)
                data = response.json() if response.status_code in (200, 408) else {}
                if (
                    response.status_code != 200
                    or data.get("verdict") != "AC"
                    or data.get("stdout") != "42\n"
                ):
                    failures.append(f"{response.status_code} {response.text[:200]}")

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(one_client)
        elapsed = time.perf_counter() - started
    return latencies, failures, elapsed


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
            latencies, failures, elapsed = anyio.run(run, url, args.clients, args.seconds)
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
    print(
        f"target: >= 150 req/s, p50 < 40 ms: "
        f"{'met' if rate >= 150 and p50 < 40 else 'NOT met'}"
    )
    if failures:
        print("first failures:", *failures[:5], sep="\n  ")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
