// Synod console: every action is a call to the public REST API of the replica that served this
// page (docs/console.md). No build step, no external network.
"use strict";

const $ = (s) => document.querySelector(s);
const state = {
  token: sessionStorage.getItem("synod-token") || "",
  leader: null, epoch: null, down: new Set(), seenLeader: false,
  metrics: null, series: { writes: [], reads: [], p99: [] },
  cursor: null, prefix: "", open: null, follow: null,
};

// ---- the REST API -------------------------------------------------------------------------

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

async function api(method, path, opts) {
  opts = opts || {};
  const r = await fetch(path, { method, headers: headers(opts.headers), body: opts.body, cache: "no-store" });
  if (r.status === 401) needToken();
  return r;
}

// A problem+json answer as "title: detail".
async function problem(r) {
  try {
    const p = await r.clone().json();
    return (p.title || r.status) + (p.detail ? ": " + p.detail : "");
  } catch (_) {
    return "HTTP " + r.status;
  }
}

function showError(msg) {
  const e = $("#error");
  if (!msg) { e.hidden = true; return; }
  e.textContent = msg;
  e.hidden = false;
}

function needToken() {
  $("#token-form").hidden = false;
  showError("This replica requires a bearer token (401): enter one above.");
}

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("synod-token", state.token);
  $("#token-form").hidden = true;
  showError(null);
  refresh();
  list(true);
});

// ---- keys and values as bytes ---------------------------------------------------------------

const enc = new TextEncoder();
// A key as shown (text, or "base64:..." for one that is not UTF-8) to its URL: a binary key is
// sent byte by byte, percent-encoded.
function keyPath(key) {
  if (key.startsWith("base64:")) return "/v1/kv/" + Array.from(fromB64(key.slice(7)), (b) => "%" + b.toString(16).padStart(2, "0")).join("");
  return "/v1/kv/" + encodeURIComponent(key);
}
function fromJsonBytes(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  return "base64:" + v.base64;
}
function toHex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" "); }
function toB64(bytes) { let s = ""; bytes.forEach((b) => (s += String.fromCharCode(b))); return btoa(s); }
function fromHex(s) { const t = s.replace(/\s+/g, ""); const out = new Uint8Array(t.length / 2); for (let i = 0; i < out.length; i++) out[i] = parseInt(t.substr(2 * i, 2), 16); return out; }
function fromB64(s) { const t = atob(s.trim()); return Uint8Array.from(t, (c) => c.charCodeAt(0)); }

// ---- the cluster view -----------------------------------------------------------------------

function cell(tr, text) { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); }

function event(what) {
  const li = document.createElement("li");
  li.textContent = new Date().toLocaleTimeString() + "  " + what;
  $("#timeline").prepend(li);
}

function renderMembers(cs) {
  const tbody = $("#members tbody");
  tbody.replaceChildren();
  let leader = null;
  for (const m of cs.members) {
    const tr = document.createElement("tr");
    tr.dataset.id = m.id;
    if (!m.ok) {
      tr.className = "down";
      tr.dataset.role = "down";
      cell(tr, m.id); cell(tr, "down"); cell(tr, ""); cell(tr, "");
      const td = document.createElement("td"); td.colSpan = 7; td.textContent = m.error; tr.appendChild(td);
      tbody.appendChild(tr);
      continue;
    }
    const s = m.status;
    if (s.role === "leader") leader = s.id;
    tr.dataset.role = s.role;
    const mine = (s.members || []).find((x) => x.id === s.id);
    if (s.role === "leader") tr.classList.add("leader");
    if (!s.serving) tr.classList.add("not-serving");
    if (s.lag_slots > 100) tr.classList.add("lagging");
    cell(tr, s.id);
    cell(tr, s.role);
    cell(tr, mine ? mine.state : "");
    cell(tr, s.incarnation);
    cell(tr, s.serving ? "yes" : "no: " + (s.reason || (s.halted ? "halted" : "")));
    cell(tr, s.applied_slot);
    cell(tr, s.commit_slot);
    cell(tr, s.lag_slots);
    cell(tr, s.role === "leader" ? "–" : s.last_leader_contact_ms === null ? "never" : s.last_leader_contact_ms + " ms");
    cell(tr, s.index);
    cell(tr, s.keys);
    tbody.appendChild(tr);
  }
  // The leader is the member that says it leads; else what the asking replica believes.
  leader = leader !== null ? leader : cs.leader;
  $("#leader").textContent = leader === null ? "none" : "node " + leader;
  $("#epoch").textContent = cs.epoch;
  if (state.seenLeader && leader !== state.leader) event("leader " + (state.leader === null ? "none" : "node " + state.leader) + " → " + (leader === null ? "none" : "node " + leader));
  if (state.epoch !== null && cs.epoch !== state.epoch) event("membership changed: epoch " + state.epoch + " → " + cs.epoch + " (" + cs.members.map((m) => m.id).join(", ") + ")");
  for (const m of cs.members) {
    if (!m.ok && !state.down.has(m.id)) { state.down.add(m.id); if (state.seenLeader) event("node " + m.id + " does not answer: " + m.error); }
    if (m.ok && state.down.has(m.id)) { state.down.delete(m.id); event("node " + m.id + " answers again"); }
  }
  state.leader = leader; state.epoch = cs.epoch; state.seenLeader = true;
}

// Rates and latency from this replica's own /metrics (OpenMetrics text).
function parseMetrics(text) {
  const m = { writes: 0, reads: 0, buckets: new Map() };
  for (const line of text.split("\n")) {
    if (line.startsWith("synod_requests_total{")) {
      const route = /route="([^"]*)"/.exec(line)[1], method = /method="([^"]*)"/.exec(line)[1];
      const v = parseFloat(line.slice(line.lastIndexOf(" ") + 1));
      if (!route.startsWith("/v1/kv") && !route.startsWith("/v1/batch") && route !== "/v1/rmw") continue;
      if (method === "GET" || route === "/v1/batch/get") m.reads += v; else if (method !== "HEAD") m.writes += v;
    } else if (line.startsWith("synod_request_seconds_bucket{")) {
      const route = /route="([^"]*)"/.exec(line)[1];
      if (!route.startsWith("/v1/kv") && !route.startsWith("/v1/batch") && route !== "/v1/rmw") continue;
      const le = /le="([^"]*)"/.exec(line)[1];
      const v = parseFloat(line.slice(line.lastIndexOf(" ") + 1));
      m.buckets.set(le, (m.buckets.get(le) || 0) + v);
    }
  }
  return m;
}

function quantile(deltas, q) {
  const les = [...deltas.keys()].filter((k) => k !== "+Inf").map(parseFloat).sort((a, b) => a - b);
  const total = deltas.get("+Inf") || 0;
  if (total <= 0) return null;
  for (const le of les) {
    const k = [...deltas.keys()].find((x) => parseFloat(x) === le);
    if (deltas.get(k) >= q * total) return le * 1000;
  }
  return Infinity;
}

function spark(svg, values) {
  const max = Math.max(1, ...values);
  // The newest value at the right edge; a minute of history.
  const off = 60 - values.length;
  const pts = values.map((v, i) => `${((off + i) * 120) / 59},${30 - (v / max) * 28}`).join(" ");
  svg.innerHTML = `<polyline points="${pts}"/>`;
}

async function refreshMetrics() {
  const r = await api("GET", "/metrics");
  if (!r.ok) return;
  const now = parseMetrics(await r.text());
  const prev = state.metrics;
  state.metrics = now;
  if (!prev) return;
  const w = Math.max(0, now.writes - prev.writes), rd = Math.max(0, now.reads - prev.reads);
  const d = new Map();
  for (const [k, v] of now.buckets) d.set(k, v - (prev.buckets.get(k) || 0));
  const p50 = quantile(d, 0.5), p99 = quantile(d, 0.99);
  const push = (s, v) => { s.push(v); if (s.length > 60) s.shift(); };
  push(state.series.writes, w); push(state.series.reads, rd); push(state.series.p99, p99 === null || !isFinite(p99) ? 0 : p99);
  $("#rate-writes").textContent = w; $("#rate-reads").textContent = rd;
  $("#latency").textContent = p50 === null ? "–" : `≤${p50} / ≤${p99} ms`;
  spark($("#chart-writes"), state.series.writes); spark($("#chart-reads"), state.series.reads); spark($("#chart-p99"), state.series.p99);
}

async function refresh() {
  try {
    const r = await api("GET", "/v1/cluster/status");
    if (!r.ok) {
      if (r.status === 403) showError("cluster status: " + (await problem(r)) + " (the cluster view needs an admin token; the key browser works with this one)");
      else if (r.status !== 401) showError("cluster status: " + (await problem(r)));
      return;
    }
    const cs = await r.json();
    $("#served-by").textContent = "served by node " + cs.asked_by;
    renderMembers(cs);
    if ($("#error").textContent.startsWith("cluster status") || $("#error").textContent.startsWith("this replica")) showError(null);
    await refreshMetrics();
  } catch (e) {
    showError("this replica does not answer (" + e.message + "): it may be down; open the console of another replica");
    $("#served-by").textContent = "not answering";
  }
}

// ---- keys -------------------------------------------------------------------------------------

async function list(fresh) {
  if (fresh) { state.cursor = null; state.prefix = $("#prefix").value; $("#key-list tbody").replaceChildren(); }
  let q = "?prefix=" + encodeURIComponent(state.prefix) + "&limit=50&keys_only=true";
  if (state.cursor) q += "&cursor=" + encodeURIComponent(state.cursor);
  const r = await api("GET", "/v1/kv" + q);
  if (!r.ok) { if (r.status !== 401) showError("list: " + (await problem(r))); return; }
  const page = await r.json();
  for (const e of page.entries) {
    const tr = document.createElement("tr");
    const key = fromJsonBytes(e.key);
    tr.dataset.key = key;
    cell(tr, key); cell(tr, e.version);
    tr.addEventListener("click", () => openKey(key));
    $("#key-list tbody").appendChild(tr);
  }
  state.cursor = page.next_cursor || null;
  $("#more").hidden = !state.cursor;
}

async function openKey(key) {
  const r = await api("GET", keyPath(key));
  if (!r.ok) { showError("read " + key + ": " + (await problem(r))); return; }
  const bytes = new Uint8Array(await r.arrayBuffer());
  state.open = { key, version: r.headers.get("ETag"), bytes };
  $("#ed-key").textContent = key;
  $("#ed-version").textContent = (state.open.version || "").replace(/"/g, "");
  let text = null;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (_) { text = null; }
  document.querySelector(`input[name=enc][value=${text === null ? "hex" : "text"}]`).checked = true;
  renderValue();
  $("#editor").hidden = false;
}

function encoding() { return document.querySelector("input[name=enc]:checked").value; }
function renderValue() {
  const b = state.open.bytes, e = encoding();
  $("#ed-value").value = e === "hex" ? toHex(b) : e === "base64" ? toB64(b) : new TextDecoder().decode(b);
}
function editedBytes() {
  const v = $("#ed-value").value, e = encoding();
  return e === "hex" ? fromHex(v) : e === "base64" ? fromB64(v) : enc.encode(v);
}
document.querySelectorAll("input[name=enc]").forEach((i) => i.addEventListener("change", () => { state.open.bytes = state.open.bytes; renderValue(); }));

$("#save").addEventListener("click", async () => {
  const o = state.open;
  const r = await api("PUT", keyPath(o.key), { headers: { "If-Match": o.version }, body: editedBytes() });
  if (r.status === 412) { showError("conflict: " + o.key + " changed since it was opened (" + (await problem(r)) + "); reopen it"); return; }
  if (!r.ok) { showError("save: " + (await problem(r))); return; }
  showError(null);
  await openKey(o.key);
  list(true);
});

$("#delete").addEventListener("click", async () => {
  const o = state.open;
  const r = await api("DELETE", keyPath(o.key), { headers: { "If-Match": o.version } });
  if (r.status === 412) { showError("conflict: " + o.key + " changed since it was opened; reopen it"); return; }
  if (!r.ok) { showError("delete: " + (await problem(r))); return; }
  $("#editor").hidden = true;
  list(true);
});
$("#close").addEventListener("click", () => { $("#editor").hidden = true; });

$("#create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = $("#new-key").value;
  const r = await api("PUT", keyPath(key), { headers: { "If-None-Match": "*" }, body: enc.encode($("#new-value").value) });
  if (r.status === 412) { showError(key + " exists already (create only creates; open it to edit)"); return; }
  if (!r.ok) { showError("create: " + (await problem(r))); return; }
  showError(null);
  $("#new-key").value = ""; $("#new-value").value = "";
  list(true);
});

$("#browse").addEventListener("submit", (ev) => { ev.preventDefault(); list(true); });
$("#more").addEventListener("click", () => list(false));

// ---- follow live: the change stream, read with fetch so the token can be sent ----------------

async function follow() {
  if (state.follow) state.follow.abort();
  const prefix = $("#prefix").value;
  const ctl = new AbortController();
  state.follow = ctl;
  $("#live-what").textContent = "prefix " + JSON.stringify(prefix);
  let last = null;
  while (!ctl.signal.aborted) {
    try {
      const h = headers(last === null ? {} : { "Last-Event-ID": String(last) });
      const r = await fetch("/v1/watch/" + encodeURIComponent(prefix) + "?prefix=true&progress=5s", { headers: h, signal: ctl.signal });
      if (!r.ok) { if (r.status !== 401) showError("follow: " + (await problem(r))); return; }
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          const ev = { event: "message", data: "", id: null };
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) ev.event = line.slice(6).trim();
            else if (line.startsWith("data:")) ev.data += line.slice(5).trim();
            else if (line.startsWith("id:")) ev.id = line.slice(3).trim();
          }
          if (ev.id) last = ev.id;
          if (ev.event === "put" || ev.event === "delete") {
            const d = JSON.parse(ev.data);
            const li = document.createElement("li");
            li.dataset.key = fromJsonBytes(d.key);
            li.textContent = `#${d.index} ${ev.event} ${fromJsonBytes(d.key)}` + (ev.event === "put" ? ` = ${fromJsonBytes(d.value).slice(0, 80)}` : "");
            $("#live-events").prepend(li);
          } else if (ev.event === "unauthorized" || ev.event === "compacted") {
            showError("follow ended: " + ev.event);
          }
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    await new Promise((res) => setTimeout(res, 1000)); // the stream ended: resume with Last-Event-ID
  }
}
$("#follow").addEventListener("click", follow);

// ---- start -----------------------------------------------------------------------------------

refresh();
list(true);
setInterval(refresh, 1000);
