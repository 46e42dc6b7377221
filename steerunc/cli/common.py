"""What every CLI command shares: error translation and the stderr console."""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import Any, Callable, TypeVar

import click
from rich.console import Console, ConsoleDimensions

from steerunc.errors import InputError, SteeruncError

__all__ = [
    "stderr",
    "stderr_console",
    "translate_errors",
    "FileLevelError",
    "MODEL_HELP",
    "FINITE_FLOAT",
    "FiniteFloatRange",
    "check_model_arg",
    "check_outputs",
]

F = TypeVar("F", bound=Callable[..., Any])

#: width of a console that does not write to a terminal: wide enough that no line is wrapped or cut
UNWRAPPED_WIDTH = 10_000


class _StderrConsole(Console):
    """A console on stderr that, when stderr is not a terminal (a file, a pipe, a test runner),
    takes no width from the environment: lines and tables come out whole instead of wrapped or
    cut at 80 columns. On a terminal, or with ``COLUMNS`` set, it is rich's console."""

    @property
    def size(self) -> ConsoleDimensions:
        dimensions = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(UNWRAPPED_WIDTH, dimensions.height)
        return dimensions

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        width, height = new_size
        self._width, self._height = width, height


def stderr_console() -> Console:
    """The console every command prints its progress, tables and messages on (stderr; stdout
    carries only the product). Not wrapped at 80 columns when stderr is not a terminal.

    >>> console = stderr_console()
    >>> console.stderr
    True
    """
    return _StderrConsole(stderr=True)


#: progress bars, tables and messages go here; stdout carries only the product
stderr = stderr_console()


def _model_help() -> str:
    from steerunc.scoring.registry import BUILTIN_MODELS, DEFAULT_ALIAS, DEFAULT_TARGET

    names = ", ".join(f"'{name}'" for name in BUILTIN_MODELS)
    return (f"A built-in model ({names}; '{DEFAULT_ALIAS}' is '{DEFAULT_TARGET}'; see 'steerunc models') "
            "or a local Hugging Face model directory.")


#: the help of every --model option
MODEL_HELP = _model_help()


class FileLevelError(click.ClickException):
    """A missing or unreadable file, or a bad flag value: exit 2, like a usage error."""

    exit_code = 2


class FiniteFloat(click.types.FloatParamType):
    """A float flag that must be finite: click's FLOAT takes 'nan' and 'inf'."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class FiniteFloatRange(click.FloatRange):
    """A float range flag that must be finite: click's FloatRange takes 'nan' (it compares false with any bound)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


#: the type of every float flag
FINITE_FLOAT = FiniteFloat()


def check_model_arg(name: str) -> None:
    """A --model that is not a built-in name must be a model directory with safetensors weights:
    refused with one line (exit 2) before anything loads."""
    from steerunc.errors import ModelError
    from steerunc.scoring.model_dir import check_model_dir
    from steerunc.scoring.registry import BUILTIN_MODELS, DEFAULT_ALIAS, builtin

    if builtin(name) is not None:
        return
    if not os.path.isdir(name):
        names = ", ".join([DEFAULT_ALIAS, *BUILTIN_MODELS])
        raise FileLevelError(f"--model {name}: no such model directory, and not a built-in model ({names})")
    try:
        check_model_dir(name)
    except ModelError as exc:
        raise FileLevelError(str(exc)) from exc


def check_outputs(*outputs: tuple[str | None, str]) -> None:
    """Refuse, before any work, output paths that cannot be written or that name one file twice
    (exit 2): ``(path, flag)`` pairs, None and ``-`` skipped."""
    from steerunc.io import check_output_path

    seen: dict[str, str] = {}
    for path, flag in outputs:
        if path is None or path == "-":
            continue
        try:
            check_output_path(path, flag)
        except InputError as exc:
            raise FileLevelError(str(exc)) from exc
        key = os.path.realpath(path)
        if key in seen:
            raise click.UsageError(f"{seen[key]} and {flag} name the same file {path}: give each its own")
        seen[key] = flag


def translate_errors(func: F) -> F:
    """Turn steerunc's typed errors into one-line click errors.

    An :class:`InputError` about a whole file (no line number) exits 2, as a bad
    flag does; any other steerunc error exits 1.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            if exc.line is None:
                raise FileLevelError(str(exc)) from exc
            raise click.ClickException(str(exc)) from exc
        except SteeruncError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


class _ConsoleHandler(logging.Handler):
    """Log records as ``LEVEL    message`` lines on :data:`stderr`, neither wrapped nor padded
    (rich's own handler pads every line to the console's width)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname:<8} {record.getMessage()}"
            stderr.print(text, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001  (logging must never raise)
            self.handleError(record)


def setup_logging(quiet: bool = False) -> None:
    """steerunc's log messages (model conversion, vector building) on stderr via rich.

    ``quiet`` keeps only warnings, and also turns off the progress bars of transformers and
    huggingface_hub and the info messages of transformer_lens."""
    import warnings

    logger = logging.getLogger("steerunc")
    logger.handlers[:] = [_ConsoleHandler()]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        if quiet:
            transformers.logging.disable_progress_bar()
        else:
            transformers.logging.enable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        disable_progress_bars() if quiet else enable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
    logging.getLogger("transformer_lens").setLevel(logging.ERROR if quiet else logging.WARNING)
    warnings.filterwarnings("ignore", module="transformer_lens")
    warnings.filterwarnings("ignore", category=FutureWarning)
