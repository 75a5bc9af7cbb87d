// The real graphql-ws client (npm), as a user's app would use it, driven by tests/test_graphql_ws.py.
//   node graphql_ws_client.mjs <ws:// url of /graphql> <messages to wait for>
// 1. runs the query `{ hello }`, then the mutation `createUser`, printing each one result;
// 2. subscribes to `userUpdates`, prints "subscribed" with its first result, prints every further
//    result, and after <n> of them completes (unsubscribes) and prints "done".
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, wanted] = [process.argv[2], Number(process.argv[3] || 3)];
const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true,
                              connectionParams: { client: "node" } });
const print = (tag, value) => console.log(JSON.stringify({ tag, value }));

for await (const result of client.iterate({ query: "{ hello }" })) print("query", result);
for await (const result of client.iterate({ query: 'mutation { createUser(name: "Ada") { id name } }' })) {
  print("mutation", result);
}

let seen = 0;
const sub = client.iterate({ query: "subscription Updates { userUpdates }" });
for await (const result of sub) {
  if (seen === 0) print("subscribed", result);
  else print("next", result);
  if (seen++ === wanted) break; // leaving the loop completes the subscription
}
print("done", seen - 1);
await client.dispose();
