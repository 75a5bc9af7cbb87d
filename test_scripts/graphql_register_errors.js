// Every way registerGraphQL* can be misused: each must throw a catchable Error with the reason.
const errors = {};
function attempt(label, fn) {
  try { fn(); errors[label] = "no error"; } catch (e) { errors[label] = e.message; }
}
function ok() { return "ok"; }

attempt("syntax", () => registerGraphQLQuery("a", "type Query { a: String", ok));
attempt("unknownType", () => registerGraphQLQuery("b", "type Query { b: Strin }", ok));
attempt("wrongRoot", () => registerGraphQLQuery("c", "type Mutation { c: String }", ok));
attempt("missingField", () => registerGraphQLQuery("d", "type Query { other: String }", ok));
attempt("extraField", () => registerGraphQLQuery("e", "type Query { e: String f: String }", ok));
attempt("badName", () => registerGraphQLQuery("1x", "type Query { x: String }", ok));
attempt("noResolver", () => registerGraphQLQuery("g", "type Query { g: String }"));
attempt("unknownResolver", () => registerGraphQLQuery("g", "type Query { g: String }", "noSuchFunction"));
attempt("sdlNotString", () => registerGraphQLQuery("h", 42, ok));
attempt("inputAsOutput", () => registerGraphQLQuery("i", "type Query { i: In } input In { x: Int }", ok));
attempt("outputAsArgument", () => registerGraphQLQuery("j", "type Query { j(o: Out): Int } type Out { x: Int }", ok));
attempt("schemaDefinition", () => registerGraphQLQuery("k", "schema { query: Query } type Query { k: String }", ok));
attempt("taken", () => registerGraphQLQuery("taken", "type Query { taken: String }", ok));
attempt("sharedDifferent", () => registerGraphQLQuery("m", "type Query { m: Shared } type Shared { x: Int y: Int }", ok));
attempt("sharedSame", () => registerGraphQLQuery("n", "type Query { n: Shared } type Shared { x: Int }", () => ({ x: 7 })));
attempt("twice", () => registerGraphQLQuery("n", "type Query { n: String }", ok));
attempt("unknownSubscription", () => sendSubscriptionMessage("nope", "x"));
attempt("streamOfSubscription", () => sendStreamMessageToPath("/graphql/subscription/owned", "x"));
attempt("tooLarge", () => sendSubscriptionMessage("owned", "x".repeat(2 * 1024 * 1024)));
attempt("builtinRedefined", () => registerGraphQLQuery("o", "type Query { o: String } scalar String", ok));

register("/gqlerr", () => ({ body: errors }));
