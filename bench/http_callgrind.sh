#!/bin/bash
# Instructions per request, run by hand: the JS route and the plain aiohttp handler of http_bench.py,
# each under valgrind's callgrind, counted over 20 s of `wrk -t1 -c50` (all threads of the server).
# A count of instructions does not move with the machine's speed the way requests/s does, so it
# compares two versions of the code on a noisy machine.
#
#   bash bench/http_callgrind.sh [checkout]     (default: this one; needs valgrind and wrk)
#
# Prints one line per server: requests served (under callgrind, so few), instructions, and the
# instructions per request of the whole process and of each thread that ran.
set -uo pipefail
ROOT=$(cd "${1:-$(dirname "$0")/..}" && pwd)
PY=$(python3 -c 'import sys; print(sys.executable)')
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

measure() {  # name, then the server's command (its port comes last)
  local name=$1; shift
  local port; port=$(free_port)
  (cd "$ROOT" && PYTHONPATH="$ROOT" exec valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
    --callgrind-out-file="$OUT/$name.out" "$@" "$port" >"$OUT/$name.log" 2>&1) &
  local vpid=$!
  for _ in $(seq 1 180); do curl -s -o /dev/null "http://127.0.0.1:$port/bench" && break; sleep 1; done
  wrk -t1 -c50 -d5s "http://127.0.0.1:$port/bench" >/dev/null  # warm up, not counted
  callgrind_control -i on "$vpid" >/dev/null
  local out; out=$(wrk -t1 -c50 -d20s "http://127.0.0.1:$port/bench")
  callgrind_control -i off "$vpid" >/dev/null
  callgrind_control -d "$vpid" >/dev/null
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
  local requests; requests=$(echo "$out" | grep -o '[0-9]* requests in' | cut -d' ' -f1)
  local line="$name: $requests requests;" total=0
  for f in "$OUT/$name.out"*; do
    local ir; ir=$(callgrind_annotate "$f" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | awk '{gsub(",", "", $1); print $1}')
    [[ "$ir" =~ ^[0-9]+$ ]] && [ "$ir" -gt 0 ] || continue
    total=$((total + ir)); line="$line thread ${f##*-} $((ir / requests));"
  done
  echo "$line all threads $((total / requests)) instructions per request"
}

measure js_route "$PY" -m engine --no-watch --scripts bench/scripts --port
measure plain_aiohttp "$PY" bench/plain_server.py
