"""Fan-out benchmark, run by hand: the engine's SSE streams against a raw asyncio ceiling.

    python bench/fanout_bench.py [--clients 1000] [--burst 200] [--rate-seconds 10] [--rounds 3] [--loop uvloop]

Both servers (the engine with bench/fanout_scripts/, and bench/raw_sse_server.py, same loop) run side
by side and are measured in turn, round after round (`--rounds`, medians reported with every round):
- throughput: `--clients` readers, one publish of `--burst` messages of 200 bytes; delivered events/s;
- latency: the same readers, 20 messages/s for `--rate-seconds`; p50/p99 publish-to-receive;
then, one server at a time:
- memory: server RSS growth per idle reader, at 5,000 readers;
- capacity: 10,000 readers at once, all served (engine: checked on /_engine/streams too).
The client is bench/sse_client.c (compiled here with gcc): one epoll thread; its CPU share is printed
so it can be seen not to be the bottleneck. Publish times have millisecond resolution (Date.now()).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import HERE, ROOT, free_port, get, machine, publish_paced, rss_kb, wait_up


def build_client() -> Path:
    out = Path(tempfile.gettempdir()) / "rtengine_sse_client"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(HERE / "sse_client.c")], check=True)
    return out


class Client:
    """The C client as a subprocess: READY once every reader is attached, then one JSON line."""

    def __init__(self, exe: Path, port: int, n: int, expected: int, seconds: float) -> None:
        self.proc = subprocess.Popen([str(exe), "127.0.0.1", str(port), "/events", str(n), str(expected),
                                      str(seconds)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"client did not get ready: {line!r}")
        self.ready = int(line.split()[1])

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=300)
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> dict[str, Any]:
        self.proc.terminate()
        self.proc.wait()
        return {}


def start_server(kind: str, loop: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ENGINE_SERVER_LOOP": loop, "ENGINE_LOGS_LEVEL": "warning",
           "ENGINE_STREAMS_MAX_CONNECTIONS": "20000", "ENGINE_STREAMS_MAX_BUFFER_BYTES": str(64 * 1024 * 1024)}
    if kind == "engine":
        cmd = [sys.executable, "-m", "engine", "--port", str(port), "--scripts", str(HERE / "fanout_scripts")]
    else:
        cmd = [sys.executable, str(HERE / "raw_sse_server.py"), str(port), loop]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_up(f"http://127.0.0.1:{port}/publish?n=1")
    return server, port


def throughput(exe: Path, port: int, a: argparse.Namespace) -> dict[str, Any]:
    c = Client(exe, port, a.clients, a.clients * a.burst, 120)
    t0 = time.monotonic()
    get(f"http://127.0.0.1:{port}/publish?n={a.burst}&size=200")
    r = c.result()
    return {"events": r["events"], "events_per_s": round(r["events"] / (r["receive_span_ms"] / 1000), 0),
            "publish_to_last_receive_s": round(time.monotonic() - t0, 3),
            "client_cpu_share": round(r["cpu_seconds"] / r["wall_seconds"], 2)}


def latency(exe: Path, port: int, a: argparse.Namespace) -> dict[str, Any]:
    messages = int(20 * a.rate_seconds)
    c = Client(exe, port, a.clients, a.clients * messages, a.rate_seconds + 30)
    publish_paced(f"http://127.0.0.1:{port}", messages)
    r = c.result()
    return {"events": r["events"], "expected": a.clients * messages, "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "arrive_p50_ms": r["arrive_p50_ms"], "arrive_p99_ms": r["arrive_p99_ms"],
            "client_cpu_share": round(r["cpu_seconds"] / r["wall_seconds"], 2)}


def memory_and_capacity(kind: str, server: subprocess.Popen[bytes], exe: Path, port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    before = rss_kb(server.pid)
    c = Client(exe, port, 5000, 0, 600)
    time.sleep(1.0)  # let the server settle its buffers before reading its memory
    after = rss_kb(server.pid)
    out: dict[str, Any] = {"memory": {"readers": c.ready, "rss_before_kb": before, "rss_after_kb": after,
                                      "kb_per_idle_reader": round((after - before) / 5000, 2)}}
    c.stop()
    time.sleep(1.0)
    c = Client(exe, port, 10000, 0, 600)
    attached = c.ready
    if kind == "engine":
        attached = json.loads(get(base + "/_engine/streams"))["connections"]
    get(f"{base}/publish?n=1&size=200")
    out["capacity"] = {"readers_ready": c.ready, "server_counted": attached}
    c.stop()
    return out


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds, and every round's figures as they were."""
    out: dict[str, Any] = {k: sorted(r[k] for r in rounds)[len(rounds) // 2] for k in rounds[0]}
    out["rounds"] = rounds
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--rate-seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the throughput and latency cases")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    a = ap.parse_args()
    exe = build_client()
    kinds = ("engine", "raw_asyncio")
    servers = {kind: start_server(kind, a.loop) for kind in kinds}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {k: {"throughput": [], "latency_20_per_s": []} for k in kinds}
    results: dict[str, dict[str, Any]] = {}
    try:
        # Round after round, one server then the other: this machine's speed drifts within minutes.
        for case, measure in (("throughput", throughput), ("latency_20_per_s", latency)):
            for _ in range(a.rounds):
                for kind in kinds:
                    runs[kind][case].append(measure(exe, servers[kind][1], a))
        for kind in kinds:
            results[kind] = {case: medians(rounds) for case, rounds in runs[kind].items()}
            results[kind].update(memory_and_capacity(kind, servers[kind][0], exe, servers[kind][1]))
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait()
    e, r = results["engine"], results["raw_asyncio"]
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "loop": a.loop, "clients": a.clients, "burst": a.burst,
        "rate_seconds": a.rate_seconds, "rounds": a.rounds,
        "machine": machine(),
        **results,
        "engine_vs_ceiling": round(e["throughput"]["events_per_s"] / r["throughput"]["events_per_s"], 3),
        "p50_engine_minus_ceiling_ms": round(e["latency_20_per_s"]["p50_ms"] - r["latency_20_per_s"]["p50_ms"], 3),
        "p99_engine_minus_ceiling_ms": round(e["latency_20_per_s"]["p99_ms"] - r["latency_20_per_s"]["p99_ms"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
