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
"""
