"""Synthetic scored records shaped like ``steerunc score`` output, with a known truth.

Each item has an ambiguity a in [0, 1]. The model's base logits are
over-confident (the true label distribution is softmax(z0 * (1 - 0.7 a) / 2.5)),
and the K steered views move further apart the more ambiguous the item, so
disagreement scores (mutual_info, mean_kl, flip_rate) carry information about
errors while the raw max-probability is miscalibrated.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

OPTIONS = ["Yes", "No", "Unsure"]
SCORES = ["msp", "entropy", "mutual_info", "mean_kl", "flip_rate", "fused_entropy"]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _entropy(p: np.ndarray) -> float:
    return float(-np.sum(p * np.log(np.clip(p, 1e-300, None))))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(np.clip(p, 1e-300, None)) - np.log(np.clip(q, 1e-300, None)))))


def make_record(
    i: int, rng: np.random.Generator, *, labelled: bool = True, human: bool = False, prefix: str = "item"
) -> dict[str, Any]:
    """One classification record with every field ``steerunc score`` writes, id ``{prefix}-{i}``."""
    a = rng.uniform()
    z0 = rng.normal(size=3) * 3.0
    views = {f"view{k}": z0 + rng.normal(size=3) * 3.0 * a for k in range(4)}
    probs = {name: _softmax(z) for name, z in views.items()}
    p0 = _softmax(z0)
    displacements = np.mean([z - z0 for z in views.values()], axis=0)
    zf = z0 + 1.2 * displacements
    pf = _softmax(zf)
    all_p = [p0, *probs.values()]
    mean_p = np.mean(all_p, axis=0)
    base_pred = OPTIONS[int(np.argmax(p0))]
    record: dict[str, Any] = {
        "id": f"{prefix}-{i}",
        "line": i + 1,
        "mode": "options",
        "prediction": OPTIONS[int(np.argmax(pf))],
        "probs": dict(zip(OPTIONS, pf.tolist())),
        "logits": dict(zip(OPTIONS, zf.tolist())),
        "base_prediction": base_pred,
        "base_probs": dict(zip(OPTIONS, p0.tolist())),
        "base_logits": dict(zip(OPTIONS, z0.tolist())),
        "scores": {
            "msp": float(1.0 - p0.max()),
            "entropy": _entropy(p0),
            "mutual_info": _entropy(mean_p) - float(np.mean([_entropy(p) for p in all_p])),
            "mean_kl": float(np.mean([_kl(p, p0) for p in probs.values()])),
            "flip_rate": float(np.mean([np.argmax(p) != np.argmax(p0) for p in probs.values()])),
            "fused_entropy": _entropy(pf),
        },
        "views": {
            name: {"prediction": OPTIONS[int(np.argmax(p))], "probs": dict(zip(OPTIONS, p.tolist())), "kl": _kl(p, p0)}
            for name, p in probs.items()
        },
    }
    truth = _softmax(z0 * (1.0 - 0.7 * a) / 2.5)
    label = OPTIONS[int(rng.choice(3, p=truth))]
    if labelled:
        record["label"] = label
        record["correct"] = record["prediction"] == label
        record["base_correct"] = base_pred == label
    if human:
        votes = rng.multinomial(5, truth)
        record["human_probs"] = dict(zip(OPTIONS, (votes / 5).tolist()))
    return record


def make_records(
    n: int = 400,
    seed: int = 0,
    *,
    unlabelled: int = 0,
    errors: int = 0,
    continuation: int = 0,
    human: int = 0,
    provenance: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """n labelled records, then unlabelled, error and continuation records (the first ``human`` carry human_probs).

    Ids are ``s{seed}-item-{i}``: files drawn with different seeds share no item. With ``provenance``
    (the scoring settings, as ``steerunc score`` records them), every usable record carries it.
    """
    rng = np.random.default_rng(seed)
    prefix = f"s{seed}-item"
    out = [make_record(i, rng, human=i < human, prefix=prefix) for i in range(n)]
    out += [make_record(n + i, rng, labelled=False, prefix=prefix) for i in range(unlabelled)]
    if provenance is not None:
        for record in out:
            record["provenance"] = dict(provenance)
    out += [{"id": f"bad-{i}", "line": len(out) + i + 1, "error": "input too long"} for i in range(errors)]
    out += [
        {
            "id": f"cont-{i}",
            "line": len(out) + i + 1,
            "mode": "continuation",
            "prediction": None,
            "probs": None,
            "scores": {"mutual_info_mean": 0.1},
        }
        for i in range(continuation)
    ]
    return out


def write_jsonl(path: Any, records: list[dict[str, Any]]) -> str:
    """Write records as JSONL (NaN written as the bare token NaN, as Python's json does)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    return str(path)


def write_scored(path: Any, n: int = 400, seed: int = 0, **kwargs: Any) -> str:
    """Write :func:`make_records` to ``path``; returns the path."""
    return write_jsonl(path, make_records(n, seed, **kwargs))


#: the scoring settings ``steerunc score`` records in every line (``provenance``)
PROVENANCE: dict[str, Any] = {
    "steerunc": "0.1.0",
    "model": "tiny-random",
    "model_fingerprint": "abc123",
    "vectors": "default:0f0f",
    "layer": 16,
    "perspectives": ["strict_moderator", "free_speech"],
    "coeff": 0.1,
    "center": True,
    "tau": 0.4,
    "alpha": 0.2,
    "fusion": "mixture",
}


def biased_records(n: int, seed: int, *, lean: float = 3.0, prefix: str = "b") -> list[dict[str, Any]]:
    """Yes/No records whose base and fused logits lean towards "Yes" by ``lean`` nats: the labels follow
    softmax(truth), the model reads truth + (lean, 0), so it answers Yes far too often."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        truth = rng.normal(size=2) * 2.0 + np.array([-0.6, 0.0])  # Yes is the minority class
        z = truth + np.array([lean, 0.0])
        p = _softmax(z)
        label = ["Yes", "No"][int(rng.uniform() >= _softmax(truth)[0])]
        pred = ["Yes", "No"][int(np.argmax(p))]
        record = {
            "id": f"{prefix}{seed}-{i}",
            "mode": "options",
            "prediction": pred,
            "probs": dict(zip(["Yes", "No"], p.tolist())),
            "logits": dict(zip(["Yes", "No"], z.tolist())),
            "base_prediction": pred,
            "base_probs": dict(zip(["Yes", "No"], p.tolist())),
            "base_logits": dict(zip(["Yes", "No"], z.tolist())),
            "scores": {"msp": float(1 - p.max()), "entropy": _entropy(p), "mutual_info": float(rng.uniform(0, 0.1)),
                       "fused_entropy": _entropy(p)},
            "label": label,
            "correct": pred == label,
            "base_correct": pred == label,
        }
        out.append(record)
    return out
