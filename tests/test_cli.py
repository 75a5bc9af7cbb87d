"""`python -m engine` as a user runs it: start-up lines, bad config, signals, exit codes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_SCRIPTS = ROOT / "test_scripts"


class Server:
    """A real engine process; reads its stderr until a line matches."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", *args], cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )

    def wait_line(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError(f"no line matching {pattern!r}; got:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 2.0) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    for name in ("compat_health.js", "bad_syntax.js", "other.js"):
        shutil.copy(TEST_SCRIPTS / name, tmp_path / "scripts" / name)
    return tmp_path


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_starts_logs_serves_and_stops_on_signal(workdir: Path, sig: int) -> None:
    server = Server(["--port", "0"], cwd=workdir)
    try:
        url = server.wait_line(r"serving on (http://\S+)").group(1)
        log = "\n".join(server.lines)
        assert "watching " in log and "a saved script reloads" in log
        assert re.search(r"failed bad_syntax\.js:4: SyntaxError", log), log
        assert "loaded compat_health.js (1 route)" in log and "loaded other.js (1 route)" in log
        assert get(url + "/other") == (200, b"other is fine")
        code, took = server.stop(sig)
        assert code == 0
        assert took < 2.0
    finally:
        server.kill()


def test_stops_within_two_seconds_with_a_request_in_flight(workdir: Path) -> None:
    shutil.copy(TEST_SCRIPTS / "limits.js", workdir / "scripts" / "limits.js")
    server = Server(["--port", "0"], cwd=workdir, env={"ENGINE_LIMITS_SCRIPT_TIME_MS": "60000"})
    try:
        url = server.wait_line(r"serving on (http://\S+)").group(1)
        t = threading.Thread(target=lambda: _swallow(lambda: get(url + "/limits/busy?ms=800")), daemon=True)
        t.start()
        server.wait_line(r"\[limits\.js\] busy for 800 ms")
        code, took = server.stop()
        assert code == 0 and took < 2.0
    finally:
        server.kill()


def _swallow(fn) -> None:
    with contextlib.suppress(OSError):
        fn()


def test_flags_env_and_config_file(workdir: Path) -> None:
    (workdir / "custom.yaml").write_text("scripts:\n  dir: elsewhere\n")
    (workdir / "elsewhere").mkdir()
    shutil.copy(TEST_SCRIPTS / "other.js", workdir / "elsewhere" / "other.js")
    server = Server(["--config", "custom.yaml", "--host", "127.0.0.1"], cwd=workdir,
                    env={"ENGINE_SERVER_PORT": "0", "ENGINE_SERVER_LOOP": "asyncio"})
    try:
        url = server.wait_line(r"serving on (http://\S+)").group(1)
        assert url.startswith("http://127.0.0.1:")
        assert get(url + "/other")[0] == 200
        assert not any("compat_health" in line for line in server.lines)
    finally:
        server.kill()


def test_scripts_flag_wins_over_the_config_file(workdir: Path) -> None:
    (workdir / "custom.yaml").write_text("scripts:\n  dir: scripts\n")
    (workdir / "flagged").mkdir()
    shutil.copy(TEST_SCRIPTS / "compat_query.js", workdir / "flagged" / "compat_query.js")
    server = Server(["--config", "custom.yaml", "--scripts", "flagged", "--port", "0"], cwd=workdir)
    try:
        url = server.wait_line(r"serving on (http://\S+)").group(1)
        assert get(url + "/search?term=x")[0] == 200
        assert not any("other.js" in line for line in server.lines)
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "nope"], {}, "rtengine: config key 'server.port' (from command line): expected int, got 'nope'"),
        ([], {"ENGINE_LIMITS_SCRIPT_MEMORY_MB": "-5"}, "config key 'limits.script_memory_mb' (from environment)"),
        (["--config", "missing.yaml"], {}, "config file missing.yaml: cannot read it"),
    ],
)
def test_bad_config_stops_start_up_with_one_clear_line(workdir: Path, args: list[str], env: dict[str, str],
                                                       message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "engine", *args], cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=20)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_port_in_use_is_a_clear_error(workdir: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "engine", "--port", str(port)], cwd=workdir,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=20)
    assert proc.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in proc.stderr
    assert "loaded" not in proc.stderr, "the port is checked before any script loads"


def test_version_help_log_level_and_no_watch(workdir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    version = subprocess.run([sys.executable, "-m", "engine", "--version"], capture_output=True, text=True, env=env,
                             timeout=20)
    assert version.returncode == 0 and version.stdout.startswith("rtengine ")
    helped = subprocess.run([sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, env=env,
                            timeout=20)
    assert "ENGINE_BROKER_URL" in helped.stdout and "ENGINE_SERVER_PORT" in helped.stdout
    (workdir / "scripts" / "bad_syntax.js").unlink()
    server = Server(["--port", "0", "--log-level", "debug", "--no-watch"], cwd=workdir)
    try:
        assert server.wait_line(r"rtengine \S+ · config: defaults \(no config.yaml\) · scripts: \S+scripts$")
        url = server.wait_line(r"open (http://\S+)/ · console").group(1)
        with urllib.request.urlopen(url + "/health") as r:
            assert json.load(r)["status"] == "ok"
    finally:
        code, _ = server.stop()
        assert server.proc.stderr is not None
        rest = server.proc.stderr.read()
        server.kill()
    assert code == 0
    output = "\n".join(server.lines) + rest
    assert " DEBUG " in output, "--log-level debug"
    assert "a saved script reloads" not in output, "--no-watch"


def test_sigterm_with_open_streams_ends_them_and_exits_in_time(workdir: Path) -> None:
    shutil.copy(TEST_SCRIPTS / "api_streams.js", workdir / "scripts" / "api_streams.js")
    server = Server(["--port", "0"], cwd=workdir)
    readers: list[http.client.HTTPResponse] = []
    conns: list[http.client.HTTPConnection] = []
    try:
        url = server.wait_line(r"serving on (http://\S+)").group(1)
        host, port = url.removeprefix("http://").split(":")
        for _ in range(5):
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conns.append(conn)
            conn.request("GET", "/s/a")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.readline() == b"retry: 2000\n"
            readers.append(resp)
        code, took = server.stop()
        assert code == 0 and took < 2.0
        for resp in readers:  # each stream was ended cleanly: the rest reads to its end
            assert resp.read() == b"\n"
    finally:
        for conn in conns:
            conn.close()
        server.kill()
