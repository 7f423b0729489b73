"""The biometrics wing: signals in, an estimated state out, everything recorded.

Modules
-------
sources
    BrainFlow boards, recorded files and LSL inlets behind one context-manager interface.
estimator
    Band powers, cardiac and muscle markers → :class:`~st_agent.types.EmotionState`.
recording
    Crash-safe, optionally encrypted session folders; export to EDF/FIF/BIDS.
replay
    A recorded session streamed back as a source.
faults
    Fault injection (board drop-outs) for testing the live loop.
"""
