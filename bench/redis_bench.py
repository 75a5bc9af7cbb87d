"""Redis broker benchmark, run by hand: SSE fan-out on the Redis broker against the memory broker.

    python bench/redis_bench.py [--clients 1000] [--burst 500] [--scale-burst 2000] [--rounds 3]
                                [--lat-clients 100] [--lat-seconds 5] [--loop uvloop]

Starts its own `redis-server` (loopback, a free port, `--save '' --appendonly no`) and three engines
(`python -m engine`, bench/fanout_scripts/, the same code and settings): M on the memory broker, R1 and
R2 on the Redis broker. The readers are bench/sse_client.c, compiled here with gcc as fanout_bench.py
does, plus one line printed before its JSON (the wall-clock times of its first and last event): one
epoll thread per client process. Everything is on 127.0.0.1 and bounded in count and time.

1. throughput: `--clients` readers, one publish of `--burst` messages of 200 bytes through the
   `/publish` route; rounds alternate M, R1, M, R1, ... (`--rounds` each), medians reported. Two rates:
   events / (publish request sent -> last event received: "e2e", the Redis round trip included), and
   events / (first -> last event received: "span", fanout_bench.py's figure).
2. latency: `--lat-clients` readers, 20 messages/s for `--lat-seconds` (bench_common.publish_paced),
   alternating M and R1; p50/p99 publish -> receive from the time the message carries (`Date.now()`,
   millisecond resolution: the same +0..1 ms bias on both brokers, so their difference stands).
3. scale-out on Redis: `--clients` readers on R1 alone, against half on R1 and half on R2 (one client
   process per engine), one burst of `--scale-burst` published through R1; alternating, medians; events
   of both clients / (publish -> the last event either received). R2 is started for each 2-process
   round and stopped after it, so 1 and 2 are really 1 and 2 subscribed processes (parts 1 and 2 run
   before any R2: one engine on each broker).
Each burst round reads the CPU seconds each process used from publish to the end of the round
(/proc/PID/stat; a client's up to its last event), as a share of one core over the e2e window: where a
2-core machine's time goes. Each client's fanout_bench-style CPU share (CPU / its whole life) too.
Delivery is checked: every client must get every event, and each engine's /_engine/streams
`messages_sent` must grow by the burst; the engines' logs (warning level) are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench_common import HERE, ROOT, free_port, get, publish_paced, wait_up

TICK = os.sysconf("SC_CLK_TCK")
BURST_CLIENT_SECONDS = 60  # a client gives up (and the round reports lost events) after this
READY_SECONDS = 30  # readers must all be attached within this


# The one addition to bench/sse_client.c, made at build time: before its JSON line, another giving the
# wall-clock (CLOCK_REALTIME) times of its first and last event, so a round's end is the last event, not
# the client's exit (sorting 2 million latencies takes it a few hundred ms).
END_OF_LOOP = "    struct rusage ru;\n"
TIMES = '    printf("{\\"first_ms\\": %.3f, \\"last_ms\\": %.3f}\\n", first, last);\n'


def build_client() -> Path:
    source = (HERE / "sse_client.c").read_text()
    if source.count(END_OF_LOOP) != 1:
        raise SystemExit("bench/sse_client.c changed: its end of loop ('struct rusage ru;') is not found once")
    tmp = Path(tempfile.mkdtemp(prefix="rtengine_redis_bench_build_"))
    (tmp / "sse_client.c").write_text(source.replace(END_OF_LOOP, TIMES + END_OF_LOOP))
    out = Path(tempfile.gettempdir()) / "rtengine_redis_bench_sse_client"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(tmp / "sse_client.c")], check=True)
    shutil.rmtree(tmp)
    return out


def cpu_seconds(pid: int, kernel_only: bool = False) -> float:
    """User + system CPU a process has used so far (system alone: `kernel_only`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[12]) + (0 if kernel_only else int(fields[11]))) / TICK


def machine_line() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    version = next((w.split("=", 1)[1] for w in redis_version if w.startswith("v=")), "?")
    return (f"{model}, {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}, "
            f"CPython {platform.python_version()}, redis-server {version}, {time.strftime('%Y-%m-%d %H:%M')}")


class Redis:
    def __init__(self, folder: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed (Debian's redis-server package)")
        self.port = free_port()
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("redis-server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Engine:
    """`python -m engine` on bench/fanout_scripts/, memory broker or Redis; its log goes to a file."""

    def __init__(self, name: str, loop: str, folder: Path, broker_url: str | None) -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"engine-{name}-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ENGINE_SERVER_LOOP": loop, "ENGINE_LOGS_LEVEL": "warning",
               "ENGINE_STREAMS_MAX_BUFFER_BYTES": str(64 * 1024 * 1024)}
        env.pop("ENGINE_BROKER_URL", None)
        cmd = [sys.executable, "-m", "engine", "--port", str(self.port), "--scripts", str(HERE / "fanout_scripts")]
        if broker_url:
            cmd += ["--broker-url", broker_url]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_up(self) -> None:
        wait_up(self.base + "/health")
        # /publish answers once the script is loaded (fanout_bench.py waits the same way)
        wait_up(self.base + "/publish?n=1")

    def streams(self) -> dict[str, Any]:
        return json.loads(get(self.base + "/_engine/streams", timeout=10))  # type: ignore[no-any-return]

    def sent(self) -> int:
        entry = self.streams()["streams"].get("/events", {})
        return int(entry.get("messages_sent", 0))

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.base + "/health", timeout=5) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as e:  # a degraded engine may answer 503 with a body
            return json.loads(e.read())  # type: ignore[no-any-return]

    def wait_idle(self, timeout: float = 15) -> None:
        """Until the last round's readers have all been let go."""
        deadline = time.monotonic() + timeout
        while self.streams()["connections"] and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_lines(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]


class Client:
    """One sse_client process: N readers of one engine's /events; READY once all are attached."""

    started: list[Client] = []  # every client, so that none outlives a failed run

    def __init__(self, exe: Path, engine: Engine, n: int, expected: int, seconds: float) -> None:
        self.engine, self.n, self.expected = engine, n, expected
        self.proc = subprocess.Popen([str(exe), "127.0.0.1", str(engine.port), "/events", str(n), str(expected),
                                      str(seconds)], stdout=subprocess.PIPE, text=True)
        Client.started.append(self)
        self.ready = -1
        self.out = ""
        self._thread: threading.Thread | None = None

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], READY_SECONDS)
        line = self.proc.stdout.readline() if readable else ""
        if not line.startswith("READY"):
            self.proc.kill()
            raise RuntimeError(f"client of {self.engine.name} did not get ready: {line!r}")
        self.ready = int(line.split()[1])
        if self.ready != self.n:
            raise RuntimeError(f"client of {self.engine.name}: {self.ready} of {self.n} readers attached")

    def collect(self) -> None:
        """Read the result in a thread (two clients may end in any order)."""

        def run() -> None:
            self.out, _ = self.proc.communicate(timeout=BURST_CLIENT_SECONDS + 60)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self) -> dict[str, Any]:
        """sse_client.c's JSON line, with first_ms and last_ms (epoch ms) from the line before it."""
        assert self._thread is not None
        self._thread.join()
        times, last = self.out.strip().splitlines()[-2:]
        return {**json.loads(times), **json.loads(last)}


def burst_round(exe: Path, placement: list[tuple[Engine, int]], via: Engine, burst: int,
                watch: dict[str, int]) -> dict[str, Any]:
    """Readers placed on engines, one burst of `burst` messages published through `via`."""
    sent_before = {e.name: e.sent() for e, _ in placement}
    clients = [Client(exe, e, n, n * burst, BURST_CLIENT_SECONDS) for e, n in placement]
    for c in clients:
        c.wait_ready()
    pids = {**watch, **{f"client@{c.engine.name}": c.proc.pid for c in clients}}
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    sys0 = {name: cpu_seconds(pid, kernel_only=True) for name, pid in watch.items()}
    for c in clients:
        c.collect()
    t0 = time.time()  # the clients' clock too (CLOCK_REALTIME)
    get(f"{via.base}/publish?n={burst}&size=200")
    published = time.time() - t0
    results = [c.result() for c in clients]
    window = max(r["last_ms"] for r in results) / 1000 - t0
    first = min(r["first_ms"] for r in results) / 1000
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in watch.items()}
    kernel = {name: cpu_seconds(pid, kernel_only=True) - sys0[name] for name, pid in watch.items()}
    for c, r in zip(clients, results, strict=True):
        cpu[f"client@{c.engine.name}"] = r["cpu_seconds"] - cpu0[f"client@{c.engine.name}"]
    for e, _ in placement:
        e.wait_idle()
    events = sum(r["events"] for r in results)
    expected = sum(c.expected for c in clients)
    return {
        "readers": sum(n for _, n in placement), "events": events, "expected": expected,
        "lost": expected - events,
        "sent_delta": {e.name: e.sent() - sent_before[e.name] for e, _ in placement},
        "span_rate": events / max(1e-6, max(r["last_ms"] for r in results) / 1000 - first),
        "e2e_rate": events / window,
        "window_s": window, "publish_request_s": published,
        "p50_ms": [r["p50_ms"] for r in results], "p99_ms": [r["p99_ms"] for r in results],
        "cpu_s": cpu, "sys_s": kernel,
        "client_cpu_share": [round(r["cpu_seconds"] / r["wall_seconds"], 2) for r in results],
    }


def latency_round(exe: Path, engine: Engine, readers: int, seconds: float) -> dict[str, Any]:
    messages = int(20 * seconds)
    c = Client(exe, engine, readers, readers * messages, seconds + 30)
    c.wait_ready()
    c.collect()
    publish_paced(engine.base, messages)
    r = c.result()
    engine.wait_idle()
    return {"events": r["events"], "expected": readers * messages, "lost": readers * messages - r["events"],
            "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "arrive_p50_ms": r["arrive_p50_ms"],
            "arrive_p99_ms": r["arrive_p99_ms"], "client_cpu_share": round(r["cpu_seconds"] / r["wall_seconds"], 2)}


def med(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def cpu_line(rounds: list[dict[str, Any]]) -> str:
    """Median CPU use per process over the publish -> last event window, as a share of one core (an
    engine's or redis-server's kernel part in brackets)."""
    names = rounds[0]["cpu_s"].keys()
    shares = {n: statistics.median(r["cpu_s"][n] / r["window_s"] for r in rounds) for n in names}
    kernel = {n: statistics.median(r["sys_s"][n] / r["window_s"] for r in rounds) for n in rounds[0]["sys_s"]}
    parts = [f"{n} {s:.2f}" + (f" (sys {kernel[n]:.2f})" if n in kernel else "")
             for n, s in shares.items() if s >= 0.005]
    return ", ".join(parts) + f"; sum {sum(shares.values()):.2f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def summary(a: argparse.Namespace, tp: dict[str, list[dict[str, Any]]], lat: dict[str, list[dict[str, Any]]],
            sc: dict[str, list[dict[str, Any]]]) -> None:
    rule = "-" * 110
    half = a.clients // 2
    print()
    print(rule)
    print(f"machine: {machine_line()}, {a.loop}")
    print(f"command: python bench/redis_bench.py --clients {a.clients} --burst {a.burst} --scale-burst "
          f"{a.scale_burst} --rounds {a.rounds} --lat-clients {a.lat_clients} --lat-seconds {a.lat_seconds:g} "
          f"--loop {a.loop}")
    print(rule)
    print(f"1. fan-out throughput: {a.clients} SSE readers, one burst of {a.burst} x 200 B via /publish per round, "
          f"median of {a.rounds} alternating rounds")
    print(f"   {'broker':7} {'ev/s span':>10} {'ev/s e2e':>10} {'publish req':>12} {'burst p50':>10} {'lost':>5}  "
          "CPU (10 ms ticks), share of one core, publish -> last event")
    for kind, rounds in tp.items():
        p50 = statistics.median(r["p50_ms"][0] for r in rounds)
        print(f"   {kind:7} {med(rounds, 'span_rate'):10.0f} {med(rounds, 'e2e_rate'):10.0f} "
              f"{med(rounds, 'publish_request_s') * 1000:9.0f} ms {p50:7.0f} ms {sum(r['lost'] for r in rounds):5d}  "
              f"{cpu_line(rounds)}")
    span_ratio = med(tp["redis"], "span_rate") / med(tp["memory"], "span_rate")
    e2e_ratio = med(tp["redis"], "e2e_rate") / med(tp["memory"], "e2e_rate")
    shares = ", ".join(f"{k} {statistics.median(r['client_cpu_share'][0] for r in v):.2f}" for k, v in tp.items())
    print(f"   redis/memory: {e2e_ratio:.2f} (e2e), {span_ratio:.2f} (span)   target >= 0.8: "
          f"{verdict(min(span_ratio, e2e_ratio) >= 0.8)}")
    print(f"   client CPU share (fanout_bench style, CPU / wall of the client's whole life): {shares}")
    print(rule)
    print(f"2. added latency: {a.lat_clients} readers, 20 msg/s for {a.lat_seconds:g} s per round, median of "
          f"{a.rounds} alternating rounds (publish times have 1 ms resolution: the same bias on both)")
    print(f"   {'broker':7} {'p50 ms':>8} {'p99 ms':>8} {'arrive p50':>11} {'arrive p99':>11} {'lost':>5} "
          f"{'client CPU':>11}")
    for kind, rounds in lat.items():
        print(f"   {kind:7} {med(rounds, 'p50_ms'):8.3f} {med(rounds, 'p99_ms'):8.3f} "
              f"{med(rounds, 'arrive_p50_ms'):11.3f} {med(rounds, 'arrive_p99_ms'):11.3f} "
              f"{sum(r['lost'] for r in rounds):5d} {med(rounds, 'client_cpu_share'):11.2f}")

    def added(key: str) -> list[float]:
        return [r[key] - m[key] for m, r in zip(lat["memory"], lat["redis"], strict=True)]

    p50s = added("p50_ms")
    p99, arrive = statistics.median(added("p99_ms")), statistics.median(added("arrive_p50_ms"))
    print(f"   redis - memory: p50 {statistics.median(p50s):+.3f} ms (rounds {', '.join(f'{x:+.3f}' for x in p50s)}), "
          f"p99 {p99:+.3f} ms, arrive p50 {arrive:+.3f} ms   target <= 1 ms at p50: "
          f"{verdict(statistics.median(p50s) <= 1)}")
    print(rule)
    print(f"3. Redis broker, 1 engine process vs 2: {a.clients} readers in all ({half} + {a.clients - half} on 2, one "
          f"client process each), one burst of {a.scale_burst} via R1 per round, median of {a.rounds} alternating")
    print(f"   {'setup':11} {'ev/s e2e':>10} {'ev/s span':>10} {'lost':>5}  CPU (10 ms ticks), share of one core, "
          "publish -> last event")
    for kind, rounds in sc.items():
        print(f"   {kind:11} {med(rounds, 'e2e_rate'):10.0f} {med(rounds, 'span_rate'):10.0f} "
              f"{sum(r['lost'] for r in rounds):5d}  {cpu_line(rounds)}")
    ratio = med(sc["2 processes"], "e2e_rate") / med(sc["1 process"], "e2e_rate")
    shares = "; ".join(f"{k} " + ", ".join(f"{statistics.median(r['client_cpu_share'][j] for r in v):.2f}"
                                           for j in range(len(v[0]["client_cpu_share"]))) for k, v in sc.items())
    print(f"   2 processes / 1: {ratio:.2f} (e2e)   client CPU share (fanout_bench style): {shares}")
    print(rule)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--scale-burst", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lat-clients", type=int, default=100)
    ap.add_argument("--lat-seconds", type=float, default=5)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    a = ap.parse_args()
    if not (2 <= a.clients <= 5000 and 1 <= a.burst <= 2000 and 1 <= a.scale_burst <= 5000 and 1 <= a.rounds <= 9
            and 1 <= a.lat_clients <= 5000 and 1 <= a.lat_seconds <= 60
            and a.clients * max(a.burst, a.scale_burst) <= 4_000_000):
        raise SystemExit("out of bounds: 2 <= clients <= 5000, burst <= 2000, scale-burst <= 5000, "
                         "clients * burst <= 4M, rounds <= 9, lat-clients <= 5000, lat-seconds <= 60")
    started = time.monotonic()
    exe = build_client()
    folder = Path(tempfile.mkdtemp(prefix="rtengine_redis_bench_"))
    redis = Redis(folder)
    engines: list[Engine] = []
    try:
        mem = Engine("M", a.loop, folder, None)
        r1 = Engine("R1", a.loop, folder, redis.url)
        engines = [mem, r1]
        for e in engines:
            e.wait_up()
        print(f"redis-server :{redis.port}, engines M :{mem.port} (memory), R1 :{r1.port} (redis); logs in {folder}",
              flush=True)
        watch = {"M": mem.proc.pid, "R1": r1.proc.pid, "redis": redis.proc.pid}

        # warm-up, not reported: the script's first calls, the Redis mirror and Lua script
        for e in engines:
            burst_round(exe, [(e, 200)], e, 50, watch)

        half = a.clients // 2
        tp: dict[str, list[dict[str, Any]]] = {"memory": [], "redis": []}
        for i in range(a.rounds):
            for kind, e in (("memory", mem), ("redis", r1)):
                r = burst_round(exe, [(e, a.clients)], e, a.burst, watch)
                tp[kind].append(r)
                print(f"[1] round {i + 1} {kind:6}: {r['e2e_rate']:9.0f} ev/s e2e, {r['span_rate']:9.0f} ev/s span, "
                      f"publish request {r['publish_request_s'] * 1000:.0f} ms, lost {r['lost']}", flush=True)

        lat: dict[str, list[dict[str, Any]]] = {"memory": [], "redis": []}
        for i in range(a.rounds):
            for kind, e in (("memory", mem), ("redis", r1)):
                r = latency_round(exe, e, a.lat_clients, a.lat_seconds)
                lat[kind].append(r)
                print(f"[2] round {i + 1} {kind:6}: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, arrive p50 "
                      f"{r['arrive_p50_ms']:.3f} ms, lost {r['lost']}", flush=True)

        # R2 lives for one 2-process round at a time: a process that once had readers of /events keeps
        # mirroring it (and receiving every message) as long as the stream exists, which would load the
        # 1-process rounds with a second subscriber that serves nobody.
        sc: dict[str, list[dict[str, Any]]] = {"1 process": [], "2 processes": []}
        health: dict[str, Any] = {}
        for i in range(a.rounds):
            r = burst_round(exe, [(r1, a.clients)], r1, a.scale_burst, watch)
            sc["1 process"].append(r)
            print(f"[3] round {i + 1} 1 process  : {r['e2e_rate']:9.0f} ev/s e2e, {r['span_rate']:9.0f} ev/s "
                  f"span, lost {r['lost']}, sent {r['sent_delta']}", flush=True)
            r2 = Engine("R2", a.loop, folder, redis.url)
            engines.append(r2)
            r2.wait_up()
            both = {**watch, "R2": r2.proc.pid}
            burst_round(exe, [(r2, 100)], r1, 20, both)  # its warm-up
            r = burst_round(exe, [(r1, half), (r2, a.clients - half)], r1, a.scale_burst, both)
            sc["2 processes"].append(r)
            print(f"[3] round {i + 1} 2 processes: {r['e2e_rate']:9.0f} ev/s e2e, {r['span_rate']:9.0f} ev/s "
                  f"span, lost {r['lost']}, sent {r['sent_delta']}", flush=True)
            health[f"R2 (round {i + 1})"] = r2.health()
            r2.stop()
        health["R1"] = r1.health()
    finally:
        for c in Client.started:
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
        for e in engines:
            e.stop()
        redis.stop()

    summary(a, tp, lat, sc)
    for e in engines:
        lines = e.log_lines()
        more = ", the last 20:" if len(lines) > 20 else ""
        print(f"engine {e.name} :{e.port} log (warning level): {len(lines)} lines{more}")
        for text in lines[-20:]:
            print(f"   {text}")
    print("Redis engines' /health at the end: " + "; ".join(
        f"{k} {v.get('status')} (broker {v.get('broker', {}).get('state')})" for k, v in health.items()))
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
