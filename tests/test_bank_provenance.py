"""The shipped phrase bank was composed by the bundled composer, and the shipped reference
controllers were tuned on that bank (so the fast env, the controllers and live sessions
play the same music)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from st_agent.contract import TARGET_PRESETS
from st_agent.envs.phrase_bank import PhraseBank, build_phrase_bank, composer_fingerprint
from st_agent.policies.loading import BUNDLED_DIR
from st_agent.policies.lofo import _reference_key


@pytest.fixture(scope="module")
def shipped_bank() -> PhraseBank:
    return build_phrase_bank()  # the shipped copy: loaded, never rebuilt


def test_shipped_bank_was_composed_by_the_bundled_composer() -> None:
    from st_agent.envs.bank_cache import shipped_bank as shipped_path

    path = shipped_path("bank_g5_p2_s0.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["composer_weights_sha256"] == composer_fingerprint(), (
        "the phrase bank was composed by another model than the bundled one: rebuild it "
        "(build_phrase_bank(path, overwrite=True)) and re-run benchmarks/ship_controllers.py")


@pytest.mark.parametrize("kind", ["pid", "constant", "adaptive"])
def test_shipped_references_were_tuned_on_the_shipped_bank(kind: str,
                                                            shipped_bank: PhraseBank) -> None:
    targets = sorted(p.stem for p in (BUNDLED_DIR / kind).glob("*.json"))
    assert targets and set(targets) <= set(TARGET_PRESETS)
    for target in targets:
        doc = json.loads((BUNDLED_DIR / kind / f"{target}.json").read_text(encoding="utf-8"))
        assert doc["tuned_on"]["bank_fingerprint"] == shipped_bank.fingerprint, (kind, target)


def test_fingerprint_follows_the_features(shipped_bank: PhraseBank) -> None:
    same = PhraseBank(shipped_bank.grid, shipped_bank.knobs.copy(), list(shipped_bank.features))
    f0 = shipped_bank.features[0]
    moved = [dataclasses.replace(f0, mean_pitch=f0.mean_pitch + 1.0),
             *shipped_bank.features[1:]]
    other = PhraseBank(shipped_bank.grid, shipped_bank.knobs.copy(), moved)
    assert same.fingerprint == shipped_bank.fingerprint != other.fingerprint
    args = ("calm", ("first_order",), 0, 16, 1, 32)
    assert _reference_key(*args, shipped_bank) == _reference_key(*args, same)
    assert _reference_key(*args, shipped_bank) != _reference_key(*args, other)


def test_a_built_bank_records_its_composer(tmp_path) -> None:
    path = tmp_path / "bank.json"
    build_phrase_bank(path, grid=2, per_point=1)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["composer_weights_sha256"] == composer_fingerprint()
    assert (doc["per_point"], doc["seed"]) == (1, 0)
