"""The session's score: one ABC tune, a line per phrase, written as the session plays.

``score.abc`` holds the header of the first phrase (``M:``, ``L:``, ``Q:``, ``K:``),
then for every phrase a comment (its index, start time, knobs and General MIDI
programs) and its bars, with inline ``[M:]``, ``[Q:]`` and ``[K:]`` fields where the
meter, tempo or key changes. :class:`ScoreFile` appends each phrase's lines when it
starts, so a session that dies still leaves its score up to then, and the session
keeps nothing of a phrase once it is written;
:func:`session_score` builds the same text from a list, for callers that have one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

from st_agent.live.common import Playing

__all__ = ["EMPTY_SCORE_BODY", "ScoreFile", "ScoreLines", "session_score"]

logger = logging.getLogger(__name__)

#: The body of the score of a session that played no phrase (one silent bar).
EMPTY_SCORE_BODY = ("M:4/4", "L:1/8", "K:C", "z8|")


class ScoreLines:
    """The lines of a session score, phrase by phrase (it remembers the meter, tempo
    and key in force, so a phrase's line notes only what changed).

    Parameters
    ----------
    title : str
        The tune's ``T:`` field.
    """

    def __init__(self, title: str = "st-agent session") -> None:
        self.title = str(title)
        self.n_phrases = 0
        self._meter = self._key = ""
        self._bpm = 0

    def add(self, p: Playing) -> list[str]:
        """The lines phrase ``p`` adds (the tune's header with the first phrase)."""
        ph = p.phrase
        lines: list[str] = []
        if self.n_phrases == 0:
            self._meter, self._key, self._bpm = ph.meter, ph.key, round(ph.bpm)
            lines += ["X:1", f"T:{self.title}", f"M:{ph.meter}", f"L:{ph.unit}",
                      f"Q:1/4={self._bpm}", f"K:{ph.key}"]
        k = ph.knobs
        progs = _programs(p)
        sound = "; programs " + " ".join(f"{n} {g}" for n, g in progs) if progs else ""
        lines.append(f"% phrase {self.n_phrases}: t={p.start_sec:.1f}s knobs valence "
                     f"{k.valence:.2f} tempo {k.tempo:.2f} energy {k.energy:.2f}{sound}")
        head = ""
        if ph.meter != self._meter:
            head += f"[M:{ph.meter}]"
            self._meter = ph.meter
        if round(ph.bpm) != self._bpm:
            self._bpm = round(ph.bpm)
            head += f"[Q:1/4={self._bpm}]"
        if ph.key != self._key:
            head += f"[K:{ph.key}]"
            self._key = ph.key
        lines.append(head + ph.body.strip())
        self.n_phrases += 1
        return lines

    def empty(self) -> list[str]:
        """The whole score of a session that played nothing."""
        return ["X:1", f"T:{self.title}", *EMPTY_SCORE_BODY]


def _programs(p: Playing) -> tuple[tuple[str, int], ...]:
    """Each part's General MIDI program as the phrase played (drums as 128 + program)."""
    from st_agent.live.session_sound import phrase_programs

    pm = getattr(p, "pm", None)
    return tuple(phrase_programs(pm).items()) if pm is not None else ()


def session_score(played: Iterable[Playing], title: str = "st-agent session") -> str:
    """The session as one ABC tune: each phrase a line, with inline tempo and key changes
    (the text :class:`ScoreFile` writes as the session goes)."""
    score = ScoreLines(title)
    lines = [line for p in played for line in score.add(p)]
    return "\n".join(lines or score.empty()) + "\n"


class ScoreFile:
    """``score.abc`` written as the session plays; it also keeps the session's count of
    phrases and its music's first start and last end (all the summary needs of them).

    Each :meth:`add` appends the phrase's lines and closes the file again (no handle is
    held between phrases, so a crash loses nothing written). :meth:`close` writes the
    one-bar score of a session that played nothing. A write that fails (a full disk, a
    folder made read-only) is logged once and the score stops there, in :attr:`error`;
    the session goes on, and its recording still holds every phrase's ABC.

    Parameters
    ----------
    path : Path
        The file; it is replaced when the first phrase (or :meth:`close`) writes.
    title : str
        The tune's ``T:`` field.
    """

    def __init__(self, path: Path, title: str) -> None:
        self.path = Path(path)
        self._lines = ScoreLines(title)
        self.first_start_sec = math.nan
        self.last_end_sec = math.nan
        #: Why the score stopped being written (None while it is written).
        self.error: str | None = None

    @property
    def n_phrases(self) -> int:
        """Phrases written so far."""
        return self._lines.n_phrases

    @property
    def music_sec(self) -> float:
        """Seconds from the first phrase's start to the last one's end (0: none)."""
        return self.last_end_sec - self.first_start_sec if self.n_phrases else 0.0

    def add(self, p: Playing) -> None:
        """Append phrase ``p`` (it starts now) to the score."""
        first = self.n_phrases == 0
        self._write(self._lines.add(p), "w" if first else "a")
        if first:
            self.first_start_sec = float(p.start_sec)
        self.last_end_sec = float(p.end_sec)

    def close(self) -> Path:
        """Finish the file (a session without a phrase gets its one-bar score)."""
        if self.n_phrases == 0:
            self._write(self._lines.empty(), "w")
        return self.path

    def _write(self, lines: list[str], mode: str) -> None:
        if self.error is not None:
            return
        try:
            with open(self.path, mode, encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"
            logger.error("%s could not be written (%s); the score stops at phrase %d, "
                         "the recording still holds every phrase's ABC (free space or "
                         "fix the folder's permissions for the next session)",
                         self.path, self.error, self.n_phrases - 1)

