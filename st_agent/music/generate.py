"""``st-agent generate``: compose a piece under fixed knobs and write it out.

Writes ``<out>/piece.abc``, ``piece.mid`` (arranged: melody, bass, chords) and
``piece.wav``, plus ``features.json`` with what was measured from the MIDI.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from st_agent.music.composer import Composer, ComposerConfig
from st_agent.music.config import GenerateConfig
from st_agent.types import Knobs, MusicFeatures

__all__ = ["GenerateConfig", "GenerateResult", "generate"]

logger = logging.getLogger(__name__)


@dataclass
class GenerateResult:
    """Paths written and the measured features."""

    abc_path: Path
    midi_path: Path
    wav_path: Path | None
    features: MusicFeatures


def generate(cfg: GenerateConfig) -> GenerateResult:
    """Compose, arrange, measure and (optionally) synthesise one piece.

    Raises
    ------
    ValueError
        For knobs outside [0, 1] or bars that are not a multiple of 4.
    """
    from st_agent.music.render import (
        AudioDeviceError,
        AudioRenderer,
        LivePlayer,
        find_soundfont,
        measure_features,
        render_phrase,
    )

    knobs = Knobs(valence=cfg.valence, tempo=cfg.tempo, energy=cfg.energy)
    if cfg.wav or cfg.play:
        find_soundfont(cfg.soundfont)  # fail before composing when it is missing
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    composer = Composer(ComposerConfig(checkpoint=cfg.checkpoint))
    phrase = composer.compose(knobs, bars=cfg.bars, seed=cfg.seed)
    abc = composer.tune_text(phrase.body, phrase.key, phrase.meter, phrase.unit, knobs.bpm,
                             title=f"valence {knobs.valence:.2f} tempo {knobs.tempo:.2f} "
                                   f"energy {knobs.energy:.2f}")
    abc_path = out / "piece.abc"
    abc_path.write_text(abc)
    from st_agent.music.arrangement import ArrangementConfig
    from st_agent.music.synthesis import SESSION_EFFECTS

    arrangement = ArrangementConfig.for_knobs(knobs) if cfg.session_sound else None
    pm = render_phrase(abc, phrase.key, knobs, meter=phrase.meter, config=arrangement)
    midi_path = out / "piece.mid"
    pm.write(str(midi_path))
    features = measure_features(pm)
    wav_path = None
    if cfg.wav:
        wav_path = out / "piece.wav"
        sound = dict(stereo=True, settings=SESSION_EFFECTS) if cfg.session_sound else {}
        with AudioRenderer(cfg.soundfont, **sound) as synth:
            synth.write_wav(pm, wav_path)
    if cfg.play:
        try:
            with LivePlayer(cfg.soundfont) as player:
                player.play(pm)
                player.wait()
        except AudioDeviceError as e:
            logger.warning("no audio device, not playing (%s); the WAV is %s", e, wav_path)
    (out / "features.json").write_text(json.dumps(
        {"knobs": asdict(knobs), "bpm_requested": knobs.bpm, "features": features.as_dict(),
         "key_written": phrase.key, "bars": phrase.bars, "batches": phrase.tries},
        indent=2))
    logger.info("wrote %s", out)
    return GenerateResult(abc_path, midi_path, wav_path, features)
