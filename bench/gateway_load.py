"""Load and measurement for the gateway benchmark: ``wrk`` runs parsed into rows,
interleaved passes with medians, streaming clients, and CPU/RSS readings of processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gateway_children import BODY, KEY

PYTHON = sys.executable
PROXY_CORE, LOAD_CORE = "0", "1"
SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = 32  # per proxy process, for req/s
Row = dict[str, float]

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(
    url: str, connections: int, seconds: int, script: Path, *, threads: int = 1, cores: str = ""
) -> dict[str, float]:
    output = subprocess.run(
        ["taskset", "-c", cores or LOAD_CORE, "wrk", f"-t{threads}", f"-c{connections}",
         f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M):
        result[f"p{pct}"] = float(value) * UNITS[unit]
    result["requests"] = float(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        output)  # fmt: skip
    result["errors"] = sum(float(n) for match in (errors, sockets) if match for n in match.groups())
    return result


PASSES = int(os.environ.get("BENCH_PASSES", "3"))


def measure_once(url: str, script: Path, pid: int | None, seconds: int) -> Row:
    """One pass: req/s at ``CONNECTIONS`` connections, latency at 1; with ``pid``, the
    share of a core that the process (and its children) used under load: below ~100% on
    a proxy that is the bottleneck, something else on the machine took its core."""
    before, start = tree_cpu_seconds(pid) if pid else 0.0, time.perf_counter()
    loaded = wrk(url, CONNECTIONS, seconds, script)
    cpu = (tree_cpu_seconds(pid) - before) / (time.perf_counter() - start) if pid else 0.0
    single = wrk(url, 1, max(2, seconds // 2), script)
    return {"rps": loaded["rps"], "errors": loaded["errors"] + single["errors"],
            "p50": single["p50"], "p99": single["p99"], "cpu": cpu}  # fmt: skip


def median_row(passes: list[Row]) -> Row:
    row = {key: statistics.median(p[key] for p in passes) for key in passes[0]}
    row["errors"] = sum(p["errors"] for p in passes)
    row["rps_min"] = min(p["rps"] for p in passes)
    row["rps_max"] = max(p["rps"] for p in passes)
    return row


def print_row(name: str, row: Row, with_cpu: bool) -> None:
    usage = f"CPU {row['cpu']:4.0%}" if with_cpu else " " * 8
    spread = f"({row['rps_min']:,.0f}-{row['rps_max']:,.0f})" if "rps_min" in row else ""
    print(f"  {name:<34} {row['rps']:>9,.0f} req/s {spread:<15} {usage}   "
          f"p50 {row['p50']:7.3f} ms   p99 {row['p99']:7.3f} ms   errors {row['errors']:.0f}",
          flush=True)  # fmt: skip


def measure(targets: dict[str, tuple[str, str, int | None]], script: Path) -> dict[str, Row]:
    """Each target (name, url, pid) measured in ``PASSES`` interleaved passes of
    ``SECONDS / PASSES`` each, medians reported: a drift of the machine's speed during
    the run (other tenants of the host) then hits every proxy alike."""
    for _, url, _ in targets.values():
        wrk(url, CONNECTIONS, 2, script)  # warm up connections and caches
    seconds = max(2, SECONDS // PASSES)
    passes: dict[str, list[Row]] = {key: [] for key in targets}
    for _ in range(PASSES):
        for key, (_, url, pid) in targets.items():
            passes[key].append(measure_once(url, script, pid, seconds))
    results = {}
    for key, (name, _, pid) in targets.items():
        results[key] = median_row(passes[key])
        print_row(name, results[key], pid is not None)
    return results


async def first_tokens(url: str, n: int) -> list[float]:
    """Milliseconds to the first streamed event, for ``n`` sequential requests."""
    from maasbase.gateway.upstream import PooledUpstreamClient

    client = PooledUpstreamClient()
    body = json.dumps({**json.loads(BODY), "stream": True, "bench_chunks": 4}).encode()
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {KEY}".encode())]
    times = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            response = await client.request(b"POST", url, headers, body)
            await response.next_chunk()
            times.append((time.perf_counter() - start) * 1000)
            while await response.next_chunk():
                pass
            response.release()
    finally:
        await client.aclose()
    return times


async def many_streams(url: str, count: int) -> tuple[int, int]:
    """``count`` concurrent streams of 20 events 0.1 s apart: (completed, failed)."""
    from maasbase.gateway.upstream import PooledUpstreamClient

    client = PooledUpstreamClient(max_idle_per_origin=count)
    body = json.dumps({**json.loads(BODY), "stream": True, "bench_chunks": 20,
                       "bench_delay": 0.1}).encode()  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {KEY}".encode())]

    async def one() -> bool:
        response = await client.request(b"POST", url, headers, body)
        data = b""
        while chunk := await response.next_chunk():
            data += chunk
        response.release()
        return response.status == 200 and data.endswith(b"data: [DONE]\n\n")

    try:
        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    finally:
        await client.aclose()
    done = sum(1 for r in results if r is True)
    return done, count - done


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of its children (nginx's worker) so far."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(cpu_seconds(each) for each in [pid, *map(int, children)])


def is_python(pid: int) -> bool:
    """Whether ``pid`` runs this interpreter (not the ``taskset`` that started it)."""
    return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(PYTHON)


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port`` (one per SO_REUSEPORT process)."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == local and row.split()[3] == "0A")


def wait_listeners(port: int, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while listeners(port) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{listeners(port)} of {count} processes listen on port {port}")
        time.sleep(0.05)
