// A Node WebSocket broadcast server for bench/ws_fanout_bench.py, with the `ws` package written the
// usual way: `ws.send(data)` to each of `wss.clients`. No compression (perMessageDeflate off).
//
//   node bench/ws_node_server.js PORT
//
// `ws` comes from bench/ws_node (`npm install --prefix bench/ws_node ws`). `GET /events` (WebSocket)
// is a reader; `GET /publish?n=&size=` sends n messages of `size` bytes whose data starts
// "T<epoch ms>|", as the other servers of the benchmark do.
"use strict";
const http = require("http");
const path = require("path");
const { WebSocketServer, WebSocket } = require(require.resolve("ws", { paths: [path.join(__dirname, "ws_node")] }));

const port = Number(process.argv[2]);
const PAD = "x".repeat(4096);

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  if (url.pathname !== "/publish") {
    res.writeHead(404, { "Content-Length": "0", Connection: "close" });
    res.end();
    return;
  }
  const n = Number(url.searchParams.get("n")) || 1, size = Number(url.searchParams.get("size")) || 200;
  for (let i = 0; i < n; i++) {
    const head = "T" + Date.now() + "|";
    const data = head + PAD.slice(0, size - head.length);
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(data);
    }
  }
  res.writeHead(200, { "Content-Length": "2", Connection: "close" });
  res.end("ok");
});

const wss = new WebSocketServer({ server, path: "/events", perMessageDeflate: false });
server.listen(port, "127.0.0.1", 4096);
