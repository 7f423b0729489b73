"""The sound of a live session: instruments by the knobs, stereo, reverb, matched loudness.

``st-agent session`` and ``st-agent demo`` play each phrase with the *session
sound* by default (``--sound session``); ``--sound plain`` gives the earlier
sound (programs 0/32/4, mono ``session.wav``, one gain for the whole file).

With the session sound, every phrase of a session is

* **arranged for its knobs**: :meth:`ArrangementConfig.for_knobs
  <st_agent.music.arrangement.ArrangementConfig.for_knobs>` chooses the melody,
  bass and chord programs from energy and valence and spreads the parts in
  stereo (MIDI CC 10); the programs follow the phrase everywhere its MIDI goes
  (live player, ``--midi-out``, ``session.mid``, stems) and are recorded in the
  ``phrase_start`` event (``programs``);
* **rendered in stereo** with FluidSynth's reverb and chorus
  (:data:`~st_agent.music.synthesis.SESSION_EFFECTS`);
* **loudness-matched**: its integrated loudness (ITU-R BS.1770, pyloudnorm) is
  set to :func:`~st_agent.music.loudness.session_lufs` of its energy
  (-26 LUFS at energy 0 to -18 LUFS at energy 1), its peak limited to -1 dBFS
  (:func:`~st_agent.music.loudness.match_loudness`), so consecutive phrases
  differ by the planned 8 LU x their energy step, not by what their instruments
  happen to weigh.

:class:`PhraseSoundRenderer` does the rendering and the matching;
``session.wav`` (:class:`st_agent.live.audio.SessionWavOutput`) and the live
player (:func:`play_phrase`) use it. Loudness in LUFS, gains in dB, audio float
in [-1, 1] with shape (n_samples, 2), rates in Hz.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.types import Knobs

__all__ = ["DEFAULT_SOUND", "SOUNDS", "PhraseSound", "PhraseSoundRenderer", "check_sound",
           "downmix", "mark_voiced", "phrase_programs", "play_phrase", "player_settings",
           "sound_of", "take_audio", "voice_for_knobs"]

logger = logging.getLogger(__name__)

#: The values of ``--sound``: ``session`` (instruments by the knobs, stereo, reverb and
#: chorus, matched loudness) and ``plain`` (programs 0/32/4, mono, one gain).
SOUNDS = ("session", "plain")

#: What ``st-agent session`` and ``st-agent demo`` play unless ``--sound plain``.
DEFAULT_SOUND = "session"

#: FluidSynth's master gain at which the offline renders are made (its default); the
#: live player's gain for a phrase is this times the phrase's matched gain.
BASE_GAIN = 0.2

#: Largest master gain FluidSynth is given (its own limit is 10).
MAX_GAIN = 10.0

_ATTR = "_st_phrase_sound"  # where a phrase's PrettyMIDI carries its PhraseSound


def check_sound(value: Any, flag: str = "--sound") -> str:
    """``value`` if it is one of :data:`SOUNDS`.

    Raises
    ------
    ValueError
        Naming the flag, the bad value and the allowed ones.
    """
    if not isinstance(value, str) or value not in SOUNDS:
        raise ValueError(f"{flag} must be one of {', '.join(SOUNDS)} (session: instruments "
                         f"by the knobs, stereo, reverb, matched loudness; plain: the "
                         f"earlier sound), got {value!r}")
    return value


@dataclass(frozen=True)
class PhraseSound:
    """How one phrase sounds in a session (its programs, and its loudness once rendered).

    Parameters
    ----------
    programs : dict of str to int
        General MIDI program (0-127) of each part, by part name.
    gain_db : float or None
        Gain that brings its render (at FluidSynth gain :data:`BASE_GAIN`) to
        ``target_lufs``; None before it was rendered.
    lufs_rendered, target_lufs, lufs : float or None
        Integrated loudness of the render before matching, the target
        (:func:`~st_agent.music.loudness.session_lufs`), and after matching (below
        the target only where the -1 dBFS peak limit held the gain back).
    render_ms : float or None
        Wall time of the render and the measurement.
    """

    programs: dict[str, int]
    gain_db: float | None = None
    lufs_rendered: float | None = None
    target_lufs: float | None = None
    lufs: float | None = None
    render_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON (non-finite loudness as None)."""
        def num(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        return {"programs": dict(self.programs), "gain_db": num(self.gain_db),
                "lufs_rendered": num(self.lufs_rendered), "target_lufs": num(self.target_lufs),
                "lufs": num(self.lufs), "render_ms": num(self.render_ms)}


def phrase_programs(pm: Any) -> dict[str, int]:
    """``{part name: General MIDI program}`` of a rendered phrase (drums as 128 + program)."""
    return {str(inst.name or f"part {i}"): int(inst.program) + (128 if inst.is_drum else 0)
            for i, inst in enumerate(pm.instruments)}


def sound_of(pm: Any) -> PhraseSound | None:
    """The :class:`PhraseSound` a phrase's PrettyMIDI carries (None: plain sound or not
    rendered yet)."""
    return getattr(pm, _ATTR, None)


def _attach(pm: Any, sound: PhraseSound, audio: np.ndarray | None = None) -> None:
    setattr(pm, _ATTR, sound)
    setattr(pm, _ATTR + "_audio", audio)


def mark_voiced(pm: Any) -> Any:
    """Mark a phrase arranged with its session programs (``render_phrase(...,
    config=ArrangementConfig.for_knobs(knobs))``) as such; returns ``pm``."""
    _attach(pm, PhraseSound(phrase_programs(pm)))
    return pm


def take_audio(pm: Any) -> np.ndarray | None:
    """The matched stereo audio rendered ahead for ``pm`` (:class:`PhraseSoundRenderer`
    with ``keep=True``), handed over once: the phrase no longer holds it afterwards."""
    audio = getattr(pm, _ATTR + "_audio", None)
    if audio is not None:
        setattr(pm, _ATTR + "_audio", None)
    return audio


def voice_for_knobs(pm: Any, knobs: Knobs) -> Any:
    """A phrase arranged with the default programs, re-voiced for a session at ``knobs``.

    The programs of ``"melody"`` (and ``"voice N"``), ``"bass"`` and ``"chords"``
    become those of :meth:`ArrangementConfig.for_knobs
    <st_agent.music.arrangement.ArrangementConfig.for_knobs>` and each part gets
    its pan (CC 10 at time 0); the notes are unchanged (the arrangement's notes
    do not depend on the programs). Used for phrases composed outside
    :class:`~st_agent.live.composing.PhraseMaker` (a target change's steps).

    Parameters
    ----------
    pm : pretty_midi.PrettyMIDI
        From :func:`~st_agent.music.render.render_phrase`.
    knobs : Knobs

    Returns
    -------
    voiced : pretty_midi.PrettyMIDI
        A copy (``pm`` is not modified), carrying its :class:`PhraseSound`.
    """
    import copy

    import pretty_midi

    from st_agent.music.arrangement import ArrangementConfig

    cfg = ArrangementConfig.for_knobs(knobs)
    out = copy.deepcopy(pm)
    pan = dict(zip(("melody", "bass", "chords"), cfg.pan or (64, 64, 64), strict=True))
    prog = {"melody": cfg.melody_program, "bass": cfg.bass_program,
            "chords": cfg.chords_program}
    for inst in out.instruments:
        part = "melody" if inst.name.startswith("voice ") else inst.name
        if part not in prog or inst.is_drum:
            continue
        inst.program = prog[part]
        inst.control_changes = [c for c in inst.control_changes if c.number != 10]
        if part in pan and not inst.name.startswith("voice "):
            inst.control_changes.insert(0, pretty_midi.ControlChange(10, pan[part], 0.0))
    _attach(out, PhraseSound(phrase_programs(out)))
    return out


def downmix(audio: np.ndarray) -> np.ndarray:
    """Mono from stereo: the mean of left and right, shape (n_samples,) (mono is
    returned as it is). What the audio features (:mod:`st_agent.music.audio_features`)
    and a virtual listener that hears the audio take."""
    a = np.asarray(audio)
    if a.ndim == 2 and a.shape[1] == 2:
        return a.mean(axis=1, dtype=np.float32)
    if a.ndim == 1:
        return a
    raise ValueError(f"audio must have shape (n,) or (n, 2), got {a.shape}")


def player_settings(sound: str) -> dict[str, float | int]:
    """FluidSynth settings of the live player for ``--sound`` (the session's reverb and
    chorus, or none added)."""
    from st_agent.music.synthesis import SESSION_EFFECTS

    return dict(SESSION_EFFECTS) if check_sound(sound) == "session" else {}


def play_phrase(player: Any, pm: Any) -> float:
    """Queue ``pm`` on a :class:`~st_agent.music.render.LivePlayer` at its matched
    loudness: the player's master gain for the piece is :data:`BASE_GAIN` times the
    phrase's ``gain_db`` (its :class:`PhraseSound`, rendered ahead by the composer
    thread), at most :data:`MAX_GAIN`; a plain phrase plays at the player's own gain.

    Returns
    -------
    start_in_sec : float
        As :meth:`LivePlayer.play <st_agent.music.render.LivePlayer.play>`.
    """
    sound = sound_of(pm)
    if sound is None or sound.gain_db is None:
        return player.play(pm)
    gain = BASE_GAIN * 10 ** (sound.gain_db / 20)
    if gain > MAX_GAIN:
        logger.warning("phrase needs FluidSynth gain %.1f to reach %.1f LUFS; playing at %g",
                       gain, sound.target_lufs, MAX_GAIN)
        gain = MAX_GAIN
    return player.play(pm, gain=gain)


class PhraseSoundRenderer:
    """Renders phrases with the session sound and matches their loudness.

    One FluidSynth instance (stereo, :data:`~st_agent.music.synthesis.SESSION_EFFECTS`,
    the soundfont loaded once) is reused for every phrase.

    Parameters
    ----------
    soundfont : Path, optional
        Default: the one pretty_midi ships.
    release_sec : float
        Seconds rendered past a phrase's musical end (its release and reverb).
    sample_rate : int
        Hz.
    """

    def __init__(self, soundfont: Path | None = None, release_sec: float = 2.0,
                 sample_rate: int = 44100) -> None:
        from st_agent.music.render import AudioRenderer
        from st_agent.music.synthesis import SESSION_EFFECTS

        self._synth = AudioRenderer(soundfont, sample_rate, release_sec=release_sec,
                                    gain=BASE_GAIN, stereo=True, settings=SESSION_EFFECTS)
        self.sample_rate = self._synth.sample_rate

    def render(self, pm: Any, knobs: Knobs, keep: bool = False
               ) -> tuple[np.ndarray, PhraseSound]:
        """Render ``pm`` in stereo and set it to the loudness of ``knobs.energy``.

        Parameters
        ----------
        pm : pretty_midi.PrettyMIDI
            The phrase (with its session programs: :func:`voice_for_knobs` or
            ``render_phrase(..., config=ArrangementConfig.for_knobs(knobs))``).
        knobs : Knobs
            Its knobs; the energy chooses the loudness.
        keep : bool
            Also keep the audio on ``pm`` for a later :func:`take_audio` (the
            composer thread renders ahead for the live player; ``session.wav``
            then uses that render instead of making another).

        Returns
        -------
        audio : ndarray, shape (n_samples, 2), float32
            Matched, full scale 1.0, the release included.
        sound : PhraseSound
            Also attached to ``pm`` (:func:`sound_of`).
        """
        from st_agent.music.loudness import loudness_lufs, match_loudness, session_lufs

        if not isinstance(knobs, Knobs):
            raise TypeError(f"knobs must be a Knobs, got {type(knobs).__name__}")
        tic = time.perf_counter()
        raw = self._synth.synthesize(pm)
        target = session_lufs(knobs.energy)
        if raw.shape[0] < round(0.4 * self.sample_rate):  # too short to measure: as is
            audio, gain_db, before, after = raw, 0.0, -math.inf, -math.inf
        else:
            before = loudness_lufs(raw, self.sample_rate)
            audio, gain_db = match_loudness(raw, self.sample_rate, target,
                                            measured_lufs=before)
            after = before + gain_db if math.isfinite(before) else before
        sound = PhraseSound(phrase_programs(pm), gain_db, before, target, after,
                            1e3 * (time.perf_counter() - tic))
        _attach(pm, sound, audio if keep else None)
        return audio, sound

    def close(self) -> None:
        """Free the synthesiser; safe to call twice."""
        self._synth.close()
