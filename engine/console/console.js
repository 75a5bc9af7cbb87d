"use strict";
// The rtengine console: every figure comes from the engine's own admin API and streams. Everything
// shown is built with textContent (script names, log lines and messages are not to be trusted).
(function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "rtengine.console.token";
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let overview = null;
  let previous = null; // the last live snapshot, for rates
  let live = null, logs = null, watching = null;
  let editor = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    return node;
  }

  function withToken(path) { return token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path; }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    if (token) opts.headers.Authorization = "Bearer " + token;
    const r = await fetch(path, opts);
    if (r.status === 401) { askToken(); throw new Error("the admin token is needed"); }
    const body = r.headers.get("Content-Type") && r.headers.get("Content-Type").includes("json") ? await r.json() : await r.text();
    if (!r.ok && r.status !== 422) throw new Error((body && body.error && body.error.message) || ("HTTP " + r.status));
    return { status: r.status, body: body };
  }

  // ---- sign-in ------------------------------------------------------------------------------
  function askToken(message) {
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-token").focus();
  }
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    token = $("login-token").value.trim();
    const r = await fetch("/_engine/overview", { headers: { Authorization: "Bearer " + token } });
    if (r.status === 401) { askToken("That token is not the admin token."); return; }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    start();
  });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });

  // ---- tabs ---------------------------------------------------------------------------------
  const onShow = {};
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => show(b.dataset.tab));
  }
  function show(tab) {
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
    for (const s of document.querySelectorAll(".tab")) s.classList.toggle("active", s.id === tab);
    if (onShow[tab]) onShow[tab]();
    history.replaceState(null, "", "#" + tab);
  }

  // ---- figures ------------------------------------------------------------------------------
  const fmt = (n) => n === undefined || n === null ? "–" : Number(n).toLocaleString("en");
  function bytes(n) { const u = ["B", "KB", "MB", "GB", "TB"]; let i = 0; while (n >= 1024 && i < 4) { n /= 1024; i++; } return n.toFixed(i ? 1 : 0) + " " + u[i]; }
  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return seconds + " s"; if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h"; return (seconds / 86400).toFixed(1) + " d";
  }

  function applyStats(snap) {
    const t = snap.totals;
    $("version").textContent = "version " + t.version;
    const health = $("health");
    health.textContent = t.healthy ? "healthy" : "degraded";
    health.className = "pill " + (t.healthy ? "ok" : "degraded");
    $("c-connections").textContent = fmt(t.connections);
    $("c-max").textContent = "of " + fmt(t.max_connections) + " allowed";
    $("c-channels").textContent = fmt(t.channels);
    $("c-subs").textContent = fmt(t.subscriptions);
    $("c-scripts").textContent = fmt(t.scripts.loaded) + " loaded";
    $("c-failed").textContent = t.scripts.failed ? t.scripts.failed + " failed" : (t.failing.length ? t.failing.length + " failing" : "none failing");
    $("c-broker").textContent = t.broker.kind;
    $("c-broker-state").textContent = t.broker.state + (t.broker.kind === "redis" ? (t.broker.runs_cluster_timers ? " · runs cluster timers" : "") : "");
    $("c-uptime").textContent = ago(Math.floor(t.uptime_seconds));
    $("c-cut").textContent = fmt(t.slow_cut) + " slow readers cut off";
    $("c-messages").textContent = fmt(t.messages) + " in all";
    $("c-bytes").textContent = bytes(t.bytes_sent) + " sent in all";
    const rates = {};
    if (previous) {
      const dt = Math.max(0.001, snap.at - previous.at);
      $("c-rate").textContent = fmt(Math.round((t.messages - previous.totals.messages) / dt));
      $("c-delivered").textContent = fmt(Math.round((t.delivered - previous.totals.delivered) / dt));
      const before = {};
      for (const s of previous.streams) before[s.path] = s.messages;
      for (const s of snap.streams) rates[s.path] = before[s.path] === undefined ? 0 : Math.max(0, (s.messages - before[s.path]) / dt);
    }
    const alerts = $("alerts");
    alerts.replaceChildren();
    if (t.failing.length) alerts.append(el("div", { class: "error" }, "The latest save of " + t.failing.join(", ") + " did not load: see Scripts."));
    if (t.broker.state !== "ok") alerts.append(el("div", { class: "error" }, "The broker is " + t.broker.state + ": this process serves its own readers only."));
    renderStreams(snap.streams, rates);
    previous = snap;
  }

  function renderStreams(streams, rates) {
    const body = $("stream-table").tBodies[0];
    body.replaceChildren(...streams.map((s) => el("tr", { "data-stream": s.path },
      el("td", {}, el("code", {}, s.path), s.pattern ? el("small", { class: "muted" }, " pattern") : null),
      el("td", {}, s.owner),
      el("td", {}, fmt(s.channels)),
      el("td", {}, fmt(s.connections)),
      el("td", {}, Object.entries(s.by_transport).map(([k, v]) => k + " " + v).join(", ") || "–"),
      el("td", {}, rates[s.path] === undefined ? "–" : rates[s.path].toFixed(1)),
      el("td", {}, fmt(s.messages)),
      el("td", {}, fmt(s.history)))));
    const top = [...streams].sort((a, b) => (rates[b.path] || 0) - (rates[a.path] || 0) || b.connections - a.connections).slice(0, 5);
    $("top-streams").tBodies[0].replaceChildren(...top.map((s) => el("tr", {},
      el("td", {}, el("code", {}, s.path)), el("td", {}, fmt(s.connections)),
      el("td", {}, rates[s.path] === undefined ? "–" : rates[s.path].toFixed(1)))));
    const paths = new Set();
    for (const s of streams) { if (!s.pattern) paths.add(s.path); for (const p of s.live) paths.add(p); }
    $("pub-paths").replaceChildren(...[...paths].sort().map((p) => el("option", { value: p })));
  }

  function follow() {
    if (live) live.close();
    live = new EventSource(withToken("/_engine/live"));
    live.addEventListener("stats", (e) => { $("feed").textContent = "live"; applyStats(JSON.parse(e.data)); });
    live.onerror = () => { $("feed").textContent = "reconnecting…"; };
  }

  // ---- scripts ------------------------------------------------------------------------------
  async function loadOverview() {
    overview = (await api("/_engine/overview")).body;
    renderScripts();
    const names = overview.scripts.map((s) => s.name);
    fillSelect($("log-script"), [""].concat(names), (n) => n || "all");
    const current = $("edit-name").value;
    fillSelect($("edit-name"), names, (n) => n);
    if (current && names.includes(current)) $("edit-name").value = current;
    return overview;
  }
  function fillSelect(select, values, label) {
    const keep = select.value;
    select.replaceChildren(...values.map((v) => el("option", { value: v }, label(v))));
    if (values.includes(keep)) select.value = keep;
  }
  function renderScripts() {
    const list = $("script-list");
    list.replaceChildren(...overview.scripts.map((s) => {
      const status = s.status === "failed" ? el("span", { class: "badge failed" }, "failed")
        : s.latest_failed ? el("span", { class: "badge warn" }, "last save failed") : el("span", { class: "badge" }, s.status);
      const lists = el("div", { class: "lists" },
        el("div", {}, el("h4", {}, "Routes"), el("ul", {}, ...(s.routes.length ? s.routes : ["–"]).map((r) => el("li", {}, r)))),
        el("div", {}, el("h4", {}, "Streams"), el("ul", {}, ...(s.streams.length ? s.streams : ["–"]).map((r) => el("li", {}, r)))),
        el("div", {}, el("h4", {}, "GraphQL"), el("ul", {}, ...(s.graphql.length ? s.graphql : ["–"]).map((r) => el("li", {}, r)))));
      const history = el("div", { class: "history" }, "Loads: " + s.loads + " · failures: " + s.failures + " · latest: ",
        ...s.history.slice(-5).reverse().map((h, i) => el("span", { class: h.ok ? "" : "error-text" },
          (i ? " · " : "") + new Date(h.at * 1000).toLocaleTimeString() + (h.ok ? " loaded" : " failed"))));
      return el("div", { class: "script", "data-script": s.name },
        el("header", {}, el("h3", {}, s.name), status,
          el("span", { class: "muted" }, s.loaded_at ? "loaded " + new Date(s.loaded_at).toLocaleString() : "not serving"),
          el("span", { class: "spacer" }),
          el("button", { class: "ghost", onclick: () => openScript(s.name) }, "Edit")),
        s.last_error ? el("div", { class: "error" }, s.last_error) : null, lists, history);
    }));
  }
  onShow.scripts = () => loadOverview().catch(report);
  $("scripts-refresh").addEventListener("click", () => loadOverview().catch(report));

  // ---- connections --------------------------------------------------------------------------
  async function loadConnections() {
    const { body } = await api("/_engine/connections?limit=500");
    $("conn-total").textContent = body.total + " open" + (body.total > body.connections.length ? ", " + body.connections.length + " shown" : "");
    $("conn-table").tBodies[0].replaceChildren(...body.connections.map((c) => el("tr", { "data-connection": c.id },
      el("td", {}, el("code", {}, c.id)), el("td", {}, el("code", {}, c.path)), el("td", {}, c.transport),
      el("td", {}, c.user ? (c.user.sub || JSON.stringify(c.user)) : "–"), el("td", {}, ago(c.age_seconds)),
      el("td", {}, bytes(c.queued_bytes)),
      el("td", {}, el("button", { class: "danger", onclick: () => closeConnection(c.id) }, "Close")))));
  }
  async function closeConnection(id) {
    await api("/_engine/connections/" + encodeURIComponent(id), { method: "DELETE" }).catch(report);
    setTimeout(() => loadConnections().catch(report), 200);
  }
  onShow.connections = () => loadConnections().catch(report);
  $("conn-refresh").addEventListener("click", () => loadConnections().catch(report));

  // ---- logs ---------------------------------------------------------------------------------
  const LEVELS = { debug: 0, info: 1, warning: 2, error: 3, critical: 4 };
  let paused = false;
  function followLogs() {
    if (logs) logs.close();
    logs = new EventSource(withToken("/_engine/logs"));
    logs.onmessage = (e) => {
      if (paused) return;
      const line = JSON.parse(e.data);
      const box = $("log-lines");
      box.append(el("div", { class: line.level, "data-script": line.script || "", "data-level": line.level },
        el("time", {}, line.time.slice(11, 23)), el("span", { class: "who" }, line.script || line.logger), line.message));
      while (box.childElementCount > 1000) box.firstElementChild.remove();
      filterLine(box.lastElementChild);
      box.scrollTop = box.scrollHeight;
    };
  }
  function filterLine(node) {
    const script = $("log-script").value, min = LEVELS[$("log-level").value];
    node.hidden = (script && node.dataset.script !== script) || (LEVELS[node.dataset.level] ?? 1) < min;
  }
  for (const id of ["log-script", "log-level"]) $(id).addEventListener("change", () => { for (const n of $("log-lines").children) filterLine(n); });
  $("log-pause").addEventListener("click", () => { paused = !paused; $("log-pause").textContent = paused ? "Resume" : "Pause"; });
  $("log-clear").addEventListener("click", () => $("log-lines").replaceChildren());

  // ---- publish ------------------------------------------------------------------------------
  $("publish-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const path = $("pub-path").value.trim();
    let data = $("pub-data").value;
    if ($("pub-json").checked) {
      try { data = JSON.parse(data); } catch (err) { $("pub-result").textContent = "not JSON: " + err.message; return; }
    }
    const body = { path: path, data: data };
    if ($("pub-event").value.trim()) body.event = $("pub-event").value.trim();
    await watch(path);  // reading it before publishing: the message is seen to arrive
    const r = await api("/_engine/publish", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }).catch(report);
    if (r) $("pub-result").textContent = "published to " + r.body.published + " at " + new Date().toLocaleTimeString();
  });
  function watch(path) {
    if (watching && watching.path === path) return watching.open;
    if (watching) watching.source.close();
    $("watch-path").textContent = path;
    $("arrivals").replaceChildren();
    const source = new EventSource(path);
    const arrive = (e) => {
      $("arrivals").append(el("div", {}, el("time", {}, new Date().toLocaleTimeString()),
        el("span", { class: "who" }, (e.type === "message" ? "" : e.type + " ") + (e.lastEventId ? "#" + e.lastEventId : "")), e.data));
    };
    source.onmessage = arrive;
    const open = new Promise((resolve) => { source.onopen = resolve; setTimeout(resolve, 2000); });
    watching = { path: path, source: source, open: open };
    return open;
  }
  $("pub-path").addEventListener("change", () => { if ($("pub-path").value.trim()) watch($("pub-path").value.trim()); });

  // ---- editor -------------------------------------------------------------------------------
  function ensureEditor() {
    if (editor) return editor;
    editor = CodeMirror($("code"), { mode: "javascript", lineNumbers: true, indentUnit: 2, tabSize: 2, value: "" });
    return editor;
  }
  async function openScript(name) {
    if (!$("editor").classList.contains("active")) show("editor");
    await loadScript(name);
  }
  async function loadScript(name) {
    const cm = ensureEditor();
    const r = await api("/_engine/scripts/" + encodeURIComponent(name)).catch(report);
    if (!r) return;
    cm.setValue(typeof r.body === "string" ? r.body : (r.body.source || ""));
    $("edit-name").value = name;
    $("edit-new").value = "";
    clearMarks();
    $("edit-result").textContent = "opened " + name;
  }
  function clearMarks() {
    $("edit-error").hidden = true;
    if (editor) for (let i = 0; i < editor.lineCount(); i++) editor.removeLineClass(i, "background", "cm-error-line");
  }
  $("edit-open").addEventListener("click", () => loadScript($("edit-new").value.trim() || $("edit-name").value));
  $("edit-save").addEventListener("click", async () => {
    const name = $("edit-new").value.trim() || $("edit-name").value;
    if (!name) return;
    clearMarks();
    $("edit-result").textContent = "saving…";
    const r = await api("/_engine/scripts/" + encodeURIComponent(name), { method: "PUT", headers: { "Content-Type": "application/javascript" }, body: ensureEditor().getValue() }).catch(report);
    if (!r) return;
    if (r.status === 422) {
      $("edit-result").textContent = "saved, but it did not load: the previous version (if any) keeps serving";
      const message = r.body.error.message;
      $("edit-error").textContent = message;
      $("edit-error").hidden = false;
      const where = new RegExp(name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + ":(\\d+)").exec(message);
      if (where) editor.addLineClass(Number(where[1]) - 1, "background", "cm-error-line");
    } else {
      $("edit-result").textContent = "saved and loaded at " + new Date().toLocaleTimeString();
      $("edit-new").value = "";
      await loadOverview();
      $("edit-name").value = name;
    }
  });
  onShow.editor = () => { ensureEditor().refresh(); if (!editor.getValue() && $("edit-name").value) loadScript($("edit-name").value); };

  function report(err) { $("feed").textContent = String(err.message || err); }

  async function start() {
    $("logout").hidden = !token;
    try { await loadOverview(); } catch (e) { if (!$("login").hidden) return; report(e); return; }
    follow();
    followLogs();
    const tab = location.hash.slice(1);
    if (tab && $(tab)) show(tab);
  }
  start();
})();
