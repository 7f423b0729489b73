"""The live session's dashboard hooks (a mixin of :class:`st_agent.live.runtime.LiveSession`).

With ``SessionConfig.dashboard`` the session starts a
:class:`~st_agent.live.dashboard_server.DashboardServer` once its first chunk is
recorded and its outputs are open, publishes into the server's
:class:`~st_agent.live.dashboard.DashboardHub` from the loop (the runtime calls the
``_dash_*`` methods below where the loop publishes) and stops it when the session
closes (the page gets an ``end`` message first). Without it every hook is skipped
(``self.hub is None``), so a session without a dashboard pays nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from st_agent.live.dashboard import DashboardHub
from st_agent.live.dashboard_feed import (
    SignalThrottle,
    publish_chunk,
    publish_config,
    publish_estimate,
    publish_status,
)
from st_agent.targets import TARGET_REGIONS

__all__ = ["DashboardMixin"]

logger = logging.getLogger(__name__)

#: Most status messages per second of session time.
_STATUS_EVERY_SEC = 0.5


class DashboardMixin:
    """The dashboard's part of a live session (attributes set by ``LiveSession``)."""

    config: Any
    bounds: Any
    target: Any
    folder: Any
    hub: Any
    controls: Any
    guard: Any
    _dashboard: Any
    _on_dashboard: Any

    def _start_dashboard(self, first: Any) -> None:
        """Serve the dashboard (``config.dashboard``) and tell ``on_dashboard`` its URL."""
        cfg = self.config
        if not getattr(cfg, "dashboard", False):
            return
        from st_agent.live.dashboard_server import DashboardServer, is_loopback

        b = self.bounds
        hub = DashboardHub((b.valence, b.tempo, b.energy))
        publish_config(hub, channels=list(first.ch_names), types=list(first.ch_types),
                       bounds=b, target=str(cfg.target), targets=list(TARGET_REGIONS),
                       accelerated=cfg.accelerated, minutes=cfg.minutes,
                       session=str(self.folder.name))
        host = cfg.dashboard_host
        server = DashboardServer(hub, host, cfg.dashboard_port,
                                 allow_remote=not is_loopback(host),  # the explicit flag
                                 title=f"st-agent session {self.folder.name}")
        url = server.start()
        self.hub, self._dashboard = hub, server
        self._dash_wall0 = time.monotonic()
        self._dash_signal = SignalThrottle()
        self._dash_next_status = 0.0
        self._dash_calibrating = True
        if self._on_dashboard is not None:
            self._on_dashboard(url)
        logger.info("dashboard serving on %s:%d", host, server.port)

    def _stop_dashboard(self, reason: str) -> None:
        """The session closes: the page gets ``end``, then the server stops."""
        server, self._dashboard = self._dashboard, None
        if server is None:
            return
        self.hub.close(getattr(self, "_stop_reason", "") or reason)
        server.stop()

    def _dash_time(self, chunk: Any = None) -> float:
        """Session time, s: the stream's on an accelerated clock (at ``chunk``'s end)."""
        if self.config.accelerated and chunk is not None:
            return (chunk.first_sample + chunk.n_times) / chunk.sfreq
        if self.config.accelerated:
            return float(getattr(self, "_now", 0.0))
        return time.monotonic() - self._dash_wall0

    def _dash_chunk(self, chunk: Any) -> None:
        self._dash_t = self._dash_time(chunk)
        if self._dash_signal.due():
            publish_chunk(self.hub, chunk.data, chunk.sfreq, self._dash_t)

    def _dash_estimate(self, est: Any, estimator: Any) -> None:
        calibrating = bool(est.quality.get("calibrating"))
        status = None
        if calibrating or self._dash_calibrating:  # progress, and once more when done
            status = estimator.calibration_status()
            self._dash_calibrating = calibrating
        publish_estimate(self.hub, est, self._dash_t, status)

    def _dash_status(self, st: Any, parts: Any, now: float) -> None:
        if now < self._dash_next_status:
            return
        self._dash_next_status = now + _STATUS_EVERY_SEC
        changer = getattr(self, "target_change", None)
        tgt = changer.current_target(self.target) if changer is not None else self.target
        point = tgt.at(0.0 if st.calibrated_at is None else now - st.calibrated_at)
        publish_status(self.hub, now, phase="calibrating" if st.calibrated_at is None
                       else "music", signal=st.signal, knobs=st.knobs,
                       target_name=str(getattr(tgt, "name", "")), target=point,
                       controller=str(self.guard.using), paused=self.controls.paused,
                       override=self.controls.override, phrases=parts.score.n_phrases)

    def note_marker(self, now: float, text: str) -> None:
        """A dashboard note: to every output as a marker (the control event records it)."""
        self._output_failures(self.outputs.marker(now, text))
