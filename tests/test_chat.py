"""Reading a record through the model's chat template (``"chat": true`` / ``--chat``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from click.testing import CliRunner

from steerunc.scoring.prompting import chat_text
from steerunc.records import ScoredRecord
from steerunc.scoring.scorer import Scorer

TEMPLATE = "{{ bos_token }}User: {{ messages[0]['content'] }}\nAssistant:{{ '\\n' }}"
QUESTION = "Comment: \"nice work\"\nIs this comment offensive?"


@pytest.fixture
def templated(tiny: Any) -> Iterator[Any]:
    saved = getattr(tiny.tokenizer, "chat_template", None)
    tiny.tokenizer.chat_template = TEMPLATE
    try:
        yield tiny
    finally:
        tiny.tokenizer.chat_template = saved


def test_a_chat_record_is_the_user_turn_read_at_the_start_of_the_answer(templated: Any, tiny_vectors: Any) -> None:
    scorer = Scorer(templated, tiny_vectors)
    text = chat_text(templated.tokenizer, QUESTION)
    assert text.startswith(templated.tokenizer.bos_token) and text.endswith("Assistant:\n")
    by_hand = text[len(templated.tokenizer.bos_token):]  # the tokenizer adds BOS to a raw text itself
    chat, raw, plain = scorer.score([
        {"id": 1, "text": QUESTION, "options": ["Yes", "No"], "chat": True},
        {"id": 2, "text": by_hand, "options": ["Yes", "No"]},
        {"id": 3, "text": QUESTION, "options": ["Yes", "No"]},
    ])
    assert isinstance(chat, ScoredRecord) and isinstance(raw, ScoredRecord) and isinstance(plain, ScoredRecord)
    for name in ("Yes", "No"):
        assert chat.base_probs[name] == pytest.approx(raw.base_probs[name], abs=1e-5)  # type: ignore[index]
        assert chat.probs[name] == pytest.approx(raw.probs[name], abs=1e-5)  # type: ignore[index]
    assert chat.base_probs != plain.base_probs
    # each record's provenance says how it was read, so a calibrator fitted on one kind refuses the other
    assert [r.provenance["chat"] for r in (chat, raw, plain)] == [True, False, False]  # type: ignore[index]
    assert scorer.provenance["chat"] is False


def test_the_run_flag_applies_to_records_that_do_not_say(templated: Any, tiny_vectors: Any) -> None:
    from steerunc.scoring.scorer import ScoreConfig

    scorer = Scorer(templated, tiny_vectors, ScoreConfig(chat=True))
    on, off = scorer.score([{"text": QUESTION, "options": ["Yes", "No"]},
                            {"text": QUESTION, "options": ["Yes", "No"], "chat": False}])
    alone = Scorer(templated, tiny_vectors).score([{"text": QUESTION, "options": ["Yes", "No"], "chat": True}])[0]
    # alone vs in a batch of two: the same up to kernel noise (CUDA reduces in another order)
    assert on.base_probs == pytest.approx(alone.base_probs, abs=1e-5)  # type: ignore[union-attr]
    assert off.base_probs != on.base_probs  # type: ignore[union-attr]
    assert (on.provenance["chat"], off.provenance["chat"]) == (True, False)  # type: ignore[union-attr,index]


def test_chat_without_a_template_reads_plain_text_and_says_so(tiny: Any, tiny_vectors: Any) -> None:
    saved, tiny.tokenizer.chat_template = tiny.tokenizer.chat_template, None
    try:
        _no_template(tiny, tiny_vectors)
    finally:
        tiny.tokenizer.chat_template = saved


def test_the_tiny_model_has_a_chat_template(tiny: Any) -> None:
    text = chat_text(tiny.tokenizer, "Hi?")
    assert text == "<bos><start_of_turn>user\nHi?<end_of_turn>\n<start_of_turn>model\n"


def _no_template(tiny: Any, tiny_vectors: Any) -> None:
    import logging

    scorer = Scorer(tiny, tiny_vectors)
    with _captured("steerunc.scoring.scorer") as seen:
        asked, plain, again = scorer.score([
            {"id": "a", "text": QUESTION, "options": ["Yes", "No"], "chat": True},
            {"id": "b", "text": QUESTION, "options": ["Yes", "No"]},
            {"id": "c", "text": QUESTION, "options": ["Yes", "No"], "chat": True},
        ])
    assert isinstance(asked, ScoredRecord) and isinstance(plain, ScoredRecord)
    assert asked.base_probs == plain.base_probs  # read as plain text
    assert asked.provenance["chat"] is False  # type: ignore[index]
    assert [r.levelno for r in seen] == [logging.WARNING] and "no chat template" in seen[0].getMessage()


class _captured:
    def __init__(self, name: str) -> None:
        import logging

        self.logger, self.records = logging.getLogger(name), []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append  # type: ignore[method-assign]

    def __enter__(self) -> list[Any]:
        self.logger.addHandler(self.handler)
        return self.records

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self.handler)


def test_chat_must_be_a_boolean(tmp_path: Path) -> None:
    from steerunc.cli import main

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": 1, "text": QUESTION, "options": ["Yes", "No"], "chat": "yes"}) + "\n")
    result = CliRunner().invoke(main, ["score", str(source), "--model", "tiny-random", "-q"])
    assert result.exit_code == 1
    record = json.loads(result.stdout.splitlines()[0])
    assert record["line"] == 1 and "'chat' must be true or false" in record["error"]


def test_vectors_check_reads_a_chat_record_as_the_scorer_does(templated: Any, tiny_vectors: Any) -> None:
    """``steerunc vectors check`` on a probe of chat records measured the raw text while scoring
    read the chat template: its verdict was about another prompt. Now both read the same one."""
    from steerunc.records import record_from_json
    from steerunc.scoring.vectors_probe import probe_probabilities

    records = [record_from_json({"id": i, "text": QUESTION, "options": ["Yes", "No"], "chat": chat})
               for i, chat in enumerate((True, False))]
    run = probe_probabilities(templated, tiny_vectors, records)
    scored = Scorer(templated, tiny_vectors).score(records)
    for i, result in enumerate(scored):
        assert isinstance(result, ScoredRecord) and result.base_probs is not None
        assert [result.base_probs[o] for o in ("Yes", "No")] == pytest.approx(run.base[i].tolist(), abs=1e-5)
        for j, name in enumerate(tiny_vectors.names):
            view = [result.views[name]["probs"][o] for o in ("Yes", "No")]
            assert view == pytest.approx(run.plus[i][j].tolist(), abs=1e-5)
    assert not pytest.approx(run.base[1].tolist(), abs=1e-5) == run.base[0].tolist()  # the template was read


def test_chat_pairs_are_read_where_a_chat_record_is_read(templated: Any, tmp_path: Path) -> None:
    """A vector built from pairs with ``"chat": true`` is read at the start of the model's reply,
    where a chat record's answer is read, not at the last token of the bare question."""
    from steerunc.scoring.vectors import Pair, build_vectors, read_pairs

    note = "As a strict moderator, I remove anything rude.\n"
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({"perspective": name, "positive": note + QUESTION, "negative": QUESTION,
                                          "chat": True}) + "\n" for name in ("strict", "again")))
    pairs = read_pairs(str(source))
    assert all(p.chat for p in pairs)
    chat = build_vectors(templated, pairs)
    bos = templated.tokenizer.bos_token
    by_hand = build_vectors(templated, [Pair(p.perspective, chat_text(templated.tokenizer, p.positive)[len(bos):],
                                             chat_text(templated.tokenizer, p.negative)[len(bos):]) for p in pairs])
    plain = build_vectors(templated, [Pair(p.perspective, p.positive, p.negative) for p in pairs])
    assert torch.allclose(chat.vectors, by_hand.vectors, atol=1e-5)
    assert not torch.allclose(chat.vectors, plain.vectors, atol=1e-3)
    assert chat.meta["read"] == "chat template" and plain.meta["read"] == "plain text"
    mixed = build_vectors(templated, [pairs[0], Pair("plain", note + QUESTION, QUESTION)])
    assert mixed.meta["read"] == "chat template for 1 of 2 pairs, else plain text"


def test_chat_pairs_on_a_model_without_a_template_are_read_plain_and_said_so(tiny: Any) -> None:
    from steerunc.scoring.vectors import Pair, build_vectors

    saved, tiny.tokenizer.chat_template = tiny.tokenizer.chat_template, None
    try:
        with _captured("steerunc") as logged:
            chat = build_vectors(tiny, [Pair("a", "I am strict.\n" + QUESTION, QUESTION, chat=True)])
        plain = build_vectors(tiny, [Pair("a", "I am strict.\n" + QUESTION, QUESTION)])
    finally:
        tiny.tokenizer.chat_template = saved
    assert torch.allclose(chat.vectors, plain.vectors, atol=1e-6)
    assert chat.meta["read"] == "plain text"
    assert any("no chat template" in r.getMessage() and "1 pair(s)" in r.getMessage() for r in logged)


def test_chat_in_pairs_and_annotations_files_is_checked(tmp_path: Path) -> None:
    from steerunc.errors import InputError
    from steerunc.scoring.annotations import pairs_from_annotations
    from steerunc.scoring.vectors import read_pairs

    source = tmp_path / "pairs.jsonl"
    source.write_text(json.dumps({"perspective": "a", "positive": "x y", "negative": "y", "chat": "yes"}) + "\n")
    with pytest.raises(InputError, match="must be true or false"):
        read_pairs(str(source))
    got = pairs_from_annotations([{"perspective": "a", "text": QUESTION, "feedback": "I am strict.", "chat": True}])
    assert got.pairs[0].chat and got.pairs[0].positive == "I am strict.\n" + QUESTION
    with pytest.raises(InputError, match="feedback recipe only"):
        pairs_from_annotations([{"perspective": "a", "text": QUESTION, "answer": "Yes", "contrast": "No",
                                 "chat": True}])
