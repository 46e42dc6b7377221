"""What every CLI command shares: error translation and the stderr console."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import click
from rich.console import Console

from steerunc.errors import InputError, SteeruncError

__all__ = ["stderr", "translate_errors", "FileLevelError"]

F = TypeVar("F", bound=Callable[..., Any])

#: progress bars, tables and messages go here; stdout carries only the product
stderr = Console(stderr=True)


class FileLevelError(click.ClickException):
    """A missing or unreadable file, or a bad flag value: exit 2, like a usage error."""

    exit_code = 2


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


def setup_logging(quiet: bool = False) -> None:
    """steerunc's log messages (model conversion, vector building) on stderr via rich."""
    import logging
    import warnings

    from rich.logging import RichHandler

    logger = logging.getLogger("steerunc")
    logger.handlers[:] = [RichHandler(console=stderr, show_time=False, show_path=False)]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    warnings.filterwarnings("ignore", module="transformer_lens")
    warnings.filterwarnings("ignore", category=FutureWarning)
