"""The default steering vectors: the perspective set shipped with the package, made into
vectors for the loaded model.

:func:`default_vectors` uses, in order: the copy cached under
``$STEERUNC_CACHE_DIR/vectors/<fingerprint>-L<layer>-<pairs hash>.safetensors``; the
package's pre-built copy (``steerunc/data/vectors``) when it was built from these very
pairs on this very model; else it builds them (once) with
:func:`~steerunc.scoring.vectors.build_vectors`. Building, saving and loading any
vectors is :mod:`steerunc.scoring.vectors`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import resources

from steerunc.errors import VectorsError
from steerunc.scoring.model import LoadedModel, cache_dir
from steerunc.scoring.pairs import Pair, read_expectations, read_pairs
from steerunc.scoring.vectors import SteeringVectors, build_vectors, load_vectors

__all__ = ["DEFAULT_PAIRS", "default_pairs_path", "default_vectors", "shipped_vectors_path"]

log = logging.getLogger("steerunc")

#: the perspective set shipped with the package
DEFAULT_PAIRS = "default"


def default_pairs_path() -> str:
    return str(resources.files("steerunc") / "data" / "perspectives.jsonl")


def _pairs_digest(pairs: list[Pair]) -> str:
    """Identifies a perspective set by its pairs only (texts, and whether they are read through the
    chat template): other fields (``expect``) and the file's layout can change without
    invalidating vectors built from it."""
    content = json.dumps([[p.perspective, p.positive, p.negative] + (["chat"] if p.chat else []) for p in pairs],
                         ensure_ascii=False)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:12]


def shipped_vectors_path(model_id: str, layer: int) -> str:
    """Where the package keeps pre-built default vectors for a built-in model (they may be absent)."""
    return str(resources.files("steerunc") / "data" / "vectors" / f"{model_id}-L{layer}.safetensors")


def _shipped(model: LoadedModel, layer: int, digest: str) -> SteeringVectors | None:
    """The pre-built default vectors in the package, if they were built from these pairs on this
    very model (same fingerprint) at this layer; else None, and they are built."""
    path = shipped_vectors_path(model.model_id, layer)
    if not os.path.isfile(path):
        return None
    try:
        vectors = load_vectors(path, model)
    except VectorsError as exc:
        log.info("not using the shipped vectors %s: %s", path, exc)
        return None
    if vectors.layer != layer or vectors.meta.get("pairs") != "steerunc default perspectives " + digest:
        log.info("not using the shipped vectors %s: built from another perspective set", path)
        return None
    return vectors


def default_vectors(model: LoadedModel, layer: int | None = None) -> SteeringVectors:
    """Vectors from the shipped perspective set: the package's pre-built copy when it fits this
    model, else built on first use; cached either way."""
    layer = model.default_layer if layer is None else layer
    path = default_pairs_path()
    pairs = read_pairs(path)
    digest = _pairs_digest(pairs)
    expect = read_expectations(path)
    cached = os.path.join(cache_dir(), "vectors", f"{model.fingerprint}-L{layer}-{digest}.safetensors")
    vectors = None
    if os.path.isfile(cached):
        try:
            vectors = load_vectors(cached, model)
        except VectorsError:
            log.warning("ignoring unreadable cached vectors %s; rebuilding", cached)
    if vectors is None:
        vectors = _shipped(model, layer, digest)
        if vectors is None:
            log.info("Building the default perspective vectors for %s at layer %d (once).", model.model_id, layer)
            vectors = build_vectors(model, pairs, layer=layer)
            vectors.meta["pairs"] = "steerunc default perspectives " + digest
        vectors.save(cached)
    # the declared expectations are read from the pairs file each time: they may change
    # without changing the vectors
    vectors.meta.pop("expect", None)
    if expect:
        vectors.meta["expect"] = json.dumps(expect)
    return vectors
