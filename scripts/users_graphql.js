// GraphQL from a script: a query, a mutation, and a subscription that the mutation feeds.
//   curl localhost:3000/graphql -H 'Content-Type: application/json' -d '{"query":"{ users { id name } }"}'
//   curl -N localhost:3000/graphql/sse -H 'Content-Type: application/json' -d '{"query":"subscription { userAdded { name } }"}'
//   curl localhost:3000/graphql -H 'Content-Type: application/json' -d '{"query":"mutation { addUser(name: \"Bo\") { id } }"}'
// Or open http://localhost:3000/graphql in a browser.
const users = [{ id: "1", name: "Ada" }];

registerGraphQLQuery("users", "type Query { users: [User!]! } type User { id: ID! name: String! }", () => users);

registerGraphQLMutation("addUser", "type Mutation { addUser(name: String!): User! }", function (args) {
  if (!args.name.trim()) throw new Error("name must not be empty");
  const user = { id: String(users.length + 1), name: args.name };
  users.push(user);
  sendSubscriptionMessage("userAdded", user);
  return user;
});

registerGraphQLSubscription("userAdded", "type Subscription { userAdded: User }", () => undefined);
