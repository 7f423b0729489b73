"""PPO training, baseline controllers and bundled policies.

Empty for now: policies come with the environments (see README, Status).
"""
