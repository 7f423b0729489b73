"""The live wing: the closed loop in real time.

Modules
-------
session
    One listener: calibration, decisions, composition ahead of playback, recording.
jam
    Several performers, one piece.
report
    The HTML report of a recorded session.
"""
