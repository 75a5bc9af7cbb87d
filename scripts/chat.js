// A chat with rooms. Each room is a channel of the pattern /rooms/{room}: its own readers, ids and
// history. A browser tab reads /rooms/<room> with EventSource, learns its connection id from the
// `connected` event, and POSTs what its user types to the same path with that id. Joins and
// leaves come from the hooks, so closing a tab tells the room.
// Try: open http://localhost:3000/chat?room=general in two tabs, or:
//   curl -N 'localhost:3000/rooms/general?name=curl'     (the `connected` event and the
//                                                         X-Connection-Id header carry its id)
//   curl localhost:3000/rooms/general -H 'X-Connection-Id: <id>' -H 'Content-Type: application/json' -d '"hello"'

const rooms = {}; // room -> {connection id -> name}; this version's memory (a reload starts afresh)
const ROOM = /^[a-z0-9-]{1,40}$/;

function now() { return new Date().toISOString(); }

function nameOf(conn) {
  const given = String(conn.query.name || "").trim().slice(0, 32);
  return given || "guest-" + conn.id.slice(-4);
}

function namesIn(room) {
  return Object.values(rooms[room] || {});
}

registerWebStream("/rooms/{room}", {
  onConnect(conn) {
    const room = conn.params.room;
    if (!ROOM.test(room)) throw new Error("a room name is 1 to 40 of a-z 0-9 -");
    const members = rooms[room] || (rooms[room] = {});
    if (Object.keys(members).length >= 200) throw new Error("room " + room + " is full");
    const name = nameOf(conn);
    members[conn.id] = name;
    sendStreamMessageToPath(conn.path, { type: "join", name: name, at: now() });
    // For this reader only: who is here. Its own join follows, from the room's history.
    return { type: "welcome", you: name, id: conn.id, room: room, members: namesIn(room) };
  },
  onMessage(conn, data) {
    const text = typeof data === "string" ? data : data && typeof data.text === "string" ? data.text : null;
    if (text === null || !text.trim()) return { ok: false, error: "send a non-empty string, or {\"text\": ...}" };
    if (text.length > 2000) return { ok: false, error: "at most 2000 characters" };
    const name = (rooms[conn.params.room] || {})[conn.id] || nameOf(conn);
    sendStreamMessageToPath(conn.path, { type: "message", name: name, text: text, at: now() });
    return { ok: true };
  },
  onDisconnect(conn, reason) {
    const room = conn.params.room;
    const members = rooms[room];
    if (!members || !(conn.id in members)) return;
    const name = members[conn.id];
    delete members[conn.id];
    if (!Object.keys(members).length) delete rooms[room];
    sendStreamMessageToPath(conn.path, { type: "leave", name: name, reason: reason, at: now() });
  },
});

register("/chat/rooms", function () {
  return { body: Object.keys(rooms).map((r) => ({ room: r, members: namesIn(r) })) };
});

register("/chat", function () {
  return { contentType: "text/html; charset=utf-8", body: PAGE };
});

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rtengine chat</title>
<style>
  :root { font: 15px/1.45 system-ui, sans-serif; color: #1d2330; background: #f3f5f9; }
  body { margin: 0; display: flex; justify-content: center; }
  main { width: min(760px, 100vw); min-height: 100vh; display: flex; flex-direction: column; background: #fff;
         box-shadow: 0 0 0 1px #dde2ea; }
  header { display: flex; align-items: center; gap: 12px; padding: 14px 20px; border-bottom: 1px solid #e3e7ee; }
  h1 { font-size: 18px; margin: 0; }
  #room { font-weight: 600; color: #2f5bd3; }
  #status { margin-left: auto; font-size: 13px; color: #6a7385; }
  #status.live::before { content: "\\25CF\\00a0"; color: #1fa363; }
  #who { padding: 8px 20px; font-size: 13px; color: #6a7385; border-bottom: 1px solid #eef1f5; }
  #who code { color: #1d2330; }
  #log { list-style: none; margin: 0; padding: 12px 20px; flex: 1; overflow-y: auto; }
  #log li { padding: 4px 0; }
  #log .meta { color: #6a7385; font-style: italic; }
  #log .name { font-weight: 600; margin-right: 6px; }
  #log time { color: #9aa3b2; font-size: 12px; margin-left: 8px; }
  form { display: flex; gap: 8px; padding: 12px 20px; border-top: 1px solid #e3e7ee; }
  input { flex: 1; font: inherit; padding: 8px 10px; border: 1px solid #c9d0db; border-radius: 6px; }
  button { font: inherit; padding: 8px 16px; border: 0; border-radius: 6px; background: #2f5bd3; color: #fff; }
  button:disabled { background: #a9b6d9; }
</style>
</head>
<body>
<main>
  <header><h1>rtengine chat</h1><span>room <span id="room"></span></span><span id="status">connecting</span></header>
  <div id="who">you are <b id="you">...</b>, connection <code id="cid">...</code>; here: <span id="members"></span></div>
  <ul id="log"></ul>
  <form id="say"><input id="text" autocomplete="off" placeholder="Say something" maxlength="2000"><button id="send" disabled>Send</button></form>
</main>
<script>
  const params = new URLSearchParams(location.search);
  const room = (params.get("room") || "general").toLowerCase();
  const name = params.get("name") || "";
  const path = "/rooms/" + encodeURIComponent(room);
  const $ = (id) => document.getElementById(id);
  const chat = window.chat = { id: null, lines: [], ids: [] };
  $("room").textContent = room;

  function line(cls, parts, at) {
    const li = document.createElement("li");
    li.className = cls;
    for (const [c, text] of parts) {
      const span = document.createElement("span");
      if (c) span.className = c;
      span.textContent = text;
      li.append(span);
    }
    if (at) { const t = document.createElement("time"); t.textContent = new Date(at).toLocaleTimeString(); li.append(t); }
    $("log").append(li);
    li.scrollIntoView({ block: "end" });
  }

  const members = new Set();
  function showMembers() { $("members").textContent = [...members].join(", "); }

  function show(m) {
    chat.lines.push(m);
    if (m.type === "welcome") {
      $("you").textContent = m.you;
      members.clear(); m.members.forEach((n) => members.add(n)); showMembers();
    } else if (m.type === "join") {
      members.add(m.name); showMembers();
      line("meta", [["", m.name + " joined"]], m.at);
    } else if (m.type === "leave") {
      members.delete(m.name); showMembers();
      line("meta", [["", m.name + " left"]], m.at);
    } else if (m.type === "message") {
      line("", [["name", m.name], ["", m.text]], m.at);
    }
  }

  const es = new EventSource(path + "?name=" + encodeURIComponent(name));
  es.addEventListener("connected", (e) => {
    chat.id = JSON.parse(e.data).id;
    chat.ids.push(chat.id);
    $("cid").textContent = chat.id;
    $("status").textContent = "live"; $("status").className = "live";
    $("send").disabled = false;
  });
  es.onmessage = (e) => show(JSON.parse(e.data));
  es.addEventListener("close", (e) => {
    es.close();
    $("status").textContent = "closed: " + JSON.parse(e.data).reason; $("status").className = "";
    $("send").disabled = true;
  });
  es.onerror = () => { $("status").textContent = "reconnecting"; $("status").className = ""; $("send").disabled = true; };

  $("say").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("text").value;
    if (!text.trim() || !chat.id) return;
    const r = await fetch(path, { method: "POST", body: JSON.stringify(text),
                                  headers: { "X-Connection-Id": chat.id, "Content-Type": "application/json" } });
    const answer = r.ok ? await r.json() : { ok: false, error: (await r.json()).error.message };
    if (answer.ok) $("text").value = ""; else line("meta", [["", "not sent: " + answer.error]]);
  });
</script>
</body>
</html>
`;
