"""WebSocket fan-out benchmark, run by hand: the engine's WebSocket readers and long-pollers against a
raw asyncio ceiling, Node's `ws` and plain aiohttp, in one run, with one client, on one machine.

    python bench/ws_fanout_bench.py [--clients 1000] [--burst 200] [--rate-seconds 10]
        [--memory-sockets 5000] [--pollers 1000] [--poll-rate 50] [--poll-seconds 10] [--loop uvloop]
        [--only engine raw_asyncio node_ws aiohttp_ws]

Servers, each in its own process, each publishing on `GET /publish?n=&size=` (messages of 200 bytes
whose data starts "T<epoch ms>|"), each serving WebSocket readers on `/events`:
- engine: `python -m engine` on a scratch copy of bench/fanout_scripts/ (shared with fanout_bench.py);
  a reader is `GET /events` with `Upgrade: websocket`, no subprotocol: a text frame is the data;
- raw_asyncio: bench/ws_raw_server.py, the ceiling: handshake by hand, the same frame bytes written to
  every transport;
- node_ws: bench/ws_node_server.js, the `ws` package from bench/ws_node (npm install --prefix
  bench/ws_node ws), `client.send(data)` for each of `wss.clients`;
- aiohttp_ws: bench/ws_aiohttp_server.py, `await ws.send_str(data)` for each `WebSocketResponse`.
The Python servers run on `--loop` (uvloop by default, as the engine does).

Cases, for each server:
- throughput: `--clients` sockets, one publish of `--burst` messages; delivered events/s over the
  client's first-to-last receive;
- latency: the same number of sockets, 20 messages/s for `--rate-seconds`; publish-to-read p50/p99,
  and publish-to-arrival (the kernel's receive timestamp, leaving the client's own walk out);
- memory (run first, on the fresh server): RSS growth per idle socket at `--memory-sockets` sockets
  (the engine's and the ceiling's are the figures asked for; the other two are measured the same way);
- long-poll (engine only): `--pollers` pollers of `/events?transport=poll`, each polling again with
  the answer's connectionId and lastEventId as soon as it is answered, while `--poll-rate` messages/s
  are published; polls answered/s and events delivered/s over `--poll-seconds`.
The client is bench/ws_client.c (compiled here with gcc), one epoll thread; its CPU share is printed
(over the whole client run, as fanout_bench.py does, and for the burst over its receive span) so it
can be seen whether it set the pace. Publish times have millisecond resolution.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_common import HERE, ROOT, free_port, get, machine, publish_paced, rss_kb, wait_up

SERVERS = ("engine", "raw_asyncio", "node_ws", "aiohttp_ws")
NODE_DIR = HERE / "ws_node"


def build_client() -> Path:
    out = Path(tempfile.gettempdir()) / "rtengine_ws_client"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(HERE / "ws_client.c")], check=True)
    return out


def raise_nofile() -> None:
    """Children inherit it: the servers and the client each hold thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))






def node_problem() -> str | None:
    """Why the Node server cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").exists():
        return "the ws package is not in bench/ws_node (npm install --prefix bench/ws_node ws)"
    return None


def versions() -> dict[str, str]:
    import aiohttp
    out = {"aiohttp": aiohttp.__version__}
    try:
        import uvloop
        out["uvloop"] = uvloop.__version__
    except ImportError:
        pass
    if node_problem() is None:
        out["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        out["ws"] = json.loads((NODE_DIR / "node_modules" / "ws" / "package.json").read_text())["version"]
    return out


class Client:
    """The C client as a subprocess: READY once every socket is attached (or, polling, answered once),
    then one JSON line."""

    def __init__(self, exe: Path, port: int, *args: Any) -> None:
        self.proc = subprocess.Popen([str(exe), args[0], "127.0.0.1", str(port), "/events", *map(str, args[1:])],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.proc.kill()
            raise RuntimeError(f"client did not get ready: {line!r}")
        self.ready = int(line.split()[1])

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=300)
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def share(r: dict[str, Any]) -> float:
    return round(r["cpu_seconds"] / r["wall_seconds"], 2) if r["wall_seconds"] else 0.0


def start_server(kind: str, port: int, loop: str, scripts: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ENGINE_SERVER_LOOP": loop, "ENGINE_LOGS_LEVEL": "warning",
           "ENGINE_STREAMS_MAX_CONNECTIONS": "20000", "ENGINE_STREAMS_MAX_BUFFER_BYTES": str(64 * 1024 * 1024)}
    if kind == "engine":
        cmd = [sys.executable, "-m", "engine", "--port", str(port), "--scripts", str(scripts)]
    elif kind == "raw_asyncio":
        cmd = [sys.executable, str(HERE / "ws_raw_server.py"), str(port), loop]
    elif kind == "aiohttp_ws":
        cmd = [sys.executable, str(HERE / "ws_aiohttp_server.py"), str(port), loop]
    else:
        cmd = ["node", str(HERE / "ws_node_server.js"), str(port)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Publisher(threading.Thread):
    """`rate` messages a second, until stopped; counts them. A server busy with pollers answers a
    publish late: the next publish then carries every message due since (`n` > 1), so the message
    rate holds whatever one publish takes."""

    def __init__(self, base: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.base, self.rate, self.sent, self.publishes, self.halt = base, rate, 0, 0, threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.halt.is_set():
            n = max(1, int((time.monotonic() - start) * self.rate) - self.sent)
            get(f"{self.base}/publish?n={n}&size=200")
            self.sent += n
            self.publishes += 1
            self.halt.wait(max(0.0, start + self.sent / self.rate - time.monotonic()))


def engine_counted(base: str) -> dict[str, int]:
    return json.loads(get(base + "/_engine/streams"))["streams"]["/events"].get("by_transport", {})


def run_server(kind: str, exe: Path, scripts: Path, a: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    server = start_server(kind, port, a.loop, scripts)
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    try:
        wait_up(base + "/publish?n=1")

        # Memory first, on a server that has had no load yet: buffers freed after the bursts would
        # otherwise be reused by the idle sockets and hide their cost. A few sockets come and go first,
        # so that what the first one alone costs (lazily made code paths) is not counted.
        Client(exe, port, "ws", 50, 0, 600).stop()
        time.sleep(0.5)
        before = rss_kb(server.pid)
        c = Client(exe, port, "ws", a.memory_sockets, 0, 600)
        time.sleep(1.0)  # let the server settle its buffers before reading its memory
        after = rss_kb(server.pid)
        out["memory"] = {"sockets": c.ready, "rss_before_kb": before, "rss_after_kb": after,
                         "kb_per_idle_socket": round((after - before) / a.memory_sockets, 2)}
        if kind == "engine":
            out["memory"]["server_counted_by_transport"] = engine_counted(base)
        c.stop()
        time.sleep(1.0)

        c = Client(exe, port, "ws", a.clients, a.clients * a.burst, 120)
        counted = engine_counted(base) if kind == "engine" else None
        t0 = time.monotonic()
        get(f"{base}/publish?n={a.burst}&size=200")
        r = c.result()
        out["throughput"] = {
            "clients": a.clients, "connected": r["connected"], "messages": a.burst, "events": r["events"],
            "expected": a.clients * a.burst,
            "events_per_s": round(r["events"] / (r["receive_span_ms"] / 1000), 0) if r["receive_span_ms"] else None,
            "publish_to_last_receive_s": round(time.monotonic() - t0, 3),
            "client_cpu_share": share(r),
            # the client's CPU over the burst alone (its connects cost little): near 1 means the
            # client, not the server, set the pace
            "client_cpu_per_receive_span": round(r["cpu_seconds"] / (r["receive_span_ms"] / 1000), 2)
            if r["receive_span_ms"] else None,
        }
        if counted is not None:
            out["throughput"]["server_counted_by_transport"] = counted

        messages = int(20 * a.rate_seconds)
        c = Client(exe, port, "ws", a.clients, a.clients * messages, a.rate_seconds + 30)
        publish_paced(base, messages)
        r = c.result()
        out["latency_20_per_s"] = {"clients": a.clients, "events": r["events"], "expected": a.clients * messages,
                                   "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                                   "arrive_p50_ms": r["arrive_p50_ms"], "arrive_p99_ms": r["arrive_p99_ms"],
                                   "pings_answered": r["pings"], "client_cpu_share": share(r)}

        if kind == "engine":
            out["long_poll"] = run_poll(exe, port, base, a)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return out


def run_poll(exe: Path, port: int, base: str, a: argparse.Namespace) -> dict[str, Any]:
    pub = Publisher(base, a.poll_rate)
    pub.start()
    try:
        c = Client(exe, port, "poll", a.pollers, a.poll_seconds, 30)
        sent_at_ready, publishes_at_ready = pub.sent, pub.publishes
        r = c.result()
        sent, publishes = pub.sent - sent_at_ready, pub.publishes - publishes_at_ready
    finally:
        pub.halt.set()
        pub.join()
    w = r["window_seconds"]
    return {
        "pollers": a.pollers, "answered_once": r["answered_once"], "publish_rate": a.poll_rate,
        "window_s": w, "messages_published_in_window": sent, "publish_requests_in_window": publishes,
        "polls": r["polls"], "polls_per_s": round(r["polls"] / w, 0), "empty_polls": r["empty_polls"],
        "events": r["events"], "events_per_s": round(r["events"] / w, 0),
        "events_per_poll": round(r["events"] / r["polls"], 2) if r["polls"] else None,
        "offered_events_per_s": round(a.pollers * sent / w, 0),
        "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
        "errors": r["errors"], "bad_status": r["bad_status"], "reconnects": r["reconnects"],
        "client_cpu_share": share(r),
    }


def ratio(x: float | None, y: float | None) -> float | None:
    return round(x / y, 3) if x and y else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--rate-seconds", type=float, default=10)
    ap.add_argument("--memory-sockets", type=int, default=5000)
    ap.add_argument("--pollers", type=int, default=1000)
    ap.add_argument("--poll-rate", type=float, default=50, help="messages/s published during the long-poll case")
    ap.add_argument("--poll-seconds", type=float, default=10)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--only", nargs="+", choices=SERVERS, default=list(SERVERS))
    a = ap.parse_args()
    raise_nofile()
    exe = build_client()
    started = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rtengine_ws_bench_") as tmp:
        scripts = Path(tmp) / "scripts"
        shutil.copytree(HERE / "fanout_scripts", scripts)
        for kind in a.only:
            if kind == "node_ws" and (problem := node_problem()) is not None:
                results[kind] = {"skipped": problem}
                continue
            results[kind] = run_server(kind, exe, scripts, a)
            print(f"{kind} done at {time.monotonic() - started:.0f} s", file=sys.stderr)

    def fig(kind: str, case: str, key: str) -> float | None:
        return results.get(kind, {}).get(case, {}).get(key)

    ratios = {}
    for other in ("raw_asyncio", "node_ws", "aiohttp_ws"):
        if other in results and "skipped" not in results[other] and "engine" in results:
            ratios[f"engine_vs_{other}"] = {
                "events_per_s": ratio(fig("engine", "throughput", "events_per_s"),
                                      fig(other, "throughput", "events_per_s")),
                "latency_p99": ratio(fig("engine", "latency_20_per_s", "p99_ms"),
                                     fig(other, "latency_20_per_s", "p99_ms")),
                "kb_per_idle_socket": ratio(fig("engine", "memory", "kb_per_idle_socket"),
                                            fig(other, "memory", "kb_per_idle_socket")),
            }
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "loop": a.loop,
        "machine": machine(),
        "versions": versions(), "seconds": round(time.monotonic() - started, 1),
        **results, "ratios": ratios,
    }, indent=2))


if __name__ == "__main__":
    main()
