// Streaming responses: a route that returns an iterator is written item by item, as the items come.
// Try (each line or event shows up as it is made, not at the end):
//   curl -N localhost:3000/stream                                    (seed 003: 100 items, 100 ms apart, NDJSON)
//   curl -N localhost:3000/process -H 'Content-Type: application/json' -d '{"items": ["a", "b", "c"]}'
//   curl -N localhost:3000/export/users.csv                          (CSV rows in batches)
//   curl -N localhost:3000/counter                                   (SSE: 1 to 10, once a second)

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

// Seed 003's streamData: NDJSON by default, one JSON value per line.
register("/stream", async function* () {
  for (let i = 0; i < 100; i++) {
    yield { count: i, timestamp: Date.now() };
    await sleep(100);
  }
});

// Progress of a long job: each item processed reports where the job stands, and its result.
register("/process", async function* (req) {
  const items = req.json && Array.isArray(req.json.items) ? req.json.items.slice(0, 1000) : [];
  const total = items.length;
  for (let i = 0; i < total; i++) {
    await sleep(50); // the work
    yield {
      progress: { current: i + 1, total: total, percentage: Math.round(((i + 1) / total) * 100) },
      result: String(items[i]).toUpperCase(),
    };
  }
}, "POST");

// A CSV export of generated rows, streamed in batches of 100 rows.
register("/export/users.csv", function (req) {
  const rows = Math.min(Number(req.query.rows) || 1000, 100000);
  function* batches() {
    yield "id,name,email\n";
    for (let start = 0; start < rows; start += 100) {
      const lines = [];
      for (let i = start; i < Math.min(start + 100, rows); i++) lines.push(i + ",user" + i + ",user" + i + "@example.com");
      yield lines.join("\n") + "\n";
    }
  }
  return {
    contentType: "text/csv; charset=utf-8",
    headers: { "Content-Disposition": "attachment; filename=users.csv" },
    body: batches(),
  };
});

// A per-request SSE counter: 1 to 10, once a second (`?every=` ms). Its `finally` is seed 004's
// `sse.done`: it runs when the count ends and when the client leaves first.
let counters = 0;
register("/counter", function (req) {
  const every = Math.min(Math.max(Number(req.query.every) || 1000, 10), 5000);
  async function* count() {
    counters++;
    try {
      for (let n = 1; n <= 10; n++) {
        yield { event: "count", id: String(n), data: { count: n, timestamp: Date.now() } };
        await sleep(every);
      }
    } finally {
      counters--;
      console.log("a counter ended; " + counters + " still counting");
    }
  }
  return { contentType: "text/event-stream", body: count() }; // SSE whatever the client's Accept
});
register("/counter/open", () => ({ body: { counting: counters } }));
