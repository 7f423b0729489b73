"""PPO training, baseline controllers and bundled policies.

:mod:`policies.train` trains and saves PPO controllers (safetensors + JSON) and
loads the shipped ones (``load_bundled_policy("calm")``, files under
``policies/assets/<name>/``); :mod:`policies.baselines` holds the random,
fixed, PID and oracle controllers; :mod:`policies.evaluate` compares them on
held-out listeners.
"""
