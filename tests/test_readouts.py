"""The readouts at batch level: ragged batches, batched tokenising, inputs as dicts, token names,
``top_view`` and ``provenance``."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import torch

import steerunc.scoring.readouts as readouts_module
from steerunc import __version__
from steerunc.records import ErrorRecord, Record, ScoredRecord
from steerunc.scoring.readouts_vocab import TokenNames, _unique
from steerunc.scoring.scorer import ScoreConfig, Scorer, vectors_digest

from conftest import MODERATION

COEFF = 0.5
MIXED = [  # one-token options (2 and 3 of them) and multi-token options in one batch
    Record(MODERATION.format("you are great"), id="a", options=["Yes", "No"]),
    Record(MODERATION.format("nobody asked for your opinion, and it shows"), id="b", options=["Yes", "No", "Unsure"]),
    Record("Is the sky blue? Answer:", id="c", options=["A", "B", "C", "D"]),
    Record(MODERATION.format("ok"), id="d", options=["No", "Yes"], label="No"),
]


def _numbers(record: ScoredRecord) -> list[float]:
    values = list(record.scores.values()) + list((record.probs or {}).values()) + list((record.base_probs or {}).values())
    values += [p for view in record.views.values() for p in view["probs"].values()] + [v["kl"] for v in record.views.values()]
    return values + list((record.logits or {}).values()) + [record.top_view["delta"]] if record.top_view else values


def test_a_ragged_batch_equals_each_record_alone(tiny: Any, tiny_vectors: Any) -> None:
    """Option counts 2, 3, 4 padded together, beside records whose options span several tokens."""
    yes, unsure = (len(tiny.tokenizer(" " + o, add_special_tokens=False)["input_ids"]) for o in ("Yes", "Unsure"))
    assert yes == 1 and unsure > 1
    together = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, batch_size=64)).score(MIXED)
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, batch_size=1))
    for record, out in zip(MIXED, together):
        (alone,) = scorer.score([record])
        assert isinstance(out, ScoredRecord) and isinstance(alone, ScoredRecord)
        assert list(out.probs or {}) == record.options and out.prediction == alone.prediction
        assert out.top_view is not None and alone.top_view is not None
        assert out.top_view["name"] == alone.top_view["name"]
        assert max(abs(a - b) for a, b in zip(_numbers(alone), _numbers(out))) <= 1e-5


def test_multi_token_options_in_chunks_equal_one_chunk(tiny: Any, tiny_vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [r for r in MIXED if r.options and "Unsure" in r.options] * 3
    whole = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, batch_size=64)).score(records)
    monkeypatch.setattr(readouts_module, "CHUNK_VALUES", 1)  # one option row per chunk
    chunked = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, batch_size=64)).score(records)
    for a, b in zip(whole, chunked):
        assert max(abs(x - y) for x, y in zip(_numbers(a), _numbers(b))) <= 1e-5  # type: ignore[arg-type]


def test_next_token_records_in_chunks_equal_one_chunk(tiny: Any, tiny_vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [MODERATION.format(t) for t in ("you are great", "ok", "what a lovely idea")]
    whole = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, batch_size=64)).score(texts)
    monkeypatch.setattr(readouts_module, "CHUNK_VALUES", 1)
    import steerunc.scoring.readouts_vocab as vocab_module

    monkeypatch.setattr(vocab_module, "chunk_size", lambda per_unit, wanted: 1)
    chunked = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, batch_size=64)).score(texts)
    for a, b in zip(whole, chunked):
        assert isinstance(a, ScoredRecord) and isinstance(b, ScoredRecord)
        assert a.probs == pytest.approx(b.probs, abs=1e-6) and a.scores == pytest.approx(b.scores, abs=1e-6)


def test_the_tokenizer_is_called_on_lists(tiny: Any, tiny_vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """One call for a batch's texts; an option list is encoded once, not per record."""
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(batch_size=64))
    calls: list[Any] = []
    original = type(tiny.tokenizer).__call__

    def counting(self: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(text)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tiny.tokenizer), "__call__", counting)
    records = [Record(MODERATION.format(f"comment {i}"), options=["Yes", "No"]) for i in range(20)]
    assert all(isinstance(r, ScoredRecord) for r in scorer.score(records))
    assert len(calls) == 2 and all(isinstance(c, list) for c in calls)  # the options once, then the texts
    assert sorted(len(c) for c in calls) == [2, 20]
    calls.clear()
    scorer.score(records[:5])
    assert [len(c) for c in calls] == [5]  # the option list is cached


def test_dicts_are_read_like_input_lines(tiny: Any, tiny_vectors: Any) -> None:
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF))
    text = MODERATION.format("you are great")
    as_dict, as_record, defaulted, bad, no_id = scorer.score(
        [{"id": 7, "text": text, "options": ["Yes", "No"], "label": "No"}, Record(text, id=7, options=["Yes", "No"], label="No"),
         {"id": "d", "text": text}, {"id": "x", "text": text, "options": ["Yes", "No"], "label": "Maybe"},
         {"text": ""}],
        options=["Yes", "No"],
    )
    assert isinstance(as_dict, ScoredRecord) and isinstance(as_record, ScoredRecord)
    assert as_dict.id == 7 and as_dict.to_json().keys() == as_record.to_json().keys()
    assert as_dict.probs == pytest.approx(as_record.probs, abs=1e-6) and as_dict.correct == as_record.correct
    assert isinstance(defaulted, ScoredRecord) and list(defaulted.probs or {}) == ["Yes", "No"]  # --options as default
    assert isinstance(bad, ErrorRecord) and bad.id == "x" and "unknown label" in bad.error
    assert isinstance(no_id, ErrorRecord) and no_id.id is None and "'text' is empty" in no_id.error
    with pytest.raises(TypeError, match="cannot score"):
        scorer.score([3.5])  # type: ignore[list-item]


def test_top_view_is_the_view_that_moves_the_base_prediction_most(tiny: Any, tiny_vectors: Any) -> None:
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=1.0))
    for out in scorer.score(MIXED):
        assert isinstance(out, ScoredRecord) and out.top_view is not None
        base = out.base_prediction
        deltas = {name: view["probs"][base] - (out.base_probs or {})[base] for name, view in out.views.items()}
        top = max(deltas, key=lambda name: abs(deltas[name]))  # the first of equals, in perspective order
        assert out.top_view["name"] == top
        assert out.top_view["delta"] == pytest.approx(deltas[top], abs=1e-6) and abs(out.top_view["delta"]) > 0
    (nt,) = scorer.score([MODERATION.format("you people never learn")])
    assert isinstance(nt, ScoredRecord) and nt.top_view is not None and nt.mode == "next_token"
    token = nt.base_prediction  # the base top token; a view may list it among its top tokens or not
    listed = {n: v["probs"][token] - (nt.base_probs or {})[token] for n, v in nt.views.items() if token in v["probs"]}
    if nt.top_view["name"] in listed:
        assert nt.top_view["delta"] == pytest.approx(listed[nt.top_view["name"]], abs=1e-6)
    assert all(abs(d) <= abs(nt.top_view["delta"]) + 1e-6 for d in listed.values())
    cont = scorer.score_text("The capital of France is", continuation=" Paris.")
    assert cont.top_view is None and "top_view" not in cont.to_json()


def test_provenance_names_the_settings(tiny: Any, tiny_vectors: Any) -> None:
    config = ScoreConfig(coeff=0.25, center=False)
    scorer = Scorer(tiny, tiny_vectors, config)
    expected = {
        "steerunc": __version__, "model": tiny.model_id, "model_fingerprint": tiny.fingerprint,
        "vectors": vectors_digest(tiny_vectors), "layer": tiny_vectors.layer, "perspectives": list(tiny_vectors.names),
        "coeff": 0.25, "center": False, "tau": 0.4, "alpha": 0.2, "fusion": "mixture", "chat": False,
    }
    assert scorer.provenance == expected and len(expected["vectors"]) == 16
    scorer.provenance["coeff"] = 9.0  # a copy: the scorer's own is not changed
    assert scorer.provenance["coeff"] == 0.25
    for out in scorer.score([MIXED[0], MODERATION.format("hi")]) + [scorer.score_text("A", continuation=" b")]:
        assert isinstance(out, ScoredRecord)
        assert json.loads(json.dumps(out.to_json()))["provenance"] == expected
    assert Scorer(tiny, tiny_vectors).provenance["center"] is True  # the effective setting: K >= 2 centres
    renamed = dataclasses.replace(tiny_vectors, names=[n + "_" for n in tiny_vectors.names])
    assert vectors_digest(renamed) != vectors_digest(tiny_vectors)
    moved = dataclasses.replace(tiny_vectors, vectors=tiny_vectors.vectors * 2)
    assert vectors_digest(moved) != vectors_digest(tiny_vectors)


def test_next_token_keys_are_decoded_text(tiny: Any, tiny_vectors: Any) -> None:
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF))
    names = scorer.readouts["next_token"].token_names  # type: ignore[attr-defined]
    yes = tiny.tokenizer(" Yes", add_special_tokens=False)["input_ids"][0]
    assert names[yes] == " Yes" and tiny.tokenizer.convert_ids_to_tokens([yes]) == ["ĠYes"]
    every = [names[i] for i in range(scorer.unembed.vocab_size)]
    assert len(set(every)) == len(every)
    (out,) = scorer.score([MODERATION.format("you are great")])
    assert isinstance(out, ScoredRecord) and out.prediction in (out.probs or {})
    assert all(k in every for k in out.probs or {})


def test_token_names_disambiguate_deterministically() -> None:
    class Fake:
        texts = {0: "a", 1: "\ufffd", 2: "\ufffd", 3: "b", 4: "a", 5: "\ufffd⟨2⟩"}

        def batch_decode(self, ids: list[list[int]], **_: Any) -> list[str]:
            return [self.texts[i[0]] for i in ids]

    names = TokenNames(Fake(), 6)
    # id 5's own text equals id 2's suffixed name, so it is suffixed in a second round
    assert [names[i] for i in range(6)] == ["a⟨0⟩", "\ufffd⟨1⟩", "\ufffd⟨2⟩", "b", "a⟨4⟩", "\ufffd⟨2⟩⟨5⟩"]
    assert _unique(["x", "y"]) == ["x", "y"]


def test_one_batch_mixes_the_modes(tiny: Any, tiny_vectors: Any) -> None:
    """Options, next token and continuation records in one batch: in order, each as alone."""
    items: list[Any] = [MIXED[0], Record("The capital of France is", id="c", continuation=" Paris."),
                        Record(MODERATION.format("hi"), id="n"), ErrorRecord(3, "upstream"), MIXED[2]]
    together = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, batch_size=64)).score(items)
    alone = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, batch_size=1))
    assert [getattr(o, "mode", None) for o in together] == ["options", "continuation", "next_token", None, "options"]
    for item, out in zip(items, together):
        if isinstance(item, ErrorRecord):
            assert out is item
            continue
        (single,) = alone.score([item])
        assert isinstance(out, ScoredRecord) and isinstance(single, ScoredRecord)
        assert out.scores == pytest.approx(single.scores, abs=1e-5)


def test_output_records_are_built_from_one_host_copy_per_batch(
    tiny: Any, tiny_vectors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies: list[int] = []
    original = readouts_module.to_host

    def counting(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        copies.append(len(tensors))
        return original(tensors)

    monkeypatch.setattr(readouts_module, "to_host", counting)
    Scorer(tiny, tiny_vectors, ScoreConfig(batch_size=64)).score([MIXED[i % 3] for i in range(12)])
    assert len(copies) == 1
