"""JSONL reading and writing: line-numbered errors, nothing lost, atomic files.

Reading never raises on a bad line: it yields a :class:`Line` whose ``error``
says what is wrong, so every input line can become an output line. Besides
malformed JSON and bytes that are not UTF-8, a line is refused when it is
longer than :data:`MAX_LINE_BYTES` (read in pieces, never held whole), nested
deeper than :data:`MAX_DEPTH`, or holds a string that is not valid Unicode (a
lone surrogate escape such as ``"\\ud800"``, which no UTF-8 file can hold). A
UTF-8 byte order mark at the start of the file is skipped; blank lines are
skipped and yield nothing, and line numbers count every physical line.

CSV and Parquet files are read into the same :class:`Line` objects, one per
row, each a mapping of column name to value, by :mod:`steerunc.tables`
(:func:`read_csv`, :func:`read_parquet`; :func:`format_of` and
:func:`sniff_format` tell the formats apart before any work); those names are
importable from here too.
"""

from __future__ import annotations

import contextlib
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
    "read_json_file",
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


def read_json_file(path: str, what: str) -> Any:
    """The JSON document in ``path`` (a calibrator, prior or policy: ``what`` names it in errors);
    an InputError naming the file when it is missing, unreadable or not JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as exc:
        raise InputError(f"no such {what} file", path=path) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"cannot read {what}: not valid JSON ({exc.msg} at line {exc.lineno})", path=path) from exc
    except RecursionError as exc:
        raise InputError(f"cannot read {what}: JSON nested too deep", path=path) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what}: {exc}", path=path) from exc


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
