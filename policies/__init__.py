"""Controllers: PPO training, baselines, the adaptive controller, evaluation, shipped presets.

:mod:`st_agent.policies.train` trains and saves PPO controllers (safetensors + JSON);
:mod:`st_agent.policies.baselines` holds the random, fixed, PID and privileged oracle
controllers; :mod:`st_agent.policies.adaptive` the adaptive model-based controller
(online Bayesian identification + MPC); :mod:`st_agent.policies.residual` residual PPO
on top of it; :mod:`st_agent.policies.tuning` tunes the references on a separate
listener stream; :mod:`st_agent.policies.evaluate` and :mod:`st_agent.policies.lofo`
are the leave-one-family-out protocol; :mod:`st_agent.policies.probe` the feedback
probe; :mod:`st_agent.policies.controllers` loads a controller by name (the shipped
presets live under ``policies/assets/``).
"""
