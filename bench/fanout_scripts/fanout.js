// The engine side of bench/fanout_bench.py and bench/ws_fanout_bench.py: one stream (read over SSE
// or WebSocket), and a route that publishes n messages of `size` bytes whose data starts with the publish time ("T<epoch ms>|"), for the client's latency.
registerWebStream("/events");
const PAD = "x".repeat(4096);
register("/publish", function (req) {
  const n = Number(req.query.n) || 1, size = Number(req.query.size) || 200;
  for (let i = 0; i < n; i++) {
    const head = "T" + Date.now() + "|";
    sendStreamMessage(head + PAD.slice(0, size - head.length));
  }
  return "ok";
});
