"""Meter-aware decoding: a bar grammar over the BPE vocabulary.

The model writes its own bar lines; this module keeps them valid while it
samples, so nothing has to be re-barred afterwards. At every step, for every
candidate, a token is allowed only when the text it makes

- holds only notes, rests (``z``), chords, ties, tuplets, broken rhythm, grace
  notes, spaces and plain bar lines ``|`` (no repeat signs, endings, inline
  fields, decorations, quotes or stray letters; a lexeme that the next token
  can still complete, such as ``^`` or ``[ce``, may stand at the end);
- closes each bar at exactly the bar length of the meter (no pickup, no
  overfull or short bar), with no tuplet or broken-rhythm pair across a bar
  line;
- never fills the open bar past the bar length;
- writes at most the requested number of bars (the candidate finishes at its
  last bar line, with no music after it).

How it stays cheap
------------------
The effect of a token depends only on the end of the text since the last bar
line: the last note event and what still acts on it (its length suffix can
grow, an open tuplet, a broken-rhythm pair). That suffix, with pitches written
as ``C`` (they do not change durations), is the *key*; everything before it is a
fixed number of quarter notes. For each key the grammar scans ``key + token``
once for every token of the vocabulary and keeps, per token, whether it is
well formed, how many bar lines it writes, the quarter notes up to its first
bar line (or in total) and whether music follows its last bar line
(:class:`KeyTable`). A step then costs one short scan of the open bar and a few
vector operations over the vocabulary; tables are cached across phrases (a few
hundred keys cover the corpus' rhythms; a checkpoint ships them, and those computed
in a session are kept up to :data:`MAX_LEARNED_TABLES`, so memory stays bounded).

Durations are in quarter notes (``*_q``).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from st_agent.music.bar_scan import EPS as _EPS
from st_agent.music.bar_scan import NOTE_PITCH, PARTIAL_END, BarScan, bars_are_valid, scan_bars
from st_agent.tokenizer.abc_lexer import TOKEN_RE, parse_tuplet, quarters_fast

__all__ = ["GRAMMAR_VERSION", "BarGrammar", "BarHook", "BarScan", "KeyTable", "bars_are_valid",
           "scan_bars"]

#: Changes whenever the rules change, so tables saved by an older version are ignored.
GRAMMAR_VERSION = 6

#: Most open-bar states whose masks are cached (each cache, about 1 KB a state; a
#: session meets a few new states a phrase, ~800 an hour). Beyond it the least recently used
#: state is dropped, so memory stays bounded.
MAX_CACHED_STATES = 4_096

#: Most key tables kept beyond the ones loaded from a file (about 17 KB each; a
#: session meets a few new keys an hour that the shipped tables lack). Beyond it the
#: least recently used computed table is dropped; loaded tables are always kept.
MAX_LEARNED_TABLES = 256


class _LRU(OrderedDict):
    """A dict that holds at most ``maxsize`` items (None: no bound), dropping the least
    recently read or written one; read with :meth:`hit`, write with :meth:`put`."""

    def __init__(self, maxsize: int | None) -> None:
        super().__init__()
        self.maxsize = maxsize

    def hit(self, key: object) -> object | None:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: object, value: object) -> None:
        self[key] = value
        self.move_to_end(key)
        self.trim()

    def trim(self) -> None:
        """Drop the least recently used items beyond ``maxsize``."""
        while self.maxsize is not None and len(self) > self.maxsize:
            self.popitem(last=False)


# a tied note still waiting for its continuation at the end of the text
_TIE_END = re.compile(r"((?:\^{1,2}|_{1,2}|=)?[A-Ga-g][,']*)[\d/]*-[ |]*$")
# a text that ends with the note a tie reached
_TIE_RESOLVED = re.compile(r"-[ |]*(?:\^{1,2}|_{1,2}|=)?[A-Ga-g][,']*$")
# the last note of a text and what follows it
_LAST_NOTE = re.compile(r"((?:\^{1,2}|_{1,2}|=)?[A-Ga-g][,']*)[^A-Ga-g]*$")
# every character the grammar can accept; a token with any other is never allowed
_ALPHABET = re.compile(r"[A-Ga-gz,'0-9/ |\-(<>^_=]+")


def _canonical(key: str) -> str:
    """Every pitch of a key written ``C``, except that the last note keeps its case
    as ``C`` or ``c``: only that changes what may follow (octave marks)."""
    notes = list(NOTE_PITCH.finditer(key))
    if not notes:
        return key
    last = notes[-1]
    head = NOTE_PITCH.sub("C", key[:last.start()])
    return head + ("C" if last.group(1).isupper() else "c") + key[last.end():]


@dataclass(frozen=True)
class KeyTable:
    """Per-token effect of appending each vocabulary token to one key.

    Arrays have shape (V,).

    Attributes
    ----------
    base_q : float
        Quarter notes the key itself holds.
    ok : ndarray of bool
        ``key + token`` is well formed, its inner bars are full, and what
        follows its last bar line fits in a bar.
    n_bars : ndarray of int
        Bar lines the token writes.
    first_q : ndarray of float
        Quarter notes from the key's start to the token's first bar line, or
        to its end when it writes none.
    after_music : ndarray of bool
        Music follows the token's last bar line.
    needs_q : ndarray of float
        Quarter notes the text still needs after the token
        (:attr:`BarScan.needs_q`).
    ends_tied : ndarray of bool
        The token's last bar line follows a tie (it cannot end the phrase).
    tie_open : ndarray of bool
        A tie waits for its note after the token.
    """

    base_q: float
    ok: np.ndarray
    n_bars: np.ndarray
    first_q: np.ndarray
    after_music: np.ndarray
    needs_q: np.ndarray
    ends_tied: np.ndarray
    tie_open: np.ndarray


def _token_pitches(text: str) -> tuple[str, str, bool, bool]:
    """``(first, lead_tie, ties_ok, tie_first)`` of a token on its own.

    ``first``: the pitch (as written) of its first note when a note is its first
    event, "" when it holds only spaces and bar lines, "?" otherwise.
    ``lead_tie``: the pitch of the first note after a tie that comes before any
    note of the token (the tie belongs to the note before the token), else "".
    ``ties_ok``: every tie between two notes of the token joins one pitch.
    ``tie_first``: a tie comes before any note of the token.
    """
    first, lead, ok, tie_first = None, "", True, False
    pitch, tied, seen_note = "", False, False
    for m in TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "note":
            p = m.group(0)[:len(m.group(0)) - len(m.group("len"))]
            if first is None:
                first = p
            if tied and seen_note and p != pitch:
                ok = False
            elif tied and not seen_note:
                lead = p
            pitch, tied, seen_note = p, False, True
        elif kind == "tie":
            tied, tie_first = True, tie_first or not seen_note
        elif kind not in ("space", "bar") and first is None:
            first = "?"
    return (first if first is not None else ""), lead, ok, tie_first


class BarGrammar:
    """The bar grammar of one meter and unit over a tokenizer's vocabulary.

    Parameters
    ----------
    token_text : list of str
        Decoded text of every token id (V).
    unit_q : float
        ``L:`` in quarter notes (0.5 for ``L:1/8``).
    bar_q : float
        Bar length in quarter notes (4.0 for ``M:4/4``).
    excluded_ids : iterable of int
        Tokens never allowed inside a phrase (special tokens, newline, end).
    """

    def __init__(self, token_text: list[str], unit_q: float, bar_q: float,
                 excluded_ids: tuple[int, ...] | list[int] | set[int] = ()) -> None:
        if not (math.isfinite(unit_q) and unit_q > 0 and math.isfinite(bar_q) and bar_q > 0):
            raise ValueError(f"unit_q and bar_q must be positive quarter-note lengths, got "
                             f"{unit_q!r} and {bar_q!r}")
        self.token_text = list(token_text)
        self.unit_q, self.bar_q = float(unit_q), float(bar_q)
        usable = np.ones(len(self.token_text), dtype=bool)
        usable[list(excluded_ids)] = False
        usable &= np.array([_ALPHABET.fullmatch(t) is not None and "<|" not in t
                            for t in self.token_text])  # control tokens such as <|e0|>
        pitches = [_token_pitches(t) for t in self.token_text]
        self._usable = usable & np.array([p[2] for p in pitches])
        # first note of each token ("" none, "?" something else first), and the
        # note a token's leading tie reaches ("" when it has none)
        self._first_pitch = np.array([p[0] for p in pitches], dtype=object)
        self._lead_idx = np.array([i for i, p in enumerate(pitches) if p[1]], dtype=np.int64)
        self._lead_pitch = np.array([pitches[i][1] for i in self._lead_idx], dtype=object)
        self._tie_first_idx = np.array([i for i, p in enumerate(pitches) if p[3]],
                                       dtype=np.int64)
        self._octave_idx = np.array([i for i, t in enumerate(self.token_text)
                                     if t[:1] in (",", "'")], dtype=np.int64)
        self._grid_q = self.unit_q / 2
        self._tables: dict[str, KeyTable] = {}  # loaded from a file: always kept
        #: computed here (keys the loaded tables lack), at most ``max_learned_tables``
        self._learned = _LRU(MAX_LEARNED_TABLES)
        self._masks = _LRU(MAX_CACHED_STATES)  # (key, prefix_q, bars left) -> mask
        self._tie_keep_masks = _LRU(MAX_CACHED_STATES)  # tie state -> tokens kept

    def key_of(self, tail: str) -> tuple[float, str]:
        """Split the open bar's text into fixed quarter notes and a canonical key.

        Parameters
        ----------
        tail : str
            Text since the last bar line.

        Returns
        -------
        prefix_q : float
            Quarter notes before the key.
        key : str
            The end of ``tail`` that the next token can still act on, pitches
            written as ``C``.
        """
        prefix_q, raw = self._split(tail)
        return prefix_q, _canonical(raw)

    def advance(self, prefix_q: float, raw_key: str, token: str) -> tuple[float, str]:
        """The open bar after ``token``, from the one before it (what a step costs).

        Parameters
        ----------
        prefix_q : float
            Quarter notes before the key, before the token.
        raw_key : str
            The key as written (before pitches are made canonical).
        token : str
            The token's text.

        Returns
        -------
        prefix_q, raw_key
            The same after the token; a bar line in the token starts a new bar.
        """
        cut = token.rfind("|")
        if cut >= 0:
            return self._split(token[cut + 1:])
        more_q, raw = self._split(raw_key + token)
        return prefix_q + more_q, raw

    def _split(self, tail: str) -> tuple[float, str]:
        """``(prefix_q, raw key)`` of an open bar's text (see :meth:`key_of`)."""
        partial = PARTIAL_END.search(tail)
        clean_end = partial.start() if partial else len(tail)
        start = clean_end  # nothing before the last event can change
        group_start = 0  # where the group of the last event begins
        in_tuplet, pair_open, prev_group, tie_open = 0, False, 0, False
        for m in TOKEN_RE.finditer(tail, 0, clean_end):
            kind = m.lastgroup
            tie_open = kind == "tie" or (tie_open and kind in ("space", "bar"))
            if kind in ("note", "chord", "rest"):
                if pair_open:
                    group_start, pair_open = prev_group, False
                elif in_tuplet:
                    in_tuplet -= 1
                else:
                    group_start = m.start()
                prev_group = group_start
                start = group_start
            elif kind == "tuplet":
                _, _, in_tuplet = parse_tuplet(m.group("tuplet"))
                group_start = m.start()
            elif kind == "broken":
                pair_open = True
            elif kind == "space" and not (in_tuplet or pair_open or tie_open):
                start = group_start = m.start()  # closes the last event
        if in_tuplet:
            start = min(start, group_start)
        # the prefix holds only whole notes and closed groups: a plain count will do
        prefix_q = quarters_fast(tail[:start], self.unit_q) if start else 0.0
        return prefix_q, tail[start:]

    def table(self, key: str) -> KeyTable:
        """The :class:`KeyTable` of ``key`` (loaded, or computed and then cached)."""
        found = self._tables.get(key) or self._learned.hit(key)
        if found is not None:
            return found
        V = len(self.token_text)
        ok = np.zeros(V, dtype=bool)
        n_bars = np.zeros(V, dtype=np.int8)  # a token writes a few bar lines at most
        first_q, needs_q = np.zeros(V), np.zeros(V)
        after, tied, tie_open = (np.zeros(V, dtype=bool) for _ in range(3))
        for t in np.flatnonzero(self._usable):
            s = scan_bars(key + self.token_text[t], self.unit_q, check_pitch=False)
            if not s.ok or any(abs(f - self.bar_q) > _EPS for f in s.bar_fills_q[1:]):
                continue
            if s.bar_fills_q and not self._room_ok(s.tail_q, s.needs_q, s.tie_open):
                continue  # what follows its last bar line cannot make a bar
            ok[t] = True
            n_bars[t] = min(len(s.bar_fills_q), 127)
            first_q[t] = s.bar_fills_q[0] if s.bar_fills_q else s.tail_q
            after[t] = s.tail_has_music
            needs_q[t] = s.needs_q
            tied[t] = s.ends_tied
            tie_open[t] = s.tie_open
        base_q = scan_bars(key, self.unit_q, check_pitch=False).tail_q
        table = KeyTable(base_q, ok, n_bars, first_q, after, needs_q, tied, tie_open)
        self._learned.put(key, table)
        return table

    def add_table(self, key: str, table: KeyTable) -> None:
        """Keep ``table`` for ``key`` for good (tables loaded from a file)."""
        self._tables.setdefault(key, table)
        self._learned.pop(key, None)

    @property
    def max_learned_tables(self) -> int | None:
        """Most computed tables kept besides the loaded ones (None: all, as when the
        tables of a checkpoint are built); default :data:`MAX_LEARNED_TABLES`."""
        return self._learned.maxsize

    @max_learned_tables.setter
    def max_learned_tables(self, n: int | None) -> None:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"max_learned_tables must be an int >= 0 or None, got {n!r}")
        self._learned.maxsize = n
        self._learned.trim()

    def _room_ok(self, fill: np.ndarray | float, needs: np.ndarray | float,
                 tie_open: np.ndarray | bool) -> np.ndarray | bool:
        """An open bar at ``fill`` quarters can still be completed: what is open
        fits (a tie may also wait at a full bar, for the next one), and with
        nothing open the fill sits on the grid of half a unit (a dotted or halved
        note; finer fills are dead ends with this vocabulary)."""
        grid = fill / self._grid_q
        on_grid = np.abs(grid - np.round(grid)) <= _EPS
        fits = (fill + needs <= self.bar_q + _EPS) | (
            tie_open & (np.abs(fill - self.bar_q) <= _EPS))
        return fits & ((needs > 0) | on_grid)

    def allowed(self, tail: str, bars_done: int, n_bars: int, text: str | None = None
                ) -> np.ndarray:
        """Tokens that keep the bars valid after ``tail``.

        Parameters
        ----------
        tail : str
            Text since the last bar line.
        bars_done : int
            Bars already closed.
        n_bars : int
            Bars the phrase must hold.
        text : str, optional
            The whole phrase so far (``tail`` is its end); with it, a tie must
            join two notes of one pitch, across bar lines too.

        Returns
        -------
        allowed : ndarray of bool, shape (V,)
        """
        prefix_q, raw_key = self._split(tail)
        return self.mask(prefix_q, raw_key, n_bars - bars_done, text)

    def mask(self, prefix_q: float, raw_key: str, bars_left: int, text: str | None = None
             ) -> np.ndarray:
        """:meth:`allowed` from an open bar split by :meth:`advance`.

        The mask of a key, prefix and bars left is computed once and cached;
        the tie rule, which depends on the pitches of ``text``, is a second
        cached mask (per tie state) combined with it at each call.

        Returns
        -------
        allowed : ndarray of bool, shape (V,)
            A new array.
        """
        _, ok = self._mask_key(prefix_q, raw_key, bars_left)
        if text is None:
            return ok.copy()
        return ok & self._tie_keep(text)

    def _mask_key(self, prefix_q: float, raw_key: str, bars_left: int) -> tuple[tuple, np.ndarray]:
        """The cache key of an open bar and its mask before the tie rule (cached)."""
        key = _canonical(raw_key)
        cache_key = (key, round(prefix_q, 9), bars_left)
        ok = self._masks.hit(cache_key)
        if ok is None:
            tab = self.table(key)
            fill = prefix_q + tab.first_q  # (V,) quarters at the first bar line, or at the end
            closes = tab.n_bars > 0
            # a tie may wait at a full bar for the next one, not in the last bar
            fits = np.where(closes, np.abs(fill - self.bar_q) <= _EPS,
                            self._room_ok(fill, tab.needs_q, tab.tie_open & (bars_left > 1)))
            last = tab.n_bars == bars_left
            ok = tab.ok & fits & (tab.n_bars <= bars_left) & ~(
                last & (tab.after_music | tab.ends_tied))
            self._masks.put(cache_key, ok)
        return cache_key, ok

    def _tie_keep(self, text: str) -> np.ndarray:
        """The tokens the tie rule keeps after ``text``, shape (V,), bool, read-only.

        The rule depends on ``text`` only through a small state (a pending tied pitch,
        or the last pitch and whether a tie just resolved): a few dozen states in
        practice, each computed once. Kept apart from the open-bar masks (a final mask
        per open bar *and* tie state was a cache that grew by about 25 entries per
        phrase through a long session).
        """
        state = self._tie_state(text)
        keep = self._tie_keep_masks.hit(state)
        if keep is None:
            keep = np.ones(len(self.token_text), dtype=bool)
            self._apply_tie_state(keep, state)
            keep.flags.writeable = False
            self._tie_keep_masks.put(state, keep)
        return keep

    def bias_row(self, prefix_q: float, raw_key: str, bars_left: int, text: str
                 ) -> np.ndarray | None:
        """:meth:`mask` after ``text`` as an additive logit bias, shape (V,), float32:
        0 where a token is allowed, -inf where not; None when no token is allowed (a
        dead end)."""
        _, ok = self._mask_key(prefix_q, raw_key, bars_left)
        allowed = ok & self._tie_keep(text)
        if not allowed.any():
            return None
        return np.where(allowed, np.float32(0.0), np.float32(-np.inf))

    @staticmethod
    def _tie_state(text: str) -> tuple[str, str, bool]:
        """What the tie rule needs from the phrase so far: ``("tie", pitch, False)``
        while a tie waits for its note, else ``("last", last pitch, tie resolved)``."""
        pending = _TIE_END.search(text) if "-" in text else None
        if pending is not None:
            return "tie", pending.group(1), False
        last = _LAST_NOTE.search(text)
        return "last", last.group(1) if last else "?", bool(
            "-" in text and _TIE_RESOLVED.search(text))

    def _keep_tied_pitch(self, ok: np.ndarray, text: str) -> None:
        """Drop, in place, the tokens whose notes would tie two pitches after ``text``."""
        self._apply_tie_state(ok, self._tie_state(text))

    def _apply_tie_state(self, ok: np.ndarray, state: tuple[str, str, bool]) -> None:
        kind, pitch, resolved = state
        if kind == "tie":  # the next note must repeat the tied pitch
            ok &= (self._first_pitch == pitch) | (self._first_pitch == "")
            return
        last_pitch = pitch
        ok[self._lead_idx[self._lead_pitch != last_pitch]] = False
        if len(last_pitch) != 1:  # only a plain note takes a tie
            ok[self._tie_first_idx] = False
        if resolved:  # an octave mark would change the tied pitch
            ok[self._octave_idx] = False

    @property
    def n_tables(self) -> int:
        """Keys whose tables are held: loaded ones and computed ones kept."""
        return len(self._tables) + len(self._learned)

    def cache_sizes(self) -> dict[str, int]:
        """Entries of each cache: ``loaded`` and ``learned`` key tables, open-bar
        ``masks`` and ``tie_masks`` (what a long session's memory holds here)."""
        return {"loaded": len(self._tables), "learned": len(self._learned),
                "masks": len(self._masks), "tie_masks": len(self._tie_keep_masks)}

    @property
    def tables(self) -> dict[str, KeyTable]:
        """The tables held, by key (a new dict; see :mod:`st_agent.music.bar_tables`)."""
        return {**self._tables, **self._learned}

    def fingerprint(self) -> str:
        """What the tables depend on: the vocabulary, the unit, the bar length and the
        tokens excluded; tables saved under another fingerprint do not apply."""
        import hashlib

        h = hashlib.sha256()
        h.update(repr((GRAMMAR_VERSION, self.unit_q, self.bar_q)).encode())
        h.update(np.packbits(self._usable).tobytes())
        for t in self.token_text:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()[:16]


class BarHook:
    """Step hook for :meth:`~st_agent.music.decoding.CachedDecoder.sample`:
    the bar grammar applied to every candidate of a batch.

    Tracks each candidate's open bar and closed bars from the tokens it
    samples, masks the tokens that would break a bar, and finishes a candidate
    at its ``n_bars``-th bar line. A candidate left with no allowed token (a
    dead end, e.g. a triplet that no token can complete) is finished and
    marked in :attr:`dead`. When ``enough`` candidates are finished the others
    are cut off: waiting for the slowest costs more than it adds.

    Parameters
    ----------
    grammar : BarGrammar
    n : int
        Candidates in the batch.
    n_bars : int
        Bars per phrase.
    enough : int
        Finished candidates that end the batch.
    """

    def __init__(self, grammar: BarGrammar, n: int, n_bars: int, enough: int) -> None:
        if n < 1 or n_bars < 1:
            raise ValueError(f"n ({n}) and n_bars ({n_bars}) must be >= 1")
        self.grammar = grammar
        self.n_bars = int(n_bars)
        self.done_quota = min(n, max(1, enough))
        self.tails = [""] * n
        self._split = [(0.0, "")] * n  # (prefix_q, raw key) of each open bar
        self.texts = [""] * n
        self.bars_done = [0] * n
        self.finished = [False] * n
        self.complete = [False] * n
        self.dead = [False] * n
        self._bias = np.zeros((n, len(grammar.token_text)), dtype=np.float32)
        first = self._mask_row(0)
        self._bias[:] = self._bias[0]
        if not first:
            raise ValueError("the bar grammar allows no first token; check the meter and unit")

    def first_bias(self) -> np.ndarray:
        """Additive logit bias (n, V) for the first token of every candidate."""
        return self._bias.copy()

    def _mask_row(self, i: int) -> bool:
        prefix_q, raw_key = self._split[i]
        row = self.grammar.bias_row(prefix_q, raw_key, self.n_bars - self.bars_done[i],
                                    self.texts[i])
        if row is None:
            self._bias[i] = 0.0
            return False
        self._bias[i] = row
        return True

    def __call__(self, tokens: list[int]) -> tuple[np.ndarray, list[bool]]:
        for i, t in enumerate(tokens):
            if self.finished[i]:
                continue
            text = self.grammar.token_text[t]
            self.texts[i] += text
            self._split[i] = self.grammar.advance(*self._split[i], text)
            cut = text.rfind("|")
            if cut >= 0:
                self.bars_done[i] += text.count("|")
                self.tails[i] = text[cut + 1:]
            else:
                self.tails[i] += text
            if self.bars_done[i] >= self.n_bars:
                self.finished[i] = self.complete[i] = True
                self._bias[i] = 0.0
            elif not self._mask_row(i):
                self.finished[i] = self.dead[i] = True
        if sum(self.complete) >= self.done_quota:
            self.finished = [True] * len(self.finished)
            self._bias[:] = 0.0
        return self._bias, list(self.finished)
