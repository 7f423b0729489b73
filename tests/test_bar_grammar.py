"""The bar grammar of meter-aware decoding, checked against a brute-force scan."""

from __future__ import annotations

import numpy as np
import pytest

from st_agent.music.bar_grammar import (
    BarGrammar,
    BarHook,
    bars_are_valid,
    scan_bars,
)
from st_agent.music.bar_tables import load_tables, save_tables
from st_agent.music.generator import BUNDLED_COMPOSER
from st_agent.tokenizer.bpe import load_tokenizer

EPS = 1e-6


@pytest.fixture(scope="module")
def vocab() -> list[str]:
    tok = load_tokenizer(BUNDLED_COMPOSER)
    return [tok.decode([i], skip_special_tokens=False) for i in range(len(tok))]


@pytest.fixture(scope="module")
def grammar(vocab) -> BarGrammar:
    return BarGrammar(vocab, unit_q=0.5, bar_q=4.0)


def brute_force(grammar: BarGrammar, text: str, n_bars: int = 4) -> np.ndarray:
    """The definition, token by token: scan the whole phrase so far plus the token."""
    out = np.zeros(len(grammar.token_text), dtype=bool)
    for t, tok in enumerate(grammar.token_text):
        if "\n" in tok or "<|" in tok:
            continue
        s = scan_bars(text + tok, grammar.unit_q)
        bars = len(s.bar_fills_q)
        if not s.ok or bars > n_bars or any(abs(f - 4.0) > EPS for f in s.bar_fills_q):
            continue
        if not grammar._room_ok(s.tail_q, s.needs_q, s.tie_open and bars < n_bars - 1):
            continue
        out[t] = not (bars == n_bars and (s.tail_has_music or s.ends_tied))
    return out


def grammar_mask(grammar: BarGrammar, text: str, n_bars: int = 4) -> np.ndarray:
    tail = text[text.rfind("|") + 1:]
    return grammar.allowed(tail, text.count("|"), n_bars, text)


@pytest.mark.parametrize("text", [
    "", "A", "A2 ", "A3/", "(3AB", "(3ABc d", "A>", "A>B c>d e", "^", "(", "A2-", "A2- ",
    "A6 B2-|", "A8|B8|c6 d2-", "A8|B8|c6 d", "A8 | B4 c4 | ", "E2 A3AA2-|A2 A3AA2|A2 A4A2-|",
    "c2BdcBc2- | c2A2 z2ce | e2cdcBA-",
])
def test_cached_tables_agree_with_brute_force(grammar, text):
    np.testing.assert_array_equal(grammar_mask(grammar, text), brute_force(grammar, text))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_random_walks_never_write_an_invalid_bar(grammar, seed):
    """Property: every token the grammar allows keeps the bars valid, and a finished
    phrase is four full bars as written; the mask equals the brute force."""
    rng = np.random.default_rng(seed)
    finished = 0
    for walk in range(8):
        hook = BarHook(grammar, 1, 4, 1)
        bias, text = hook.first_bias(), ""
        for step in range(80):
            allowed = np.isfinite(bias[0])
            if step % 9 == 4 and walk < 3:
                np.testing.assert_array_equal(allowed, brute_force(grammar, text))
            t = int(rng.choice(np.flatnonzero(allowed)))
            text += grammar.token_text[t]
            bias, done = hook([t])
            if done[0]:
                break
        assert scan_bars(text, 0.5).ok, text
        if hook.complete[0]:
            finished += 1
            assert bars_are_valid(text, 0.5, 4.0, 4), text
    assert finished >= 6  # uniform random walks reach a dead end now and then


def test_bars_are_valid_judges_the_bars_as_written():
    assert bars_are_valid("A2 cB A2 E2|c2 dc B2 G2|A2 cB AGFE|D2 E2 A4|", 0.5, 4.0, 4)
    assert bars_are_valid("A8-|A8|(3ABc A2 B4|z8|", 0.5, 4.0, 4)
    for bad in ("E|A2 cB A2 E2|c2 dc B2 G2|A2 cB AGFE|D2 E2 A3|",  # pickup
                "A2 cB A2 E2|c2 dc B2|A2 cB AGFE|D2 E2 A4|",  # short bar
                "|:A8|B8|c8|d8:|", "A8|B8|c8|d8|e",  # repeat signs, music after the end
                "A8|B8|c8|E2ixoria|",  # stray letters
                "A8|B8|c8|d8-|",  # a tie with nothing to tie to
                "A8|B8|c8|d>e2 f4|"):  # a broken-rhythm pair of unequal notes
        assert not bars_are_valid(bad, 0.5, 4.0, 4), bad


def test_hook_finishes_at_the_last_bar_and_cuts_the_rest(grammar, vocab):
    hook = BarHook(grammar, 2, 2, enough=1)
    a8, bar, space = vocab.index("A8"), vocab.index("|"), vocab.index(" ")
    for row0, row1 in ((a8, a8), (bar, bar), (a8, a8)):
        bias, done = hook([row0, row1])
        assert done == [False, False]
    assert np.isfinite(bias[0, bar]) and not np.isfinite(bias[0, a8])  # the bar is full
    bias, done = hook([bar, space])
    assert hook.complete == [True, False] and done == [True, True]  # the second is cut off
    assert not bias.any()  # finished rows get no mask
    with pytest.raises(ValueError, match="must be >= 1"):
        BarHook(grammar, 0, 4, 1)
    with pytest.raises(ValueError, match="positive"):
        BarGrammar(vocab, unit_q=0.0, bar_q=4.0)


def test_tables_round_trip_and_refuse_another_grammar(tmp_path, vocab):
    g = BarGrammar(vocab, 0.5, 4.0)
    for text in ("A", "A2B", "(3AB"):
        g.allowed(text, 0, 4, text)
    path = save_tables(g, tmp_path / "tables.npz")
    fresh = BarGrammar(vocab, 0.5, 4.0)
    assert load_tables(fresh, path) == g.n_tables
    for key, tab in g.tables.items():
        np.testing.assert_array_equal(fresh.tables[key].ok, tab.ok)
        np.testing.assert_array_equal(fresh.tables[key].first_q, tab.first_q)
    assert load_tables(BarGrammar(vocab, 0.5, 3.0), path) == 0  # 3/4: another grammar
    assert load_tables(fresh, tmp_path / "missing.npz") == 0


def test_shipped_tables_match_the_bundled_vocabulary(vocab):
    g = BarGrammar(vocab, 0.5, 4.0)
    assert load_tables(g, BUNDLED_COMPOSER / "bar_grammar_M4-4_L1-8.npz") > 100
    recomputed = BarGrammar(vocab, 0.5, 4.0)
    for key in list(g.tables)[:5]:
        np.testing.assert_array_equal(recomputed.table(key).ok, g.tables[key].ok)


def test_state_caches_stay_bounded_and_masks_stay_right(vocab, monkeypatch):
    """A long session meets ever more open-bar states: the caches are cleared at their
    bound instead of growing, and a mask computed after a clear is the same."""
    import st_agent.music.bar_grammar as bg

    monkeypatch.setattr(bg, "MAX_CACHED_STATES", 8)
    small = BarGrammar(vocab, unit_q=0.5, bar_q=4.0)
    texts = ["A", "A2 ", "A3/", "A>", "A2-", "A6 B2-|", "A8|B8|c6 d2-", "c2BdcBc2- | c2A2 z2ce",
             "E2 A3AA2-|A2 A3AA2|A2 A4A2-|", "(3AB", "A8 | B4 c4 | "] * 3
    for text in texts:
        got = grammar_mask(small, text)
        assert len(small._masks) <= 8 and len(small._tie_keep_masks) <= 8
        np.testing.assert_array_equal(got, brute_force(small, text))
        tail = text[text.rfind("|") + 1:]
        prefix_q, raw = small._split(tail)
        row = small.bias_row(prefix_q, raw, 4 - text.count("|"), text)
        np.testing.assert_array_equal(np.isfinite(row) if row is not None else
                                      np.zeros(len(vocab), bool), got)


def test_computed_tables_stay_bounded_and_loaded_ones_stay(tmp_path, vocab, monkeypatch):
    """Keys the loaded tables lack are computed and kept up to a bound, the least
    recently used dropped first (so a long session's memory stays bounded); loaded
    tables are never dropped; a table computed again after it was dropped is the same;
    a build (``max_learned_tables = None``) keeps every key."""
    import st_agent.music.bar_grammar as bg

    texts = ["A", "A2", "A3/", "A>", "(3AB", "A2-", "A/", "A3", "A4", "A6", "A3/2", "z2"]
    keys = [BarGrammar(vocab, 0.5, 4.0).key_of(t)[1] for t in texts]
    assert len(set(keys)) >= 8
    unbounded = BarGrammar(vocab, 0.5, 4.0)
    unbounded.max_learned_tables = None
    for key in keys:
        unbounded.table(key)
    assert unbounded.n_tables == len(set(keys))
    shipped = save_tables(unbounded, tmp_path / "tables.npz")

    monkeypatch.setattr(bg, "MAX_LEARNED_TABLES", 3)
    g = BarGrammar(vocab, 0.5, 4.0)
    assert g.max_learned_tables == 3
    loaded_key = keys[0]
    first = g.table(keys[1])
    for key in keys[2:]:
        g.table(key)
        assert g.n_tables <= 3
    assert keys[1] not in g.tables  # the least recently used went first
    assert g.cache_sizes()["learned"] == 3 and g.cache_sizes()["loaded"] == 0
    again = g.table(keys[1])
    assert again is not first
    for name in ("ok", "n_bars", "first_q", "needs_q", "tie_open"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))

    g2 = BarGrammar(vocab, 0.5, 4.0)
    assert load_tables(g2, shipped) == len(set(keys))
    for key in ["A8", "A7", "A5", "z6", "z7"]:
        g2.table(g2.key_of(key)[1])
    assert loaded_key in g2.tables and g2.n_tables <= len(set(keys)) + 3
    assert g2.tables[loaded_key].n_bars.dtype == np.int8
    with pytest.raises(ValueError, match="max_learned_tables"):
        g2.max_learned_tables = -1


def test_build_tables_merges_into_the_file_and_composes_chains(tmp_path, vocab):
    """``--merge`` keeps every key the checkpoint's file had; ``--chained`` composes
    phrases that continue each other, and what it writes loads back."""
    import shutil

    from st_agent.music.bar_tables import build_tables, tables_path

    ckpt = tmp_path / "composer"
    shutil.copytree(BUNDLED_COMPOSER, ckpt)
    path = tables_path(ckpt, "4/4", "1/8")
    with np.load(path, allow_pickle=False) as data:
        before = {str(k) for k in data["keys"]}
    assert build_tables(ckpt, compose=0, chained=2, chain_len=2, merge=True) == path
    with np.load(path, allow_pickle=False) as data:
        after = {str(k) for k in data["keys"]}
    assert before <= after
    assert load_tables(BarGrammar(vocab, 0.5, 4.0), path) == len(after)
