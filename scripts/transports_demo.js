// Three transports, one channel (seed 001): open http://localhost:3000/transports and press Start in
// the Long polling, SSE and WebSocket sections. Each connection has its own id; what it sends comes
// back to it alone; the server's heartbeat reaches all of them. From a terminal:
//   curl -N localhost:3000/demo/live                                   (SSE: the `connected` event has the id)
//   curl localhost:3000/demo/live -H 'X-Connection-Id: <id>' -H 'Content-Type: application/json' -d '"hi"'
//   curl 'localhost:3000/demo/live?transport=poll'                    (long-poll)

const HEARTBEAT_MS = 2000;
let beat = 0;
let connected = 0;

function at() { return new Date().toISOString(); }

registerWebStream("/demo/live", {
  onConnect(conn) {
    connected++;
    return { type: "welcome", connection_id: conn.id, transport: conn.transport, at: at() };
  },
  onMessage(conn, data) {
    const text = typeof data === "string" ? data : JSON.stringify(data);
    if (!text || text.length > 1000) return { ok: false, error: "send 1 to 1000 characters" };
    // Scoped to this connection: no other client, and no other transport, sees it.
    sendToConnection(conn.id, { type: "user_message", message: text, connection_id: conn.id,
                                transport: conn.transport, at: at() });
    return { ok: true };
  },
  onDisconnect() { connected--; },
});

setInterval(function () {
  beat++;
  if (connected > 0) sendStreamMessageToPath("/demo/live", { type: "heartbeat", message: "Heartbeat " + beat, at: at() });
}, HEARTBEAT_MS);

register("/transports", function () {
  return { contentType: "text/html; charset=utf-8", body: PAGE };
});

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rtengine: three transports, one channel</title>
<style>
  :root { font: 14px/1.45 system-ui, sans-serif; color: #1d2330; background: #f3f5f9; }
  body { margin: 0; }
  header { padding: 18px 28px 6px; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  header p { margin: 0; color: #6a7385; }
  code { background: #e8ecf3; padding: 1px 5px; border-radius: 4px; font-size: 13px; }
  main { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 16px; padding: 16px 28px 28px; }
  section { background: #fff; border: 1px solid #dde3ec; border-radius: 10px; display: flex; flex-direction: column;
            height: 560px; box-shadow: 0 1px 2px rgba(20, 30, 50, .05); }
  .head { padding: 12px 16px; border-bottom: 1px solid #eef1f5; display: flex; align-items: center; gap: 10px; }
  h2 { font-size: 16px; margin: 0; }
  .pill { margin-left: auto; font-size: 12px; padding: 2px 10px; border-radius: 999px; background: #eef1f5; color: #6a7385; }
  .pill.on { background: #e3f6ea; color: #1d7a43; }
  .pill.err { background: #fdeaea; color: #b3261e; }
  .meta { padding: 8px 16px; font-size: 12px; color: #6a7385; border-bottom: 1px solid #eef1f5; display: flex; gap: 14px; }
  .meta b { color: #1d2330; font-weight: 600; font-family: ui-monospace, monospace; }
  .controls { display: flex; gap: 8px; padding: 10px 16px; border-bottom: 1px solid #eef1f5; }
  input { flex: 1; min-width: 0; font: inherit; padding: 7px 10px; border: 1px solid #c9d0db; border-radius: 6px; }
  button { font: inherit; padding: 7px 14px; border: 0; border-radius: 6px; background: #2f5bd3; color: #fff; cursor: pointer; }
  button.ghost { background: #eef1f5; color: #1d2330; }
  button:disabled { opacity: .45; cursor: default; }
  ol { list-style: none; margin: 0; padding: 8px 16px; overflow-y: auto; flex: 1; }
  li { padding: 5px 0; border-bottom: 1px dashed #eef1f5; display: flex; gap: 8px; align-items: baseline; }
  li time { color: #9aa3b2; font-size: 12px; font-variant-numeric: tabular-nums; white-space: nowrap; }
  .tag { font-size: 11px; padding: 1px 7px; border-radius: 4px; background: #eef1f5; color: #50596b; white-space: nowrap; }
  .tag.user_message { background: #e6edff; color: #2f5bd3; }
  .tag.heartbeat { background: #f2f4f7; color: #8a93a3; }
  .tag.welcome { background: #e3f6ea; color: #1d7a43; }
  .tag.error { background: #fdeaea; color: #b3261e; }
  footer { padding: 0 28px 24px; color: #6a7385; font-size: 13px; }
</style>
</head>
<body>
<header>
  <h1>Three transports, one channel</h1>
  <p>Every section reads <code>/demo/live</code>, each over its own transport. Messages you send come back to your
  connection only; the heartbeat reaches everyone.</p>
</header>
<main>
  <section id="poll"></section>
  <section id="sse"></section>
  <section id="ws"></section>
</main>
<footer>Served by <code>scripts/transports_demo.js</code>. Open this page in a second tab: its connections are its own.</footer>
<script>
"use strict";
const PATH = "/demo/live";
const TITLES = { poll: "Long polling", sse: "Server-Sent Events", ws: "WebSocket" };
const demo = {};

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  Object.assign(e, attrs || {});
  if (text !== undefined) e.textContent = text;
  return e;
}

class Section {
  constructor(kind) {
    this.kind = kind;
    this.id = null;
    this.lines = [];
    this.root = document.getElementById(kind);
    const head = el("div", { className: "head" });
    head.append(el("h2", {}, TITLES[kind]));
    this.pill = el("span", { className: "pill" }, "stopped");
    head.append(this.pill);
    const meta = el("div", { className: "meta" });
    this.cid = el("b", {}, "-");
    this.count = el("b", {}, "0");
    this.beats = el("b", {}, "0");
    meta.append("id ", this.cid, "messages ", this.count, "heartbeats ", this.beats);
    const controls = el("div", { className: "controls" });
    this.start = el("button", {}, "Start");
    this.stop = el("button", { className: "ghost", disabled: true }, "Stop");
    this.text = el("input", { placeholder: "a message", disabled: true });
    this.send = el("button", { disabled: true }, "Send");
    controls.append(this.start, this.stop, this.text, this.send);
    this.list = el("ol");
    this.root.append(head, meta, controls, this.list);
    this.start.onclick = () => this.open();
    this.stop.onclick = () => this.close("stopped");
    this.send.onclick = () => this.say();
    this.text.onkeydown = (e) => { if (e.key === "Enter") this.say(); };
  }
  state(text, cls) { this.pill.textContent = text; this.pill.className = "pill " + (cls || ""); }
  running(on) {
    this.start.disabled = on; this.stop.disabled = !on; this.text.disabled = !on; this.send.disabled = !on;
  }
  show(msg) {
    this.lines.push(msg);
    if (msg.type === "heartbeat") this.beats.textContent = String(Number(this.beats.textContent) + 1);
    else this.count.textContent = String(Number(this.count.textContent) + 1);
    const li = el("li");
    const when = msg.at ? new Date(msg.at) : new Date();
    li.append(el("time", {}, when.toLocaleTimeString([], { hour12: false }) + "." + String(when.getMilliseconds()).padStart(3, "0")));
    li.append(el("span", { className: "tag " + msg.type }, msg.type.replace("_", " ")));
    li.append(el("span", {}, msg.message || (msg.type === "welcome" ? "connected over " + msg.transport : JSON.stringify(msg))));
    this.list.append(li);
    this.list.scrollTop = this.list.scrollHeight;
  }
  connected(id) { this.id = id; this.cid.textContent = id; this.state("connected", "on"); }
  close(why) {
    this.running(false);
    this.state(why, why === "stopped" ? "" : "err");
    this.id = null;
  }
  say() {
    const text = this.text.value.trim();
    if (!text || !this.id) return;
    this.text.value = "";
    // One after another: POSTs sent at once may take different connections and arrive in any order.
    this.sending = (this.sending || Promise.resolve()).then(() => this.deliver(text)).catch(() => {});
  }
  async post(text) {
    const r = await fetch(PATH, { method: "POST", body: JSON.stringify(text),
      headers: { "Content-Type": "application/json", "X-Connection-Id": this.id } });
    if (!r.ok) this.show({ type: "error", message: "POST " + r.status });
  }
}

class SSESection extends Section {
  open() {
    this.running(true); this.state("connecting");
    this.es = new EventSource(PATH);
    this.es.addEventListener("connected", (e) => this.connected(JSON.parse(e.data).id));
    this.es.onmessage = (e) => this.show(JSON.parse(e.data));
    this.es.onerror = () => this.state("reconnecting", "err");
  }
  close(why) { if (this.es) this.es.close(); super.close(why); }
  deliver(text) { return this.post(text); }
}

class WSSection extends Section {
  open() {
    this.running(true); this.state("connecting");
    this.n = 0;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + PATH;
    this.ws = new WebSocket(url, "rtengine.v1");
    this.ws.onmessage = (e) => {
      const frame = JSON.parse(e.data);
      if (frame.replyTo !== undefined) { if (frame.error) this.show({ type: "error", message: frame.error.message }); return; }
      if (frame.event === "connected") this.connected(frame.data.id);
      else if (frame.event === null) this.show(frame.data);
    };
    this.ws.onclose = (e) => { if (!this.stop.disabled) super.close("closed " + e.code); };
  }
  close(why) { if (this.ws) this.ws.close(); super.close(why); }
  deliver(text) { this.ws.send(JSON.stringify({ id: ++this.n, data: text })); }
}

class PollSection extends Section {
  async open() {
    this.running(true); this.state("connecting");
    this.polling = true;
    let cursor = null;
    while (this.polling) {
      const q = new URLSearchParams({ transport: "poll" });
      if (this.id) q.set("connectionId", this.id);
      if (cursor) q.set("lastEventId", cursor);
      this.abort = new AbortController();
      try {
        const r = await fetch(PATH + "?" + q, { signal: this.abort.signal });
        const body = await r.json();
        if (!r.ok) throw new Error(body.error ? body.error.message : String(r.status));
        if (body.connectionId !== this.id) this.connected(body.connectionId);
        cursor = body.lastEventId;
        for (const e of body.events) if (e.event === null) this.show(e.data);
        if (body.closed) { this.close("closed: " + body.closed); return; }
      } catch (err) {
        if (!this.polling) return;
        this.state("retrying", "err");
        await new Promise((res) => setTimeout(res, 1000));
      }
    }
  }
  close(why) { this.polling = false; if (this.abort) this.abort.abort(); super.close(why); }
  deliver(text) { return this.post(text); }
}

demo.poll = new PollSection("poll");
demo.sse = new SSESection("sse");
demo.ws = new WSSection("ws");
window.demo = demo;
</script>
</body>
</html>
`;
