// The worst cases of issue 10 (the trust boundary), each behind one route, for bench/stall_bench.py.
registerWebStream("/stall/s");
for (let i = 0; i < 5; i++) registerWebStream("/stall/big" + i);

register("/stall/logs", function (req) {
  const n = Number(req.query.n);
  for (let i = 0; i < n; i++) writeLog("line " + i);
  return "ok";
});

register("/stall/sends", function (req) {
  const n = Number(req.query.n), msg = "x".repeat(Number(req.query.bytes || 100));
  for (let i = 0; i < n; i++) sendStreamMessageToPath("/stall/s", msg);
  return "ok";
});

const MIB = "y".repeat(1024 * 1024 - 64);
register("/stall/big", function (req) {
  for (let i = 0; i < Number(req.query.n); i++) sendStreamMessageToPath("/stall/big" + (i % 5), MIB);
  return "ok";
});

const ITEM = "type Item { id: ID a: Int b: Int c: Int d: Int e: Int f: Int g: Int h: Int i: Int }";
registerGraphQLQuery("items", "type Query { items(n: Int!): [Item] } " + ITEM, function (args) {
  const out = [];
  for (let i = 0; i < args.n; i++) out.push({ id: String(i), a: i, b: i, c: i, d: i, e: i, f: i, g: i, h: i, i: i });
  return out;
});
registerGraphQLQuery("one", "type Query { one: Int }", () => 1);
let slowCalls = 0;
registerGraphQLQuery("slow", "type Query { slow(ms: Int!): Int }", function (args) {
  slowCalls++;
  const until = Date.now() + args.ms;
  while (Date.now() < until) {}
  return slowCalls;
});
register("/stall/slow-calls", () => String(slowCalls));
registerGraphQLSubscription("feed", "type Subscription { feed: Item } " + ITEM, () => undefined);
register("/stall/publish", function (req) {
  for (let i = 0; i < Number(req.query.n); i++) sendSubscriptionMessage("feed", { id: String(i), a: i, b: i });
  return "ok";
});

let more = 0;
register("/stall/register", function (req) {
  for (let n = Number(req.query.n); n > 0; n--, more++) register("/more" + more + "/{id}", () => "m");
  return String(more);
});

registerWebStream("/stall/lines");
register("/stall/lines", () => { sendStreamMessageToPath("/stall/lines", "\n".repeat(1048575)); return "ok"; }, "POST");

register("/stall/form", (req) => String(Object.keys(req.form).length), "POST");

let gqlMore = 0;
register("/stall/gql-register", function (req) {
  for (let n = Number(req.query.n); n > 0; n--, gqlMore++) {
    registerGraphQLQuery("more" + gqlMore, "type Query { more" + gqlMore + ": Int }", () => 1);
  }
  return String(gqlMore);
});
