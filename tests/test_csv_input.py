"""``steerunc score`` on CSV and Parquet: every row yields a record or an error with its line, and a
file of the wrong format, or without the columns named, is refused before the model loads."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from steerunc.cli import main
from steerunc.tables import format_of, read_csv, sniff_format

from conftest import MODERATION

TINY = ["--model", "tiny-random", "--device", "cpu", "-q"]


def run(*args: Any, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin, catch_exceptions=False)


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def comment(i: int) -> str:
    return MODERATION.format(f"comment, number {i}")  # a comma and line ends inside a quoted field


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# -- reading ---------------------------------------------------------------------------------------


def test_rows_are_numbered_by_the_physical_line_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(
        b'id,comment\n1,"two\nlines"\n\n2,plain\n3,caf\xe9\n4,one,too many\n5\n6,"last"\n'
    )
    header, rows = read_csv(str(path))
    got = [(r.number, r.data, r.error) for r in rows]
    assert header == ["id", "comment"]
    assert got[0] == (2, {"id": "1", "comment": "two\nlines"}, None)
    assert got[1] == (5, {"id": "2", "comment": "plain"}, None)  # line 4 is blank
    assert got[2][0] == 6 and "not UTF-8" in got[2][2]
    assert got[3][0] == 7 and "expected 2 fields" in got[3][2] and "got 3" in got[3][2]
    assert got[4][0] == 8 and "got 1" in got[4][2]
    assert got[5] == (9, {"id": "6", "comment": "last"}, None)


#: the shape of a Parquet file, as the sniffer reads it: magic, a footer of 4 bytes, its length, magic
_PARQUET_SHAPE = b"PAR1" + b"\x00" * 4 + (4).to_bytes(4, "little") + b"PAR1"


def test_format_from_the_suffix_and_from_the_first_bytes(tmp_path: Path) -> None:
    assert [format_of(p) for p in ("a.csv", "a.parquet", "a.jsonl", "a.txt", "-")] == ["csv", "parquet", "jsonl", "jsonl", "jsonl"]
    cases = {
        b'{"id": 1, "text": "x"}\n': "jsonl",
        b"id,text\n1,hello\n": "csv",  # names the text column
        b"text\nhello\n": "csv",  # one column, the texts
        b"id,comment,gold\n1,\"a\nb\",No\n": "csv",  # a second row of as many fields (spanning two lines)
        _PARQUET_SHAPE: "parquet",
        b"PAR1\x00\x00": None,  # the magic, but not a Parquet file's end
        b"PAR1 then text\n" + b'{"text": "x"}\n' + b"PAR1": None,  # a JSONL file whose first line starts so
        b"PAR1" + b"\x00" * 20 + b"PAR1": None,  # a footer of no bytes
        b"[1, 2]\n": None,  # JSON, not an object: error records, not another format
        b"hello world\n{\"text\": 1}\n": None,
        b"a,b\n{\"text\": \"x\"}\n": None,
    }
    for i, (data, expected) in enumerate(cases.items()):
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        assert sniff_format(str(path)) == expected, data


def test_random_bytes_are_almost_never_taken_for_csv(tmp_path: Path) -> None:
    """A damaged JSONL file must still yield its error records: refusing it as CSV is only for a file that
    plainly is CSV. Two lines of random printable text with commas seldom are."""
    rng = random.Random(0)
    path = tmp_path / "x.jsonl"
    taken = 0
    for _ in range(300):
        lines = [bytes(rng.choice(b"ab,\"{ 1\t") for _ in range(rng.randint(0, 12))) for _ in range(2)]
        path.write_bytes(b"\n".join(lines))
        taken += sniff_format(str(path)) == "csv"
        path.write_bytes(bytes(rng.randrange(256) for _ in range(40)))
        assert sniff_format(str(path)) in (None, "jsonl")
    assert taken < 300 * 0.2


# -- scoring ---------------------------------------------------------------------------------------


def test_every_csv_row_yields_a_record_or_an_error_with_its_line(tmp_path: Path, loads: list[str]) -> None:
    path = tmp_path / "data.csv"
    write_csv(path, ["id", "comment", "gold"], [["a", comment(1), "Yes"], ["b", "", "No"], ["c", comment(3), "Maybe"]])
    with open(path, "ab") as handle:
        handle.write(b"\nd,bad\xff,No\ne,short\nf,\"" + comment(6).replace('"', '""').encode() + b"\",No\n")
    result = run("score", path, "--text-col", "comment", "--label-col", "gold", "--id-col", "id", "--options", "Yes,No", *TINY)
    assert result.exit_code == 1, result.stderr
    out = records(result.stdout)
    _, rows = read_csv(str(path))
    assert [r["line"] for r in out] == [row.number for row in rows]  # one output line per row, in order
    first, empty, unknown, not_utf8, short, last = out
    assert first["id"] == "a" and first["label"] == "Yes" and set(first["probs"]) == {"Yes", "No"}
    assert first["correct"] == (first["prediction"] == "Yes")
    assert empty["id"] == "b" and "'text' is empty" in empty["error"]
    assert unknown["id"] == "c" and "unknown label 'Maybe'" in unknown["error"]
    assert "not UTF-8" in not_utf8["error"] and "expected 3 fields" in short["error"]
    assert last["id"] == "f" and "scores" in last
    assert first["line"] == 2 and empty["line"] == 5  # the header is line 1; a text spans 3 lines


def test_default_columns_and_stdin(tmp_path: Path, loads: list[str]) -> None:
    data = "text,label\n" + "\n".join(f'"{comment(i).replace(chr(34), chr(34) * 2)}",No' for i in range(2)) + "\n"
    result = run("score", "-", "--format", "csv", "--options", "Yes,No", *TINY, stdin=data.encode())
    assert result.exit_code == 0, result.stderr
    out = records(result.stdout)
    assert [r["line"] for r in out] == [2, 5] and all(r["label"] == "No" for r in out)


def test_parquet_in(tmp_path: Path, loads: list[str]) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "data.parquet"
    pd.DataFrame({"key": [7, 8, 9], "body": [comment(1), None, comment(3)], "gold": ["No", "No", "Yes"]}).to_parquet(path)
    result = run("score", path, "--text-col", "body", "--label-col", "gold", "--id-col", "key", "--options", "Yes,No", *TINY)
    assert result.exit_code == 1, result.stderr
    out = records(result.stdout)
    assert [r["line"] for r in out] == [1, 2, 3] and [r["id"] for r in out] == [7, 8, 9]
    assert "scores" in out[0] and "error" in out[1] and out[2]["label"] == "Yes"


def test_json_lines_can_name_their_fields_too(tmp_path: Path, loads: list[str]) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"key": "k1", "body": comment(1), "gold": "No", "options": ["Yes", "No"]}) + "\n")
    result = run("score", path, "--text-col", "body", "--label-col", "gold", "--id-col", "key", *TINY)
    assert result.exit_code == 0, result.stderr
    (record,) = records(result.stdout)
    assert record["id"] == "k1" and record["label"] == "No"


# -- refused before the model loads ----------------------------------------------------------------


def test_a_csv_given_as_jsonl_is_refused_before_the_model_loads(tmp_path: Path, loads: list[str]) -> None:
    path = write_csv(tmp_path / "data.jsonl", ["id", "comment"], [["a", comment(1)], ["b", comment(2)]])
    result = run("score", path, *TINY)
    assert result.exit_code == 2 and result.stdout == ""
    assert "--format csv" in result.stderr and str(path) in result.stderr
    assert loads == []
    fine = run("score", path, "--format", "csv", "--text-col", "comment", "--options", "Yes,No", *TINY)
    assert fine.exit_code == 0 and len(records(fine.stdout)) == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--text-col", "body"], "no column 'body' for the text"),
        (["--text-col", "comment", "--label-col", "gold"], "no column 'gold' for the label"),
        (["--text-col", "comment", "--id-col", "key"], "no column 'key' for the id"),
        ([], "no 'text' column"),
        (["--format", "parquet"], "not Parquet: it looks like CSV"),
    ],
)
def test_a_missing_column_or_wrong_format_exits_2_before_the_model_loads(
    tmp_path: Path, loads: list[str], args: list[str], message: str
) -> None:
    path = write_csv(tmp_path / "data.csv", ["id", "comment"], [["a", comment(1)]])
    result = run("score", path, *args, *TINY)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and str(path) in result.stderr
    assert loads == []


def test_jsonl_given_as_csv_and_parquet_given_as_jsonl(tmp_path: Path, loads: list[str]) -> None:
    jsonl = tmp_path / "data.csv"
    jsonl.write_text(json.dumps({"id": "a", "text": comment(1)}) + "\n")
    result = run("score", jsonl, *TINY)
    assert result.exit_code == 2 and "--format jsonl" in result.stderr
    parquet = tmp_path / "data.jsonl"
    parquet.write_bytes(_PARQUET_SHAPE)
    result = run("score", parquet, *TINY)
    assert result.exit_code == 2 and "--format parquet" in result.stderr
    stdin_parquet = run("score", "-", "--format", "parquet", *TINY, stdin=b"")
    assert stdin_parquet.exit_code == 2 and "stdin" in stdin_parquet.stderr
    assert loads == []


def test_a_jsonl_line_starting_with_the_parquet_magic_loses_nothing(tmp_path: Path) -> None:
    """Found by the fuzz test: a first line starting with ``PAR1`` had the whole file refused as Parquet."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"PAR1 not a record\n" + json.dumps({"id": "a", "text": comment(1)}).encode() + b"\n")
    result = run("score", path, *TINY)
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in out] == [1, 2] and "error" in out[0] and "scores" in out[1], result.stderr


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loads: list[str]) -> None:
    import sys

    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 20 + b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    result = run("score", path, *TINY)
    assert result.exit_code == 2 and "pip install 'steerunc[frames]'" in result.stderr
    assert loads == []


def test_resume_a_csv_run(tmp_path: Path, loads: list[str]) -> None:
    path = write_csv(tmp_path / "data.csv", ["id", "text"], [[f"r{i}", comment(i)] for i in range(4)])
    out = tmp_path / "out.jsonl"
    assert run("score", path, "-o", out, "--options", "Yes,No", *TINY).exit_code == 0
    complete = out.read_text().splitlines()
    out.write_text("\n".join(complete[:2]) + "\n")
    resumed = run("score", path, "-o", out, "--options", "Yes,No", "--resume", *TINY)
    assert resumed.exit_code == 0, resumed.stderr
    assert [r["id"] for r in records(out.read_text())] == ["r0", "r1", "r2", "r3"]


# -- a prompt template around raw texts ------------------------------------------------------------


TEMPLATE_ARG = 'Comment: "{text}"\\nIs this comment offensive? Answer Yes or No.\\nAnswer:'  # as typed on a shell


def test_a_template_wraps_raw_comments_as_the_prompt_would(tmp_path: Path, loads: list[str]) -> None:
    """A CSV of bare comments with --template scores exactly as the same prompts written out in full."""
    bare = ["comment, number 1", 'a {brace} and "quotes"', "comment, number 3"]
    path = write_csv(tmp_path / "raw.csv", ["id", "comment", "gold"], [[f"r{i}", c, "No"] for i, c in enumerate(bare)])
    full = tmp_path / "full.jsonl"
    full.write_text("".join(json.dumps({"id": f"r{i}", "text": MODERATION.format(c), "label": "No"}) + "\n"
                            for i, c in enumerate(bare)))
    wrapped = run("score", path, "--text-col", "comment", "--label-col", "gold", "--template", TEMPLATE_ARG,
                  "--options", "Yes,No", *TINY)
    written = run("score", full, "--options", "Yes,No", *TINY)
    plain = run("score", path, "--text-col", "comment", "--label-col", "gold", "--options", "Yes,No", *TINY)
    assert wrapped.exit_code == written.exit_code == plain.exit_code == 0, wrapped.stderr + written.stderr
    ours, theirs, bare_out = records(wrapped.stdout), records(written.stdout), records(plain.stdout)
    assert [r["id"] for r in ours] == ["r0", "r1", "r2"]
    for a, b, c in zip(ours, theirs, bare_out):
        assert a["base_probs"] == pytest.approx(b["base_probs"], abs=1e-6)
        assert a["scores"] == pytest.approx(b["scores"], rel=1e-4, abs=1e-6)
        assert a["base_probs"] != pytest.approx(c["base_probs"], abs=1e-6)  # the template changed what was read


@pytest.mark.parametrize("template", ["Comment: no slot. Answer:", "{text} and {text}"])
def test_a_template_without_one_text_slot_exits_2_before_the_model_loads(
    tmp_path: Path, loads: list[str], template: str
) -> None:
    path = write_csv(tmp_path / "raw.csv", ["text"], [["hello"]])
    result = run("score", path, "--template", template, "--options", "Yes,No", *TINY)
    assert result.exit_code == 2 and "{text} exactly once" in result.stderr and loads == []


def test_score_df_takes_the_same_template(tiny: Any, two: Any) -> None:
    pd = pytest.importorskip("pandas")
    from steerunc.scoring.scorer import Scorer

    scorer = Scorer(tiny, two)
    df = pd.DataFrame({"comment": ["comment, number 1", "comment, number 2"]})
    template = TEMPLATE_ARG.replace("\\n", "\n")
    wrapped = scorer.score_df(df, text="comment", template=template, options=["Yes", "No"])
    spelled = scorer.score_df(pd.DataFrame({"text": [MODERATION.format(c) for c in df.comment]}), options=["Yes", "No"])
    assert list(wrapped["base_prob_Yes"]) == pytest.approx(list(spelled["base_prob_Yes"]), abs=1e-6)
    with pytest.raises(ValueError, match="exactly once"):
        scorer.score_df(df, text="comment", template="no slot", options=["Yes", "No"])
