"""Keys and modes as ABC writes them, and Krumhansl–Kessler key-finding.

``K:`` values name a tonic and a mode (``G``, ``Em``, ``Ador``, ``Amix``,
``F#m``, ``Bb lydian``). Each mode belongs to a *family* by the quality of its
third: the major family (ionian, mixolydian, lydian) and the minor family
(aeolian, dorian, phrygian, locrian). Valence is mapped onto that family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["MODES", "Key", "find_key", "key_name", "parse_key"]

#: Semitones of each mode's scale degrees above its tonic.
MODES: dict[str, tuple[int, ...]] = {
    "ionian": (0, 2, 4, 5, 7, 9, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
}
# ABC mode words: the first three letters count ("Ador", "D dorian", "Aaeolian").
_MODE_WORDS = {
    "maj": "ionian", "ion": "ionian", "min": "aeolian", "aeo": "aeolian", "m": "aeolian",
    "dor": "dorian", "phr": "phrygian", "lyd": "lydian", "mix": "mixolydian", "loc": "locrian",
}
_FULL_MODE_WORDS = ("major", "ionian", "minor", "aeolian", "dorian", "phrygian", "lydian",
                    "mixolydian", "locrian")
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_LETTERS = "CDEFGAB"
PC_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_TONIC_RE = re.compile(r"^([A-Ga-g])([#b♯♭]?)(.*)$")
# K: words that do not change the scale (clef and transposition settings, explicit
# accidentals such as "^f _b =c"); parse_key skips them.
_KEY_EXTRA_RE = re.compile(r"^(\w+=\S*|exp|[\^_=]{1,2}[a-gA-G]|treble|bass|alto|tenor|perc)$",
                           re.IGNORECASE)

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# (24, 12): the 12 rotations of each profile, centred, for correlation by one product.
_PROFILES = np.array([np.roll(p, t) for p in (_KK_MAJOR, _KK_MINOR) for t in range(12)])
_PROFILES_C = _PROFILES - _PROFILES.mean(axis=1, keepdims=True)
_PROFILES_N = np.linalg.norm(_PROFILES_C, axis=1)


@dataclass(frozen=True)
class Key:
    """A tonic and a mode.

    Attributes
    ----------
    tonic_pc : int
        Pitch class of the tonic, 0 = C ... 11 = B.
    tonic_letter : str
        Letter name of the tonic, upper case (for spelling the signature).
    mode : str
        One of :data:`MODES`.
    """

    tonic_pc: int
    tonic_letter: str
    mode: str

    @property
    def family(self) -> str:
        """``"major"`` when the third above the tonic is major, else ``"minor"``."""
        return "major" if MODES[self.mode][2] == 4 else "minor"

    @property
    def scale_pcs(self) -> tuple[int, ...]:
        """Pitch classes of the scale, tonic first."""
        return tuple((self.tonic_pc + s) % 12 for s in MODES[self.mode])

    def accidentals(self) -> dict[str, int]:
        """Key signature as letter -> semitone shift (``{"F": 1}`` for G major)."""
        start = _LETTERS.index(self.tonic_letter)
        out: dict[str, int] = {}
        for i, pc in enumerate(self.scale_pcs):
            letter = _LETTERS[(start + i) % 7]
            shift = (pc - _LETTER_PC[letter] + 6) % 12 - 6
            if shift:
                out[letter] = shift
        return out


def parse_key(value: str, allow_none: bool = False) -> Key | None:
    """Parse an ABC ``K:`` value.

    Parameters
    ----------
    value : str
        E.g. ``"G"``, ``"Em"``, ``"Ador"``, ``"Amix"``, ``"D major"``, ``"Bb"``,
        ``"F#m"``, ``"Aeol"``. Mode words count by their first three letters,
        case-insensitively. Clef and transposition settings and explicit
        accidentals after the key (``"D clef=bass"``, ``"D exp ^f"``) are
        ignored. ``"HP"``/``"Hp"`` (Highland bagpipe) reads as A mixolydian.
    allow_none : bool
        Accept ``"none"`` or ``""`` (no key signature) and return None for it.

    Returns
    -------
    key : Key or None

    Raises
    ------
    ValueError
        For text that is not a key, naming it and the accepted forms.

    Examples
    --------
    >>> parse_key("Ador").family
    'minor'
    >>> parse_key("G").accidentals()
    {'F': 1}
    """
    if not isinstance(value, str):
        raise TypeError(
            f"key must be a str such as 'G', 'Em' or 'Ador', got {type(value).__name__}")
    words = value.strip().split()
    if not words or words[0].lower() == "none":
        if allow_none:
            return None
        raise ValueError(f"key {value!r} names no tonic; " + _KEY_FORMS)
    if words[0] in ("HP", "Hp"):
        return Key(tonic_pc=9, tonic_letter="A", mode="mixolydian")
    m = _TONIC_RE.match(words[0])
    if m is None:
        raise ValueError(_key_error(value))
    letter, accidental, rest = m.groups()
    tonic = _LETTER_PC[letter.upper()] + {"#": 1, "♯": 1, "b": -1, "♭": -1, "": 0}[accidental]
    mode_word, others = rest, words[1:]
    if not mode_word and others and _mode_name(others[0]) is not None:
        mode_word, others = others[0], others[1:]
    mode = "ionian" if not mode_word else _mode_name(mode_word)
    if mode is None and letter.upper() == "A" and _mode_name("a" + rest) == "aeolian":
        mode = "aeolian"  # "Aeol": the tonic letter doubles as the first letter of "aeolian"
    if mode is None or not all(_KEY_EXTRA_RE.match(w) for w in others):
        raise ValueError(_key_error(value))
    return Key(tonic_pc=tonic % 12, tonic_letter=letter.upper(), mode=mode)


_KEY_FORMS = ("use a tonic A-G with optional # or b and an optional mode (m, maj, min, ion, "
              "dor, phr, lyd, mix, aeo, loc), e.g. 'G', 'F#m', 'Ador', 'Bb major'")


def _mode_name(word: str) -> str | None:
    w = word.lower()
    if w == "m":
        return "aeolian"
    if len(w) < 3 or not any(full.startswith(w) for full in _FULL_MODE_WORDS):
        return None
    return _MODE_WORDS.get(w[:3])


def _key_error(value: str) -> str:
    return f"key {value!r} is not an ABC key; {_KEY_FORMS}, or 'none'"


def find_key(pc_hist: np.ndarray) -> tuple[int, str, float]:
    """Krumhansl–Kessler key-finding on a pitch-class profile.

    Correlates the profile with the 24 rotated major and minor probe-tone
    profiles (Krumhansl & Kessler 1982) and takes the best.

    Parameters
    ----------
    pc_hist : ndarray, shape (12,)
        Weight of each pitch class (C = 0), e.g. total duration; >= 0.

    Returns
    -------
    tonic_pc : int
        Tonic of the best key.
    family : {"major", "minor"}
    confidence : float
        In [0, 1]: ``(r_best - r_other) / (1 - r_other)``, where ``r_other`` is
        the best correlation among keys of the other family: 0 when the two
        tie (or the profile is empty or flat), 1 for a perfect fit.
    """
    w = np.asarray(pc_hist, dtype=float)
    if w.shape != (12,):
        raise ValueError(f"pc_hist must have shape (12,), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("pc_hist must be finite and >= 0")
    if w.sum() <= 0 or np.ptp(w) == 0:
        return 0, "major", 0.0
    wc = w - w.mean()
    r = ((_PROFILES_C @ wc) / (_PROFILES_N * np.linalg.norm(wc))).reshape(2, 12)
    fam, tonic = np.unravel_index(int(np.argmax(r)), r.shape)
    r_best, r_other = float(r[fam, tonic]), float(r[1 - fam].max())
    conf = (r_best - r_other) / max(1.0 - r_other, 1e-9)
    return int(tonic), ("major", "minor")[fam], float(min(max(conf, 0.0), 1.0))


def key_name(tonic_pc: int, family: str) -> str:
    """Readable key name, e.g. ``"A minor"``."""
    return f"{PC_NAMES[tonic_pc % 12]} {family}"
