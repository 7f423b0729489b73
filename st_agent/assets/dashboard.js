// The live dashboard's script (st_agent/live/dashboard_page.py documents the page).
"use strict";
const CSRF = document.querySelector('meta[name="csrf"]').content;
const D = document.body.dataset, $ = id => document.getElementById(id);
const KN = ["valence", "tempo", "energy"], KC = ["#ffa94d", "#69db7c", "#ff6b6b"];
const MAXN = 5000, RAW_SPAN = 10, SPAN = 90;
const PC = ["#ffa94d", "#4dabf7", "#69db7c", "#ff6b6b", "#b197fc", "#66d9e8", "#fcc419", "#f783ac"];
const S = {cfg: null, raw: [], est: [], dec: [], kn: [], ph: [], status: null, perf: [],
           quality: null, tmax: 0, seq: 0, dirty: false, pending: [], live: false, sel: null};
window.stDash = {recv: [], paint: []};
for (const k of ["estimates", "signals", "phrases", "controls", "frames", "score", "performers"]) D[k] = 0;
D.ws = "connecting"; D.ended = "";

function push(arr, x, n) { arr.push(x); if (arr.length > (n || MAXN)) arr.splice(0, arr.length - (n || MAXN)); }
function handle(m) {
  const k = m.kind;
  if (k === "config") { S.cfg = m; setupControls(m); }
  else if (k === "signal") {
    D.signals = +D.signals + 1;
    const n = m.chans.length ? m.chans[0].length : 0;
    for (let c = 0; c < m.chans.length; c++) {
      if (!S.raw[c]) S.raw[c] = [];
      for (let i = 0; i < n; i++) push(S.raw[c], [m.t - (n - 1 - i) * m.dt, m.chans[c][i]], 4000);
    }
    S.tmax = Math.max(S.tmax, m.t);
  } else if (k === "estimate") {
    D.estimates = +D.estimates + 1; push(S.est, m); S.quality = m;
    S.tmax = Math.max(S.tmax, m.t);
    if (S.live) { window.stDash.recv.push(Date.now() - m.wall_ms); S.pending.push(m.wall_ms); }
  } else if (k === "calibration") {
    $("calib").firstChild.style.width = (100 * (m.progress || 0)) + "%";
    $("calib-msg").textContent = m.message || ""; D.calib = m.progress;
  } else if (k === "decision") { push(S.dec, m); }
  else if (k === "phrase") { D.phrases = +D.phrases + 1; S.ph.push(m); push(S.kn, [m.t, m.knobs]); addPhrase(m); }
  else if (k === "status") { S.status = m; showStatus(m); }
  else if (k === "performer") {
    D.performers = +D.performers + 1; if (!S.perf[m.performer]) S.perf[m.performer] = [];
    push(S.perf[m.performer], m); S.tmax = Math.max(S.tmax, m.t); showPerformer(m);
  }
  else if (k === "control") { D.controls = +D.controls + 1; addControl(m); }
  else if (k === "end") { D.ended = m.reason || "ended"; $("status").textContent += "  [ended: " + m.reason + "]"; }
  S.dirty = true;
}

function showStatus(m) {
  const kn = m.knobs.map(x => x.toFixed(2)).join(" / ");
  $("status").textContent = `t ${m.t.toFixed(1)} s  ${m.phase}  signal ${m.signal}  target ` +
    `${m.target_name}  knobs ${kn}  ${m.controller}` + (m.paused ? "  PAUSED" : "") +
    (m.override ? "  OVERRIDE" : "");
}
function showPerformer(m) {
  const tb = $("performers");
  while (tb.rows.length <= m.performer + 1) tb.insertRow().innerHTML = "<td></td>".repeat(6);
  const f = x => (x === null || x === undefined) ? "--" : x.toFixed(2);
  const cells = [m.performer, `${f(m.valence)} / ${f(m.arousal)}`, f(m.confidence),
                 `${m.target_name} ${f(m.target[0])} / ${f(m.target[1])}`, m.signal,
                 m.knobs.map(f).join(" / ")];
  const row = tb.rows[m.performer + 1];
  cells.forEach((c, i) => { row.cells[i].textContent = c; });
  row.cells[0].style.color = PC[m.performer % PC.length];
  $("status").textContent = `t ${m.t.toFixed(1)} s  ${m.phase}  jam of ${S.perf.length} performers`;
}
function addPhrase(m) {
  const tr = document.createElement("tr");
  tr.innerHTML = "<td></td><td></td><td></td><td></td>";
  tr.children[0].textContent = m.index; tr.children[1].textContent = m.t.toFixed(1);
  tr.children[2].textContent = m.knobs.map(x => x.toFixed(2)).join(" / ");
  tr.children[3].textContent = m.reason;
  tr.onclick = () => { S.sel = m; renderScore(m); };
  const tb = $("phrases"); tb.insertBefore(tr, tb.rows[1] || null);
  if (!S.sel || !(S.cfg && S.cfg.read_only)) renderScore(m);
}
function renderScore(m) {
  $("score-title").textContent = "phrase " + m.index;
  if (window.ABCJS) { ABCJS.renderAbc("score", m.abc, {responsive: "resize", scale: 0.9}); }
  else { $("score").textContent = m.abc; }
  D.score = $("score").querySelectorAll("svg").length;
  for (const tr of $("phrases").rows) tr.classList.toggle("sel", tr.children[0].textContent == String(m.index));
}
function addControl(m) {
  const tr = $("controls").insertRow(1);
  for (const v of [m.t.toFixed(1), m.action, m.value === null ? "" : JSON.stringify(m.value)])
    tr.insertCell().textContent = v;
}

// ------------------------------------------------------------------ plots
function ctx(id) { const c = $(id), g = c.getContext("2d"); g.fillStyle = "#171b22"; g.fillRect(0, 0, c.width, c.height); return [c, g]; }
function axes(g, c, t0, t1, y0, y1, label) {
  const L = 44, R = 6, T = 6, B = 16, w = c.width - L - R, h = c.height - T - B;
  const X = t => L + (t - t0) / Math.max(t1 - t0, 1e-9) * w, Y = y => T + (1 - (y - y0) / Math.max(y1 - y0, 1e-9)) * h;
  g.strokeStyle = "#2a2f38"; g.strokeRect(L, T, w, h); g.fillStyle = "#7c8591"; g.font = "10px sans-serif";
  g.fillText(y1.toFixed(1), 2, T + 8); g.fillText(y0.toFixed(1), 2, T + h); g.fillText(t0.toFixed(0) + " s", L, c.height - 3);
  g.fillText(t1.toFixed(0) + " s", L + w - 30, c.height - 3); if (label) g.fillText(label, 2, T + h / 2);
  return [X, Y];
}
function line(g, X, Y, pts, color, step) {
  g.strokeStyle = color; g.lineWidth = 1.3; g.beginPath(); let on = false, py = 0;
  for (const [t, y] of pts) {
    if (y === null || y === undefined) { on = false; continue; }
    if (!on) { g.moveTo(X(t), Y(y)); on = true; } else { if (step) g.lineTo(X(t), Y(py)); g.lineTo(X(t), Y(y)); }
    py = y;
  }
  g.stroke();
}
function span() { const ro = S.cfg && S.cfg.read_only; const t1 = Math.max(S.tmax, 1); return [ro ? 0 : Math.max(0, t1 - SPAN), t1]; }
function drawRaw() {
  const [c, g] = ctx("raw"); if (!S.raw.length) return;
  const t1 = S.tmax, t0 = t1 - RAW_SPAN, n = S.raw.length, h = (c.height - 16) / n;
  const names = (S.cfg && S.cfg.channels) || [], q = S.quality && S.quality.quality;
  const badSet = new Set(q ? q.flat.concat(q.saturated) : []);
  const X = t => 60 + (t - t0) / RAW_SPAN * (c.width - 66);
  for (let ci = 0; ci < n; ci++) {
    const pts = S.raw[ci].filter(p => p[0] >= t0); if (!pts.length) continue;
    let mean = 0; for (const p of pts) mean += p[1] || 0; mean /= pts.length;
    let amp = 1e-9; for (const p of pts) amp = Math.max(amp, Math.abs((p[1] || 0) - mean));
    const yc = 8 + h * (ci + 0.5), Y = y => yc - (y - mean) / amp * h * 0.45;
    const bad = badSet.has(names[ci]) || (S.quality && S.quality.bad);
    g.fillStyle = bad ? "#ff6b6b" : "#9aa4b2"; g.font = "11px sans-serif"; g.fillText(names[ci] || ("ch" + ci), 4, yc + 4);
    line(g, X, Y, pts, bad ? "#ff6b6b" : "#74c0fc", false);
  }
}
function drawState() {
  const [c, g] = ctx("state"), [t0, t1] = span(), [X, Y] = axes(g, c, t0, t1, -1, 1);
  const reg = S.status && S.status.region;
  if (reg) { g.fillStyle = "rgba(255,169,77,0.12)"; g.fillRect(X(t0), Y(reg[1]), X(t1) - X(t0), Y(reg[0]) - Y(reg[1]));
             g.fillStyle = "rgba(77,171,247,0.12)"; g.fillRect(X(t0), Y(reg[3]), X(t1) - X(t0), Y(reg[2]) - Y(reg[3])); }
  const e = S.est.filter(m => m.t >= t0 && !m.calibrating);
  line(g, X, Y, e.map(m => [m.t, m.valence]), "#ffa94d"); line(g, X, Y, e.map(m => [m.t, m.arousal]), "#4dabf7");
  S.perf.forEach((pm, i) => {  // a jam: each performer's valence (solid) and arousal (dashed)
    const q = pm.filter(m => m.t >= t0 && m.phase === "music"), col = PC[i % PC.length];
    line(g, X, Y, q.map(m => [m.t, m.valence]), col); g.setLineDash([4, 3]);
    line(g, X, Y, q.map(m => [m.t, m.arousal]), col); g.setLineDash([]);
  });
  const d = S.dec.filter(m => m.t >= t0);
  line(g, X, Y, d.map(m => [m.t, m.target[0]]), "rgba(255,169,77,0.6)", true);
  line(g, X, Y, d.map(m => [m.t, m.target[1]]), "rgba(77,171,247,0.6)", true);
}
function drawPlane() {
  const [c, g] = ctx("plane"), s = c.height - 20, x0 = (c.width - s) / 2, y0 = 10;
  const X = v => x0 + (v + 1) / 2 * s, Y = a => y0 + (1 - (a + 1) / 2) * s;
  g.strokeStyle = "#2a2f38"; g.strokeRect(x0, y0, s, s); g.beginPath(); g.moveTo(X(0), y0); g.lineTo(X(0), y0 + s); g.moveTo(x0, Y(0)); g.lineTo(x0 + s, Y(0)); g.stroke();
  const reg = S.status && S.status.region;
  if (reg) { g.fillStyle = "rgba(105,219,124,0.22)"; g.fillRect(X(reg[0]), Y(reg[3]), X(reg[1]) - X(reg[0]), Y(reg[2]) - Y(reg[3])); }
  const e = S.est.filter(m => !m.calibrating && m.valence !== null).slice(-300);
  g.fillStyle = "#9aa4b2"; for (const m of e) g.fillRect(X(m.valence) - 1, Y(m.arousal) - 1, 2, 2);
  if (e.length) { const m = e[e.length - 1]; g.fillStyle = "#fff"; g.beginPath(); g.arc(X(m.valence), Y(m.arousal), 5, 0, 7); g.fill(); }
}
function drawKnobs() {
  const [c, g] = ctx("knobs"), [t0, t1] = span(), [X, Y] = axes(g, c, t0, t1, 0, 1);
  const pts = S.kn.concat(S.kn.length ? [[t1, S.kn[S.kn.length - 1][1]]] : []);
  if (S.perf.length) {  // a jam: each performer's knobs (valence solid, tempo dashed, energy dotted)
    S.perf.forEach((pm, j) => KN.forEach((_, i) => {
      g.setLineDash([[], [6, 3], [2, 3]][i]);
      line(g, X, Y, pm.filter(m => m.t >= t0).map(m => [m.t, m.knobs[i]]), PC[j % PC.length], true);
    }));
    g.setLineDash([]); return;
  }
  KN.forEach((_, i) => line(g, X, Y, pts.map(p => [p[0], p[1][i]]), KC[i], true));
}
function drawBands() {
  const [c, g] = ctx("bands"), [t0, t1] = span(), e = S.est.filter(m => m.t >= t0);
  const ln = x => (x && x > 0) ? Math.log(x) : null; let lo = 1e9, hi = -1e9;
  for (const m of e) for (const b of ["theta", "alpha", "beta"]) { const y = ln(m.bands[b]); if (y !== null) { lo = Math.min(lo, y); hi = Math.max(hi, y); } }
  if (lo > hi) { lo = 0; hi = 1; }
  const [X, Y] = axes(g, c, t0, t1, lo - 0.1, hi + 0.1);
  [["theta", "#b197fc"], ["alpha", "#4dabf7"], ["beta", "#ff6b6b"]].forEach(([b, col]) => line(g, X, Y, e.map(m => [m.t, ln(m.bands[b])]), col));
}
function drawRates() {
  const [c, g] = ctx("rates"), [t0, t1] = span(), e = S.est.filter(m => m.t >= t0);
  const [X, Y] = axes(g, c, t0, t1, 0, 120);
  line(g, X, Y, e.map(m => [m.t, m.hr]), "#ff6b6b"); line(g, X, Y, e.map(m => [m.t, m.br]), "#66d9e8");
}
function frame() {
  if (S.dirty) {
    S.dirty = false; drawRaw(); drawState(); drawPlane(); drawKnobs(); drawBands(); drawRates();
    D.frames = +D.frames + 1; const now = Date.now();
    for (const w of S.pending) window.stDash.paint.push(now - w); S.pending = [];
  }
  requestAnimationFrame(frame);
}

// ------------------------------------------------------------------ controls
function setupControls(cfg) {
  document.body.classList.toggle("ro", !!cfg.read_only);
  const acts = cfg.actions || ["knobs", "release", "target", "pause", "resume", "stop", "marker"];
  const uses = {override: "knobs", release: "release", "target-btn": "target", "target-select": "target",
                pause: "pause", resume: "resume", marker: "marker", note: "marker", stop: "stop"};
  for (const [id, a] of Object.entries(uses)) $(id).hidden = !acts.includes(a);
  for (const k of KN) $("k-" + k).parentNode.hidden = !acts.includes("knobs");
  if (cfg.performers) {
    $("perf-sec").hidden = false;
    for (const id of ["raw-sec", "bands-sec", "rates-sec"]) $(id).hidden = true;
  }
  $("mode").textContent = cfg.read_only ? "review of a finished session (read-only)" : (cfg.accelerated ? "live (accelerated clock)" : "live");
  KN.forEach((k, i) => { const el = $("k-" + k), r = cfg.ranges[i]; el.min = r[0]; el.max = r[1]; el.value = (r[0] + r[1]) / 2;
                         const show = () => { $("v-" + k).textContent = (+el.value).toFixed(2); }; el.oninput = show; show(); });
  const sel = $("target-select"); sel.innerHTML = "";
  for (const t of cfg.targets) { const o = document.createElement("option"); o.value = o.textContent = t; sel.appendChild(o); }
  sel.value = cfg.target;
}
async function send(action, value) {
  const body = {action: action}; if (value !== undefined) body.value = value;
  try {
    const r = await fetch("/api/control", {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
                                           body: JSON.stringify(body), credentials: "same-origin"});
    const j = await r.json(); $("ctl-msg").textContent = r.ok ? ("sent: " + action) : ("refused: " + j.error);
  } catch (e) { $("ctl-msg").textContent = "not sent: " + e; }
}
$("override").onclick = () => { const v = {}; KN.forEach(k => v[k] = +$("k-" + k).value); send("knobs", v); };
$("release").onclick = () => send("release");
$("target-btn").onclick = () => send("target", $("target-select").value);
$("pause").onclick = () => send("pause"); $("resume").onclick = () => send("resume");
$("marker").onclick = () => { const t = $("note").value.trim(); if (t) { send("marker", t); $("note").value = ""; } };
$("stop").onclick = () => send("stop");

// ------------------------------------------------------------------ stream
function connect() {
  const ws = new WebSocket(`ws://${location.host}/ws?since=${S.seq}`);
  ws.onopen = () => { D.ws = "open"; };
  ws.onmessage = ev => {
    const batch = JSON.parse(ev.data);
    for (const m of batch) { if (m.seq > S.seq) { S.seq = m.seq; handle(m); } }
    S.live = true;
  };
  ws.onclose = () => { D.ws = "closed"; if (!D.ended) setTimeout(connect, 1000); };
}
connect(); requestAnimationFrame(frame);
