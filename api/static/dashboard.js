// The cellsched dashboard (docs/architecture.md, "Observability"). Plain JavaScript, no build.
// Every REFRESH_MS it asks GET /v1/cell/heatmap and GET /v1/ui/activity for what changed since
// the revision each last answered, and redraws only the heatmap cells that changed.
"use strict";

const REFRESH_MS = 2000;
const MAX_DECISIONS_SHOWN = 40;
const $ = (id) => document.getElementById(id);

const S = {
  token: "", heatRev: 0, actRev: 0,
  ids: [], heat: new Int16Array(0), index: new Map(),
  size: 8, cols: 1,
  schedulers: new Map(),   // name -> SchedulerActivity
  lastBytes: 0, refreshes: 0, history: [], selected: null,
};

// -- talking to the API ------------------------------------------------------------

async function getJSON(path, counter) {
  const r = await fetch(path, { headers: S.token ? { Authorization: "Bearer " + S.token } : {} });
  const text = await r.text();
  if (counter) counter.bytes += new TextEncoder().encode(text).length;
  if (!r.ok) {
    let detail = text;
    try { detail = JSON.parse(text).detail; } catch (e) { /* not a Problem */ }
    throw new Error(r.status + ": " + detail);
  }
  return JSON.parse(text);
}

// -- the heatmap ---------------------------------------------------------------------

function color(h) {
  if (h === -2) return "#444";
  if (h === -1) return "#6a5acd";
  return "hsl(" + (120 - 1.2 * h) + ",65%," + (22 + 0.25 * h) + "%)";
}

function layout() {
  const canvas = $("heatmap");
  const n = Math.max(S.ids.length, 1);
  const width = canvas.width;
  S.size = Math.max(2, Math.min(24, Math.floor(Math.sqrt((width * 560) / n))));
  S.cols = Math.max(1, Math.floor(width / S.size));
  canvas.height = Math.ceil(n / S.cols) * S.size;
  canvas.dataset.cells = String(S.ids.length);
}

function drawCell(ctx, i) {
  const s = S.size, gap = s >= 4 ? 1 : 0;
  ctx.fillStyle = color(S.heat[i]);
  ctx.fillRect((i % S.cols) * s, Math.floor(i / S.cols) * s, s - gap, s - gap);
}

function drawAll() {
  const canvas = $("heatmap");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < S.ids.length; i++) drawCell(ctx, i);
}

// A dense frame's byte per machine: 0-100 percent, 101 draining (-1), 102 down (-2).
function denseHeat(b64) {
  const bytes = atob(b64);
  const out = new Int16Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes.charCodeAt(i);
    out[i] = b <= 100 ? b : 100 - b;
  }
  return out;
}

function applyHeat(h) {
  if (h.full) {
    S.ids = h.ids;
    S.heat = Int16Array.from(h.heat);
    S.index = new Map(h.ids.map((id, i) => [id, i]));
    S.digest = h.digest;
    layout();
    drawAll();
    return true;
  }
  if (h.dense != null) {  // every machine, in the id order the digest names
    const heat = denseHeat(h.dense);
    if (h.digest !== S.digest || heat.length !== S.ids.length) return false;
    S.heat = heat;
    drawAll();
    return true;
  }
  const ctx = $("heatmap").getContext("2d");
  for (let k = 0; k < h.ids.length; k++) {
    const i = S.index.get(h.ids[k]);
    if (i === undefined) return false;  // a machine added: lay the map out again
    S.heat[i] = h.heat[k];
    drawCell(ctx, i);
  }
  return h.total === S.ids.length;  // fewer: some removed
}

async function refreshHeat(counter) {
  let h = await getJSON("/v1/cell/heatmap?since=" + S.heatRev, counter);
  if (!applyHeat(h)) {
    h = await getJSON("/v1/cell/heatmap?since=0", counter);
    applyHeat(h);
  }
  S.heatRev = h.revision;
  $("machine-count").textContent = String(S.ids.length);
  $("revision").textContent = String(h.revision);
}

$("heatmap").addEventListener("mousemove", (e) => {
  const r = e.target.getBoundingClientRect();
  const x = Math.floor((e.clientX - r.left) * (e.target.width / r.width) / S.size);
  const y = Math.floor((e.clientY - r.top) * (e.target.height / r.height) / S.size);
  const i = y * S.cols + x;
  const h = S.heat[i];
  $("hover").textContent = x < S.cols && i < S.ids.length
    ? S.ids[i] + ": " + (h >= 0 ? h + "%" : h === -1 ? "draining" : "down") : "";
});

// -- schedulers, queues, parked jobs ---------------------------------------------------

function sparkline(points) {
  const c = document.createElement("canvas");
  c.width = 180; c.height = 28;
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#0d1116"; ctx.fillRect(0, 0, c.width, c.height);
  const line = (key, style) => {
    ctx.strokeStyle = style; ctx.beginPath();
    points.forEach((p, i) => {
      const x = points.length > 1 ? (i / (points.length - 1)) * (c.width - 2) + 1 : 1;
      const y = c.height - 2 - Math.min(1, p[key]) * (c.height - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line("busyness", "#4aa3ff");
  line("conflict_fraction", "#ff6b6b");
  return c;
}

function cells(tr, values) {
  for (const v of values) {
    const td = document.createElement("td");
    if (v instanceof Node) td.appendChild(v); else td.textContent = String(v);
    tr.appendChild(td);
  }
  return tr;
}

function renderSchedulers() {
  const body = $("schedulers").tBodies[0];
  body.replaceChildren();
  for (const [name, s] of [...S.schedulers].sort()) {
    body.appendChild(cells(document.createElement("tr"), [name, s.job_class, s.busyness.toFixed(3),
      s.conflict_fraction.toFixed(3), s.tasks_placed, sparkline(s.series)]));
  }
}

function renderDecisions() {
  const all = [];
  for (const [name, s] of S.schedulers) for (const d of s.decisions) all.push({ scheduler: name, ...d });
  all.sort((a, b) => b.start - a.start || b.seq - a.seq);
  const body = $("decisions").tBodies[0];
  body.replaceChildren();
  for (const d of all.slice(0, MAX_DECISIONS_SHOWN)) {
    const tr = cells(document.createElement("tr"), [new Date(d.start * 1000).toLocaleTimeString(), d.scheduler,
      d.seq, d.jobs, d.placed, d.parked, d.conflicts, d.dur_ms.toFixed(1)]);
    tr.className = "click";
    tr.dataset.scheduler = d.scheduler;
    tr.dataset.seq = String(d.seq);
    if (S.selected === d.scheduler + "/" + d.seq) tr.classList.add("sel");
    tr.addEventListener("click", () => openTrace(d.scheduler, d.seq));
    body.appendChild(tr);
  }
}

function applyActivity(a) {
  for (const name of [...S.schedulers.keys()]) if (!a.alive.includes(name)) S.schedulers.delete(name);
  for (const s of a.changed) S.schedulers.set(s.name, s);
  if (a.changed.length) { renderSchedulers(); renderDecisions(); }
  const q = $("queues").tBodies[0];
  q.replaceChildren();
  for (const [cls, n] of Object.entries(a.queues)) q.appendChild(cells(document.createElement("tr"), [cls, n.pending, n.parked]));
  const ul = $("parked");
  ul.replaceChildren();
  for (const jid of a.parked_jobs) {
    const li = document.createElement("li");
    li.className = "click"; li.textContent = jid;
    li.addEventListener("click", () => explain(jid));
    ul.appendChild(li);
  }
  $("cell-name").textContent = a.cell;
  S.actRev = a.revision;
}

async function explain(jid) {
  const pre = $("explanation");
  pre.hidden = false;
  try {
    pre.textContent = JSON.stringify(await getJSON("/v1/jobs/" + encodeURIComponent(jid) + "/explanation"), null, 2);
  } catch (e) { pre.textContent = String(e); }
}

// -- a decision's waterfall --------------------------------------------------------------

function attrText(attrs) {
  return Object.entries(attrs).map(([k, v]) => k + "=" + v).join("  ");
}

function wfRow(label, total, start, end, cls, attrs) {
  const row = document.createElement("div");
  row.className = "wf-row";
  const name = document.createElement("div");
  name.textContent = label;
  const track = document.createElement("div");
  track.className = "wf-track";
  const bar = document.createElement("div");
  bar.className = cls;
  bar.style.left = (100 * start / total) + "%";
  if (end !== null) bar.style.width = Math.max(0.3, 100 * (end - start) / total) + "%";
  bar.title = label + " " + (end !== null ? (end - start).toFixed(3) + " ms" : "@" + start.toFixed(3) + " ms");
  track.appendChild(bar);
  row.append(name, track);
  if (attrs && Object.keys(attrs).length) {
    const a = document.createElement("div");
    a.className = "wf-attrs";
    a.textContent = attrText(attrs);
    row.appendChild(a);
  }
  return row;
}

async function openTrace(scheduler, seq) {
  S.selected = scheduler + "/" + seq;
  renderDecisions();
  const box = $("waterfall");
  let t;
  try {
    const got = await getJSON("/v1/ui/decisions/" + encodeURIComponent(scheduler) + "?seq=" + seq);
    t = got.decisions[0];
  } catch (e) { box.textContent = String(e); return; }
  if (!t) { box.textContent = "attempt " + seq + " has left the ring"; return; }
  const total = Math.max(t.dur_ms, ...t.spans.map((s) => s.end_ms), 0.001);
  box.replaceChildren();
  const head = document.createElement("div");
  head.id = "wf-title";
  head.textContent = scheduler + " #" + t.seq + ": " + t.jobs + " jobs (" + t.job_ids.join(", ")
    + (t.jobs > t.job_ids.length ? ", ..." : "") + "), " + t.dur_ms.toFixed(3) + " ms";
  box.appendChild(head);
  const axis = document.createElement("div");
  axis.className = "wf-row";
  const ticks = document.createElement("div");
  ticks.className = "wf-axis";
  for (let k = 0; k <= 4; k++) {
    const tick = document.createElement("span");
    tick.textContent = (total * k / 4).toFixed(total < 10 ? 2 : 0) + " ms";
    ticks.appendChild(tick);
  }
  axis.append(document.createElement("div"), ticks);
  box.appendChild(axis);
  box.appendChild(wfRow("schedule.batch", total, 0, t.dur_ms, "wf-bar schedule-batch", t.totals));
  for (const s of t.spans) {
    box.appendChild(wfRow(s.name, total, s.start_ms, s.end_ms, "wf-bar " + s.name.replace(".", "-"), s.attrs));
  }
  for (const e of t.events) box.appendChild(wfRow(e.name, total, e.at_ms, null, "wf-event ev-" + e.name, e.attrs));
  if (t.dropped_spans || t.dropped_events) {
    const more = document.createElement("div");
    more.textContent = "not kept: " + t.dropped_spans + " spans, " + t.dropped_events + " events";
    box.appendChild(more);
  }
}

// -- the loop --------------------------------------------------------------------------

async function refresh() {
  const counter = { bytes: 0 };
  try {
    await Promise.all([refreshHeat(counter),
      getJSON("/v1/ui/activity?since=" + S.actRev, counter).then(applyActivity)]);
    $("status").textContent = "";
  } catch (e) {
    $("status").textContent = String(e.message || e) + (String(e.message).startsWith("401") ? " (a reader token?)" : "");
  }
  S.lastBytes = counter.bytes;
  S.refreshes += 1;
  S.history.push(counter.bytes);
  if (S.history.length > 50) S.history.shift();
  $("refresh-bytes").textContent = String(counter.bytes);
  setTimeout(refresh, REFRESH_MS);
}

function setToken(t) {
  S.token = t;
  sessionStorage.setItem("cellsched.token", t);
  S.heatRev = 0; S.actRev = 0;
}

$("token-form").addEventListener("submit", (e) => { e.preventDefault(); setToken($("token").value.trim()); });
$("explain-form").addEventListener("submit", (e) => { e.preventDefault(); explain($("explain-id").value.trim()); });

// A token in the fragment (never sent to the server) is kept for the session and taken off the address.
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) { setToken(fromHash); history.replaceState(null, "", location.pathname); }
else S.token = sessionStorage.getItem("cellsched.token") || "";

// For tests and the curious: where a machine's cell is drawn, and what the last refresh cost.
window.dash = {
  denseHeat,
  cellOf(id) {
    const i = S.index.get(id);
    if (i === undefined) return null;
    return { index: i, x: (i % S.cols) * S.size, y: Math.floor(i / S.cols) * S.size, size: S.size, heat: S.heat[i] };
  },
  stats() {
    return { refreshes: S.refreshes, lastBytes: S.lastBytes, history: S.history.slice(), cells: S.ids.length,
      heatRev: S.heatRev };
  },
};

refresh();
