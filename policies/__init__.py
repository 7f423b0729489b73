"""PPO training, baseline controllers and bundled policies.

:mod:`st_agent.policies.train` trains and saves PPO controllers (safetensors + JSON) and
loads the shipped ones (``load_bundled_policy("calm")``, files under
``policies/assets/<name>/``); :mod:`st_agent.policies.baselines` holds the random,
fixed, PID and oracle controllers; :mod:`st_agent.policies.evaluate` compares them on
held-out listeners.
"""
