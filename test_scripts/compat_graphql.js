// Seed 002's GraphQL section, written the way its users write it: resolvers named by string, a
// subscription whose messages are JSON text, mutations that use their arguments.
const users = {};
let nextId = 1;

function helloResolver(args) {
  return "Hello, " + (args.name || "world") + "!";
}
registerGraphQLQuery("hello", "type Query { hello(name: String): String }", "helloResolver");

function createUserResolver(args) {
  const user = { id: String(nextId++), name: args.name };
  users[user.id] = user;
  return user;
}
registerGraphQLMutation(
  "createUser",
  "type Mutation { createUser(name: String!): User } type User { id: ID! name: String! }",
  "createUserResolver",
);

function userUpdatesResolver() {
  return "User updates subscription active";
}
registerGraphQLSubscription("userUpdates", "type Subscription { userUpdates: String }", "userUpdatesResolver");

function triggerUserUpdateResolver(args) {
  const user = users[args.userId];
  if (!user) throw new Error("no user with id " + args.userId);
  sendSubscriptionMessage("userUpdates", JSON.stringify({ userId: args.userId, name: user.name, at: new Date().toISOString() }));
  return true;
}
registerGraphQLMutation("triggerUserUpdate", "type Mutation { triggerUserUpdate(userId: ID!): Boolean }", "triggerUserUpdateResolver");
