"""Streaming-response benchmark, run by hand: a JS `async function*` route against a plain aiohttp handler.

    python bench/stream_bench.py [--rounds 3] [--budget-seconds 165] [--one-items 200000] [--many 100]
                                 [--many-items 5000] [--loop uvloop] [--profile SECONDS]

Items per second of NDJSON lines of about 40 bytes ({"i":123456,"v":"xxxxxxxxxxxxxxxxxxxx"}), in one run
with one client, from:
- the engine (`python -m engine` on bench/stream_scripts/, `/items?n=N`: an async generator yielding N
  objects, each written as one line, the next asked for only as the client reads);
- a plain aiohttp handler (bench/stream_plain_server.py) writing the same lines from a Python async
  generator, one `await response.write(line)` per item;
both on the same event loop (uvloop by default), each in its own process on 127.0.0.1.

Cases: one client reading `--one-items` (200,000); `--many` (100) concurrent clients each reading
`--many-items` (5,000), total items/s. The client is bench/stream_client.c (compiled here with gcc):
one epoll thread, 256 KiB reads, chunked decoding, non-empty lines counted; every connection must
get exactly N lines and a proper end or the round is an error. Its CPU share and the server's (all
its threads; for the engine also the event-loop thread alone) are printed. The two servers are
measured alternately, round after round, and medians reported (this machine's speed drifts); a
further round starts only if it fits in `--budget-seconds` (at 2026-12 engine speeds that is one).
`--profile SECONDS` then samples the engine with py-spy (`--gil`: whichever thread holds the
interpreter lock) during more, shorter many-clients runs (not measured) and prints the threads'
shares and their top frames. Every process started here is ended on
the way out, on failure too.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import HERE, ROOT, free_port, machine, wait_up

TICK = os.sysconf("SC_CLK_TCK")


def build_client() -> Path:
    out = Path(tempfile.gettempdir()) / "rtengine_stream_client"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(HERE / "stream_client.c")], check=True)
    return out


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def versions() -> dict[str, str]:
    from importlib.metadata import version
    out = {}
    for name in ("aiohttp", "uvloop", "quickjs-ng", "quickjs"):
        with contextlib.suppress(Exception):
            out[name] = version(name)
    return out


class Server:
    def __init__(self, kind: str, loop: str, logdir: Path) -> None:
        self.kind, self.port = kind, free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ENGINE_SERVER_LOOP": loop, "ENGINE_LOGS_LEVEL": "warning"}
        if kind == "engine":
            cmd = [sys.executable, "-m", "engine", "--port", str(self.port), "--scripts", str(HERE / "stream_scripts")]
        else:
            cmd = [sys.executable, str(HERE / "stream_plain_server.py"), str(self.port), loop]
        self.log = logdir / f"{kind}.log"
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=f)
        wait_up(f"http://127.0.0.1:{self.port}/ping")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_client(exe: Path, server: Server, conns: int, per_conn: int, timeout: float) -> dict[str, Any]:
    pid = server.proc.pid
    cpu0, loop0 = cpu_seconds(pid), cpu_seconds(pid, pid)
    proc = subprocess.Popen([str(exe), "127.0.0.1", str(server.port), f"/items?n={per_conn}", str(conns),
                             str(per_conn), str(timeout)], stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout + 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cpu1, loop1 = cpu_seconds(pid), cpu_seconds(pid, pid)
    r = json.loads(out.strip().splitlines()[-1])
    wall = r["wall_seconds"]
    res = {
        "items_per_s": round(r["items"] / wall) if wall else 0, "items": r["items"],
        "complete": r["complete"], "errors": r["errors"], "wall_s": round(wall, 3),
        "slowest_conn_s": r["slowest_s"], "fastest_conn_s": r["fastest_s"],
        "client_cpu_share": round(r["cpu_seconds"] / wall, 2) if wall else None,
        "server_cpu_share": round((cpu1 - cpu0) / wall, 2) if wall else None,
    }
    if server.kind == "engine":
        res["server_loop_thread_cpu_share"] = round((loop1 - loop0) / wall, 2) if wall else None
    if r["errors"] or r["timed_out"] or r["complete"] != conns:
        res["error"] = (f"{r['complete']}/{conns} connections complete, {r['errors']} errors, "
                        f"timed out: {r['timed_out']}")
    return res


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> Any:
        values = sorted(r[key] for r in runs if r.get(key) is not None)
        return values[len(values) // 2] if values else None
    out = {k: med(k) for k in ("items_per_s", "wall_s", "client_cpu_share", "server_cpu_share",
                               "server_loop_thread_cpu_share") if med(k) is not None}
    out["rounds_items_per_s"] = [r["items_per_s"] for r in runs]
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        out["errors"] = errors
    return out


def profile(exe: Path, server: Server, a: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    """py-spy on the engine during short many-clients runs: GIL samples by thread, the top frames."""
    if not shutil.which("py-spy"):
        return {"skipped": "py-spy not installed"}
    raw = logdir / "engine.pyspy.txt"
    rate, seconds = 100, int(a.profile)
    # --gil: only the thread holding the interpreter lock is sampled, so the shares say what the
    # serialized resource (the GIL both the loop and the script thread need) is spent on.
    spy = subprocess.Popen(["py-spy", "record", "-p", str(server.proc.pid), "-d", str(seconds), "-r", str(rate),
                            "-f", "raw", "--threads", "--gil", "-o", str(raw)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # py-spy attaching
        t_end = time.monotonic() + seconds - 1.5
        runs = 0
        while time.monotonic() < t_end:
            run_client(exe, server, a.many, 300, a.case_timeout)  # short runs: each ends soon after py-spy does
            runs += 1
        _, err = spy.communicate(timeout=seconds + 30)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if not raw.exists():
        return {"skipped": f"py-spy wrote nothing: {err.strip()[-300:]}"}
    threads: collections.Counter[str] = collections.Counter()
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0]
        total += n
        threads[thread] += n
        leaves[thread][frames[-1]] += n
        for f in set(frames[1:]):
            inclusive[thread][f] += n
    return {
        "seconds": seconds, "rate_hz": rate, "mode": "py-spy --gil (samples of the GIL holder only)",
        "client_runs": runs, "samples": total, "gil_held_share_of_wall": round(total / (rate * seconds), 2),
        "raw_file": str(raw),
        "threads": {t: {"samples": n, "share": round(n / total, 3),
                        "top_leaf": [[f, round(c / n, 3)] for f, c in leaves[t].most_common(12)],
                        "top_inclusive": [[f, round(c / n, 3)] for f, c in inclusive[t].most_common(25)]}
                    for t, n in threads.most_common(4)},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one-items", type=int, default=200_000, help="items the single client reads")
    ap.add_argument("--many", type=int, default=100, help="concurrent clients in the second case")
    ap.add_argument("--many-items", type=int, default=5_000, help="items each of those reads")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop of both servers")
    ap.add_argument("--case-timeout", type=float, default=120, help="seconds one client run may take")
    ap.add_argument("--budget-seconds", type=float, default=165,
                    help="no further round starts unless it would end (with --profile) within this")
    ap.add_argument("--profile", type=float, default=0, help="then py-spy the engine for this many seconds")
    a = ap.parse_args()
    if not (1 <= a.many <= 1000 and a.one_items <= 10_000_000 and a.many_items <= 1_000_000 and a.rounds <= 20):
        raise SystemExit("bounded: --many 1..1000, --one-items <= 10M, --many-items <= 1M, --rounds <= 20")
    exe = build_client()
    logdir = Path(tempfile.mkdtemp(prefix="rtengine_stream_bench_"))
    servers: dict[str, Server] = {}
    cases = {"one_client": (1, a.one_items), f"{a.many}_clients": (a.many, a.many_items)}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c: {"engine": [], "plain_aiohttp": []} for c in cases}
    started, round_s = time.monotonic(), 0.0
    result: dict[str, Any] = {}
    try:
        servers["engine"] = Server("engine", a.loop, logdir)
        servers["plain_aiohttp"] = Server("plain", a.loop, logdir)
        for s in servers.values():  # warm-up: imports, first calls, the allocator
            run_client(exe, s, 1, 5_000, a.case_timeout)
            run_client(exe, s, 10, 500, a.case_timeout)
        # Alternate the two, case after case and round after round (first one, then the other first),
        # while another round fits in the time budget (at least one).
        for rnd in range(a.rounds):
            if rnd and time.monotonic() + round_s + a.profile > started + a.budget_seconds:
                break
            round_start = time.monotonic()
            order = ["engine", "plain_aiohttp"] if rnd % 2 == 0 else ["plain_aiohttp", "engine"]
            for case, (conns, per) in cases.items():
                for kind in order:
                    runs[case][kind].append(run_client(exe, servers[kind], conns, per, a.case_timeout))
            round_s = time.monotonic() - round_start
        measured = time.monotonic() - started
        if a.profile > 0:
            result["engine_profile"] = profile(exe, servers["engine"], a, logdir)
    finally:
        for s in servers.values():
            s.stop()
    summary = {case: {kind: median_of(r) for kind, r in by.items()} for case, by in runs.items()}
    for case in summary:
        e, p = summary[case]["engine"]["items_per_s"], summary[case]["plain_aiohttp"]["items_per_s"]
        summary[case]["ratio_engine_to_plain"] = round(e / p, 3) if p else None
        summary[case]["per_round_ratios"] = [
            round(x["items_per_s"] / y["items_per_s"], 3) if y["items_per_s"] else None
            for x, y in zip(runs[case]["engine"], runs[case]["plain_aiohttp"], strict=False)]
    many = f"{a.many}_clients"
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(), "versions": versions(),
        "loop": a.loop, "rounds": len(runs["one_client"]["engine"]), "line_bytes": 40,
        "client": "bench/stream_client.c (C, epoll, 1 thread)",
        "servers": {"engine": "python -m engine, bench/stream_scripts/stream.js (async function*)",
                    "plain_aiohttp": "bench/stream_plain_server.py (async generator, await response.write per item)"},
        "cases": {"one_client": {"connections": 1, "items_per_connection": a.one_items},
                  many: {"connections": a.many, "items_per_connection": a.many_items}},
        "results": summary,
        "target": {f"engine_vs_plain_{many}": ">= 0.5 (the issue's, for 100 clients)",
                   "met": (summary[many]["ratio_engine_to_plain"] or 0) >= 0.5},
        "measured_seconds": round(measured, 1), "logs": str(logdir),
        **result,
    }, indent=2))


if __name__ == "__main__":
    main()
