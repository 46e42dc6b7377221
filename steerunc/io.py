"""JSONL (and CSV, Parquet) reading and writing: line-numbered errors, nothing lost, atomic files.

Reading never raises on a bad line: it yields a :class:`Line` whose ``error``
says what is wrong, so every input line can become an output line. Besides
malformed JSON and bytes that are not UTF-8, a line is refused when it is
longer than :data:`MAX_LINE_BYTES` (read in pieces, never held whole), nested
deeper than :data:`MAX_DEPTH`, or holds a string that is not valid Unicode (a
lone surrogate escape such as ``"\\ud800"``, which no UTF-8 file can hold). A
UTF-8 byte order mark at the start of the file is skipped; blank lines are
skipped and yield nothing, and line numbers count every physical line.

CSV and Parquet files are read into the same :class:`Line` objects, one per
row, each a mapping of column name to value (:func:`read_csv`,
:func:`read_parquet`); :func:`format_of` and :func:`sniff_format` tell the
formats apart before any work.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import IO, Any, Iterator, Sequence

from steerunc.errors import InputError

__all__ = [
    "Line",
    "MAX_DEPTH",
    "MAX_LINE_BYTES",
    "read_jsonl",
    "read_csv",
    "read_parquet",
    "FORMATS",
    "format_of",
    "sniff_format",
    "open_output",
    "atomic_write",
    "atomic_write_many",
    "check_output_path",
    "dumps",
]

#: the longest line read, in bytes without the line end (32 MiB); a longer line is an error line
MAX_LINE_BYTES = 32 * 1024 * 1024
#: the deepest nesting of JSON arrays and objects accepted in a line (a record needs 4)
MAX_DEPTH = 64

_BOM = b"\xef\xbb\xbf"
#: a \\u escape in the surrogate range: only then can a decoded string hold a lone surrogate
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


@dataclass(frozen=True)
class Line:
    """One input line: its 1-based number and either a JSON object or an error."""

    number: int
    data: dict[str, Any] | None
    error: str | None = None


def _parse(number: int, raw: bytes) -> Line:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Line(number, None, f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Line(number, None, f"malformed JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return Line(number, None, f"JSON nested deeper than {MAX_DEPTH} levels")
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        return Line(number, None, f"malformed JSON: {str(exc).split(';')[0]}")
    if not isinstance(data, dict):
        return Line(number, None, f"expected a JSON object, got {type(data).__name__}")
    deep = raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
    if deep or _SURROGATE_ESCAPE.search(raw):
        problem = _structure_problem(data)
        if problem is not None:
            return Line(number, None, problem)
    return Line(number, data)


def _structure_problem(data: Any) -> str | None:
    """Why a parsed line cannot be used (too deep, a string that is not valid Unicode), or None.

    Iterative, so that no nesting depth can exhaust Python's stack."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                return f"JSON nested deeper than {MAX_DEPTH} levels"
            if isinstance(value, dict):
                stack.extend((key, depth) for key in value)
                stack.extend((item, depth + 1) for item in value.values())
            else:
                stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                code = ord(value[exc.start])
                return f"not valid Unicode: a lone surrogate \\u{code:04x} in a string"
    return None


def _physical_lines(stream: IO[bytes], limit: int) -> Iterator[bytes | None]:
    """Each physical line without its line end; None for a line over ``limit`` bytes, which is
    read in pieces and dropped, never held whole."""
    while True:
        raw = stream.readline(limit + 2)  # room for the line end: "\r\n"
        if not raw:
            return
        if raw.endswith(b"\n") or len(raw) < limit + 2:
            line = raw.rstrip(b"\r\n")
            yield None if len(line) > limit else line
            continue
        while True:  # too long: skip to the end of the line
            piece = stream.readline(1 << 20)
            if not piece or piece.endswith(b"\n"):
                break
        yield None


def read_jsonl(path: str, max_line_bytes: int | None = None) -> Iterator[Line]:
    """Yield every non-blank line of a JSONL file (``-`` is stdin), numbered by physical line.

    A UTF-8 byte order mark before the first line is skipped. A line longer than
    ``max_line_bytes`` (default :data:`MAX_LINE_BYTES`) is an error line.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.jsonl")
    >>> _ = open(p, "wb").write(b'{"a": 1}\\n\\nnot json\\n')
    >>> [(l.number, l.data, l.error is not None) for l in read_jsonl(p)]
    [(1, {'a': 1}, False), (3, None, True)]
    """
    if path == "-":
        stream: IO[bytes] = sys.stdin.buffer
        close = False
    else:
        if not os.path.exists(path):
            raise InputError("no such file", path=path)
        if os.path.isdir(path):
            raise InputError("is a directory, expected a JSONL file", path=path)
        stream = open(path, "rb")
        close = True
    limit = MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes
    try:
        for number, raw in enumerate(_physical_lines(stream, limit), start=1):
            if raw is None:
                yield Line(number, None, f"line longer than {_size(limit)}: not read")
                continue
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if raw.strip() == b"":
                continue
            yield _parse(number, raw)
    finally:
        if close:
            stream.close()


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


def sniff_format(path: str, text_column: str = "text") -> str | None:
    """What a file's first bytes plainly are: ``parquet``, ``jsonl`` (the first non-blank line is
    JSON), ``csv``, or None when it cannot tell (then nothing is refused).

    CSV needs a first line that is not JSON: ``text_column`` alone, or two or more
    comma-separated fields, one of them ``text_column`` or followed by a row of as many fields
    that does not start with ``{`` (random bytes almost never are).
    """
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if head.startswith(_PARQUET_MAGIC):
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
    source = _Counted(stream, MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
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
                yield Line(cut[0], None, f"line longer than {_size(MAX_LINE_BYTES)}: not read")
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


def _size(n: int) -> str:
    """``32 MiB``, ``1000 bytes``: a byte count as a person reads it."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def dumps(obj: dict[str, Any]) -> str:
    """One JSONL line (no trailing newline); NaN/inf become null, never invalid JSON."""
    return json.dumps(_finite(obj), ensure_ascii=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    On error the temporary file is removed and ``path`` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write_many(paths: Sequence[str]) -> Iterator[list[IO[str]]]:
    """Text files written together: each to a temporary file beside it, and all renamed into
    place only once every one is written. On error every temporary file is removed and each
    path is left as it was: all the outputs, or none."""
    temps: list[str] = []
    handles: list[IO[str]] = []
    try:
        for path in paths:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
            temps.append(tmp)
            handles.append(os.fdopen(fd, "w", encoding="utf-8"))
        yield handles
        for handle in handles:
            handle.close()
        umask = os.umask(0)
        os.umask(umask)
        for tmp in temps:
            os.chmod(tmp, 0o666 & ~umask)
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    except BaseException:
        for handle in handles:
            with contextlib.suppress(OSError):
                handle.close()
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def check_output_path(path: str | None, what: str = "output", directory: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written: InputError naming it.

    A file output must not be a directory (a ``directory`` output must not be a
    file), and the folder it goes in must exist and be writable: a typo in a
    parent folder is refused rather than created (a ``directory`` output is
    created when missing, inside an existing parent). ``None`` and ``-``
    (stdout) pass.
    """
    if path is None or path == "-":
        return
    if directory and os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{what} must be a directory, and this is a file", path=path)
    if not directory and os.path.isdir(path):
        raise InputError(f"is a directory: {what} must be a file", path=path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InputError(f"cannot write {what}: permission denied", path=path)
    ancestor = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(ancestor):
        raise InputError(f"cannot write {what}: its folder {ancestor} does not exist", path=path)
    if not os.path.isdir(ancestor):
        raise InputError(f"cannot write {what}: {ancestor} is a file, not a directory", path=path)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what}: directory {ancestor} is not writable", path=path)


@contextlib.contextmanager
def open_output(path: str | None, append: bool = False) -> Iterator[IO[str]]:
    """A text stream for JSONL output: stdout for ``None`` or ``-``, else the file.

    Lines are flushed as written, so an interrupted run keeps what it finished
    (``steerunc score --resume`` relies on this).
    """
    if path in (None, "-"):
        yield sys.stdout
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        yield handle
