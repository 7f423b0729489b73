"""ABC corpus preparation, control-token labelling and the BPE tokenizer.

Modules
-------
abc_text
    Normalisation of ABC tunes, a small body lexer, bars and phrases.
corpus
    The music21 ABC corpus (and user folders): loading, de-duplication,
    train/validation/test split, and per-phrase control labels.
bpe
    Training and loading the byte-level BPE tokenizer with control tokens.
abc_renotate, corpus_condition, condition_check
    The corpus in the composer's condition (A / Am, ``L:1/8``, whole bars from a
    downbeat, 2/4 paired to 4/4), exact renotation, and music21's check of it.
"""
