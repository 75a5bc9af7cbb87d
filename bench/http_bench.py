"""HTTP benchmark, run by hand: a JS GET route against a plain aiohttp handler, same load tool, same run.

    python bench/http_bench.py [--seconds 10] [--connections 50] [--rounds 5]

Needs `wrk` (Debian: apt-get install wrk). Each server is its own process on loopback; wrk runs one
thread. The servers run side by side and are measured in turn, round after round: the engine as it
runs by default (plain GETs of JS routes served below aiohttp), the engine with
`server.lean_routes: false` (every request through aiohttp), and the plain aiohttp handler. The
medians of requests/s and p50/p99 latency are printed for each, with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

from bench_common import HERE, ROOT, free_port, machine, wait_up


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"), "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sock_errors.group(1) if sock_errors else ""}


def start(
    cmd: list[str], url: str, connections: int, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_up(url)
    wrk(url, 2, connections)  # warm-up
    return proc


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in ("rps", "p50_ms", "p99_ms"):
        values = sorted(r[key] for r in runs)
        out[key] = values[len(values) // 2]
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    out["runs_rps"] = [r["rps"] for r in runs]  # type: ignore[assignment]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop of both servers")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    p1, p2, p3 = free_port(), free_port(), free_port()
    js_url, plain_url = f"http://127.0.0.1:{p1}/bench", f"http://127.0.0.1:{p2}/bench"
    aiohttp_js_url = f"http://127.0.0.1:{p3}/bench"
    engine = [sys.executable, "-m", "engine", "--no-watch", "--scripts", str(HERE / "scripts"), "--port"]
    servers = [
        start([*engine, str(p1)], js_url, a.connections, {"ENGINE_SERVER_LOOP": a.loop}),
        start([*engine, str(p3)], aiohttp_js_url, a.connections,
              {"ENGINE_SERVER_LOOP": a.loop, "ENGINE_SERVER_LEAN_ROUTES": "false"}),
        start([sys.executable, str(HERE / "plain_server.py"), str(p2), a.loop], plain_url, a.connections),
    ]
    js_runs, aiohttp_js_runs, plain_runs = [], [], []
    try:
        # In turn, round after round: this machine's speed drifts between runs.
        for _ in range(a.rounds):
            js_runs.append(wrk(js_url, a.seconds, a.connections))
            aiohttp_js_runs.append(wrk(aiohttp_js_url, a.seconds, a.connections))
            plain_runs.append(wrk(plain_url, a.seconds, a.connections))
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait()
    js, aiohttp_js, plain = median(js_runs), median(aiohttp_js_runs), median(plain_runs)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "connections": a.connections, "seconds_per_run": a.seconds, "rounds": a.rounds, "loop": a.loop,
        "js_route": js, "js_route_through_aiohttp": aiohttp_js, "plain_aiohttp": plain,
        "ratio": round(js["rps"] / plain["rps"], 3),
        # Each round's JS route against the plain handler measured right after it: the machine's
        # speed drifts less within a round than across the run.
        "ratio_per_round_median": sorted(round(j["rps"] / p["rps"], 3) for j, p in zip(js_runs, plain_runs,
                                                                                      strict=True))[a.rounds // 2],
        "ratio_through_aiohttp": round(aiohttp_js["rps"] / plain["rps"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
