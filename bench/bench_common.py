"""What the benchmark drivers share: free loopback ports, waiting for a server to answer."""

from __future__ import annotations

import os
import platform
import socket
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout: float = 30) -> None:
    """Until `url` answers 200, or give up with the reason."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server at {url} did not come up")


def rss_kb(pid: int) -> int:
    """A process's resident memory, in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def get(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()  # type: ignore[no-any-return]


def publish_paced(base: str, messages: int, per_second: float = 20) -> None:
    """One message per `GET {base}/publish` at a steady rate: the latency cases' load."""
    start = time.monotonic()
    for i in range(messages):
        get(f"{base}/publish?n=1&size=200")
        time.sleep(max(0.0, start + (i + 1) / per_second - time.monotonic()))


def machine() -> str:
    """What the figures were measured on, as every benchmark reports it."""
    return f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}"
