"""Hot-reload latency, run by hand: from a file write to the new behaviour being served.

    python bench/reload_bench.py [--saves 50] [--routes 1] [--debounce-ms 20]

Starts `python -m engine` on a scratch scripts folder holding one script with `--routes` routes and a
stream. Each round rewrites the file with a new version number and then asks `GET /v` over one
kept-alive connection, as fast as it answers, until the new number comes back. Reports p50, p95
and max of write-to-served, and the same with a client connected to the script's stream.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_common import ROOT, free_port, machine, wait_up


def source(version: int, routes: int) -> str:
    lines = ['registerWebStream("/events");', f'register("/v", () => "{version}");',
             'setInterval(() => sendStreamMessage("tick"), 100);']
    route = 'register("/r{i}/{{id}}", (req) => ({{ body: {{ i: {i}, id: req.params.id }} }}));'
    lines += [route.format(i=i) for i in range(routes)]
    return "\n".join(lines) + "\n"


def save_and_wait(script: Path, text: str, conn: http.client.HTTPConnection, version: int, pause: float) -> float:
    """Write the new version, ask `GET /v` until it answers it: milliseconds from write to served.
    Then `pause`, so each save is one of its own (not a burst)."""
    start = time.perf_counter()
    script.write_text(text)
    while True:
        conn.request("GET", "/v")
        if conn.getresponse().read().decode() == str(version):
            break
    took = (time.perf_counter() - start) * 1000
    time.sleep(pause)
    return took


@contextmanager
def scratch_engine(text: str, debounce_ms: int, **env_extra: str) -> Iterator[tuple[Path, int]]:
    """`python -m engine` on a scratch folder holding `v.js` (`text`): the script's file and the port."""
    folder = Path(tempfile.mkdtemp(prefix="reload_bench_"))
    script = folder / "v.js"
    script.write_text(text)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ENGINE_LOGS_LEVEL": "warning",
           "ENGINE_SCRIPTS_DEBOUNCE_MS": str(debounce_ms), **env_extra}
    server = subprocess.Popen([sys.executable, "-m", "engine", "--port", str(port), "--scripts", str(folder)],
                              env=env, cwd=ROOT)
    try:
        wait_up(f"http://127.0.0.1:{port}/v")
        yield script, port
    finally:
        server.terminate()
        server.wait()


def report(result: dict[str, object]) -> None:
    print(json.dumps({"date": time.strftime("%Y-%m-%d"),
                      "machine": machine(),
                      **result}, indent=2))


def percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
            "max_ms": round(times[-1], 1)}


def run(a: argparse.Namespace) -> dict[str, object]:
    with scratch_engine(source(0, a.routes), a.debounce_ms) as (script, port):
        reader = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # a stream reader held throughout
        reader.request("GET", "/events")
        stream = reader.getresponse()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        times = [save_and_wait(script, source(version, a.routes), conn, version, pause=0.2)
                 for version in range(1, a.saves + 1)]
        return {"saves": a.saves, "routes": a.routes, "debounce_ms": a.debounce_ms, **percentiles(times),
                "stream_reader_still_connected": not stream.isclosed()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--saves", type=int, default=50)
    ap.add_argument("--routes", type=int, default=1)
    ap.add_argument("--debounce-ms", type=int, default=20)
    report(run(ap.parse_args()))


if __name__ == "__main__":
    main()
