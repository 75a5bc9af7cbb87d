"""The engine as `python -m engine` runs it, plus a 1 ms ticker on its event loop: bench/stall_bench.py's server.

    PYTHONPATH=<engine checkout> python bench/stall_server.py CONTROL_PORT   (settings from ENGINE_* as usual)

The ticker records the largest gap between two of its ticks: how long the loop was held by something
else. A connection to 127.0.0.1:CONTROL_PORT gets `{"max_ms", "p99_ms", "ticks"}` since the last one
(and resets them). The ticker and the control server are the bench's own: the engine is unchanged,
so the same wrapper measures an older checkout too.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import threading
import time

from engine.app import serve
from engine.cli import loop_factory
from engine.config import load_config


class Gaps:
    """Gaps between ticks, and the garbage collector's pauses (a cause of stalls of its own)."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.gc_max = 0.0
        self.gc_worst = ""
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_start
            if took > self.gc_max:
                self.gc_max = took
                where = threading.current_thread().name
                self.gc_worst = f"gen {info['generation']}, {info['collected']} collected, {where}"

    def take(self) -> dict[str, float]:
        gaps, self.gaps = sorted(self.gaps), []
        gc_max, self.gc_max = self.gc_max, 0.0
        worst, self.gc_worst = self.gc_worst, ""
        if not gaps:
            return {"max_ms": 0.0, "p99_ms": 0.0, "ticks": 0, "gc_max_ms": round(gc_max * 1000, 2)}
        return {"max_ms": round(gaps[-1] * 1000, 2), "p99_ms": round(gaps[int(len(gaps) * 0.99)] * 1000, 2),
                "ticks": len(gaps), "gc_max_ms": round(gc_max * 1000, 2), "gc_worst": worst}


async def ticker(gaps: Gaps) -> None:
    last = time.perf_counter()
    while True:
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.gaps.append(now - last)
        last = now


async def main(control_port: int) -> None:
    config = load_config(None, os.environ)
    gaps = Gaps()

    async def report(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(gaps.take()).encode())
        await writer.drain()
        writer.close()

    control = await asyncio.start_server(report, "127.0.0.1", control_port)
    task = asyncio.create_task(ticker(gaps))
    try:
        await serve(config)
    finally:
        task.cancel()
        control.close()


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("ENGINE_LOGS_LEVEL", "info").upper(), stream=sys.stderr)
    with asyncio.Runner(loop_factory=loop_factory(os.environ.get("ENGINE_SERVER_LOOP", "uvloop"))) as runner:
        runner.run(main(int(sys.argv[1])))
