//! The status page at `/` of `control.http`: read-only, self-contained (no
//! script, style or font from elsewhere), refreshed every second from
//! `/status.json` (the typed [`crate::status::Report`]). It shows every
//! node with its state, weight, liveness and heartbeat ages; the bucket
//! map as a grid coloured by owner, with this node's buckets moving in,
//! out and kept in for a newer owner marked; the counters; the recent
//! events.
//!
//! The script reads exactly the JSON paths in [`FIELDS`], which a test of
//! the status model holds to the structs.

/// The JSON paths the page's script reads (array elements as `0`).
pub const FIELDS: &[&str] = &[
    "farm",
    "node_name",
    "node_id",
    "ownership",
    "readiness",
    "health.state",
    "health.transient",
    "health.reason",
    "buckets",
    "owned_buckets",
    "owned_ranges",
    "moving_in_ranges",
    "moving_out_ranges",
    "totals",
    "membership.view",
    "membership.draining",
    "membership.counters.failovers",
    "membership.counters.view_changes",
    "membership.counters.disowned",
    "membership.bucket_map.nodes",
    "membership.bucket_map.owners",
    "membership.nodes.0.id",
    "membership.nodes.0.name",
    "membership.nodes.0.self",
    "membership.nodes.0.alive",
    "membership.nodes.0.state",
    "membership.nodes.0.transient",
    "membership.nodes.0.weight",
    "membership.nodes.0.in_view",
    "membership.nodes.0.buckets",
    "membership.nodes.0.holds.kept_in_ranges",
    "membership.nodes.1.heard.heartbeat_age_ms",
    "recent_events.0.unix_ms",
    "recent_events.0.level",
    "recent_events.0.message",
];

/// The page.
pub const HTML: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Herd</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
h2 { font-size: 1.05em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; background: #fff; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; }
th { background: #f0f0f0; font-weight: 600; }
.dead { color: #b00; font-weight: 600; }
.self { font-weight: 600; }
#error { color: #fff; background: #b00; padding: .3em .6em; display: none; }
#map { display: grid; grid-template-columns: repeat(64, 10px); gap: 1px; background: #ddd; width: max-content; border: 1px solid #ccc; }
#map i { width: 10px; height: 10px; display: block; background: #eee; }
#map i.in { box-shadow: inset 0 0 0 2px #000; }
#map i.out { box-shadow: inset 0 0 0 2px #fff; opacity: .55; }
#map i.kept { box-shadow: inset 0 0 0 2px #f0f; }
#legend span { display: inline-block; margin-right: 1em; }
#legend b { display: inline-block; width: 12px; height: 12px; vertical-align: -2px; margin-right: .3em; }
#events li { font-family: ui-monospace, monospace; font-size: 12px; }
.WARN { color: #a60; } .ERROR { color: #b00; }
</style>
</head>
<body>
<div id="error"></div>
<h1 id="title">Herd</h1>
<div id="me"></div>
<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>id</th><th>name</th><th>liveness</th><th>state</th><th>weight</th><th>in view</th><th>buckets</th><th>heartbeat age (ms)</th></tr></thead><tbody></tbody></table>
<h2>Buckets</h2>
<div id="legend"></div>
<p style="font-size:12px">A square per bucket, coloured by the node the view gives it; outlined black: moving in to this node (new flows here), faded: moving out of it (its connections stay), magenta: kept in for a newer owner.</p>
<div id="map"></div>
<h2>Counters</h2>
<table id="counters"><tbody></tbody></table>
<h2>Recent events</h2>
<ul id="events"></ul>
<p style="font-size:12px">Updated <span id="updated">never</span>; read-only, from <a href="status.json">status.json</a> every second.</p>
<script>
"use strict";
const COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// "0-99,200" -> a Set of bucket numbers.
function ranges(s) {
  const out = new Set();
  for (const part of (s || "").split(",")) {
    if (!part) continue;
    const [lo, hi] = part.split("-").map(Number);
    for (let b = lo; b <= (hi === undefined ? lo : hi); b++) out.add(b);
  }
  return out;
}

function nodeName(st, id) {
  const m = st.membership;
  const n = m && m.nodes.find(x => x.id === id);
  return (n && n.name) || ("node " + id);
}

function render(st) {
  const m = st.membership;
  document.getElementById("title").textContent = "Herd: farm " + st.farm + ", node " + st.node_name;
  document.getElementById("me").textContent =
    st.health.state + " (" + st.readiness + ")" + (st.health.transient ? " transient" : "") +
    ", " + st.ownership + " ownership, " + st.owned_buckets + " of " + st.buckets + " buckets. " + st.health.reason;

  // Nodes.
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren();
  const nodes = m ? m.nodes : [{ id: st.node_id, name: st.node_name, self: true, alive: true,
    state: st.health.state, transient: st.health.transient, weight: "-", in_view: true, buckets: st.owned_buckets }];
  for (const n of nodes) {
    const tr = el("tr");
    tr.dataset.node = n.name || String(n.id);
    tr.dataset.alive = String(n.alive);
    tr.dataset.state = n.state;
    const live = n.self ? "self" : (n.alive ? "alive" : "dead");
    const ages = n.heard ? n.heard.heartbeat_age_ms.map(a => a === null ? "never" : a).join(", ") : "-";
    for (const [text, cls] of [[n.id], [n.name || "?"], [live, live], [n.state + (n.transient ? " (transient)" : "")],
        [n.weight], [n.in_view ? "yes" : "no"], [n.buckets], [ages]]) {
      tr.appendChild(el("td", String(text), cls));
    }
    body.appendChild(tr);
  }

  // The bucket map.
  const map = document.getElementById("map");
  if (map.childElementCount !== st.buckets) {
    map.replaceChildren();
    for (let b = 0; b < st.buckets; b++) {
      const c = el("i");
      c.dataset.b = String(b);
      map.appendChild(c);
    }
  }
  const movingIn = ranges(st.moving_in_ranges), movingOut = ranges(st.moving_out_ranges);
  const kept = ranges(m && m.nodes[0].holds ? m.nodes[0].holds.kept_in_ranges : "");
  const owned = ranges(st.owned_ranges);
  const counts = new Map();
  const cells = map.children;
  for (let b = 0; b < cells.length; b++) {
    let owner = null;
    if (m) {
      const i = SYMBOLS.indexOf(m.bucket_map.owners[b]);
      if (i >= 0) owner = m.bucket_map.nodes[i];
    } else if (owned.has(b)) {
      owner = st.node_id;
    }
    const c = cells[b];
    const name = owner === null ? "none" : nodeName(st, owner);
    c.dataset.owner = name;
    c.style.background = owner === null ? "#eee" : COLORS[(owner - 1) % COLORS.length];
    c.className = movingIn.has(b) ? "in" : movingOut.has(b) ? "out" : "";
    if (kept.has(b)) c.className = "kept";
    c.title = "bucket " + b + ": " + name + (c.className ? " (" + c.className + ")" : "");
    counts.set(name, (counts.get(name) || 0) + 1);
  }
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  for (const [name, count] of [...counts.entries()].sort()) {
    const s = el("span");
    s.dataset.node = name;
    s.dataset.buckets = String(count);
    const swatch = el("b");
    const id = m ? (m.nodes.find(x => x.name === name) || {}).id : st.node_id;
    swatch.style.background = id ? COLORS[(id - 1) % COLORS.length] : "#eee";
    s.append(swatch, name + ": " + count);
    legend.appendChild(s);
  }

  // Counters.
  const rows = [];
  if (m) rows.push(["failovers", m.counters.failovers], ["view changes", m.counters.view_changes],
    ["counted out (withdrew)", m.counters.disowned],
    ["view", "[" + m.view.join(", ") + "]"], ["draining", m.draining]);
  for (const [k, v] of Object.entries(st.totals)) rows.push([k, v]);
  const ct = document.querySelector("#counters tbody");
  ct.replaceChildren();
  for (const [k, v] of rows) {
    const tr = el("tr");
    tr.dataset.counter = k;
    tr.append(el("th", k), el("td", String(v)));
    ct.appendChild(tr);
  }

  // Recent events, newest first.
  const ev = document.getElementById("events");
  ev.replaceChildren();
  for (const e of [...st.recent_events].reverse()) {
    ev.appendChild(el("li", new Date(e.unix_ms).toISOString() + " " + e.level + " " + e.message, e.level));
  }
  document.getElementById("updated").textContent = new Date().toISOString();
  document.body.dataset.updated = "yes";
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const r = await fetch("status.json", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    error.style.display = "none";
  } catch (e) {
    error.textContent = "The node does not answer: " + e.message;
    error.style.display = "block";
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"##;
