"""The live wing: the closed loop in real time.

Modules
-------
session
    One listener: the settings (:class:`~st_agent.live.session.SessionConfig`,
    :class:`~st_agent.live.session.DemoConfig`) and the entry points.
runtime
    The session's loop: calibration, decisions, composition ahead of playback, recording.
inputs
    Opening the biometric source (board or virtual listener); estimator settings.
composing
    The composer worker that writes the next phrase while one plays.
audio
    The session's music files (joined MIDI, ABC score, WAV).
jam, jam_loop, jam_report
    Several performers, one piece: settings and entry point, the loop, the outputs.
report
    The HTML report of a recorded session.
common
    What these modules share (the phrase on the clock, reasons in words, checks).
"""
