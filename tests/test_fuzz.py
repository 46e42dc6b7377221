"""Fuzzing the command line as an adversarial user would, bounded in time.

``steerunc score``: whatever the mix of lines, every non-blank input line yields
exactly one output record, in order, numbered by its physical line. The
judging commands, on damaged scored files, calibrators and policies: a correct
result or a clear one-line error, never a traceback. A fixed corpus holds one
line of every category found so far, among valid ones, and is scored by the
tiny model; hypothesis mixes those lines with random lines and records (there
the forward pass gives random hidden states: what happens to a line does not
depend on it, and a forward pass costs a second on a busy CPU) and damages
scored files, calibrators and policies. Many lines are scored per command, so
the whole module stays within seconds.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scored_fixtures import make_records, write_jsonl

from steerunc.cli import main

from conftest import MODERATION

#: no example database (nothing written into the checkout); a failure prints how to reproduce it
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True, database=None)
#: the longest line read during these tests (the real limit is 32 MiB; the check is the same)
LINE_LIMIT = 64 * 1024


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def setup(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The session's tiny model for every load, two perspectives, and a smaller line limit."""
    import steerunc.io
    import steerunc.scoring.model
    from steerunc.scoring.vectors import Pair, build_vectors

    d = tmp_path_factory.mktemp("fuzz")
    pairs = [Pair("kind", "I am kind.\nComment: hi", "Comment: hi"), Pair("harsh", "I am harsh.\nComment: hi", "Comment: hi")]
    vectors = d / "two.safetensors"
    build_vectors(tiny, pairs, layer=1).save(str(vectors))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(steerunc.scoring.model, "load_model", lambda name, device="auto", dtype="auto": tiny)
        patch.setattr(steerunc.io, "MAX_LINE_BYTES", LINE_LIMIT)
        yield {"dir": d, "vectors": str(vectors), "n": 0}


def _good(i: int) -> bytes:
    return json.dumps({"id": f"ok{i}", "text": MODERATION.format(f"comment {i}"), "options": ["Yes", "No"]}).encode()


def _rec(**fields: Any) -> bytes:
    return json.dumps({"id": "x", "text": "Comment: hi\nAnswer:", **fields}).encode()


#: one line of every category, and whether it is scored (True) or an error record (False); None: blank
CORPUS: list[tuple[str, bytes, bool | None]] = [
    ("options", _rec(options=["Yes", "No"]), True),
    ("options-comma-string", _rec(options="Yes, No"), True),
    ("continuation", _rec(continuation=" fine, thanks"), True),
    ("next-token", _rec(), True),
    ("options-and-continuation", _rec(options=["Yes", "No"], continuation=" Yes"), True),
    ("label", _rec(options=["Yes", "No"], label="No"), True),
    ("integer-label", _rec(options=["1", "2"], label=2), True),
    ("human-probs", _rec(options=["Yes", "No"], human_probs={"Yes": 0.25, "No": 0.75}), True),
    ("group", _rec(options=["Yes", "No"], group="question 7"), True),
    ("integer-group", _rec(options=["Yes", "No"], group=7), True),
    ("integer-id", json.dumps({"id": 12, "text": "Answer:", "options": ["Yes", "No"]}).encode(), True),
    ("no-id", json.dumps({"text": "Answer:", "options": ["Yes", "No"]}).encode(), True),
    ("unused-nan", b'{"id": "x", "text": "Answer:", "x": NaN, "y": -Infinity}', True),
    ("duplicate-keys", b'{"id": "x", "text": 1, "text": "Answer:"}', True),
    ("astral", _rec(text="Comment: \U0001f600 ok\nAnswer:", options=["Yes", "No"]), True),
    ("control-chars", _rec(text="Comment: \x00\x07\x1b[31m\u202e\nAnswer:", options=["Yes", "No"]), True),
    ("crlf", _rec(options=["Yes", "No"]) + b"\r", True),
    ("huge-text", _rec(text="blah " * 8000 + "\nAnswer:", options=["Yes", "No"]), True),
    ("blank", b"", None),
    ("whitespace", b" \t \r", None),
    ("malformed-json", b'{"id": "x", "text": ', False),
    ("not-utf8", b'{"id": "x", "text": "caf\xe9"}', False),
    ("encoded-surrogate", b'{"id": "x", "text": "\xed\xa0\x80"}', False),
    ("json-array", b"[1, 2]", False),
    ("json-string", b'"text"', False),
    ("json-null", b"null", False),
    ("missing-text", json.dumps({"id": "x", "options": ["Yes", "No"]}).encode(), False),
    ("empty-text", _rec(text="  \n\t"), False),
    ("text-number", _rec(text=12), False),
    ("text-list", _rec(text=["a"]), False),
    ("unknown-label", _rec(options=["Yes", "No"], label="Maybe"), False),
    ("label-without-options", _rec(label="Yes"), False),
    ("label-bool", _rec(options=["Yes", "No"], label=True), False),
    ("one-option", _rec(options=["Yes"]), False),
    ("duplicate-options", _rec(options=["Yes", "Yes"]), False),
    ("options-number", _rec(options=3), False),
    ("options-empty-string", _rec(options=["Yes", ""]), False),
    ("options-nested", _rec(options=[["Yes"], "No"]), False),
    ("too-many-options", _rec(options=[f"o{i}" for i in range(300)]), False),
    ("empty-continuation", _rec(continuation=""), False),
    ("continuation-number", _rec(continuation=5), False),
    ("long-option", _rec(options=["Yes", "No " * 5000]), False),
    ("long-continuation", _rec(continuation=" word" * 5000), False),
    ("deep-array", b'{"id": "x", "text": "x", "a": ' + b"[" * 5000 + b"]" * 5000 + b"}", False),
    ("deep-object", b'{"id": "x", "text": "x", "a": ' + b'{"a": ' * 2000 + b"0" + b"}" * 2001, False),
    ("just-too-deep", b'{"id": "x", "text": "x", "a": ' + b"[" * 64 + b"]" * 64 + b"}", False),
    ("surrogate-text", b'{"id": "x", "text": "a\\ud800b"}', False),
    ("surrogate-option", b'{"id": "x", "text": "a", "options": ["Yes", "\\uDBFF"]}', False),
    ("surrogate-continuation", b'{"id": "x", "text": "a", "continuation": "\\udc00"}', False),
    ("surrogate-id", b'{"id": "\\ud800", "text": "a"}', False),
    ("surrogate-key", b'{"id": "x", "\\udfff": 1, "text": "a"}', False),
    ("surrogate-label", b'{"id": "x", "text": "a", "options": ["Yes", "No"], "label": "\\ud800"}', False),
    ("human-string", _rec(options=["Yes", "No"], human_probs={"Yes": "abc"}), False),
    ("group-list", _rec(options=["Yes", "No"], group=["a"]), False),
    ("group-empty", _rec(options=["Yes", "No"], group=""), False),
    ("group-true", _rec(options=["Yes", "No"], group=True), False),
    ("human-null", _rec(options=["Yes", "No"], human_probs={"Yes": None}), False),
    ("human-list", _rec(options=["Yes", "No"], human_probs={"Yes": [1]}), False),
    ("human-infinity", _rec(options=["Yes", "No"], human_probs={"Yes": math.inf}), False),
    ("human-negative", _rec(options=["Yes", "No"], human_probs={"Yes": -0.1, "No": 1.1}), False),
    ("human-not-object", _rec(options=["Yes", "No"], human_probs=[0.5, 0.5]), False),
    ("human-unknown-option", _rec(options=["Yes", "No"], human_probs={"Maybe": 1.0}), False),
    ("human-without-options", _rec(human_probs={"Yes": 1.0}), False),
    ("id-bool", json.dumps({"id": True, "text": "a"}).encode(), False),
    ("id-float", json.dumps({"id": 1.5, "text": "a"}).encode(), False),
    ("id-list", json.dumps({"id": [1], "text": "a"}).encode(), False),
    ("id-object", json.dumps({"id": {"a": 1}, "text": "a"}).encode(), False),
    ("huge-integer", b'{"id": "x", "text": "a", "n": ' + b"7" * 5000 + b"}", False),
    ("over-the-line-limit", _rec(text="x" * (LINE_LIMIT + 10)), False),
]


def _expected_lines(data: bytes) -> list[int]:
    """The physical numbers of the non-blank lines (a byte order mark before the first is skipped)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return [n for n, raw in enumerate(data.split(b"\n"), start=1) if raw.strip()]


def _score(setup: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """Score ``data`` as a file; check one record per non-blank line, in order, and return them."""
    setup["n"] += 1
    path = setup["dir"] / f"in{setup['n']}.jsonl"
    path.write_bytes(data)
    # one forward pass for the whole file, over at most 48 tokens a row
    fast = ["--batch-size", "4096", "--max-tokens", "48"]
    result = run("score", path, "--vectors", setup["vectors"], "--model", "tiny-random", "-q", *fast)
    out = [json.loads(line) for line in result.stdout.split("\n") if line]  # not splitlines: U+2028 in a record
    expected = _expected_lines(data)
    assert [r["line"] for r in out] == expected, result.stderr
    assert result.exit_code == (1 if any("error" in r for r in out) else 0), result.stderr
    for record in out:
        assert ("error" in record) != ("scores" in record), record
    return out


def test_a_fixed_corpus_of_every_category_among_valid_lines(setup: dict[str, Any]) -> None:
    lines: list[bytes] = []
    expected: list[tuple[str, bool]] = []
    for i, (name, line, scored) in enumerate(CORPUS):
        if i % 4 == 0:
            lines.append(_good(i))
            expected.append(("good", True))
        lines.append(line)
        expected += [(name, scored)] if scored is not None else []
    lines.append(_good(len(CORPUS)))
    expected.append(("good", True))
    data = b"\xef\xbb\xbf" + b"\n".join(lines)  # a byte order mark, and no line end after the last line
    out = _score(setup, data)
    assert len(out) == len(expected)
    wrong = [(name, record) for (name, scored), record in zip(expected, out) if scored != ("scores" in record)]
    assert not wrong, wrong
    assert all("scores" in r for r in out if str(r.get("id", "")).startswith("ok"))
    groups = [r.get("group") for (name, _), r in zip(expected, out) if name in ("group", "integer-group")]
    assert groups == ["question 7", "7"]  # carried into the scored record, as a string


_SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
_TEXT = st.one_of(st.text(max_size=12), st.builds(lambda a, s, b: a + s + b, st.text(max_size=4), _SURROGATES, st.text(max_size=4)))
_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20), st.floats(), _TEXT,
    st.sampled_from(["Yes", "No", "Answer:", ""]),
)
_JSON = st.recursive(
    _SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=6
)
_RECORD = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=6), st.integers(), _JSON),
        "text": st.one_of(st.sampled_from(["Comment: hi\nAnswer:", "Answer:"]), _TEXT, _JSON),
        "options": st.one_of(st.just(["Yes", "No"]), st.lists(st.sampled_from(["Yes", "No", "Maybe", ""]), max_size=4), _JSON),
        "label": st.one_of(st.sampled_from(["Yes", "No", "Maybe"]), _JSON),
        "continuation": st.one_of(st.just(" ok"), _JSON),
        "human_probs": st.one_of(st.just({"Yes": 0.5, "No": 0.5}), st.dictionaries(st.sampled_from(["Yes", "No"]), _SCALAR), _JSON),
        "extra": _JSON,
    },
)


def _encode(record: dict[str, Any], ascii_only: bool) -> bytes:
    text = json.dumps(record, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")  # a raw surrogate becomes bytes that are not UTF-8


_LINE = st.one_of(
    st.sampled_from([line for _, line, _ in CORPUS]),
    st.builds(_encode, _RECORD, st.booleans()),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    st.integers(min_value=1, max_value=300).map(lambda n: b'{"text": "x", "a": ' + b"[" * n + b"]" * n + b"}"),
    st.sampled_from([b"", b"  ", b"\t\r", b"\r"]),
)


@pytest.fixture(scope="module")
def random_forward(setup: dict[str, Any]) -> Iterator[None]:
    """The forward pass gives random hidden states of the right shape; everything else runs."""
    import torch

    import steerunc.scoring.scorer

    def hidden(model: Any, batch: Any, steer: Any, layer: int, start: int = 0) -> Any:
        rows, n_read = batch.positions.shape
        shape = (rows, steer.shape[0] + 1, n_read, model.d_model)
        return torch.randn(shape, generator=torch.Generator().manual_seed(rows)).to(model.device)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(steerunc.scoring.scorer, "steered_hidden", hidden)
        yield


@settings(FUZZ, max_examples=40)
@given(lines=st.lists(_LINE, min_size=1, max_size=30), bom=st.booleans(), end=st.sampled_from([b"", b"\n", b"\r\n"]))
def test_every_non_blank_line_yields_one_record_in_order(
    setup: dict[str, Any], random_forward: None, lines: list[bytes], bom: bool, end: bytes
) -> None:
    data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + end
    out = _score(setup, data)
    event("some line scored" if any("scores" in r for r in out) else "no line scored")


# -- the judging commands -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Scored records, a calibrator of each method fitted on other records, and a policy."""
    d = tmp_path_factory.mktemp("judged")
    cal = write_jsonl(d / "cal.jsonl", make_records(150, seed=11))
    calibrators = {}
    for method in ("isotonic", "histogram", "platt", "beta", "temperature"):
        result = run("calibrate", cal, "-m", method, *([] if method == "temperature" else ["-s", "mutual_info"]))
        assert result.exit_code == 0, result.stderr
        calibrators[method] = json.loads(result.stdout)
    (d / "iso.json").write_text(json.dumps(calibrators["isotonic"]))
    threshold = write_jsonl(d / "threshold.jsonl", make_records(150, seed=12))
    made = run(
        "triage", threshold, "-c", d / "iso.json", "--max-risk", "0.45", "--policy-out", d / "policy.json",
        "--accept-out", d / "a.jsonl", "--review-out", d / "r.jsonl",
    )
    assert made.exit_code == 0, made.stderr
    records = make_records(40, seed=13, unlabelled=2, errors=2, continuation=2, human=5)
    return {
        "dir": d, "records": records, "calibrators": calibrators, "n": 0,
        "policy": json.loads((d / "policy.json").read_text()),
    }


_JUNK = st.one_of(
    _SCALAR, _JSON, st.sampled_from([math.nan, math.inf, -math.inf, [], {}, "mutual_info", ["isotonic"], {"Yes": "x"}])
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        out.append(prefix + (key,))
        out += _paths(child, prefix + (key,))
    return out


def _damage(data: Any, draw: st.DrawFn) -> Any:
    """Replace (or delete) the value at one random path of ``data``, in place; returns ``data``."""
    paths = _paths(data)
    if not paths:
        return draw(_JUNK)
    path = draw(st.sampled_from(paths))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.integers(0, 4)) == 0:
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(_JUNK)
    return data


@st.composite
def _damaged(draw: st.DrawFn, judged: dict[str, Any]) -> tuple[list[bytes], dict[str, Any], dict[str, Any], str]:
    records = copy.deepcopy(judged["records"])
    lines = [json.dumps(r).encode() for r in records]
    raw: set[int] = set()  # lines replaced by bytes that need not be JSON: damaged no further as JSON
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(records) - 1))
        if i in raw or draw(st.integers(0, 5)) == 0:
            lines[i] = draw(_LINE)  # any line of the scoring corpus, or random bytes
            raw.add(i)
        else:
            lines[i] = json.dumps(_damage(json.loads(lines[i]), draw)).encode()
    method = draw(st.sampled_from(sorted(judged["calibrators"])))
    calibrator = copy.deepcopy(judged["calibrators"][method])
    if draw(st.booleans()):
        calibrator = _damage(calibrator, draw)
    policy = copy.deepcopy(judged["policy"])
    if draw(st.booleans()):
        policy = _damage(policy, draw)
    score = draw(st.sampled_from(["mutual_info", "msp", "entropy", "fused_confidence", "base_confidence"]))
    return lines, calibrator, policy, score


def _clean(result: Result) -> None:
    """A correct run, or a clear error: exit 1 or 2 with one line of message."""
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.stderr)
    if result.exit_code:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_judging_damaged_files_gives_a_result_or_one_line_of_error(judged: dict[str, Any], data: st.DataObject) -> None:
    lines, calibrator, policy, score = data.draw(_damaged(judged))
    judged["n"] += 1
    d: Path = judged["dir"] / f"case{judged['n']}"
    d.mkdir()
    scored, cal, pol = d / "scored.jsonl", d / "cal.json", d / "policy.json"
    scored.write_bytes(b"\n".join(lines) + b"\n")
    cal.write_text(json.dumps(calibrator))
    pol.write_text(json.dumps(policy))
    n_lines = len(_expected_lines(scored.read_bytes()))

    fitted = run("calibrate", scored, "-s", score, "-m", "isotonic", "-o", d / "fitted.json")
    _clean(fitted)
    event(f"calibrate exit {fitted.exit_code}")
    if fitted.exit_code == 0:
        from steerunc.judging.calibration import load_calibrator

        assert load_calibrator(str(d / "fitted.json")).predict([0.1]).shape == (1,)
    _clean(run("evaluate", scored, "-c", cal, "--bootstrap", "0", "--no-smooth"))
    for args in (
        ["-c", cal, "--budget", "0.3"],
        ["--policy", pol, "--policy-out", d / "again.json"],
    ):
        accept, review = d / "accept.jsonl", d / "review.jsonl"
        result = run("triage", scored, *args, "--accept-out", accept, "--review-out", review)
        _clean(result)
        event(f"triage {args[0]} exit {result.exit_code}")
        if result.exit_code == 0:
            # split on "\n" only: a record may hold U+2028 or \x85, which str.splitlines also splits on
            routed = [ln for path in (accept, review) for ln in path.read_text(encoding="utf-8").split("\n") if ln]
            assert len(routed) == n_lines and all("triage" in json.loads(line) for line in routed)
            accept.unlink()
            review.unlink()
        else:
            assert not accept.exists() and not review.exists()
