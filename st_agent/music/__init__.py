"""The music wing: ABC text to sound under the three knobs.

Modules
-------
abc
    ABC checking and ABC → MIDI through ``abc2midi``.
composer
    :class:`~st_agent.music.composer.Composer`: the GPT-2 that writes 4-bar phrases.
decoding
    The KV-cached sampler over the composer's weights.
generator
    Training the composer from scratch (``st-agent train-generator``).
render
    Arrangement, feature measurement and FluidSynth audio.
ensemble
    Several voices in one piece (jams).
generate
    ``st-agent generate``.
"""
