"""Scale benchmark, run by hand (as root): 100,000 idle SSE readers in one engine process, one broadcast.

    python bench/scale_bench.py [--readers 100000] [--source-addrs N] [--rate 10000] [--inflight 100]
                                [--size 100] [--loop uvloop]

What it does, loopback only and bounded in count and time:
- compiles bench/scale_client.c (one epoll thread, 512 bytes of buffer per reader) with gcc;
- raises RLIMIT_NOFILE (soft and hard) in this process to readers + 4,096, so the engine and the client,
  both started from here, inherit a hard limit high enough (above the usual hard limit: needs root);
- starts the engine as `python -m engine` on a scratch scripts folder (one stream, `/events`, and a
  `/publish` route), with `streams.max_connections` at readers + 1,000;
- reads the server's RSS, opens `--readers` readers (each socket bound to a source address in
  127.0.0.2 .. 127.0.0.(1+N), so each address has its own ephemeral port range), waits for all of
  their response heads, lets the server settle, reads its RSS again: KB per idle reader;
- asks /_engine/streams how many readers the server counts;
- publishes one message (its data starts with its publish time in ms, `Date.now()`) through the
  route, and reports from the client the time from publish to the first, median, p99 and last
  reader's receipt, and whether every reader got it.
Prints one JSON report. Every process it started is ended on the way out, on failure too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import HERE, ROOT, free_port, get, rss_kb, wait_up

SCRIPT = """\
// The engine side of bench/scale_bench.py: one stream, and a route that publishes n messages of
// `size` bytes whose data starts with the publish time ("T<epoch ms>|"), for the client's latency.
registerWebStream("/events");
const PAD = "x".repeat(4096);
register("/ping", function () { return "ok"; });
register("/publish", function (req) {
  const n = Number(req.query.n) || 1, size = Number(req.query.size) || 100;
  for (let i = 0; i < n; i++) {
    const head = "T" + Date.now() + "|";
    sendStreamMessage(head + PAD.slice(0, Math.max(0, size - head.length)));
  }
  return "ok";
});
"""


def build_client() -> Path:
    out = Path(tempfile.gettempdir()) / "rtengine_scale_client"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(HERE / "scale_client.c")], check=True)
    return out




def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def sockstat() -> dict[str, int]:
    """TCP sockets in use and the kernel's TCP buffer memory (pages): not part of any process's RSS."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            f = line.split()[1:]
            d = dict(zip(f[::2], (int(x) for x in f[1::2]), strict=True))
            return {"tcp_inuse": d.get("inuse", -1), "tcp_mem_pages": d.get("mem", -1)}
    return {}


def sysctl(name: str) -> str:
    try:
        return Path("/proc/sys/" + name.replace(".", "/")).read_text().split("\n")[0].replace("\t", " ")
    except OSError:
        return "n/a"




def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of `proc`, or "" if it does not come within `timeout` seconds."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return ""
        return proc.stdout.readline()
    finally:
        sel.close()


def stop(proc: subprocess.Popen[Any] | None, grace: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def preflight(a: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """What limits this run depends on; refuse to start when one of them is too low."""
    lo, hi = (int(x) for x in sysctl("net.ipv4.ip_local_port_range").split())
    ports = hi - lo + 1
    names = ("net.ipv4.ip_local_port_range", "fs.nr_open", "fs.file-max", "net.core.somaxconn",
             "net.ipv4.tcp_max_syn_backlog", "net.netfilter.nf_conntrack_max", "net.ipv4.tcp_mem")
    limits: dict[str, Any] = {k: sysctl(k) for k in names}
    want_files = a.readers + 4096
    problems = []
    if int(limits["fs.nr_open"]) < want_files:
        problems.append(f"fs.nr_open {limits['fs.nr_open']} < {want_files}")
    if int(limits["fs.file-max"]) < 2 * a.readers + 10000:
        problems.append(f"fs.file-max {limits['fs.file-max']} < {2 * a.readers + 10000} (both ends are here)")
    per_addr = math.ceil(a.readers / a.source_addrs)
    if per_addr > ports * 0.9:
        problems.append(f"{per_addr} readers per source address, {ports} ephemeral ports: use more --source-addrs")
    ct = limits["net.netfilter.nf_conntrack_max"]
    if ct != "n/a" and int(ct) < a.readers + 10000:
        problems.append(f"net.netfilter.nf_conntrack_max {ct} < {a.readers + 10000}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    try:  # raising the hard limit needs CAP_SYS_RESOURCE (root, outside a container that drops it)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft if soft == inf or soft >= want_files else want_files,
                                                    hard if hard == inf or hard >= want_files else want_files))
    except (ValueError, OSError) as e:
        limits["RLIMIT_NOFILE raise"] = f"refused ({e}): the hard limit stays {hard}"
        if hard != inf:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits["RLIMIT_NOFILE (inherited)"] = f"{soft} {hard}"
    if hard != inf and hard < a.readers + 64:  # the server's own files (about 25: listener, epoll, threads) too
        problems.append(f"hard RLIMIT_NOFILE is {hard} and could not be raised: one process cannot hold "
                        f"{a.readers} readers (at most about {hard - 64})")
    limits["ephemeral_ports_per_source_addr"] = ports
    limits["readers_per_source_addr"] = per_addr
    return limits, problems


def run(a: argparse.Namespace, exe: Path, out: dict[str, Any]) -> None:
    port = free_port()
    scripts = Path(tempfile.mkdtemp(prefix="rtengine_scale_"))
    (scripts / "scale.js").write_text(SCRIPT)
    log = scripts.parent / (scripts.name + ".log")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ENGINE_SERVER_LOOP": a.loop, "ENGINE_LOGS_LEVEL": "warning",
           "ENGINE_STREAMS_MAX_CONNECTIONS": str(a.readers + 1000)}
    server = client = None
    try:
        with open(log, "wb") as logf:
            server = subprocess.Popen([sys.executable, "-m", "engine", "--port", str(port), "--scripts",
                                       str(scripts)], cwd=ROOT, env=env, stdout=logf, stderr=logf)
        base = f"http://127.0.0.1:{port}"
        wait_up(base + "/ping")
        for _ in range(20):  # warm the route and the publish path (no readers yet)
            get(f"{base}/publish?n=1&size={a.size}")
        time.sleep(1.0)
        before, sock_before = rss_kb(server.pid), sockstat()

        t0 = time.monotonic()
        client = subprocess.Popen(
            [str(exe), "127.0.0.1", str(port), "/events", str(a.readers), str(a.source_addrs), str(a.rate),
             str(a.inflight), str(a.connect_seconds), "1", str(a.wait_seconds)],
            stdout=subprocess.PIPE, text=True)
        line = read_line(client, a.connect_seconds + 30)
        if not line.startswith("READY"):
            raise RuntimeError(f"client did not get ready: {line!r}")
        ready = int(line.split()[1])
        connect_wall = time.monotonic() - t0
        time.sleep(a.settle)  # let the server settle its buffers before reading its memory
        after, sock_after = rss_kb(server.pid), sockstat()
        info = json.loads(get(base + "/_engine/streams"))
        out["readers"] = {
            "asked": a.readers, "ready_at_client": ready, "server_counted": info["connections"],
            "server_max_connections": info["max_connections"], "connect_wall_s": round(connect_wall, 2),
            "connect_rate_per_s": round(ready / connect_wall, 0) if connect_wall else None,
        }
        out["memory"] = {
            "rss_before_kb": before, "rss_after_kb": after,
            "kb_per_idle_reader": round((after - before) / max(ready, 1), 3),
            "target_kb_per_reader": 1.5,
            "kernel_tcp_before": sock_before, "kernel_tcp_after": sock_after,
        }

        cpu0 = cpu_seconds(server.pid)
        t_pub = time.time()
        get(f"{base}/publish?n=1&size={a.size}")
        route_ms = (time.time() - t_pub) * 1000
        line = read_line(client, a.wait_seconds + 30)
        if not line.strip().startswith("{"):
            raise RuntimeError(f"client gave no result: {line!r}")
        r = json.loads(line)
        client.wait(30)
        server_cpu = cpu_seconds(server.pid) - cpu0
        out["broadcast"] = {
            "message_bytes": a.size, "readers": ready, "events": r["events"],
            "readers_with_the_message": r["readers_with_all_messages"],
            "all_reached": r["readers_with_all_messages"] == ready == a.readers,
            "publish_route_round_trip_ms": round(route_ms, 1),
            "publish_to_first_read_ms": r["first_ms"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "publish_to_last_read_ms": r["last_ms"],
            "publish_to_last_arrival_ms": r["arrive_last_ms"],
            "arrive_p50_ms": r["arrive_p50_ms"], "arrive_p99_ms": r["arrive_p99_ms"],
            "receive_span_ms": r["receive_span_ms"],
            "server_cpu_s_publish_to_end": round(server_cpu, 2),
            "client_cpu_s_after_ready": r["cpu_seconds_after_ready"],
            "client_wall_s_after_ready": r["wall_seconds_after_ready"],
        }
        out["client"] = {k: r[k] for k in ("connections", "ready", "failed", "connect_seconds", "open_at_end",
                                           "errors", "source_addrs", "cpu_seconds", "cpu_seconds_connect",
                                           "max_rss_kb")}
    finally:
        stop(client, 10)
        stop(server, 60)
        if server is not None:
            out["server_exit_code"] = server.returncode
        try:
            tail = log.read_text(errors="replace").splitlines()[-20:]
            if tail:
                out["server_log_tail"] = tail
        except OSError:
            pass
        shutil.rmtree(scripts, ignore_errors=True)
        log.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readers", type=int, default=100000)
    ap.add_argument("--source-addrs", type=int, default=0, help="source addresses from 127.0.0.2 (0: one per "
                    "20,000 readers)")
    ap.add_argument("--rate", type=float, default=10000, help="new connections a second, at most")
    ap.add_argument("--inflight", type=int, default=100, help="readers between connect and response head, at "
                    "most (below the server's listen backlog, 128)")
    ap.add_argument("--size", type=int, default=100, help="bytes of the broadcast message")
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--connect-seconds", type=float, default=300)
    ap.add_argument("--wait-seconds", type=float, default=120)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    a = ap.parse_args()
    if not 1 <= a.readers <= 500000:
        raise SystemExit("--readers: 1 .. 500,000")
    if a.source_addrs <= 0:
        a.source_addrs = max(1, math.ceil(a.readers / 20000))
    a.source_addrs = min(a.source_addrs, 250)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` ends the children
    limits, problems = preflight(a)
    out: dict[str, Any] = {}
    error = None
    t0 = time.monotonic()
    if problems:
        error = "not run: " + "; ".join(problems)
    else:
        try:
            run(a, build_client(), out)
        except Exception as e:  # the report says what failed; the children are already ended
            error = f"{type(e).__name__}: {e}"
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "loop": a.loop,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB, "
                   f"Linux {platform.release()}, CPython {platform.python_version()}",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "limits": limits, **out, "wall_s": round(time.monotonic() - t0, 1),
    }
    if error:
        report["error"] = error
    print(json.dumps(report, indent=2))
    if error:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
