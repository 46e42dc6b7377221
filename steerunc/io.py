"""JSONL reading and writing: line-numbered errors, nothing lost, atomic files.

Reading never raises on a bad line: it yields a :class:`Line` whose ``error``
says what is wrong, so every input line can become an output line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import IO, Any, Iterator

from steerunc.errors import InputError

__all__ = ["Line", "read_jsonl", "open_output", "atomic_write", "dumps"]


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
    if not isinstance(data, dict):
        return Line(number, None, f"expected a JSON object, got {type(data).__name__}")
    return Line(number, data)


def read_jsonl(path: str) -> Iterator[Line]:
    """Yield every non-blank line of a JSONL file (``-`` is stdin).

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
    try:
        for number, raw in enumerate(stream, start=1):
            if raw.strip() == b"":
                continue
            yield _parse(number, raw.rstrip(b"\r\n"))
    finally:
        if close:
            stream.close()


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
