"""The status page: the client's circuits drawn as a picture, like Tor Browser's circuit display.

One self-contained HTML document (inline CSS and JS, no external resource of any kind) served by
the control server at GET /status-page, behind the same authentication as the JSON API (the
one-time login link sets the session cookie and redirects here). The page reads /status,
/circuits and /streams, and listens on the /events WebSocket: circuit and stream events refresh
the picture, traffic events feed a 60-second graph; /circuits is also polled every few seconds
in case the WebSocket is down.

Every value from the API reaches the DOM through `textContent` (never `innerHTML`), and the
response carries a strict Content-Security-Policy: only this response's nonce may run scripts or
styles, and the page may connect to nothing but its own origin.

Wiring: `server.extra_routes += status_page.routes(server)` before `server.start()`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from onionmesh.runtime.control import ControlServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PATH = "/status-page"
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>onionmesh — circuit display</title>
<style nonce="__NONCE__">
:root {
  --bg: #f4f1f7; --card: #ffffff; --ink: #2b2135; --muted: #6f6480; --line: #ddd4e6;
  --purple: #7d4698; --purple-soft: #efe4f5; --teal: #14848c; --teal-soft: #e0f3f4;
  --amber: #b7791f; --red: #c0392b; --green: #2f855a;
}
* { box-sizing: border-box; }
html, body { margin: 0; padding: 0; }
body { background: var(--bg); color: var(--ink);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header { background: linear-gradient(90deg, #59316d, var(--purple)); color: #fff;
  padding: 14px 24px; display: flex; align-items: center; gap: 18px; flex-wrap: wrap; }
header h1 { font-size: 19px; margin: 0; font-weight: 600; letter-spacing: .2px; }
header h1 .onion { display: inline-block; width: 18px; height: 18px; border-radius: 50%;
  margin-right: 8px; vertical-align: -3px;
  background: radial-gradient(circle, #fff 0 22%, #c9a6dc 23% 45%, #fff 46% 58%, #c9a6dc 59% 100%); }
#summary { display: flex; gap: 16px; flex-wrap: wrap; font-size: 13px; opacity: .95; }
#summary span b { font-weight: 600; }
#live { margin-left: auto; font-size: 13px; display: flex; align-items: center; gap: 6px; }
#live .dot { width: 10px; height: 10px; border-radius: 50%; background: var(--amber); }
#live.on .dot { background: #5be38f; box-shadow: 0 0 6px #5be38f; }
main { padding: 14px 24px 24px; max-width: 1400px; margin: 0 auto; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 18px; margin-bottom: 14px; }
section h2 { font-size: 15px; margin: 0 0 10px; color: var(--purple); font-weight: 600; }
section h2 small { color: var(--muted); font-weight: 400; margin-left: 8px; }
#error { display: none; background: #fdecea; color: var(--red); border: 1px solid #f5c6c0;
  border-radius: 8px; padding: 10px 14px; margin-bottom: 14px; }
#error.show { display: block; }
.empty { color: var(--muted); font-style: italic; padding: 6px 0; }
.circuit { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px;
  margin-bottom: 8px; background: #fcfbfd; display: flex; gap: 14px; align-items: center; }
.circuit.building { border-style: dashed; }
.circ-head { flex: 0 0 190px; display: flex; flex-direction: column; gap: 3px;
  font-size: 12px; color: var(--muted); }
.circ-head .title { display: flex; gap: 6px; align-items: baseline; flex-wrap: wrap; }
.circ-head .cid { color: var(--ink); font-weight: 600; font-size: 14px; }
.circ-head .iso b { color: var(--ink); font-weight: 600; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 8px; font-size: 12px;
  font-weight: 600; background: #eee; color: var(--ink); }
.badge.open { background: #e3f4ea; color: var(--green); }
.badge.building, .badge.new { background: #fff4de; color: var(--amber); }
.badge.closed { background: #fdecea; color: var(--red); }
.badge.dirty { background: var(--purple-soft); color: var(--purple); }
.chain { flex: 1 1 auto; display: flex; align-items: stretch; gap: 0; overflow-x: auto;
  padding: 2px 0; }
.node { flex: 0 0 auto; min-width: 140px; max-width: 220px; border-radius: 8px;
  padding: 6px 10px; border: 1px solid var(--line); background: #fff; }
.node .role { font-size: 11px; text-transform: uppercase; letter-spacing: .6px;
  color: var(--muted); font-weight: 600; }
.node .nick { font-size: 15px; font-weight: 600; margin: 2px 0; overflow-wrap: anywhere; }
.node .addr { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px;
  color: var(--muted); overflow-wrap: anywhere; }
.node .rtt { font-size: 12px; margin-top: 4px; display: flex; align-items: center; gap: 6px; }
.node .rtt .bar { flex: 1; height: 5px; border-radius: 3px; background: #eee; overflow: hidden; }
.node .rtt .bar i { display: block; height: 100%; background: var(--green); }
.node .rtt.slow .bar i { background: var(--amber); }
.node .rtt.veryslow .bar i { background: var(--red); }
.node.endpoint { background: var(--teal-soft); border-color: #b9e0e3; min-width: 120px; }
.node.endpoint .nick { color: var(--teal); }
.node.guard { border-left: 4px solid var(--purple); }
.node.middle { border-left: 4px solid #a98bbb; }
.node.exit { border: 2px solid var(--purple); background: var(--purple-soft); }
.node.exit .role { color: var(--purple); }
.node.pending { opacity: .55; border-style: dashed; }
.exit-tag { display: inline-block; background: var(--purple); color: #fff; border-radius: 4px;
  font-size: 10px; padding: 0 5px; margin-left: 6px; vertical-align: 2px; letter-spacing: .5px; }
.arrow { flex: 0 0 34px; position: relative; align-self: center; height: 14px; }
.arrow::before { content: ""; position: absolute; left: 4px; right: 10px; top: 6px; height: 2px;
  background: var(--purple); }
.arrow::after { content: ""; position: absolute; right: 3px; top: 1px; border-style: solid;
  border-width: 6px 0 6px 9px; border-color: transparent transparent transparent var(--purple); }
.arrow.dim::before { background: #cbbfd6; }
.arrow.dim::after { border-left-color: #cbbfd6; }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cols { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 14px;
  align-items: start; }
.cols section:last-child { margin-bottom: 0; }
@media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
#graph { width: 100%; height: 150px; display: block; }
.legend { display: flex; gap: 18px; font-size: 13px; margin-top: 6px; flex-wrap: wrap; }
.legend .sw { display: inline-block; width: 12px; height: 3px; vertical-align: middle;
  margin-right: 6px; }
.legend .in .sw { background: var(--purple); }
.legend .out .sw { background: var(--teal); }
#events { list-style: none; margin: 0; padding: 0; font-size: 12px; max-height: 120px;
  overflow-y: auto; }
#events li { padding: 3px 0; border-bottom: 1px dotted var(--line); color: var(--muted); }
#events li b { color: var(--ink); font-weight: 600; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding-bottom: 18px; }
</style>
</head>
<body>
<header>
  <h1><span class="onion"></span>onionmesh circuit display</h1>
  <div id="summary"></div>
  <div id="live"><span class="dot"></span><span id="live-text">connecting…</span></div>
</header>
<main>
  <div id="error"></div>
  <section id="circuits-section">
    <h2>Circuits <small id="circ-count"></small></h2>
    <div id="circuits"><div class="empty">loading…</div></div>
  </section>
  <div class="cols">
    <section>
      <h2>Traffic <small>last 60 s, live</small></h2>
      <canvas id="graph" width="600" height="150"></canvas>
      <div class="legend">
        <span class="in"><span class="sw"></span>received <b id="rate-in">0 B/s</b></span>
        <span class="out"><span class="sw"></span>sent <b id="rate-out">0 B/s</b></span>
        <span>total <b id="tot-in">0 B</b> in · <b id="tot-out">0 B</b> out</span>
      </div>
    </section>
    <div>
      <section>
        <h2>Streams <small id="stream-count"></small></h2>
        <div id="streams"><div class="empty">loading…</div></div>
      </section>
      <section>
        <h2>Recent events</h2>
        <ul id="events"><li class="empty">none yet</li></ul>
      </section>
    </div>
  </div>
</main>
<footer id="updated"></footer>
<script nonce="__NONCE__">
"use strict";
(function () {
  var WINDOW_MS = 60000;
  var POLL_MS = 3000;
  var STATUS_MS = 5000;
  var circuits = [];
  var streams = [];
  var samples = [];          // {t, inp, out}: bytes/s from traffic events
  var events = [];
  var socksAddress = "";
  var wsLive = false;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function num(x) { var n = Number(x); return isFinite(n) ? n : 0; }
  function str(x) { return x === undefined || x === null ? "" : String(x); }
  function fmtBytes(n) {
    n = num(n);
    var units = ["B", "KB", "MB", "GB", "TB"];
    var i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? Math.round(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }
  function fmtRate(n) { return fmtBytes(n) + "/s"; }
  function fmtAge(s) {
    s = num(s);
    if (s < 60) { return s.toFixed(s < 10 ? 1 : 0) + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s"; }
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function showError(text) {
    var box = $("error");
    box.textContent = text || "";
    box.className = text ? "show" : "";
  }

  async function getJSON(path) {
    var r = await fetch(path, { credentials: "same-origin", cache: "no-store",
                                headers: { "Accept": "application/json" } });
    if (r.status === 401) {
      throw new Error("The session has expired or is unknown: ask the proxy for a new login link.");
    }
    if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
    return r.json();
  }

  // --- the circuit picture ---------------------------------------------------------------------
  function roleOf(i, n) {
    if (n === 1) { return ["guard exit", "Guard + exit"]; }
    if (i === 0) { return ["guard", "Guard (hop 1)"]; }
    if (i === n - 1) { return ["exit", "Exit (hop " + n + ")"]; }
    return ["middle", "Middle (hop " + (i + 1) + ")"];
  }

  function hopNode(hop, i, n) {
    var role = roleOf(i, n);
    var pending = hop.rtt_ms === null || hop.rtt_ms === undefined;
    var box = el("div", "node hop " + role[0] + (pending ? " pending" : ""));
    var r = el("div", "role", role[1]);
    box.appendChild(r);
    var nick = el("div", "nick", str(hop.nickname) || "(unnamed)");
    if (i === n - 1) { nick.appendChild(el("span", "exit-tag", "EXIT")); }
    box.appendChild(nick);
    box.appendChild(el("div", "addr", str(hop.address)));
    var fp = str(hop.fingerprint);
    if (fp) { box.title = "fingerprint " + fp; }
    var rtt = el("div", "rtt");
    if (pending) {
      rtt.appendChild(el("span", null, "extending…"));
    } else {
      var ms = num(hop.rtt_ms);
      rtt.className = "rtt" + (ms > 500 ? " veryslow" : ms > 150 ? " slow" : "");
      rtt.appendChild(el("span", null, "RTT " + ms.toFixed(ms < 10 ? 1 : 0) + " ms"));
      var bar = el("span", "bar");
      var fill = el("i");
      fill.style.width = Math.max(4, Math.min(100, Math.log10(1 + ms) / 3 * 100)) + "%";
      bar.appendChild(fill);
      rtt.appendChild(bar);
    }
    box.appendChild(rtt);
    return box;
  }

  function endpointNode(role, title, sub) {
    var box = el("div", "node endpoint");
    box.appendChild(el("div", "role", role));
    box.appendChild(el("div", "nick", title));
    if (sub) { box.appendChild(el("div", "addr", sub)); }
    return box;
  }

  function circuitRow(c) {
    var state = str(c.state) || "unknown";
    var row = el("div", "circuit " + (state === "open" ? "open" : "building"));
    var head = el("div", "circ-head");
    var title = el("div", "title");
    title.appendChild(el("span", "cid", "Circuit " + str(c.id)));
    title.appendChild(el("span", "badge " + state.replace(/[^a-z]/g, ""), state));
    if (c.dirty) { title.appendChild(el("span", "badge dirty", "in use")); }
    head.appendChild(title);
    var iso = el("div", "iso", "isolation: ");
    iso.appendChild(el("b", null, c.isolation === null || c.isolation === undefined ? "default"
                                                                                   : str(c.isolation)));
    head.appendChild(iso);
    var ns = num(c.streams);
    var nstreams = ns + (ns === 1 ? " stream" : " streams");
    head.appendChild(el("div", null, "age " + fmtAge(c.age_s) + " · " + nstreams));
    head.appendChild(el("div", null, "↓ " + fmtBytes(c.bytes_in) + "   ↑ " + fmtBytes(c.bytes_out)));
    row.appendChild(head);

    var chain = el("div", "chain");
    chain.appendChild(endpointNode("You", "This browser", socksAddress ? "SOCKS " + socksAddress : ""));
    var hops = Array.isArray(c.hops) ? c.hops : [];
    for (var i = 0; i < hops.length; i++) {
      var pending = hops[i].rtt_ms === null || hops[i].rtt_ms === undefined;
      chain.appendChild(el("div", "arrow" + (pending ? " dim" : "")));
      chain.appendChild(hopNode(hops[i] || {}, i, hops.length));
    }
    var built = state === "open";
    chain.appendChild(el("div", "arrow" + (built ? "" : " dim")));
    var exitName = hops.length ? str(hops[hops.length - 1].nickname) : "";
    chain.appendChild(endpointNode("Destination", "destination",
      ns ? ns + " open stream" + (ns === 1 ? "" : "s") + " via " + exitName
         : (built ? "ready, not in use" : "not built yet")));
    row.appendChild(chain);
    return row;
  }

  function renderCircuits() {
    var box = $("circuits");
    clear(box);
    var shown = circuits.filter(function (c) { return c && c.state !== "closed"; });
    shown.sort(function (a, b) { return num(a.id) - num(b.id); });
    var open = shown.filter(function (c) { return c.state === "open"; }).length;
    $("circ-count").textContent = open + " open" + (shown.length > open ? ", " + (shown.length - open)
                                                                          + " building" : "");
    if (!shown.length) { box.appendChild(el("div", "empty", "no circuit yet")); return; }
    shown.forEach(function (c) { box.appendChild(circuitRow(c)); });
  }

  function renderStreams() {
    var box = $("streams");
    clear(box);
    $("stream-count").textContent = streams.length + " open";
    if (!streams.length) { box.appendChild(el("div", "empty", "no open stream")); return; }
    var table = el("table");
    var head = el("tr");
    [["Circuit", ""], ["Stream", ""], ["State", ""], ["Exit", ""], ["Received", "num"], ["Sent", "num"]]
      .forEach(function (h) { head.appendChild(el("th", h[1], h[0])); });
    var thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var body = el("tbody");
    streams.forEach(function (s) {
      var tr = el("tr");
      tr.appendChild(el("td", null, str(s.circuit)));
      tr.appendChild(el("td", null, str(s.stream)));
      tr.appendChild(el("td", null, str(s.state)));
      tr.appendChild(el("td", null, str(s.exit)));
      tr.appendChild(el("td", "num", fmtBytes(s.bytes_in)));
      tr.appendChild(el("td", "num", fmtBytes(s.bytes_out)));
      body.appendChild(tr);
    });
    table.appendChild(body);
    box.appendChild(table);
  }

  function renderSummary(st) {
    var box = $("summary");
    clear(box);
    function item(label, value) {
      var s = el("span", null, label + " ");
      s.appendChild(el("b", null, value));
      box.appendChild(s);
    }
    item("SOCKS", str(st.socks));
    item("relays known", str(st.relays_known));
    item("circuits open", str(st.circuits_open));
    item("uptime", fmtAge(st.uptime_s));
  }

  var refreshing = false;
  async function refresh() {
    if (refreshing) { return; }
    refreshing = true;
    try {
      var got = await Promise.all([getJSON("/circuits"), getJSON("/streams")]);
      circuits = Array.isArray(got[0]) ? got[0] : [];
      streams = Array.isArray(got[1]) ? got[1] : [];
      renderCircuits();
      renderStreams();
      showError("");
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      showError(str(e && e.message ? e.message : e));
    } finally {
      refreshing = false;
    }
  }

  async function refreshStatus() {
    try {
      var st = await getJSON("/status");
      if (st && typeof st === "object") {
        var before = socksAddress;
        socksAddress = str(st.socks);
        renderSummary(st);
        if (before !== socksAddress) { renderCircuits(); }
      }
    } catch (e) {
      showError(str(e && e.message ? e.message : e));
    }
  }

  var scheduled = null;
  function scheduleRefresh() {
    if (scheduled !== null) { return; }
    scheduled = setTimeout(function () { scheduled = null; refresh(); refreshStatus(); }, 150);
  }

  // --- events ------------------------------------------------------------------------------------
  function logEvent(text, detail) {
    events.unshift({ t: new Date(), text: text, detail: detail });
    if (events.length > 40) { events.length = 40; }
    var list = $("events");
    clear(list);
    events.forEach(function (ev) {
      var li = el("li", null, ev.t.toLocaleTimeString() + " ");
      li.appendChild(el("b", null, ev.text));
      if (ev.detail) { li.appendChild(document.createTextNode(" " + ev.detail)); }
      list.appendChild(li);
    });
  }

  function onMessage(data) {
    var msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    if (!msg || typeof msg !== "object") { return; }
    if (msg.type === "traffic") {
      samples.push({ t: Date.now(), inp: num(msg.bytes_in_per_s), out: num(msg.bytes_out_per_s) });
      var cutoff = Date.now() - WINDOW_MS - 2000;
      while (samples.length && samples[0].t < cutoff) { samples.shift(); }
      $("rate-in").textContent = fmtRate(msg.bytes_in_per_s);
      $("rate-out").textContent = fmtRate(msg.bytes_out_per_s);
      $("tot-in").textContent = fmtBytes(msg.bytes_in);
      $("tot-out").textContent = fmtBytes(msg.bytes_out);
      drawGraph();
    } else if (msg.type === "circuit") {
      var c = msg.circuit || {};
      var hops = Array.isArray(c.hops) ? c.hops : [];
      var detail = hops.map(function (h) { return str(h && h.nickname); }).join(" → ");
      if (msg.what === "extended") {
        var done = hops.filter(function (h) { return h && h.rtt_ms !== null && h.rtt_ms !== undefined; });
        var last = done[done.length - 1] || {};
        detail = "to " + str(last.nickname) + " (hop " + done.length + " of " + hops.length + ", RTT "
                 + num(last.rtt_ms).toFixed(1) + " ms)";
      } else if ((msg.what === "failed" || msg.what === "closed") && c.closed_reason) {
        detail += " (" + str(c.closed_reason) + ")";
      }
      logEvent("circuit " + str(c.id) + " " + str(msg.what), detail);
      scheduleRefresh();
    } else if (msg.type === "stream") {
      var s = msg.stream || {};
      logEvent("stream " + str(s.stream) + " " + str(msg.what),
               "on circuit " + str(s.circuit) + " via " + str(s.exit));
      scheduleRefresh();
    }
  }

  function setLive(on, text) {
    wsLive = on;
    $("live").className = on ? "on" : "";
    $("live-text").textContent = text;
  }

  var retry = 1000;
  function connect() {
    var ws;
    try {
      var scheme = location.protocol === "https:" ? "wss:" : "ws:";
      ws = new WebSocket(scheme + "//" + location.host + "/events");
    } catch (e) {
      setLive(false, "polling (no live events)");
      setTimeout(connect, retry);
      return;
    }
    ws.onopen = function () { retry = 1000; setLive(true, "live"); scheduleRefresh(); };
    ws.onmessage = function (ev) { if (typeof ev.data === "string") { onMessage(ev.data); } };
    ws.onclose = function () {
      setLive(false, "polling (events reconnecting)");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    };
    ws.onerror = function () { try { ws.close(); } catch (e) { /* already closed */ } };
  }

  // --- the traffic graph -------------------------------------------------------------------------
  function niceMax(v) {
    if (v <= 1024) { return 1024; }
    var p = Math.pow(2, Math.ceil(Math.log2(v)));
    return p;
  }

  function drawGraph() {
    var canvas = $("graph");
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || 600;
    var h = canvas.clientHeight || 150;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    var g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    var left = 64, right = 10, top = 10, bottom = 22;
    var pw = w - left - right, ph = h - top - bottom;
    var now = Date.now();
    var peak = 0;
    samples.forEach(function (s) { peak = Math.max(peak, s.inp, s.out); });
    var ymax = niceMax(peak);
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#6f6480";
    g.strokeStyle = "#e6dff0";
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (var i = 0; i <= 4; i++) {
      var y = top + ph - (ph * i) / 4;
      g.beginPath();
      g.moveTo(left, Math.round(y) + 0.5);
      g.lineTo(left + pw, Math.round(y) + 0.5);
      g.stroke();
      g.fillText(fmtRate((ymax * i) / 4), left - 6, y);
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    for (var sec = 60; sec >= 0; sec -= 15) {
      var x = left + pw - (pw * sec) / 60;
      g.beginPath(); g.moveTo(Math.round(x) + 0.5, top); g.lineTo(Math.round(x) + 0.5, top + ph); g.stroke();
      g.fillText(sec === 0 ? "now" : "-" + sec + " s", x, top + ph + 5);
    }
    function line(key, color, fill) {
      var pts = samples.filter(function (s) { return now - s.t <= WINDOW_MS + 1000; });
      if (!pts.length) { return; }
      function X(s) { return left + pw - (pw * Math.min(WINDOW_MS, Math.max(0, now - s.t))) / WINDOW_MS; }
      function Y(s) { return top + ph - (ph * Math.min(s[key], ymax)) / ymax; }
      g.beginPath();
      g.moveTo(X(pts[0]), top + ph);
      pts.forEach(function (s) { g.lineTo(X(s), Y(s)); });
      g.lineTo(X(pts[pts.length - 1]), top + ph);
      g.closePath();
      g.fillStyle = fill;
      g.fill();
      g.beginPath();
      pts.forEach(function (s, j) { if (j === 0) { g.moveTo(X(s), Y(s)); } else { g.lineTo(X(s), Y(s)); } });
      g.strokeStyle = color;
      g.lineWidth = 2;
      if (pts.length === 1) { g.arc(X(pts[0]), Y(pts[0]), 2, 0, 2 * Math.PI); }
      g.stroke();
    }
    line("inp", "#7d4698", "rgba(125, 70, 152, 0.15)");
    line("out", "#14848c", "rgba(20, 132, 140, 0.12)");
    if (!samples.length) {
      g.fillStyle = "#6f6480";
      g.textAlign = "center";
      g.textBaseline = "middle";
      g.fillText(wsLive ? "waiting for traffic samples…" : "no live events yet", left + pw / 2, top + ph / 2);
    }
  }

  window.addEventListener("resize", drawGraph);
  drawGraph();
  refresh();
  refreshStatus();
  connect();
  setInterval(refresh, POLL_MS);
  setInterval(refreshStatus, STATUS_MS);
  setInterval(drawGraph, 1000);
})();
</script>
</body>
</html>
"""


def content_security_policy(nonce: str, ws_origin: str | None) -> str:
    connect = "'self'" + (f" {ws_origin}" if ws_origin else "")
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'nonce-{nonce}'",
            f"style-src 'nonce-{nonce}'",
            "img-src 'self' data:",
            f"connect-src {connect}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def render(nonce: str) -> str:
    return PAGE.replace("__NONCE__", nonce)


def routes(server: ControlServer) -> list[tuple[str, str, Handler]]:
    """The status page's routes, for `server.extra_routes` (added before `server.start()`)."""

    async def status_page(request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(18)
        host = request.host if _HOST_RE.match(request.host or "") else f"{server.host}:{server.port}"
        return web.Response(
            text=render(nonce),
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": content_security_policy(nonce, f"ws://{host}"),
                "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    return [("GET", PATH, status_page)]
