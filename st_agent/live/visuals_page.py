"""The HTML and JavaScript of ``visuals.html`` (see :mod:`st_agent.live.visuals`).

Vanilla JavaScript, no library, no network: the page's Content-Security-Policy
(``default-src 'none'``) lets it load only ``session.wav`` beside it
(``media-src 'self'``) and run its own inline script and style. The layout is
that of the video (:mod:`st_agent.live.video`) on a 1280x720 canvas scaled to
the window.
"""

from __future__ import annotations

__all__ = ["CSP", "page_html"]

#: The page's Content-Security-Policy: nothing but the audio file and its own inline code.
CSP = ("default-src 'none'; media-src 'self'; script-src 'unsafe-inline'; "
       "style-src 'unsafe-inline'; img-src data:")

_STYLE = """
body{margin:0;background:#101216;color:#ddd;font-family:sans-serif}
main{max-width:1280px;margin:0 auto;padding:8px}
canvas{width:100%;height:auto;display:block;background:#15181e;border-radius:6px}
audio{width:100%;margin-top:8px}
#msg{color:#f88;min-height:1.2em;font-size:14px}
"""

# Layout (canvas pixels) shared with the video: the plane, the knob bars, the beat
# pulse, the phrase text and the timeline.
_SCRIPT = r"""
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const cv = document.getElementById("view"), g = cv.getContext("2d");
const audio = document.getElementById("audio"), msg = document.getElementById("msg");
const W = 1280, H = 720;
const PL = {x: 70, y: 70, s: 440};          // valence/arousal plane
const KN = {x: 760, y: 90, w: 440, h: 34, gap: 62};  // knob bars
const BT = {x: 700, y: 405, r: 62};         // beat pulse
const TL = {x: 70, y: 580, w: 1140, h: 100};  // timeline
const COL = {v: "#ffa94d", a: "#4dabf7", t: "#69db7c", e: "#ff6b6b", dim: "#5c6370",
             grid: "#2a2f38", text: "#e6e6e6", region: "rgba(105,219,124,0.18)"};
const KNOBS = [["valence", COL.v], ["tempo", COL.t], ["energy", COL.e]];
const S = D.states, P = D.phrases, B = D.beats, DEC = D.decisions;
let frames = 0, lastPhrase = -1, t0wall = null;

function upper(arr, t, key) {  // number of items with key(item) <= t
  let lo = 0, hi = arr.length;
  while (lo < hi) { const m = (lo + hi) >> 1; if (key(arr[m]) <= t) lo = m + 1; else hi = m; }
  return lo;
}
const px = v => PL.x + (v + 1) / 2 * PL.s, py = a => PL.y + (1 - (a + 1) / 2) * PL.s;
const tx = t => TL.x + t / Math.max(D.duration, 1e-9) * TL.w;
const ty = y => TL.y + (1 - (y + 1) / 2) * TL.h;

function stateAt(t) {
  if (!S.length) return [0, 0];
  const i = upper(S, t, r => r[0]);
  if (i === 0) return [S[0][1], S[0][2]];
  if (i >= S.length) return [S[S.length - 1][1], S[S.length - 1][2]];
  const a = S[i - 1], b = S[i], f = (t - a[0]) / Math.max(b[0] - a[0], 1e-9);
  return [a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
}

function drawStatic() {  // the parts that never change, drawn once into an offscreen canvas
  const c = document.createElement("canvas"); c.width = W; c.height = H;
  const s = c.getContext("2d");
  s.fillStyle = "#15181e"; s.fillRect(0, 0, W, H);
  s.strokeStyle = COL.grid; s.lineWidth = 1;
  s.strokeRect(PL.x, PL.y, PL.s, PL.s);
  s.beginPath(); s.moveTo(px(0), PL.y); s.lineTo(px(0), PL.y + PL.s);
  s.moveTo(PL.x, py(0)); s.lineTo(PL.x + PL.s, py(0)); s.stroke();
  s.fillStyle = COL.dim; s.font = "14px sans-serif"; s.textAlign = "center";
  s.fillText("valence", px(0), PL.y + PL.s + 22);
  s.save(); s.translate(PL.x - 22, py(0)); s.rotate(-Math.PI / 2);
  s.fillText("arousal", 0, 0); s.restore();
  s.font = "13px sans-serif";
  [["tense", -0.62, 0.9], ["excited", 0.62, 0.9], ["sad", -0.62, -0.93],
   ["calm", 0.62, -0.93]].forEach(([w, v, a]) => s.fillText(w, px(v), py(a)));
  s.textAlign = "left"; s.font = "15px sans-serif";
  KNOBS.forEach(([name, col], i) => {
    const y = KN.y + i * KN.gap;
    s.fillStyle = COL.text; s.fillText(name, KN.x - 90, y + KN.h * 0.68);
    s.fillStyle = "#222731"; s.fillRect(KN.x, y, KN.w, KN.h);
  });
  s.fillStyle = COL.dim; s.font = "12px sans-serif";
  s.fillText("0", KN.x, KN.y + 3 * KN.gap - 6);
  s.fillText("1", KN.x + KN.w - 8, KN.y + 3 * KN.gap - 6);
  // timeline: target bands, valence and arousal, phrase boundaries
  s.strokeStyle = COL.grid; s.strokeRect(TL.x, TL.y, TL.w, TL.h);
  if (DEC.length) {
    const r = DEC[0].region;
    s.fillStyle = "rgba(255,169,77,0.10)"; s.fillRect(TL.x, ty(r[1]), TL.w, ty(r[0]) - ty(r[1]));
    s.fillStyle = "rgba(77,171,247,0.10)"; s.fillRect(TL.x, ty(r[3]), TL.w, ty(r[2]) - ty(r[3]));
  }
  s.strokeStyle = "rgba(255,255,255,0.12)";
  P.forEach(p => {
    s.beginPath(); s.moveTo(tx(p.t), TL.y); s.lineTo(tx(p.t), TL.y + TL.h); s.stroke();
  });
  [[1, COL.v], [2, COL.a]].forEach(([k, col]) => {
    s.strokeStyle = col; s.lineWidth = 1.5; s.beginPath();
    S.forEach((r, i) => {
      const X = tx(Math.max(r[0], 0)), Y = ty(r[k]);
      i ? s.lineTo(X, Y) : s.moveTo(X, Y);
    });
    s.stroke();
  });
  s.font = "12px sans-serif";
  s.fillStyle = COL.v; s.fillText("valence", TL.x + 6, TL.y - 6);
  s.fillStyle = COL.a; s.fillText("arousal", TL.x + 60, TL.y - 6);
  return c;
}
const STATIC = drawStatic();

function drawPlane(t) {
  const d = DEC.length ? DEC[Math.max(0, upper(DEC, t, x => x.t) - 1)] : null;
  if (d) {
    const [v0, v1, a0, a1] = d.region;
    if (v1 > v0 || a1 > a0) {
      g.fillStyle = COL.region; g.fillRect(px(v0), py(a1), px(v1) - px(v0), py(a0) - py(a1));
    }
    g.strokeStyle = COL.t; g.setLineDash([5, 4]); g.lineWidth = 1.5;
    g.strokeRect(px(v0), py(a1), Math.max(px(v1) - px(v0), 2), Math.max(py(a0) - py(a1), 2));
    g.setLineDash([]);
  }
  const n = upper(S, t, r => r[0]), head = stateAt(t);
  g.lineWidth = 1; g.strokeStyle = "rgba(200,200,200,0.25)"; g.beginPath();
  for (let i = 0; i < n; i++) {
    const X = px(S[i][1]), Y = py(S[i][2]);
    i ? g.lineTo(X, Y) : g.moveTo(X, Y);
  }
  if (n) g.lineTo(px(head[0]), py(head[1]));
  g.stroke();
  g.lineWidth = 2.5; g.strokeStyle = "#f8f9fa"; g.beginPath();
  const first = upper(S, t - D.trail, r => r[0]);
  let started = false;
  for (let i = first; i < n; i++) {
    const X = px(S[i][1]), Y = py(S[i][2]);
    started ? g.lineTo(X, Y) : g.moveTo(X, Y);
    started = true;
  }
  if (started) { g.lineTo(px(head[0]), py(head[1])); g.stroke(); }
  g.fillStyle = "#ffd43b"; g.beginPath();
  g.arc(px(head[0]), py(head[1]), 8, 0, 2 * Math.PI); g.fill();
}

function drawKnobs(t, pi) {
  const knobs = P.length ? P[pi].knobs : [0, 0, 0];
  const di = upper(DEC, t, x => x.t) - 1;
  const next = (di >= 0 && P.length && DEC[di].t > P[pi].t) ? DEC[di].knobs : null;
  KNOBS.forEach(([name, col], i) => {
    const y = KN.y + i * KN.gap;
    g.fillStyle = col; g.fillRect(KN.x, y, KN.w * knobs[i], KN.h);
    g.fillStyle = COL.text; g.font = "15px sans-serif"; g.textAlign = "right";
    g.fillText(knobs[i].toFixed(2), KN.x + KN.w + 50, y + KN.h * 0.68); g.textAlign = "left";
    if (next) { g.fillStyle = "#fff"; g.fillRect(KN.x + KN.w * next[i] - 2, y - 6, 4, KN.h + 12); }
  });
  g.fillStyle = COL.dim; g.font = "12px sans-serif";
  g.fillText(next ? "white tick: the next phrase's knobs" : "knobs of the phrase playing",
             KN.x + 120, KN.y + 3 * KN.gap - 6);
}

function beatAt(t) {
  const i = upper(B, t, r => r[0]) - 1;
  if (i < 0) return [Infinity, false, 0];
  let j = i; while (j > 0 && !B[j][1]) j--;
  return [t - B[i][0], !!B[i][1], i - j + 1];
}

function drawBeat(t, pi) {
  const [dt, down, n] = beatAt(t), pulse = isFinite(dt) ? Math.exp(-dt / D.tau) : 0;
  const r = BT.r * (0.45 + (down ? 0.55 : 0.4) * pulse);
  g.fillStyle = `rgba(255,212,59,${0.25 + 0.75 * pulse})`;
  g.beginPath(); g.arc(BT.x, BT.y, r, 0, 2 * Math.PI); g.fill();
  g.strokeStyle = "#ffd43b"; g.lineWidth = 2; g.beginPath();
  g.arc(BT.x, BT.y, BT.r, 0, 2 * Math.PI); g.stroke();
  const p = P[pi];
  g.fillStyle = COL.text; g.textAlign = "left"; g.font = "bold 30px sans-serif";
  g.fillText(P.length ? `phrase ${p.index + 1} of ${P.length}` : "no phrase", 800, 385);
  g.font = "22px sans-serif";
  if (P.length) g.fillText(`${Math.round(p.bpm)} bpm · key ${p.key} · ${p.meter}`, 800, 420);
  g.fillStyle = COL.dim; g.fillText(n ? `beat ${n}` : "", 800, 452);
  return n;
}

function fmt(t) {
  const m = Math.floor(t / 60), s = Math.floor(t % 60);
  return `${m}:${String(s).padStart(2, "0")}`;
}

function draw(t) {
  const pi = P.length ? Math.max(0, upper(P, t, p => p.t) - 1) : 0;
  g.drawImage(STATIC, 0, 0);
  drawPlane(t); drawKnobs(t, pi); const beat = drawBeat(t, pi);
  g.strokeStyle = "#fff"; g.lineWidth = 2; g.beginPath();
  g.moveTo(tx(t), TL.y - 4); g.lineTo(tx(t), TL.y + TL.h + 4); g.stroke();
  g.fillStyle = COL.text; g.font = "16px sans-serif"; g.textAlign = "left";
  g.fillText(`${D.name}   ${fmt(t)} / ${fmt(D.duration)}`, PL.x, 40);
  const lost = D.lost.some(([a, b]) => t >= a && (b === null || t < b));
  if (lost) {
    g.fillStyle = COL.e; g.font = "bold 18px sans-serif";
    g.fillText("signal lost: holding the knobs", PL.x + 10, PL.y + 24);
  }
  const since = P.length ? t - P[pi].t : Infinity;
  if (since >= 0 && since < D.flash) {   // a phrase change flashes
    const f = 1 - since / D.flash;
    g.strokeStyle = `rgba(255,212,59,${f})`; g.lineWidth = 14; g.strokeRect(7, 7, W - 14, H - 14);
    g.fillStyle = `rgba(255,212,59,${0.12 * f})`; g.fillRect(0, 0, W, H);
  }
  frames++;
  const b = document.body.dataset;
  b.frames = frames; b.time = t.toFixed(3); b.phrase = P.length ? P[pi].index : -1; b.beat = beat;
  if (pi !== lastPhrase) { lastPhrase = pi; b.phraseChanges = (+(b.phraseChanges || 0)) + 1; }
}

function clock() {  // the audio's time; a wall clock while the audio cannot play
  if (audio.error || audio.readyState === 0) {
    if (t0wall === null) return 0;
    return Math.min(D.duration, (performance.now() - t0wall) / 1000);
  }
  return audio.currentTime;
}
function loop() { draw(clock()); requestAnimationFrame(loop); }
audio.addEventListener("error", () => {
  msg.textContent = "session.wav could not be played here (it must lie beside this page); " +
    "showing the visuals on a silent clock.";
  t0wall = performance.now(); document.body.dataset.audio = "error";
});
audio.addEventListener("playing", () => { document.body.dataset.audio = "playing"; });
const m = /t=([0-9.]+)/.exec(location.hash);
if (m) audio.currentTime = parseFloat(m[1]);
document.body.dataset.audio = "ready";
requestAnimationFrame(loop);
"""


def page_html(title: str, data_json: str) -> str:
    """The page: ``title`` (HTML-escaped) and the timeline as JSON (``</`` escaped)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Visuals: {title}</title>
<style>{_STYLE}</style></head>
<body data-frames="0">
<main>
<canvas id="view" width="1280" height="720" aria-label="visuals of session {title}"></canvas>
<audio id="audio" src="session.wav" controls preload="auto"></audio>
<div id="msg"></div>
</main>
<script id="data" type="application/json">{data_json}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
