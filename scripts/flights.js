// Flight search, streamed (seed 000): GET /api/search starts a simulated search across three
// sources; its results go to the channel /api/result/<query_id>, which any transport reads.
// Try:
//   curl 'localhost:3000/api/search?from=JAK&to=CGK'            -> {query_id, ws_url, sse_url, poll_url, ndjson_url}
//   curl -N localhost:3000/api/result/<query_id>                (SSE; or -H 'Accept: application/x-ndjson')
//   curl 'localhost:3000/api/result/<query_id>?transport=poll'  (long-poll; follow connectionId and lastEventId)
//   curl -X POST 'localhost:3000/api/search/cancel?query_id=<query_id>'
// The search begins once `wait_for` readers (default 1) are on its channel, so a client that asks and
// then connects misses nothing; it ends with `completed`, `cancelled` or, past `timeout_s` (at most
// 30), `timeout`.

const SOURCES = [
  { name: "kiwi", airlines: ["Lion Air", "Batik Air", "Citilink"], prefix: "KI" },
  { name: "traveloka", airlines: ["Garuda Indonesia", "AirAsia", "Super Air Jet"], prefix: "TR" },
  { name: "tiket", airlines: ["Sriwijaya Air", "Pelita Air", "Wings Air"], prefix: "TK" },
];
const PER_SOURCE = 8;
const TOTAL = SOURCES.length * PER_SOURCE;
const MAX_SEARCHES = 1000;
const CODE = /^[A-Z]{3}$/;
const QUERY_ID = /^[a-f0-9]{16}$/;
const searches = {}; // query_id -> search

function stamp() { return new Date().toISOString().replace("T", " ").slice(0, 19); }

function newId() {
  let id = "";
  for (let i = 0; i < 16; i++) id += "0123456789abcdef"[Math.floor(Math.random() * 16)];
  return id;
}

function channel(id) { return "/api/result/" + id; }

function bad(status, message) { return { status: status, body: { error: { message: message } } }; }

function clamp(value, low, high, fallback) {
  const n = Number(value);
  return Number.isFinite(n) ? Math.min(Math.max(Math.round(n), low), high) : fallback;
}

register("/api/search", function (req) {
  const from = String(req.query.from || "").toUpperCase();
  const to = String(req.query.to || "").toUpperCase();
  if (!CODE.test(from) || !CODE.test(to)) return bad(400, "from and to must be three-letter airport codes");
  if (Object.keys(searches).length >= MAX_SEARCHES) return bad(503, "too many searches are running; retry");
  const id = newId();
  searches[id] = {
    id: id, from: from, to: to, readers: 0, received: 0, timers: [], state: "waiting",
    waitFor: clamp(req.query.wait_for, 1, 10, 1),
    paceMs: clamp(req.query.pace_ms, 20, 2000, 150),
    timeoutS: clamp(req.query.timeout_s, 1, 30, 30),
  };
  const host = req.headers.host || "localhost:3000";
  return {
    body: {
      query_id: id,
      ws_url: "ws://" + host + channel(id),
      sse_url: "http://" + host + channel(id),
      poll_url: "http://" + host + channel(id) + "?transport=poll",
      ndjson_url: "http://" + host + channel(id),
    },
  };
});

register("/api/search/cancel", function (req) {
  const search = searches[req.query.query_id];
  if (!search) return bad(404, "no search " + JSON.stringify(String(req.query.query_id || "")));
  if (search.state === "done") return bad(409, "the search has ended already");
  finish(search, { type: "cancelled", status: "cancelled", message: "Search cancelled",
                   progress: progressOf(search), received_flights: search.received });
  return { body: { query_id: search.id, status: "cancelled" } };
}, "POST");

function progressOf(search) { return Math.round((search.received / TOTAL) * 100); }

function send(search, message) { sendStreamMessageToPath(channel(search.id), message); }

function start(search) {
  search.state = "searching";
  send(search, { type: "progress", progress: 0, status: "searching", message: "Starting flight search...",
                 received_flights: 0, total_expected: TOTAL });
  let step = 0;
  search.timers.push(setInterval(function () { next(search, step++); }, search.paceMs));
  search.timers.push(setTimeout(function () {
    finish(search, { type: "timeout", status: "timeout", message: "Search timed out after " + search.timeoutS + " s",
                     progress: progressOf(search), received_flights: search.received });
  }, search.timeoutS * 1000));
}

function next(search, step) {
  if (search.state !== "searching") return;
  const source = SOURCES[step % SOURCES.length];
  const n = Math.floor(step / SOURCES.length);
  if (n >= PER_SOURCE) return;
  search.received++;
  const number = source.prefix + (101 + n * 7 + (step % 3));
  const hour = 6 + ((step * 5) % 16);
  const flight = {
    type: "flight",
    source: source.name,
    airline: source.airlines[n % source.airlines.length],
    flight_number: number,
    departure_time: (hour < 10 ? "0" : "") + hour + ":" + (step % 2 ? "30" : "05"),
    price: 650000 + ((step * 137) % 20) * 45000,
    from: search.from,
    to: search.to,
    timestamp: stamp(),
    seat_class: step % 5 === 0 ? "Business" : "Economy",
    affiliate_link: "https://www." + source.name + ".com/affiliate?flight=" + number,
    booking_url: "https://" + source.name + ".com/flights/" + search.from + "-" + search.to + "/" + number,
    progress: progressOf(search),
    received_flights: search.received,
    total_expected: TOTAL,
    status: "searching",
  };
  send(search, flight);
  if (search.received % 6 === 0 && search.received < TOTAL) {
    send(search, { type: "progress", progress: progressOf(search), status: "searching",
                   message: "Received " + search.received + " of " + TOTAL + " flights",
                   received_flights: search.received, total_expected: TOTAL });
  }
  if (search.received === TOTAL) {
    finish(search, { type: "completed", progress: 100, status: "completed", message: "All flights found",
                     total_flights: TOTAL });
  }
}

function finish(search, message) {
  if (search.state === "done") return;
  search.state = "done";
  search.timers.forEach(function (t) { clearTimeout(t); clearInterval(t); });
  search.timers = [];
  send(search, message);
  // Forgotten a minute later; its channel keeps the history for late readers as long as the
  // engine keeps idle channels (streams.history_ttl_seconds).
  setTimeout(function () { delete searches[search.id]; }, 60000);
}

registerWebStream("/api/result/{query_id}", {
  onConnect(conn) {
    const search = QUERY_ID.test(conn.params.query_id) ? searches[conn.params.query_id] : undefined;
    if (!search) {
      throw Object.assign(new Error("no search " + conn.params.query_id + " (start one with GET /api/search)"),
                          { status: 404 });
    }
    search.readers++;
    if (search.state === "waiting" && search.readers >= search.waitFor) start(search);
    return undefined;
  },
  onDisconnect(conn) {
    const search = searches[conn.params.query_id];
    if (search) search.readers--;
  },
});
