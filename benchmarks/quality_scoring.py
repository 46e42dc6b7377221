"""The scoring half of the quality benchmark: vectors, steering, random vectors, prompt ensemble.

Every function writes the files a user would get from the command line
(``steerunc vectors build``, ``steerunc score``) so each step can be redone by
hand with the command recorded in the run's JSON. Scoring runs in process with
one loaded model (the same :class:`~steerunc.scoring.scorer.Scorer` the CLI uses), so
a run pays the model load once.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from steerunc.scoring.annotations import read_pairs_or_annotations
from steerunc.scoring.fusion import SCORE_NAMES, FusionConfig, Fused, fuse
from steerunc.io import dumps, read_jsonl
from steerunc.scoring.model import LoadedModel
from steerunc.scoring.readouts import Item, OptionsReadout, Plan
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

    Where a record's options run to several tokens (TruthfulQA: about five options
    of a dozen tokens after a prompt of about thirty), the steered pass runs the
    prompt once per option; here the prompt runs once, its keys and values are kept
    (``use_cache``) and the options run after it together (``shared_prefix``): the
    same hidden states, to float rounding, from fewer tokens (2.55 times fewer over
    TruthfulQA's evaluated records; docs/benchmarks.md has what that saves in time).
    """

    def __init__(self, model: LoadedModel, batch_size: int, shared_prefix: bool = True) -> None:
        zero = SteeringVectors(
            names=["none"], vectors=torch.zeros(1, model.d_model), layer=model.n_layers - 1,
            model_id=model.model_id, fingerprint=model.fingerprint, resid_norm=1.0, n_pairs=[0],
        )
        super().__init__(model, zero, ScoreConfig(coeff=0.0, center=False, batch_size=batch_size))
        self.readouts["options"] = _BaseViewOptions(self.readouts["options"].context)
        self.shared_prefix = shared_prefix

    def _hidden(self, plan: Plan) -> torch.Tensor:
        if not self.shared_prefix or "multi" not in plan.data:
            return super()._hidden(plan)
        with _attention_reads_the_cache(self.model):  # once per batch, not per record
            rows = [row for item in plan.items for row in _prefix_once(self.model, item)]
        depth = max(len(r) for r in rows)  # pad by repeating the last position, as ``collate`` does
        hidden = torch.stack([torch.cat([r, r[-1:].expand(depth - len(r), -1)]) for r in rows])
        return hidden[:, None].expand(-1, 2, -1, -1)  # view 1 (the zero vector) equals view 0


@contextmanager
def _attention_reads_the_cache(model: LoadedModel) -> Iterator[None]:
    """TransformerLens 4.3's attention components keep keys and values in a cache handed to them
    as ``past_key_values``; transformers 5.2x hands it on as ``cache``, which they ignore (the
    prompt would be forgotten, silently). Pass it under the name they read."""
    def pre(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
            return args, dict(kwargs, past_key_values=kwargs["cache"])
        return None

    handles = [block.attn.register_forward_pre_hook(pre, with_kwargs=True) for block in model.bridge.blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def _prefix_once(model: LoadedModel, item: Item) -> list[torch.Tensor]:
    """Final-normed hidden states at the read positions of ``item``'s rows (``OptionsReadout.plan``):
    the prompt's last position, then, for an item with a longer option, each option's tokens but its
    last, read after the prompt's cached keys and values. One ``[n_read, d_model]`` per row."""
    decoder = model.hf_model.get_decoder()
    options = item.option_ids or []
    text = torch.tensor([item.text_ids], device=model.device)
    if all(len(o) == 1 for o in options):
        return [decoder(input_ids=text, use_cache=False).last_hidden_state[0, -1:]]
    # transformers 5.2x names the cache argument and output ``cache``; earlier versions ``past_key_values``
    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    width = max(len(o) for o in options) - 1
    ids = torch.full((len(options), width), model.pad_id, dtype=torch.long)
    mask = torch.zeros((len(options), len(item.text_ids) + width), dtype=torch.long)
    mask[:, : len(item.text_ids)] = 1
    for c, option in enumerate(options):
        ids[c, : len(option) - 1] = torch.tensor(option[:-1], dtype=torch.long)
        mask[c, len(item.text_ids) : len(item.text_ids) + len(option) - 1] = 1
    before = decoder(input_ids=text, use_cache=True)  # (inside ``_attention_reads_the_cache``)
    last, cache = before.last_hidden_state[0, -1:], getattr(before, name)
    if cache is None or cache.get_seq_length() != len(item.text_ids):
        raise RuntimeError(f"the model kept no keys and values for the prompt ({type(cache).__name__})")
    cache.batch_repeat_interleave(len(options))  # one copy per option
    after = decoder(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=True,
                    **{name: cache}).last_hidden_state
    return [torch.cat([last, after[c, : len(option) - 1]]) for c, option in enumerate(options)]


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
    shared_prefix: bool = True,
) -> float:
    """K+1 plain passes per record, perspective k written before the prompt as text (a record
    with longer options runs its prompt once, ``shared_prefix``; else once per option).

    The K+1 option-logit vectors are fused and scored exactly as steered views
    are (:func:`steerunc.scoring.fusion.fuse`), and written in ``steerunc score``'s
    schema, each line flushed as it is written (``append``: after what ``output``
    holds). Returns the wall time in seconds.
    """
    start = time.perf_counter()
    scorer = _PlainScorer(model, batch_size, shared_prefix)
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


def fused_fields(fused: Fused, labels: list[str], names: list[str]) -> dict[str, Any]:
    """The fields of a ``steerunc score`` line that come from one record's fusion of its K+1 views
    over ``labels``: the fused and base predictions with their probabilities, the scores, each view
    named in ``names``, the fused logits and the weights."""
    def dist(logp: torch.Tensor) -> tuple[str, dict[str, float]]:
        return labels[int(logp.argmax())], dict(zip(labels, logp.exp().tolist()))

    prediction, probs = dist(fused.fused_logp)
    base_prediction, base_probs = dist(fused.logp[0])
    views = {}
    for k, name in enumerate(names):
        view_pred, view_probs = dist(fused.logp[k + 1])
        views[name] = {"prediction": view_pred, "probs": view_probs, "kl": float(fused.view_kl[k])}
    return {"prediction": prediction, "probs": probs, "base_prediction": base_prediction, "base_probs": base_probs,
            "scores": {n: float(fused.scores[n]) for n in SCORE_NAMES}, "views": views,
            "logits": dict(zip(labels, fused.fused_logits.tolist())), "weights": dict(zip(names, fused.weights.tolist()))}


def _fused_record(record: Record, group: list[ScoredRecord], names: list[str], fusion: FusionConfig) -> dict[str, Any]:
    labels = list(record.options or [])
    z = torch.tensor([[g.base_logits[o] for o in labels] for g in group], dtype=torch.float64)  # type: ignore[index]
    fused = fuse(z, fusion)  # in float64, as the library's options readout compares its views
    scored = ScoredRecord(
        id=record.id, mode="options", base_logits=dict(zip(labels, z[0].tolist())), label=record.label,
        human_probs=record.human_probs, line=record.line, **fused_fields(fused, labels, names),
    )
    return scored.to_json()
