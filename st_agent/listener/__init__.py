"""The listener wing: simulated listeners for offline training and evaluation.

Modules
-------
family
    The family of listener models: names, population draws, parameter dicts.
first_order, two_timescale, adaptation, entrainment
    The four structurally different response models (parameters, population,
    vectorised kernel each).
base
    What the families share: the appraisal of the music, individual
    differences, the effect of silence, drift; parameter checking.
features
    The feature vector a listener responds to (silence is the zero vector).
fast
    :class:`~st_agent.listener.fast.FastListeners` (any mix of families,
    vectorised) and the measured estimator noise.
model
    One import for all the public names above (older code imports from here).
virtual
    :class:`~st_agent.listener.virtual.VirtualListenerSource`: a biometric source that
    renders raw EEG/ECG/EMG (and respiration) from any family member.
fitting
    Fitting a first-order listener to recorded sessions (``st-agent fit-listener``).

Every assumption is in ``docs/listener_assumptions.md``.
"""
