"""The scoring half of the quality benchmark: vectors, steering, random vectors, prompt ensemble.

Every function writes the files a user would get from the command line
(``steerunc vectors build``, ``steerunc score``) so each step can be redone by
hand with the command recorded in the run's JSON. Scoring runs in process with
one loaded model (the same :class:`~steerunc.scoring.scorer.Scorer` the CLI uses), so
a run pays the model load once.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any, Iterator

import torch

from steerunc.scoring.annotations import read_pairs_or_annotations
from steerunc.scoring.fusion import SCORE_NAMES, FusionConfig, fuse
from steerunc.io import dumps, read_jsonl
from steerunc.scoring.model import LoadedModel
from steerunc.scoring.readouts import OptionsReadout
from steerunc.records import ErrorRecord, Record, ScoredRecord, record_from_json
from steerunc.scoring.scorer import ScoreConfig, Scorer
from steerunc.errors import VectorsError
from steerunc.scoring.vectors import SteeringVectors, build_vectors, load_vectors

__all__ = ["build_perspective_vectors", "reusable_vectors", "random_vectors", "score_records", "prompt_ensemble", "read_records"]


def read_records(path: str) -> list[Record]:
    """Input records, validated as ``steerunc score`` validates them."""
    out = []
    for line in read_jsonl(path):
        if line.error is not None or line.data is None:
            raise ValueError(f"{path}:{line.number}: {line.error}")
        out.append(record_from_json(line.data, line.number))
    return out


def build_perspective_vectors(
    model: LoadedModel, annotations_path: str, layer: int | None, output: str, recipe: str = "auto"
) -> SteeringVectors:
    """What ``steerunc vectors build ANNOTATIONS --from annotations`` does; saved to ``output``."""
    pairs, meta = read_pairs_or_annotations(annotations_path, "annotations", recipe)
    vectors = build_vectors(model, pairs, layer=layer)
    vectors.meta["pairs"] = annotations_path
    vectors.meta["pairs_sha256"] = file_digest(annotations_path)
    vectors.meta.update(meta)
    vectors.save(output)
    return vectors


def file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def reusable_vectors(model: LoadedModel, annotations_path: str, layer: int | None, path: str) -> SteeringVectors | None:
    """The vectors an earlier run saved at ``path`` (--reuse-scored), if they were built for this
    model and layer from an annotations file with these bytes; None otherwise (build them again)."""
    if not os.path.exists(path):
        return None
    try:
        vectors = load_vectors(path, model)
    except VectorsError:
        return None
    wanted = model.default_layer if layer is None else layer
    digest = vectors.meta.get("pairs_sha256")
    if vectors.layer != wanted or (digest is not None and digest != file_digest(annotations_path)):
        return None
    return vectors


def random_vectors(like: SteeringVectors, seed: int, output: str) -> SteeringVectors:
    """K Gaussian directions with the same norms, layer and residual scale as ``like``.

    ``--coeff`` scales every vector to coeff x the typical residual norm, so the
    random views move the residual exactly as far as the perspective views.
    """
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(like.vectors.shape, generator=generator)
    raw = raw / raw.norm(dim=1, keepdim=True) * like.vectors.norm(dim=1, keepdim=True)
    vectors = SteeringVectors(
        names=[f"random_{i + 1}" for i in range(len(like.names))], vectors=raw, layer=like.layer,
        model_id=like.model_id, fingerprint=like.fingerprint, resid_norm=like.resid_norm,
        n_pairs=[0] * len(like.names), meta={"source": f"random Gaussian directions, seed {seed}"},
    )
    vectors.save(output)
    return vectors


class _Progress:
    """A line on stderr at most once a minute: records done, seconds so far, an estimate of those left.

    A part of a benchmark run can score for an hour or more; without it the log is silent.
    """

    def __init__(self, label: str, total: int, every: float = 60.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.start = self.last = time.perf_counter()

    def done(self, n: int) -> None:
        now = time.perf_counter()
        if n <= 0 or n >= self.total or now - self.last < self.every:
            return
        self.last = now
        spent = now - self.start
        print(f"{self.label}: {n}/{self.total} records, {spent:.0f} s, about {spent / n * (self.total - n):.0f} s left",
              file=sys.stderr, flush=True)


def score_records(scorer: Scorer, records: list[Record], output: str, label: str = "scoring",
                  append: bool = False) -> float:
    """What ``steerunc score`` writes for ``records`` (after what ``output`` holds, with
    ``append``); returns the wall time in seconds. Each line is flushed as it is written, so
    an interrupted run leaves whole lines to resume after."""
    start = time.perf_counter()
    progress = _Progress(label, len(records))
    with open(output, "a" if append else "w", encoding="utf-8") as out:
        for n, result in enumerate(scorer.score_iter(records), start=1):
            out.write(dumps(result.to_json()) + "\n")
            out.flush()
            progress.done(n)
    return time.perf_counter() - start


class _PlainScorer(Scorer):
    """A scorer whose only steered view is a zero vector at the last block: view 0 is a plain pass.

    (``fuse`` needs K >= 1.) The zero view equals view 0, so the output head, the
    costly part for multi-token options over a 262k vocabulary, is applied to view 0
    only and its option scores are copied.
    """

    def __init__(self, model: LoadedModel, batch_size: int) -> None:
        zero = SteeringVectors(
            names=["none"], vectors=torch.zeros(1, model.d_model), layer=model.n_layers - 1,
            model_id=model.model_id, fingerprint=model.fingerprint, resid_norm=1.0, n_pairs=[0],
        )
        super().__init__(model, zero, ScoreConfig(coeff=0.0, center=False, batch_size=batch_size))
        self.readouts["options"] = _BaseViewOptions(self.readouts["options"].context)


class _BaseViewOptions(OptionsReadout):
    """Option scores of view 0 only, copied to the zero view (which equals it)."""

    def option_logits(self, plan: Any, hidden: torch.Tensor) -> torch.Tensor:
        return super().option_logits(plan, hidden[:, :1]).repeat(1, 2, 1)


def _variants(records: list[Record], notes: list[str]) -> Iterator[Record]:
    for record in records:
        yield record
        for note in notes:
            yield Record(text=f"{note}\n{record.text}", id=record.id, options=record.options, line=record.line)


def prompt_ensemble(
    model: LoadedModel, records: list[Record], perspectives: dict[str, str], fusion: FusionConfig,
    output: str, batch_size: int = 8, label: str = "prompt ensemble", append: bool = False,
) -> float:
    """K+1 plain passes per record, perspective k written before the prompt as text.

    The K+1 option-logit vectors are fused and scored exactly as steered views
    are (:func:`steerunc.scoring.fusion.fuse`), and written in ``steerunc score``'s
    schema, each line flushed as it is written (``append``: after what ``output``
    holds). Returns the wall time in seconds.
    """
    start = time.perf_counter()
    scorer = _PlainScorer(model, batch_size)
    names, notes = list(perspectives), list(perspectives.values())
    views = len(notes) + 1
    results = scorer.score_iter(_variants(records, notes))
    progress = _Progress(label, len(records))
    with open(output, "a" if append else "w", encoding="utf-8") as out:
        for n, record in enumerate(records):
            progress.done(n)  # records written so far
            group = [next(results) for _ in range(views)]
            failed = [g for g in group if isinstance(g, ErrorRecord)]
            if failed:
                out.write(dumps(ErrorRecord(record.line, failed[0].error, record.id).to_json()) + "\n")
            else:
                out.write(dumps(_fused_record(record, group, names, fusion)) + "\n")  # type: ignore[arg-type]
            out.flush()
    return time.perf_counter() - start


def _fused_record(record: Record, group: list[ScoredRecord], names: list[str], fusion: FusionConfig) -> dict[str, Any]:
    labels = list(record.options or [])
    z = torch.tensor([[g.base_logits[o] for o in labels] for g in group])  # type: ignore[index]
    fused = fuse(z, fusion)

    def dist(logp: torch.Tensor) -> tuple[str, dict[str, float]]:
        probs = logp.exp().tolist()
        return labels[int(logp.argmax())], dict(zip(labels, probs))

    prediction, probs = dist(fused.fused_logp)
    base_prediction, base_probs = dist(fused.logp[0])
    views = {}
    for k, name in enumerate(names):
        view_pred, view_probs = dist(fused.logp[k + 1])
        views[name] = {"prediction": view_pred, "probs": view_probs, "kl": float(fused.view_kl[k])}
    scored = ScoredRecord(
        id=record.id, mode="options", prediction=prediction, probs=probs, base_prediction=base_prediction,
        base_probs=base_probs, scores={n: float(fused.scores[n]) for n in SCORE_NAMES}, views=views,
        logits=dict(zip(labels, fused.fused_logits.tolist())), base_logits=dict(zip(labels, z[0].tolist())),
        weights=dict(zip(names, fused.weights.tolist())), label=record.label, human_probs=record.human_probs,
        line=record.line,
    )
    return scored.to_json()
