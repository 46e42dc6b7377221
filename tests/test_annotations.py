"""Perspective vectors from a few annotated examples: recipes, caps, errors, the CLI path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from steerunc.scoring.annotations import (
    detect_source,
    pairs_from_annotations,
    read_annotations,
    read_pairs_or_annotations,
)
from steerunc.errors import InputError

PROMPT = 'Post: "{}"\nIs this post offensive? Answer:'


def _write(path: Path, lines: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def test_feedback_recipe_prefixes_the_note_and_keeps_the_prompt_as_negative() -> None:
    built = pairs_from_annotations([{"perspective": "strict", "text": PROMPT.format("hi"), "feedback": "I am strict."}])
    (pair,) = built.pairs
    assert pair.positive == "I am strict.\n" + PROMPT.format("hi")
    assert pair.negative == PROMPT.format("hi")


def test_answer_recipe_joins_like_an_option_and_uses_the_contrast() -> None:
    built = pairs_from_annotations([{"perspective": "g", "text": "Q? Answer:", "answer": "Yes", "contrast": "No"}])
    assert [(p.positive, p.negative) for p in built.pairs] == [("Q? Answer: Yes", "Q? Answer: No")]
    built = pairs_from_annotations([{"perspective": "g", "text": "Q? Answer: ", "answer": "Yes", "contrast": "No"}])
    assert built.pairs[0].positive == "Q? Answer: Yes"  # no double space


def test_answer_recipe_without_contrast_uses_other_perspectives_answers() -> None:
    lines = [
        {"perspective": "a", "text": "T1", "answer": "Yes"},
        {"perspective": "b", "text": "T1", "answer": "No"},
        {"perspective": "c", "text": "T1", "answer": "Unsure"},
        {"perspective": "c", "text": "T2", "answer": "Yes", "contrast": "No"},
    ]
    built = pairs_from_annotations(lines)
    a_pairs = sorted(p.negative for p in built.pairs if p.perspective == "a")
    assert a_pairs == ["T1 No", "T1 Unsure"]
    assert len([p for p in built.pairs if p.perspective == "c"]) == 3


def test_a_perspective_with_nothing_to_contrast_is_an_error() -> None:
    lines = [{"perspective": "a", "text": "T", "answer": "Yes"}, {"perspective": "b", "text": "T", "answer": "Yes"}]
    with pytest.raises(InputError, match="yield no pair"):
        pairs_from_annotations(lines)
    with pytest.raises(InputError, match="yield no pair"):
        pairs_from_annotations([{"perspective": "a", "text": "T", "answer": "Yes", "contrast": "Yes"}])


def test_cap_keeps_the_first_examples_of_each_perspective() -> None:
    lines = [{"perspective": p, "text": f"t{i}", "feedback": "note"} for p in ("a", "b") for i in range(60)]
    built = pairs_from_annotations(lines)
    assert built.examples == {"a": 50, "b": 50} and built.dropped == {"a": 10, "b": 10}
    assert [p.negative for p in built.pairs if p.perspective == "a"] == [f"t{i}" for i in range(50)]
    assert len(pairs_from_annotations(lines, max_per_perspective=0).pairs) == 120
    assert len(pairs_from_annotations(lines, max_per_perspective=5).pairs) == 10


def test_recipe_must_match_the_fields() -> None:
    with pytest.raises(InputError, match="recipe 'answer' needs 'answer'"):
        pairs_from_annotations([{"perspective": "a", "text": "t", "feedback": "f"}], recipe="answer")
    with pytest.raises(InputError, match="unknown recipe"):
        pairs_from_annotations([{"perspective": "a", "text": "t", "feedback": "f"}], recipe="vote")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"text": "t", "feedback": "f"}, "'perspective'"),
        ({"perspective": "a", "text": " ", "feedback": "f"}, "'text'"),
        ({"perspective": "a", "text": "t"}, "needs 'feedback' or 'answer'"),
        ({"perspective": "a", "text": "t", "answer": 3}, "'answer' must be a non-empty string"),
        ({"perspective": "a", "text": "t", "feedback": "f", "contrast": "No"}, "'contrast' given without"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: dict[str, Any], message: str) -> None:
    path = _write(tmp_path / "a.jsonl", [{"perspective": "ok", "text": "t", "feedback": "f"}, line])
    with pytest.raises(InputError, match=message) as info:
        read_annotations(path)
    assert info.value.line == 2 and info.value.path == path


def test_detect_source(tmp_path: Path) -> None:
    pairs = _write(tmp_path / "p.jsonl", [{"perspective": "a", "positive": "x", "negative": "y"}])
    notes = _write(tmp_path / "n.jsonl", [{"perspective": "a", "text": "x", "feedback": "f"}])
    other = _write(tmp_path / "o.jsonl", [{"foo": 1}])
    assert detect_source(pairs) == "pairs" and detect_source(notes) == "annotations"
    with pytest.raises(InputError, match="cannot tell pairs from annotations"):
        detect_source(other)
    got, meta = read_pairs_or_annotations(notes)
    assert meta["source"] == "annotations" and got[0].positive == "f\nx"


def test_cli_builds_vectors_from_annotations(tmp_path: Path, tiny: Any) -> None:
    from steerunc.cli import main
    from steerunc.scoring.vectors import load_vectors

    lines = [{"perspective": "strict", "text": PROMPT.format(w), "feedback": "As a strict moderator, I flag it."}
             for w in ("hello there", "you are wrong", "nice work")]
    lines += [{"perspective": "group", "text": PROMPT.format(w), "answer": "Yes", "contrast": "No"}
              for w in ("they are all lazy", "go away")]
    path = _write(tmp_path / "notes.jsonl", lines)
    out = tmp_path / "v.safetensors"
    result = CliRunner().invoke(main, ["vectors", "build", path, "-o", str(out), "--model", "tiny-random", "-q"])
    assert result.exit_code == 0, result.output
    vectors = load_vectors(str(out), tiny)
    assert vectors.names == ["strict", "group"] and vectors.n_pairs == [3, 2]
    assert vectors.meta["source"] == "annotations" and json.loads(vectors.meta["examples_per_perspective"]) == {
        "strict": 3, "group": 2}
    # the pairs format still works, unchanged
    pairs = _write(tmp_path / "p.jsonl", [{"perspective": "a", "positive": "x y", "negative": "y"}])
    result = CliRunner().invoke(main, ["vectors", "build", pairs, "-o", str(tmp_path / "p.safetensors"),
                                       "--model", "tiny-random", "-q"])
    assert result.exit_code == 0, result.output
    # a bad annotation line is a one-line error naming the line
    bad = _write(tmp_path / "bad.jsonl", [lines[0], {"perspective": "x", "text": "t"}])
    result = CliRunner().invoke(main, ["vectors", "build", bad, "-o", str(tmp_path / "b.safetensors"),
                                       "--model", "tiny-random", "--from", "annotations"])
    assert result.exit_code == 1 and "bad.jsonl:2:" in result.output


def test_shared_negatives_run_once_and_give_the_same_vectors(tiny: Any) -> None:
    from steerunc.scoring.vectors import Pair, build_vectors

    prompts = [PROMPT.format(w) for w in ("a b", "c d e")]
    pairs = [Pair(p, f"{note}\n{t}", t) for p, note in (("x", "I am X."), ("y", "I am Y.")) for t in prompts]
    together = build_vectors(tiny, pairs, layer=1)
    alone = [build_vectors(tiny, [q for q in pairs if q.perspective == name], layer=1) for name in ("x", "y")]
    for k, single in enumerate(alone):
        assert (together.vectors[k] - single.vectors[0]).abs().max() < 1e-4
