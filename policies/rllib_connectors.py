"""RLlib connector pieces of the jam backend (imports Ray: load only with ``--backend rllib``).

RLlib's ``MeanStdFilter(multi_agent=True)`` keeps one running statistic per *agent*.
With parameter sharing that is wrong for the jam: each performer's one-hot entry is
constant for that agent (std 0), so per-agent normalisation erases who is who, and
one network would see a different normalisation per performer.
:class:`ModuleMeanStdFilter` keeps one statistic per *RLModule* instead: the shared
module's statistic sees every performer's observations (as SB3's VecNormalize over
SuperSuit's sub-envs does); with per-performer modules it is per performer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.connectors.env_to_module import MeanStdFilter
from ray.rllib.utils.filter import MeanStdFilter as _RunningFilter

__all__ = ["ModuleMeanStdFilter"]


class ModuleMeanStdFilter(MeanStdFilter):
    """Mean/std observation filter with one running statistic per RLModule.

    Parameters
    ----------
    agent_to_module : dict of str to str
        Module id of every agent id (the policy mapping, as a table).
    **kwargs
        :class:`~ray.rllib.connectors.env_to_module.MeanStdFilter` arguments
        (``clip_by_value``, ``update_stats``, ...).

    Notes
    -----
    ``get_state()`` is keyed by module id; each entry is RLlib's per-filter state.
    """

    def __init__(self, *, agent_to_module: dict[str, str], **kwargs: Any) -> None:
        super().__init__(multi_agent=True, **kwargs)
        self.agent_to_module = dict(agent_to_module)

    def _init_new_filters(self) -> None:
        space = self.input_observation_space
        self._filters = {}
        for agent, module_id in self.agent_to_module.items():
            if module_id not in self._filters:
                self._filters[module_id] = _RunningFilter(
                    np.array(space[agent].shape), demean=self.de_mean_to_zero,
                    destd=self.de_std_to_one, clip=self.clip_by_value)

    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: list[Any],
                 explore: bool | None = None, persistent_data: dict | None = None,
                 **kwargs: Any) -> Any:
        if self._filters is None:
            self._init_new_filters()
        for sa_episode in self.single_agent_episode_iterator(episodes):
            filt = self._filters[self.agent_to_module[sa_episode.agent_id]]
            obs = sa_episode.get_observations(indices=-1)
            sa_episode.set_observations(at_indices=-1,
                                        new_data=filt(obs, update=self._update_stats))
            sa_episode.observation_space = self.observation_space
        return batch
