"""The dashboard's page: HTML, style and script (see :mod:`st_agent.live.dashboard_server`).

Plain JavaScript (``st_agent/assets/dashboard.js``) with canvas plots, no plotting
library; the score of a phrase is
drawn by abcjs (``/abcjs.js``, vendored from npm ``abcjs`` 6.7.2, MIT, in
``st_agent/assets``). The Content-Security-Policy (:data:`CSP`) lets the page load
scripts and open a WebSocket only from its own server: nothing comes from the
network. The page reads a stream of JSON arrays of messages from ``/ws``
(:mod:`st_agent.live.dashboard_feed` lists the kinds) and posts controls to
``/api/control`` with the CSRF token of its ``<meta name="csrf">``.

For tests and ``benchmarks/bench_dashboard.py`` the page keeps counters in
``document.body.dataset`` (``ws``, ``estimates``, ``signals``, ``phrases``,
``controls``, ``frames``, ``score``, ``ended``) and, in ``window.stDash.paint``, the
latency of each live estimate from its publication in the session to the frame that
drew it (ms, ``Date.now() - wall_ms``).
"""

from __future__ import annotations

import html

__all__ = ["CSP", "page_html"]

#: Content-Security-Policy of the page: its own scripts and WebSocket only.
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; "
       "style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")

_STYLE = """
body{margin:0;background:#111418;color:#ddd;font:14px sans-serif}
header{padding:6px 12px;background:#1b2028;display:flex;gap:18px;align-items:center}
header b{font-size:16px} #status{font-family:monospace}
main{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:8px;padding:8px}
section{background:#171b22;border-radius:6px;padding:6px}
h2{font-size:13px;margin:2px 4px 4px;color:#9aa4b2;font-weight:normal}
canvas{width:100%;display:block}
#score{background:#f4f1e8;color:#111;border-radius:4px;min-height:120px}
table{border-collapse:collapse;width:100%;font-size:12px}
td,th{border-bottom:1px solid #2a2f38;padding:2px 4px;text-align:left}
tr.sel{background:#2a3240} .ctl label{display:inline-block;width:60px}
.ctl input[type=range]{width:55%} .ctl div{margin:3px 0}
button{background:#2b3442;color:#eee;border:1px solid #445;border-radius:4px;padding:3px 8px}
button.danger{background:#6b2020} #ctl-msg{min-height:1.2em;color:#f99}
#calib{height:8px;background:#2a2f38;border-radius:4px;width:200px}
#calib>div{height:100%;background:#69db7c;border-radius:4px;width:0}
.wide{grid-column:1 / span 2} .ro .ctl{display:none}
"""

_BODY = """
<header><b>{title}</b><span id="mode"></span><span id="status">connecting...</span>
<span>calibration <span id="calib"><div></div></span> <span id="calib-msg"></span></span>
</header>
<main>
<section class="wide" id="perf-sec" hidden><h2>Performers (jam)</h2><table id="performers">
<tr><th>#</th><th>state v / a</th><th>confidence</th><th>target</th><th>signal</th>
<th>knobs v / t / e</th></tr></table></section>
<section class="wide" id="raw-sec"><h2>Raw signals (last 10 s, each channel scaled; red: flat,
saturated or rejected)</h2><canvas id="raw" width="1400" height="300"></canvas></section>
<section><h2>Estimated state (valence orange, arousal blue) and the target region
</h2><canvas id="state" width="700" height="220"></canvas></section>
<section><h2>Valence/arousal plane</h2><canvas id="plane" width="700" height="220">
</canvas></section>
<section><h2>Knobs (valence orange, tempo green, energy red)</h2>
<canvas id="knobs" width="700" height="170"></canvas></section>
<section id="bands-sec"><h2>EEG band powers, ln µV² (theta purple, alpha blue, beta red)</h2>
<canvas id="bands" width="700" height="170"></canvas></section>
<section id="rates-sec"><h2>Heart rate (red) and breathing rate (cyan), per minute</h2>
<canvas id="rates" width="700" height="170"></canvas></section>
<section class="ctl"><h2>Controls</h2>
<div><label>valence</label><input type="range" id="k-valence" min="0" max="1" step="0.01">
<span id="v-valence"></span></div>
<div><label>tempo</label><input type="range" id="k-tempo" min="0" max="1" step="0.01">
<span id="v-tempo"></span></div>
<div><label>energy</label><input type="range" id="k-energy" min="0" max="1" step="0.01">
<span id="v-energy"></span></div>
<div><button id="override">Override knobs</button> <button id="release">Release to the
policy</button></div>
<div><select id="target-select"></select> <button id="target-btn">Change target</button>
<button id="pause">Pause adaptation</button> <button id="resume">Resume</button></div>
<div><input id="note" size="32" maxlength="500" placeholder="marker / note">
<button id="marker">Add marker</button>
<button id="stop" class="danger">Fade out and stop</button></div>
<div id="ctl-msg"></div></section>
<section><h2>Phrases as they play (click one to see its score)</h2>
<div style="max-height:220px;overflow:auto"><table id="phrases"><tr><th>#</th><th>t (s)
</th><th>knobs v/t/e</th><th>why</th></tr></table></div></section>
<section><h2>Score of <span id="score-title">the current phrase</span></h2>
<div id="score"></div></section>
<section class="wide"><h2>Control actions</h2><table id="controls"><tr><th>t (s)</th>
<th>action</th><th>value</th></tr></table></section>
</main>
"""


def page_html(title: str, csrf: str) -> str:
    """The page, with the launch's CSRF token in ``<meta name="csrf">``."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="csrf" content="{html.escape(csrf)}"><link rel="icon" href="data:,">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
            f'<script src="/abcjs.js"></script><script src="/dashboard.js" defer></script>'
            f"</head><body>{_BODY.format(title=html.escape(title))}</body></html>\n")
