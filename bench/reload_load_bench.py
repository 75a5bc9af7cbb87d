"""Hot reload under load, run by hand: file write to new code serving, while 1,000 readers take
100 events/s that the reloaded script itself keeps publishing.

    python bench/reload_load_bench.py [--saves 30] [--readers 1000] [--rate 100] [--debounce-ms 20]

Starts `python -m engine` on a scratch folder with one script: a stream, a top-level interval that
publishes to it `--rate` times a second, and `GET /v` answering the version. The C client
(bench/sse_client.c, as in fanout_bench.py) holds `--readers` readers of the stream for the whole
run; one more reader here parses every event id, to check the ids run on without a gap or a repeat
across every reload. Each round rewrites the file with a new version and asks `GET /v` over one
kept-alive connection until the new version answers: write-to-served p50, p95 and max.
"""

from __future__ import annotations

import argparse
import http.client
import re
import threading
import time

from fanout_bench import Client, build_client
from reload_bench import percentiles, report, save_and_wait, scratch_engine


def source(version: int, rate: int) -> str:
    return (f'registerWebStream("/events");\nregister("/v", () => "{version}");\n'
            f'let n = 0;\nsetInterval(() => sendStreamMessage("v{version} " + (++n)), {max(4, 1000 // rate)});\n')


class IdChecker(threading.Thread):
    """One reader that reads every event id: the ids must run on by one, reload after reload."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", "/events")
        self.stream = self.conn.getresponse()
        self.ids: list[int] = []
        self.epochs: set[str] = set()
        self.stop = False

    def run(self) -> None:
        pattern = re.compile(rb"^id: ([0-9a-f]+)-(\d+)$")
        while not self.stop:
            line = self.stream.readline()
            if not line:
                return
            m = pattern.match(line.rstrip(b"\r\n"))
            if m:
                self.epochs.add(m.group(1).decode())
                self.ids.append(int(m.group(2)))


def run(a: argparse.Namespace) -> dict[str, object]:
    exe = build_client()
    with scratch_engine(source(0, a.rate), a.debounce_ms,
                        ENGINE_STREAMS_MAX_CONNECTIONS=str(a.readers + 100)) as (script, port):
        seconds = a.saves * 0.5 + 30
        load = Client(exe, port, a.readers, 10**9, seconds)  # reads for the whole run
        checker = IdChecker(port)
        checker.start()
        time.sleep(1.0)  # the interval has been publishing to everyone for a while
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        # each save is one of its own, with events flowing in between
        times = [save_and_wait(script, source(version, a.rate), conn, version, pause=0.5)
                 for version in range(1, a.saves + 1)]
        time.sleep(0.5)
        checker.stop = True
        ids = checker.ids
        gaps = sum(1 for x, y in zip(ids, ids[1:], strict=False) if y != x + 1)
        load.stop()
        return {"saves": a.saves, "readers": load.ready, "rate_per_s": a.rate, "debounce_ms": a.debounce_ms,
                **percentiles(times), "events_checked": len(ids), "id_gaps_or_repeats": gaps,
                "epochs_seen": len(checker.epochs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--saves", type=int, default=30)
    ap.add_argument("--readers", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--debounce-ms", type=int, default=20)
    report(run(ap.parse_args()))


if __name__ == "__main__":
    main()
