"""Composing ahead: the next phrase is written in a worker thread while one plays."""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import logging
import sys
import time
from typing import Any

from st_agent.types import Knobs, MusicFeatures, Phrase

__all__ = ["MMAP_THRESHOLD_BYTES", "PhraseMaker", "fix_mmap_threshold", "share_malloc_arenas"]

logger = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3

#: Allocations from this size on get their own mapping in a live session
#: (:func:`fix_mmap_threshold`), bytes.
MMAP_THRESHOLD_BYTES = 1 << 20


def share_malloc_arenas(n: int = 1) -> bool:
    """Let threads started from now on share at most ``n`` glibc malloc arenas.

    glibc gives each new thread its own arena; the composer thread's arena
    fragments as phrases of different lengths come and go, and ``malloc_trim``
    cannot return what is fragmented: measured, 240 phrases composed in a
    worker thread grew the process by 10.5 MB, the same phrases in the main
    thread (or with ``MALLOC_ARENA_MAX=1``) by 3.5 MB
    (``benchmarks/bench_session_rss.py`` measures a whole session). A no-op
    outside Linux/glibc.

    Parameters
    ----------
    n : int
        Arenas, >= 1.

    Returns
    -------
    applied : bool
        Whether glibc took the setting.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return _mallopt(_M_ARENA_MAX, n)


def fix_mmap_threshold(n_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve every allocation of ``n_bytes`` or more with its own mapping, for good.

    glibc starts at 128 KiB and raises this threshold each time such a block is freed
    (up to 32 MiB), so a session's phrase buffers (a phrase's audio is several MB) soon
    come from the heap, whose freed pieces fragment and stay resident. A fixed
    threshold (which also stops the raising) returns each of them to the OS when
    freed. Measured (``benchmarks/bench_session_rss.py --minutes 240 --every 4 --maps``,
    two pairs of runs side by side on one machine): +3.6 and +3.9 MB per simulated hour
    at 1 MiB against +11.8 and +8.9 with glibc's default; glibc's free bytes +0.6 and
    +0.8 MB/h against +3.5 and +4.4; peak 674–677 MB against 693–747. A no-op outside
    Linux/glibc (as ``MALLOC_MMAP_THRESHOLD_`` in the environment).

    Parameters
    ----------
    n_bytes : int
        The threshold, bytes, in [4 KiB, 32 MiB].

    Returns
    -------
    applied : bool
        Whether glibc took the setting.
    """
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, int) or not (
            4096 <= n_bytes <= 32 << 20):
        raise ValueError(f"n_bytes must be an int in [4096, 33554432], got {n_bytes!r}")
    return _mallopt(_M_MMAP_THRESHOLD, n_bytes)


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt(param, value)``; False where there is none."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(param, value))


class PhraseMaker:
    """Composes, arranges and measures phrases in one worker thread.

    Parameters
    ----------
    seed : int
        Phrase ``k`` is composed with seed ``seed + k``.
    sound : {"plain", "session"}
        ``"session"``: each phrase is arranged with the instruments of its knobs
        (``render_phrase(..., config=ArrangementConfig.for_knobs(knobs))``,
        :mod:`st_agent.live.session_sound`); ``"plain"`` (default here): programs
        0/32/4 as before.
    render_ahead : bool
        With the session sound: also render each phrase's matched stereo audio in
        this thread (:class:`~st_agent.live.session_sound.PhraseSoundRenderer`), so
        the live player knows its loudness gain before it plays (``--play``) and
        ``session.wav`` reuses the render. Costs one render per phrase in the
        composer thread; off, ``session.wav`` renders in its own worker.
    soundfont : Path, optional
        For ``render_ahead``.

    Notes
    -----
    When the composer fails (no valid phrase in all its tries), the last
    phrase is handed back again, so the music never stops; each such failure
    is kept in :attr:`errors`.
    """

    def __init__(self, seed: int, sound: str = "plain", render_ahead: bool = False,
                 soundfont: Any = None) -> None:
        from st_agent.live.session_sound import check_sound
        from st_agent.music.composer import Composer

        self.sound = check_sound(sound, "sound")
        if not isinstance(render_ahead, bool):
            raise TypeError(f"render_ahead must be a bool, got {type(render_ahead).__name__}")
        self.composer = Composer()
        share_malloc_arenas(1)  # before the composer thread starts: its memory stays flat
        fix_mmap_threshold()  # phrase buffers go back to the OS when freed
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="composer")
        self._seed = seed
        self._n = 0
        self.last: tuple[Phrase, MusicFeatures, Any] | None = None
        self.errors: list[str] = []  # composer failures covered by a repeat
        self._ahead: Any = None
        if render_ahead and self.sound == "session":
            from st_agent.live.audio import TAIL_SEC
            from st_agent.live.session_sound import PhraseSoundRenderer

            self._ahead = PhraseSoundRenderer(soundfont, release_sec=TAIL_SEC)

    def _make(self, knobs: Knobs, context: Phrase | None) -> tuple[Phrase, MusicFeatures, Any,
                                                                    float]:
        from st_agent.live.session_sound import mark_voiced
        from st_agent.music.abc import AbcError
        from st_agent.music.composer import ComposerError
        from st_agent.music.render import ArrangementConfig, measure_features, render_phrase

        config = ArrangementConfig.for_knobs(knobs) if self.sound == "session" else None
        try:
            phrase = self.composer.compose(knobs, context=context, seed=self._seed + self._n)
            pm = render_phrase(phrase.abc, phrase.key, knobs, meter=phrase.meter,
                               config=config)
            if config is not None:
                mark_voiced(pm)
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
        pm = self.voiced(pm, knobs)
        self.last = (phrase, feats, pm)
        return phrase, feats, pm, time.monotonic()

    def voiced(self, pm: Any, knobs: Knobs) -> Any:
        """``pm`` as this session sounds at ``knobs``: with the session sound, re-voiced
        for the knobs when it is not yet (a target change's steps are arranged with the
        default programs; :func:`~st_agent.live.session_sound.voice_for_knobs`) and,
        with ``render_ahead``, rendered and loudness-matched; plain: ``pm`` itself."""
        from st_agent.live.session_sound import sound_of, voice_for_knobs

        if self.sound != "session":
            return pm
        if sound_of(pm) is None:
            pm = voice_for_knobs(pm, knobs)
        if self._ahead is not None and sound_of(pm).gain_db is None:
            self._ahead.render(pm, knobs, keep=True)
        return pm

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
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
