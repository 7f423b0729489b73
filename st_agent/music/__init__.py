"""The music wing: ABC text to sound under the three knobs.

Modules
-------
abc
    ABC checking and ABC → MIDI through ``abc2midi``.
composer
    :class:`~st_agent.music.composer.Composer`: the GPT-2 that writes 4-bar phrases.
bar_grammar, bar_tables
    Meter-aware decoding: the bar grammar over the BPE vocabulary and its
    precomputed tables.
decoding
    The KV-cached sampler over the composer's weights.
generator
    Training the composer from scratch (``st-agent train-generator``).
render
    ABC → arranged MIDI (:func:`~st_agent.music.render.render_phrase`); re-exports
    the names of ``arrangement`` (bass and chords), ``features`` (measured
    features), ``meter`` (bar grid) and ``synthesis`` (FluidSynth audio).
ensemble
    Several voices in one piece (jams), with ``negotiation`` (shared settings)
    and ``clashes`` (dissonance measure).
generate
    ``st-agent generate``.
"""
