// The engine side of bench/graphql_bench.py: a subscription field `ticks` of an object type, read over
// WebSocket (graphql-transport-ws at /graphql) and over SSE (/graphql/sse), and a route that publishes
// to it. Each message carries its sequence number (the client checks that every subscriber got every
// one, in order) and its publish time from Date.now() (for latency).
registerGraphQLSubscription(
  "ticks",
  "type Subscription { ticks: Tick } type Tick { seq: Int! t: Float! pad: String! }",
  // A first result at once (seq -1): the client's sign that its subscription is in the hub.
  () => ({ seq: -1, t: Date.now(), pad: "" }),
);

const PAD = "x".repeat(4096);

// GET /bench/publish?n=&start=&pad=: n messages, seq start..start+n-1, `pad` characters of padding,
// all from this one call.
register("/bench/publish", function (req) {
  const n = Number(req.query.n) || 1, start = Number(req.query.start) || 0, pad = PAD.slice(0, Number(req.query.pad) || 0);
  for (let i = 0; i < n; i++) sendSubscriptionMessage("ticks", { seq: start + i, t: Date.now(), pad: pad });
  return "ok";
});

register("/bench/ready", () => "ok");
