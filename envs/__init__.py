"""Gymnasium and PettingZoo environments over the closed loop.

Empty for now: the environments come with the listener simulator (see README, Status).
"""
