"""Steering vectors: building, the safetensors round trip, and refusing the wrong model."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from steerunc.errors import InputError, VectorsError
from steerunc.scoring.vectors import Pair, build_vectors, load_vectors, read_pairs

from conftest import load_tiny

PAIRS = [
    Pair("kind", "I am a kind reader.\nComment: hello", "Comment: hello"),
    Pair("kind", "I am a kind reader.\nComment: go away", "Comment: go away"),
    Pair("harsh", "I judge everything harshly.\nComment: hello", "Comment: hello"),
]


def test_vector_is_the_mean_activation_difference(tiny: Any) -> None:
    from steerunc.scoring.vectors import _last_token_acts

    built = build_vectors(tiny, PAIRS, layer=1)
    pos, _, _ = _last_token_acts(tiny, [p.positive for p in PAIRS[:2]], [1], batch_size=1)[1]
    neg, _, _ = _last_token_acts(tiny, [p.negative for p in PAIRS[:2]], [1], batch_size=1)[1]
    assert built.names == ["kind", "harsh"]
    assert built.n_pairs == [2, 1]
    assert torch.allclose(built.vectors[0], (pos - neg).mean(0), atol=1e-5)
    assert built.resid_norm > 0


def test_several_layers_from_one_pass_equal_one_layer_at_a_time(tiny: Any) -> None:
    from steerunc.scoring.vectors import build_vectors_by_layer

    several = build_vectors_by_layer(tiny, PAIRS, [2, 0, 1], batch_size=2)
    assert list(several) == [2, 0, 1]
    for layer, built in several.items():
        alone = build_vectors(tiny, PAIRS, layer=layer)
        assert built.layer == layer and built.names == alone.names and built.n_pairs == alone.n_pairs
        assert torch.allclose(built.vectors, alone.vectors, atol=1e-5)
        assert built.resid_norm == pytest.approx(alone.resid_norm, rel=1e-6)
    assert not torch.allclose(several[0].vectors, several[2].vectors)
    with pytest.raises(VectorsError, match="out of range"):
        build_vectors_by_layer(tiny, PAIRS, [1, tiny.n_layers])


def test_round_trip_keeps_vectors_and_metadata(tiny: Any, tmp_path: Path) -> None:
    built = build_vectors(tiny, PAIRS, layer=2)
    path = str(tmp_path / "v.safetensors")
    built.save(path)
    loaded = load_vectors(path, tiny)
    assert torch.equal(loaded.vectors, built.vectors)
    assert loaded.names == built.names and loaded.layer == 2 and loaded.n_pairs == [2, 1]
    assert loaded.meta["hook"] == "blocks.2.hook_out"
    assert loaded.meta["position_rule"] == "last"
    assert json.loads(loaded.meta["norms"]) == pytest.approx(built.norms)
    assert loaded.resid_norm == pytest.approx(built.resid_norm)


def test_a_file_for_another_model_is_refused(tiny: Any, tmp_path: Path) -> None:
    from steerunc.scoring.tiny import tiny_random_model

    other_dir = tmp_path / "other-model"
    hf_model, tokenizer = tiny_random_model(seed=1)  # same shapes, other weights
    hf_model.save_pretrained(other_dir)
    tokenizer.save_pretrained(other_dir)
    other = load_tiny(path=str(other_dir))  # on STEERUNC_TEST_DEVICE
    path = str(tmp_path / "v.safetensors")
    build_vectors(other, PAIRS, layer=1).save(path)
    with pytest.raises(VectorsError, match="built for model 'other-model'"):
        load_vectors(path, tiny)
    assert load_vectors(path, other).layer == 1


def test_not_a_vector_file_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04 this is no safetensors file")
    with pytest.raises(VectorsError, match="not a steerunc vector file"):
        load_vectors(str(junk))
    with pytest.raises(VectorsError, match="no such vector file"):
        load_vectors(str(tmp_path / "missing.safetensors"))


def test_pairs_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"perspective": "a", "positive": "x y", "negative": "y"}\n{"perspective": "a", "positive": "x"}\n')
    with pytest.raises(InputError, match=r"pairs.jsonl:2: missing or empty negative"):
        read_pairs(str(path))


def test_identical_pairs_give_a_clear_error(tiny: Any) -> None:
    with pytest.raises(VectorsError, match="zero vector"):
        build_vectors(tiny, [Pair("same", "Comment: hello", "Comment: hello")], layer=1)


def test_layer_out_of_range(tiny: Any) -> None:
    with pytest.raises(VectorsError, match="out of range"):
        build_vectors(tiny, PAIRS, layer=99)


def test_centring_removes_the_shared_direction_and_keeps_provenance(tiny: Any) -> None:
    built = build_vectors(tiny, PAIRS, layer=1)
    shared = torch.randn(built.d_model, generator=torch.Generator().manual_seed(0)) * 50 * built.vectors.norm(dim=1).max()
    crowded = replace(built, vectors=built.vectors + shared)  # two perspectives, one dominant direction
    assert crowded.mean_cosine() > 0.99
    centred = crowded.centered()
    assert torch.allclose(centred.vectors, built.vectors - built.vectors.mean(0), atol=1e-2 * float(built.vectors.norm()))
    assert torch.allclose(centred.vectors.sum(0), torch.zeros(built.d_model), atol=1e-3 * float(shared.norm()))
    assert centred.mean_cosine() == pytest.approx(-1.0, abs=1e-5)  # K = 2: the two are opposite
    assert (centred.names, centred.layer, centred.n_pairs) == (built.names, built.layer, built.n_pairs)
    assert centred.meta["centered"] == "true" and crowded.meta.get("centered") is None


def test_centring_one_vector_is_refused(tiny: Any) -> None:
    one = build_vectors(tiny, PAIRS[:2], layer=1)
    assert one.mean_cosine() is None
    with pytest.raises(VectorsError, match="at least 2 perspectives"):
        one.centered()


def test_expect_fields_are_optional_read_once_per_perspective_and_checked(tmp_path: Path) -> None:
    from steerunc.scoring.vectors import read_expectations

    path = tmp_path / "pairs.jsonl"
    rows = [
        {"perspective": "a", "positive": "x y", "negative": "y", "expect": "Yes"},
        {"perspective": "a", "positive": "x z", "negative": "z"},
        {"perspective": "a", "positive": "x w", "negative": "w", "expect": "Yes"},
        {"perspective": "b", "positive": "q y", "negative": "y"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_expectations(str(path)) == {"a": "Yes"}
    assert [p.perspective for p in read_pairs(str(path))] == ["a", "a", "a", "b"]  # the field changes no pair
    for bad, message in (
        ({"perspective": "a", "positive": "x", "negative": "v", "expect": "No"}, r":5: perspective 'a' expects 'No' here but 'Yes' on line 1"),
        ({"perspective": "a", "positive": "x", "negative": "v", "expect": ""}, ":5: 'expect' must be an option name"),
        ({"perspective": "a", "positive": "x", "negative": "v", "expect": ["Yes"]}, ":5: 'expect' must be an option name"),
        ({"positive": "x", "negative": "v", "expect": "Yes"}, ":5: 'expect' given on a line without a 'perspective'"),
    ):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows + [bad]))
        with pytest.raises(InputError, match=message):
            read_expectations(str(path))


def test_the_shipped_perspectives_declare_what_they_favour_on_an_offensiveness_probe() -> None:
    from steerunc.scoring.vectors import read_expectations
    from steerunc.scoring.vectors_default import default_pairs_path

    assert read_expectations(default_pairs_path()) == {
        "strict_moderator": "Yes", "free_speech_advocate": "No", "targeted_group_member": "Yes",
    }


def test_default_vectors_carry_the_declared_expectations(tiny_vectors: Any) -> None:
    assert tiny_vectors.expectations == {
        "strict_moderator": "Yes", "free_speech_advocate": "No", "targeted_group_member": "Yes",
    }


def test_a_stored_expect_field_is_checked_on_load(tiny: Any, tmp_path: Path) -> None:
    built = build_vectors(tiny, PAIRS, layer=1)
    path = str(tmp_path / "v.safetensors")
    built.meta["expect"] = json.dumps({"kind": "No"})
    built.save(path)
    assert load_vectors(path).expectations == {"kind": "No"}
    for bad in ('{"nobody": "No"}', '["No"]', '{"kind": 1}', "not json"):
        built.meta["expect"] = bad
        built.save(path)
        with pytest.raises(VectorsError, match="field 'expect'"):
            load_vectors(path)


def test_shipped_default_vectors_are_used_only_when_they_fit(tiny: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """Pre-built vectors in the package save building them (minutes on a real model), but only
    when they were built from the same pairs on the same weights at the same layer."""
    import steerunc.scoring.vectors_default as vec

    built = vec.default_vectors(tiny)
    shipped = tmp_path / "shipped.safetensors"
    built.save(str(shipped))
    monkeypatch.setattr(vec, "shipped_vectors_path", lambda model_id, layer: str(shipped))
    monkeypatch.setenv("STEERUNC_CACHE_DIR", str(tmp_path / "empty-cache"))

    def no_build(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("built although the shipped vectors fit")

    monkeypatch.setattr(vec, "build_vectors", no_build)
    again = vec.default_vectors(tiny)
    assert torch.equal(again.vectors, built.vectors) and again.expectations == built.expectations
    assert os.listdir(tmp_path / "empty-cache" / "vectors")  # copied into the cache

    # built from other pairs: ignored, so the vectors are built
    other = replace(built, meta={"pairs": "steerunc default perspectives 000000000000"})
    other.save(str(shipped))
    monkeypatch.setenv("STEERUNC_CACHE_DIR", str(tmp_path / "cache-2"))
    with pytest.raises(AssertionError, match="built although"):
        vec.default_vectors(tiny)


def test_the_default_set_digest_ignores_fields_other_than_the_pairs() -> None:
    from steerunc.scoring.vectors import Pair
    from steerunc.scoring.vectors_default import _pairs_digest

    pairs = [Pair("a", "I think so. x", "x"), Pair("b", "I doubt it. x", "x")]
    assert _pairs_digest(pairs) == _pairs_digest(list(pairs))
    assert _pairs_digest(pairs) != _pairs_digest([Pair("a", "I think so. y", "y"), pairs[1]])
    # reading the same texts through the chat template gives other vectors: another set
    assert _pairs_digest(pairs) != _pairs_digest([Pair("a", "I think so. x", "x", chat=True), pairs[1]])


def test_the_pre_built_default_vectors_are_those_of_the_shipped_pairs() -> None:
    """The package's pre-built vectors for the default model must come from today's shipped pairs
    (else every user rebuilds them on first use: 15-30 minutes on a CPU)."""
    from steerunc.scoring.vectors import load_vectors, read_pairs
    from steerunc.scoring.vectors_default import _pairs_digest, default_pairs_path, shipped_vectors_path

    pairs = read_pairs(default_pairs_path())
    assert all(p.chat for p in pairs)
    shipped = load_vectors(shipped_vectors_path("qwen2.5-coder-1.5b-instruct-q4-k-m", 20))
    assert shipped.meta["pairs"] == "steerunc default perspectives " + _pairs_digest(pairs)
    assert shipped.meta["read"] == "chat template"
    assert shipped.names == list(dict.fromkeys(p.perspective for p in pairs))
