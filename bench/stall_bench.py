"""Loop-stall benchmark, run by hand: the worst cases of issue 10, and the longest the event loop was held.

    python bench/stall_bench.py [--only CASE ...] [--root PATH] [--case-timeout 60]

Each case gets a fresh server (bench/stall_server.py: the engine, plus a 1 ms ticker on its loop) with
bench/stall_scripts/, its readers in other processes (bench/sse_client.c, bench/stall_clients.py), and
one trigger. The figure is the largest gap between two ticks from the trigger to the end of its work:
how long one request or script call held the loop that every other client needs. `--root` runs the
same cases against another checkout of the engine (an older commit, to compare); a case that does not
finish within `--case-timeout` seconds is reported as such and its server is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_common import HERE, ROOT, free_port, machine, wait_up
from fanout_bench import build_client


class Server:
    """One engine, started fresh for one case."""

    def __init__(self, root: Path, timeout: float) -> None:
        self.port, self.control = free_port(), free_port()
        self.timeout = timeout
        self.cwd = tempfile.mkdtemp(prefix="stall-")  # no config.yaml: defaults, then these
        scripts = Path(self.cwd) / "scripts"  # a copy: cases save scripts into it
        shutil.copytree(HERE / "stall_scripts", scripts)
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{HERE}", "ENGINE_SERVER_PORT": str(self.port),
               "ENGINE_SCRIPTS_DIR": str(scripts), "ENGINE_SCRIPTS_WATCH": "false",
               "ENGINE_STREAMS_MAX_CONNECTIONS": "20000", "ENGINE_LOGS_LEVEL": "info"}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "stall_server.py"), str(self.control)],
                                     cwd=self.cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_up(self.base + "/health")

    def gaps(self) -> dict[str, Any]:
        with socket.create_connection(("127.0.0.1", self.control), timeout=self.timeout) as s:
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return json.loads(data)  # type: ignore[no-any-return]

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def graphql(self, query: str) -> tuple[int, bytes]:
        return self.request("/graphql", "POST", json.dumps({"query": query}).encode(),
                            {"Content-Type": "application/json"})

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.cwd, ignore_errors=True)


def readers(args: list[str]) -> subprocess.Popen[str]:
    """A reader process; returns once it says READY (every reader has its response head)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        raise RuntimeError(f"readers did not get ready: {line!r}")
    return proc


ITEMS = "id a b c d e f g h i"


def case_idle(s: Server, _: Any) -> dict[str, Any]:
    time.sleep(3)
    return {}


def case_logs(s: Server, _: Any) -> dict[str, Any]:
    status, _body = s.request("/stall/logs?n=50000")
    return {"status": status}


def case_sends(s: Server, ctx: Any) -> dict[str, Any]:
    c = readers([str(ctx["sse_client"]), "127.0.0.1", str(s.port), "/stall/s", "500", "0", "600"])
    try:
        s.gaps()  # from the trigger on
        status, _body = s.request("/stall/sends?n=20000&bytes=100")
        streams = json.loads(s.request("/_engine/streams")[1])
        return {"status": status, "readers": 500, "readers_left": streams["streams"]["/stall/s"]["connections"]}
    finally:
        c.kill()


def case_wide(s: Server, ctx: Any) -> dict[str, Any]:
    c = readers([str(ctx["sse_client"]), "127.0.0.1", str(s.port), "/stall/s", "10000", "0", "600"])
    try:
        s.gaps()  # from the trigger on
        status, _body = s.request("/stall/sends?n=5&bytes=100")
        time.sleep(1.0)  # the fan-out goes on after the answer: give it time to end within the measure
        return {"status": status, "readers": 10000}
    finally:
        c.kill()


def case_subscriptions(s: Server, _: Any) -> dict[str, Any]:
    query = urllib.parse.quote("subscription { aXXX: feed { id a b } }").replace("XXX", "{i}")
    c = readers([sys.executable, str(HERE / "stall_clients.py"), str(s.port), "1000", f"/graphql/sse?query={query}"])
    try:
        deadline = time.monotonic() + 60  # a subscriber counts once its resolver has run, after its head
        while json.loads(s.request("/_engine/streams")[1])["connections"] < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
        s.gaps()  # from the trigger on
        status, _body = s.request("/stall/publish?n=100")
        return {"status": status, "subscribers": 1000, "groups": 1000}
    finally:
        c.kill()


def case_aliases(s: Server, _: Any) -> dict[str, Any]:
    status, body = s.graphql("{ " + " ".join(f"a{i}:one" for i in range(3000)) + " }")
    return {"status": status, "answer": json.loads(body).get("errors", [{}])[0].get("message", "answered")[:80]}


def case_validation(s: Server, _: Any) -> dict[str, Any]:
    status, body = s.graphql("{ items(n: 1) { " + " ".join(["id"] * 999) + " } }")
    return {"status": status, "answer": "errors" if "errors" in json.loads(body) else "data"}


def case_objects(s: Server, _: Any) -> dict[str, Any]:
    status, body = s.graphql(f"{{ items(n: 10000) {{ {ITEMS} }} }}")
    data = json.loads(body)
    return {"status": status, "items": len((data.get("data") or {}).get("items") or []), "bytes": len(body)}


def case_client_leaves(s: Server, _: Any) -> dict[str, Any]:
    """1,000 aliases of a 150 ms resolver; the client leaves after 1 s. Then: how long until the
    script answers again (it must not run the calls nobody waits for)."""
    body = json.dumps({"query": "{ " + " ".join(f"a{i}: slow(ms: 150)" for i in range(1000)) + " }"}).encode()
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.sendall(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        time.sleep(1.0)
    left = time.monotonic()
    status, calls = s.request("/stall/slow-calls")
    return {"status": status, "script_busy_after_client_left_s": round(time.monotonic() - left, 2),
            "resolver_calls_run": int(calls or 0)}


ROUTES_SCRIPT = (b'for (let i = 0; i < 30000; i++) register(i % 2 ? "/r" + i + "/{id}" : "/r" + i, '
                 b'(req) => "r");')


def case_load_routes(s: Server, _: Any) -> dict[str, Any]:
    status, _body = s.request("/_engine/scripts/routes.js", "PUT", ROUTES_SCRIPT)
    return {"status": status}


def case_register(s: Server, _: Any) -> dict[str, Any]:
    s.request("/_engine/scripts/routes.js", "PUT", ROUTES_SCRIPT)
    s.gaps()  # the load is the case above: start counting from here
    status, body = s.request("/stall/register?n=1000")
    return {"status": status, "registered": body.decode()[:20]}


def case_big(s: Server, _: Any) -> dict[str, Any]:
    statuses = [s.request("/stall/big?n=5")[0] for _ in range(100)]
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{s.proc.pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return {"ok": statuses.count(200), "failed": len(statuses) - statuses.count(200), "rss_mb_after": round(rss / 1024)}


PATTERNS_SCRIPT = b'for (let i = 0; i < 30000; i++) register("/p" + i + "/{x}", (req) => "p");'


def case_patterns(s: Server, _: Any) -> dict[str, Any]:
    s.request("/_engine/scripts/patterns.js", "PUT", PATTERNS_SCRIPT)
    s.gaps()  # the load is another case: from here on
    statuses = [s.request("/zz/y")[0] for _ in range(200)]
    return {"statuses": sorted(set(statuses)), "requests": len(statuses)}


def case_lines(s: Server, _: Any) -> dict[str, Any]:
    return {"status": s.request("/stall/lines", "POST")[0]}


def _multipart(parts: int) -> tuple[bytes, dict[str, str]]:
    body = b"".join(b"--B\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n" % i for i in range(parts))
    return body + b"--B--\r\n", {"Content-Type": "multipart/form-data; boundary=B"}


def case_form(s: Server, _: Any) -> dict[str, Any]:
    out = {}
    for parts in (1000, 18000):
        body, headers = _multipart(parts)
        status, answer = s.request("/stall/form", "POST", body, headers)
        out[f"{parts}_parts"] = f"{status} {answer.decode()[:40]}"
    return out


def case_fragment_bomb(s: Server, _: Any) -> dict[str, Any]:
    query = ('{ __type(name: "Query") { ...F40 } } fragment F0 on __Type { ...F0 } '
             + " ".join(f"fragment F{k} on __Type {{ ...F{k - 1} ...F{k - 1} }}" for k in range(1, 41)))
    status, body = s.graphql(query)
    return {"status": status, "answer": json.loads(body).get("errors", [{}])[0].get("message", "answered")[:80]}


TYPES = " ".join(f"type T{i} {{ " + " ".join(f"f{j}: Int" for j in range(60)) + " }" for i in range(100))
INTROSPECTION_SCRIPT = ('registerGraphQLQuery("t", "type Query { t: T0 } ' + TYPES + '", () => null);').encode()


def case_introspection(s: Server, _: Any) -> dict[str, Any]:
    s.request("/_engine/scripts/schema.js", "PUT", INTROSPECTION_SCRIPT)
    s.gaps()
    alias = "a{}: __schema {{ types {{ fields {{ type {{ fields {{ name }} }} }} }} }}"
    query = "{ " + " ".join(alias.format(i) for i in range(25)) + " }"
    status, body = s.graphql(query)
    return {"status": status, "bytes": len(body)}


GQL_SCRIPT = (b'for (let i = 0; i < 300; i++) registerGraphQLQuery("q" + i, "type Query { q" + i + ": Int }", () => i);'
              )


def case_gql_register(s: Server, _: Any) -> dict[str, Any]:
    s.request("/_engine/scripts/gql.js", "PUT", GQL_SCRIPT)
    s.gaps()
    status, body = s.request("/stall/gql-register?n=20")
    return {"status": status, "registered": body.decode()[:10]}


CASES: dict[str, tuple[str, Callable[[Server, Any], dict[str, Any]]]] = {
    "idle": ("nothing but the ticker, 3 s (the floor)", case_idle),
    "logs": ("one call making 50,000 writeLog calls", case_logs),
    "sends": ("one call sending 20,000 messages to 500 readers", case_sends),
    "wide": ("5 messages, one by one, to 10,000 readers of one stream", case_wide),
    "subscriptions": ("100 sendSubscriptionMessage to 1,000 subscribers, each its own selection", case_subscriptions),
    "graphql_3000_aliases": ("a query of 3,000 aliases of a field", case_aliases),
    "graphql_validation": ("a query selecting one field 999 times (validation is quadratic in it)", case_validation),
    "graphql_100k_fields": ("a resolver's 10,000 objects of 10 fields: 100,000 result fields", case_objects),
    "graphql_client_leaves": ("1,000 aliases of a 150 ms resolver, the client gone after 1 s", case_client_leaves),
    "load_30000_routes": ("saving a script of 30,000 routes through the admin API", case_load_routes),
    "register_1000_more": ("a handler registering 1,000 routes into a table of 30,000", case_register),
    "big_messages": ("500 messages of 1 MiB to 5 streams, 5 per call (history bounded in bytes)", case_big),
    "patterns_404": ("200 requests for a missing path, with 30,000 pattern routes", case_patterns),
    "line_breaks": ("one message of a million line breaks", case_lines),
    "forms": ("multipart forms of 1,000 and 18,000 parts", case_form),
    "fragment_bomb": ("a fragment that spreads itself, doubled 40 times (a 1.7 KB query)", case_fragment_bomb),
    "introspection": ("25 aliases of a deep __schema query on 100 types of 60 fields", case_introspection),
    "graphql_register_20": ("a handler registering 20 GraphQL fields next to 300", case_gql_register),
}


def run_case(name: str, root: Path, timeout: float, ctx: dict[str, Any]) -> dict[str, Any]:
    what, fn = CASES[name]
    server = Server(root, timeout)
    try:
        time.sleep(0.5)  # let start-up settle
        server.gaps()
        started = time.monotonic()
        try:
            detail = fn(server, ctx)
        except (TimeoutError, OSError) as e:
            return {"case": what, "finished": False, "why": f"no answer within {timeout:g} s ({type(e).__name__})"}
        took = time.monotonic() - started
        gaps = server.gaps()
        return {"case": what, "finished": True, "seconds": round(took, 2), "max_stall_ms": gaps["max_ms"],
                "p99_tick_ms": gaps["p99_ms"], "gc_max_ms": gaps["gc_max_ms"], "gc_worst": gaps.get("gc_worst"),
                **detail}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", choices=list(CASES))
    ap.add_argument("--root", type=Path, default=ROOT, help="the engine checkout to measure")
    ap.add_argument("--case-timeout", type=float, default=60)
    a = ap.parse_args()
    ctx = {"sse_client": build_client()}
    results = {}
    for name in a.only or list(CASES):
        results[name] = run_case(name, a.root.resolve(), a.case_timeout, ctx)
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "root": str(a.root),
                      "machine": machine(),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
