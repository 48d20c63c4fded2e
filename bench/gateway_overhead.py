"""Gateway overhead: streamed chat completions through ``modeldeploy gateway`` vs the same
requests sent straight to the backend, side by side in one run.

The backend is the fake OpenAI engine of the tests (tests/gateway/fake_engine.py: an aiohttp
server that streams ``--chunks`` server-sent events per request with no delay, so what is
measured is HTTP and proxy work, not generation). The gateway runs as its own process with
``--static-routes`` (the same proxy path as in a cluster, without the watches) and its JSON
access log on. For each concurrency C, C async clients send streamed requests for
``--seconds`` to the backend directly, then the same through the gateway.

Printed per C: p50/p99 of the request latency (request to the last byte) and of the time to
the first chunk, both paths; what the gateway adds at p50/p99; throughput (requests/s) and the
ratio gateway/direct; the gateway's CPU seconds per 1,000 requests (utime+stime from /proc)
and its resident memory (now and peak). ``--rounds`` repeats the whole table (default 2).
Client, gateway and backend share this machine's cores: the ratio is that of this machine.

    python bench/gateway_overhead.py                       # 1, 16, 256 streams, 2 rounds
    python bench/gateway_overhead.py --concurrency 1 16 --seconds 3 --rounds 1
    python bench/gateway_overhead.py --chunk-delay 0.02     # events at an engine's token pace
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "gateway"))

from gateway_harness import Process, _spawn, free_port, start_fake_engine  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def memory_mib(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(url: str, concurrency: int, seconds: float, body: bytes) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    firsts: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # warm the connections up, outside the measurement
        await asyncio.gather(*(_one(session, url, body) for _ in range(concurrency)))
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                try:
                    first, total = await _one(session, url, body)
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                firsts.append(first)
                latencies.append(total)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99),
            "ttfb50": pct(firsts, 0.5), "ttfb99": pct(firsts, 0.99)}


async def _one(session: Any, url: str, body: bytes) -> tuple[float, float]:
    started = time.perf_counter()
    first = 0.0
    async with session.post(url, data=body,
                            headers={"Content-Type": "application/json"}) as response:
        if response.status != 200:
            raise_for = await response.text()
            raise RuntimeError(f"{response.status}: {raise_for[:200]}")
        seen = b""
        async for chunk in response.content.iter_any():
            if not first:
                first = time.perf_counter() - started
            seen = (seen + chunk)[-32:]
        if b"[DONE]" not in seen:
            raise RuntimeError("stream ended without [DONE]")
    return first, time.perf_counter() - started


def run_level(backend: Process, gateway: Process, concurrency: int, seconds: float,
              body: bytes) -> dict[str, Any]:
    runner = _runner()
    direct = runner(load(f"{backend.url}/v1/chat/completions", concurrency, seconds, body))
    cpu0 = cpu_seconds(gateway.proc.pid)
    through = runner(load(f"{gateway.url}/v1/chat/completions", concurrency, seconds, body))
    cpu = cpu_seconds(gateway.proc.pid) - cpu0
    rss, peak = memory_mib(gateway.proc.pid)
    return {"concurrency": concurrency, "direct": direct, "gateway": through,
            "added_p50_ms": (through["p50"] - direct["p50"]) * 1000,
            "added_p99_ms": (through["p99"] - direct["p99"]) * 1000,
            "throughput_ratio": through["rps"] / direct["rps"],
            "cpu_s_per_1000": cpu / max(1, through["requests"]) * 1000,
            "rss_mib": rss, "peak_rss_mib": peak}


def _runner() -> Any:
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def print_table(results: list[dict[str, Any]]) -> None:
    head = (f"{'C':>4} {'direct p50':>10} {'gw p50':>8} {'+p50 ms':>8} {'direct p99':>10} "
            f"{'gw p99':>8} {'+p99 ms':>8} {'ttfb50 d/g ms':>14} {'rps direct':>10} "
            f"{'rps gw':>8} {'ratio':>6} {'cpu s/1k':>8} {'rss MiB':>8} {'peak':>6} "
            f"{'errors':>6}")
    print(head)
    for r in results:
        d, g = r["direct"], r["gateway"]
        print(f"{r['concurrency']:>4} {d['p50'] * 1000:>10.2f} {g['p50'] * 1000:>8.2f} "
              f"{r['added_p50_ms']:>8.2f} {d['p99'] * 1000:>10.2f} {g['p99'] * 1000:>8.2f} "
              f"{r['added_p99_ms']:>8.2f} "
              f"{d['ttfb50'] * 1000:>6.2f}/{g['ttfb50'] * 1000:<7.2f} "
              f"{d['rps']:>10.0f} {g['rps']:>8.0f} {r['throughput_ratio']:>6.2f} "
              f"{r['cpu_s_per_1000']:>8.2f} {r['rss_mib']:>8.1f} {r['peak_rss_mib']:>6.1f} "
              f"{d['errors'] + g['errors']:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--seconds", type=float, default=5.0, help="per level and path")
    parser.add_argument("--chunks", type=int, default=8, help="events per streamed answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0,
                        help="seconds the backend waits before each event (0: pure overhead; "
                             "e.g. 0.02 for an engine's token pace)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    body = json.dumps({"model": "fake", "stream": True, "chunk_delay": args.chunk_delay,
                       "messages": [{"role": "user", "content": "hello " * 20}]}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        backend = start_fake_engine(workdir, "fake", "a", chunks=args.chunks)
        routes = workdir / "routes.yaml"
        routes.write_text(json.dumps({"models": [
            {"name": "fake", "endpoints": [f"127.0.0.1:{backend.port}"]}]}))
        port = free_port()
        gateway = _spawn("gateway", [
            sys.executable, "-m", "modeldeploy.cli", "gateway", "--host", "127.0.0.1",
            "--port", str(port), "--metrics-port", "0", "--static-routes", str(routes)],
            port, workdir)
        everything = []
        try:
            gateway.wait_http("/readyz")
            for round_no in range(1, args.rounds + 1):
                print(f"\nround {round_no}: {args.seconds:g}s per level and path, "
                      f"{args.chunks} events per stream {args.chunk_delay * 1000:g} ms apart, "
                      f"{os.cpu_count()} CPUs shared by client, gateway and backend")
                results = [run_level(backend, gateway, c, args.seconds, body)
                           for c in args.concurrency]
                print_table(results)
                everything.append(results)
        finally:
            gateway.stop()
            backend.stop()
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2))


if __name__ == "__main__":
    main()
