"""``steerunc vectors check``: do perspectives move the answers the way they say they do?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from steerunc.cli import main
from steerunc.errors import InputError
from steerunc.records import Record
from steerunc.scoring.vectors import SteeringVectors
from steerunc.scoring.vectors_check import (
    FORMAT,
    MIN_RECORDS,
    Expectation,
    ProbeRun,
    check_expected_options,
    check_vectors,
    judge,
    merge_expectations,
    option_stats,
    parse_expect_flags,
    probe_probabilities,
    read_probe,
    summarize,
)

from conftest import MODERATION

TINY = ["--model", "tiny-random", "--device", "cpu"]
COMMENTS = [
    "you are an idiot", "thanks, that helped", "nobody cares about your opinion", "great photo!",
    "people like you ruin everything", "see you at the meetup", "what a stupid question", "lovely work",
    "go back to where you came from", "I disagree, but fair point", "shut up already", "well written",
]


def _records(n: int = len(COMMENTS), options: list[str] | None = None) -> list[Record]:
    return [Record(text=MODERATION.format(c), id=f"p{i}", options=options or ["Yes", "No"], line=i + 1)
            for i, c in enumerate(COMMENTS[:n])]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _probe(tmp_path: Path, **extra: Any) -> Path:
    rows = [{"id": f"p{i}", "text": MODERATION.format(c), "options": ["Yes", "No"], **extra}
            for i, c in enumerate(COMMENTS)]
    return _write(tmp_path / "probe.jsonl", rows)


@pytest.fixture(scope="module")
def favour(tiny: Any, tiny_vectors: Any) -> SteeringVectors:
    """Two perspectives built to favour " Yes" and " No": the difference of the two option
    tokens' rows of the output head, read back into the residual stream."""
    head = tiny.hf_model.get_output_embeddings()
    weight = (getattr(head, "original_component", None) or head).weight.detach().float()
    yes, no = (tiny.tokenizer(f" {w}", add_special_tokens=False)["input_ids"][0] for w in ("Yes", "No"))
    d = weight[yes] - weight[no]
    return SteeringVectors(
        names=["favours_yes", "favours_no"], vectors=torch.stack([d, -d]), layer=tiny.default_layer,
        model_id=tiny.model_id, fingerprint=tiny.fingerprint, resid_norm=tiny_vectors.resid_norm, n_pairs=[1, 1],
    )


# --------------------------------------------------------------------------- pure parts
def test_expect_flags_parse_and_refuse_nonsense() -> None:
    assert parse_expect_flags(["a=Yes", "b = No", "a=Yes"]) == {"a": "Yes", "b": "No"}
    for bad in (["a"], ["=Yes"], ["a="], ["a=Yes", "a=No"]):
        with pytest.raises(InputError):
            parse_expect_flags(bad)


def test_flags_override_files_and_unknown_names_are_refused() -> None:
    got = merge_expectations(["a", "b"], ("pairs.jsonl", {"a": "Yes", "b": "Yes", "other": "No"}), ("flag", {"b": "No"}))
    assert got == {"a": Expectation("a", "Yes", "pairs.jsonl"), "b": Expectation("b", "No", "flag")}
    with pytest.raises(InputError, match="lack: zz"):
        merge_expectations(["a"], ("flag", {"zz": "Yes"}))


def test_an_expected_option_no_probe_record_offers_is_refused() -> None:
    with pytest.raises(InputError, match="no probe record has that option"):
        check_expected_options({"a": Expectation("a", "Maybe", "flag")}, _records(3))


def test_option_stats_mean_interval_and_shares() -> None:
    deltas = np.array([0.1, 0.2, 0.3, -0.1, 0.0, 5.0])
    present = np.array([True] * 5 + [False])
    weights = np.random.default_rng(0).multinomial(6, np.full(6, 1 / 6), size=500).astype(float)
    got = option_stats(deltas, present, weights, 0.9)
    assert got["n"] == 5 and got["mean_change"] == pytest.approx(0.1)
    assert got["low"] <= 0.1 <= got["high"] and got["high"] < 1  # the absent record never counts
    assert got["moved_up"] == pytest.approx(0.6) and got["moved_down"] == pytest.approx(0.2)
    assert 0 < got["sign_p"] <= 1


def _stats(mean: float, low: float, high: float, n: int = 10) -> dict[str, Any]:
    return {"n": n, "mean_change": mean, "low": low, "high": high}


def test_judge_passes_only_when_both_signs_move_the_right_way_beyond_noise() -> None:
    assert judge("Yes", _stats(0.1, 0.05, 0.15), _stats(-0.1, -0.15, -0.05), 0.95) == ("pass", "")
    status, why = judge("Yes", _stats(-0.1, -0.15, -0.05), _stats(0.1, 0.05, 0.15), 0.95)
    assert status == "fail" and "+v lowers P(Yes) instead" in why and "-v raises P(Yes) instead" in why
    status, why = judge("Yes", _stats(0.01, -0.01, 0.03), _stats(-0.1, -0.15, -0.05), 0.95)
    assert status == "fail" and "+v does not raise P(Yes) beyond noise" in why and "-v" not in why
    status, why = judge("Yes", _stats(0.01, 0.005, 0.02), _stats(-0.1, -0.15, -0.05), 0.95, min_change=0.05)
    assert status == "fail" and "less than --min-change" in why
    status, why = judge("Yes", _stats(0.1, 0.05, 0.15, n=MIN_RECORDS - 1), _stats(-0.1, -0.15, -0.05), 0.95)
    assert status == "fail" and f"at least {MIN_RECORDS}" in why


def _run(plus_yes: list[float], minus_yes: list[float]) -> ProbeRun:
    """One perspective 'p' on Yes/No records whose base P(Yes) is 0.5."""
    n = len(plus_yes)
    records = _records(n)
    base = [np.array([0.5, 0.5]) for _ in range(n)]
    plus = [np.array([[p, 1 - p]]) for p in plus_yes]
    minus = [np.array([[p, 1 - p]]) for p in minus_yes]
    return ProbeRun(["p"], records, base, plus, minus, layer=2, coeff=0.1, centered=False)


def test_summary_schema_and_verdicts() -> None:
    run = _run([0.6, 0.7, 0.55, 0.65, 0.6, 0.62], [0.4, 0.3, 0.45, 0.35, 0.4, 0.38])
    out = summarize(run, {"p": Expectation("p", "Yes", "flag")}, n_boot=200)
    assert out["format"] == FORMAT and out["passed"] is True and out["failed"] == []
    assert out["options"] == ["Yes", "No"] and out["n_records"] == 6 and out["n_expectations"] == 1
    assert out["base_mean"] == {"Yes": pytest.approx(0.5), "No": pytest.approx(0.5)}
    (p,) = out["perspectives"]
    assert p["status"] == "pass" and p["expect"] == "Yes" and p["expect_source"] == "flag"
    assert p["plus"]["favours"] == "Yes" and p["minus"]["favours"] == "No"
    yes = p["plus"]["options"]["Yes"]
    assert set(yes) == {"n", "mean_change", "low", "high", "moved_up", "moved_down", "sign_p"}
    assert yes["mean_change"] == pytest.approx(0.12) and yes["moved_up"] == 1.0
    assert p["plus"]["distance"] == pytest.approx(0.12)
    assert out["records"][0] == {"id": "p0", "line": 1, "base": {"Yes": 0.5, "No": 0.5},
                                 "plus": {"p": {"Yes": 0.6, "No": pytest.approx(0.4)}},
                                 "minus": {"p": {"Yes": 0.4, "No": 0.6}}}
    json.dumps(out)  # JSON-ready

    failed = summarize(run, {"p": Expectation("p", "No", "flag")}, n_boot=200)
    assert failed["passed"] is False and failed["failed"] == ["p"]
    assert "+v lowers P(No) instead" in failed["perspectives"][0]["reason"]

    unjudged = summarize(run, {}, n_boot=200)
    assert unjudged["passed"] is True and unjudged["n_expectations"] == 0
    assert unjudged["perspectives"][0]["status"] == "none"


def test_a_perspective_that_moves_nothing_fails() -> None:
    out = summarize(_run([0.5] * 6, [0.5] * 6), {"p": Expectation("p", "Yes", "flag")}, n_boot=200)
    assert out["perspectives"][0]["status"] == "fail" and "beyond noise" in out["perspectives"][0]["reason"]


def test_records_with_different_option_sets_are_counted_per_option() -> None:
    records = [Record(text="a", options=["Yes", "No"], line=1), Record(text="b", options=["No", "Maybe"], line=2)]
    run = ProbeRun(["p"], records, [np.array([0.5, 0.5]), np.array([0.5, 0.5])],
                   [np.array([[0.6, 0.4]]), np.array([[0.3, 0.7]])], [np.array([[0.4, 0.6]]), np.array([[0.7, 0.3]])],
                   layer=0, coeff=0.1, centered=False)
    out = summarize(run, n_boot=100)
    opts = out["perspectives"][0]["plus"]["options"]
    assert out["options"] == ["Yes", "No", "Maybe"]
    assert opts["Yes"]["n"] == 1 and opts["No"]["n"] == 2 and opts["Maybe"]["n"] == 1
    assert opts["No"]["mean_change"] == pytest.approx((-0.1 - 0.2) / 2)


def test_probe_records_without_options_are_refused_clearly(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", [{"text": "a", "options": ["Yes", "No"]}, {"text": "b"}])
    with pytest.raises(InputError, match=r"p.jsonl:2: probe record has no 'options'"):
        read_probe(str(path))
    assert len(read_probe(str(path), ["Yes", "No"])) == 2  # --options fills them in
    path = _write(tmp_path / "c.jsonl", [{"text": "a", "continuation": " b"}])
    with pytest.raises(InputError, match="has a 'continuation'"):
        read_probe(str(path))
    with pytest.raises(InputError, match="no probe records"):
        read_probe(str(_write(tmp_path / "e.jsonl", [])))


# --------------------------------------------------------------------------- on the tiny model
def test_a_vector_built_to_favour_an_option_passes_and_its_negation_fails(tiny: Any, favour: SteeringVectors) -> None:
    records = _records()
    expect = {"favours_yes": Expectation("favours_yes", "Yes", "flag"),
              "favours_no": Expectation("favours_no", "No", "flag")}
    out = check_vectors(tiny, favour, records, expect, n_boot=500)
    assert out["passed"], [p["reason"] for p in out["perspectives"]]
    assert out["centered"] is True
    yes = out["perspectives"][0]
    assert yes["plus"]["favours"] == "Yes" and yes["plus"]["options"]["Yes"]["moved_up"] == 1.0
    # the same vectors, expected the other way round: both fail, and say why
    wrong = {n: Expectation(n, "No" if e.option == "Yes" else "Yes", "flag") for n, e in expect.items()}
    out = check_vectors(tiny, favour, records, wrong, n_boot=500)
    assert out["failed"] == ["favours_yes", "favours_no"]
    assert "+v lowers P(No) instead" in out["perspectives"][0]["reason"]


def test_a_single_negated_vector_fails_uncentred(tiny: Any, favour: SteeringVectors) -> None:
    negated = SteeringVectors(["negated"], -favour.vectors[:1], favour.layer, favour.model_id, favour.fingerprint,
                              favour.resid_norm, [1])
    out = check_vectors(tiny, negated, _records(), {"negated": Expectation("negated", "Yes", "flag")}, n_boot=300)
    assert out["centered"] is False and out["failed"] == ["negated"]


def test_views_match_what_the_scorer_reports(tiny: Any, favour: SteeringVectors) -> None:
    """+v views are the scorer's views at its defaults; -v is the same vector negated."""
    from steerunc.scoring.scorer import Scorer

    records = _records(3)
    run = probe_probabilities(tiny, favour, records)
    scorer = Scorer(tiny, favour)
    for i, record in enumerate(records):
        result = scorer.score_text(record.text, options=record.options)
        assert result.base_probs is not None
        assert [result.base_probs[o] for o in ("Yes", "No")] == pytest.approx(run.base[i].tolist(), abs=1e-5)
        for j, name in enumerate(favour.names):
            assert [result.views[name]["probs"][o] for o in ("Yes", "No")] == pytest.approx(run.plus[i][j].tolist(), abs=1e-5)
    # centred [d, -d]: -v of one perspective is +v of the other
    assert np.allclose(run.minus[0][0], run.plus[0][1], atol=1e-5)


def test_multi_token_options_and_batching_give_the_same_probabilities(tiny: Any, favour: SteeringVectors) -> None:
    records = _records(4, options=["Yes", "Unsure", "No"])  # " Unsure" is several tokens
    one = probe_probabilities(tiny, favour, records, batch_size=1)
    many = probe_probabilities(tiny, favour, records, batch_size=16)
    for a, b in zip(one.plus, many.plus):
        assert a.shape == (2, 3) and np.allclose(a.sum(-1), 1) and np.allclose(a, b, atol=1e-5)


# --------------------------------------------------------------------------- CLI
def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(main, ["vectors", "check", *args], catch_exceptions=False)


def test_cli_exit_codes_and_json(tmp_path: Path, favour: SteeringVectors) -> None:
    vecs = str(tmp_path / "v.safetensors")
    favour.save(vecs)
    probe = str(_probe(tmp_path))
    out = tmp_path / "check.json"
    ok = _invoke([vecs, probe, *TINY, "--expect", "favours_yes=Yes", "--expect", "favours_no=No",
                  "--n-boot", "300", "--json", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "2 of 2 expectations pass" in ok.output
    result = json.loads(out.read_text())
    assert result["format"] == FORMAT and result["vectors"] == vecs and result["model"] == "tiny-random"
    assert [p["status"] for p in result["perspectives"]] == ["pass", "pass"]
    assert len(result["records"]) == len(COMMENTS)

    bad = _invoke([vecs, probe, *TINY, "--expect", "favours_yes=No", "--n-boot", "300", "--json", "-"])
    assert bad.exit_code == 1
    assert "FAIL favours_yes (expects No, from flag): +v lowers P(No) instead" in bad.output.replace("\n", " ")

    none = _invoke([vecs, probe, *TINY, "--n-boot", "300", "-q"])
    assert none.exit_code == 0 and none.output == ""


def test_cli_reads_expectations_from_the_pairs_file_and_stores_them_when_building(tmp_path: Path) -> None:
    pairs = _write(tmp_path / "pairs.jsonl", [
        {"perspective": "strict", "positive": "I am strict.\nComment: hi", "negative": "Comment: hi", "expect": "Yes"},
        {"perspective": "strict", "positive": "I am strict.\nComment: yo", "negative": "Comment: yo"},
        {"perspective": "lenient", "positive": "I am lenient.\nComment: hi", "negative": "Comment: hi", "expect": "No"},
    ])
    vecs = str(tmp_path / "v.safetensors")
    built = CliRunner().invoke(main, ["vectors", "build", str(pairs), "-o", vecs, *TINY, "-q"], catch_exceptions=False)
    assert built.exit_code == 0, built.output
    info = json.loads(CliRunner().invoke(main, ["vectors", "info", vecs]).output)
    assert info["expect"] == {"strict": "Yes", "lenient": "No"}
    out = tmp_path / "c.json"
    res = _invoke([vecs, str(_probe(tmp_path)), *TINY, "--n-boot", "200", "-q", "--json", str(out)])
    assert res.exit_code in (0, 1)  # random weights: either verdict, but a verdict
    got = {p["name"]: (p["expect"], p["expect_source"]) for p in json.loads(out.read_text())["perspectives"]}
    assert got == {"strict": ("Yes", f"{vecs} (stored)"), "lenient": ("No", f"{vecs} (stored)")}
    ignored = _invoke([vecs, str(_probe(tmp_path)), *TINY, "--n-boot", "200", "--ignore-declared", "--json", str(out)])
    assert ignored.exit_code == 0 and json.loads(out.read_text())["n_expectations"] == 0


def test_cli_usage_errors_exit_2_before_the_model_loads(tmp_path: Path, favour: SteeringVectors,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import steerunc.scoring.model

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(steerunc.scoring.model, "load_model", no_model)
    vecs = str(tmp_path / "v.safetensors")
    favour.save(vecs)
    probe = str(_probe(tmp_path))
    no_options = str(_write(tmp_path / "no_opts.jsonl", [{"text": MODERATION.format("hi")}]))
    cases = [
        ([str(tmp_path / "missing.safetensors"), probe], "no such vector file"),
        ([vecs, str(tmp_path / "missing.jsonl")], "no such probe file"),
        ([vecs, no_options], "no_opts.jsonl:1: probe record has no 'options'"),
        ([vecs, probe, "--expect", "nobody=Yes"], "lack: nobody"),
        ([vecs, probe, "--expect", "favours_yes"], "expected NAME=OPTION"),
        ([vecs, probe, "--expect", "favours_yes=Maybe"], "no probe record has that option"),
        ([vecs, probe, "--layer", "0"], "built at layer"),
        ([vecs, probe, "--pairs", str(tmp_path / "nope.jsonl")], "no such pairs file"),
        ([vecs, probe, "--options", "Yes"], "at least two distinct options"),
        ([str(probe), probe], "not a steerunc vector file"),
    ]
    for args, message in cases:
        res = _invoke([*args, *TINY])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output.replace("\n", " "), (args, res.output)


def test_cli_vectors_for_another_model_exit_2(tmp_path: Path, favour: SteeringVectors) -> None:
    other = SteeringVectors(favour.names, favour.vectors, favour.layer, "someone-else", "0" * 16,
                            favour.resid_norm, favour.n_pairs)
    vecs = str(tmp_path / "other.safetensors")
    other.save(vecs)
    res = _invoke([vecs, str(_probe(tmp_path)), *TINY, "--expect", "favours_yes=Yes"])
    assert res.exit_code == 2 and "built for model 'someone-else'" in res.output


def test_cli_checks_the_shipped_set_with_its_declared_expectations(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    res = _invoke(["default", str(_probe(tmp_path)), *TINY, "--n-boot", "200", "-q", "--json", str(out)])
    assert res.exit_code in (0, 1)  # random weights: the verdict means nothing, its presence does
    result = json.loads(out.read_text())
    declared = {p["name"]: p["expect"] for p in result["perspectives"] if p["expect"]}
    assert declared == {"strict_moderator": "Yes", "free_speech_advocate": "No",
                        "targeted_group_member": "Yes"}
    assert res.exit_code == (0 if result["passed"] else 1)
