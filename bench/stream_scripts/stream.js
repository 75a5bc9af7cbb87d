// The engine side of bench/stream_bench.py: NDJSON items of about 40 bytes from an async generator,
// one line each ({"i":123456,"v":"xxxxxxxxxxxxxxxxxxxx"}); bench/stream_plain_server.py writes the same.
const PAD = "x".repeat(20);
register("/ping", function () { return "ok"; });
register("/items", async function* (req) {
  const n = Math.min(Number(req.query.n) || 1000, 10000000);
  for (let i = 0; i < n; i++) yield { i: i, v: PAD };
});
