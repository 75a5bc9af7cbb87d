// The real graphql-sse client (npm), as a user's app would use it, driven by tests/test_graphql_sse.py.
//   node graphql_sse_client.mjs <url of /graphql/sse> <messages to wait for>
// 1. runs the query `{ hello }` and prints its one result (the server completes that operation);
// 2. subscribes to `userUpdates`, prints "SUBSCRIBED" once the subscription's first result is in,
//    prints every result as a JSON line, and after <n> more it completes (unsubscribes) and prints "DONE".
import { createClient } from "graphql-sse";

const [url, wanted] = [process.argv[2], Number(process.argv[3] || 3)];
const client = createClient({ url, retryAttempts: 0 });
const print = (tag, value) => console.log(JSON.stringify({ tag, value }));

for await (const result of client.iterate({ query: "{ hello }" })) print("query", result);
print("query-complete", null);

let seen = 0;
const sub = client.iterate({ query: "subscription Updates { userUpdates }" });
for await (const result of sub) {
  if (seen === 0) print("subscribed", result);
  else print("next", result);
  if (seen++ === wanted) break; // leaving the loop completes the subscription: the client closes it
}
print("done", seen - 1);
client.dispose();
