"""The simulated listener: one import for the family of listener models.

This module gathers the public names of the listener wing so that older
imports keep working (``from st_agent.listener.model import ListenerParams,
FastListeners, sample_listeners, ...``). The code lives in flat modules:

- :mod:`st_agent.listener.features`: the feature vector a listener responds to
  (measured from the rendered phrase, never the knobs); silence is the zero vector.
- :mod:`st_agent.listener.base`: what every family shares (the appraisal of
  the music, individual differences, the effect of silence, drift).
- :mod:`st_agent.listener.first_order`, :mod:`~st_agent.listener.two_timescale`,
  :mod:`~st_agent.listener.adaptation`, :mod:`~st_agent.listener.entrainment`:
  the four structurally different response models.
- :mod:`st_agent.listener.family`: names, population draws, parameter dicts.
- :mod:`st_agent.listener.fast`: :class:`FastListeners` (any mix of families,
  vectorised) and the measured :class:`EstimatorNoise`.

The raw-signal listener is :class:`st_agent.listener.virtual.VirtualListenerSource`.
Every assumption, with its direction, magnitude range and source, is in
``docs/listener_assumptions.md``.
"""

from __future__ import annotations

from st_agent.listener.adaptation import AdaptationParams
from st_agent.listener.base import SHARED_RANGES, FamilyParams, SharedParams
from st_agent.listener.entrainment import EntrainmentParams
from st_agent.listener.family import (
    FAMILY_NAMES,
    AnyListenerParams,
    check_families,
    family_of,
    params_from_dict,
    params_to_dict,
    sample_family,
    sample_population,
)
from st_agent.listener.fast import EstimatorNoise, FastListeners
from st_agent.listener.features import (
    FEATURE_NAMES,
    feature_matrix,
    feature_vector,
    is_silence,
    random_features,
)
from st_agent.listener.first_order import (
    PARAM_RANGES,
    ListenerParams,
    ListenerState,
    initial_state,
    sample_listeners,
    simulate,
    step,
)
from st_agent.listener.two_timescale import TwoTimescaleParams

__all__ = [
    "FAMILY_NAMES",
    "FEATURE_NAMES",
    "PARAM_RANGES",
    "SHARED_RANGES",
    "AdaptationParams",
    "AnyListenerParams",
    "EntrainmentParams",
    "EstimatorNoise",
    "FamilyParams",
    "FastListeners",
    "ListenerParams",
    "ListenerState",
    "SharedParams",
    "TwoTimescaleParams",
    "check_families",
    "family_of",
    "feature_matrix",
    "feature_vector",
    "initial_state",
    "is_silence",
    "params_from_dict",
    "params_to_dict",
    "random_features",
    "sample_family",
    "sample_listeners",
    "sample_population",
    "simulate",
    "step",
]
