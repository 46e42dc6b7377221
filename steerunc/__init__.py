"""steerunc: tell when a language model should not be trusted, from steering disagreement.

The scoring wing (:mod:`steerunc.scoring`: model, vectors, views, divergence,
fusion, scorer) needs torch and is imported lazily on first use, so ``import
steerunc`` stays fast and the judging wing (:mod:`steerunc.judging`:
calibration, metrics, plots, triage) works without loading torch. The layout is
drawn in docs/method.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # scoring wing
    "load_model": "steerunc.scoring.model",
    "LoadedModel": "steerunc.scoring.model",
    "SteeringVectors": "steerunc.scoring.vectors",
    "build_vectors": "steerunc.scoring.vectors",
    "load_vectors": "steerunc.scoring.vectors",
    "default_vectors": "steerunc.scoring.vectors_default",
    "read_pairs": "steerunc.scoring.pairs",
    "Scorer": "steerunc.scoring.scorer",
    "ScoreConfig": "steerunc.scoring.scorer",
    # shared
    "Record": "steerunc.records",
    "ScoredRecord": "steerunc.records",
    "ErrorRecord": "steerunc.records",
    "SteeruncError": "steerunc.errors",
    "InputError": "steerunc.errors",
    "ModelError": "steerunc.errors",
    "VectorsError": "steerunc.errors",
    # judging wing
    "make_calibrator": "steerunc.judging.calibration",
    "load_calibrator": "steerunc.judging.calibration",
    "compute_metrics": "steerunc.judging.metrics",
    "Router": "steerunc.judging.triage",
    "check_disjoint": "steerunc.judging.triage",
    "record_keys": "steerunc.scored",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'steerunc' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
