"""GraphQL subscription benchmark, run by hand: messages per second to many subscribers over WebSocket
(graphql-transport-ws at GET /graphql) against the same over SSE (graphql-sse at POST /graphql/sse),
on one engine, in one run.

    python bench/graphql_bench.py [--clients 1000] [--burst 300] [--rounds 3] [--pad 100]
        [--latency-clients 100] [--latency-rate 20] [--latency-seconds 3] [--latency-rounds 3]
        [--pin] [--json out.json] [--profile DIR]

The engine is `python -m engine` on a scratch copy of bench/graphql_scripts/: a subscription field
`ticks` of an object type (`{ seq t pad }`), whose resolver answers at once with seq -1, and
`GET /bench/publish?n=&start=&pad=`, one script call that publishes n messages with
sendSubscriptionMessage, each carrying its sequence number and its publish time (Date.now()).
Every subscriber asks the same query, so the engine executes each message once for all of them.

Cases, the transports alternating (ws, sse, ws, sse, ...) so that neither gets the warmer engine:
- burst: `--clients` subscribers, one publish of `--burst` messages; delivered messages/s over the
  client's first-to-last receive, and over first publish to last receive; engine CPU over the round
  (from /proc, the process's threads summed, with its busiest threads); medians of `--rounds`;
- paced: `--latency-clients` subscribers, `--latency-rate` publishes a second (one message each) for
  `--latency-seconds`; publish-to-read p50/p99 and publish-to-arrival (the kernel's receive
  timestamp); medians of `--latency-rounds` rounds' percentiles.
Every round checks that every subscriber got every message, in order ("lost": the messages some
subscriber never got, a subscriber that failed to subscribe missing all; "cut": subscriptions the
engine ended, e.g. as slow consumers). A short warm-up round of each transport comes first, not counted.

The machine is shared (2 cores here): "rest" is the CPU, in cores, the rest of the machine used
during a round (other processes, kernel work charged to none), the busiest others named per round on
stderr; a round with a large "rest" was disturbed. `--pin` keeps the engine on CPU 0 and the client on
CPU 1 (by default the scheduler places them, as the other benchmarks do).

The client is bench/gql_client.c (compiled here with gcc): one epoll thread for every subscriber; its
CPU over its receive span is printed (near 1.0 would mean it, not the engine, set the pace).
Publish times have millisecond resolution. Loopback only. `--profile DIR` then runs one more burst of
each transport under py-spy (not counted: py-spy slows the engine), writes the collapsed stacks there
and prints the busiest functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import HERE, ROOT, free_port, get, wait_up

QUERY = "subscription { ticks { seq t pad } }"
TRANSPORTS = ("ws", "sse")
TICK = os.sysconf("SC_CLK_TCK")
PIN: dict[str, set[int]] = {}  # --pin: the CPUs of "engine" and "client"


def pinned(who: str) -> Any:
    """A preexec_fn that keeps the child on its CPU (--pin), or None."""
    cpus = PIN.get(who)
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def build_client() -> Path:
    out = Path(tempfile.gettempdir()) / "rtengine_gql_client"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(HERE / "gql_client.c")], check=True)
    return out


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    import aiohttp
    import graphql
    out = {"aiohttp": aiohttp.__version__, "graphql-core": graphql.__version__}
    try:
        import uvloop
        out["uvloop"] = uvloop.__version__
    except ImportError:
        pass
    return out


def thread_ticks(pid: int) -> dict[str, int]:
    """CPU ticks of each of the process's threads, by "name/tid"."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(")") + 2:].split()
        out[f"{name}/{task.name}"] = int(fields[11]) + int(fields[12])  # utime, stime
    return out


def machine_ticks() -> list[int]:
    """The whole machine's CPU ticks: user, nice, system, idle, iowait, irq, softirq, steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def process_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def all_ticks() -> dict[int, tuple[str, int]]:
    """Every process's name and CPU ticks: to name what else ran during a round."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (d / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                out[int(d.name)] = (stat[stat.index("(") + 1:stat.rindex(")")], int(fields[11]) + int(fields[12]))
    return out


class CpuWindow:
    """The engine's CPU between start() and stop(): in all, and its busiest threads."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0, self.ticks0, self.threads0 = time.monotonic(), process_ticks(pid), thread_ticks(pid)
        self.machine0 = machine_ticks()
        self.all0 = all_ticks()

    def stop(self, client_seconds: float | None = None, client_pid: int | None = None) -> dict[str, Any]:
        """`client_seconds`: the client's CPU over about the same window, to tell what the rest of the
        machine (other processes, ksoftirqd) took meanwhile; its busiest other processes are named."""
        wall = time.monotonic() - self.t0
        ticks, threads = process_ticks(self.pid), thread_ticks(self.pid)
        busy = sorted(((threads[k] - self.threads0.get(k, 0), k) for k in threads), reverse=True)
        m = [x - y for x, y in zip(machine_ticks(), self.machine0, strict=True)]
        total = sum(m) or 1
        machine = {"user": (m[0] + m[1]) / total, "system": m[2] / total, "softirq": (m[5] + m[6]) / total,
                   "idle": (m[3] + m[4]) / total, "steal": m[7] / total}
        seconds = (ticks - self.ticks0) / TICK
        out = {"seconds": round(seconds, 2), "wall": round(wall, 3),
               "share": round(seconds / wall, 2) if wall else None,
               "threads": {k: round(d / TICK, 2) for d, k in busy[:3] if d},
               "machine": {k: round(v, 2) for k, v in machine.items()}}
        mine = (self.pid, client_pid, os.getpid())
        others = sorted(((t - self.all0.get(pid, (name, 0))[1], f"{name}/{pid}")
                         for pid, (name, t) in all_ticks().items() if pid not in mine), reverse=True)
        out["others"] = {k: round(d / TICK / wall, 2) for d, k in others[:3] if wall and d / TICK / wall >= 0.02}
        if client_seconds is not None and wall:
            machine_busy = (total - m[3] - m[4]) / TICK
            out["rest_of_machine_cores"] = round(max(0.0, machine_busy - seconds - client_seconds) / wall, 2)
        return out


class Client:
    """The C client as a subprocess: READY once every subscriber has its first result, then one JSON line."""

    def __init__(self, exe: Path, port: int, transport: str, n: int, messages: int, seconds: float) -> None:
        self.proc = subprocess.Popen([str(exe), transport, "127.0.0.1", str(port), str(n), str(messages),
                                      str(seconds), QUERY], stdout=subprocess.PIPE, text=True,
                                     preexec_fn=pinned("client"))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.proc.kill()
            raise RuntimeError(f"client did not get ready: {line!r}")
        self.ready = int(line.split()[1])

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=300)
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


class Engine:
    def __init__(self, scripts: Path, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ENGINE_LOGS_LEVEL": "warning",
               "ENGINE_STREAMS_HEARTBEAT_SECONDS": "600", "ENGINE_SCRIPTS_WATCH": "false"}
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "--port", str(self.port), "--scripts",
                                      str(scripts)], cwd=ROOT, env=env, stdout=self._log_file, stderr=self._log_file,
                                     preexec_fn=pinned("engine"))
        wait_up(self.base + "/bench/ready")

    def connections(self) -> int:
        return int(json.loads(get(self.base + "/_engine/streams"))["connections"])

    def settle(self, timeout: float = 20) -> None:
        """Until the last round's subscribers are gone from the hub."""
        deadline = time.monotonic() + timeout
        while self.connections() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.connections():
            raise SystemExit(f"the engine still counts {self.connections()} subscribers after {timeout} s")

    def publish(self, n: int, start: int, pad: int) -> None:
        get(f"{self.base}/bench/publish?n={n}&start={start}&pad={pad}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


def checks(r: dict[str, Any], subscribers: int, messages: int) -> dict[str, Any]:
    expected = subscribers * messages
    return {"subscribed": r["subscribed"], "expected": expected, "received": r["events"],
            "lost": (subscribers - r["subscribed"]) * messages + r["missing"], "dups": r["dups"],
            "out_of_order": r["disorder"], "cut": r["closed_live"], "failed": r["failed"],
            "errors": r["error_msgs"] + r["completes"]}


def burst_round(engine: Engine, exe: Path, transport: str, n: int, burst: int, pad: int) -> dict[str, Any]:
    engine.settle()
    c = Client(exe, engine.port, transport, n, burst, 60)
    cpu = CpuWindow(engine.proc.pid)
    t0 = time.monotonic()
    engine.publish(burst, 0, pad)
    route_s = time.monotonic() - t0
    r = c.result()
    eng = cpu.stop(r["cpu_after_ready"], c.proc.pid)
    span = (r["last_recv_ms"] - r["first_recv_ms"]) / 1000
    from_publish = (r["last_recv_ms"] - r["first_t_ms"]) / 1000
    return {
        "transport": transport, "subscribers": n, "messages": burst, **checks(r, n, burst),
        "attach_s": r["attach_s"], "route_s": round(route_s, 3),
        "receive_span_s": round(span, 3), "per_s": round(r["events"] / span) if span > 0 else None,
        "publish_to_last_s": round(from_publish, 3),
        "per_s_from_publish": round(r["events"] / from_publish) if from_publish > 0 else None,
        "engine_cpu": eng,
        "engine_us_per_message": round(eng["seconds"] * 1e6 / r["events"], 2) if r["events"] else None,
        "client_cpu_in_span": round(r["cpu_in_span"] / span, 2) if span > 0 else None,
    }


def paced_round(engine: Engine, exe: Path, transport: str, n: int, rate: float, seconds: float,
                pad: int) -> dict[str, Any]:
    engine.settle()
    messages = max(1, int(rate * seconds))
    c = Client(exe, engine.port, transport, n, messages, seconds + 30)
    cpu = CpuWindow(engine.proc.pid)
    start = time.monotonic()
    for i in range(messages):
        engine.publish(1, i, pad)
        time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    r = c.result()
    return {"transport": transport, "subscribers": n, "messages": messages, "rate": rate, **checks(r, n, messages),
            "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "arrive_p50_ms": r["arrive_p50_ms"],
            "arrive_p99_ms": r["arrive_p99_ms"], "engine_cpu": cpu.stop(r["cpu_after_ready"], c.proc.pid),
            "client_cpu_share": round(r["cpu_after_ready"] / r["wall_after_ready"], 2)
            if r["wall_after_ready"] else None}


def profile(engine: Engine, exe: Path, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One burst of each transport under py-spy (not counted): collapsed stacks written to DIR, and the
    engine's busiest functions."""
    if shutil.which("py-spy") is None:
        return {"skipped": "py-spy is not installed"}
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, Any] = {}
    for transport in TRANSPORTS:
        engine.settle()
        c = Client(exe, engine.port, transport, a.clients, a.burst, 120)
        raw = out / f"graphql_{transport}.txt"
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(engine.proc.pid), "--rate", "250", "--output",
                                str(raw), "--format", "raw", "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches
        engine.publish(a.burst, 0, a.pad)
        c.result()
        spy.send_signal(2)  # SIGINT: py-spy writes what it has
        spy.wait(timeout=30)
        done[transport] = {"stacks": str(raw), "top": busiest_frames(raw)}
    return done


def busiest_frames(raw: Path, shown: int = 6) -> dict[str, float]:
    """From py-spy's collapsed stacks: the functions most samples were in (their own time, the C they
    called included: a transport's write is its caller's), as % of all samples."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        leaf = re.sub(r":\d+\)$", ")", stack.rsplit(";", 1)[-1])  # a function, whatever its line
        counts[leaf] = counts.get(leaf, 0) + int(n)
        total += int(n)
    ranked = sorted(((n, f) for f, n in counts.items()), reverse=True)[:shown]
    return {f: round(100 * n / total, 1) for n, f in ranked} if total else {}


def med(rows: list[dict[str, Any]], key: str, sub: str | None = None) -> Any:
    vals = [(r[key][sub] if sub else r[key]) for r in rows]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": len(rows)}
    for k in keys:
        out[k] = med(rows, k)
    out["lost"] = sum(r["lost"] for r in rows)
    out["dups"] = sum(r["dups"] for r in rows)
    out["out_of_order"] = sum(r["out_of_order"] for r in rows)
    out["cut"] = sum(r["cut"] for r in rows)
    out["engine_cpu_share"] = med(rows, "engine_cpu", "share")
    out["rest_of_machine_cores"] = med(rows, "engine_cpu", "rest_of_machine_cores")
    return out


def fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=300, help="messages in the one publish of a burst round")
    ap.add_argument("--rounds", type=int, default=3, help="burst rounds of each transport")
    ap.add_argument("--pad", type=int, default=100, help="characters of padding in each message")
    ap.add_argument("--latency-clients", type=int, default=100)
    ap.add_argument("--latency-rate", type=float, default=20)
    ap.add_argument("--latency-seconds", type=float, default=3)
    ap.add_argument("--latency-rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write every round's figures there too")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="then profile one burst of each transport with py-spy, stacks into DIR")
    ap.add_argument("--pin", action="store_true", help="the engine on CPU 0, the client on CPU 1")
    a = ap.parse_args()
    if a.pin:
        PIN.update(engine={0}, client={1})
    if a.burst * (a.pad + 150) > 512 * 1024:
        raise SystemExit("a burst that large could reach the engine's 1 MiB per subscriber (max_buffer_bytes)")
    raise_nofile()
    exe = build_client()
    started = time.monotonic()
    bursts: dict[str, list[dict[str, Any]]] = {t: [] for t in TRANSPORTS}
    paced: dict[str, list[dict[str, Any]]] = {t: [] for t in TRANSPORTS}
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rtengine_gql_bench_") as tmp:
        scripts = Path(tmp) / "scripts"
        shutil.copytree(HERE / "graphql_scripts", scripts)
        engine = Engine(scripts, Path(tmp) / "engine.log")
        profiled: dict[str, Any] = {}
        try:
            for t in TRANSPORTS:  # warm-up: code paths, caches, the first subscriptions
                burst_round(engine, exe, t, min(a.clients, 200), 20, a.pad)
            for i in range(a.rounds):
                for t in TRANSPORTS:
                    r = burst_round(engine, exe, t, a.clients, a.burst, a.pad)
                    bursts[t].append(r)
                    e = r["engine_cpu"]
                    print(f"burst {t} {i + 1}: {r['per_s']}/s, lost {r['lost']}, engine cpu {e['share']}, client cpu "
                          f"{r['client_cpu_in_span']}, rest of machine {e['rest_of_machine_cores']} cores "
                          f"{e['others']}, machine "
                          f"{e['machine']} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            for i in range(a.latency_rounds):
                for t in TRANSPORTS:
                    r = paced_round(engine, exe, t, a.latency_clients, a.latency_rate, a.latency_seconds, a.pad)
                    paced[t].append(r)
                    print(f"paced {t} {i + 1}: p50 {r['p50_ms']} p99 {r['p99_ms']} ms, lost {r['lost']} "
                          f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
            if a.profile:
                profiled = profile(engine, exe, a, a.profile)
        finally:
            engine.stop()
            log_lines = engine.log.read_text(errors="replace").splitlines()
            warnings = [ln for ln in log_lines if "WARNING" in ln or "ERROR" in ln or "Traceback" in ln]

    elapsed = time.monotonic() - started
    burst_sum = {t: summarize(bursts[t], ("per_s", "per_s_from_publish", "receive_span_s", "publish_to_last_s",
                                          "route_s", "attach_s", "engine_us_per_message", "client_cpu_in_span"))
                 for t in TRANSPORTS}
    paced_sum = {t: summarize(paced[t], ("p50_ms", "p99_ms", "arrive_p50_ms", "arrive_p99_ms", "client_cpu_share"))
                 for t in TRANSPORTS}
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}, "
               f"CPython {platform.python_version()}")
    vers = ", ".join(f"{k} {v}" for k, v in versions().items())

    print()
    print(f"GraphQL subscriptions, WebSocket (graphql-transport-ws) vs SSE (graphql-sse), {time.strftime('%Y-%m-%d')}")
    print(f"machine: {machine}")
    print(f"versions: {vers}; uvloop loop (the engine's default); run took {elapsed:.0f} s")
    print(f"burst: {a.clients} subscribers, one publish of {a.burst} messages (~{a.pad + 75} B of JSON each), "
          f"median of {a.rounds} rounds, alternating")
    head = f"{'':6}{'msgs/s':>10}{'msgs/s*':>10}{'span s':>8}{'route s':>8}{'eng cpu':>8}{'eng us/msg':>11}" \
           f"{'client cpu':>11}{'rest':>6}{'attach s':>9}{'lost':>6}{'cut':>5}"
    print(head)
    for t in TRANSPORTS:
        s = burst_sum[t]
        print(f"{t:6}{fmt(s['per_s'], ',.0f'):>10}{fmt(s['per_s_from_publish'], ',.0f'):>10}"
              f"{fmt(s['receive_span_s'], '.3f'):>8}{fmt(s['route_s'], '.3f'):>8}{fmt(s['engine_cpu_share'], '.2f'):>8}"
              f"{fmt(s['engine_us_per_message'], '.2f'):>11}{fmt(s['client_cpu_in_span'], '.2f'):>11}"
              f"{fmt(s['rest_of_machine_cores'], '.2f'):>6}"
              f"{fmt(s['attach_s'], '.2f'):>9}{s['lost']:>6}{s['cut']:>5}")
    ws, sse = burst_sum["ws"]["per_s"], burst_sum["sse"]["per_s"]
    if ws and sse:
        print(f"ws/sse: {ws / sse:.2f}   (msgs/s: delivered over first-to-last receive; msgs/s*: over first "
              "publish to last receive; each round's figures below)")
    for t in TRANSPORTS:
        print(f"  {t} rounds: " + "; ".join(
            f"{fmt(r['per_s'], ',')}/s (engine {r['engine_cpu']['share']}, client {r['client_cpu_in_span']}, rest "
            f"{r['engine_cpu'].get('rest_of_machine_cores')})" for r in bursts[t]))
    loop_share = [max(r["engine_cpu"]["threads"].values()) / r["engine_cpu"]["seconds"]
                  for t in TRANSPORTS for r in bursts[t] if r["engine_cpu"]["seconds"] and r["engine_cpu"]["threads"]]
    rests = [r["engine_cpu"].get("rest_of_machine_cores") or 0 for t in TRANSPORTS for r in bursts[t]]
    disturbed = sum(1 for rest in rests if rest > 0.3)
    if loop_share:
        lo, hi = f"{100 * min(loop_share):.0f}", f"{100 * max(loop_share):.0f}"
        print(f"  the engine's CPU in a burst: {lo if lo == hi else lo + '-' + hi}% in one thread "
              "(the event loop); 'rest': cores the rest of the machine used meanwhile"
              + (f"; {disturbed} round(s) with rest > 0.3 were disturbed by other load" if disturbed else ""))
    print(f"paced: {a.latency_clients} subscribers, {a.latency_rate:g} messages/s for {a.latency_seconds:g} s, "
          f"median of {a.latency_rounds} rounds' percentiles (ms)")
    print(f"{'':6}{'p50':>8}{'p99':>8}{'arr p50':>9}{'arr p99':>9}{'client cpu':>11}{'rest':>6}{'lost':>6}{'cut':>5}")
    for t in TRANSPORTS:
        s = paced_sum[t]
        print(f"{t:6}{fmt(s['p50_ms'], '.2f'):>8}{fmt(s['p99_ms'], '.2f'):>8}{fmt(s['arrive_p50_ms'], '.2f'):>9}"
              f"{fmt(s['arrive_p99_ms'], '.2f'):>9}{fmt(s['client_cpu_share'], '.2f'):>11}"
              f"{fmt(s['rest_of_machine_cores'], '.2f'):>6}{s['lost']:>6}{s['cut']:>5}")
    print(f"engine log: {len(warnings)} warning/error lines" + (": " + " | ".join(warnings[:5]) if warnings else ""))
    for t, p in profiled.items():
        if isinstance(p, dict):
            print(f"py-spy, {t} burst (% of samples; {p['stacks']}): "
                  + "; ".join(f"{f} {v}" for f, v in p["top"].items()))
        else:
            print(f"py-spy: {p}")
    if a.json:
        a.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": machine, "versions": versions(), "seconds": round(elapsed, 1),
            "args": {k: str(v) for k, v in vars(a).items()}, "burst": burst_sum, "paced": paced_sum,
            "burst_rounds": bursts, "paced_rounds": paced, "engine_log_warnings": warnings,
        }, indent=2))


if __name__ == "__main__":
    main()
