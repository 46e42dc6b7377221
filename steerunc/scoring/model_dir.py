"""What a local model directory must hold before steerunc loads it.

Only safetensors weights are read: a pickle checkpoint (``pytorch_model.bin``,
``*.pt``, ...) can run code when it is loaded, so a directory holding only those
is refused with a message that says how to convert it.
"""

from __future__ import annotations

import os

from steerunc.errors import ModelError

__all__ = ["PICKLE_SUFFIXES", "check_model_dir"]

#: weight files that are pickles (never read)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_model_dir(path: str) -> None:
    """Raise :class:`ModelError` (one line) unless ``path`` is a directory with a ``config.json``
    and safetensors weights.

    >>> import tempfile
    >>> check_model_dir(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    steerunc.errors.ModelError: ...: not a Hugging Face model directory (no config.json)
    """
    if not os.path.isdir(path):
        raise ModelError(f"{path}: no such model directory")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelError(f"{path}: not a Hugging Face model directory (no config.json)")
    try:
        files = sorted(os.listdir(path))
    except OSError as exc:
        raise ModelError(f"{path}: cannot list the model directory: {exc.strerror}") from exc
    if any(name.endswith(".safetensors") for name in files):
        return
    pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ModelError(
            f"{path}: only safetensors weights are read, and this directory holds pickle weights ({pickles[0]}); "
            "convert them once, e.g. AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR)"
        )
    raise ModelError(f"{path}: no model weights (*.safetensors) in this directory")
