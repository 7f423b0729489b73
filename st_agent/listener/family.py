"""The family of listener models: names, population draws, parameter files.

Four structurally different response models, each a module with a frozen
parameter class, a population draw and a vectorised kernel:

=================  ===================================  ==========================================
name               parameters                           structure
=================  ===================================  ==========================================
``first_order``    :class:`ListenerParams`              first-order lag toward a saturating target
                                                        (the original model, corrected)
``two_timescale``  :class:`TwoTimescaleParams`          response delay, fast + slow arousal
``adaptation``     :class:`AdaptationParams`            adaptation to the sustained level, brief
                                                        arousal rise when the music changes
``entrainment``    :class:`EntrainmentParams`           tempo paces breathing, breathing sets
                                                        arousal (and heart rate)
=================  ===================================  ==========================================

They share the appraisal of the music (:mod:`st_agent.listener.base`): the
same individual differences (minor-preferring listeners, tempo -> valence,
settings that backfire) and the measured effect of silence. Every
assumption is in ``docs/listener_assumptions.md``.

Examples
--------
>>> group = sample_population(6, rng=0, families=["adaptation", "entrainment"])
>>> sorted({family_of(p) for p in group})
['adaptation', 'entrainment']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from st_agent.listener.adaptation import (
    AdaptationKernel,
    AdaptationParams,
    adaptation_columns,
    sample_adaptation,
)
from st_agent.listener.base import FamilyParams, Kernel
from st_agent.listener.entrainment import (
    EntrainmentKernel,
    EntrainmentParams,
    entrainment_columns,
    sample_entrainment,
)
from st_agent.listener.first_order import (
    FirstOrderKernel,
    ListenerParams,
    first_order_columns,
    sample_listeners,
)
from st_agent.listener.two_timescale import (
    TwoTimescaleKernel,
    TwoTimescaleParams,
    sample_two_timescale,
    two_timescale_columns,
)

__all__ = ["FAMILY_NAMES", "KERNELS", "PARAMS_CLASSES", "AnyListenerParams", "check_families",
           "family_of", "params_from_dict", "params_to_dict", "sample_family",
           "sample_population", "sample_population_columns"]

#: Every family, in a fixed order.
FAMILY_NAMES: tuple[str, ...] = ("first_order", "two_timescale", "adaptation", "entrainment")
#: Parameters of any family.
AnyListenerParams = ListenerParams | TwoTimescaleParams | AdaptationParams | EntrainmentParams
#: ``name -> parameter class``.
PARAMS_CLASSES: dict[str, type[FamilyParams]] = {
    "first_order": ListenerParams, "two_timescale": TwoTimescaleParams,
    "adaptation": AdaptationParams, "entrainment": EntrainmentParams}
#: ``name -> kernel`` (vectorised dynamics).
KERNELS: dict[str, Kernel] = {
    "first_order": FirstOrderKernel(), "two_timescale": TwoTimescaleKernel(),
    "adaptation": AdaptationKernel(), "entrainment": EntrainmentKernel()}
_SAMPLERS: dict[str, Callable[[int, np.random.Generator], list[Any]]] = {
    "first_order": sample_listeners, "two_timescale": sample_two_timescale,
    "adaptation": sample_adaptation, "entrainment": sample_entrainment}
_COLUMNS: dict[str, Callable[[int, np.random.Generator], dict[str, np.ndarray]]] = {
    "first_order": first_order_columns, "two_timescale": two_timescale_columns,
    "adaptation": adaptation_columns, "entrainment": entrainment_columns}


def check_families(families: Sequence[str] | str | None) -> tuple[str, ...]:
    """Validate family names; ``None`` means all of :data:`FAMILY_NAMES`.

    Raises
    ------
    ValueError
        For an unknown name, an empty selection or a repeated name (the
        message names the value and the allowed names).
    TypeError
        When ``families`` is not a sequence of strings.
    """
    if families is None:
        return FAMILY_NAMES
    if isinstance(families, str):
        families = (families,)
    try:
        names = tuple(families)
    except TypeError as e:
        raise TypeError(f"families must be a sequence of names from {list(FAMILY_NAMES)} "
                        f"or None, got {families!r}") from e
    if not names:
        raise ValueError(f"families must name at least one of {list(FAMILY_NAMES)}, got "
                         f"{families!r}")
    for name in names:
        if not isinstance(name, str) or name not in PARAMS_CLASSES:
            raise ValueError(f"unknown listener family {name!r}; choose from "
                             f"{list(FAMILY_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"families must not repeat a name, got {list(names)}")
    return names


def family_of(params: Any) -> str:
    """The family name of a listener's parameters.

    Raises
    ------
    TypeError
        When ``params`` is not the parameters of a known family.
    """
    fam = getattr(type(params), "family", None)
    if fam not in PARAMS_CLASSES or not isinstance(params, PARAMS_CLASSES[fam]):
        raise TypeError(f"expected listener parameters of a family in {list(FAMILY_NAMES)} "
                        f"({', '.join(c.__name__ for c in PARAMS_CLASSES.values())}), got "
                        f"{type(params).__name__}")
    return fam


def sample_family(name: str, n: int, rng: np.random.Generator | int | None = None
                  ) -> list[AnyListenerParams]:
    """``n`` listeners of family ``name`` drawn from its population."""
    (name,) = check_families([name])
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return _SAMPLERS[name](int(n), np.random.default_rng(rng))


def sample_population(n: int, rng: np.random.Generator | int | None = None,
                      families: Sequence[str] | None = None) -> list[AnyListenerParams]:
    """``n`` listeners: each one's family uniform over ``families``, then its parameters.

    Parameters
    ----------
    n : int
        Number of listeners, >= 1.
    rng : numpy.random.Generator or int or None
        Source of randomness (or a seed); the same seed gives the same listeners.
    families : sequence of str, optional
        Families to draw from (default: all of :data:`FAMILY_NAMES`).

    Returns
    -------
    listeners : list
        In draw order; the families are mixed.
    """
    out: list[Any] = [None] * int(n) if isinstance(n, int | np.integer) else []
    for name, rows, cols in sample_population_columns(n, rng, families):
        cls = PARAMS_CLASSES[name]
        for j, r in enumerate(rows):
            out[r] = cls(**{k: float(v[j]) for k, v in cols.items()})
    return out


def sample_population_columns(n: int, rng: np.random.Generator | int | None = None,
                              families: Sequence[str] | None = None
                              ) -> list[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    """:func:`sample_population` as columns: the same draws, no parameter objects.

    For simulators that keep listeners in arrays (the vectorised env's
    resets). The draws are in range by construction (each column is drawn
    inside its field's ``RANGES``).

    Returns
    -------
    groups : list of (family, rows, columns)
        Per family present, in :data:`FAMILY_NAMES` order of ``families``:
        the listeners' positions (int array, shape (k,)) and their parameters
        (``name -> ndarray (k,)``, the parameter class's fields).
    """
    names = check_families(families)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    rng = np.random.default_rng(rng)
    which = rng.integers(len(names), size=int(n)) if len(names) > 1 else np.zeros(n, int)
    out = []
    for k, name in enumerate(names):
        rows = np.flatnonzero(which == k)
        if rows.size:
            out.append((name, rows, _COLUMNS[name](rows.size, rng)))
    return out


def params_to_dict(params: AnyListenerParams) -> dict[str, Any]:
    """Parameters as a JSON-ready dict with a ``"family"`` key."""
    return {"family": family_of(params)} | params.as_dict()


def params_from_dict(d: dict[str, Any]) -> AnyListenerParams:
    """Inverse of :func:`params_to_dict`; without ``"family"`` the dict is first-order.

    Raises
    ------
    ValueError
        For an unknown family or unknown parameter names.
    """
    if not isinstance(d, dict):
        raise TypeError(f"listener parameters must be a dict, got {type(d).__name__}")
    fam = d.get("family", "first_order")
    (fam,) = check_families([fam])
    return PARAMS_CLASSES[fam].from_dict(d)  # type: ignore[return-value]
