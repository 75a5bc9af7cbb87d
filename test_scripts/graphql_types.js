// A schema with object types, arguments, lists, non-null, enums and input types; resolvers that
// are async, that throw, that loop; a subscription of an object type; routes that send to it.
const people = [
  { id: "1", name: "Ada", role: "ADMIN", tags: ["math"] },
  { id: "2", name: "Grace", role: "MEMBER", tags: [] },
  { id: "3", name: "Linus", role: "MEMBER", tags: null },
];

registerGraphQLQuery(
  "users",
  `type Query {
    """People, filtered."""
    users(filter: UserFilter, first: Int = 10): [Person!]!
  }
  type Person { id: ID! name: String! role: Role! tags: [String!] }
  enum Role { ADMIN MEMBER }
  input UserFilter { role: Role, nameContains: String }`,
  function (args) {
    const f = args.filter || {};
    return people
      .filter((p) => (!f.role || p.role === f.role) && (!f.nameContains || p.name.includes(f.nameContains)))
      .slice(0, args.first);
  },
);

// Uses Person from the fragment above without declaring it again.
registerGraphQLQuery("user", "type Query { user(id: ID!): Person }", (args) => people.find((p) => p.id === args.id) || null);

registerGraphQLQuery("later", "type Query { later(ms: Int!): String }", function (args, context) {
  return new Promise((resolve) => setTimeout(() => resolve("after " + args.ms + " ms for " + context.field), args.ms));
});

registerGraphQLQuery("whoami", "type Query { whoami: String }", (args, context) => context.operation + " " + context.headers["x-user"] + " " + context.requestId);

registerGraphQLQuery("boom", "type Query { boom: String }", function () { throw new Error("it broke on purpose"); });

registerGraphQLQuery("spin", "type Query { spin: String }", function () { for (;;) {} });

registerGraphQLQuery("bomb", "type Query { bomb: String }", function () { const a = []; for (;;) a.push("x".repeat(4096)); });

registerGraphQLQuery("wrongType", "type Query { wrongType: Int }", () => "not a number");

registerGraphQLSubscription("userChanged", "type Subscription { userChanged(role: Role): Person }", function () {
  return undefined; // no first result: the client waits for messages
});

registerGraphQLSubscription("ticks", "type Subscription { ticks(from: Int!): Int }", (args) => args.from);

register("/gql/change", function (req) {
  const p = people[Number(req.query.i || 0)];
  sendSubscriptionMessage("userChanged", req.query.asText ? JSON.stringify(p) : p);
  return "sent";
});

register("/gql/tick", function (req) {
  sendSubscriptionMessage("ticks", Number(req.query.n));
  return "sent";
});

register("/gql/big", function (req) {
  sendSubscriptionMessage("userChanged", { id: req.query.n, name: "x".repeat(8000), role: "MEMBER" });
  return "sent";
});
