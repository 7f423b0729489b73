"""Composing ahead: the next phrase is written in a worker thread while one plays."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any

from st_agent.types import Knobs, MusicFeatures, Phrase

__all__ = ["PhraseMaker"]

logger = logging.getLogger(__name__)


class PhraseMaker:
    """Composes, arranges and measures phrases in one worker thread.

    Parameters
    ----------
    seed : int
        Phrase ``k`` is composed with seed ``seed + k``.

    Notes
    -----
    When the composer fails (no valid phrase in all its tries), the last
    phrase is handed back again, so the music never stops; each such failure
    is kept in :attr:`errors`.
    """

    def __init__(self, seed: int) -> None:
        from st_agent.music.composer import Composer

        self.composer = Composer()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="composer")
        self._seed = seed
        self._n = 0
        self.last: tuple[Phrase, MusicFeatures, Any] | None = None
        self.errors: list[str] = []  # composer failures covered by a repeat

    def _make(self, knobs: Knobs, context: Phrase | None) -> tuple[Phrase, MusicFeatures, Any,
                                                                    float]:
        from st_agent.music.abc import AbcError
        from st_agent.music.composer import ComposerError
        from st_agent.music.render import measure_features, render_phrase

        try:
            phrase = self.composer.compose(knobs, context=context, seed=self._seed + self._n)
            pm = render_phrase(phrase.abc, phrase.key, knobs, meter=phrase.meter)
        except (ComposerError, AbcError) as e:
            if self.last is None:
                raise
            # the music must not stop: play the last phrase again and say so
            logger.warning("composer failed (%s); repeating the last phrase", e)
            self.errors.append(str(e))
            return (*self.last, time.monotonic())
        finally:
            self._n += 1
        feats = measure_features(pm)
        self.last = (phrase, feats, pm)
        return phrase, feats, pm, time.monotonic()

    def submit(self, knobs: Knobs, context: Phrase | None) -> concurrent.futures.Future:
        """Start composing the phrase after ``context`` under ``knobs``.

        Returns
        -------
        future : Future
            Resolves to ``(phrase, features, pretty_midi, ready_monotonic_sec)``.
        """
        return self._pool.submit(self._make, knobs, context)

    def run(self, fn: Any, *args: Any) -> concurrent.futures.Future:
        """Run ``fn(*args)`` in the composer's thread, after the work already queued
        (added for :mod:`st_agent.live.target_change`: calibration and candidates use
        the same composer, one call at a time)."""
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        """Stop the worker (a phrase being composed is finished first)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
