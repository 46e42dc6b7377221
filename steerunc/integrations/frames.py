"""Tables in, tables out: score a pandas DataFrame, read a scored file as one.

:class:`ColumnMap` says which column holds which record field; it turns a row
of a DataFrame, a CSV or a Parquet file into the input of
:func:`steerunc.records.record_from_json`, the one place a record is
validated. :func:`flatten` turns a scored (or error) record into one flat row:

=============================== ==================================================
column                          what
=============================== ==================================================
``id``, ``line``, ``mode``      as in the record (where present)
``prediction``, ``prob_<o>``    the fused prediction and its probability per option
``base_prediction``,            the plain model's
``base_prob_<o>``
``label``, ``correct``,         where labelled
``base_correct``
``<score>``                     every score (``msp``, ``mutual_info``, ...; ``score_<name>``
                                where a name is taken by another column)
``view_<v>_prob_<o>``,          each view's probability per option, its KL to the
``view_<v>_kl``                 others' mixture (``view_<v>_logprob`` for continuations)
``human_prob_<o>``              annotators' distribution, where given
``top_view``, ``top_view_delta`` the view that moved P(base prediction) most, and by how much
other scalars                   ``truncated``, ...: copied (``provenance``, the same for a whole run,
                                goes to ``DataFrame.attrs["provenance"]``)
``error``                       the error of a row that could not be scored (else empty)
=============================== ==================================================

pandas is imported only by :func:`score_df` and :func:`read_scored_df`
(``pip install 'steerunc[frames]'``); the rest needs nothing beyond the standard library.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steerunc.errors import InputError
from steerunc.io import Line, read_jsonl
from steerunc.tables import read_csv, read_parquet
from steerunc.records import ErrorRecord, Record, check_template, record_from_json

if TYPE_CHECKING:
    import pandas as pd

    from steerunc.scoring.scorer import Scorer

__all__ = ["RECORD_FIELDS", "ColumnMap", "flatten", "read_input", "read_scored_df", "score_df"]

#: the record fields a column can hold
RECORD_FIELDS = ("text", "id", "label", "options", "continuation", "human_probs")
#: columns whose names never hold a score (a score of such a name becomes ``score_<name>``)
_FIXED = ("id", "line", "mode", "prediction", "base_prediction", "label", "correct", "base_correct", "error")
_INSTALL = "pip install 'steerunc[frames]'"


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(f"DataFrames need pandas: {_INSTALL}") from None
    return pandas


def _value(value: Any) -> Any:
    """A cell as a JSON-like value: numpy scalars as Python ones; None, NaN, NA and '' as None;
    an integral float (pandas' integers with gaps) as an int."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # an array cell (options as a list in Parquet or pandas)
    if value is None or (isinstance(value, str) and value == ""):
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


@dataclass(frozen=True)
class ColumnMap:
    """Which column holds which record field (None: no such column).

    >>> columns = ColumnMap.resolve(["comment", "gold", "id"], text="comment", label="gold")
    >>> columns
    ColumnMap(text='comment', id='id', label='gold', options=None, continuation=None, human_probs=None)
    >>> columns.row({"comment": "hi", "gold": "No", "id": "7"})
    {'text': 'hi', 'id': '7', 'label': 'No'}
    """

    text: str = "text"
    id: str | None = None
    label: str | None = None
    options: str | None = None
    continuation: str | None = None
    human_probs: str | None = None

    @classmethod
    def resolve(cls, columns: Sequence[str], path: str | None = None, **given: str | None) -> ColumnMap:
        """The map for a table with these ``columns``: a field named in ``given`` must be a column
        (InputError naming it and the columns there); a field not given takes the column of its
        own name when there is one (``text`` must be found either way)."""
        unknown = set(given) - set(RECORD_FIELDS)
        if unknown:
            raise TypeError(f"no record field {sorted(unknown)}; the fields are {list(RECORD_FIELDS)}")
        chosen: dict[str, str | None] = {}
        for name in RECORD_FIELDS:
            column = given.get(name)
            if column is None:
                column = name if name in columns else None
            elif column not in columns:
                shown = ", ".join(map(repr, list(columns)[:20])) + (", ..." if len(columns) > 20 else "")
                raise InputError(f"no column {column!r} for the {name} (the columns: {shown})", path=path)
            if name == "text" and column is None:
                shown = ", ".join(map(repr, list(columns)[:20]))
                raise InputError(f"no 'text' column: name the column of the texts (the columns: {shown})", path=path)
            chosen[name] = column
        return cls(**chosen)  # type: ignore[arg-type]

    def fields(self) -> dict[str, str]:
        """Record field -> column, for the fields that have one."""
        return {name: column for name in RECORD_FIELDS if (column := getattr(self, name)) is not None}

    def row(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The input fields of one row: empty cells are absent, and a ``human_probs`` cell that
        is text is read as JSON."""
        data: dict[str, Any] = {}
        for name, column in self.fields().items():
            value = _value(values.get(column))
            if name == "text" and value is None and column in values:
                value = ""  # an empty text is an error, not a missing field
            if name == "human_probs" and isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass  # record_from_json says what is wrong with it
            if value is not None:
                data[name] = value
        return data

    def rename(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON input line with its fields taken from these columns (fields not mapped pass through)."""
        out = dict(data)
        for name, column in self.fields().items():
            if column != name:
                out.pop(name, None)
                if column in data:
                    out[name] = data[column]
        return out


def read_input(path: str, fmt: str = "jsonl", **given: str | None) -> tuple[ColumnMap | None, Iterator[Line]]:
    """The input lines of a file (``-`` is stdin) in ``fmt`` (``jsonl``, ``csv``, ``parquet``), each
    :class:`~steerunc.io.Line`'s data holding the input fields of a record, and the column map
    used. ``given`` names the column of a record field (``text="comment"``, ``label="gold"``).

    A CSV or Parquet file is checked at once: its header must hold the columns named (InputError
    naming the file). JSON lines pass as they are unless a column is named (then None is returned
    for the map when none is), their fields then taken from those columns.
    """
    named = {name: column for name, column in given.items() if column is not None}
    if fmt == "jsonl":
        if not named:
            return None, read_jsonl(path)
        columns = ColumnMap(**named)  # type: ignore[arg-type]
        return columns, (line if line.data is None else Line(line.number, columns.rename(line.data)) for line in read_jsonl(path))
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown format {fmt!r}: jsonl, csv or parquet")
    header, rows = read_csv(path) if fmt == "csv" else read_parquet(path)
    columns = ColumnMap.resolve(header, path, **named)
    return columns, (line if line.data is None else Line(line.number, columns.row(line.data)) for line in rows)


# ---------------------------------------------------------------------------- flattening


def _put(row: dict[str, Any], prefix: str, probs: Any) -> None:
    if isinstance(probs, Mapping):
        for option, p in probs.items():
            row[f"{prefix}{option}"] = p


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """One scored (or error) record as one flat row (the columns in the module docstring).

    >>> flatten({"id": "a", "prediction": "No", "probs": {"Yes": 0.3, "No": 0.7}, "scores": {"msp": 0.2},
    ...          "views": {"strict": {"probs": {"Yes": 0.4, "No": 0.6}, "kl": 0.01}}})
    {'id': 'a', 'prediction': 'No', 'prob_Yes': 0.3, 'prob_No': 0.7, 'msp': 0.2, 'view_strict_prob_Yes': 0.4, 'view_strict_prob_No': 0.6, 'view_strict_kl': 0.01}
    """
    row: dict[str, Any] = {}
    for key in ("id", "line", "mode", "prediction"):
        if key in record:
            row[key] = record[key]
    _put(row, "prob_", record.get("probs"))
    if "base_prediction" in record:
        row["base_prediction"] = record["base_prediction"]
    _put(row, "base_prob_", record.get("base_probs"))
    for key in ("label", "correct", "base_correct"):
        if key in record:
            row[key] = record[key]
    scores = record.get("scores")
    if isinstance(scores, Mapping):
        for name, value in scores.items():
            row[f"score_{name}" if name in _FIXED or name in row else str(name)] = value
    views = record.get("views")
    if isinstance(views, Mapping):
        for view, fields in views.items():
            if not isinstance(fields, Mapping):
                continue
            _put(row, f"view_{view}_prob_", fields.get("probs"))
            for key in ("kl", "logprob"):
                if key in fields:
                    row[f"view_{view}_{key}"] = fields[key]
    _put(row, "human_prob_", record.get("human_probs"))
    top = record.get("top_view")
    if isinstance(top, Mapping):  # {"name", "delta"}: the view that moved P(base prediction) most
        row["top_view"], row["top_view_delta"] = top.get("name"), top.get("delta")
    skip = {"probs", "base_probs", "scores", "views", "human_probs", "error"}
    for key, value in record.items():
        if key not in row and key not in skip and (value is None or isinstance(value, (str, int, float, bool))):
            row[key] = value
    if record.get("error") is not None:
        row["error"] = record["error"]
    return row


def _frame(rows: list[dict[str, Any]], index: Any = None, provenance: list[Any] | None = None) -> pd.DataFrame:
    pd = _pandas()
    frame = pd.DataFrame.from_records(rows, index=index)
    distinct = {json.dumps(p, sort_keys=True, default=str): p for p in provenance or [] if isinstance(p, Mapping)}
    if len(distinct) == 1:  # one run's settings: model, vectors, coefficients
        frame.attrs["provenance"] = dict(*distinct.values())
    if "error" not in frame.columns:  # always there, so that ``df[df.error.isna()]`` works on any run
        frame["error"] = None
    return frame[[c for c in frame.columns if c != "error"] + ["error"]]  # last: read after the scores


# ---------------------------------------------------------------------------- DataFrames


def _records(
    df: pd.DataFrame, columns: ColumnMap, options: Sequence[str] | None, template: str | None = None
) -> Iterator[Record | ErrorRecord]:
    names = [str(c) for c in df.columns]
    for values in df.itertuples(index=False, name=None):
        data = columns.row(dict(zip(names, values)))
        try:
            yield record_from_json(data, None, list(options) if options is not None else None, template)
        except InputError as exc:
            rid = data.get("id")
            yield ErrorRecord(None, exc.message, rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None)


def score_df(
    scorer: Scorer,
    df: pd.DataFrame,
    text: str = "text",
    options: Sequence[str] | str | None = None,
    label: str | None = None,
    id: str | None = None,  # noqa: A002  (the column of the ids, as the CLI's --id-col)
    template: str | None = None,
    **columns: str,
) -> pd.DataFrame:
    """Score every row of ``df``; one flat row out per row in, with ``df``'s index.

    ``text``, ``label`` and ``id`` name columns (``label`` and ``id`` default to the columns of
    those names, when there are any). ``template`` puts each text into a prompt: ``{text}`` is
    replaced by it (as the CLI's ``--template``). ``options`` is the list of options for every row, or the
    name of a column holding each row's (a list, or text such as ``"Yes,No"``); the other
    record fields can be named as keywords (``continuation="cont"``, ``human_probs="votes"``).
    A row that cannot be scored gets its message in ``error`` and no scores; nothing is dropped.
    The columns are those of :func:`flatten`.

    >>> import pandas as pd
    >>> from steerunc import Scorer, load_model
    >>> scorer = Scorer(load_model("tiny-random", device="cpu"))
    >>> df = pd.DataFrame({"comment": ["Is this rude? Answer:", ""], "gold": ["No", "Yes"]}, index=[10, 11])
    >>> out = score_df(scorer, df, text="comment", options=["Yes", "No"], label="gold")
    >>> list(out.index), out.loc[11, "error"], "mutual_info" in out.columns
    ([10, 11], "'text' is empty", True)
    """
    pd = _pandas()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"score_df needs a pandas DataFrame, got {type(df).__name__}")
    if template is not None:
        check_template(template)
    given: dict[str, str | None] = {"text": text, "label": label, "id": id, **columns}
    per_row = isinstance(options, str)
    if per_row:
        if options not in df.columns:
            raise InputError(
                f"options={options!r} is not a column of the DataFrame; for the same options on every row "
                f"pass a list, e.g. {[o.strip() for o in str(options).split(',')]}"
            )
        given["options"] = str(options)
    elif options is not None and (len(options) < 2 or len(set(options)) != len(options)):
        raise ValueError(f"options must be at least two distinct strings, got {list(options)}")
    column_map = ColumnMap.resolve([str(c) for c in df.columns], **given)
    fixed = None if per_row else options
    results = scorer.score_iter(_records(df, column_map, fixed, template))  # type: ignore[arg-type]
    records = [result.to_json() for result in results]
    rows = [flatten(record) for record in records]
    for row in rows:
        row.pop("line", None)  # a DataFrame row is found by its index
    return _frame(rows, index=df.index, provenance=[record.get("provenance") for record in records])


def read_scored_df(path: str) -> pd.DataFrame:
    """A scored JSONL file (``steerunc score``'s output, or any with the same fields) as a flat
    DataFrame: one row per non-blank line, columns as :func:`flatten`; a line that is not JSON
    becomes a row with its ``line`` and ``error``."""
    _pandas()
    rows: list[dict[str, Any]] = []
    provenance: list[Any] = []
    for line in read_jsonl(path):
        if line.data is None:
            rows.append({"line": line.number, "error": f"{path}:{line.number}: {line.error}"})
        else:
            rows.append(flatten(line.data))
            provenance.append(line.data.get("provenance"))
    return _frame(rows, provenance=provenance)

