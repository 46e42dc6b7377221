"""Tabular input: CSV and Parquet files read as :class:`~steerunc.io.Line` objects, and telling formats apart.

Each row becomes one :class:`~steerunc.io.Line`, a mapping of column name to value
(:func:`read_csv`, :func:`read_parquet`), so a table goes through the same path
as a JSONL file; :func:`format_of` and :func:`sniff_format` tell JSONL, CSV and
Parquet apart before any work. A CSV row obeys the same line limit as a JSONL
line (:data:`steerunc.io.MAX_LINE_BYTES`, read when the file is opened). Every
name here is also importable from :mod:`steerunc.io`.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from typing import IO, Any, Iterator

from steerunc import io as _io  # the line limit is read from there when a file is read, so patching it there holds
from steerunc.errors import InputError
from steerunc.io import _BOM, Line, _physical_lines, _size

__all__ = ["FORMATS", "format_of", "sniff_format", "read_csv", "read_parquet"]


#: the input formats, and the file name suffixes that name each (anything else is read as JSONL)
FORMATS: dict[str, tuple[str, ...]] = {"jsonl": (".jsonl", ".ndjson", ".json"), "csv": (".csv",), "parquet": (".parquet", ".pq")}
_PARQUET_MAGIC = b"PAR1"


def format_of(path: str) -> str:
    """The format a file name says: ``csv`` for ``.csv``, ``parquet`` for ``.parquet``, else ``jsonl``.

    >>> format_of("data.CSV"), format_of("x.parquet"), format_of("-"), format_of("in.txt")
    ('csv', 'parquet', 'jsonl', 'jsonl')
    """
    suffix = os.path.splitext(path.lower())[1]
    return next((name for name, suffixes in FORMATS.items() if suffix in suffixes), "jsonl")


def _csv_fields(raw: bytes) -> list[str] | None:
    """The fields of a line that reads as a CSV row of two or more non-empty printable fields, else None."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if not text or text[0] in "{[\"" or any(ord(c) < 32 and c != "\t" for c in text):
        return None
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        return None
    return fields if len(fields) >= 2 and all(f.strip() for f in fields) else None


def _parquet_tail(handle: IO[bytes]) -> bool:
    """Whether a file that starts with the Parquet magic also ends as Parquet does: a footer
    length that fits the file, then the magic again. A JSONL line that happens to start with
    ``PAR1`` must not get the whole file refused."""
    size = handle.seek(0, os.SEEK_END)
    if size < 12:
        return False
    handle.seek(size - 8)
    tail = handle.read(8)
    footer = int.from_bytes(tail[:4], "little")
    return tail[4:] == _PARQUET_MAGIC and 0 < footer <= size - 12


def sniff_format(path: str, text_column: str = "text") -> str | None:
    """What a file's first bytes plainly are: ``parquet`` (with the Parquet magic and footer at its
    end too), ``jsonl`` (the first non-blank line is
    JSON), ``csv``, or None when it cannot tell (then nothing is refused).

    CSV needs a first line that is not JSON: ``text_column`` alone, or two or more
    comma-separated fields, one of them ``text_column`` or followed by a row of as many fields
    that does not start with ``{`` (random bytes almost never are).
    """
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
        if head.startswith(_PARQUET_MAGIC) and _parquet_tail(handle):
            return "parquet"
    head = head.removeprefix(_BOM)
    if len(head) >= (1 << 16) - len(_BOM):
        head = head[: head.rfind(b"\n") + 1]  # whole lines only
    lines = [line for line in head.split(b"\n") if line.strip()][:1]
    if not lines:
        return None
    first = lines[0].strip()
    if first.startswith(b"{"):
        return "jsonl"
    try:
        json.loads(first)
        return None  # a JSON value that is not an object: an error record, not another format
    except (ValueError, RecursionError):
        pass
    if first.decode("utf-8", "replace") == text_column:
        return "csv"  # a header of one column, the texts'
    header = _csv_fields(first)
    if header is None:
        return None
    if text_column in header:
        return "csv"
    try:  # the second row, which may span lines (a quoted field with line ends)
        rest = head[head.index(lines[0]) + len(lines[0]) :]
        rows = csv.reader(rest.decode("utf-8", "replace").splitlines(keepends=True))
        second = next((row for row in rows if row), None)
    except (UnicodeDecodeError, csv.Error):
        return None
    follows = second is not None and len(second) == len(header) and not second[0].lstrip().startswith("{")
    return "csv" if follows else None


def _open_bytes(path: str, what: str) -> tuple[IO[bytes], bool]:
    if path == "-":
        return sys.stdin.buffer, False
    if not os.path.exists(path):
        raise InputError("no such file", path=path)
    if os.path.isdir(path):
        raise InputError(f"is a directory, expected a {what} file", path=path)
    return open(path, "rb"), True


class _Counted:
    """Physical lines of a byte stream as text for ``csv.reader``, counting them; a line that is
    not UTF-8 keeps its bytes as surrogate escapes, one over the limit is replaced by nothing."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.lines = _physical_lines(stream, limit)
        self.count = 0
        self.too_long: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        for raw in self.lines:
            self.count += 1
            if raw is None:
                self.too_long.add(self.count)
                raw = b""
            elif self.count == 1:
                raw = raw.removeprefix(_BOM)
            yield raw.decode("utf-8", "surrogateescape") + "\n"


def _row_problem(fields: list[str], width: int) -> str | None:
    if len(fields) != width:
        return f"expected {width} fields (as the header has), got {len(fields)}"
    for field in fields:
        try:
            field.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"not UTF-8: byte 0x{ord(field[exc.start]) - 0xDC00:02x} in a field"
    return None


def read_csv(path: str, max_line_bytes: int | None = None) -> tuple[list[str], Iterator[Line]]:
    """The header of a CSV file (``-`` is stdin) and its rows, each a :class:`Line` mapping column
    name to text, numbered by the physical line the row starts on (the header is line 1 when it
    is the first line). Blank lines are skipped; a row with too many or too few fields, bytes that
    are not UTF-8, a line over the limit or broken quoting is an error line. The header is read
    at once, so a missing or duplicated column can be refused before any work.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(p, "w").write('id,text\\n1,"a, b"\\n\\n2\\n')
    >>> header, rows = read_csv(p)
    >>> header, [(r.number, r.data, r.error) for r in rows]
    (['id', 'text'], [(2, {'id': '1', 'text': 'a, b'}, None), (4, None, 'expected 2 fields (as the header has), got 1')])
    """
    stream, close = _open_bytes(path, "CSV")
    source = _Counted(stream, _io.MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes)
    csv.field_size_limit(max(csv.field_size_limit(), _io.MAX_LINE_BYTES))
    reader = csv.reader(source)
    try:
        header = next((row for row in reader if row), None)
    except csv.Error as exc:
        header = None
        problem = f"its header is not CSV: {exc}"
    else:
        problem = "no header line (the file is empty)"
    if header is None or source.too_long or any("\udc80" <= c <= "\udcff" for h in header for c in h):
        if close:
            stream.close()
        raise InputError(problem if header is None else "its header is not a readable CSV line", path=path)
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        if close:
            stream.close()
        raise InputError(f"the CSV header names a column twice: {duplicated}", path=path)
    return header, _csv_rows(reader, source, header, stream if close else None)


def _csv_rows(reader: Any, source: _Counted, header: list[str], stream: IO[bytes] | None) -> Iterator[Line]:
    try:
        while True:
            start = source.count + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Line(start, None, f"malformed CSV: {exc}")
                continue
            cut = sorted(n for n in source.too_long if start <= n <= source.count)
            if cut:
                yield Line(cut[0], None, f"line longer than {_size(_io.MAX_LINE_BYTES)}: not read")
            elif fields:
                problem = _row_problem(fields, len(header))
                yield Line(start, None, problem) if problem else Line(start, dict(zip(header, fields)))
    finally:
        if stream is not None:
            stream.close()


def read_parquet(path: str) -> tuple[list[str], Iterator[Line]]:
    """The columns of a Parquet file and its rows, each a :class:`Line` numbered by its row
    (1-based) mapping column name to value. Needs pyarrow (``pip install 'steerunc[frames]'``)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'steerunc[frames]'", path=path) from None
    if not os.path.isfile(path):
        raise InputError("no such file" if not os.path.exists(path) else "is a directory, expected a Parquet file", path=path)
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001  (pyarrow raises several kinds on a file that is not Parquet)
        raise InputError(f"not a readable Parquet file: {str(exc).splitlines()[0][:200]}", path=path) from exc
    columns = list(table.schema_arrow.names)

    def rows() -> Iterator[Line]:
        number = 0
        for batch in table.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield Line(number, row)

    return columns, rows()
