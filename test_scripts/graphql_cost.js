// Resolvers that cost: many objects, slow ones, and a subscription whose messages can be large.
const TYPES = "type Item { id: ID a: Int b: Int c: String d: Int e: Int f: Int g: Int h: Int i: Int " +
  "children: [Item] }";
registerGraphQLQuery("items", "type Query { items(n: Int!): [Item] } " + TYPES, function (args) {
  const out = [];
  for (let i = 0; i < args.n; i++) out.push({ id: String(i), a: i, b: i, c: "x", d: i, e: i, f: i, g: i, h: i, i: i });
  return out;
});
registerGraphQLQuery("grid", "type Query { grid(n: Int!): [[Int]] }", function (args) {
  const row = [];
  for (let i = 0; i < args.n; i++) row.push(i);
  const out = [];
  for (let i = 0; i < args.n; i++) out.push(row);
  return out;
});
registerGraphQLQuery("one", "type Query { one: Int }", () => 1);
let started = 0;
registerWebStream("/cost/started");
registerGraphQLQuery("slow", "type Query { slow(ms: Int!): Int }", function (args) {
  started++;
  sendStreamMessageToPath("/cost/started", String(started));
  const until = Date.now() + args.ms;
  while (Date.now() < until) {}
  return started;
});
registerGraphQLQuery("sleepy", "type Query { sleepy(ms: Int!): Int }", function (args) {
  return new Promise((resolve) => setTimeout(() => resolve(args.ms), args.ms));
});
register("/cost/count", () => String(started));
registerGraphQLSubscription("feed", "type Subscription { feed: [Item] } " + TYPES, () => undefined);
register("/cost/feed", function (req) {
  const out = [];
  for (let i = 0; i < Number(req.query.n); i++) out.push({ id: String(i), a: i });
  sendSubscriptionMessage("feed", out);
  return "sent";
}, "POST");
