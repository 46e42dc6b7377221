"""DataFrames in and out: ``score_df`` keeps every row and the index, ``read_scored_df`` flattens a
scored file the same way, and without pandas the error says what to install."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from steerunc.errors import InputError
from steerunc.integrations.frames import ColumnMap, flatten, read_scored_df, score_df
from steerunc.records import Record

from conftest import MODERATION

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def scorer(tiny: Any) -> Any:
    from steerunc.scoring.scorer import Scorer
    from steerunc.scoring.vectors import Pair, build_vectors

    pairs = [Pair("kind", "I am kind.\nComment: hi", "Comment: hi"), Pair("harsh", "I am harsh.\nComment: hi", "Comment: hi")]
    return Scorer(tiny, build_vectors(tiny, pairs, layer=1))


def frame() -> Any:
    return pd.DataFrame(
        {
            "comment": [MODERATION.format("you are kind"), "", MODERATION.format("idiot"), MODERATION.format("ok")],
            "gold": ["No", "No", "Maybe", np.nan],
            "key": [11, 12, 13, 14],
        },
        index=pd.Index(["w", "x", "y", "z"], name="row"),
    )


def test_one_flat_row_per_input_row_with_the_index_kept(scorer: Any) -> None:
    df = frame()
    out = score_df(scorer, df, text="comment", options=["Yes", "No"], label="gold", id="key")
    assert list(out.index) == ["w", "x", "y", "z"] and out.index.name == "row"
    expected = scorer.score([Record(df.loc[row, "comment"], options=["Yes", "No"]) for row in ("w", "z")])
    for row, result in zip(["w", "z"], expected):  # scored alone, as the rows scored in the frame        assert out.loc[row, "prediction"] == result.prediction
        assert out.loc[row, "prob_Yes"] == pytest.approx(result.probs["Yes"])
        assert out.loc[row, "base_prob_No"] == pytest.approx(result.base_probs["No"])
        for name, value in result.scores.items():
            assert out.loc[row, name] == pytest.approx(value)
        for view in ("kind", "harsh"):
            assert out.loc[row, f"view_{view}_prob_No"] == pytest.approx(result.views[view]["probs"]["No"])
            assert out.loc[row, f"view_{view}_kl"] == pytest.approx(result.views[view]["kl"])
    assert out.loc["w", "id"] == 11 and out.loc["w", "label"] == "No"
    assert out.loc["w", "correct"] == (out.loc["w", "prediction"] == "No")
    assert out.loc["x", "error"] == "'text' is empty" and pd.isna(out.loc["x", "msp"])
    assert "unknown label 'Maybe'" in out.loc["y", "error"]
    assert pd.isna(out.loc["z", "label"]) and pd.isna(out.loc["w", "error"])  # a missing label is no label
    assert list(out.columns)[-1] == "error" and "line" not in out.columns


def test_options_per_row_from_a_column_and_integer_labels(scorer: Any) -> None:
    df = pd.DataFrame({"text": [MODERATION.format("a"), MODERATION.format("b")], "opts": ["1,2", "1,2,3"], "label": [2, 3]})
    out = score_df(scorer, df, options="opts")
    assert {c for c in out.columns if c.startswith("prob_")} == {"prob_1", "prob_2", "prob_3"}
    assert pd.isna(out.loc[0, "prob_3"]) and out.loc[1, "label"] == "3"
    with pytest.raises(InputError, match="not a column of the DataFrame; .* pass a list"):
        score_df(scorer, df, options="Yes,No")
    with pytest.raises(InputError, match="no column 'comment' for the text"):
        score_df(scorer, df, text="comment", options=["Yes", "No"])


def test_scorer_has_a_score_df_method(scorer: Any) -> None:
    df = frame().iloc[:1]
    assert scorer.score_df(df, text="comment", options=["Yes", "No"]).equals(
        score_df(scorer, df, text="comment", options=["Yes", "No"])
    )


def test_read_scored_df_flattens_a_scored_file_the_same_way(scorer: Any, tmp_path: Path) -> None:
    results = scorer.score([Record(MODERATION.format(w), id=w, options=["Yes", "No"], label="No") for w in ("a", "b")])
    path = tmp_path / "scored.jsonl"
    lines = [json.dumps(r.to_json()) for r in results] + ["{broken", json.dumps({"id": "e", "line": 4, "error": "bad"})]
    path.write_text("\n".join(lines) + "\n")
    df = read_scored_df(str(path))
    assert len(df) == 4 and list(df["id"][:2]) == ["a", "b"]
    for i, result in enumerate(results):
        assert df.loc[i, "mutual_info"] == pytest.approx(result.scores["mutual_info"])
        assert df.loc[i, "view_harsh_prob_Yes"] == pytest.approx(result.views["harsh"]["probs"]["Yes"])
    assert df.loc[2, "line"] == 3 and "malformed JSON" in df.loc[2, "error"] and str(path) in df.loc[2, "error"]
    assert df.loc[3, "error"] == "bad"
    if "provenance" in results[0].to_json():  # the run's settings, once for the frame
        assert df.attrs["provenance"] == results[0].to_json()["provenance"]


def test_flatten_names_a_score_that_collides_with_a_column() -> None:
    row = flatten({"id": 1, "prediction": "A", "scores": {"prediction": 0.5, "msp": 0.1}, "truncated": 3, "tokens": [1],
                   "top_view": {"name": "kind", "delta": -0.25}, "provenance": {"model": "m"}})
    assert row == {"id": 1, "prediction": "A", "score_prediction": 0.5, "msp": 0.1, "top_view": "kind",
                   "top_view_delta": -0.25, "truncated": 3}


def test_column_map_fills_fields_from_columns_of_their_name() -> None:
    columns = ColumnMap.resolve(["text", "label", "extra"])
    assert columns.fields() == {"text": "text", "label": "label"}
    assert columns.row({"text": "hi", "label": float("nan"), "extra": 1}) == {"text": "hi"}
    assert columns.row({"text": None, "label": np.int64(2)}) == {"text": "", "label": 2}
    with pytest.raises(InputError, match="no 'text' column"):
        ColumnMap.resolve(["body"])


def test_without_pandas_the_error_says_what_to_install(scorer: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'steerunc\[frames\]'"):
        score_df(scorer, object(), options=["Yes", "No"])  # type: ignore[arg-type]
    (tmp_path / "x.jsonl").write_text("{}\n")
    with pytest.raises(ImportError, match=r"pip install 'steerunc\[frames\]'"):
        read_scored_df(str(tmp_path / "x.jsonl"))
