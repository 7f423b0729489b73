"""The listener wing: simulated listeners for offline training and evaluation.

Modules
-------
model
    Listener parameters, population draws and the latent-state dynamics
    (one listener or many at once, :class:`~st_agent.listener.model.FastListeners`).
virtual
    :class:`~st_agent.listener.virtual.VirtualListenerSource`: a biometric source that
    renders raw EEG/ECG/EMG from a simulated listener.
fitting
    Fitting a listener's parameters to recorded sessions (``st-agent fit-listener``).
"""
