"""The outputs a live session feeds, built from its settings.

:func:`build_outputs` turns a :class:`~st_agent.live.session.SessionConfig` into
the :class:`~st_agent.live.outputs.OutputSet` the loop hands every phrase,
decision and marker to. The streaming ``session.wav`` is always first; each
further output (MIDI port, session MIDI file and stems, OSC, LSL outlet) is one
block below that appends itself when its flag asks for it.

Markers the session sends (:data:`MARKER_CALIBRATED`, :data:`MARKER_STOP`, ...)
are plain text; a stop marker always starts with :data:`MARKER_STOP`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from st_agent.live.audio import SessionWavOutput
from st_agent.live.outputs import OutputSet

if TYPE_CHECKING:
    from st_agent.live.session import SessionConfig

__all__ = ["MARKER_CALIBRATED", "MARKER_CONTROLLER", "MARKER_LATE", "MARKER_STOP",
           "WAV_OUTPUT", "build_outputs"]

#: Marker text when the rest baseline is done and the music starts.
MARKER_CALIBRATED = "calibration done"
#: Start of the marker text when the session stops (``"stop: <reason>"``).
MARKER_STOP = "stop"
#: Start of the marker text when a phrase was ready late (``"late phrase: ..."``).
MARKER_LATE = "late phrase"
#: Start of the marker text when the controller is replaced by its fallback.
MARKER_CONTROLLER = "controller fallback"
#: Name of the streaming WAV output (:class:`~st_agent.live.audio.SessionWavOutput`).
WAV_OUTPUT = SessionWavOutput.name


def build_outputs(cfg: SessionConfig, extra: list[Any] | tuple[Any, ...] = ()) -> OutputSet:
    """The outputs of a session, in the order they are called.

    Parameters
    ----------
    cfg : SessionConfig
        Its flags choose the outputs.
    extra : sequence of SessionOutput
        Appended after the configured ones (tests, embedding applications).

    Returns
    -------
    outputs : OutputSet
    """
    outputs: list[Any] = [SessionWavOutput(cfg.fade_sec, cfg.soundfont,
                                           sound=getattr(cfg, "sound", "plain"))]
    result = OutputSet()  # filled below; notices reach it from the outputs' threads
    # ---- further outputs: one block each, `if <flag>: outputs.append(<Output>(...))` ----
    # MIDI port (--midi-out), then session.mid, then the stems (--stems):
    from st_agent.live.session_midi import SessionMidiFile

    session_mid = SessionMidiFile()
    if cfg.midi_out:
        from st_agent.live.midi_out import MidiOut

        def on_notice(t_sec: float, text: str) -> None:
            # a lost/reconnected port: a marker in session.mid and, through the loop,
            # an `output_notice` event in the recording (both thread-safe appends)
            session_mid.marker(t_sec, text)
            result.notice(t_sec, text)

        outputs.append(MidiOut.to_port(cfg.midi_out, virtual=cfg.midi_virtual,
                                       realtime=not cfg.accelerated, on_notice=on_notice))
    outputs.append(session_mid)
    if cfg.stems:  # stems/<part>.wav, streamed (st_agent.live.stems)
        from st_agent.live.stems import PartStreams

        outputs.append(PartStreams(cfg.fade_sec, cfg.soundfont))
    if cfg.osc:  # OSC out (st_agent.live.osc_out, docs/osc.md)
        from st_agent.live.osc_out import OscOutput

        outputs.append(OscOutput(cfg.osc, cfg.osc_prefix, accelerated=cfg.accelerated))
    if cfg.lsl_out or cfg.lsl_out_name:  # LSL outlet (st_agent.live.lsl_out)
        from st_agent.live.lsl_out import DEFAULT_LSL_PREFIX, LslOutput, check_lsl_names

        prefix = cfg.lsl_out_name or DEFAULT_LSL_PREFIX
        check_lsl_names(prefix)  # a name clash is refused before the session starts
        outputs.append(LslOutput(prefix, accelerated=cfg.accelerated, check_names=False))
    # ------------------------------------------------------------------------------------
    outputs.extend(extra)
    result.outputs.extend(outputs)
    result.__post_init__()  # checks every output has the interface
    return result
