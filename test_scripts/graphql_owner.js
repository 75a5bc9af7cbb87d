// Owns a field and a type that graphql_register_errors.js (loaded after it) runs into.
registerGraphQLQuery("taken", "type Query { taken: Shared } type Shared { x: Int }", () => ({ x: 1 }));
registerGraphQLSubscription("owned", "type Subscription { owned: String }", () => undefined);
